//! The HTTP listener (`kumo.start_http_listener`). Serves `GET /api/check-liveness/v1`
//! and `GET /metrics` (Prometheus text) now; the inject and admin APIs come later.

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
