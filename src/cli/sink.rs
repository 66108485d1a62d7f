//! `wasmta sink`: an SMTP server that accepts and counts (optionally stores) what it is
//! sent, for tests and relay benchmarks. Recipient local parts choose its answer:
//! `tempfail…` → 451, `permfail…` → 550, `flakyN-…` → 451 for the first N attempts of
//! that recipient and 250 after. It records the most connections it saw open at once.

use crate::message::EnvelopeAddress;
use crate::protocol::{Command, DataReceiver, Line, LineEndings, LineSplitter, Reply, command};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Options of `wasmta sink`.
#[derive(clap::Args, Clone)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2526")]
    listen: String,
    /// Store each message as N.eml with N.json (envelope) here, and stats.json.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Exit after this many messages, printing the receive rate.
    #[arg(long)]
    exit_after: Option<usize>,
}

struct Sink {
    args: SinkArgs,
    open: AtomicUsize,
    peak: AtomicUsize,
    messages: AtomicUsize,
    attempts: Mutex<HashMap<String, usize>>,
    first: Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
}

impl Sink {
    fn write_stats(&self) {
        let Some(dir) = &self.args.dir else { return };
        let stats = serde_json::json!({
            "messages": self.messages.load(Ordering::SeqCst),
            "connections": self.open.load(Ordering::SeqCst),
            "peak_connections": self.peak.load(Ordering::SeqCst),
        });
        let tmp = dir.join(format!("stats.json.{}", std::process::id()));
        if std::fs::write(&tmp, stats.to_string()).is_ok() {
            let _ = std::fs::rename(tmp, dir.join("stats.json"));
        }
    }

    fn rcpt_reply(&self, rcpt: &EnvelopeAddress) -> Reply {
        let user = rcpt.user().to_ascii_lowercase();
        if user.starts_with("tempfail") {
            return Reply::new(451, "4.3.0", format!("you said {user}"));
        }
        if user.starts_with("permfail") {
            return Reply::new(550, "5.1.1", format!("you said {user}"));
        }
        if let Some(rest) = user.strip_prefix("flaky") {
            let n: usize = rest.split('-').next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let mut attempts = self.attempts.lock();
            let seen = attempts.entry(rcpt.email().to_ascii_lowercase()).or_default();
            *seen += 1;
            if *seen <= n {
                return Reply::new(451, "4.3.0", format!("try again later ({} of {n})", *seen));
            }
        }
        Reply::new(250, "2.1.5", "OK")
    }

    fn store(&self, n: usize, ehlo: &str, from: &EnvelopeAddress, to: &[EnvelopeAddress], data: &[u8]) {
        let Some(dir) = &self.args.dir else { return };
        let env = serde_json::json!({"ehlo": ehlo, "from": from.email(), "to": to.iter().map(|t| t.email()).collect::<Vec<_>>()});
        let _ = std::fs::write(dir.join(format!("{n}.eml")), data);
        let _ = std::fs::write(dir.join(format!("{n}.json")), env.to_string());
    }
}

async fn session(sink: Arc<Sink>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut lines = LineSplitter::new(4096);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut from: Option<EnvelopeAddress> = None;
    let mut to: Vec<EnvelopeAddress> = vec![];
    let mut ehlo = String::new();
    Reply::plain(220, "sink.wasmta.test ESMTP sink").write_to(&mut out);
    loop {
        while let Some(line) = lines.next_line() {
            let Line::Complete(line) = line else {
                Reply::new(500, "5.5.2", "line too long").write_to(&mut out);
                continue;
            };
            let reply = match command::parse(&line) {
                Err(r) => r,
                Ok(Command::Ehlo(name)) => {
                    ehlo = name;
                    Reply::plain(250, "sink.wasmta.test\nPIPELINING\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES")
                }
                Ok(Command::Helo(name)) => {
                    ehlo = name;
                    Reply::plain(250, "sink.wasmta.test")
                }
                Ok(Command::MailFrom(a, _)) => {
                    from = Some(a);
                    to.clear();
                    Reply::new(250, "2.1.0", "OK")
                }
                Ok(Command::RcptTo(a, _)) => {
                    let r = sink.rcpt_reply(&a);
                    if r.code == 250 {
                        to.push(a);
                    }
                    r
                }
                Ok(Command::Data) if from.is_none() || to.is_empty() => Reply::new(554, "5.5.1", "no valid recipients"),
                Ok(Command::Data) => {
                    Reply::plain(354, "go ahead").write_to(&mut out);
                    stream.write_all(&out).await?;
                    out.clear();
                    let mut rx = DataReceiver::new(64 << 20, 1 << 20, LineEndings::Allow);
                    let mut pending = lines.take_rest();
                    let rest = loop {
                        if let Some(n) = rx.feed(&pending) {
                            break pending.split_off(n);
                        }
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        pending = buf[..n].to_vec();
                    };
                    lines.push(&rest);
                    match rx.finish() {
                        Ok(data) => {
                            sink.first.lock().get_or_insert_with(Instant::now);
                            let n = sink.messages.fetch_add(1, Ordering::SeqCst) + 1;
                            sink.store(n, &ehlo, from.as_ref().expect("sender"), &to, &data);
                            sink.write_stats();
                            if sink.args.exit_after.is_some_and(|limit| n >= limit) {
                                sink.done.notify_one();
                            }
                            from = None;
                            to.clear();
                            Reply::new(250, "2.0.0", format!("OK queued as {n}"))
                        }
                        Err(_) => Reply::new(552, "5.3.4", "message refused"),
                    }
                }
                Ok(Command::Rset) => {
                    from = None;
                    to.clear();
                    Reply::new(250, "2.0.0", "OK")
                }
                Ok(Command::Quit) => {
                    Reply::new(221, "2.0.0", "bye").write_to(&mut out);
                    stream.write_all(&out).await?;
                    return Ok(());
                }
                Ok(_) => Reply::new(250, "2.0.0", "OK"),
            };
            reply.write_to(&mut out);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        lines.push(&buf[..n]);
    }
}

/// Runs the sink.
pub async fn run(args: SinkArgs) -> ExitCode {
    if let Some(dir) = &args.dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: binding {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let sink = Arc::new(Sink {
        args,
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        messages: AtomicUsize::new(0),
        attempts: Mutex::new(HashMap::new()),
        first: Mutex::new(None),
        done: tokio::sync::Notify::new(),
    });
    sink.write_stats();
    eprintln!("sink listening on {addr}");
    let accept = {
        let sink = sink.clone();
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let now = sink.open.fetch_add(1, Ordering::SeqCst) + 1;
                    sink.peak.fetch_max(now, Ordering::SeqCst);
                    sink.write_stats();
                    let _ = session(sink.clone(), stream).await;
                    sink.open.fetch_sub(1, Ordering::SeqCst);
                    sink.write_stats();
                });
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = sink.done.notified() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let n = sink.messages.load(Ordering::SeqCst);
    let elapsed = sink.first.lock().map(|t| t.elapsed()).unwrap_or_default();
    println!(
        "sink: {n} messages, peak {} connections, {:.0} msg/s since the first message",
        sink.peak.load(Ordering::SeqCst),
        n as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    ExitCode::SUCCESS
}
