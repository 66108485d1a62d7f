//! `GET /api/admin/trace-smtp-server/v1` and `/api/admin/trace-smtp-client/v1`: live
//! protocol traces as a stream of JSON lines, one per event, filtered by the peer's
//! address (`peer`: an address or CIDR block) and `domain` (a substring of the EHLO
//! domain, or of the client connection's ready queue, host and recipient domains). The
//! stream runs until the client goes; a listener that falls behind is told how many
//! events it missed.

use super::AppState;
use crate::config::cidr::CidrSet;
use crate::trace::{TraceEvent, Tracer};
use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/admin/trace-smtp-server/v1", get(|q| trace(crate::trace::server(), q)))
        .route("/api/admin/trace-smtp-client/v1", get(|q| trace(crate::trace::client(), q)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    peer: Option<String>,
    domain: Option<String>,
}

struct Keep {
    peers: Option<CidrSet>,
    domain: Option<String>,
}

impl Keep {
    fn keeps(&self, e: &TraceEvent) -> bool {
        let peer_ok = self
            .peers
            .as_ref()
            .is_none_or(|set| e.peer.parse::<std::net::SocketAddr>().map(|a| a.ip()).is_ok_and(|ip| set.contains(ip)));
        let domain_ok = self.domain.as_ref().is_none_or(|d| e.domain.to_ascii_lowercase().contains(d));
        peer_ok && domain_ok
    }
}

async fn trace(tracer: &'static Tracer, Query(f): Query<Filter>) -> Response {
    let peers = match f.peer.map(|p| CidrSet::parse(&[p])).transpose() {
        Ok(p) => p,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": format!("peer: {e}") })))
                .into_response();
        }
    };
    let keep = Arc::new(Keep { peers, domain: f.domain.map(|d| d.to_ascii_lowercase()) });
    let sub = tracer.subscribe();
    let stream = futures::stream::unfold((sub, keep), |(mut sub, keep)| async move {
        loop {
            let line = match sub.rx.recv().await {
                Ok(e) if keep.keeps(&e) => serde_json::to_string(&*e).unwrap_or_default(),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    serde_json::json!({ "kind": "lagged", "data": format!("{n} event(s) missed") }).to_string()
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), (sub, keep)));
        }
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}
