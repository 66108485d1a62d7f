//! A message: id, envelope, meta (JSON values) and data, shared by reference between the
//! SMTP session, the policy engines and the spool. The data is a per-message prefix (the
//! trace headers prepended to this copy) before a body shared, without copying, by every
//! message split from one transaction: 200 recipients of a 10 MB message hold one body in
//! memory and in the spool, not 200.

pub use crate::protocol::address;
pub mod body;
pub mod conformance;
pub mod headers;
pub mod id;
pub mod mailbox;
pub mod packed;
pub mod queue_name;
pub mod scheduling;

pub use address::EnvelopeAddress;
pub use body::{Body, BodyError, BodySource};
pub use id::{IdMap, SpoolId};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The `reception_protocol` of the messages log hook records become (see
/// `queue::log_hook`).
pub const LOG_RECORD_PROTOCOL: &str = "LogRecord";

/// The meta key under which a log hook's record message offers its record. It is not
/// stored (the data already is the record as JSON, and the record is large: copying,
/// spooling and freeing it twice was a third of what a hook cost) but read from the
/// data when asked for.
pub const LOG_RECORD_META: &str = "log_record";

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
    /// The last transient failure's reply (`queue-list` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_response: Option<String>,
    /// Held by an operator (`wasmta message hold`) until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin_hold: bool,
}

