//! The queue manager: owns the scheduled and ready queues and promotes due messages
//! (queue config → egress pool and source → site → ready queue). What becomes of a
//! message after an attempt is `disposition`; the deferred queue's injection is `deferred`.

use super::ready::{ReadyKind, ReadyQueue, ReadySpec};
use super::scheduled::ScheduledQueue;
use crate::config::egress::{EgressPool, EgressSource};
use crate::config::queue::{Protocol, QueueConfig, RefreshStrategy, SmtpProtocol};
use crate::dns::Dns;
use crate::dns::mx::{Site, SiteError, resolve_site};
use crate::logs::{Logs, PeerAddress};
use crate::message::Message;
use crate::policy::{Policy, PolicyError};
use crate::protocol::Reply;
use crate::shaping::throttle::Throttler;
use crate::spool::Spool;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Why a message entered a queue (KumoMTA's insert reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertReason {
    /// Just received.
    Received,
    /// Found in the spool at start-up.
    Enumerated,
    /// Scheduled after a transient failure.
    LoggedTransientFailure,
    /// Re-queued by the admin API (rebind).
    AdminRebind,
    /// Injected over HTTP.
    Injected,
}

/// Where a delivery attempt happened, for log records.
#[derive(Clone, Copy, Default)]
pub(crate) struct At<'a> {
    /// The ready queue.
    pub rq: Option<&'a ReadyQueue>,
    /// The host talked to.
    pub peer: Option<&'a PeerAddress>,
}

/// How long a resolved site is reused.
const SITE_TTL: Duration = Duration::from_secs(300);

/// State shared by the manager, its queue tasks and connection tasks.
pub struct Shared {
    pub(crate) policy: Policy,
    pub(crate) spool: Spool,
    pub(crate) logs: Logs,
    pub(crate) dns: Arc<dyn Dns>,
    pub(crate) throttles: Arc<dyn Throttler>,
    pub(crate) named_limits: Arc<crate::shaping::limits::NamedLimits>,
    pub(crate) automation: super::automation::Automation,
    pub(crate) hostname: String,
    pub(crate) scheduled: Mutex<HashMap<String, Arc<ScheduledQueue>>>,
    pub(crate) ready: Mutex<HashMap<String, Arc<ReadyQueue>>>,
    sites: Mutex<HashMap<String, (Site, Instant)>>,
    configs: Mutex<HashMap<String, (QueueConfig, Instant, u64)>>,
    pools: Mutex<HashMap<String, (EgressPool, Instant)>>,
    sources: Mutex<HashMap<String, (EgressSource, Instant)>>,
    stopping: AtomicBool,
    reaper_started: AtomicBool,
    /// Messages between queues (being routed, waiting for room in a ready queue).
    transit: Arc<AtomicI64>,
    /// Messages in a delivery attempt or deferred injection.
    delivering: Arc<AtomicI64>,
}

/// Counts one message in one of the states between queues while it lives, so the queue
/// gauges add up to every message the queues hold.
pub(crate) struct Counted(Arc<AtomicI64>);

