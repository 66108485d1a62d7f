//! Per-message admin endpoints: `GET /api/admin/queue-list/v1` (queued messages, oldest
//! first, with filters) and `POST /api/admin/message-action/v1` (bounce, requeue, hold,
//! release or delete messages by id), `GET /api/admin/qshape/v1` (messages per domain by
//! age), `GET /api/admin/queue-summary/v1` (every queue's count, oldest message, last
//! error and markers), and `POST /api/admin/set_diagnostic_log_filter/v1` (KumoMTA's path). Unknown fields are errors, as everywhere in the API.

use super::AppState;
use crate::queue::listing::{Action, ListFilter};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

type Reply = (StatusCode, Json<Value>);

fn bad(text: impl std::fmt::Display) -> Reply {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": text.to_string() })))
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/admin/queue-list/v1", get(queue_list))
        .route("/api/admin/message-action/v1", post(message_action))
        .route("/api/admin/qshape/v1", get(qshape))
        .route("/api/admin/queue-summary/v1", get(queue_summary))
        .route("/api/admin/set_diagnostic_log_filter/v1", post(set_log_filter))
}

/// The default and largest `limit`.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    queue: Option<String>,
    domain: Option<String>,
    older_than: Option<String>,
    limit: Option<usize>,
}

async fn queue_list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Reply {
    let older_than = match q.older_than.as_deref().map(crate::config::units::parse_duration).transpose() {
        Ok(d) => d,
        Err(e) => return bad(format!("older_than: {e}")),
    };
    let filter = ListFilter {
        queue: q.queue,
        domain: q.domain.map(|d| d.to_ascii_lowercase()),
        older_than,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let queues = state.queues.clone();
    // a listing of a large queue walks every message: off the async workers
    match tokio::task::spawn_blocking(move || queues.list(&filter)).await {
        Ok(listing) => (StatusCode::OK, Json(json!(listing))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    /// bounce, requeue, hold, release, delete.
    action: String,
    ids: Vec<String>,
    reason: Option<String>,
    #[serde(default)]
    suppress_logging: bool,
    /// `delete` needs it: the message goes without a bounce to its sender.
    #[serde(default)]
    confirm: bool,
}

async fn message_action(State(state): State<AppState>, Json(req): Json<ActionRequest>) -> Reply {
    if req.ids.is_empty() {
        return bad("ids: give at least one message id");
    }
    let reason = req.reason.clone().unwrap_or_else(|| "operator action".into());
    let action = match req.action.as_str() {
        "bounce" => Action::Bounce(reason),
        "requeue" => Action::Requeue,
        "hold" => Action::Hold,
        "release" => Action::Release,
        "delete" if !req.confirm => {
            return bad("delete drops messages without telling their senders: send \"confirm\": true to mean it");
        }
        "delete" => Action::Delete(reason),
        other => return bad(format!("action {other:?}: expected bounce, requeue, hold, release or delete")),
    };
    let results = state.queues.act(&req.ids, &action, req.suppress_logging).await;
    (StatusCode::OK, Json(json!({ "action": req.action, "results": results })))
}

async fn qshape(State(state): State<AppState>) -> Reply {
    let queues = state.queues.clone();
    match tokio::task::spawn_blocking(move || queues.shape()).await {
        Ok(shape) => (StatusCode::OK, Json(json!(shape))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFilter {
    filter: String,
}

async fn set_log_filter(Json(req): Json<LogFilter>) -> Reply {
    match crate::log_filter::set(&req.filter) {
        Ok(()) => (StatusCode::OK, Json(json!({ "filter": req.filter }))),
        Err(e) => bad(e),
    }
}

async fn queue_summary(State(state): State<AppState>) -> Reply {
    let queues = state.queues.clone();
    match tokio::task::spawn_blocking(move || queues.details()).await {
        Ok(details) => (StatusCode::OK, Json(json!({ "queues": details }))),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))),
    }
}
