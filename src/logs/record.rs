//! Log records with KumoMTA's JSON field names (`type`, `id`, `sender`, `recipient`,
//! `queue`, `site`, `size`, `response`, `peer_address`, `timestamp`, `created`, ...), so
//! log consumers written for KumoMTA read ours unchanged.

use crate::message::Message;
use crate::protocol::{EnhancedCode, Reply};
use serde::Serialize;
use serde_json::{Map, Value};

/// Declares the record types once: the enum and the list of their names.
macro_rules! record_types {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Record types (KumoMTA's `RecordType`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[allow(missing_docs)]
        pub enum RecordType {
            $($(#[$doc])* $name,)*
        }

        /// Every record type's name, as written in `type`.
        pub const RECORD_TYPES: &[&str] = &[$(stringify!($name),)*];
    };
}

record_types! {
    Reception,
    Delivery,
    Bounce,
    TransientFailure,
    Expiration,
    AdminBounce,
    /// An operator deleted the message without a bounce (`wasmta message delete --yes`).
    AdminDelete,
    OOB,
    Feedback,
    Rejection,
    AdminRebind,
    DeferredInjectionRebind,
    Delayed,
    XferOut,
    XferIn,
}

impl RecordType {
    /// The name as written in `type`.
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

/// `response`.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    /// SMTP code.
    pub code: u16,
    /// Enhanced code.
    pub enhanced_code: Option<EnhancedCode>,
    /// Text.
    pub content: String,
    /// The command the reply answered.
    pub command: Option<String>,
}

impl Response {
    /// The one-line form classifiers match (`"550 5.1.1 text"`).
    pub fn line(&self) -> String {
        let text = self.content.replace(['\r', '\n'], " ");
        match self.enhanced_code {
            Some(e) => format!("{} {e} {text}", self.code),
            None => format!("{} {text}", self.code),
        }
    }

    /// From a reply and the command it answered.
    pub fn from_reply(reply: &Reply, command: Option<String>) -> Self {
        Response { code: reply.code, enhanced_code: reply.enhanced, content: reply.text.clone(), command }
    }
}

/// `peer_address`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerAddress {
    /// EHLO name (reception) or host name (delivery).
    pub name: String,
    /// IP address.
    pub addr: String,
}

/// One log record.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// Record type.
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// Spool id.
    pub id: String,
    /// Envelope sender.
    pub sender: String,
    /// Envelope recipient (an array for multi-recipient messages).
    pub recipient: Value,
    /// Scheduled queue.
    pub queue: String,
    /// Egress path (`source->site@proto`); empty at reception.
    pub site: String,
    /// Message size in bytes.
    pub size: u64,
    /// The reply.
    pub response: Response,
    /// The peer.
    pub peer_address: Option<PeerAddress>,
    /// When (unix seconds).
    pub timestamp: i64,
    /// When (RFC 3339).
    pub event_time: String,
    /// Message creation (unix seconds).
    pub created: i64,
    /// Message creation (RFC 3339).
    pub created_time: String,
    /// Attempts so far.
    pub num_attempts: u32,
    /// Bounce classification.
    pub bounce_classification: String,
    /// Egress pool.
    pub egress_pool: Option<String>,
    /// Egress source.
    pub egress_source: Option<String>,
    /// Source address used.
    pub source_address: Option<Value>,
    /// ARF report.
    pub feedback_report: Option<Value>,
    /// Selected message meta.
    pub meta: Map<String, Value>,
    /// Selected headers.
    pub headers: Map<String, Value>,
    /// Delivery protocol.
    pub delivery_protocol: Option<String>,
    /// Reception protocol.
    pub reception_protocol: Option<String>,
    /// Node id.
    pub nodeid: String,
    /// TLS cipher.
    pub tls_cipher: Option<String>,
    /// TLS version.
    pub tls_protocol_version: Option<String>,
    /// TLS peer subject.
    pub tls_peer_subject_name: Option<String>,
    /// Provider.
    pub provider_name: Option<String>,
    /// SMTP session id.
    pub session_id: Option<String>,
    /// wasmta: the policy generation that decided on the message (Reception).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<u64>,
}

impl LogRecord {
    /// A record with every field at its empty value.
    pub fn new(kind: RecordType, response: Response) -> Self {
        let now = chrono::Utc::now();
        LogRecord {
            kind,
            id: String::new(),
            sender: String::new(),
            recipient: Value::String(String::new()),
            queue: String::new(),
            site: String::new(),
            size: 0,
            response,
            peer_address: None,
            timestamp: now.timestamp(),
            event_time: now.to_rfc3339(),
            created: now.timestamp(),
            created_time: now.to_rfc3339(),
            num_attempts: 0,
            bounce_classification: "Uncategorized".into(),
            egress_pool: None,
            egress_source: None,
            source_address: None,
            feedback_report: None,
            meta: Map::new(),
            headers: Map::new(),
            delivery_protocol: None,
            reception_protocol: None,
            nodeid: String::new(),
            tls_cipher: None,
            tls_protocol_version: None,
            tls_peer_subject_name: None,
            provider_name: None,
            session_id: None,
            policy_generation: None,
        }
    }

    /// A record about a message: id, envelope, queue, size, creation time.
    pub fn for_message(kind: RecordType, message: &Message, response: Response) -> Self {
        let mut r = LogRecord::new(kind, response);
        r.id = message.id().to_string();
        message.with_envelope(|env| {
            r.sender = env.sender.email();
            r.recipient = match env.recipients.as_slice() {
                [one] => Value::String(one.email()),
                many => Value::Array(many.iter().map(|a| Value::String(a.email())).collect()),
            };
            r.num_attempts = env.num_attempts;
            r.reception_protocol = env.meta.get("reception_protocol").and_then(|v| v.as_str()).map(str::to_string);
        });
        r.queue = message.queue_name();
        r.size = message.size() as u64;
        let created = message.id().created();
        r.created = created.timestamp();
        r.created_time = created.to_rfc3339();
        r
    }
}
