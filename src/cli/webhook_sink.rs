//! `wasmta webhook-sink`: an HTTP receiver for log hook webhooks, to try a hook locally and
//! for the log hook benchmark (a receiver in Rust takes little of the CPU the MTA shares
//! on one host). Each POST body is one JSON log record or an array of them; it answers
//! `--answer` (200 unless told). `GET /` answers JSON: `posts`, `invalid` (bodies that are
//! not records, answered 400), `refused` (records answered with a non-2xx `--answer`, so
//! not received) and `records`, the records received by `type` (at most 64 types of at
//! most 64 characters; the rest count as `other`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

/// Options of `wasmta webhook-sink`.
#[derive(clap::Args, Clone)]
pub struct WebhookSinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2600")]
    listen: String,
    /// HTTP status to answer every POST with (503 to try a hook's retries).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..600))]
    answer: u16,
    /// Print each record as a line of JSON.
    #[arg(long)]
    print: bool,
}

/// Only the field counted; the rest of a record is skipped unread.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Many(Vec<Kind>),
    One(Kind),
}

#[derive(Default, Clone, serde::Serialize)]
struct Counts {
    posts: u64,
    invalid: u64,
    refused: u64,
    records: BTreeMap<String, u64>,
}

struct Receiver {
    args: WebhookSinkArgs,
    counts: Mutex<Counts>,
}

/// The most record types counted apart; a sender cannot grow the counts without bound.
const MOST_TYPES: usize = 64;

async fn post(State(r): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, String) {
    let parsed = serde_json::from_slice::<Body>(&body);
    let mut counts = r.counts.lock();
    counts.posts += 1;
    let kinds = match parsed {
        Ok(Body::Many(list)) => list,
        Ok(Body::One(one)) => vec![one],
        Err(e) => {
            counts.invalid += 1;
            return (StatusCode::BAD_REQUEST, format!("not a log record or an array of them: {e}\n"));
        }
    };
    let status = StatusCode::from_u16(r.args.answer).unwrap_or(StatusCode::OK);
    if !status.is_success() {
        counts.refused += kinds.len() as u64;
        return (status, format!("{} record(s) refused (--answer {})\n", kinds.len(), r.args.answer));
    }
    for k in &kinds {
        let known = counts.records.len() < MOST_TYPES || counts.records.contains_key(&k.kind);
        let key = if known && k.kind.len() <= 64 { k.kind.as_str() } else { "other" };
        *counts.records.entry(key.to_string()).or_default() += 1;
    }
    drop(counts);
    if r.args.print {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Array(list)) => list.iter().for_each(|v| println!("{v}")),
            Ok(one) => println!("{one}"),
            Err(_) => {}
        }
    }
    (status, format!("{} record(s)\n", kinds.len()))
}

async fn counts(State(r): State<Arc<Receiver>>) -> axum::Json<Counts> {
    axum::Json(r.counts.lock().clone())
}

/// Runs the receiver until interrupted.
pub async fn run(args: WebhookSinkArgs) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: webhook-sink: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("webhook-sink listening on {} (GET / for the counts)", args.listen);
    let receiver = Arc::new(Receiver { args, counts: Mutex::new(Counts::default()) });
    let app = Router::new()
        .route("/", axum::routing::get(counts).post(post))
        .fallback(axum::routing::post(post))
        // a batch of large records is larger than axum's 2 MB default
        .layer(axum::extract::DefaultBodyLimit::max(1 << 30))
        .with_state(receiver);
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: webhook-sink: {e}");
            ExitCode::FAILURE
        }
    }
}
