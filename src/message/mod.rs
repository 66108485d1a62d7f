//! A message: id, envelope, meta (JSON values) and data, shared by reference between the
//! SMTP session, the policy engines and the spool. The data is a per-message prefix (the
//! trace headers prepended to this copy) before a body shared, without copying, by every
//! message split from one transaction: 200 recipients of a 10 MB message hold one body in
//! memory and in the spool, not 200.

pub use crate::protocol::address;
pub mod conformance;
pub mod headers;
pub mod id;
pub mod mailbox;
pub mod queue_name;
pub mod scheduling;

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
    /// Per-message scheduling (`set_scheduling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<scheduling::Scheduling>,
}

struct State {
    id: SpoolId,
    envelope: Envelope,
    /// Lines prepended to this copy only.
    prefix: Vec<u8>,
    /// The shared part and its id in the spool.
    body: Body,
    /// A copy is in the spool (read from it, or stored since). `deferred_spool` messages
    /// are not until their first transient failure.
    spooled: bool,
}

/// Bytes several messages may share, with the id the spool keeps them under.
#[derive(Clone)]
pub struct Body {
    /// The spool id of the shared bytes.
    pub id: SpoolId,
    /// The bytes.
    pub bytes: Arc<Vec<u8>>,
}

impl Body {
    /// New bytes under a fresh id. A buffer much larger than its content (a receive
    /// buffer) is copied to one of the right size and freed whole: shrinking it in place
    /// would leave a hole in the heap beside every queued message.
    pub fn new(mut bytes: Vec<u8>) -> Body {
        if bytes.capacity() - bytes.len() > bytes.len() / 8 + 64 {
            bytes = bytes.as_slice().to_vec();
        }
        Body { id: SpoolId::new(), bytes: Arc::new(bytes) }
    }
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
        let envelope = Envelope { sender, recipients, meta, num_attempts: 0, due: None, scheduling: None };
        Message::with_state(SpoolId::new(), envelope, vec![], Body::new(data), false)
    }

    /// Reassembles a message read back from the spool.
    pub fn from_parts(id: SpoolId, envelope: Envelope, prefix: Vec<u8>, body: Body) -> Self {
        Message::with_state(id, envelope, prefix, body, true)
    }

    fn with_state(id: SpoolId, envelope: Envelope, prefix: Vec<u8>, body: Body, spooled: bool) -> Self {
        Message(Arc::new(Mutex::new(State { id, envelope, prefix, body, spooled })))
    }

    /// True when a copy of this message is in the spool.
    pub fn spooled(&self) -> bool {
        self.0.lock().spooled
    }

    /// Notes that the spool holds a copy now.
    pub fn set_spooled(&self) {
        self.0.lock().spooled = true;
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

    /// The whole data (headers and body): shared without copying when nothing was
    /// prepended to this copy, else put together.
    pub fn data(&self) -> Arc<Vec<u8>> {
        let s = self.0.lock();
        if s.prefix.is_empty() {
            return s.body.bytes.clone();
        }
        let mut all = Vec::with_capacity(s.prefix.len() + s.body.bytes.len());
        all.extend_from_slice(&s.prefix);
        all.extend_from_slice(&s.body.bytes);
        Arc::new(all)
    }

    /// The data as it is kept: this copy's prefix and the shared body.
    pub fn parts(&self) -> (Vec<u8>, Body) {
        let s = self.0.lock();
        (s.prefix.clone(), s.body.clone())
    }

    /// The size of the whole data.
    pub fn size(&self) -> usize {
        let s = self.0.lock();
        s.prefix.len() + s.body.bytes.len()
    }

    /// The header section (prefix and the shared body's header lines), without the body
    /// text: what header reads need, at the cost of the headers only.
    pub fn header_section(&self) -> Vec<u8> {
        let s = self.0.lock();
        let end = headers::header_end(&s.body.bytes);
        let mut out = Vec::with_capacity(s.prefix.len() + end);
        out.extend_from_slice(&s.prefix);
        out.extend_from_slice(&s.body.bytes[..end]);
        out
    }

    /// Prepends a header field to this copy only; the shared body stays shared.
    pub fn prepend_header(&self, name: &str, value: &str) {
        let mut s = self.0.lock();
        let field = headers::format_field(name, value);
        let mut prefix = Vec::with_capacity(field.len() + s.prefix.len());
        prefix.extend_from_slice(&field);
        prefix.extend_from_slice(&s.prefix);
        s.prefix = prefix;
    }

    /// Replaces the data (this copy gets a body of its own).
    pub fn set_data(&self, data: Vec<u8>) {
        let mut s = self.0.lock();
        s.prefix.clear();
        s.body = Body::new(data);
    }

    /// Applies an edit to the whole data (this copy gets a body of its own).
    pub fn edit_data(&self, edit: impl FnOnce(&[u8]) -> Vec<u8>) {
        let whole = self.data();
        self.set_data(edit(&whole));
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

    /// Its scheduling constraints, if any.
    pub fn scheduling(&self) -> Option<scheduling::Scheduling> {
        self.0.lock().envelope.scheduling.clone()
    }

    /// Sets (or clears) its scheduling constraints.
    pub fn set_scheduling(&self, s: Option<scheduling::Scheduling>) {
        self.0.lock().envelope.scheduling = s;
    }

    /// The scheduled queue this message belongs in.
    pub fn queue_name(&self) -> String {
        let s = self.0.lock();
        let domain = s.envelope.recipients.first().map(|r| r.domain().to_string()).unwrap_or_default();
        queue_name::queue_name(&s.envelope.meta, &domain)
    }

    /// A copy with a new id and the given recipients (for splitting a transaction); it
    /// shares the body.
    pub fn split_for(&self, recipients: Vec<EnvelopeAddress>) -> Message {
        let s = self.0.lock();
        let mut envelope = s.envelope.clone();
        envelope.recipients = recipients;
        Message::with_state(SpoolId::new(), envelope, s.prefix.clone(), s.body.clone(), false)
    }

    /// The first value of a header, unfolded.
    pub fn first_header(&self, name: &str) -> Option<String> {
        let data = self.header_section();
        headers::fields(&data).into_iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value())
    }

    /// Every value of a header, unfolded.
    pub fn all_headers_named(&self, name: &str) -> Vec<String> {
        let data = self.header_section();
        headers::fields(&data).into_iter().filter(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value()).collect()
    }

    /// Every header as (name, value).
    pub fn all_headers(&self) -> Vec<(String, String)> {
        let data = self.header_section();
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

    #[test]
    fn prepends_stay_per_copy_and_the_body_is_shared() {
        let a = EnvelopeAddress::parse("a@x.example").unwrap();
        let m =
            Message::new(EnvelopeAddress::null(), vec![a.clone()], Map::new(), b"Subject: s\r\n\r\nbody\r\n".to_vec());
        let (c1, c2) = (m.split_for(vec![a.clone()]), m.split_for(vec![a]));
        c1.prepend_header("Received", "one");
        c2.prepend_header("Received", "two");
        assert!(Arc::ptr_eq(&c1.parts().1.bytes, &c2.parts().1.bytes), "one body for both copies");
        assert_eq!(c1.parts().1.id, c2.parts().1.id);
        assert_eq!(&c1.data()[..], b"Received: one\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(c2.all_headers_named("received"), vec!["two".to_string()]);
        assert_eq!(c1.header_section(), b"Received: one\r\nSubject: s\r\n");
        assert_eq!(c1.size(), c1.data().len());
        c1.edit_data(|d| headers::append(d, "X-Edited", "yes"));
        assert_ne!(c1.parts().1.id, c2.parts().1.id, "an edited copy has a body of its own");
        assert_eq!(c2.first_header("x-edited"), None);
    }
}
