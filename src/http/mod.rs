//! The HTTP listener (`kumo.start_http_listener`): KumoMTA's paths and JSON field names.
//! `GET /api/check-liveness/v1` is open to everyone; every other endpoint needs a peer in
//! `trusted_hosts` or credentials accepted by `http_server_validate_auth_basic` /
//! `http_server_validate_auth_bearer`. Admin endpoints are in `admin`, injection in
//! `inject`; `conn` serves the connections (HTTPS with `use_tls`, timeouts, a cap).

mod admin;
mod conn;
pub mod inject;
mod messages;
mod trace;

use crate::config::cidr::CidrSet;
use crate::config::storage::HttpListenerConfig;
use crate::logs::Logs;
use crate::policy::Policy;
use crate::queue::QueueManager;
use crate::spool::Spool;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What handlers reach.
#[derive(Clone)]
pub struct AppState {
    pub spool: Spool,
    pub queues: QueueManager,
    pub policy: Policy,
    pub logs: Logs,
    trusted: Arc<CidrSet>,
    recovery: Arc<Recovery>,
}

/// How far the spool's recovery at start-up is: while it runs the HTTP listener answers
/// liveness (`recovering: 40%`) and metrics, and every other request 503.
#[derive(Default)]
pub struct Recovery {
    /// Messages found in the spool.
    pub total: std::sync::atomic::AtomicUsize,
    /// Of them, recovered so far.
    pub done: std::sync::atomic::AtomicUsize,
    /// Recovery is over.
    pub finished: std::sync::atomic::AtomicBool,
}

impl Recovery {
    /// "recovering: 40% (400 of 1000 messages)", or None once finished.
    pub fn describe(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.finished.load(Relaxed) {
            return None;
        }
        let (done, total) = (self.done.load(Relaxed), self.total.load(Relaxed));
        let percent = (done * 100).checked_div(total).unwrap_or(0);
        Some(format!("recovering: {percent}% ({done} of {total} messages)"))
    }
}

impl AppState {
    /// The state of one listener.
    pub fn new(spool: Spool, queues: QueueManager, policy: Policy, logs: Logs) -> Self {
        let recovery = Recovery::default();
        recovery.finished.store(true, std::sync::atomic::Ordering::Relaxed);
        AppState { spool, queues, policy, logs, trusted: Arc::new(CidrSet::default()), recovery: Arc::new(recovery) }
    }

    /// The same, serving while the spool is recovered (see [`Recovery`]).
    pub fn recovering(mut self, recovery: Arc<Recovery>) -> Self {
        self.recovery = recovery;
        self
    }
}

