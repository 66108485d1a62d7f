//! Admin endpoints with KumoMTA's paths and JSON field names: bounce, suspend,
//! suspend-ready-q (POST/GET/DELETE), rebind, inspect-message, inspect-sched-q,
//! inspect-ready-q, ready-q-states.

use super::AppState;
use crate::queue::automation::{Hold, Scope};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

type Reply = (StatusCode, Json<Value>);

fn bad(text: impl std::fmt::Display) -> Reply {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": text.to_string() })))
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/admin/bounce/v1", post(bounce).get(bounce_list).delete(bounce_cancel))
        .route("/api/admin/suspend/v1", post(suspend).get(suspend_list).delete(suspend_cancel))
        .route(
            "/api/admin/suspend-ready-q/v1",
            post(suspend_ready).get(suspend_ready_list).delete(suspend_ready_cancel),
        )
        .route("/api/admin/rebind/v1", post(rebind))
        .route("/api/admin/inspect-message/v1", get(inspect_message))
        .route("/api/admin/inspect-sched-q/v1", get(inspect_sched_q))
        .route("/api/admin/inspect-ready-q/v1", get(inspect_ready_q))
        .route("/api/admin/ready-q-states/v1", get(ready_q_states))
}

fn duration(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => crate::config::units::parse_duration(t).map_err(|e| format!("duration: {e}")),
    }
}