struct State {
    id: SpoolId,
    /// Envelope and this copy's prefix (packed while the message waits).
    held: packed::Held,
    /// The shared part and its id in the spool.
    body: Body,
    /// A copy is in the spool (read from it, or stored since). `deferred_spool` messages
    /// are not until their first transient failure.
    spooled: bool,
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
        let envelope = Envelope {
            sender,
            recipients,
            meta,
            num_attempts: 0,
            due: None,
            scheduling: None,
            last_response: None,
            admin_hold: false,
        };
        Message::with_state(SpoolId::new(), envelope, vec![], Body::new(data), false)
    }

    /// A message recovered from the spool: `packed` is [`packed::pack_record`] of its
    /// record. The envelope is read (and so checked) here, once; an unreadable one is an
    /// error. Packed again when it waits, without being serialised unless it changed.
    pub fn from_record(id: SpoolId, packed: Box<[u8]>, body: Body) -> Result<Self, serde_json::Error> {
        let held = packed::Held::recovered(packed)?;
        Ok(Message(Arc::new(Mutex::new(State { id, held, body, spooled: true }))))
    }

    fn with_state(id: SpoolId, envelope: Envelope, prefix: Vec<u8>, body: Body, spooled: bool) -> Self {
        Message(Arc::new(Mutex::new(State { id, held: packed::Held::new(envelope, prefix), body, spooled })))
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

    /// `f` applied to the envelope, without copying it (its meta may be large: a log
    /// hook's record message carries the whole record there). The message is locked
    /// meanwhile, so `f` must not call back into it.
    pub fn with_envelope<R>(&self, f: impl FnOnce(&Envelope) -> R) -> R {
        f(&self.0.lock().held.read().envelope)
    }

    /// The reverse path.
    pub fn sender(&self) -> EnvelopeAddress {
        self.0.lock().held.read().envelope.sender.clone()
    }

    /// Replaces the reverse path.
    pub fn set_sender(&self, sender: EnvelopeAddress) {
        self.0.lock().held.open().envelope.sender = sender;
    }

    /// The first recipient.
    pub fn recipient(&self) -> Option<EnvelopeAddress> {
        self.0.lock().held.read().envelope.recipients.first().cloned()
    }

    /// All recipients.
    pub fn recipients(&self) -> Vec<EnvelopeAddress> {
        self.0.lock().held.read().envelope.recipients.clone()
    }

    /// Replaces the recipients.
    pub fn set_recipients(&self, recipients: Vec<EnvelopeAddress>) {
        self.0.lock().held.open().envelope.recipients = recipients;
    }

    /// One meta value. A log record message's `log_record` is read from its data.
    pub fn get_meta(&self, key: &str) -> Option<Value> {
        {
            let mut s = self.0.lock();
            let meta = &s.held.read().envelope.meta;
            if let Some(v) = meta.get(key) {
                return Some(v.clone());
            }
            let protocol = meta.get("reception_protocol").and_then(Value::as_str);
            if key != LOG_RECORD_META || protocol != Some(LOG_RECORD_PROTOCOL) {
                return None;
            }
        }
        let parsed = self.data().map_err(|e| e.to_string()).and_then(|data| {
            serde_json::from_slice::<Value>(&data).map_err(|e| format!("its data is no longer the record's JSON: {e}"))
        });
        match parsed {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!("message {}: meta {LOG_RECORD_META} cannot be read: {e}", self.id());
                None
            }
        }
    }

    /// Sets (or with `Null`, removes) one meta value.
    pub fn set_meta(&self, key: &str, value: Value) {
        let mut s = self.0.lock();
        if value.is_null() {
            s.held.open().envelope.meta.remove(key);
        } else {
            s.held.open().envelope.meta.insert(key.to_string(), value);
        }
    }

    /// All meta.
    pub fn meta(&self) -> Map<String, Value> {
        self.0.lock().held.read().envelope.meta.clone()
    }

    /// The whole data (headers and body): shared without copying when nothing was
    /// prepended to this copy, else put together. A body waiting in the spool is read
    /// for this call and not kept (see [`Message::load_body`]).
    pub fn data(&self) -> Result<Arc<Vec<u8>>, BodyError> {
        let (prefix, body) = self.parts();
        let bytes = body.read()?;
        if prefix.is_empty() {
            return Ok(bytes);
        }
        let mut all = Vec::with_capacity(prefix.len() + bytes.len());
        all.extend_from_slice(&prefix);
        all.extend_from_slice(&bytes);
        Ok(Arc::new(all))
    }

    /// The data as it is kept: this copy's prefix and the shared body.
    pub fn parts(&self) -> (Vec<u8>, Body) {
        let mut s = self.0.lock();
        (s.held.read().prefix.clone(), s.body.clone())
    }

    /// The size of the whole data.
    pub fn size(&self) -> usize {
        let s = self.0.lock();
        s.held.prefix_len() + s.body.len()
    }

    /// True when the body is in memory.
    pub fn body_loaded(&self) -> bool {
        self.0.lock().body.loaded().is_some()
    }

    /// Reads the body into memory (ahead of a delivery) and keeps it there.
    pub fn load_body(&self) -> Result<(), BodyError> {
        let body = self.0.lock().body.clone();
        body.load().map(|_| ())
    }

    /// The message waits (in a scheduled queue, or deep in a ready queue): its body
    /// leaves memory if the spool can give it back, and its envelope is packed.
    pub fn set_waiting(&self) {
        let mut s = self.0.lock();
        s.body.unload();
        s.held.pack();
    }

    /// The header section (prefix and the shared body's header lines), without the body
    /// text: what header reads need (a waiting message's body text is not read into
    /// memory for it).
    pub fn header_section(&self) -> Result<Vec<u8>, BodyError> {
        let (prefix, body) = self.parts();
        let head = body.header_section()?;
        let mut out = Vec::with_capacity(prefix.len() + head.len());
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&head);
        Ok(out)
    }

    /// Prepends a header field to this copy only; the shared body stays shared.
    pub fn prepend_header(&self, name: &str, value: &str) {
        self.prepend_field(&headers::format_field(name, value));
    }

    /// Prepends a whole header field (`Name: value\r\n`, folded as given) to this copy.
    pub fn prepend_field(&self, field: &[u8]) {
        let mut s = self.0.lock();
        let open = s.held.open();
        let mut prefix = Vec::with_capacity(field.len() + open.prefix.len());
        prefix.extend_from_slice(field);
        prefix.extend_from_slice(&open.prefix);
        open.prefix = prefix;
    }

    /// Replaces the data (this copy gets a body of its own).
    pub fn set_data(&self, data: Vec<u8>) {
        let mut s = self.0.lock();
        s.held.open().prefix.clear();
        s.body = Body::new(data);
    }

    /// Applies an edit to the whole data (this copy gets a body of its own).
    pub fn edit_data(&self, edit: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<(), BodyError> {
        let whole = self.data()?;
        self.set_data(edit(&whole));
        Ok(())
    }

    /// Delivery attempts so far.
    pub fn num_attempts(&self) -> u32 {
        self.0.lock().held.read().envelope.num_attempts
    }

    /// Sets the attempt count.
    pub fn set_num_attempts(&self, n: u32) {
        self.0.lock().held.open().envelope.num_attempts = n;
    }

    /// When the next attempt is due (unix seconds), if scheduled.
    pub fn due(&self) -> Option<i64> {
        self.0.lock().held.read().envelope.due
    }

    /// Sets or clears the due time (unix seconds).
    pub fn set_due(&self, due: Option<i64>) {
        self.0.lock().held.open().envelope.due = due;
    }

    /// Reads the envelope without opening a waiting (packed) message for good: what a
    /// listing of many waiting messages uses, so they stay packed.
    pub fn peek<R>(&self, f: impl FnOnce(&Envelope) -> R) -> R {
        self.0.lock().held.peek(f)
    }

    /// The last transient failure's reply.
    pub fn last_response(&self) -> Option<String> {
        self.0.lock().held.read().envelope.last_response.clone()
    }

    /// Records a transient failure's reply.
    pub fn set_last_response(&self, line: String) {
        self.0.lock().held.open().envelope.last_response = Some(line);
    }

    /// True while an operator holds it.
    pub fn admin_held(&self) -> bool {
        self.0.lock().held.read().envelope.admin_hold
    }

    /// Holds or releases it.
    pub fn set_admin_held(&self, on: bool) {
        self.0.lock().held.open().envelope.admin_hold = on;
    }

    /// Its scheduling constraints, if any.
    pub fn scheduling(&self) -> Option<scheduling::Scheduling> {
        self.0.lock().held.read().envelope.scheduling.clone()
    }

    /// Sets (or clears) its scheduling constraints.
    pub fn set_scheduling(&self, s: Option<scheduling::Scheduling>) {
        self.0.lock().held.open().envelope.scheduling = s;
    }

    /// The scheduled queue this message belongs in.
    pub fn queue_name(&self) -> String {
        let mut s = self.0.lock();
        let e = &s.held.read().envelope;
        let domain = e.recipients.first().map(|r| r.domain().to_string()).unwrap_or_default();
        queue_name::queue_name(&e.meta, &domain)
    }

    /// A copy with a new id and the given recipients (for splitting a transaction); it
    /// shares the body.
    pub fn split_for(&self, recipients: Vec<EnvelopeAddress>) -> Message {
        let mut s = self.0.lock();
        let body = s.body.clone();
        let open = s.held.read();
        let mut envelope = open.envelope.clone();
        envelope.recipients = recipients;
        Message::with_state(SpoolId::new(), envelope, open.prefix.clone(), body, false)
    }

    /// The first value of a header, unfolded.
    pub fn first_header(&self, name: &str) -> Result<Option<String>, BodyError> {
        let data = self.header_section()?;
        Ok(headers::fields(&data).into_iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value()))
    }

    /// Every value of a header, unfolded.
    pub fn all_headers_named(&self, name: &str) -> Result<Vec<String>, BodyError> {
        let data = self.header_section()?;
        Ok(headers::fields(&data)
            .into_iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value())
            .collect())
    }

    /// Every header as (name, value).
    pub fn all_headers(&self) -> Result<Vec<(String, String)>, BodyError> {
        let data = self.header_section()?;
        Ok(headers::fields(&data).into_iter().map(|f| (f.name.to_string(), f.value())).collect())
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
        assert_eq!(part.first_header("subject").unwrap().as_deref(), Some("s"));
    }

    #[test]
    fn prepends_stay_per_copy_and_the_body_is_shared() {
        let a = EnvelopeAddress::parse("a@x.example").unwrap();
        let m =
            Message::new(EnvelopeAddress::null(), vec![a.clone()], Map::new(), b"Subject: s\r\n\r\nbody\r\n".to_vec());
        let (c1, c2) = (m.split_for(vec![a.clone()]), m.split_for(vec![a]));
        c1.prepend_header("Received", "one");
        c2.prepend_header("Received", "two");
        assert!(c1.parts().1.same_as(&c2.parts().1), "one body for both copies");
        assert_eq!(c1.parts().1.id, c2.parts().1.id);
        assert_eq!(&c1.data().unwrap()[..], b"Received: one\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(c2.all_headers_named("received").unwrap(), vec!["two".to_string()]);
        assert_eq!(c1.header_section().unwrap(), b"Received: one\r\nSubject: s\r\n");
        assert_eq!(c1.size(), c1.data().unwrap().len());
        c1.edit_data(|d| headers::append(d, "X-Edited", "yes")).unwrap();
        assert_ne!(c1.parts().1.id, c2.parts().1.id, "an edited copy has a body of its own");
        assert_eq!(c2.first_header("x-edited").unwrap(), None);
    }

    #[test]
    fn a_record_message_reads_its_log_record_from_its_data() {
        let mut meta = Map::new();
        meta.insert("reception_protocol".into(), LOG_RECORD_PROTOCOL.into());
        let record = br#"{"type":"Delivery","queue":"q"}"#.to_vec();
        let m = Message::new(EnvelopeAddress::null(), vec![], meta, record);
        assert_eq!(m.get_meta(LOG_RECORD_META).unwrap()["type"], "Delivery");
        assert!(m.with_envelope(|e| e.meta.get(LOG_RECORD_META).is_none()), "not stored twice");
        m.set_data(b"not json".to_vec());
        assert_eq!(m.get_meta(LOG_RECORD_META), None, "a changed data is no record");
        m.set_meta(LOG_RECORD_META, serde_json::json!({"type": "Bounce"}));
        assert_eq!(m.get_meta(LOG_RECORD_META).unwrap()["type"], "Bounce", "a meta set by the policy wins");
        let plain = Message::new(EnvelopeAddress::null(), vec![], Map::new(), br#"{"type":"x"}"#.to_vec());
        assert_eq!(plain.get_meta(LOG_RECORD_META), None, "only record messages have one");
    }
}
