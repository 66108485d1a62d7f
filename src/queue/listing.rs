//! Operators' per-message view and actions (mailq, postsuper): list queued messages with
//! filters (`queue-list`), and bounce, requeue, hold, release or delete messages by id.
//! A hold is kept in the message's envelope in the spool, so it lasts across restarts.

use super::manager::QueueManager;
use crate::logs::RecordType;
use crate::message::queue_name::{self, QueueNameParts};
use crate::message::{Message, SpoolId};
use crate::protocol::Reply;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// How long a held message waits: until released, in practice.
pub const ADMIN_HOLD: Duration = Duration::from_secs(10 * 365 * 86_400);

/// What `queue-list` selects.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Only this scheduled queue (or ready queue) name.
    pub queue: Option<String>,
    /// Only mail to this domain (the queue's domain or routing domain).
    pub domain: Option<String>,
    /// Only messages received at least this long ago.
    pub older_than: Option<Duration>,
    /// At most this many, oldest first.
    pub limit: usize,
}

/// One listed message.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub id: String,
    pub queue: String,
    /// `scheduled` (waiting for its time) or `ready` (waiting for a connection).
    pub state: &'static str,
    pub received: String,
    pub age_secs: i64,
    pub attempts: u32,
    /// When the next attempt is due (RFC 3339), if it waits for a time.
    pub next_due: Option<String>,
    /// Held by an operator (`wasmta message hold`).
    pub held: bool,
    pub last_response: Option<String>,
    pub sender: String,
    pub recipients: Vec<String>,
}

/// The answer to a listing.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Messages that matched (the listing shows at most `limit` of them).
    pub matched: usize,
    pub messages: Vec<Listed>,
}

/// One queue as `queue-summary` shows it.
#[derive(Debug, Serialize)]
pub struct QueueDetail {
    pub name: String,
    /// `scheduled` or `ready`.
    pub kind: &'static str,
    pub count: usize,
    /// The oldest message's age.
    pub oldest_age_secs: Option<i64>,
    /// The reply of the latest failed attempt among the messages with the most attempts.
    pub last_error: Option<String>,
    /// Messages held by an operator.
    pub held: usize,
    pub suspended: bool,
    /// An admin bounce covers it.
    pub bouncing: bool,
    /// Ready queues: open delivery connections.
    pub connections: Option<usize>,
}

/// Queued messages per domain by age, Postfix qshape's buckets (minutes).
#[derive(Debug, Serialize)]
pub struct Shape {
    /// Each bucket's upper bound in minutes ("5" is under 5 minutes), the last open.
    pub buckets: Vec<String>,
    /// Largest first.
    pub domains: Vec<ShapeRow>,
}

/// One domain's counts.
#[derive(Debug, Serialize)]
pub struct ShapeRow {
    pub domain: String,
    pub total: usize,
    pub counts: Vec<usize>,
}

const SHAPE_MINUTES: [i64; 10] = [5, 10, 20, 40, 80, 160, 320, 640, 1280, i64::MAX];

/// A per-message action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// AdminBounce record with this reason, then gone.
    Bounce(String),
    /// Due now.
    Requeue,
    /// Not delivered until released.
    Hold,
    /// Due now after a hold.
    Release,
    /// Gone without a bounce; an AdminDelete record.
    Delete(String),
}

/// What became of one id.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub result: String,
}

fn domain_matches(queue: &str, domain: &str) -> bool {
    let p = QueueNameParts::parse(queue);
    p.domain.eq_ignore_ascii_case(domain) || p.routing_domain.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(domain))
}