impl Counted {
    fn new(counter: &Arc<AtomicI64>) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The queue manager handle.
#[derive(Clone)]
pub struct QueueManager(Arc<Shared>);

pub(super) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl QueueManager {
    /// A manager delivering with the policy's runtime (its resolver, throttles and named
    /// limits); `hostname` is the default EHLO name.
    pub fn new(policy: Policy, spool: Spool, logs: Logs, hostname: String) -> Self {
        let runtime = policy.runtime().clone();
        QueueManager(Arc::new(Shared {
            policy,
            spool,
            logs,
            dns: runtime.dns(),
            throttles: runtime.throttles.clone(),
            named_limits: runtime.named_limits.clone(),
            automation: super::automation::Automation::new(runtime),
            hostname,
            scheduled: Mutex::new(HashMap::new()),
            ready: Mutex::new(HashMap::new()),
            sites: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            reaper_started: AtomicBool::new(false),
            transit: Arc::default(),
            delivering: Arc::default(),
        }))
    }

    /// With `configure_redis_throttles`: shares automation rule actions with the fleet
    /// (`node` names this node in their log lines elsewhere).
    pub fn share_automation(&self, node: &str) {
        if let Some(redis) = self.0.policy.runtime().fleet() {
            super::fleet_rules::start(&self.0, redis.clone(), node);
        }
    }

    /// Puts a message into its scheduled queue, due at its `due` time or now.
    pub fn insert(&self, message: Message, reason: InsertReason) {
        self.0.insert(message, reason);
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }

    /// Stops starting new deliveries (at shutdown).
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::Release);
    }

    /// (messages between queues, messages in a delivery attempt): with the scheduled and
    /// ready queues' counts, every message the queues hold.
    pub fn in_between(&self) -> (i64, i64) {
        (self.0.transit.load(Ordering::Relaxed), self.0.delivering.load(Ordering::Relaxed))
    }

    /// (queue name, messages waiting) for every scheduled and ready queue.
    pub fn summary(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = self.0.scheduled.lock().iter().map(|(k, q)| (k.clone(), q.len())).collect();
        out.extend(self.0.ready.lock().iter().map(|(k, q)| (k.clone(), q.len())));
        out
    }
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Counts a message as in a delivery attempt while the result lives.
    pub(crate) fn delivering(&self) -> Counted {
        Counted::new(&self.delivering)
    }

    pub(super) fn insert(self: &Arc<Self>, message: Message, reason: InsertReason) {
        let due = message.due().map(|t| t - unix_now()).filter(|d| *d > 0);
        let mut at = due.map(|d| Instant::now() + Duration::from_secs(d as u64)).unwrap_or_else(Instant::now);
        if let Some(wait) = scheduling_wait(&message) {
            at = at.max(Instant::now() + wait);
        }
        // held by an operator: waits until `wasmta message release`, across restarts
        if message.admin_held() {
            at = Instant::now() + super::listing::ADMIN_HOLD;
        }
        // found at start-up: packed again once queued (reading its due time and queue
        // opened it), so a restart on a large spool costs envelopes' bytes
        let recovered = (reason == InsertReason::Enumerated).then(|| message.clone());
        self.insert_at(message, at, reason);
        if let Some(m) = recovered {
            m.set_waiting();
        }
    }

    pub(super) fn insert_at(self: &Arc<Self>, message: Message, due: Instant, reason: InsertReason) {
        let name = message.queue_name();
        tracing::trace!("queue {name}: insert {} ({reason:?})", message.id());
        // KumoMTA's `null` queue discards, wherever the queue meta was set (reception,
        // http_message_generated, a rebind, requeue_message): never a queue named "null"
        if name == super::NULL_QUEUE {
            tracing::debug!("{}: queue is null: discarded", message.id());
            let spool = self.spool.clone();
            tokio::spawn(async move {
                if let Err(e) = spool.remove(message.id()).await {
                    tracing::debug!("spool: removing null-queued {}: {e}", message.id());
                }
            });
            return;
        }
        // under the map's lock, so a reaper never removes a queue a message is entering
        let mut map = self.scheduled.lock();
        let queue = match map.get(&name) {
            Some(q) => q.clone(),
            None => {
                let q = ScheduledQueue::new(&name);
                map.insert(name, q.clone());
                tokio::spawn(run_scheduled(q.clone(), self.clone()));
                if !self.reaper_started.swap(true, Ordering::AcqRel) {
                    tokio::spawn(reap_ready_queues(self.clone()));
                }
                q
            }
        };
        queue.insert(message, due);
    }

    /// Forgets `queue` (and its cached config) if it is still empty; true if it went.
    fn reap_scheduled(&self, queue: &Arc<ScheduledQueue>) -> bool {
        let mut map = self.scheduled.lock();
        if !queue.is_empty() || !map.get(&queue.name).is_some_and(|q| Arc::ptr_eq(q, queue)) {
            return false;
        }
        map.remove(&queue.name);
        self.configs.lock().remove(&queue.name);
        tracing::debug!("queue {}: idle for {QUEUE_REAP_AFTER:?}, reaped", queue.name);
        true
    }

    async fn queue_config(&self, queue: &ScheduledQueue) -> Result<QueueConfig, PolicyError> {
        if queue.name == super::DEFERRED_QUEUE {
            return Ok(super::deferred_queue_config());
        }
        if let Some((c, at, epoch)) = self.configs.lock().get(&queue.name).cloned() {
            let fresh = match c.refresh_strategy {
                RefreshStrategy::Ttl => at.elapsed() < c.refresh_interval,
                RefreshStrategy::Epoch => epoch == self.policy.runtime().epoch.get(),
            };
            if fresh {
                return Ok(c);
            }
        }
        let epoch = self.policy.runtime().epoch.get();
        let c = self.policy.queue_config(&queue.parts).await?;
        self.configs.lock().insert(queue.name.clone(), (c.clone(), Instant::now(), epoch));
        Ok(c)
    }

    pub(super) fn cached_config(&self, name: &str) -> QueueConfig {
        if name == super::DEFERRED_QUEUE {
            return super::deferred_queue_config();
        }
        self.configs.lock().get(name).map(|(c, _, _)| c.clone()).unwrap_or_default()
    }

    async fn site(&self, domain: &str, smtp: &SmtpProtocol) -> Result<Site, SiteError> {
        let key = format!("{domain}|{:?}", smtp.mx_list);
        if let Some((s, at)) = self.sites.lock().get(&key).cloned()
            && at.elapsed() < SITE_TTL
        {
            return Ok(s);
        }
        let s = resolve_site(self.dns.as_ref(), domain, smtp).await?;
        self.sites.lock().insert(key, (s.clone(), Instant::now()));
        Ok(s)
    }

    /// The pool and a source chosen from it by weight; both are cached for their `ttl`.
    async fn choose_source(&self, pool_name: &str) -> Result<(EgressPool, EgressSource), PolicyError> {
        let cached = self.pools.lock().get(pool_name).filter(|(p, at)| at.elapsed() < p.ttl).map(|(p, _)| p.clone());
        let pool = match cached {
            Some(p) => p,
            None => {
                let p = self.policy.egress_pool(pool_name).await?;
                self.pools.lock().insert(pool_name.to_string(), (p.clone(), Instant::now()));
                p
            }
        };
        let source_name = pool.choose(rand::random::<f64>()).unwrap_or("unspecified").to_string();
        let cached =
            self.sources.lock().get(&source_name).filter(|(s, at)| at.elapsed() < s.ttl).map(|(s, _)| s.clone());
        let source = match cached {
            Some(s) => s,
            None => {
                let s = self.policy.egress_source(&source_name).await?;
                self.sources.lock().insert(source_name, (s.clone(), Instant::now()));
                s
            }
        };
        Ok((pool, source))
    }

    /// Moves a due message towards its ready queue.
    async fn promote(self: &Arc<Self>, queue: &Arc<ScheduledQueue>, message: Message) {
        let internal = |text: String| Reply::new(451, "4.3.0", format!("KumoMTA internal: {text}"));
        let config = match self.queue_config(queue).await {
            Ok(c) => c,
            Err(e) => {
                return self.transient(At::default(), message, &internal(format!("get_queue_config: {e}")), "").await;
            }
        };
        if queue.name == super::DEFERRED_QUEUE {
            return self.promote_deferred(queue, message).await;
        }
        if let Some((why, admin)) = self.automation.bounce(&queue.parts) {
            self.automation.count_bounced(&queue.name, &queue.parts, 1);
            return self.bounce_held(message, &why, admin).await;
        }
        if let Some(until) = self.automation.sched_suspended(&queue.parts) {
            queue.insert_held(message, until);
            return;
        }
        // its delivery window (set_scheduling) is closed: wait for it to open
        if let Some(wait) = scheduling_wait(&message) {
            queue.insert(message, Instant::now() + wait);
            return;
        }
        let (smtp, maildir, custom) = match &config.protocol {
            Protocol::Smtp(s) => (s.clone(), None, None),
            Protocol::Maildir(m) => (Default::default(), Some(m.clone()), None),
            Protocol::CustomLua(c) => (Default::default(), None, Some(c.clone())),
            other => {
                let text = format!("delivery protocol {other:?} is not supported by wasmta yet");
                return self.transient(At::default(), message, &internal(text), "").await;
            }
        };
        if custom.is_none() && super::log_hook::is_record_message(&message) {
            // a catch-all get_queue_config answered for the hook's queue (registered before
            // the log hook helper, or a misspelt queue): a record must not be mailed to the
            // recipient of the message it describes; it waits until the policy is fixed
            let text = format!(
                "log record messages are delivered by a custom_lua queue, but get_queue_config gave queue {} another protocol (a catch-all get_queue_config registered before the log hook, or a misspelt queue?)",
                queue.name
            );
            tracing::error!("{}: {text}", message.id());
            return self.transient(At::default(), message, &internal(text), "").await;
        }
        if let Some(spec) = config.max_message_rate
            && let Err(wait) = self.throttles.acquire(&format!("queue-rate:{}", queue.name), spec).await
        {
            queue.insert(message, Instant::now() + wait);
            return;
        }
        let pool_name = config.egress_pool.clone().unwrap_or_else(|| "unspecified".into());
        let (pool, source) = match self.choose_source(&pool_name).await {
            Ok(x) => x,
            Err(e) => return self.transient(At::default(), message, &internal(e.to_string()), "").await,
        };
        let routing_domain = queue.parts.routing_domain.clone().unwrap_or_else(|| queue.parts.domain.clone());
        if let Some(c) = custom {
            let site = Site { name: queue.name.clone(), hosts: vec![], from_dns: false };
            let name = format!("{}->{}@lua", source.name, queue.name);
            let (kind, pool, custom) = (ReadyKind::Custom, pool.name.clone(), Some((c, queue.parts.clone())));
            let spec = ReadySpec { name, kind, site, source, pool, routing_domain, maildir: None, custom };
            return match self.ready_queue(spec).await {
                Ok(rq) => self.insert_ready(queue, &rq, message).await,
                Err(e) => self.transient(At::default(), message, &internal(e.to_string()), "").await,
            };
        }
        if let Some(m) = maildir {
            let site = Site { name: format!("maildir:{}", m.maildir_path), hosts: vec![], from_dns: false };
            let name = format!("{}->{}@maildir", source.name, site.name);
            let (kind, pool, maildir) = (ReadyKind::Maildir, pool.name.clone(), Some(m));
            let spec = ReadySpec { name, kind, site, source, pool, routing_domain, maildir, custom: None };
            return match self.ready_queue(spec).await {
                Ok(rq) => self.insert_ready(queue, &rq, message).await,
                Err(e) => self.transient(At::default(), message, &internal(e.to_string()), "").await,
            };
        }
        let site = match self.site(&routing_domain, &smtp).await {
            Ok(s) => s,
            Err(SiteError::NullMx) => {
                let reply = Reply::new(
                    556,
                    "5.1.10",
                    format!("KumoMTA internal: {routing_domain} publishes a null MX and accepts no mail"),
                );
                return self.bounce_unqueued(message, &reply, &pool.name, &source.name).await;
            }
            Err(SiteError::NxDomain) => {
                let reply = internal(format!("MX lookup for {routing_domain}: domain does not exist (NXDOMAIN)"));
                return self.transient(At::default(), message, &reply, "").await;
            }
            Err(SiteError::Dns(e)) => return self.transient(At::default(), message, &internal(e), "").await,
        };
        let name = format!("{}->{}@smtp_client", source.name, site.name);
        let spec = ReadySpec {
            name,
            kind: ReadyKind::Smtp,
            site,
            source,
            pool: pool.name.clone(),
            routing_domain,
            maildir: None,
            custom: None,
        };
        let rq = match self.ready_queue(spec).await {
            Ok(rq) => rq,
            Err(e) => {
                return self
                    .transient(At::default(), message, &internal(format!("get_egress_path_config: {e}")), "")
                    .await;
            }
        };
        self.insert_ready(queue, &rq, message).await;
    }

    /// The ready queue `name`, created (with its egress path config) on first use.
    pub(super) async fn ready_queue(&self, spec: ReadySpec) -> Result<Arc<ReadyQueue>, PolicyError> {
        if let Some(rq) = self.ready.lock().get(&spec.name).cloned() {
            return Ok(rq);
        }
        let path = self.policy.egress_path_config(&spec.routing_domain, &spec.source.name, &spec.site.name).await?;
        let name = spec.name.clone();
        let rq = ReadyQueue::new(spec, path, self.policy.runtime().epoch.get());
        Ok(self.ready.lock().entry(name).or_insert(rq).clone())
    }

    /// Inserts into a ready queue; when it is full (ReadyQueueWasFull) the scheduled queue
    /// waits for room.
    pub(super) async fn insert_ready(
        self: &Arc<Self>,
        queue: &Arc<ScheduledQueue>,
        rq: &Arc<ReadyQueue>,
        message: Message,
    ) {
        let mut message = message;
        while let Err(back) = rq.insert(self, message) {
            message = back;
            if self.stopping() {
                queue.insert(message, Instant::now() + Duration::from_secs(60));
                return;
            }
            rq.wait_for_space().await;
        }
    }
}

