//! `wasmta top`: the running server at a glance, refreshed every `--interval` — message
//! rates from KumoMTA's counters (`total_messages_received`, `_delivered`, `_transfail`,
//! `_fail`), open delivery connections and the largest scheduled and ready queues — read
//! from `/metrics.json` like kcli's `top` reads the metrics endpoint.

use super::admin::{delivery_connections, fetch_metrics, print_queues, total};
use super::client::Endpoint;
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

/// Keypresses from a terminal, read without waiting for Enter; the terminal's settings
/// come back when this is dropped.
struct Keys {
    saved: libc::termios,
    rx: tokio::sync::mpsc::UnboundedReceiver<u8>,
}

impl Keys {
    /// Starts reading keys when stdin is a terminal.
    fn start() -> Option<Keys> {
        use std::io::{IsTerminal, Read};
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let mut raw = t;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            t
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while std::io::stdin().read(&mut b).is_ok_and(|n| n == 1) {
                if tx.send(b[0]).is_err() {
                    return;
                }
            }
        });
        Some(Keys { saved, rx })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `start`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// Waits `interval`; true when the user asked to quit meanwhile (`q`, or Ctrl-C).
async fn pause(interval: Duration, keys: &mut Option<Keys>) -> bool {
    let key = async {
        match keys.as_mut() {
            Some(k) => loop {
                match k.rx.recv().await {
                    Some(b'q' | b'Q') | None => return,
                    Some(_) => continue,
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(interval) => false,
        _ = key => true,
        _ = tokio::signal::ctrl_c() => true,
    }
}

/// Runs `top`; `q` quits.
pub async fn run(args: TopArgs) -> ExitCode {
    use std::io::IsTerminal;
    let clear = std::io::stdout().is_terminal();
    let mut keys = if clear { Keys::start() } else { None };
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
        println!(
            "wasmta at {}   {}{}",
            args.endpoint.endpoint,
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            if keys.is_some() { "   (q quits)" } else { "" }
        );
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
        if pause(args.interval, &mut keys).await {
            return ExitCode::SUCCESS;
        }
    }
}