impl QueueManager {
    /// Queued messages matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Listing {
        let shared = self.shared();
        let now = chrono::Utc::now();
        let old_enough =
            |m: &Message| filter.older_than.is_none_or(|d| (now - m.id().created()).to_std().unwrap_or_default() >= d);
        let mut found: Vec<(Message, String, &'static str)> = vec![];
        let scheduled: Vec<_> = shared.scheduled.lock().values().cloned().collect();
        for q in scheduled {
            if filter.queue.as_ref().is_some_and(|n| *n != q.name)
                || filter.domain.as_ref().is_some_and(|d| !domain_matches(&q.name, d))
            {
                continue;
            }
            found.extend(q.messages().into_iter().filter(|m| old_enough(m)).map(|m| (m, q.name.clone(), "scheduled")));
        }
        let ready: Vec<_> = shared.ready.lock().iter().map(|(k, q)| (k.clone(), q.clone())).collect();
        for (name, q) in ready {
            for m in q.state().0 {
                if !old_enough(&m) {
                    continue;
                }
                let sched = m.peek(|e| {
                    let domain = e.recipients.first().map(|r| r.domain().to_string()).unwrap_or_default();
                    queue_name::queue_name(&e.meta, &domain)
                });
                if filter.queue.as_ref().is_some_and(|n| *n != name && *n != sched)
                    || filter.domain.as_ref().is_some_and(|d| !domain_matches(&sched, d))
                {
                    continue;
                }
                found.push((m, name.clone(), "ready"));
            }
        }
        let matched = found.len();
        found.sort_by_key(|(m, _, _)| *m.id().as_bytes());
        let messages = found
            .into_iter()
            .take(filter.limit)
            .map(|(m, queue, state)| {
                // the id first: `peek` holds the message's lock
                let id = m.id();
                let created = id.created();
                m.peek(|e| Listed {
                    id: id.to_string(),
                    queue,
                    state,
                    received: created.to_rfc3339(),
                    age_secs: (now - created).num_seconds(),
                    attempts: e.num_attempts,
                    next_due: if e.admin_hold {
                        None
                    } else {
                        e.due.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339())
                    },
                    held: e.admin_hold,
                    last_response: e.last_response.clone(),
                    sender: e.sender.email(),
                    recipients: e.recipients.iter().map(|r| r.email()).collect(),
                })
            })
            .collect();
        Listing { matched, messages }
    }

    /// Every queue's count, oldest message, last error and markers.
    pub fn details(&self) -> Vec<QueueDetail> {
        let shared = self.shared();
        let now = chrono::Utc::now();
        let describe = |messages: &[Message]| {
            let oldest = messages.iter().map(|m| m.id()).min().map(|id| (now - id.created()).num_seconds());
            // the most tried message's last reply says best what the queue runs into
            let (mut best, mut held) = ((0u32, None::<String>), 0);
            for m in messages {
                m.peek(|e| {
                    held += usize::from(e.admin_hold);
                    if e.last_response.is_some() && e.num_attempts >= best.0 {
                        best = (e.num_attempts, e.last_response.clone());
                    }
                });
            }
            (oldest, best.1, held)
        };
        let mut out = vec![];
        let scheduled: Vec<_> = shared.scheduled.lock().values().cloned().collect();
        for q in scheduled {
            let messages = q.messages();
            let (oldest, last_error, held) = describe(&messages);
            out.push(QueueDetail {
                name: q.name.clone(),
                kind: "scheduled",
                count: messages.len(),
                oldest_age_secs: oldest,
                last_error,
                held,
                suspended: shared.automation.sched_suspended(&q.parts).is_some(),
                bouncing: shared.automation.bounce(&q.parts).is_some(),
                connections: None,
            });
        }
        let ready: Vec<_> = shared.ready.lock().iter().map(|(k, q)| (k.clone(), q.clone())).collect();
        for (name, q) in ready {
            let (messages, connections) = q.state();
            let (oldest, last_error, held) = describe(&messages);
            out.push(QueueDetail {
                suspended: shared.automation.ready_suspended(&name).is_some(),
                name,
                kind: "ready",
                count: messages.len(),
                oldest_age_secs: oldest,
                last_error,
                held,
                bouncing: false,
                connections: Some(connections),
            });
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
        out
    }

    /// Queued messages per (routing) domain by age.
    pub fn shape(&self) -> Shape {
        let shared = self.shared();
        let now = chrono::Utc::now();
        let mut rows: std::collections::HashMap<String, Vec<usize>> = Default::default();
        let mut count = |domain: &str, m: &Message| {
            let minutes = (now - m.id().created()).num_minutes();
            let bucket = SHAPE_MINUTES.iter().position(|&b| minutes < b).unwrap_or(SHAPE_MINUTES.len() - 1);
            rows.entry(domain.to_string()).or_insert_with(|| vec![0; SHAPE_MINUTES.len()])[bucket] += 1;
        };
        let scheduled: Vec<_> = shared.scheduled.lock().values().cloned().collect();
        for q in scheduled {
            let domain = q.parts.routing_domain.clone().unwrap_or_else(|| q.parts.domain.clone());
            q.messages().iter().for_each(|m| count(&domain, m));
        }
        let ready: Vec<_> = shared.ready.lock().values().cloned().collect();
        for q in ready {
            for m in q.state().0 {
                let domain = m.peek(|e| {
                    let d = e.recipients.first().map(|r| r.domain().to_string()).unwrap_or_default();
                    let p = QueueNameParts::parse(&queue_name::queue_name(&e.meta, &d));
                    p.routing_domain.unwrap_or(p.domain)
                });
                count(&domain, &m);
            }
        }
        let mut domains: Vec<ShapeRow> =
            rows.into_iter().map(|(domain, counts)| ShapeRow { domain, total: counts.iter().sum(), counts }).collect();
        domains.sort_by(|a, b| b.total.cmp(&a.total).then(a.domain.cmp(&b.domain)));
        let mut buckets: Vec<String> = SHAPE_MINUTES[..SHAPE_MINUTES.len() - 1].iter().map(|m| m.to_string()).collect();
        buckets.push("1280+".into());
        Shape { buckets, domains }
    }

    /// Takes the messages with these ids out of every queue.
    fn take_ids(&self, ids: &HashSet<SpoolId>) -> Vec<Message> {
        let shared = self.shared();
        let mut taken = vec![];
        let scheduled: Vec<_> = shared.scheduled.lock().values().cloned().collect();
        for q in scheduled {
            taken.extend(q.take_where(|m| ids.contains(&m.id())));
        }
        let ready: Vec<_> = shared.ready.lock().values().cloned().collect();
        for q in ready {
            taken.extend(q.drain_where(|m| ids.contains(&m.id())));
        }
        taken
    }

    /// Applies `action` to each id; one outcome per id, in the order given.
    pub async fn act(&self, ids: &[String], action: &Action, suppress_logging: bool) -> Vec<Outcome> {
        let parsed: Vec<(String, Option<SpoolId>)> =
            ids.iter().map(|t| (t.clone(), SpoolId::parse(t.trim()))).collect();
        let wanted: HashSet<SpoolId> = parsed.iter().filter_map(|(_, id)| *id).collect();
        let taken = self.take_ids(&wanted);
        let mut results = std::collections::HashMap::new();
        for m in taken {
            let result = self.apply(&m, action, suppress_logging).await;
            results.insert(m.id(), result);
        }
        let outcome = |(text, id): (String, Option<SpoolId>)| {
            let result = match id {
                None => "not a message id".to_string(),
                Some(id) => results
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "not queued (delivered, bounced, in a delivery attempt, or unknown)".into()),
            };
            Outcome { id: text, result }
        };
        parsed.into_iter().map(outcome).collect()
    }

    /// One taken message: acted on, or put back where it belongs.
    async fn apply(&self, m: &Message, action: &Action, suppress_logging: bool) -> String {
        let shared = self.shared();
        let persist = |m: Message| async move {
            if let Err(e) = self.shared().spool.update(&m).await {
                tracing::error!("spool: storing {} after an operator's action: {e}", m.id());
            }
            self.insert(m, super::InsertReason::AdminRebind);
        };
        match action {
            Action::Bounce(reason) | Action::Delete(reason) => {
                let (kind, reply, done) = match action {
                    Action::Bounce(_) => (
                        RecordType::AdminBounce,
                        Reply::new(551, "5.7.1", format!("Administrator bounced with reason: {reason}")),
                        "bounced",
                    ),
                    _ => (
                        RecordType::AdminDelete,
                        Reply::new(250, "2.0.0", format!("Administrator deleted with reason: {reason}")),
                        "deleted",
                    ),
                };
                if kind == RecordType::AdminBounce {
                    crate::metrics::core::failed().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !suppress_logging {
                    let r = shared.record_plain(kind, m, &reply);
                    shared.logs.log(r, Some(m));
                }
                if let Err(e) = shared.spool.remove(m.id()).await {
                    tracing::error!("spool: removing {} ({done} by an operator): {e}", m.id());
                }
                tracing::info!("admin: {} {done}: {reason}", m.id());
                done.into()
            }
            Action::Requeue if m.admin_held() => {
                self.insert(m.clone(), super::InsertReason::AdminRebind);
                "held: release it instead".into()
            }
            Action::Requeue => {
                m.set_due(None);
                persist(m.clone()).await;
                "requeued".into()
            }
            Action::Hold if m.admin_held() => {
                self.insert(m.clone(), super::InsertReason::AdminRebind);
                "already held".into()
            }
            Action::Hold => {
                m.set_admin_held(true);
                persist(m.clone()).await;
                tracing::info!("admin: {} held", m.id());
                "held".into()
            }
            Action::Release if !m.admin_held() => {
                self.insert(m.clone(), super::InsertReason::AdminRebind);
                "not held".into()
            }
            Action::Release => {
                m.set_admin_held(false);
                m.set_due(None);
                persist(m.clone()).await;
                tracing::info!("admin: {} released", m.id());
                "released".into()
            }
        }
    }
}
