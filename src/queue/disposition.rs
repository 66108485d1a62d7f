//! Disposition: what becomes of a message after an attempt — its log record, the
//! `smtp_client_rewrite_delivery_status` rewrite, Delivery and Bounce records with spool
//! removal, and transient failures (`requeue_message`, re-routing, expiry, the backoff).

use super::InsertReason;
use super::manager::{At, Shared, unix_now};
use super::ready::{ReadyKind, ReadyQueue};
use super::retry;
use crate::delivery::client::MessageResult;
use crate::logs::{LogRecord, PeerAddress, RecordType, Response};
use crate::message::{EnvelopeAddress, Message};
use crate::policy::PolicyError;
use crate::protocol::Reply;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl Shared {
    /// A record for a message outside any delivery attempt (admin actions).
    pub(crate) fn record_plain(&self, kind: RecordType, message: &Message, reply: &Reply) -> LogRecord {
        self.record(kind, message, &message.recipients(), reply, "", At::default())
    }

    pub(super) fn record(
        &self,
        kind: RecordType,
        message: &Message,
        recipients: &[EnvelopeAddress],
        reply: &Reply,
        command: &str,
        at: At<'_>,
    ) -> LogRecord {
        let cmd = (!command.is_empty()).then(|| command.to_string());
        let mut r = LogRecord::for_message(kind, message, Response::from_reply(reply, cmd));
        r.recipient = match recipients {
            [one] => Value::String(one.email()),
            many => Value::Array(many.iter().map(|a| Value::String(a.email())).collect()),
        };
        if let Some(rq) = at.rq {
            r.site = rq.name.clone();
            r.egress_pool = Some(rq.pool.clone());
            r.egress_source = Some(rq.source.name.clone());
        }
        r.peer_address = at.peer.cloned();
        r.delivery_protocol = Some(at.rq.map_or(ReadyKind::Smtp, |rq| rq.kind).delivery_protocol().into());
        r
    }

    /// Applies the replies of one delivery attempt.
    pub(crate) async fn outcome(
        self: &Arc<Self>,
        rq: &ReadyQueue,
        message: Message,
        peer: Option<&PeerAddress>,
        tls: Option<(String, String)>,
        mut result: MessageResult,
    ) {
        super::rewrite::apply(&self.policy, &message, &mut result).await;
        let mut delivered = vec![];
        let mut bounced: Vec<(EnvelopeAddress, Reply, &str)> = vec![];
        let mut transient: Vec<(EnvelopeAddress, Reply, &str)> = vec![];
        for (rcpt, reply, cmd) in result.recipients {
            match reply.code {
                200..=299 => delivered.push((rcpt, reply, cmd)),
                500..=599 => bounced.push((rcpt, reply, cmd)),
                _ => transient.push((rcpt, reply, cmd)),
            }
        }
        if !delivered.is_empty() {
            let rcpts: Vec<_> = delivered.iter().map(|d| d.0.clone()).collect();
            let mut r = self.record(
                RecordType::Delivery,
                &message,
                &rcpts,
                &delivered[0].1,
                delivered[0].2,
                At { rq: Some(rq), peer },
            );
            r.num_attempts = message.num_attempts() + 1;
            crate::metrics::core::delivered().fetch_add(1, Ordering::Relaxed);
            if let Some((cipher, version)) = tls {
                r.tls_cipher = Some(cipher);
                r.tls_protocol_version = Some(version);
            }
            self.logs.log_written(r, Some(&message)).await;
        }
        for (rcpt, reply, cmd) in &bounced {
            self.automation.observe(rq, &message, reply);
            crate::metrics::core::failed().fetch_add(1, Ordering::Relaxed);
            hook_record_given_up(&message, &reply.to_line());
            let mut r = self.record(
                RecordType::Bounce,
                &message,
                std::slice::from_ref(rcpt),
                reply,
                cmd,
                At { rq: Some(rq), peer },
            );
            r.num_attempts = message.num_attempts() + 1;
            self.logs.log_written(r, Some(&message)).await;
        }
        if transient.is_empty() {
            if let Err(e) = self.spool.remove(message.id()).await {
                tracing::error!("spool: removing delivered message {}: {e}", message.id());
            }
            return;
        }
        if !delivered.is_empty() || !bounced.is_empty() {
            message.set_recipients(transient.iter().map(|t| t.0.clone()).collect());
        }
        let (_, reply, cmd) = transient.remove(0);
        self.transient(At { rq: Some(rq), peer }, message, &reply, cmd).await;
    }

    /// Bounces a message from a ready queue: Bounce record, removal from the spool.
    pub(crate) async fn bounce(
        &self,
        rq: &ReadyQueue,
        message: Message,
        reply: &Reply,
        command: &str,
        peer: Option<&PeerAddress>,
    ) {
        self.automation.observe(rq, &message, reply);
        let mut r =
            self.record(RecordType::Bounce, &message, &message.recipients(), reply, command, At { rq: Some(rq), peer });
        r.num_attempts = message.num_attempts() + 1;
        self.fail(r, &message).await;
    }

    /// Bounces a message a bounce hold covers: AdminBounce (the reply the admin API's own
    /// bounce writes) for an operator's hold, Bounce for a shaping rule's.
    pub(super) async fn bounce_held(&self, message: Message, why: &str, admin: bool) {
        if admin {
            let reason = why.strip_prefix("Administrator bounced: ").unwrap_or(why);
            let reply = Reply::new(551, "5.7.1", format!("Administrator bounced with reason: {reason}"));
            let r = self.record_plain(RecordType::AdminBounce, &message, &reply);
            return self.fail(r, &message).await;
        }
        let reply = Reply::new(550, "5.0.0", format!("KumoMTA internal: {why}"));
        self.bounce_unqueued(message, &reply, "unspecified", "unspecified").await
    }

    pub(super) async fn bounce_unqueued(&self, message: Message, reply: &Reply, pool: &str, source: &str) {
        let mut r = self.record(RecordType::Bounce, &message, &message.recipients(), reply, "", At::default());
        r.egress_pool = Some(pool.to_string());
        r.egress_source = Some(source.to_string());
        self.fail(r, &message).await;
    }

    /// Ends a message that failed for good (Bounce, Expiration, AdminBounce): its record,
    /// `total_messages_fail`, and its removal from the spool.
    pub(crate) async fn fail(&self, record: LogRecord, message: &Message) {
        crate::metrics::core::failed().fetch_add(1, Ordering::Relaxed);
        hook_record_given_up(message, &record.response.line());
        // written before the spool forgets the message: a crash cannot lose the record
        self.logs.log_written(record, Some(message)).await;
        if let Err(e) = self.spool.remove(message.id()).await {
            tracing::error!("spool: removing failed message {}: {e}", message.id());
        }
    }

    /// A transient failure: TransientFailure record, `requeue_message`, then either a
    /// re-route, an Expiration, or a retry on the backoff schedule.
    pub(crate) async fn transient(self: &Arc<Self>, at: At<'_>, message: Message, reply: &Reply, command: &str) {
        if let Some(rq) = at.rq
            && rq.kind == ReadyKind::Smtp
        {
            self.automation.observe(rq, &message, reply);
        }
        crate::metrics::core::transfailed().fetch_add(1, Ordering::Relaxed);
        let attempts = message.num_attempts();
        message.set_num_attempts(attempts + 1);
        message.set_last_response(reply.to_line());
        let r = self.record(RecordType::TransientFailure, &message, &message.recipients(), reply, command, at);
        self.logs.log(r, Some(&message));

        let queue = message.queue_name();
        let config = self.cached_config(&queue);
        let delay = retry::with_jitter(
            retry::delay_for_attempt(config.retry_interval, config.max_retry_interval, attempts),
            config.retry_interval,
            rand::random_range(-1.0..=1.0),
        );
        let context = ["LoggedTransientFailure".to_string()];
        match self.policy.requeue_message(&message, &reply.to_line(), &context, true, Some(delay.as_secs_f64())).await {
            Err(PolicyError::Rejected(rejection)) => {
                let reply = rejection.reply();
                let r = self.record(RecordType::Bounce, &message, &message.recipients(), &reply, "", at);
                return self.fail(r, &message).await;
            }
            Err(e) => tracing::error!("requeue_message for {}: {e}", message.id()),
            Ok(()) => {}
        }
        if message.queue_name() != queue {
            message.set_due(None);
            self.store(&message).await;
            self.insert(message, InsertReason::LoggedTransientFailure);
            return;
        }
        let age = (chrono::Utc::now() - message.id().created()).to_std().unwrap_or_default();
        // a per-message `expires` (set_scheduling) replaces the queue's max_age
        let max_age = match message.scheduling().and_then(|s| s.expires) {
            Some(expires) => (expires - message.id().created()).to_std().unwrap_or_default(),
            None => config.max_age,
        };
        if retry::would_expire(age, delay, max_age) {
            let text = retry::expiration_text(age + delay, max_age);
            let reply = Reply::new(551, "5.4.7", text);
            let r = self.record(RecordType::Expiration, &message, &message.recipients(), &reply, "", at);
            return self.fail(r, &message).await;
        }
        let due = Instant::now() + delay;
        message.set_due(Some(unix_now() + delay.as_secs_f64().ceil() as i64));
        self.store(&message).await;
        self.insert_at(message, due, InsertReason::LoggedTransientFailure);
    }

    /// Stores the message after a transient failure (when a `deferred_spool` message is
    /// first written).
    pub(super) async fn store(&self, message: &Message) {
        if let Err(e) = self.spool.store(message).await {
            tracing::error!("spool: storing {} failed: {e}; it stays scheduled in memory", message.id());
        }
    }

    /// Stores the message's new meta, attempt count and due time, if the spool holds it.
    pub(super) async fn persist(&self, message: &Message) {
        if let Err(e) = self.spool.update(message).await {
            tracing::error!("spool: updating {} failed: {e}; it stays scheduled in memory", message.id());
        }
    }
}

/// A log hook record that will never reach its receiver (a permanent answer, expiry):
/// said on the console and counted in `log_hook_records_dropped_total`, not only in the
/// local logs.
fn hook_record_given_up(message: &Message, why: &str) {
    if super::log_hook::is_record_message(message) {
        let records = super::log_hook::records_in(message);
        super::log_hook::dropped(records);
        tracing::error!(
            "log hook message {} ({records} record(s)) given up (queue {}): {why}; records: {}",
            message.id(),
            message.queue_name(),
            super::log_hook::describe_records(message)
        );
    }
}
