//! Accepting a message: make it durable, log Reception, count it, queue it. The one
//! tail of SMTP reception, HTTP injection and policy injection, so the rules (the `null`
//! queue discards, a partial spool write is unwound, no acknowledgement before the
//! Reception record is in its file) are written once.

use super::{InsertReason, NULL_QUEUE, QueueManager};
use crate::logs::{LogRecord, Logs, RecordType, Response};
use crate::message::Message;
use crate::protocol::Reply;
use crate::spool::{Spool, SpoolError};

/// Writes every message that is not for the `null` queue to the spool (fsynced), all at
/// once. On any failure the ones that were written are removed again, so a retry by the
/// client does not make a duplicate, and the first error is returned.
pub async fn store(spool: &Spool, messages: &[Message]) -> Result<(), SpoolError> {
    let kept: Vec<&Message> = messages.iter().filter(|m| m.queue_name() != NULL_QUEUE).collect();
    let results = futures::future::join_all(kept.iter().map(|m| spool.store(m))).await;
    if !results.iter().any(|r| r.is_err()) {
        return Ok(());
    }
    for (m, r) in kept.iter().zip(&results) {
        if r.is_ok() {
            let _ = spool.remove(m.id()).await;
        }
    }
    // the most specific error first: a full disk is answered 452, the rest 451
    let mut errors: Vec<SpoolError> = results.into_iter().filter_map(Result::err).collect();
    let pos = errors.iter().position(|e| matches!(e, SpoolError::NoSpace(_))).unwrap_or(0);
    Err(errors.swap_remove(pos))
}

/// Logs Reception for each (stored) message, counts it and queues it (the `null` queue
/// discards); returns once every record is in its file. `decorate` adds what the caller
/// knows (peer, session, TLS, protocol).
pub async fn record_and_queue(
    logs: &Logs,
    queues: &QueueManager,
    messages: &[Message],
    reason: InsertReason,
    command: Option<&str>,
    decorate: impl Fn(&mut LogRecord),
) {
    let reply = Reply::new(250, "2.0.0", "OK");
    let mut written = Vec::with_capacity(messages.len());
    for m in messages {
        let response = Response::from_reply(&reply, command.map(str::to_string));
        let mut record = LogRecord::for_message(RecordType::Reception, m, response);
        decorate(&mut record);
        written.push(logs.log_acked(record, Some(m)));
        crate::metrics::core::received().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if m.queue_name() != NULL_QUEUE {
            queues.insert(m.clone(), reason);
        }
    }
    // no acknowledgement before the Reception records are in their files: a crash right
    // after the reply cannot lose the record of an accepted message
    futures::future::join_all(written.into_iter().map(|w| w.wait())).await;
}
