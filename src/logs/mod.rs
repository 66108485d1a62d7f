//! Log records (KumoMTA's JSON format) and the writers of each `configure_local_logs`
//! directory. `Logs::log` fills the per-directory `headers`/`meta` selections.

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

/// Every configured log destination.
#[derive(Clone, Default)]
pub struct Logs {
    dests: Arc<Vec<Dest>>,
    nodeid: Arc<String>,
}

impl Logs {
    /// Starts a writer per configuration.
    pub fn start(configs: &[LocalLogsConfig], nodeid: String) -> std::io::Result<Self> {
        let mut dests = Vec::new();
        for c in configs {
            if c.filter_event.is_some() {
                tracing::warn!(
                    "configure_local_logs: filter_event is accepted but not applied yet; every record is logged"
                );
            }
            dests.push(Dest { config: c.clone(), writer: Mutex::new(writer::SegmentWriter::start(c)?) });
        }
        Ok(Logs { dests: Arc::new(dests), nodeid: Arc::new(nodeid) })
    }

    /// Logs a record; with `message`, the configured headers and meta are copied in.
    pub fn log(&self, mut record: LogRecord, message: Option<&Message>) {
        record.nodeid = self.nodeid.to_string();
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
                    for (name, value) in m.all_headers() {
                        if d.config.headers.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                            r.headers.entry(name).or_insert(Value::String(value));
                        }
                    }
                }
            }
            d.writer.lock().write(r);
        }
    }

    /// Finishes every segment (at shutdown).
    pub fn close(&self) {
        for d in self.dests.iter() {
            d.writer.lock().close();
        }
    }
}
