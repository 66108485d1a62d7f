//! kcli-style commands against a running wasmta's HTTP API: `queue-summary`, `bounce`,
//! `bounce-list`, `bounce-cancel`, `suspend`, `suspend-list`, `suspend-cancel`,
//! `suspend-ready-q`, `suspend-ready-q-list`, `suspend-ready-q-cancel`, `rebind`,
//! `inspect-message`. Errors from the server are shown as it wrote them.

use super::client::{Endpoint, call, json_call};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

/// Which mail an action covers: every given field must match. With none given, the
/// command refuses unless `--everything` says that all mail is meant (as kcli does).
#[derive(Args)]
pub struct Scope {
    /// Only mail of this campaign.
    #[arg(long)]
    campaign: Option<String>,
    /// Only mail of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only mail to this (routing) domain.
    #[arg(long)]
    domain: Option<String>,
    /// Act on all mail, of every domain, tenant and campaign.
    #[arg(long, conflicts_with_all = ["campaign", "tenant", "domain"])]
    everything: bool,
    /// Why: written to the log records and shown by the listings.
    #[arg(long)]
    reason: String,
}

/// How long a hold lasts.
#[derive(Args)]
pub struct Hold {
    /// How long the action also applies to mail that arrives later ("5m", "1 hour");
    /// the server's default is 5 minutes.
    #[arg(long, value_parser = check_duration)]
    duration: Option<String>,
}

/// A hold's id.
#[derive(Args)]
pub struct Id {
    /// The id the command that made it printed (see the matching `-list` command).
    #[arg(long)]
    id: String,
}

