//! `kumo.configure_log_hook`: each log record becomes a small message (the record as
//! JSON for its data, read back as meta `log_record` when asked) offered to the policy's
//! `should_enqueue_log_record(message, hook_name)`. A `true` answer spools it (unless the
//! hook has `deferred_spool`) and queues it in the queue the handler named, where a
//! `custom_lua` queue delivers it with the retries, suspension and expiry of any message.
//!
//! A hook with wasmta's `queue` key skips the event and queues every record there; with
//! `records_per_message` above 1 as well, records are put together (a JSON array as the
//! data) so the spool, the queue and the delivery work once per batch.

use super::manager::{InsertReason, Shared};
use crate::config::storage::{LogDispositionHookConfig, LogHookConfig};
use crate::logs::{HookSink, LogRecord};
use crate::message::{EnvelopeAddress, Message};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

/// True for a message made from a log record.
pub fn is_record_message(message: &Message) -> bool {
    message.get_meta("reception_protocol").as_ref().and_then(Value::as_str) == Some(crate::logs::LOG_RECORD_PROTOCOL)
}

/// The meta key of a message holding several records: how many.
const RECORD_COUNT_META: &str = "log_record_count";

/// How many log records a record message holds.
pub fn records_in(message: &Message) -> usize {
    let n = message.get_meta(RECORD_COUNT_META).as_ref().and_then(Value::as_u64).unwrap_or(1);
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

/// The records a record message holds, as "Type id" of the message each is about (the
/// first ten), so an operator can find the ones given up in the local logs.
pub fn describe_records(message: &Message) -> String {
    let data = match message.data() {
        Ok(d) => d,
        Err(e) => return format!("records unreadable: {e}"),
    };
    let records = match serde_json::from_slice::<Value>(&data) {
        Ok(Value::Array(list)) => list,
        Ok(one) => vec![one],
        Err(e) => return format!("records unreadable: {e}"),
    };
    let text = |r: &Value| {
        let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        format!("{} {}", field("type"), field("id"))
    };
    let mut out: Vec<String> = records.iter().take(10).map(text).collect();
    if records.len() > 10 {
        out.push(format!("and {} more", records.len() - 10));
    }
    out.join(", ")
}

/// Counts `n` records given up. Each drop is counted before it is said, so whoever reads
/// the line finds it counted.
pub(super) fn dropped(n: usize) {
    crate::metrics::core::log_hook_dropped().fetch_add(n as i64, Ordering::Relaxed);
}

/// Hands each hook's records to the policy and the queues.
pub struct Sink {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    /// Per hook: how many records may be in the policy or the spool at once
    /// (`back_pressure`).
    permits: HashMap<String, (Arc<Semaphore>, u32)>,
    /// Per hook with `records_per_message` above 1: the task that puts records together.
    batchers: HashMap<String, mpsc::Sender<Item>>,
}

/// What a batcher is handed.
enum Item {
    Record(Box<LogRecord>),
    /// Queue what is waiting now, then say so (a graceful stop).
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Sink {
    /// A sink for `hooks`, running on the current tokio runtime.
    pub fn new(queues: &super::QueueManager, hooks: &[LogHookConfig]) -> Arc<Sink> {
        let shared = queues.shared().clone();
        let permits = hooks
            .iter()
            .map(|h| {
                let n = h.back_pressure.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
                (h.name.clone(), (Arc::new(Semaphore::new(n)), n as u32))
            })
            .collect();
        let mut batchers = HashMap::new();
        for hook in hooks.iter().filter(|h| h.records_per_message > 1) {
            // configure_log_hook refuses records_per_message without a queue
            let Some(queue) = hook.queue.clone() else { continue };
            let (tx, rx) = mpsc::channel(hook.back_pressure.max(1));
            tokio::spawn(batch_records(shared.clone(), hook.clone(), queue, rx));
            batchers.insert(hook.name.clone(), tx);
        }
        Arc::new(Sink { shared, handle: tokio::runtime::Handle::current(), permits, batchers })
    }

    /// Queues every record handed over so far (a graceful stop: records waiting to fill a
    /// batch or to be offered are spooled, not lost).
    pub async fn flush(&self) {
        for batcher in self.batchers.values() {
            let (done, wait) = tokio::sync::oneshot::channel();
            // a batcher that is gone has nothing left to queue
            if batcher.send(Item::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        for (permits, n) in self.permits.values() {
            // every permit back: no record is between the policy and the spool (the
            // semaphore is never closed, so this cannot fail)
            let _ = permits.acquire_many(*n).await;
        }
    }
}

/// How long a batch of records waits to fill once it has `min_records_per_message` (never
/// longer than `max_batch_latency`): a batch costs a spool write, a queue pass and a POST
/// whatever its size, and under load 10 ms fills it; the record's delay is small beside
/// any webhook's.
const FILL_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// Puts `hook`'s records together: a message takes what is waiting, up to
/// `records_per_message`; it waits up to `max_batch_latency` for
/// `min_records_per_message`, then up to [`FILL_WINDOW`] (within `max_batch_latency`) for
/// more. While one is spooled the next fills.
async fn batch_records(shared: Arc<Shared>, hook: LogHookConfig, queue: String, mut items: mpsc::Receiver<Item>) {
    let most = hook.records_per_message;
    let mut batch = Vec::new();
    while let Some(first) = items.recv().await {
        let mut flushed = None;
        take(first, &mut batch, &mut flushed);
        let start = tokio::time::Instant::now();
        let deadline = start + hook.max_batch_latency;
        let filled_by = start + hook.max_batch_latency.min(FILL_WINDOW);
        while batch.len() < most && flushed.is_none() {
            let next = match items.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => {
                    // below the minimum: up to max_batch_latency; otherwise a moment to fill
                    let until = if batch.len() < hook.min_records_per_message { deadline } else { filled_by };
                    if until <= tokio::time::Instant::now() {
                        break;
                    }
                    match tokio::time::timeout_at(until, items.recv()).await {
                        Ok(Some(item)) => item,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            take(next, &mut batch, &mut flushed);
        }
        if !batch.is_empty() {
            shared.enqueue_record_batch(&hook, &queue, std::mem::take(&mut batch)).await;
        }
        if let Some(done) = flushed {
            // the stop that asked may have stopped waiting
            let _ = done.send(());
        }
    }
}

/// Adds a record to the batch, or notes a flush request.
fn take(item: Item, batch: &mut Vec<LogRecord>, flushed: &mut Option<tokio::sync::oneshot::Sender<()>>) {
    match item {
        Item::Record(r) => batch.push(*r),
        Item::Flush(done) => *flushed = Some(done),
    }
}

impl HookSink for Sink {
    fn submit(&self, hook: &LogHookConfig, record: LogRecord) {
        if let Some(batcher) = self.batchers.get(&hook.name) {
            match batcher.try_send(Item::Record(Box::new(record))) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    // back pressure: the record waits its turn
                    let batcher = batcher.clone();
                    self.handle.spawn(async move { batcher.send(item).await });
                }
                Err(TrySendError::Closed(_)) => {
                    dropped(1);
                    tracing::error!("log hook {}: a record was dropped: the server is stopping", hook.name);
                }
            }
            return;
        }
        let Some(permits) = self.permits.get(&hook.name).map(|(p, _)| p.clone()) else { return };
        let (shared, hook) = (self.shared.clone(), hook.clone());
        self.handle.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return };
            shared.enqueue_log_record(&hook, record).await;
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
    /// Offers one record to `should_enqueue_log_record` (or, for a hook with a `queue`,
    /// takes it there) and queues it if asked to.
    pub(super) async fn enqueue_log_record(self: &Arc<Self>, hook: &LogHookConfig, record: LogRecord) {
        let name = &hook.name;
        let message = match record_message(&record) {
            Ok(m) => m,
            Err(e) => {
                dropped(1);
                tracing::error!("log hook {name}: record of {} could not be encoded: {e}", record.id);
                return;
            }
        };
        if let Some(queue) = &hook.queue {
            message.set_meta("queue", queue.as_str().into());
        } else {
            match self.policy.should_enqueue_log_record(&message, name).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    dropped(1);
                    tracing::error!(
                        "log hook {name}: should_enqueue_log_record failed; record of {} dropped: {e}",
                        record.id
                    );
                    return;
                }
            }
        }
        if message.get_meta("queue").is_none() {
            // without it the record would be sent by SMTP to the recipient's own domain
            dropped(1);
            tracing::error!(
                "log hook {name}: should_enqueue_log_record returned true without setting the queue meta \
                 (msg:set_meta('queue', ...)); record of {} dropped",
                record.id
            );
            return;
        }
        self.spool_and_queue(hook, message, 1).await;
    }

    /// Queues `records` of `hook` as one message in `queue`.
    async fn enqueue_record_batch(self: &Arc<Self>, hook: &LogHookConfig, queue: &str, records: Vec<LogRecord>) {
        let mut data = Vec::with_capacity(records.len() * 1024 + 2);
        let mut count = 0;
        data.push(b'[');
        for record in &records {
            let at = data.len();
            if count > 0 {
                data.push(b',');
            }
            match serde_json::to_writer(&mut data, record) {
                Ok(()) => count += 1,
                Err(e) => {
                    data.truncate(at);
                    dropped(1);
                    tracing::error!("log hook {}: record of {} could not be encoded: {e}", hook.name, record.id);
                }
            }
        }
        data.push(b']');
        if count == 0 {
            return;
        }
        let recipient =
            EnvelopeAddress::parse(&format!("log-records@{queue}")).unwrap_or_else(|_| EnvelopeAddress::null());
        let mut meta = Map::new();
        meta.insert("reception_protocol".into(), crate::logs::LOG_RECORD_PROTOCOL.into());
        meta.insert("queue".into(), queue.into());
        meta.insert(RECORD_COUNT_META.into(), count.into());
        let message = Message::new(EnvelopeAddress::null(), vec![recipient], meta, data);
        self.spool_and_queue(hook, message, count).await;
    }

    /// Spools (unless `deferred_spool`) and queues a message holding `count` records.
    async fn spool_and_queue(self: &Arc<Self>, hook: &LogHookConfig, message: Message, count: usize) {
        if !hook.deferred_spool
            && let Err(e) = self.spool.store(&message).await
        {
            dropped(count);
            tracing::error!("log hook {}: {count} record(s) could not be spooled; dropped: {e}", hook.name);
            return;
        }
        self.insert(message, InsertReason::Received);
    }
}
