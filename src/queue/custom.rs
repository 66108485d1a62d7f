//! Delivery through a connection object the policy makes (`protocol = { custom_lua =
//! { constructor = 'make.webhook', batch_size, min_batch_size, max_batch_latency } }`):
//! webhooks, message buses, log hooks. Each connection task holds one object from the
//! constructor event; messages go one at a time (`send`) or in batches (`send_batch`).
//! Answers are replies like an SMTP server's: a returned disposition is a Delivery,
//! `kumo.reject(5xx)` a Bounce, `kumo.reject(4xx)` or an error a TransientFailure with
//! the queue's retry schedule, suspension, expiry and metrics.

use super::manager::Shared;
use super::ready::{
    ConnectFailure, ReadyQueue, body_in_memory, connect_failed, connection_lease, held_back, wait_for_throttle,
};
use crate::config::queue::CustomLuaProtocol;
use crate::delivery::client::MessageResult;
use crate::message::Message;
use crate::policy::PolicyError;
use crate::protocol::Reply;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// The log records' `response.command` for a custom delivery.
const COMMAND: &str = "send";

/// The reply a policy answer stands for.
fn reply_for(e: &PolicyError) -> Reply {
    match e {
        PolicyError::Rejected(r) => r.reply(),
        other => Reply { code: 400, enhanced: None, text: format!("KumoMTA internal: {other}") },
    }
}

/// How much of a batch a message fills: a message holding several log records
/// (`records_per_message`) counts each, so a batch never carries more than `batch_size`
/// records.
fn weight(message: &Message) -> usize {
    super::log_hook::records_in(message)
}

/// Takes more messages for a batch: up to `batch_size` (by [`weight`]), waiting up to
/// `max_batch_latency` while fewer than `min_batch_size` are there.
async fn gather(rq: &Arc<ReadyQueue>, batch: &mut Vec<Message>, proto: &CustomLuaProtocol) {
    let deadline = Instant::now() + proto.max_batch_latency;
    let mut filled: usize = batch.iter().map(weight).sum();
    while filled < proto.batch_size {
        let next = match rq.pop() {
            Some(m) => m,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                if filled >= proto.min_batch_size || left.is_zero() {
                    return;
                }
                match rq.pop_or_wait(left).await {
                    Some(m) => m,
                    None => return,
                }
            }
        };
        if filled + weight(&next) > proto.batch_size {
            rq.push_front(next);
            return;
        }
        filled += weight(&next);
        batch.push(next);
    }
}

/// One connection task of a custom queue.
pub(super) async fn run(rq: &Arc<ReadyQueue>, shared: &Arc<Shared>) {
    let Some((proto, parts)) = rq.custom.clone() else { return };
    'connect: while !rq.is_empty() && !shared.stopping() {
        if held_back(rq, shared).await {
            continue 'connect;
        }
        let epoch = shared.policy.runtime().epoch.get();
        let path = rq.refresh_path(shared).await;
        let Some(lease) = connection_lease(shared, rq, &path).await else { return };
        wait_for_throttle(shared, format!("connection-rate:{}", rq.name), path.max_connection_rate.as_ref()).await;
        let mut conn = match shared.policy.open_custom(&proto.constructor, &parts).await {
            Ok(c) => {
                rq.consecutive_failures.store(0, Ordering::Relaxed);
                c
            }
            Err(e) => {
                // as a connection that could not be made
                tracing::error!("queue {}: {e}", rq.name);
                let reply = reply_for(&e);
                let bounce = reply.code >= 500;
                connect_failed(rq, shared, &path, ConnectFailure { reply, permanent: false }, bounce).await;
                continue 'connect;
            }
        };
        let batching = conn.batches() && proto.batch_size > 1;
        let mut sent = 0;
        loop {
            let Some(first) = rq.pop_or_wait(lease.idle(path.idle_timeout)).await else {
                conn.close().await;
                return;
            };
            let mut batch = vec![first];
            if batching {
                gather(rq, &mut batch, &proto).await;
            }
            let _counted: Vec<_> = batch.iter().map(|_| shared.delivering()).collect();
            let held = shared.policy.runtime().epoch.get() != epoch
                || shared.spool.delivery_paused()
                || shared.automation.ready_suspended(&rq.name).is_some();
            if held {
                // new options, a paused spool or a suspension: back to the head, in order
                for m in batch.into_iter().rev() {
                    rq.push_front(m);
                }
                conn.close().await;
                continue 'connect;
            }
            let mut ready = Vec::with_capacity(batch.len());
            for m in batch {
                wait_for_throttle(shared, format!("message-rate:{}", rq.name), path.max_message_rate.as_ref()).await;
                for (name, spec) in &path.additional_message_rate_throttles {
                    wait_for_throttle(shared, format!("named:{name}"), Some(spec)).await;
                }
                match body_in_memory(&m).await {
                    Ok(()) => ready.push(m),
                    Err(e) => {
                        let reply = crate::delivery::client::body_unreadable(&e);
                        tracing::error!("queue {}: {e}", rq.name);
                        if e.lost {
                            shared.bounce(rq, m, &reply, COMMAND, None).await;
                        } else {
                            shared.transient(super::manager::At { rq: Some(rq), peer: None }, m, &reply, COMMAND).await;
                        }
                    }
                }
            }
            if ready.is_empty() {
                continue;
            }
            let answer = match batching {
                true => conn.send_batch(&ready).await,
                false => conn.send(&ready[0]).await,
            };
            let reply = match &answer {
                Ok(text) => Reply { code: 200, enhanced: None, text: text.clone() },
                Err(e) => {
                    tracing::debug!("queue {}: {e}", rq.name);
                    reply_for(e)
                }
            };
            sent += ready.len();
            for m in ready {
                let recipients = m.recipients().into_iter().map(|r| (r, reply.clone(), COMMAND)).collect();
                shared.outcome(rq, m, None, None, MessageResult { recipients }).await;
            }
            let suspended = shared.automation.ready_suspended(&rq.name).is_some();
            let over = sent >= path.max_deliveries_per_connection || !lease.held();
            if !conn.usable() || over || shared.stopping() || suspended {
                conn.close().await;
                continue 'connect;
            }
        }
    }
}
