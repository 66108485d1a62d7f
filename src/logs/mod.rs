//! Log records (KumoMTA's JSON format) and the writers of each `configure_local_logs`
//! directory. `Logs::log` fills the per-directory `headers`/`meta` selections, and hands
//! each record, with its own selections, to every `configure_log_hook` hook through a
//! [`HookSink`] (the queues turn it into a message).

pub mod classify;
pub mod record;
pub mod writer;

pub use record::{LogRecord, PeerAddress, RecordType, Response};

use crate::config::storage::{LocalLogsConfig, LogDispositionHookConfig, LogHookConfig};
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

/// The `reception_protocol` of the messages log hook records become. Records about such
/// messages are not offered to the hooks again: a policy mistake (a misspelt queue, a
/// loop guard that no longer matches) would otherwise make records of records without end.
pub use crate::message::LOG_RECORD_PROTOCOL;

/// Where log hook records go: installed once the queues exist.
pub trait HookSink: Send + Sync {
    /// Takes one record for `hook` (its headers and meta already selected).
    fn submit(&self, hook: &LogHookConfig, record: LogRecord);
    /// Runs disposition hook `hook` for `record` about `message`; the receiver says when
    /// it is done.
    fn dispose(
        &self,
        hook: &LogDispositionHookConfig,
        record: LogRecord,
        message: &Message,
    ) -> tokio::sync::oneshot::Receiver<()>;
}

/// The log hooks and, once installed, their sink.
#[derive(Default)]
struct Hooks {
    configs: Vec<LogHookConfig>,
    dispositions: Vec<LogDispositionHookConfig>,
    sink: std::sync::OnceLock<Arc<dyn HookSink>>,
}

/// Every configured log destination.
#[derive(Clone, Default)]
pub struct Logs {
    dests: Arc<Vec<Dest>>,
    hooks: Arc<Hooks>,
    nodeid: Arc<String>,
    classifier: Option<Arc<classify::Classifier>>,
}

/// False when `per_record.<Type>.enable = false` turns records of this type off.
fn enabled(per_record: &serde_json::Map<String, Value>, kind: RecordType) -> bool {
    per_record.get(&kind.name()).and_then(|p| p.get("enable")) != Some(&Value::Bool(false))
}

/// A copy of `record` with the selected `meta` keys and `headers` of `message`.
fn decorated(record: &LogRecord, message: Option<&Message>, headers: &[String], meta: &[String]) -> LogRecord {
    let mut r = record.clone();
    let Some(m) = message else { return r };
    for key in meta {
        if let Some(v) = m.get_meta(key) {
            r.meta.insert(key.clone(), v);
        }
    }
    if !headers.is_empty() {
        // a waiting message's body is read for this and not kept
        let all = m.all_headers().unwrap_or_else(|e| {
            tracing::error!("log record of {}: headers not included: {e}", m.id());
            vec![]
        });
        for (name, value) in all {
            if headers.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                r.headers.entry(name).or_insert(Value::String(value));
            }
        }
    }
    r
}

impl Logs {
    /// Starts a writer per configuration; `classifier` fills `bounce_classification`.
    pub fn start(
        configs: &[LocalLogsConfig],
        hooks: &[LogHookConfig],
        dispositions: &[LogDispositionHookConfig],
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
        let hooks =
            Arc::new(Hooks { configs: hooks.to_vec(), dispositions: dispositions.to_vec(), sink: Default::default() });
        Ok(Logs { dests: Arc::new(dests), hooks, nodeid: Arc::new(nodeid), classifier })
    }

    /// The configured log hooks.
    pub fn hooks(&self) -> &[LogHookConfig] {
        &self.hooks.configs
    }

    /// Starts handing records to the log hooks (once; later calls are ignored).
    pub fn set_hook_sink(&self, sink: Arc<dyn HookSink>) {
        if self.hooks.sink.set(sink).is_err() {
            tracing::warn!("logs: the log hook sink was already installed");
        }
    }

    /// Logs a record; with `message`, the configured headers and meta are copied in.
    /// Written within moments, not waited for (see [`Logs::log_written`]).
    pub fn log(&self, record: LogRecord, message: Option<&Message>) {
        // disposition hooks run meanwhile; nothing waits for them here
        drop(self.send(record, message, |_| None));
    }

    /// Logs a record; the returned [`Written`] resolves once every destination has
    /// written it to its file (it then survives a crash of this process): Reception
    /// before the 250, Delivery and Bounce before the spool forgets the message.
    pub fn log_acked(&self, record: LogRecord, message: Option<&Message>) -> Written {
        let mut waits = vec![];
        let disposed = self.send(record, message, |_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            waits.push(rx);
            Some(tx)
        });
        waits.extend(disposed);
        Written(waits)
    }

    /// [`Logs::log_acked`], waited for.
    pub async fn log_written(&self, record: LogRecord, message: Option<&Message>) {
        self.log_acked(record, message).wait().await;
    }

    /// Writes `record`, offers it to the log hooks, and starts the disposition hooks
    /// (returned, to be waited for by the caller that must).
    fn send(
        &self,
        mut record: LogRecord,
        message: Option<&Message>,
        mut ack: impl FnMut(&Dest) -> Option<writer::Ack>,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        record.nodeid = self.nodeid.to_string();
        if let Some(c) = &self.classifier
            && matches!(record.kind, RecordType::Bounce | RecordType::TransientFailure | RecordType::Expiration)
        {
            record.bounce_classification = c.classify(&record.response.line()).to_string();
        }
        for d in self.dests.iter() {
            if !enabled(&d.config.per_record, record.kind) {
                continue;
            }
            let r = decorated(&record, message, &d.config.headers, &d.config.meta);
            let ack = ack(d);
            d.writer.lock().write(r, ack);
        }
        let about_a_hook_message = record.reception_protocol.as_deref() == Some(LOG_RECORD_PROTOCOL);
        let Some(sink) = self.hooks.sink.get().filter(|_| !about_a_hook_message) else { return vec![] };
        for hook in self.hooks.configs.iter().filter(|h| enabled(&h.per_record, record.kind)) {
            sink.submit(hook, decorated(&record, message, &hook.headers, &hook.meta));
        }
        let Some(m) = message else { return vec![] };
        let dispositions = self.hooks.dispositions.iter().filter(|h| enabled(&h.per_record, record.kind));
        dispositions.map(|h| sink.dispose(h, decorated(&record, message, &h.headers, &h.meta), m)).collect()
    }

    /// Finishes every segment (at shutdown).
    pub fn close(&self) {
        for d in self.dests.iter() {
            d.writer.lock().close();
        }
    }
}
