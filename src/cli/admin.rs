//! kcli-style commands against a running wasmta's HTTP API: `queue-summary`, `bounce`,
//! `bounce-list`, `bounce-cancel`, `suspend`, `suspend-list`, `suspend-cancel`,
//! `suspend-ready-q`, `suspend-ready-q-list`, `suspend-ready-q-cancel`, `rebind`,
//! `inspect-message`. Errors from the server are shown as it wrote them.

use super::client::{Endpoint, call};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

/// Which mail an action covers (all given fields must match).
#[derive(Args)]
pub struct Scope {
    /// Campaign.
    #[arg(long)]
    campaign: Option<String>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Domain.
    #[arg(long)]
    domain: Option<String>,
    /// Reason (logged).
    #[arg(long)]
    reason: String,
    /// How long the action holds for new mail ("5m", "1 hour").
    #[arg(long)]
    duration: Option<String>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Messages per scheduled and ready queue, and delivery connections.
    QueueSummary(Endpoint),
    /// Bounce queued mail (and new mail for the duration).
    Bounce {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
    },
    /// Active bounces.
    BounceList(Endpoint),
    /// End a bounce.
    BounceCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Its id.
        #[arg(long)]
        id: String,
    },
    /// Hold scheduled queues.
    Suspend {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
    },
    /// Active suspensions.
    SuspendList(Endpoint),
    /// End a suspension.
    SuspendCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        id: String,
    },
    /// Hold a ready queue (source->site@protocol).
    SuspendReadyQ {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The ready queue name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        duration: Option<String>,
    },
    /// Active ready-queue suspensions.
    SuspendReadyQList(Endpoint),
    /// End a ready-queue suspension.
    SuspendReadyQCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        id: String,
    },
    /// Re-queue matching mail, optionally setting meta (`--set-meta key=value`).
    Rebind {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
        #[arg(long = "set-meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Show a queued message.
    InspectMessage {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Spool id.
        #[arg(long)]
        id: String,
        /// Include the message text.
        #[arg(long)]
        want_body: bool,
    },
}

fn scope_json(s: &Scope) -> Value {
    json!({ "campaign": s.campaign, "tenant": s.tenant, "domain": s.domain, "reason": s.reason, "duration": s.duration })
}

/// Prints a JSON answer, pretty, or the server's error.
async fn show(endpoint: &Endpoint, method: &str, path: &str, body: Option<Value>) -> ExitCode {
    match call(endpoint, method, path, body.as_ref()).await {
        Ok((status, text)) if (200..300).contains(&status) => {
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(text)),
                Err(_) => println!("{text}"),
            }
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            eprintln!("error: the server answered {status}: {}", text.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `/metrics.json` from the server, or a printable error.
pub async fn fetch_metrics(endpoint: &Endpoint) -> Result<Value, String> {
    let (status, text) = call(endpoint, "GET", "/metrics.json", None).await?;
    if status != 200 {
        return Err(format!("the server answered {status}: {}", text.trim()));
    }
    serde_json::from_str(&text).map_err(|e| format!("/metrics.json: {e}"))
}

/// The `queue=` series of a gauge family, largest first.
pub fn queue_rows(v: &Value, name: &str) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = v[name]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| {
                    let q = k.trim_start_matches("queue=\"").trim_end_matches('"').to_string();
                    (q, n.as_i64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Open delivery connections.
pub fn delivery_connections(v: &Value) -> i64 {
    v["connection_count"].as_object().and_then(|m| m.values().next()).and_then(Value::as_i64).unwrap_or(0)
}

/// Prints the largest `limit` queues of both kinds.
pub fn print_queues(v: &Value, limit: usize) {
    for (title, metric) in [("SCHEDULED QUEUE", "scheduled_count"), ("READY QUEUE", "ready_count")] {
        let rows = queue_rows(v, metric);
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(title.len());
        println!("{title:<width$}  {:>8}", "COUNT");
        for (q, n) in rows.iter().take(limit) {
            println!("{q:<width$}  {n:>8}");
        }
        if rows.len() > limit {
            println!("({} more)", rows.len() - limit);
        }
        println!();
    }
}

async fn queue_summary(endpoint: &Endpoint) -> ExitCode {
    let v = match fetch_metrics(endpoint).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_queues(&v, usize::MAX);
    println!("delivery connections: {}", delivery_connections(&v));
    ExitCode::SUCCESS
}

/// Runs an admin command.
pub async fn run(command: AdminCommand) -> ExitCode {
    use AdminCommand::*;
    match command {
        QueueSummary(e) => queue_summary(&e).await,
        Bounce { endpoint, scope } => show(&endpoint, "POST", "/api/admin/bounce/v1", Some(scope_json(&scope))).await,
        BounceList(e) => show(&e, "GET", "/api/admin/bounce/v1", None).await,
        BounceCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/bounce/v1", Some(json!({ "id": id }))).await
        }
        Suspend { endpoint, scope } => show(&endpoint, "POST", "/api/admin/suspend/v1", Some(scope_json(&scope))).await,
        SuspendList(e) => show(&e, "GET", "/api/admin/suspend/v1", None).await,
        SuspendCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/suspend/v1", Some(json!({ "id": id }))).await
        }
        SuspendReadyQ { endpoint, name, reason, duration } => {
            let body = json!({ "name": name, "reason": reason, "duration": duration });
            show(&endpoint, "POST", "/api/admin/suspend-ready-q/v1", Some(body)).await
        }
        SuspendReadyQList(e) => show(&e, "GET", "/api/admin/suspend-ready-q/v1", None).await,
        SuspendReadyQCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/suspend-ready-q/v1", Some(json!({ "id": id }))).await
        }
        Rebind { endpoint, scope, meta } => {
            let mut data = serde_json::Map::new();
            for kv in meta {
                match kv.split_once('=') {
                    Some((k, v)) => data.insert(k.to_string(), Value::String(v.to_string())),
                    None => {
                        eprintln!("error: --set-meta expects KEY=VALUE, got {kv:?}");
                        return ExitCode::FAILURE;
                    }
                };
            }
            let mut body = scope_json(&scope);
            body["data"] = Value::Object(data);
            if let Some(m) = body.as_object_mut() {
                m.remove("duration");
            }
            show(&endpoint, "POST", "/api/admin/rebind/v1", Some(body)).await
        }
        InspectMessage { endpoint, id, want_body } => {
            let path = format!("/api/admin/inspect-message/v1?id={id}&want_body={want_body}");
            show(&endpoint, "GET", &path, None).await
        }
    }
}
