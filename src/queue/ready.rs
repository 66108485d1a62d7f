//! A ready queue: messages due now for one egress path (`source->site@smtp_client`),
//! delivered by at most `connection_limit` connection tasks. Each task connects (trying
//! the site's hosts in order), sends messages until `max_deliveries_per_connection` or
//! `idle_timeout`, and hands every outcome to the manager.

use super::manager::{At, Shared};
use crate::config::egress::{EgressPathConfig, EgressSource};
use crate::config::queue::RefreshStrategy;
use crate::delivery::client::{ConnectParams, Connection, TransportError};
use crate::delivery::dispatcher::Dispatcher;
use crate::dns::mx::Site;
use crate::message::Message;
use crate::protocol::Reply;
use crate::shaping::throttle::ThrottleSpec;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What drains a ready queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyKind {
    /// The SMTP client.
    Smtp,
    /// Maildir delivery (`protocol = { maildir_path = ... }`).
    Maildir,
    /// The deferred injector (`deferred_smtp_inject.kumomta.internal`).
    DeferredInjection,
    /// A connection object from the policy (`protocol = { custom_lua = ... }`).
    Custom,
}

impl ReadyKind {
    /// The log records' `delivery_protocol`.
    pub fn delivery_protocol(self) -> &'static str {
        match self {
            ReadyKind::Smtp => "ESMTP",
            ReadyKind::Maildir => "Maildir",
            ReadyKind::DeferredInjection => "DeferredSmtpInjection",
            ReadyKind::Custom => "Lua",
        }
    }
}

impl std::ops::Deref for ReadyQueue {
    type Target = ReadySpec;
    fn deref(&self) -> &ReadySpec {
        &self.spec
    }
}

/// What identifies a ready queue and where it sends.
pub struct ReadySpec {
    /// `source->site@proto`.
    pub name: String,
    /// What drains it.
    pub kind: ReadyKind,
    /// Destination.
    pub site: Site,
    /// Egress source.
    pub source: EgressSource,
    /// Egress pool name.
    pub pool: String,
    /// Routing domain (for `get_egress_path_config`).
    pub routing_domain: String,
    /// Where a `Maildir` queue writes.
    pub maildir: Option<crate::config::queue::MaildirProtocol>,
    /// A `custom_lua` queue's protocol and the scheduled queue it serves (the
    /// constructor's domain, tenant and campaign).
    pub custom: Option<(crate::config::queue::CustomLuaProtocol, crate::message::queue_name::QueueNameParts)>,
}

/// A ready queue keeps the bodies of its first messages in memory, up to this many...
const KEEP_MESSAGES: usize = 1024;
/// ...and about this many bytes of them; messages beyond wait with their bodies in the
/// spool only (a deep queue of large messages costs envelopes, not bodies).
const KEEP_BYTES: usize = 32 << 20;
/// The head of the queue whose bodies are read back ahead of their turn.
const READ_AHEAD: usize = 32;

struct State {
    messages: VecDeque<Message>,
    connections: usize,
    /// Last insert or last connection closing.
    touched: Instant,
}

/// One ready queue: its spec (name, destination, source) and its state.
pub struct ReadyQueue {
    spec: ReadySpec,
    path: Mutex<(EgressPathConfig, Instant)>,
    /// The configuration epoch `path` was fetched in.
    path_epoch: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    notify: Notify,
    space: Notify,
    /// Woken when a suspension of this queue is cancelled.
    resumed: Notify,
    pub(super) consecutive_failures: AtomicUsize,
    /// A read-ahead of bodies is running.
    reading_ahead: std::sync::atomic::AtomicBool,
    /// Most connections seen open at once (for tests and metrics).
    pub peak_connections: AtomicUsize,
}

/// Why no connection could be made.
pub struct ConnectFailure {
    /// The reply to log.
    pub reply: Reply,
    /// True when retrying cannot help (every host prohibited).
    pub permanent: bool,
}

impl ReadyQueue {
    /// A queue with its egress path configuration.
    pub fn new(spec: ReadySpec, path: EgressPathConfig, epoch: u64) -> Arc<Self> {
        Arc::new(ReadyQueue {
            spec,
            path: Mutex::new((path, Instant::now())),
            path_epoch: std::sync::atomic::AtomicU64::new(epoch),
            state: Mutex::new(State { messages: VecDeque::new(), connections: 0, touched: Instant::now() }),
            notify: Notify::new(),
            space: Notify::new(),
            resumed: Notify::new(),
            consecutive_failures: AtomicUsize::new(0),
            reading_ahead: Default::default(),
            peak_connections: AtomicUsize::new(0),
        })
    }

