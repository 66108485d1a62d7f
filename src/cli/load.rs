//! `wasmta load`: an SMTP load generator. C connections share N messages of S bytes,
//! optionally pipelining MAIL/RCPT/DATA; it reports messages per second and latency
//! percentiles, and can write a ledger of every acknowledged spool id (crash tests use
//! it to prove no acknowledged message is lost).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Options of `wasmta load`.
#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Send MAIL, RCPT and DATA in one write.
    #[arg(long)]
    pipelining: bool,
    /// Envelope sender.
    #[arg(long, default_value = "load@example.com")]
    sender: String,
    /// Envelope recipient.
    #[arg(long, default_value = "rcpt@example.com")]
    recipient: String,
    /// Write each acknowledged spool id to this file, one per line.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Stop after this long even if messages remain.
    #[arg(long, default_value = "5m")]
    max_duration: String,
}

struct Shared {
    args: LoadArgs,
    next: AtomicUsize,
    failed: AtomicUsize,
    latencies: parking_lot::Mutex<Vec<Duration>>,
    ids: parking_lot::Mutex<Vec<String>>,
    body: Vec<u8>,
    deadline: Instant,
}

fn make_body(args: &LoadArgs) -> Vec<u8> {
    let mut body = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: wasmta load test\r\nMessage-ID: <load@wasmta.test>\r\n\r\n",
        args.sender, args.recipient
    )
    .into_bytes();
    while body.len() + 78 <= args.size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

async fn read_reply(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        text.push_str(line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return Ok((code, text));
        }
    }
}

/// One connection's work; returns when no messages remain or on an I/O error.
async fn connection(shared: &Shared) -> std::io::Result<bool> {
    let stream = TcpStream::connect(&shared.args.target).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let (code, _) = read_reply(&mut r, &mut line).await?;
    if code != 220 {
        return Ok(false);
    }
    w.write_all(b"EHLO load.wasmta.test\r\n").await?;
    read_reply(&mut r, &mut line).await?;
    let envelope = format!("MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n", shared.args.sender, shared.args.recipient);
    loop {
        if Instant::now() > shared.deadline || shared.next.fetch_add(1, Ordering::AcqRel) >= shared.args.messages {
            let _ = w.write_all(b"QUIT\r\n").await;
            return Ok(true);
        }
        let started = Instant::now();
        let outcome: std::io::Result<Outcome> = async {
            if shared.args.pipelining {
                w.write_all(envelope.as_bytes()).await?;
                let mut ok = true;
                let mut reconnect = false;
                for want in [250, 250, 354] {
                    let (code, text) = read_reply(&mut r, &mut line).await?;
                    reconnect |= code != want && asks_to_reconnect(code, &text);
                    ok &= code == want;
                }
                if !ok {
                    return Ok(if reconnect { Outcome::Reconnect } else { Outcome::Failed });
                }
            } else {
                for (cmd, want) in envelope.split_inclusive("\r\n").zip([250, 250, 354]) {
                    w.write_all(cmd.as_bytes()).await?;
                    let (code, text) = read_reply(&mut r, &mut line).await?;
                    if code != want {
                        if asks_to_reconnect(code, &text) {
                            return Ok(Outcome::Reconnect);
                        }
                        w.write_all(b"RSET\r\n").await?;
                        read_reply(&mut r, &mut line).await?;
                        return Ok(Outcome::Failed);
                    }
                }
            }
            w.write_all(&shared.body).await?;
            let (code, text) = read_reply(&mut r, &mut line).await?;
            Ok(if code == 250 { Outcome::Accepted(text) } else { Outcome::Failed })
        }
        .await;
        match outcome {
            Ok(Outcome::Accepted(text)) => {
                shared.latencies.lock().push(started.elapsed());
                if let Some(ids) = text.trim_end().split("ids=").nth(1) {
                    shared.ids.lock().extend(ids.split(',').map(str::to_string));
                }
            }
            Ok(Outcome::Failed) => {
                shared.failed.fetch_add(1, Ordering::AcqRel);
            }
            Ok(Outcome::Reconnect) => {
                // the server ends this session (max_messages_per_connection): the message
                // is sent again on a new connection, not counted as failed
                shared.next.fetch_sub(1, Ordering::AcqRel);
                let _ = w.write_all(b"QUIT\r\n").await;
                return Ok(false);
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::AcqRel);
                return Err(e);
            }
        }
    }
}

/// What became of one message.
enum Outcome {
    Accepted(String),
    Failed,
    /// The server asked for a new connection (a transient reply saying so, or 421).
    Reconnect,
}

fn asks_to_reconnect(code: u16, text: &str) -> bool {
    code == 421 || (code / 100 == 4 && text.to_ascii_lowercase().contains("reconnect"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the load.
pub async fn run(args: LoadArgs) -> ExitCode {
    let max = match crate::config::units::parse_duration(&args.max_duration) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --max-duration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let shared = Arc::new(Shared {
        body: make_body(&args),
        args: args.clone(),
        next: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        latencies: Default::default(),
        ids: Default::default(),
        deadline: started + max,
    });
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match connection(&shared).await {
                    Ok(true) => return,
                    Ok(false) | Err(_) => {
                        if Instant::now() > shared.deadline
                            || shared.next.load(Ordering::Acquire) >= shared.args.messages
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let mut lat = shared.latencies.lock().clone();
    lat.sort();
    let ok = lat.len();
    let failed = shared.failed.load(Ordering::Acquire);
    if let Some(path) = &args.ledger {
        let ids = shared.ids.lock();
        let mut text = ids.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: writing the ledger {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "sent={} ok={ok} failed={failed} connections={} size={} pipelining={} elapsed={:.2}s rate={:.0} msg/s p50={:.2}ms p99={:.2}ms",
        ok + failed,
        args.connections,
        args.size,
        args.pipelining,
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
    );
    ExitCode::SUCCESS
}
