//! `wasmta top`: the running server at a glance, refreshed every `--interval` — message
//! rates from KumoMTA's counters (`total_messages_received`, `_delivered`, `_transfail`,
//! `_fail`), open delivery connections and the largest scheduled and ready queues — read
//! from `/metrics.json` like kcli's `top` reads the metrics endpoint.

use super::admin::{delivery_connections, fetch_metrics, print_queues};
use super::client::Endpoint;
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `wasmta top` arguments.
#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = crate::config::units::parse_duration)]
    interval: Duration,
    /// Stop after this many refreshes (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Queues shown of each kind.
    #[arg(long, default_value_t = 10)]
    rows: usize,
}

const COUNTERS: [(&str, &str); 4] = [
    ("received", "total_messages_received"),
    ("delivered", "total_messages_delivered"),
    ("transfail", "total_messages_transfail"),
    ("fail", "total_messages_fail"),
];

/// A counter's value, summed over its series.
fn total(v: &Value, name: &str) -> i64 {
    match &v[name] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::Object(m) => m.values().filter_map(Value::as_i64).sum(),
        _ => 0,
    }
}

/// Runs `top`.
pub async fn run(args: TopArgs) -> ExitCode {
    use std::io::IsTerminal;
    let clear = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, [i64; 4])> = None;
    let mut shown = 0;
    loop {
        let v = match fetch_metrics(&args.endpoint).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let now = Instant::now();
        let totals = COUNTERS.map(|(_, name)| total(&v, name));
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        println!("wasmta at {}   {}", args.endpoint.endpoint, chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"));
        println!("{:<10} {:>12} {:>10}", "MESSAGES", "TOTAL", "PER SEC");
        for (i, (label, _)) in COUNTERS.iter().enumerate() {
            let rate = last
                .map(|(at, before)| {
                    let secs = now.duration_since(at).as_secs_f64().max(0.001);
                    format!("{:.1}", (totals[i] - before[i]) as f64 / secs)
                })
                .unwrap_or_else(|| "-".into());
            println!("{label:<10} {:>12} {rate:>10}", totals[i]);
        }
        println!("delivery connections: {}\n", delivery_connections(&v));
        print_queues(&v, args.rows);
        last = Some((now, totals));
        shown += 1;
        if args.count != 0 && shown >= args.count {
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(args.interval).await;
    }
}