    /// The current egress path configuration.
    pub fn path(&self) -> EgressPathConfig {
        self.path.lock().0.clone()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.state.lock().messages.len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when nothing has happened here for `idle`: no message, no connection.
    pub fn idle_for(&self, idle: std::time::Duration) -> bool {
        let st = self.state.lock();
        st.messages.is_empty() && st.connections == 0 && st.touched.elapsed() >= idle
    }

    /// Adds a message; gives it back when the queue holds `max_ready` already.
    pub fn insert(self: &Arc<Self>, shared: &Arc<Shared>, message: Message) -> Result<(), Message> {
        let (max_ready, limit) = {
            let p = self.path.lock();
            (p.0.max_ready, p.0.connection_limit.n.max(1))
        };
        let read_ahead;
        let spawn = {
            let mut st = self.state.lock();
            if st.messages.len() >= max_ready {
                return Err(message);
            }
            // bodies beyond the kept head of the queue wait in the spool
            let position = st.messages.len();
            if position >= KEEP_MESSAGES || position.saturating_mul(message.size()) >= KEEP_BYTES {
                message.set_waiting();
            }
            read_ahead = position < READ_AHEAD && !message.body_loaded();
            st.messages.push_back(message);
            st.touched = Instant::now();
            let spawn = st.connections < limit && st.connections < st.messages.len();
            if spawn {
                st.connections += 1;
                self.peak_connections.fetch_max(st.connections, Ordering::Relaxed);
            }
            spawn
        };
        self.notify.notify_one();
        if read_ahead {
            self.read_ahead();
        }
        if spawn {
            tokio::spawn(dispatch(self.clone(), shared.clone()));
        }
        Ok(())
    }

    /// Reads the bodies of the next [`READ_AHEAD`] messages that are not in memory, in one
    /// blocking task, off the delivery path.
    fn read_ahead(self: &Arc<Self>) {
        if self.reading_ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        let wanted: Vec<Message> =
            self.state.lock().messages.iter().take(READ_AHEAD).filter(|m| !m.body_loaded()).cloned().collect();
        if wanted.is_empty() {
            self.reading_ahead.store(false, Ordering::Release);
            return;
        }
        let rq = self.clone();
        tokio::task::spawn_blocking(move || {
            for m in wanted {
                // a failure is met again, and reported, when the message's turn comes
                if let Err(e) = m.load_body() {
                    tracing::debug!("queue {}: read-ahead: {e}", rq.name);
                }
            }
            rq.reading_ahead.store(false, Ordering::Release);
        });
    }

    /// Wakes connection tasks napping through a suspension that was just cancelled.
    pub fn wake(&self) {
        self.resumed.notify_waiters();
    }

    /// Puts a message back at the head of the queue (it was taken but not attempted).
    pub(super) fn push_front(&self, message: Message) {
        self.state.lock().messages.push_front(message);
    }

    pub(super) fn pop(self: &Arc<Self>) -> Option<Message> {
        let (m, entered) = {
            let mut st = self.state.lock();
            let m = st.messages.pop_front();
            // the message that just came within the read-ahead window
            let entered = st.messages.get(READ_AHEAD - 1).is_some_and(|n| !n.body_loaded());
            (m, entered)
        };
        if m.is_some() {
            self.space.notify_waiters();
        }
        if entered {
            self.read_ahead();
        }
        m
    }

    /// Waits (at most a second) until the queue holds fewer than `max_ready` messages:
    /// a full ready queue holds back its scheduled queues instead of bouncing messages
    /// between them.
    pub async fn wait_for_space(&self) {
        let notified = self.space.notified();
        if self.len() < self.path.lock().0.max_ready {
            return;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), notified).await;
    }

    /// Takes the queued messages `keep` says no to.
    pub fn drain_where(&self, take: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut st = self.state.lock();
        let (taken, kept): (Vec<Message>, Vec<Message>) = st.messages.drain(..).partition(|m| take(m));
        st.messages.extend(kept);
        taken
    }

    /// The waiting messages and open connections.
    pub fn state(&self) -> (Vec<Message>, usize) {
        let st = self.state.lock();
        (st.messages.iter().cloned().collect(), st.connections)
    }

