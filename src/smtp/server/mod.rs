//! The ESMTP server: binds each configured listener, enforces `max_connections`, builds
//! per-connection settings (`via`, `peer`, `smtp_server_get_dynamic_parameters`), runs
//! `smtp_server_connection_accepted`, then hands the stream to a [`session::Session`].

mod auth;
mod header_limits;
mod reception;
mod session;

use crate::config::listener::EsmtpListenerConfig;
use crate::logs::Logs;
use crate::policy::{ConnMeta, Policy};
use crate::protocol::Reply;
use crate::queue::QueueManager;
use crate::spool::Spool;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// What every session shares.
pub struct ServerContext {
    /// The loaded policy.
    pub policy: Policy,
    /// The spool.
    pub spool: Spool,
    /// Log writers.
    pub logs: Logs,
    /// Scheduled queues.
    pub queues: QueueManager,
    /// Inbound sessions open on all listeners, against the descriptors the process has.
    pub sessions: SessionBudget,
}

/// How many inbound sessions all listeners together may hold: the descriptor limit less a
/// reserve for the spool, the logs and delivery connections, so a flood of idle clients
/// can never leave the spool unable to open its next segment.
#[derive(Clone)]
pub struct SessionBudget {
    open: Arc<AtomicUsize>,
    limit: usize,
}

impl SessionBudget {
    /// A budget of `limit` sessions.
    pub fn new(limit: usize) -> Self {
        SessionBudget { open: Arc::new(AtomicUsize::new(0)), limit }
    }

    /// The budget for a process allowed `nofile` descriptors: a quarter (at least 256)
    /// stays free for everything else.
    pub fn for_descriptors(nofile: u64) -> Self {
        let reserve = (nofile / 4).max(256);
        SessionBudget::new(nofile.saturating_sub(reserve).max(16).min(usize::MAX as u64) as usize)
    }

    /// The most sessions at once.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// A bound listener, ready to serve.
pub struct EsmtpListener {
    socket: TcpListener,
    config: Arc<EsmtpListenerConfig>,
    tls: Option<TlsAcceptor>,
    active: Arc<AtomicUsize>,
}

impl EsmtpListener {
    /// Binds the listener's address and prepares its TLS acceptor.
    pub async fn bind(config: EsmtpListenerConfig) -> Result<Self, String> {
        let socket = TcpListener::bind(&config.listen).await.map_err(|e| format!("binding {}: {e}", config.listen))?;
        let tls = match crate::tls::acceptor(&config.settings) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("listener {}: STARTTLS disabled: {e}", config.listen);
                None
            }
        };
        Ok(EsmtpListener { socket, config: Arc::new(config), tls, active: Arc::new(AtomicUsize::new(0)) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Accepts connections until `shutdown` flips; returns how many sessions are open.
    pub async fn serve(self, ctx: Arc<ServerContext>, mut shutdown: watch::Receiver<bool>) -> Arc<AtomicUsize> {
        loop {
            let accepted = tokio::select! {
                a = self.socket.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept on {}: {e}", self.config.listen);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let guard = ActiveGuard::new(&self.active, &ctx.sessions);
            if guard.1 > self.config.max_connections || guard.2 > ctx.sessions.limit {
                let reply = Reply::new(
                    421,
                    "4.3.2",
                    format!("{} too many concurrent sessions. Try later", self.config.settings.hostname),
                );
                tokio::spawn(async move {
                    let _guard = guard;
                    refuse(stream, reply).await;
                });
                continue;
            }
            let (config, ctx, tls, shutdown) = (self.config.clone(), ctx.clone(), self.tls.clone(), shutdown.clone());
            tokio::spawn(async move {
                let _guard = guard;
                handle_connection(stream, peer, config, ctx, tls, shutdown).await;
            });
        }
        self.active
    }
}

/// Counts a session while it lives: on its listener, in the process's budget, and in
/// `connection_count{service="esmtp_listener"}`.
struct ActiveGuard(Arc<AtomicUsize>, usize, usize, SessionBudget);

impl ActiveGuard {
    fn new(active: &Arc<AtomicUsize>, budget: &SessionBudget) -> Self {
        let on_listener = active.fetch_add(1, Ordering::AcqRel) + 1;
        let in_process = budget.open.fetch_add(1, Ordering::AcqRel) + 1;
        crate::metrics::core::connections("esmtp_listener").fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active.clone(), on_listener, in_process, budget.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.3.open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::core::connections("esmtp_listener").fetch_sub(1, Ordering::Relaxed);
    }
}

async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// True when the client has already sent something before our greeting (a pre-greeting
/// talker: a protocol violation and the classic sign of a spam bot).
async fn early_talker(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(std::time::Duration::ZERO, stream.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<EsmtpListenerConfig>,
    ctx: Arc<ServerContext>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut settings = config.settings_for(local.ip(), peer.ip());
    let listener = local.to_string();
    let mut meta = serde_json::Map::new();
    meta.insert("received_from".into(), Value::String(peer.to_string()));
    meta.insert("received_via".into(), Value::String(listener.clone()));
    meta.insert("reception_protocol".into(), Value::String("ESMTP".into()));
    let conn = ConnMeta::new(meta);
    match ctx.policy.dynamic_parameters(&listener, &conn).await {
        Ok(Some(overrides)) => match settings.merged(&overrides) {
            Ok(s) => settings = s,
            Err(e) => {
                tracing::error!("smtp_server_get_dynamic_parameters returned invalid parameters: {e}");
                return refuse(
                    stream,
                    Reply::new(421, "4.3.0", format!("{} temporary configuration error", settings.hostname)),
                )
                .await;
            }
        },
        Ok(None) => {}
        Err(e) => return refuse(stream, e.reply()).await,
    }
    conn.set("hostname", Value::String(settings.hostname.clone()));
    for (k, v) in &settings.meta {
        conn.set(k, v.clone());
    }
    if let Err(e) = ctx.policy.connection_accepted(&conn).await {
        return refuse(stream, e.reply()).await;
    }
    if early_talker(&stream).await {
        let reply = Reply::new(
            554,
            "5.5.0",
            format!("{} protocol synchronization error: input before greeting", settings.hostname),
        );
        tracing::info!("{peer}: sent input before the greeting; disconnected");
        return refuse(stream, reply).await;
    }
    let banner = Reply::plain(220, format!("{} {}", settings.hostname, settings.banner));
    let tls = if settings.tls_certificate.is_some() && config.settings.tls_certificate.is_none() {
        crate::tls::acceptor(&settings).ok()
    } else {
        tls
    };
    let session = session::Session::new(ctx, listener, settings, conn, peer, tls, shutdown);
    session.run(stream, banner).await;
}
