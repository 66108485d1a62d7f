//! `kumo.configure_log_hook`: each log record becomes a small message (the record as
//! JSON for its data, read back as meta `log_record` when asked) offered to the policy's
//! `should_enqueue_log_record(message, hook_name)`. A `true` answer spools it (unless the
//! hook has `deferred_spool`) and queues it in the queue the handler named, where a
//! `custom_lua` queue delivers it with the retries, suspension and expiry of any message.

use super::manager::{InsertReason, Shared};
use crate::config::storage::{LogDispositionHookConfig, LogHookConfig};
use crate::logs::{HookSink, LogRecord};
use crate::message::{EnvelopeAddress, Message};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// True for a message made from a log record.
pub fn is_record_message(message: &Message) -> bool {
    message.get_meta("reception_protocol").as_ref().and_then(Value::as_str) == Some(crate::logs::LOG_RECORD_PROTOCOL)
}

/// Hands each hook's records to the policy and the queues.
pub struct Sink {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    /// Per hook: how many records may be in the policy or the spool at once
    /// (`back_pressure`).
    permits: HashMap<String, Arc<Semaphore>>,
}

impl Sink {
    /// A sink for `hooks`, running on the current tokio runtime.
    pub fn new(queues: &super::QueueManager, hooks: &[LogHookConfig]) -> Arc<Sink> {
        let permits =
            hooks.iter().map(|h| (h.name.clone(), Arc::new(Semaphore::new(h.back_pressure.max(1))))).collect();
        Arc::new(Sink { shared: queues.shared().clone(), handle: tokio::runtime::Handle::current(), permits })
    }
}

impl HookSink for Sink {
    fn submit(&self, hook: &LogHookConfig, record: LogRecord) {
        let Some(permits) = self.permits.get(&hook.name).cloned() else { return };
        let (shared, name, deferred) = (self.shared.clone(), hook.name.clone(), hook.deferred_spool);
        self.handle.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return };
            shared.enqueue_log_record(&name, record, deferred).await;
        });
    }

    fn dispose(
        &self,
        hook: &LogDispositionHookConfig,
        record: LogRecord,
        message: &Message,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let (shared, name, message) = (self.shared.clone(), hook.name.clone(), message.clone());
        self.handle.spawn(async move {
            let value = match serde_json::to_value(&record) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("log disposition hook {name}: record of {} could not be encoded: {e}", record.id);
                    let _ = done.send(());
                    return;
                }
            };
            if let Err(e) = shared.policy.log_disposition(&name, &message, &value).await {
                tracing::error!("log disposition hook {name}: log_disposition_{name} failed for {}: {e}", record.id);
            }
            let _ = done.send(());
        });
        wait
    }
}

fn address(text: &str) -> EnvelopeAddress {
    EnvelopeAddress::parse(text).unwrap_or_else(|_| EnvelopeAddress::null())
}

/// The message a record becomes: sender and recipient from the record, its JSON as data.
/// Meta `log_record` is read from the data when asked for (see
/// [`crate::message::LOG_RECORD_META`]).
pub fn record_message(record: &LogRecord) -> Result<Message, serde_json::Error> {
    let data = serde_json::to_vec(record)?;
    let recipient = match &record.recipient {
        Value::String(s) => address(s),
        Value::Array(list) => address(list.first().and_then(Value::as_str).unwrap_or_default()),
        _ => EnvelopeAddress::null(),
    };
    let mut meta = Map::new();
    meta.insert("reception_protocol".into(), crate::logs::LOG_RECORD_PROTOCOL.into());
    Ok(Message::new(address(&record.sender), vec![recipient], meta, data))
}

impl Shared {
    /// Offers one record to `should_enqueue_log_record` and queues it if asked to.
    pub(super) async fn enqueue_log_record(self: &Arc<Self>, hook: &str, record: LogRecord, deferred_spool: bool) {
        // each drop is counted before it is said, so whoever reads the line finds it counted
        let failed = || {
            crate::metrics::core::log_hook_dropped().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let message = match record_message(&record) {
            Ok(m) => m,
            Err(e) => {
                failed();
                tracing::error!("log hook {hook}: record of {} could not be encoded: {e}", record.id);
                return;
            }
        };
        match self.policy.should_enqueue_log_record(&message, hook).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                failed();
                tracing::error!(
                    "log hook {hook}: should_enqueue_log_record failed; record of {} dropped: {e}",
                    record.id
                );
                return;
            }
        }
        if message.get_meta("queue").is_none() {
            // without it the record would be sent by SMTP to the recipient's own domain
            failed();
            tracing::error!(
                "log hook {hook}: should_enqueue_log_record returned true without setting the queue meta \
                 (msg:set_meta('queue', ...)); record of {} dropped",
                record.id
            );
            return;
        }
        if !deferred_spool && let Err(e) = self.spool.store(&message).await {
            failed();
            tracing::error!("log hook {hook}: record of {} could not be spooled; dropped: {e}", record.id);
            return;
        }
        self.insert(message, InsertReason::Received);
    }
}