    /// Takes every queued message (for failing them together).
    pub fn drain(&self) -> Vec<Message> {
        self.state.lock().messages.drain(..).collect()
    }

    pub(super) async fn pop_or_wait(self: &Arc<Self>, idle: std::time::Duration) -> Option<Message> {
        loop {
            let notified = self.notify.notified();
            if let Some(m) = self.pop() {
                return Some(m);
            }
            if tokio::time::timeout(idle, notified).await.is_err() {
                return self.pop();
            }
        }
    }

    pub(super) async fn refresh_path(&self, shared: &Shared) -> EgressPathConfig {
        let path = self.fetch_path(shared).await;
        let overrides = shared.automation.overrides(&self.site.name, &self.routing_domain);
        if overrides.is_empty() {
            return path;
        }
        let Ok(serde_json::Value::Object(mut v)) = serde_json::to_value(&path) else { return path };
        v.extend(overrides);
        // each override was checked when its rule was loaded; say so if they clash anyway
        match crate::config::decode(serde_json::Value::Object(v)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("ready queue {}: automation overrides not applied: {e}", self.name);
                path
            }
        }
    }

    async fn fetch_path(&self, shared: &Shared) -> EgressPathConfig {
        let (current, fetched) = self.path.lock().clone();
        let epoch = shared.policy.runtime().epoch.get();
        let stale = match current.refresh_strategy {
            RefreshStrategy::Ttl => fetched.elapsed() >= current.refresh_interval,
            RefreshStrategy::Epoch => self.path_epoch.load(Ordering::Acquire) != epoch,
        };
        if stale {
            match shared.policy.egress_path_config(&self.routing_domain, &self.source.name, &self.site.name).await {
                Ok(fresh) => {
                    *self.path.lock() = (fresh.clone(), Instant::now());
                    self.path_epoch.store(epoch, Ordering::Release);
                    return fresh;
                }
                Err(e) => tracing::warn!("ready queue {}: refreshing the egress path config failed: {e}", self.name),
            }
        }
        current
    }

    /// The recipient domains of (at most `n` of) the messages waiting here.
    fn waiting_domains(&self, n: usize) -> Vec<String> {
        let st = self.state.lock();
        let mut out: Vec<String> = vec![];
        for m in st.messages.iter().take(n) {
            let d = m.peek(|e| e.recipients.first().map(|r| r.domain().to_ascii_lowercase()));
            if let Some(d) = d.filter(|d| !out.contains(d)) {
                out.push(d);
            }
        }
        out
    }

    async fn connect(&self, shared: &Shared, path: &EgressPathConfig) -> Result<Connection, ConnectFailure> {
        let (prohibited, skip) = (path.prohibited_hosts.set(), path.skip_hosts.set());
        let ehlo = self
            .source
            .ehlo_domain
            .clone()
            .or_else(|| path.ehlo_domain.clone())
            .unwrap_or_else(|| shared.hostname.clone());
        let source_address = self.source.source_address;
        // for traces: the domains of the mail the connection is opened for
        let domains = if crate::trace::client().active() { self.waiting_domains(16) } else { vec![] };
        let params = ConnectParams { path, ehlo_domain: &ehlo, source_address, queue: &self.spec.name, domains };
        let mut last: Option<Reply> = None;
        let (mut tried, mut was_prohibited, mut was_skipped) = (0, 0, 0);
        for host in &self.site.hosts {
            let addrs = match host.addr {
                Some(a) => vec![a],
                None => match shared.dns.ip(&host.name).await {
                    Ok(a) => a,
                    Err(e) => {
                        last = Some(Reply::new(451, "4.4.4", format!("KumoMTA internal: {e}")));
                        continue;
                    }
                },
            };
            for ip in addrs {
                if self.site.from_dns && prohibited.contains(ip) {
                    was_prohibited += 1;
                    continue;
                }
                if skip.contains(ip) {
                    was_skipped += 1;
                    continue;
                }
                tried += 1;
                let port = host.port.or(self.source.remote_port).unwrap_or(path.smtp_port);
                match Connection::open(&host.name, SocketAddr::new(ip, port), &params).await {
                    Ok(c) => return Ok(c),
                    Err(TransportError { reply }) => last = Some(reply),
                }
            }
        }
        if tried == 0 && was_prohibited > 0 && was_skipped == 0 {
            let text =
                format!("KumoMTA internal: all MX hosts of {} are prohibited (prohibited_hosts)", self.site.name);
            return Err(ConnectFailure { reply: Reply::new(550, "5.4.4", text), permanent: true });
        }
        if tried == 0 && was_skipped > 0 {
            let text = format!("KumoMTA internal: all hosts of {} were skipped (skip_hosts)", self.site.name);
            return Err(ConnectFailure { reply: Reply::new(451, "4.4.4", text), permanent: false });
        }
        let reply = last.unwrap_or_else(|| {
            Reply::new(451, "4.4.4", format!("KumoMTA internal: no addresses for {}", self.site.name))
        });
        Err(ConnectFailure { reply, permanent: false })
    }
}