/// A bound HTTP listener.
pub struct HttpListener {
    socket: TcpListener,
    config: HttpListenerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl HttpListener {
    /// Binds the configured address.
    pub async fn bind(config: HttpListenerConfig) -> Result<Self, String> {
        let tls = if config.use_tls {
            let hostname = config.hostname.clone().unwrap_or_else(crate::config::listener::machine_hostname);
            let acceptor =
                crate::tls::acceptor_for(&hostname, config.tls_certificate.as_ref(), config.tls_private_key.as_ref())
                    .map_err(|e| format!("start_http_listener {}: {e}", config.listen))?;
            Some(acceptor)
        } else {
            None
        };
        let socket = TcpListener::bind(&config.listen).await.map_err(|e| format!("binding {}: {e}", config.listen))?;
        Ok(HttpListener { socket, config, tls })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` flips.
    pub async fn serve(self, mut state: AppState, shutdown: watch::Receiver<bool>) {
        state.trusted = Arc::new(CidrSet::parse(&self.config.trusted_hosts).unwrap_or_default());
        let limit = self.config.request_body_limit as usize;
        let protected = Router::new()
            .route("/metrics", get(metrics))
            .route("/metrics.json", get(metrics_json))
            .route("/api/admin/bump-config-epoch", post(bump_config_epoch))
            .route("/api/admin/reload/v1", get(reload_status).post(reload))
            .route("/api/openapi.json", get(openapi))
            .merge(admin::routes())
            .merge(messages::routes())
            .merge(trace::routes())
            .merge(inject::routes())
            .layer(axum::middleware::from_fn_with_state(state.clone(), while_recovering))
            .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
            .layer(axum::extract::DefaultBodyLimit::max(limit));
        let app = Router::new().route("/api/check-liveness/v1", get(liveness)).merge(protected).with_state(state);
        conn::serve(self.socket, self.config, self.tls, app, shutdown).await;
    }
}

/// Lets trusted peers through; others need credentials the policy accepts.
async fn authorize(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.trusted.contains(peer.ip()) {
        return next.run(request).await;
    }
    let auth = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let basic = auth
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let basic = basic.as_deref().and_then(|b| b.split_once(':'));
    let bearer = auth.strip_prefix("Bearer ").map(str::trim);
    match state.policy.http_auth(basic, bearer).await {
        Ok(true) => next.run(request).await,
        Ok(false) => {
            let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"wasmta\"")];
            (
                StatusCode::UNAUTHORIZED,
                challenge,
                format!("{} is not a trusted host; credentials required\n", peer.ip()),
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("authorization failed: {e}\n")).into_response(),
    }
}

/// While the spool is recovered, only metrics are served; the rest answers 503 with the
/// progress.
async fn while_recovering(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.recovery.describe() {
        Some(progress) if !request.uri().path().starts_with("/metrics") => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            serde_json::json!({ "error": format!("{progress}; try again shortly") }).to_string(),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

async fn liveness(State(state): State<AppState>) -> (StatusCode, String) {
    if let Some(progress) = state.recovery.describe() {
        return (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": progress }).to_string());
    }
    match state.spool.accepting() {
        Ok(()) => (StatusCode::OK, "{\"status\":\"ok\"}".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": e.to_string()}).to_string()),
    }
}

/// Refreshes the queue gauges: `scheduled_count`, `ready_count`, the messages between
/// them (`transit_count`, `delivering_count`), their sum (`message_count`) and the
/// outbound `connection_count`.
fn queue_gauges(state: &AppState) {
    use crate::metrics::core;
    use std::sync::atomic::Ordering;
    let scheduled: Vec<(String, i64)> =
        state.queues.scheduled_counts().into_iter().map(|(name, n)| (name, n as i64)).collect();
    crate::metrics::set_gauge_family("scheduled_count", core::SCHEDULED_HELP, "queue", &scheduled);
    let mut connections = 0;
    let mut ready = vec![];
    for (name, s) in state.queues.ready_states() {
        ready.push((name, s.messages as i64));
        connections += s.connections;
    }
    crate::metrics::set_gauge_family("ready_count", core::READY_HELP, "queue", &ready);
    let (transit, delivering) = state.queues.in_between();
    let held = scheduled.iter().chain(&ready).map(|(_, n)| n).sum::<i64>() + transit + delivering;
    let total = |list: &[(String, i64)]| list.iter().map(|(_, n)| n).sum::<i64>();
    for (name, help, v) in [
        ("scheduled_count_total", core::SCHEDULED_TOTAL_HELP, total(&scheduled)),
        ("ready_count_total", core::READY_TOTAL_HELP, total(&ready)),
        ("transit_count", core::TRANSIT_HELP, transit),
        ("delivering_count", core::DELIVERING_HELP, delivering),
        ("message_count", core::HELD_HELP, held),
    ] {
        crate::metrics::gauge(name, help, &[]).store(v, Ordering::Relaxed);
    }
    core::connections("smtp_client").store(connections as i64, Ordering::Relaxed);
}

async fn metrics(State(state): State<AppState>) -> ([(header::HeaderName, &'static str); 1], String) {
    queue_gauges(&state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render_prometheus())
}

async fn metrics_json(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    queue_gauges(&state);
    axum::Json(crate::metrics::render_json())
}

async fn bump_config_epoch(State(state): State<AppState>) -> (StatusCode, String) {
    let runtime = state.policy.runtime();
    runtime.request_reload("POST /api/admin/bump-config-epoch");
    let epoch = runtime.epoch.bump();
    (StatusCode::OK, format!("{{\"epoch\":{epoch}}}"))
}

/// wasmta: builds a new policy generation now and answers how it went.
async fn reload(State(state): State<AppState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let Some(r) = state.policy.runtime().reloader() else {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "no policy to reload"})));
    };
    let status = r.reload("POST /api/admin/reload/v1").await;
    let code = if status.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (code, axum::Json(serde_json::to_value(status).unwrap_or_default()))
}

async fn reload_status(State(state): State<AppState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    match state.policy.runtime().reloader() {
        Some(r) => (StatusCode::OK, axum::Json(serde_json::to_value(r.status()).unwrap_or_default())),
        None => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "no policy"}))),
    }
}

/// The OpenAPI document of this API (docs/openapi.json).
async fn openapi() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../docs/openapi.json"))
}