fn remaining(h: &Hold) -> String {
    crate::config::units::format_remaining(h.until.saturating_duration_since(tokio::time::Instant::now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BounceRequest {
    campaign: Option<String>,
    tenant: Option<String>,
    domain: Option<String>,
    routing_domain: Option<String>,
    reason: String,
    duration: Option<String>,
    #[serde(default)]
    suppress_logging: bool,
}

fn scope(campaign: Option<String>, tenant: Option<String>, domain: Option<String>) -> Scope {
    Scope { domain: domain.map(|d| d.to_ascii_lowercase()), tenant, campaign, exact: false }
}

async fn bounce(State(state): State<AppState>, Json(req): Json<BounceRequest>) -> Reply {
    let d = match duration(req.duration.as_deref(), Duration::from_secs(300)) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let scope = scope(req.campaign, req.tenant, req.routing_domain.or(req.domain));
    // the hold first: mail arriving while the queued mail is bounced is bounced too
    let hold = state.queues.automation().add(
        "bounce",
        scope.clone(),
        None,
        d,
        format!("Administrator bounced: {}", req.reason),
    );
    let taken = state.queues.take_for_bounce(&scope);
    let matched = taken.len();
    state.queues.automation().note_matched(&hold.id, matched);
    tracing::warn!(
        "admin: bounce {} ({}): bouncing {matched} queued message(s), and more for {d:?}",
        hold.id,
        req.reason
    );
    let (queues, id, reason) = (state.queues.clone(), hold.id.clone(), req.reason.clone());
    let work = tokio::spawn(async move { queues.bounce_taken(&id, taken, &reason, req.suppress_logging).await });
    // a small bounce answers with its counts (KumoMTA's answer); a large one answers
    // after a while with its progress, which `bounce-list` goes on showing
    match tokio::time::timeout(BOUNCE_ANSWER_WITHIN, work).await {
        Ok(Ok(bounced)) => {
            let total: usize = bounced.values().sum();
            (StatusCode::OK, Json(json!({ "id": hold.id, "bounced": bounced, "total_bounced": total })))
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))),
        Err(_) => {
            let now = state.queues.automation().list("bounce").into_iter().find(|h| h.id == hold.id);
            let bounced = now.map(|h| h.bounced).unwrap_or_default();
            let total: usize = bounced.values().sum();
            (
                StatusCode::OK,
                Json(json!({
                    "id": hold.id, "bounced": bounced, "total_bounced": total,
                    "matched": matched, "in_progress": true,
                })),
            )
        }
    }
}

/// How long a bounce request waits for its queued mail to be bounced before answering
/// with its progress.
const BOUNCE_ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The holds of one kind, each as `describe` puts it.
fn list_holds(state: &AppState, kind: &str, describe: impl Fn(&Hold) -> Value) -> Json<Value> {
    Json(Value::Array(state.queues.automation().list(kind).iter().map(describe).collect()))
}

async fn bounce_list(State(state): State<AppState>) -> Json<Value> {
    list_holds(&state, "bounce", |h| {
        let bounced = &h.bounced;
        json!({
            "id": h.id, "campaign": h.scope.campaign, "tenant": h.scope.tenant, "domain": h.scope.domain,
            "routing_domain": h.scope.domain, "reason": h.reason, "duration": remaining(h),
            "total_bounced": bounced.values().sum::<usize>(), "bounced": bounced,
            "matched": h.matched, "done": h.done, "in_progress": h.done < h.matched,
        })
    })
}

#[derive(Deserialize)]
struct Cancel {
    id: String,
}

fn cancel(state: &AppState, kind: &str, id: &str) -> Reply {
    if state.queues.cancel_hold(kind, id) {
        (StatusCode::OK, Json(json!({ "id": id })))
    } else {
        (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no {kind} entry with id {id}") })))
    }
}

async fn bounce_cancel(State(state): State<AppState>, Json(req): Json<Cancel>) -> Reply {
    cancel(&state, "bounce", &req.id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendRequest {
    campaign: Option<String>,
    tenant: Option<String>,
    domain: Option<String>,
    reason: String,
    duration: Option<String>,
}

async fn suspend(State(state): State<AppState>, Json(req): Json<SuspendRequest>) -> Reply {
    let d = match duration(req.duration.as_deref(), Duration::from_secs(300)) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let hold =
        state.queues.automation().add("suspend", scope(req.campaign, req.tenant, req.domain), None, d, req.reason);
    (StatusCode::OK, Json(json!({ "id": hold.id })))
}

async fn suspend_list(State(state): State<AppState>) -> Json<Value> {
    list_holds(&state, "suspend", |h| {
        json!({ "id": h.id, "campaign": h.scope.campaign, "tenant": h.scope.tenant, "domain": h.scope.domain,
                "reason": h.reason, "duration": remaining(h) })
    })
}

async fn suspend_cancel(State(state): State<AppState>, Json(req): Json<Cancel>) -> Reply {
    cancel(&state, "suspend", &req.id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendReadyRequest {
    name: String,
    reason: String,
    duration: Option<String>,
}

async fn suspend_ready(State(state): State<AppState>, Json(req): Json<SuspendReadyRequest>) -> Reply {
    let d = match duration(req.duration.as_deref(), Duration::from_secs(300)) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let well_formed = req.name.split_once("->").is_some_and(|(source, rest)| {
        !source.is_empty() && rest.rsplit_once('@').is_some_and(|(site, proto)| !site.is_empty() && !proto.is_empty())
    });
    if !well_formed {
        return bad(format!(
            "name {:?} is not a ready queue name: expected source->site@protocol, as queue-summary lists them",
            req.name
        ));
    }
    let exists = state.queues.ready_states().contains_key(&req.name);
    let hold = state.queues.automation().add("suspend-ready-q", Scope::default(), Some(req.name), d, req.reason);
    // a queue not made yet (no mail for it since start) is held from its first message
    (StatusCode::OK, Json(json!({ "id": hold.id, "queue_exists": exists })))
}

async fn suspend_ready_list(State(state): State<AppState>) -> Json<Value> {
    list_holds(
        &state,
        "suspend-ready-q",
        |h| json!({ "id": h.id, "name": h.name, "reason": h.reason, "duration": remaining(h) }),
    )
}

async fn suspend_ready_cancel(State(state): State<AppState>, Json(req): Json<Cancel>) -> Reply {
    cancel(&state, "suspend-ready-q", &req.id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebindRequest {
    campaign: Option<String>,
    tenant: Option<String>,
    domain: Option<String>,
    routing_domain: Option<String>,
    reason: String,
    #[serde(default)]
    data: serde_json::Map<String, Value>,
    #[serde(default)]
    suppress_logging: bool,
}

async fn rebind(State(state): State<AppState>, Json(req): Json<RebindRequest>) -> Reply {
    let scope = scope(req.campaign, req.tenant, req.routing_domain.or(req.domain));
    let rebound = state.queues.rebind_now(&scope, &req.data, &req.reason, req.suppress_logging).await;
    let total: usize = rebound.values().sum();
    (
        StatusCode::OK,
        Json(json!({ "id": uuid::Uuid::new_v4().to_string(), "rebound": rebound, "total_rebound": total })),
    )
}

#[derive(Deserialize)]
struct InspectMessage {
    id: String,
    #[serde(default)]
    want_body: bool,
}

async fn inspect_message(State(state): State<AppState>, Query(q): Query<InspectMessage>) -> Reply {
    let Some(m) = state.queues.find(&q.id) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no queued message with id {}", q.id) })));
    };
    let recipients: Vec<String> = m.recipients().iter().map(|r| r.email()).collect();
    let mut message = json!({
        "sender": m.sender().email(), "recipients": recipients, "meta": m.meta(),
        "queue": m.queue_name(), "num_attempts": m.num_attempts(), "due": m.due(),
        "due_time": m.due().and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
    });
    if q.want_body {
        message["data"] = match m.data() {
            Ok(d) => Value::String(String::from_utf8_lossy(&d).into_owned()),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))),
        };
    }
    (StatusCode::OK, Json(json!({ "id": q.id, "message": message })))
}

#[derive(Deserialize)]
struct InspectSchedQ {
    queue_name: String,
}

async fn inspect_sched_q(State(state): State<AppState>, Query(q): Query<InspectSchedQ>) -> Reply {
    match state.queues.scheduled_counts().get(&q.queue_name) {
        Some(n) => {
            let suspended = state
                .queues
                .automation()
                .sched_suspended(&crate::message::queue_name::QueueNameParts::parse(&q.queue_name))
                .is_some();
            (StatusCode::OK, Json(json!({ "queue_name": q.queue_name, "message_count": n, "suspended": suspended })))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no scheduled queue {}", q.queue_name) }))),
    }
}

#[derive(Deserialize)]
struct InspectReadyQ {
    name: String,
}

async fn inspect_ready_q(State(state): State<AppState>, Query(q): Query<InspectReadyQ>) -> Reply {
    match state.queues.ready_states().remove(&q.name) {
        Some(s) => (StatusCode::OK, Json(json!({ "name": q.name, "state": s }))),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no ready queue {}", q.name) }))),
    }
}

async fn ready_q_states(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "states_by_ready_queue": state.queues.ready_states() }))
}