/// Ends a connection task: counts it out, and starts another if messages remain and no
/// other task is there to take them.
struct TaskGuard {
    rq: Arc<ReadyQueue>,
    shared: Arc<Shared>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let respawn = {
            let mut st = self.rq.state.lock();
            st.connections -= 1;
            st.touched = Instant::now();
            let again = !st.messages.is_empty() && st.connections == 0 && !self.shared.stopping();
            if again {
                st.connections += 1;
            }
            again
        };
        if respawn {
            tokio::spawn(dispatch(self.rq.clone(), self.shared.clone()));
        }
    }
}

/// The leases a connection of `rq` holds for its life: the named limits
/// (`additional_connection_limits`) shared with other ready queues and, when limits are
/// shared through Redis, the queue's own `connection_limit` across the fleet (unless
/// `local:`); None once the server is stopping.
pub(super) async fn connection_lease(
    shared: &Arc<Shared>,
    rq: &ReadyQueue,
    path: &EgressPathConfig,
) -> Option<crate::shaping::limits::ConnectionLease> {
    let fleet = shared.named_limits.is_shared();
    let (mut local, mut across) = (BTreeMap::new(), BTreeMap::new());
    for (name, limit) in &path.additional_connection_limits {
        let side = if fleet && !limit.local { &mut across } else { &mut local };
        side.insert(name.clone(), limit.n);
    }
    if fleet && !path.connection_limit.local {
        across.insert(format!("connection_limit:{}", rq.name), path.connection_limit.n);
    }
    shared.named_limits.acquire_all(local, across, || shared.stopping()).await
}

/// Waits out a paused spool (`suspend_delivery_when_spool_unhealthy`) or a suspension of
/// this queue (a cancelled suspension wakes the nap early); true when it waited, so the
/// caller looks again.
pub(super) async fn held_back(rq: &ReadyQueue, shared: &Shared) -> bool {
    if shared.spool.delivery_paused() {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return true;
    }
    if let Some(until) = shared.automation.ready_suspended(&rq.name) {
        let resumed = rq.resumed.notified();
        let _ = tokio::time::timeout(super::automation::Automation::nap(until), resumed).await;
        return true;
    }
    false
}

/// No connection could be made: the next message takes the failure's reply (bounced
/// when `bounce`, else retried), or every queued message does when the failure is
/// permanent or `consecutive_connection_failures_before_delay` is reached.
pub(super) async fn connect_failed(
    rq: &Arc<ReadyQueue>,
    shared: &Arc<Shared>,
    path: &EgressPathConfig,
    failure: ConnectFailure,
    bounce: bool,
) {
    let n = rq.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
    let victims = if failure.permanent || n >= path.consecutive_connection_failures_before_delay {
        rq.drain()
    } else {
        rq.pop().into_iter().collect()
    };
    let counted: Vec<_> = victims.iter().map(|_| shared.delivering()).collect();
    for (m, _counted) in victims.into_iter().zip(counted) {
        if bounce {
            shared.bounce(rq, m, &failure.reply, "connect", None).await;
        } else {
            shared.transient(At { rq: Some(rq), peer: None }, m, &failure.reply, "connect").await;
        }
    }
}

pub(super) async fn wait_for_throttle(shared: &Shared, key: String, spec: Option<&ThrottleSpec>) {
    let Some(&spec) = spec else { return };
    while let Err(wait) = shared.throttles.acquire(&key, spec).await {
        tokio::time::sleep(wait).await;
    }
}

/// The deferred injector: a "connection" is one worker that runs the injection event for
/// each message it takes; `connection_limit` workers run in parallel.
async fn inject(rq: &Arc<ReadyQueue>, shared: &Arc<Shared>) {
    while !shared.stopping() {
        let path = rq.refresh_path(shared).await;
        let Some(message) = rq.pop_or_wait(path.idle_timeout).await else { return };
        let _counted = shared.delivering();
        shared.deferred_inject(rq, message).await;
    }
}