/// How long a message's scheduling (`first_attempt`, a closed delivery window) holds it
/// back from now, if at all.
fn scheduling_wait(message: &Message) -> Option<Duration> {
    let s = message.scheduling()?;
    let now = chrono::Utc::now();
    (s.earliest(now) - now).to_std().ok().filter(|d| !d.is_zero())
}

/// How long an empty scheduled or ready queue is kept before it is forgotten (its task,
/// its cached configuration): sending to millions of domains must not grow memory forever.
pub const QUEUE_REAP_AFTER: Duration = Duration::from_secs(600);

async fn run_scheduled(queue: Arc<ScheduledQueue>, shared: Arc<Shared>) {
    loop {
        // a bounce outranks a suspension: what arrives for a bounced scope goes at once
        if let Some((why, admin)) = shared.automation.bounce(&queue.parts) {
            let taken = queue.drain();
            shared.automation.count_bounced(&queue.name, &queue.parts, taken.len());
            for message in taken {
                shared.bounce_held(message, &why, admin).await;
            }
        }
        // a suspended queue keeps its messages where admin actions (bounce, rebind,
        // inspect) see them, until the hold ends or is cancelled
        if let Some(until) = shared.automation.sched_suspended(&queue.parts) {
            queue.set_holding(true);
            queue.nap(super::automation::Automation::nap(until)).await;
            continue;
        }
        queue.set_holding(false);
        let due = match tokio::time::timeout(QUEUE_REAP_AFTER, queue.next_due()).await {
            Ok(due) => due,
            Err(_) if shared.reap_scheduled(&queue) => return,
            Err(_) => continue,
        };
        // the whole due batch is between queues until each message's promotion ends
        let counted: Vec<Counted> = due.iter().map(|_| Counted::new(&shared.transit)).collect();
        for (message, _counted) in due.into_iter().zip(counted) {
            shared.promote(&queue, message).await;
        }
    }
}

