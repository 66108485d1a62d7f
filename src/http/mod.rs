//! The HTTP listener (`kumo.start_http_listener`). Serves `GET /api/check-liveness/v1`
//! `GET /metrics` (Prometheus text), `POST /api/admin/bump-config-epoch`, and
//! `GET|POST /api/admin/reload/v1` (wasmta: reload now, or the latest reload's outcome).

use crate::config::storage::HttpListenerConfig;
use crate::spool::Spool;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A bound HTTP listener.
pub struct HttpListener {
    socket: TcpListener,
    config: HttpListenerConfig,
}

impl HttpListener {
    /// Binds the configured address.
    pub async fn bind(config: HttpListenerConfig) -> Result<Self, String> {
        if config.use_tls {
            tracing::warn!("start_http_listener: use_tls is accepted but not implemented yet; serving plain HTTP");
        }
        let socket = TcpListener::bind(&config.listen).await.map_err(|e| format!("binding {}: {e}", config.listen))?;
        Ok(HttpListener { socket, config })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` flips.
    pub async fn serve(self, spool: Spool, mut shutdown: watch::Receiver<bool>) {
        let _ = &self.config;
        let app = Router::new()
            .route("/api/check-liveness/v1", get(liveness))
            .route("/metrics", get(metrics))
            .route("/api/admin/bump-config-epoch", axum::routing::post(bump_config_epoch))
            .route("/api/admin/reload/v1", get(reload_status).post(reload))
            .with_state(spool);
        let result = axum::serve(self.socket, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("http listener: {e}");
        }
    }
}

async fn liveness(State(spool): State<Spool>) -> (StatusCode, String) {
    match spool.accepting() {
        Ok(()) => (StatusCode::OK, "{\"status\":\"ok\"}".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": e.to_string()}).to_string()),
    }
}

async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render_prometheus())
}

async fn bump_config_epoch() -> (StatusCode, String) {
    crate::policy::reload::request("POST /api/admin/bump-config-epoch");
    crate::policy::bump_config_epoch();
    (StatusCode::OK, format!("{{\"epoch\":{}}}", crate::policy::config_epoch()))
}

/// wasmta: builds a new policy generation now and answers how it went.
async fn reload() -> (StatusCode, axum::Json<serde_json::Value>) {
    let Some(r) = crate::policy::reload::global() else {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "no policy to reload"})));
    };
    let status = r.reload("POST /api/admin/reload/v1").await;
    let code = if status.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (code, axum::Json(serde_json::to_value(status).unwrap_or_default()))
}

async fn reload_status() -> (StatusCode, axum::Json<serde_json::Value>) {
    match crate::policy::reload::global() {
        Some(r) => (StatusCode::OK, axum::Json(serde_json::to_value(r.status()).unwrap_or_default())),
        None => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "no policy"}))),
    }
}