fn check_duration(text: &str) -> Result<String, String> {
    crate::config::units::parse_duration(text).map(|_| text.to_string())
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Messages per scheduled and ready queue (oldest message, last error, suspended,
    /// bouncing and held markers), and delivery connections.
    QueueSummary {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bounce queued mail now, and mail that arrives for the hold's duration.
    Bounce {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        hold: Hold,
    },
    /// Active bounces.
    BounceList(Endpoint),
    /// End a bounce: mail that arrives from now on is delivered again.
    BounceCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        id: Id,
    },
    /// Hold scheduled queues: nothing in them is delivered until the hold ends.
    Suspend {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        hold: Hold,
    },
    /// Active suspensions.
    SuspendList(Endpoint),
    /// End a suspension: the mail it held is due at once.
    SuspendCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        id: Id,
    },
    /// Hold one ready queue (`source->site@protocol`, as `queue-summary` lists them).
    SuspendReadyQ {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The ready queue name, `source->site@protocol`.
        #[arg(long)]
        name: String,
        /// Why: shown by the listing and logged.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        hold: Hold,
    },
    /// Active ready-queue suspensions.
    SuspendReadyQList(Endpoint),
    /// End a ready-queue suspension: its mail is sent at once.
    SuspendReadyQCancel {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        id: Id,
    },
    /// Re-queue matching mail now, optionally setting meta on each message.
    Rebind {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        scope: Scope,
        /// Meta to set on each message before it is queued again (repeatable).
        #[arg(long = "set-meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Show a queued message: envelope, meta, queue, attempts.
    InspectMessage {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The message's spool id (the `id` of its log records, or `ids=` in the 250 reply).
        id: String,
        /// Include the message text.
        #[arg(long)]
        want_body: bool,
    },
}

/// The request body of a scoped action, or why the command refuses.
fn scope_json(s: &Scope, what: &str) -> Result<Value, String> {
    if s.campaign.is_none() && s.tenant.is_none() && s.domain.is_none() && !s.everything {
        return Err(format!(
            "refusing to {what} every message: give --domain, --tenant or --campaign, or --everything to mean all mail"
        ));
    }
    Ok(json!({ "campaign": s.campaign, "tenant": s.tenant, "domain": s.domain, "reason": s.reason }))
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

/// The `queue` series of a gauge family, largest first.
pub fn queue_rows(v: &Value, name: &str) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = crate::metrics::json_lookup(v, name)
        .into_iter()
        .map(|(labels, n)| (labels.into_iter().map(|(_, lv)| lv).collect::<Vec<_>>().join(","), n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// A metric summed over its series (0 when the server does not have it).
pub fn total(v: &Value, name: &str) -> i64 {
    crate::metrics::json_lookup(v, name).iter().map(|(_, n)| n).sum()
}

/// Open delivery connections.
pub fn delivery_connections(v: &Value) -> i64 {
    crate::metrics::json_lookup(v, "connection_count")
        .iter()
        .filter(|(labels, _)| labels.iter().any(|(k, lv)| k == "service" && lv == "smtp_client"))
        .map(|(_, n)| n)
        .sum()
}

/// Prints the largest `limit` queues of both kinds, then the messages between them.
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
    println!(
        "between queues: {}   in delivery: {}   messages in all: {}",
        total(v, "transit_count"),
        total(v, "delivering_count"),
        total(v, "message_count")
    );
}

/// One queue's markers: suspended, bouncing, held messages.
fn flags(q: &Value) -> String {
    let mut f = vec![];
    if q["suspended"] == true {
        f.push("suspended".to_string());
    }
    if q["bouncing"] == true {
        f.push("bouncing".to_string());
    }
    if let Some(n) = q["held"].as_u64().filter(|n| *n > 0) {
        f.push(format!("{n} held"));
    }
    if f.is_empty() { "-".into() } else { f.join(",") }
}

fn print_details(queues: &[Value]) {
    for (kind, title) in [("scheduled", "SCHEDULED QUEUE"), ("ready", "READY QUEUE")] {
        let rows: Vec<&Value> = queues.iter().filter(|q| q["kind"] == kind).collect();
        let width = rows.iter().filter_map(|q| q["name"].as_str()).map(str::len).max().unwrap_or(0).max(title.len());
        let last = if kind == "ready" { "CONNECTIONS" } else { "LAST ERROR" };
        println!("{title:<width$}  {:>8}  {:>7}  {:<12}  {last}", "COUNT", "OLDEST", "FLAGS");
        for q in rows {
            let oldest = q["oldest_age_secs"].as_i64().map(super::messages::age).unwrap_or_else(|| "-".into());
            let tail = match kind {
                "ready" => q["connections"].to_string(),
                _ => q["last_error"].as_str().unwrap_or("").to_string(),
            };
            println!(
                "{:<width$}  {:>8}  {oldest:>7}  {:<12}  {tail}",
                q["name"].as_str().unwrap_or_default(),
                q["count"],
                flags(q)
            );
        }
        println!();
    }
}

async fn queue_summary(endpoint: &Endpoint, json_out: bool) -> ExitCode {
    let details = match json_call(endpoint, "GET", "/api/admin/queue-summary/v1", None).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&details).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let v = match fetch_metrics(endpoint).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_details(details["queues"].as_array().map(Vec::as_slice).unwrap_or_default());
    println!(
        "between queues: {}   in delivery: {}   messages in all: {}",
        total(&v, "transit_count"),
        total(&v, "delivering_count"),
        total(&v, "message_count")
    );
    println!("delivery connections: {}", delivery_connections(&v));
    ExitCode::SUCCESS
}

/// A scoped action with its hold duration.
async fn scoped(endpoint: &Endpoint, path: &str, scope: &Scope, hold: &Hold, what: &str) -> ExitCode {
    match scope_json(scope, what) {
        Ok(mut body) => {
            body["duration"] = json!(hold.duration);
            show(endpoint, "POST", path, Some(body)).await
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `bounce`: the server's answer, then (for a bounce too large to finish before it
/// answered) its progress every second until every queued message is bounced.
async fn bounce(endpoint: &Endpoint, scope: &Scope, hold: &Hold) -> ExitCode {
    let mut body = match scope_json(scope, "bounce") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    body["duration"] = json!(hold.duration);
    let answer = match json_call(endpoint, "POST", "/api/admin/bounce/v1", Some(&body)).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    if answer["in_progress"] != true {
        return ExitCode::SUCCESS;
    }
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    let (mut last, mut last_done) = (std::time::Instant::now(), answer["total_bounced"].as_u64().unwrap_or(0));
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let list = match json_call(endpoint, "GET", "/api/admin/bounce/v1", None).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(h) = list.as_array().into_iter().flatten().find(|h| h["id"] == id.as_str()) else {
            println!("bounce {id} ended (cancelled or expired)");
            return ExitCode::SUCCESS;
        };
        let (done, matched) = (h["done"].as_u64().unwrap_or(0), h["matched"].as_u64().unwrap_or(0));
        let rate = done.saturating_sub(last_done) as f64 / last.elapsed().as_secs_f64().max(0.001);
        (last, last_done) = (std::time::Instant::now(), done);
        println!("bounce {id}: {done} of {matched} queued message(s) bounced ({rate:.0}/s)");
        if h["in_progress"] != true {
            return ExitCode::SUCCESS;
        }
    }
}

/// Runs an admin command.
pub async fn run(command: AdminCommand) -> ExitCode {
    use AdminCommand::*;
    match command {
        QueueSummary { endpoint, json } => queue_summary(&endpoint, json).await,
        Bounce { endpoint, scope, hold } => bounce(&endpoint, &scope, &hold).await,
        BounceList(e) => show(&e, "GET", "/api/admin/bounce/v1", None).await,
        BounceCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/bounce/v1", Some(json!({ "id": id.id }))).await
        }
        Suspend { endpoint, scope, hold } => scoped(&endpoint, "/api/admin/suspend/v1", &scope, &hold, "suspend").await,
        SuspendList(e) => show(&e, "GET", "/api/admin/suspend/v1", None).await,
        SuspendCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/suspend/v1", Some(json!({ "id": id.id }))).await
        }
        SuspendReadyQ { endpoint, name, reason, hold } => {
            let body = json!({ "name": name, "reason": reason, "duration": hold.duration });
            show(&endpoint, "POST", "/api/admin/suspend-ready-q/v1", Some(body)).await
        }
        SuspendReadyQList(e) => show(&e, "GET", "/api/admin/suspend-ready-q/v1", None).await,
        SuspendReadyQCancel { endpoint, id } => {
            show(&endpoint, "DELETE", "/api/admin/suspend-ready-q/v1", Some(json!({ "id": id.id }))).await
        }
        Rebind { endpoint, scope, meta } => {
            let mut data = serde_json::Map::new();
            for kv in meta {
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => data.insert(k.to_string(), Value::String(v.to_string())),
                    _ => {
                        eprintln!("error: --set-meta expects KEY=VALUE, got {kv:?}");
                        return ExitCode::from(2);
                    }
                };
            }
            let mut body = match scope_json(&scope, "rebind") {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            body["data"] = Value::Object(data);
            show(&endpoint, "POST", "/api/admin/rebind/v1", Some(body)).await
        }
        InspectMessage { endpoint, id, want_body } => {
            let path = format!("/api/admin/inspect-message/v1?id={id}&want_body={want_body}");
            show(&endpoint, "GET", &path, None).await
        }
    }
}
