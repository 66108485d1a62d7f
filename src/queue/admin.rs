//! What the admin API does to queues: bounce what matches now (and, through the
//! automation holds, what arrives for the hold's duration), suspend, list and inspect.

use super::automation::{Automation, Scope};
use super::manager::QueueManager;
use crate::logs::RecordType;
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::protocol::Reply;
use std::collections::BTreeMap;

/// A ready queue as `ready-q-states` shows it.
#[derive(Debug, serde::Serialize)]
pub struct ReadyState {
    pub messages: usize,
    pub connections: usize,
    pub suspended: bool,
}

impl QueueManager {
    /// The automation and admin holds.
    pub fn automation(&self) -> &Automation {
        &self.shared().automation
    }

    /// Takes every queued message `scope` covers, to bounce them.
    pub fn take_for_bounce(&self, scope: &Scope) -> Vec<Message> {
        let shared = self.shared();
        let mut taken = self.take_scheduled(scope);
        let ready: Vec<_> = shared.ready.lock().values().cloned().collect();
        for rq in ready {
            taken.extend(rq.drain_where(|m| scope.covers(&QueueNameParts::parse(&m.queue_name()))));
        }
        taken
    }

    /// Bounces `taken` (AdminBounce records, spool removal), many at once so the spool
    /// groups their writes; counts them into bounce `hold_id` as they go, so `bounce-list`
    /// shows the progress of a large bounce. Returns the count per scheduled queue name.
    pub async fn bounce_taken(
        &self,
        hold_id: &str,
        taken: Vec<Message>,
        reason: &str,
        suppress_logging: bool,
    ) -> BTreeMap<String, usize> {
        const AT_ONCE: usize = 512;
        let shared = self.shared();
        let reply = Reply::new(551, "5.7.1", format!("Administrator bounced with reason: {reason}"));
        let mut counts = BTreeMap::new();
        for chunk in taken.chunks(AT_ONCE) {
            let mut done = BTreeMap::new();
            for m in chunk {
                *done.entry(m.queue_name()).or_insert(0) += 1;
                crate::metrics::core::failed().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !suppress_logging {
                    let r = shared.record_plain(RecordType::AdminBounce, m, &reply);
                    shared.logs.log(r, Some(m));
                }
            }
            let removals = chunk.iter().map(|m| async move {
                if let Err(e) = shared.spool.remove(m.id()).await {
                    tracing::error!("spool: removing bounced message {}: {e}", m.id());
                }
            });
            futures::future::join_all(removals).await;
            shared.automation.note_bounced(hold_id, &done);
            for (q, n) in done {
                *counts.entry(q).or_insert(0) += n;
            }
        }
        counts
    }

    /// Re-queues every queued message `scope` covers after setting the meta in `data`
    /// (AdminRebind records); returns the count per old queue name.
    pub async fn rebind_now(
        &self,
        scope: &Scope,
        data: &serde_json::Map<String, serde_json::Value>,
        reason: &str,
        suppress_logging: bool,
    ) -> BTreeMap<String, usize> {
        let shared = self.shared();
        let taken = self.take_scheduled(scope);
        let reply = Reply::new(250, "2.0.0", format!("Administrator rebound with reason: {reason}"));
        let mut counts = BTreeMap::new();
        let (total, started) = (taken.len(), std::time::Instant::now());
        let mut said = started;
        // many at once, so the spool groups their writes; a long rebind says how far it is
        for (i, chunk) in taken.chunks(512).enumerate() {
            for m in chunk {
                *counts.entry(m.queue_name()).or_insert(0) += 1;
                for (k, v) in data {
                    m.set_meta(k, v.clone());
                }
                if !suppress_logging {
                    let r = shared.record_plain(RecordType::AdminRebind, m, &reply);
                    shared.logs.log(r, Some(m));
                }
            }
            let updates = chunk.iter().map(|m| async move {
                if let Err(e) = shared.spool.update(m).await {
                    tracing::error!("spool: storing rebound {}: {e}", m.id());
                }
            });
            futures::future::join_all(updates).await;
            for m in chunk {
                m.set_due(None);
                self.insert(m.clone(), super::InsertReason::AdminRebind);
            }
            if said.elapsed() >= std::time::Duration::from_secs(1) {
                said = std::time::Instant::now();
                let done = (i + 1) * 512;
                let rate = done as f64 / started.elapsed().as_secs_f64();
                tracing::info!("admin: rebind ({reason}): {done} of {total} message(s) rebound ({rate:.0}/s)");
            }
        }
        counts
    }

    /// Takes every message of the scheduled queues `scope` covers.
    fn take_scheduled(&self, scope: &Scope) -> Vec<Message> {
        let scheduled: Vec<_> = self.shared().scheduled.lock().values().cloned().collect();
        scheduled.into_iter().filter(|q| scope.covers(&q.parts)).flat_map(|q| q.drain()).collect()
    }

    /// Ends an admin hold early (`kind` as for [`Automation::add`]); false when there is no
    /// such id. A cancelled suspension's held messages are due at once, not when the
    /// suspension would have ended; a cancelled bounce stops bouncing at once.
    pub fn cancel_hold(&self, kind: &str, id: &str) -> bool {
        let Some(hold) = self.shared().automation.cancel(kind, id) else { return false };
        if kind == "suspend" {
            let scheduled: Vec<_> = self.shared().scheduled.lock().values().cloned().collect();
            let covered: Vec<_> = scheduled.iter().filter(|q| hold.scope.covers(&q.parts)).collect();
            let released: usize = covered.iter().map(|q| q.release_held()).sum();
            covered.iter().for_each(|q| q.wake());
            tracing::info!("admin: suspension {id} cancelled; {released} held message(s) are due now");
        }
        if kind == "suspend-ready-q"
            && let Some(name) = &hold.name
            && let Some(rq) = self.shared().ready.lock().get(name).cloned()
        {
            rq.wake();
        }
        true
    }

    /// Message counts of every scheduled queue.
    pub fn scheduled_counts(&self) -> BTreeMap<String, usize> {
        self.shared().scheduled.lock().iter().map(|(k, q)| (k.clone(), q.len())).collect()
    }

    /// Every ready queue's state.
    pub fn ready_states(&self) -> BTreeMap<String, ReadyState> {
        let shared = self.shared();
        let ready: Vec<_> = shared.ready.lock().iter().map(|(k, q)| (k.clone(), q.clone())).collect();
        ready
            .into_iter()
            .map(|(k, q)| {
                let (messages, connections) = q.state();
                let suspended = shared.automation.ready_suspended(&k).is_some();
                (k, ReadyState { messages: messages.len(), connections, suspended })
            })
            .collect()
    }

    /// The message with this id, wherever it waits.
    pub fn find(&self, id: &str) -> Option<Message> {
        let shared = self.shared();
        let scheduled: Vec<_> = shared.scheduled.lock().values().cloned().collect();
        for q in scheduled {
            if let Some(m) = q.messages().into_iter().find(|m| m.id().to_string() == id) {
                return Some(m);
            }
        }
        let ready: Vec<_> = shared.ready.lock().values().cloned().collect();
        ready.into_iter().find_map(|q| q.state().0.into_iter().find(|m| m.id().to_string() == id))
    }
}
