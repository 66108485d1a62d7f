//! `wasmta trace-smtp-server` and `trace-smtp-client`: the running server's SMTP sessions
//! (or delivery connections) live, as kcli shows them: one line per line said, `<` what
//! wasmta received, `>` what it sent; message content as its size only, credentials
//! hidden. Runs until interrupted.

use super::client::{Endpoint, stream_lines};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only sessions with this peer (an address or a CIDR block).
    #[arg(long)]
    peer: Option<String>,
    /// Only sessions whose EHLO domain (server) or destination, MX host or recipient
    /// domains (client) contain this.
    #[arg(long)]
    domain: Option<String>,
    /// Print the events as JSON lines.
    #[arg(long)]
    json: bool,
}

fn print(line: &str, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    let Ok(e) = serde_json::from_str::<Value>(line) else { return };
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    let when = s("when");
    let time = when.split('T').nth(1).unwrap_or(&when).trim_end_matches('Z').to_string();
    let session: String = s("session").chars().take(8).collect();
    let peer = s("peer");
    match s("kind").as_str() {
        "connect" => println!("{time} {session} {peer} === connected ({})", s("data")),
        "close" => println!("{time} {session} {peer} === closed"),
        "lagged" => println!("=== {} (the trace fell behind)", s("data")),
        kind => {
            let arrow = if kind == "recv" { "<" } else { ">" };
            for l in s("data").lines() {
                println!("{time} {session} {peer} {arrow} {l}");
            }
        }
    }
}

/// Streams one direction's trace (`server` or `client`).
pub async fn run(direction: &str, args: TraceArgs) -> ExitCode {
    let mut query = vec![];
    if let Some(p) = &args.peer {
        query.push(("peer", p.clone()));
    }
    if let Some(d) = &args.domain {
        query.push(("domain", d.clone()));
    }
    let path =
        format!("/api/admin/trace-smtp-{direction}/v1?{}", serde_urlencoded::to_string(query).unwrap_or_default());
    let json = args.json;
    match stream_lines(&args.endpoint, &path, |line| print(line, json)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
