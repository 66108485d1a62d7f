//! A message: id, envelope, meta (JSON values) and data, shared by reference between the
//! SMTP session, the policy engines and the spool.

pub mod address;
pub mod headers;
pub mod id;
pub mod queue_name;

pub use address::EnvelopeAddress;
pub use id::SpoolId;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Everything about a message except its data: what the spool stores as "meta".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path.
    pub sender: EnvelopeAddress,
    /// Forward paths.
    pub recipients: Vec<EnvelopeAddress>,
    /// Message metadata (`queue`, `tenant`, connection meta copied at reception, ...).
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub num_attempts: u32,
    /// When the next attempt is due (unix seconds), if scheduled.
    #[serde(default)]
    pub due: Option<i64>,
}

struct State {
    id: SpoolId,
    envelope: Envelope,
    data: Arc<Vec<u8>>,
}

/// A message handle; clones share the same message.
#[derive(Clone)]
pub struct Message(Arc<Mutex<State>>);

impl Message {
    /// A new message with a fresh id.
    pub fn new(
        sender: EnvelopeAddress,
        recipients: Vec<EnvelopeAddress>,
        meta: Map<String, Value>,
        data: Vec<u8>,
    ) -> Self {
        Self::from_parts(
            SpoolId::new(),
            Envelope { sender, recipients, meta, num_attempts: 0, due: None },
            Arc::new(data),
        )
    }

    /// Reassembles a message read back from the spool.
    pub fn from_parts(id: SpoolId, envelope: Envelope, data: Arc<Vec<u8>>) -> Self {
        Message(Arc::new(Mutex::new(State { id, envelope, data })))
    }

    /// The spool id.
    pub fn id(&self) -> SpoolId {
        self.0.lock().id
    }

    /// A copy of the envelope.
    pub fn envelope(&self) -> Envelope {
        self.0.lock().envelope.clone()
    }

    /// The reverse path.
    pub fn sender(&self) -> EnvelopeAddress {
        self.0.lock().envelope.sender.clone()
    }

    /// Replaces the reverse path.
    pub fn set_sender(&self, sender: EnvelopeAddress) {
        self.0.lock().envelope.sender = sender;
    }

    /// The first recipient.
    pub fn recipient(&self) -> Option<EnvelopeAddress> {
        self.0.lock().envelope.recipients.first().cloned()
    }

    /// All recipients.
    pub fn recipients(&self) -> Vec<EnvelopeAddress> {
        self.0.lock().envelope.recipients.clone()
    }

    /// Replaces the recipients.
    pub fn set_recipients(&self, recipients: Vec<EnvelopeAddress>) {
        self.0.lock().envelope.recipients = recipients;
    }

    /// One meta value.
    pub fn get_meta(&self, key: &str) -> Option<Value> {
        self.0.lock().envelope.meta.get(key).cloned()
    }

    /// Sets (or with `Null`, removes) one meta value.
    pub fn set_meta(&self, key: &str, value: Value) {
        let mut s = self.0.lock();
        if value.is_null() {
            s.envelope.meta.remove(key);
        } else {
            s.envelope.meta.insert(key.to_string(), value);
        }
    }

    /// All meta.
    pub fn meta(&self) -> Map<String, Value> {
        self.0.lock().envelope.meta.clone()
    }

    /// The data (headers and body), shared without copying.
    pub fn data(&self) -> Arc<Vec<u8>> {
        self.0.lock().data.clone()
    }

    /// Replaces the data.
    pub fn set_data(&self, data: Vec<u8>) {
        self.0.lock().data = Arc::new(data);
    }

    /// Applies an edit to the data.
    pub fn edit_data(&self, edit: impl FnOnce(&[u8]) -> Vec<u8>) {
        let mut s = self.0.lock();
        let new = edit(&s.data);
        s.data = Arc::new(new);
    }

    /// Delivery attempts so far.
    pub fn num_attempts(&self) -> u32 {
        self.0.lock().envelope.num_attempts
    }

    /// Sets the attempt count.
    pub fn set_num_attempts(&self, n: u32) {
        self.0.lock().envelope.num_attempts = n;
    }

    /// When the next attempt is due (unix seconds), if scheduled.
    pub fn due(&self) -> Option<i64> {
        self.0.lock().envelope.due
    }

    /// Sets or clears the due time (unix seconds).
    pub fn set_due(&self, due: Option<i64>) {
        self.0.lock().envelope.due = due;
    }

    /// The scheduled queue this message belongs in.
    pub fn queue_name(&self) -> String {
        let s = self.0.lock();
        let domain = s.envelope.recipients.first().map(|r| r.domain().to_string()).unwrap_or_default();
        queue_name::queue_name(&s.envelope.meta, &domain)
    }

    /// A copy with a new id and the given recipients (for splitting a transaction).
    pub fn split_for(&self, recipients: Vec<EnvelopeAddress>) -> Message {
        let s = self.0.lock();
        let mut envelope = s.envelope.clone();
        envelope.recipients = recipients;
        Message::from_parts(SpoolId::new(), envelope, s.data.clone())
    }

    /// The first value of a header, unfolded.
    pub fn first_header(&self, name: &str) -> Option<String> {
        let data = self.data();
        headers::fields(&data).into_iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value())
    }

    /// Every value of a header, unfolded.
    pub fn all_headers_named(&self, name: &str) -> Vec<String> {
        let data = self.data();
        headers::fields(&data).into_iter().filter(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value()).collect()
    }

    /// Every header as (name, value).
    pub fn all_headers(&self) -> Vec<(String, String)> {
        let data = self.data();
        headers::fields(&data).into_iter().map(|f| (f.name.to_string(), f.value())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shares_data_and_meta() {
        let mut meta = Map::new();
        meta.insert("tenant".into(), "t".into());
        let a = EnvelopeAddress::parse("a@x.example").unwrap();
        let b = EnvelopeAddress::parse("b@y.example").unwrap();
        let m = Message::new(
            EnvelopeAddress::null(),
            vec![a.clone(), b.clone()],
            meta,
            b"Subject: s\r\n\r\nhi\r\n".to_vec(),
        );
        let part = m.split_for(vec![b]);
        assert_ne!(part.id(), m.id());
        assert_eq!(part.queue_name(), "t@y.example");
        assert_eq!(m.queue_name(), "t@x.example");
        assert_eq!(part.first_header("subject").as_deref(), Some("s"));
    }
}