/// Forgets ready queues idle for [`QUEUE_REAP_AFTER`].
async fn reap_ready_queues(shared: Arc<Shared>) {
    while !shared.stopping() {
        tokio::time::sleep(QUEUE_REAP_AFTER / 2).await;
        shared.ready.lock().retain(|name, rq| {
            let keep = !rq.idle_for(QUEUE_REAP_AFTER);
            if !keep {
                tracing::debug!("ready queue {name}: idle for {QUEUE_REAP_AFTER:?}, reaped");
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EnvelopeAddress;
    use crate::policy::{Args, DisconnectMode, Engine, Event, Rejection};
    use serde_json::Value;

    /// A policy whose deferred-inject handler always tempfails, noting when it ran.
    struct AlwaysLater(Mutex<Vec<Instant>>, tokio::sync::Notify, crate::policy::EngineInfo);

    #[async_trait::async_trait]
    impl Engine for AlwaysLater {
        fn info(&self) -> &crate::policy::EngineInfo {
            &self.2
        }
        async fn call(&self, _: Event, _: Args<'_>) -> Result<Option<Value>, PolicyError> {
            self.0.lock().push(Instant::now());
            self.1.notify_one();
            Err(PolicyError::Rejected(Rejection::new(451, "4.7.1 later", DisconnectMode::If421).unwrap()))
        }
    }

    /// A policy whose deferred-inject handler bounces every message, counting calls.
    struct AlwaysBounce(std::sync::atomic::AtomicUsize, crate::policy::EngineInfo);

    #[async_trait::async_trait]
    impl Engine for AlwaysBounce {
        fn info(&self) -> &crate::policy::EngineInfo {
            &self.1
        }
        async fn call(&self, _: Event, _: Args<'_>) -> Result<Option<Value>, PolicyError> {
            self.0.fetch_add(1, Ordering::AcqRel);
            Err(PolicyError::Rejected(Rejection::new(550, "5.7.1 no", DisconnectMode::If421).unwrap()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_queues_are_reaped_and_made_again_on_the_next_message() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::with_backend(Arc::new(crate::spool::memory::Memory::default()), dir.path());
        let info = crate::policy::EngineInfo::new("test".into(), [Event::SmtpServerMessageDeferredInject].into());
        let engine = Arc::new(AlwaysBounce(Default::default(), info));
        let policy = Policy::new(vec![engine.clone() as Arc<dyn Engine>], crate::policy::Runtime::new()).unwrap();
        let manager = QueueManager::new(policy, spool.clone(), Logs::default(), "test".into());
        let send = || async {
            let mut meta = serde_json::Map::new();
            meta.insert("queue".into(), super::super::DEFERRED_QUEUE.into());
            let rcpt = vec![EnvelopeAddress::parse("a@b.example").unwrap()];
            let message = Message::new(EnvelopeAddress::null(), rcpt, meta, vec![]);
            spool.store(&message).await.unwrap();
            manager.insert(message, InsertReason::Received);
        };
        send().await;
        while engine.0.load(Ordering::Acquire) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // wait until the injector has finished (its idle timeout)
        while manager.ready_states().values().any(|s| s.connections > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(QUEUE_REAP_AFTER * 2).await;
        assert!(manager.scheduled_counts().is_empty(), "{:?}", manager.scheduled_counts());
        assert!(manager.ready_states().is_empty(), "{:?}", manager.ready_states().keys().collect::<Vec<_>>());
        send().await;
        while engine.0.load(Ordering::Acquire) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(manager.scheduled_counts().len(), 1, "the queue is made again");
    }

    #[tokio::test(start_paused = true)]
    async fn deferred_retries_follow_the_one_minute_exponential_schedule_in_paused_time() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::with_backend(Arc::new(crate::spool::memory::Memory::default()), dir.path());
        let info = crate::policy::EngineInfo::new("test".into(), [Event::SmtpServerMessageDeferredInject].into());
        let engine = Arc::new(AlwaysLater(Mutex::new(vec![]), tokio::sync::Notify::new(), info));
        let policy = Policy::new(vec![engine.clone() as Arc<dyn Engine>], crate::policy::Runtime::new()).unwrap();
        let manager = QueueManager::new(policy, spool.clone(), Logs::default(), "test".into());
        let mut meta = serde_json::Map::new();
        meta.insert("queue".into(), super::super::DEFERRED_QUEUE.into());
        let message =
            Message::new(EnvelopeAddress::null(), vec![EnvelopeAddress::parse("a@b.example").unwrap()], meta, vec![]);
        spool.store(&message).await.unwrap();
        manager.insert(message, InsertReason::Received);
        // no timer of the test's own: paused time only jumps to the queues' timers
        while engine.0.lock().len() < 4 {
            engine.1.notified().await;
        }
        let calls = engine.0.lock().clone();
        let gaps: Vec<f64> = calls.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        for (gap, want) in gaps.iter().zip([60.0, 120.0, 240.0]) {
            // jitter is ±½·min(retry_interval/20, 60 s) = ±1.5 s
            assert!((gap - want).abs() <= 1.6, "gaps {gaps:?}");
        }
    }
}
