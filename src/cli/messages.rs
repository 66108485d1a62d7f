//! Per-message commands (mailq and postsuper for wasmta): `queue-list` lists queued
//! messages, `message bounce|requeue|hold|release|delete` acts on messages by id (given
//! as arguments, or one or more per line on standard input), `qshape` counts queued
//! messages per domain by age.

use super::client::{Endpoint, json_call};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::io::Read;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum MessageCommand {
    /// List queued messages, oldest first: id, queue, age, attempts, next due, last response.
    QueueList(ListArgs),
    /// Act on queued messages by id: bounce, requeue, hold, release, delete.
    Message(ActionArgs),
    /// Queued messages per domain by age (Postfix's qshape).
    Qshape {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this queue (a scheduled queue name, or a ready queue as `queue-summary` lists it).
    #[arg(long)]
    queue: Option<String>,
    /// Only mail to this domain (or routing domain).
    #[arg(long)]
    domain: Option<String>,
    /// Only messages received at least this long ago ("1h", "30m").
    #[arg(long, value_parser = check_duration)]
    older_than: Option<String>,
    /// At most this many messages.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    /// Print only the ids, one per line (to pipe into `wasmta message`).
    #[arg(long, conflicts_with = "json")]
    ids_only: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ActionName {
    /// Bounce now: an AdminBounce record, then the message is gone.
    Bounce,
    /// Make it due now (postsuper -r).
    Requeue,
    /// Keep it from delivery until released, across restarts (postsuper -h).
    Hold,
    /// End a hold: due now (postsuper -H).
    Release,
    /// Drop it without a bounce (an AdminDelete record); needs --yes.
    Delete,
}

#[derive(Args)]
pub struct ActionArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// What to do.
    action: ActionName,
    /// Message ids; none (or "-") reads them from standard input.
    ids: Vec<String>,
    /// Why: written to the AdminBounce or AdminDelete record.
    #[arg(long)]
    reason: Option<String>,
    /// Confirms a delete: the messages go without a bounce to their senders.
    #[arg(long)]
    yes: bool,
    /// Write no log record for a bounce or delete.
    #[arg(long)]
    suppress_logging: bool,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

fn check_duration(text: &str) -> Result<String, String> {
    crate::config::units::parse_duration(text).map(|_| text.to_string())
}

/// Seconds as "3d4h", "2h13m", "5m10s", "42s".
pub(super) fn age(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (d, h, _) if d > 0 => format!("{d}d{h}h"),
        (_, h, m) if h > 0 => format!("{h}h{m}m"),
        (_, _, m) if m > 0 => format!("{m}m{}s", s % 60),
        _ => format!("{s}s"),
    }
}

fn query_string(args: &ListArgs) -> String {
    let mut q = vec![("limit", args.limit.to_string())];
    for (k, v) in [("queue", &args.queue), ("domain", &args.domain), ("older_than", &args.older_than)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    serde_urlencoded::to_string(q).unwrap_or_default()
}

async fn queue_list(args: ListArgs) -> Result<(), String> {
    let v =
        json_call(&args.endpoint, "GET", &format!("/api/admin/queue-list/v1?{}", query_string(&args)), None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let matched = v["matched"].as_u64().unwrap_or_default();
    if args.ids_only {
        for m in &messages {
            println!("{}", m["id"].as_str().unwrap_or_default());
        }
        // on stderr: a pipe into `wasmta message` must not act on a cut list unawares
        if matched as usize > messages.len() {
            eprintln!("warning: {} of {matched} ids listed; --limit {matched} for all of them", messages.len());
        }
        return Ok(());
    }
    let rows: Vec<[String; 6]> = messages
        .iter()
        .map(|m| {
            let due = if m["held"].as_bool() == Some(true) {
                "HELD".to_string()
            } else {
                m["next_due"].as_str().map(|t| t.replace("+00:00", "Z")).unwrap_or_else(|| "now".into())
            };
            [
                m["id"].as_str().unwrap_or_default().to_string(),
                m["queue"].as_str().unwrap_or_default().to_string(),
                age(m["age_secs"].as_i64().unwrap_or_default()),
                m["attempts"].to_string(),
                due,
                m["last_response"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let head = ["ID", "QUEUE", "AGE", "ATTEMPTS", "NEXT DUE", "LAST RESPONSE"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r.iter()).take(5) {
            *w = (*w).max(c.len());
        }
    }
    let line = |r: [&str; 6]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4]
        )
    };
    println!("{}", line(head).trim_end());
    for r in &rows {
        println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]).trim_end());
    }
    if matched as usize > messages.len() {
        println!("({} of {matched} shown; --limit for more)", messages.len());
    } else {
        println!("({matched} message(s))");
    }
    Ok(())
}

/// Ids from the arguments, or whitespace-separated from standard input.
fn read_ids(given: Vec<String>) -> Result<Vec<String>, String> {
    if !given.is_empty() && given != ["-"] {
        return Ok(given);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading ids from standard input: {e}"))?;
    let ids: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if ids.is_empty() {
        return Err("no message ids: give them as arguments or on standard input".into());
    }
    Ok(ids)
}

/// Runs the action; Ok(true) when every id got the action's result.
async fn message(args: ActionArgs) -> Result<bool, String> {
    if args.action == ActionName::Delete && !args.yes {
        return Err(
            "delete drops messages without a bounce to their senders: add --yes to mean it (or use `bounce`)".into()
        );
    }
    let ids = read_ids(args.ids)?;
    let name = args.action.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default();
    let body = json!({
        "action": name, "ids": ids, "reason": args.reason,
        "suppress_logging": args.suppress_logging, "confirm": args.yes,
    });
    let v = json_call(&args.endpoint, "POST", "/api/admin/message-action/v1", Some(&body)).await?;
    let done = match args.action {
        ActionName::Bounce => "bounced",
        ActionName::Requeue => "requeued",
        ActionName::Hold => "held",
        ActionName::Release => "released",
        ActionName::Delete => "deleted",
    };
    let results = v["results"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for r in &results {
            println!("{}  {}", r["id"].as_str().unwrap_or_default(), r["result"].as_str().unwrap_or_default());
        }
    }
    Ok(results.iter().all(|r| r["result"] == done))
}

async fn qshape(endpoint: &Endpoint, json_out: bool) -> Result<(), String> {
    let v = json_call(endpoint, "GET", "/api/admin/qshape/v1", None).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let buckets: Vec<String> =
        v["buckets"].as_array().into_iter().flatten().filter_map(|b| b.as_str().map(str::to_string)).collect();
    let rows = v["domains"].as_array().cloned().unwrap_or_default();
    let width = rows.iter().filter_map(|r| r["domain"].as_str()).map(str::len).max().unwrap_or(0).max(6);
    let mut head = format!("{:<width$} {:>7}", "DOMAIN", "TOTAL");
    for b in &buckets {
        head.push_str(&format!(" {b:>6}"));
    }
    println!("{head}");
    for r in rows {
        let mut line = format!("{:<width$} {:>7}", r["domain"].as_str().unwrap_or_default(), r["total"]);
        for n in r["counts"].as_array().into_iter().flatten() {
            line.push_str(&format!(" {:>6}", n.to_string()));
        }
        println!("{line}");
    }
    Ok(())
}

/// Runs a per-message command.
pub async fn run(command: MessageCommand) -> ExitCode {
    let result = match command {
        MessageCommand::QueueList(args) => queue_list(args).await.map(|_| true),
        MessageCommand::Message(args) => message(args).await,
        MessageCommand::Qshape { endpoint, json } => qshape(&endpoint, json).await.map(|_| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
