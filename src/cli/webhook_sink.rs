//! `wasmta webhook-sink`: an HTTP receiver for log hook webhooks, to try a hook locally and
//! for the log hook benchmark (a receiver in Rust takes little of the CPU the MTA shares
//! on one host). Each POST body is one JSON log record or an array of them; it counts
//! records by `type` and answers `--answer` (200 unless told); a body that is not records
//! is answered 400 and counted as `invalid`. `GET /` answers the counts as JSON.

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
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..600))]
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

struct Receiver {
    args: WebhookSinkArgs,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Receiver {
    fn count(&self, key: &str, n: u64) {
        *self.counts.lock().entry(key.to_string()).or_default() += n;
    }
}

async fn post(State(r): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, String) {
    r.count("posts", 1);
    let kinds = match serde_json::from_slice::<Body>(&body) {
        Ok(Body::Many(list)) => list,
        Ok(Body::One(one)) => vec![one],
        Err(e) => {
            r.count("invalid", 1);
            return (StatusCode::BAD_REQUEST, format!("not a log record or an array of them: {e}\n"));
        }
    };
    if r.args.print {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Array(list)) => list.iter().for_each(|v| println!("{v}")),
            Ok(one) => println!("{one}"),
            Err(_) => {}
        }
    }
    for k in &kinds {
        r.count(&k.kind, 1);
    }
    let status = StatusCode::from_u16(r.args.answer).unwrap_or(StatusCode::OK);
    (status, format!("{} record(s)\n", kinds.len()))
}

async fn counts(State(r): State<Arc<Receiver>>) -> String {
    serde_json::to_string(&*r.counts.lock()).unwrap_or_default()
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
    let receiver = Arc::new(Receiver { args, counts: Mutex::new(BTreeMap::new()) });
    let app = Router::new()
        .route("/", axum::routing::get(counts).post(post))
        .fallback(axum::routing::post(post))
        .with_state(receiver);
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: webhook-sink: {e}");
            ExitCode::FAILURE
        }
    }
}
