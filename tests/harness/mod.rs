//! Test harness: runs the real `wasmta` binary with a policy in a temporary directory,
//! waits for `initialization complete`, and talks SMTP to it over real sockets.

#![allow(dead_code)]

pub mod brokers;
pub mod cli;
pub mod dkim;
pub mod inproc;
pub mod plugins;
pub mod redis;
pub mod sink;
pub mod smtp;
pub mod tls;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub smtp: Vec<String>,
    pub http: Vec<String>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wasmta")
}

/// A fresh temporary directory that outlives the test for inspection on failure.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("wasmta-test").tempdir().expect("tempdir")
}

/// A policy with one listener on an ephemeral port, the spool and logs under `dir`, and
/// `extra` Lua appended at top level. `listener_opts` is Lua table content.
pub fn policy(dir: &Path, listener_opts: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{dir}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{dir}/logs' }}
  kumo.set_policy_timeout('2 seconds')
  -- tests never touch real DNS: unknown domains are NXDOMAIN
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{
    listen = '127.0.0.1:0',
    hostname = 'mx.test',
    {listener_opts}
  }}
end)
{extra}
"#,
        dir = dir.display()
    );
    let path = dir.join("init.lua");
    std::fs::write(&path, text).expect("write policy");
    path
}

/// Starts a server on [`policy`] with these listener options and extra Lua.
pub fn start(listener_opts: &str, extra: &str) -> (tempfile::TempDir, Server) {
    let dir = temp_dir();
    let p = policy(dir.path(), listener_opts, extra);
    let server = Server::start(dir.path(), &p);
    (dir, server)
}

/// Writes a whole policy text as `dir/init.lua`: `{d}` in it stands for `dir`, and `init`
/// gets an empty test resolver (tests never touch real DNS).
pub fn write_policy_text(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("init.lua");
    let text = text.replacen(
        "kumo.on('init', function()",
        "kumo.on('init', function()\n  kumo.dns.configure_test_resolver ''",
        1,
    );
    std::fs::write(&p, text.replace("{d}", &dir.display().to_string())).expect("write policy");
    p
}

/// Starts a server on a whole policy text; `{d}` in it stands for the test directory.
pub fn start_policy_text(text: &str) -> (tempfile::TempDir, Server) {
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), text);
    let server = Server::start(dir.path(), &p);
    (dir, server)
}

impl Server {
    /// Starts the server and waits until it is ready.
    pub fn start(dir: &Path, policy: &Path) -> Server {
        Server::start_args(dir, policy, &[])
    }

    /// Starts the server with extra `serve` arguments.
    pub fn start_args(dir: &Path, policy: &Path, args: &[&str]) -> Server {
        Server::start_wrapped(dir, policy, args, &[])
    }

    /// Starts the server through `wrapper` (a command that ends by exec'ing its
    /// arguments, e.g. `unshare -m sh -c '...; exec "$@"' sh`), so its pid is the server's.
    pub fn start_wrapped(dir: &Path, policy: &Path, args: &[&str], wrapper: &[&str]) -> Server {
        Server::start_full(dir, policy, args, wrapper, &[])
    }

    /// Starts the server with extra environment variables.
    pub fn start_env(dir: &Path, policy: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_full(dir, policy, &[], &[], env)
    }

    fn start_full(dir: &Path, policy: &Path, args: &[&str], wrapper: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let mut child = command
            .args(["serve", "--policy"])
            .arg(policy)
            .args(args)
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmta");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("initialization complete")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let ok = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        let log = lines.lock().unwrap().clone();
        assert!(ok, "server did not start:\n{}", log.join("\n"));
        let grab = |tag: &str| -> Vec<String> {
            log.iter().filter_map(|l| l.split(tag).nth(1)).map(|a| a.trim().to_string()).collect()
        };
        Server {
            smtp: grab("esmtp listener on "),
            http: grab("http listener on "),
            child,
            dir: dir.to_path_buf(),
            stderr: lines,
        }
    }

    /// The first SMTP listener's address.
    pub fn addr(&self) -> &str {
        &self.smtp[0]
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until stderr has a line containing `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// The value of a Prometheus series (`name{labels}` exactly as rendered) from the first
    /// HTTP listener's `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(&self.http[0], "/metrics");
        body.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every log record written under `dir/logs`, decoding live segments up to their last
/// flushed block.
pub fn log_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir.join("logs")) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return vec![],
    };
    files.sort();
    let mut out = vec![];
    for f in files {
        let Ok(file) = std::fs::File::open(&f) else {
            continue;
        };
        let Ok(mut dec) = zstd::Decoder::new(file) else {
            continue;
        };
        let mut text = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match std::io::Read::read(&mut dec, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        for line in text.split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice(line) {
                out.push(v);
            }
        }
    }
    out
}

/// How many records of each type the logs hold.
pub fn record_counts(dir: &Path) -> std::collections::HashMap<String, usize> {
    let mut c = std::collections::HashMap::new();
    for r in log_records(dir) {
        *c.entry(r["type"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    c
}

/// Waits until the logs hold a record matching `pred`.
pub fn wait_for_record(
    dir: &Path,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = log_records(dir).into_iter().find(|r| pred(r)) {
            return Some(r);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The messages in a stopped server's spool, read through the real spool code.
pub fn spooled(dir: &Path) -> Vec<wasmta::message::Message> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_spool, startup) = wasmta::spool::Spool::open(&[], &dir.join("spool")).expect("open spool");
        startup.messages().map(|m| m.expect("a readable envelope")).collect()
    })
}

/// A plain HTTP/1.1 GET; returns the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, &[])
}

/// An HTTP/1.1 request with an optional JSON body and extra headers.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read http");
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
