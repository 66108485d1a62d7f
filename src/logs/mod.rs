//! Log records (KumoMTA's JSON format) and the writers of each `configure_local_logs`
//! directory. `Logs::log` fills the per-directory `headers`/`meta` selections.

pub mod classify;
pub mod record;
pub mod writer;

pub use record::{LogRecord, PeerAddress, RecordType, Response};

use crate::config::storage::LocalLogsConfig;
use crate::message::Message;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;

struct Dest {
    config: LocalLogsConfig,
    writer: Mutex<writer::SegmentWriter>,
}

/// Records sent to their writers, to be waited for.
#[must_use = "wait() for the records to be written"]
pub struct Written(Vec<tokio::sync::oneshot::Receiver<()>>);

impl Written {
    /// Returns once every record is in its file (or kept for a retry after a failure).
    pub async fn wait(self) {
        for w in self.0 {
            let _ = w.await;
        }
    }
}

/// Every configured log destination.
#[derive(Clone, Default)]
pub struct Logs {
    dests: Arc<Vec<Dest>>,
    nodeid: Arc<String>,
    classifier: Option<Arc<classify::Classifier>>,
}

impl Logs {
    /// Starts a writer per configuration; `classifier` fills `bounce_classification`.
    pub fn start(
        configs: &[LocalLogsConfig],
        nodeid: String,
        classifier: Option<Arc<classify::Classifier>>,
    ) -> std::io::Result<Self> {
        let mut dests = Vec::new();
        for c in configs {
            if c.filter_event.is_some() {
                tracing::warn!(
                    "configure_local_logs: filter_event is accepted but not applied yet; every record is logged"
                );
            }
            dests.push(Dest { config: c.clone(), writer: Mutex::new(writer::SegmentWriter::start(c)?) });
        }
        Ok(Logs { dests: Arc::new(dests), nodeid: Arc::new(nodeid), classifier })
    }

    /// Logs a record; with `message`, the configured headers and meta are copied in.
    /// Written within moments, not waited for (see [`Logs::log_written`]).
    pub fn log(&self, record: LogRecord, message: Option<&Message>) {
        self.send(record, message, |_| None);
    }

    /// Logs a record; the returned [`Written`] resolves once every destination has
    /// written it to its file (it then survives a crash of this process): Reception
    /// before the 250, Delivery and Bounce before the spool forgets the message.
    pub fn log_acked(&self, record: LogRecord, message: Option<&Message>) -> Written {
        let mut waits = vec![];
        self.send(record, message, |_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            waits.push(rx);
            Some(tx)
        });
        Written(waits)
    }

    /// [`Logs::log_acked`], waited for.
    pub async fn log_written(&self, record: LogRecord, message: Option<&Message>) {
        self.log_acked(record, message).wait().await;
    }

    fn send(
        &self,
        mut record: LogRecord,
        message: Option<&Message>,
        mut ack: impl FnMut(&Dest) -> Option<writer::Ack>,
    ) {
        record.nodeid = self.nodeid.to_string();
        if let Some(c) = &self.classifier
            && matches!(record.kind, RecordType::Bounce | RecordType::TransientFailure | RecordType::Expiration)
        {
            record.bounce_classification = c.classify(&record.response.line()).to_string();
        }
        for d in self.dests.iter() {
            if let Some(per) = d.config.per_record.get(&record.kind.name())
                && per.get("enable") == Some(&Value::Bool(false))
            {
                continue;
            }
            let mut r = record.clone();
            if let Some(m) = message {
                for key in &d.config.meta {
                    if let Some(v) = m.get_meta(key) {
                        r.meta.insert(key.clone(), v);
                    }
                }
                if !d.config.headers.is_empty() {
                    // a waiting message's body is read for this and not kept
                    let all = m.all_headers().unwrap_or_else(|e| {
                        tracing::error!("log record of {}: headers not included: {e}", m.id());
                        vec![]
                    });
                    for (name, value) in all {
                        if d.config.headers.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                            r.headers.entry(name).or_insert(Value::String(value));
                        }
                    }
                }
            }
            let ack = ack(d);
            d.writer.lock().write(r, ack);
        }
    }

    /// Finishes every segment (at shutdown).
    pub fn close(&self) {
        for d in self.dests.iter() {
            d.writer.lock().close();
        }
    }
}