/// Makes sure a message's body is in memory before its attempt (the read-ahead usually
/// did it), reading it off the async threads if not.
pub(super) async fn body_in_memory(message: &Message) -> Result<(), crate::message::BodyError> {
    if message.body_loaded() {
        return Ok(());
    }
    let m = message.clone();
    match tokio::task::spawn_blocking(move || m.load_body()).await {
        Ok(r) => r,
        Err(e) => Err(crate::message::BodyError::io(message.parts().1.id, e.to_string())),
    }
}

async fn dispatch(rq: Arc<ReadyQueue>, shared: Arc<Shared>) {
    let _guard = TaskGuard { rq: rq.clone(), shared: shared.clone() };
    match rq.kind {
        ReadyKind::DeferredInjection => return inject(&rq, &shared).await,
        ReadyKind::Custom => return super::custom::run(&rq, &shared).await,
        ReadyKind::Smtp | ReadyKind::Maildir => {}
    }
    'connect: while !rq.is_empty() && !shared.stopping() {
        if held_back(&rq, &shared).await {
            continue 'connect;
        }
        let epoch = shared.policy.runtime().epoch.get();
        let path = rq.refresh_path(&shared).await;
        let Some(lease) = connection_lease(&shared, &rq, &path).await else { return };
        wait_for_throttle(&shared, format!("connection-rate:{}", rq.name), path.max_connection_rate.as_ref()).await;
        let opened: Result<Box<dyn Dispatcher>, ConnectFailure> = match &rq.maildir {
            Some(m) => Ok(Box::new(crate::delivery::dispatcher::Maildir::new(m.clone()))),
            None => rq.connect(&shared, &path).await.map(|c| Box::new(c) as Box<dyn Dispatcher>),
        };
        let mut conn = match opened {
            Ok(c) => {
                rq.consecutive_failures.store(0, Ordering::Relaxed);
                c
            }
            Err(failure) => {
                let bounce = failure.permanent;
                connect_failed(&rq, &shared, &path, failure, bounce).await;
                continue 'connect;
            }
        };
        let peer = conn.peer().map(|(name, addr)| crate::logs::PeerAddress { name, addr });
        loop {
            let Some(message) = rq.pop_or_wait(lease.idle(path.idle_timeout)).await else {
                conn.close(&path).await;
                return;
            };
            let _counted = shared.delivering();
            if shared.policy.runtime().epoch.get() != epoch {
                // the options changed (shaping edit, automation): reconnect with the new ones
                rq.push_front(message);
                conn.close(&path).await;
                continue 'connect;
            }
            wait_for_throttle(&shared, format!("message-rate:{}", rq.name), path.max_message_rate.as_ref()).await;
            for (name, spec) in &path.additional_message_rate_throttles {
                wait_for_throttle(&shared, format!("named:{name}"), Some(spec)).await;
            }
            if shared.spool.delivery_paused() || shared.automation.ready_suspended(&rq.name).is_some() {
                // suspend_delivery_when_spool_unhealthy (its removal could not be recorded),
                // or a suspension that began while this connection was open
                rq.push_front(message);
                conn.close(&path).await;
                continue 'connect;
            }
            if let Err(e) = body_in_memory(&message).await {
                // the spool could not give the body back (the connection is kept): a body
                // that is gone for good (corrupt, quarantined) bounces, so the sender hears
                // of it and the message leaves the queue; anything else is retried
                let reply = crate::delivery::client::body_unreadable(&e);
                tracing::error!("queue {}: {e}", rq.name);
                if e.lost {
                    shared.bounce(&rq, message, &reply, "DATA", None).await;
                } else {
                    shared.transient(At { rq: Some(&rq), peer: peer.as_ref() }, message, &reply, "DATA").await;
                }
                continue;
            }
            match conn.send(&message, &path).await {
                Ok(result) => shared.outcome(&rq, message, peer.as_ref(), conn.tls(), result).await,
                Err(TransportError { reply }) => {
                    shared.transient(At { rq: Some(&rq), peer: peer.as_ref() }, message, &reply, "DATA").await;
                    continue 'connect;
                }
            }
            let suspended = shared.automation.ready_suspended(&rq.name).is_some();
            let over = conn.deliveries() >= path.max_deliveries_per_connection || !lease.held();
            if over || shared.stopping() || suspended {
                conn.close(&path).await;
                continue 'connect;
            }
        }
    }
}
