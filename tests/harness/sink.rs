//! The `wasmta sink` process: a real SMTP server that stores what it receives.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sink {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

/// A message the sink received.
pub struct Received {
    pub ehlo: String,
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    pub at: std::time::SystemTime,
}

impl Sink {
    pub fn start(dir: &Path) -> Sink {
        let dir = dir.join("sink");
        let mut child = Command::new(super::binary())
            .args(["sink", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sink");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("sink output").expect("line");
            if let Some(a) = line.strip_prefix("sink listening on ") {
                break a.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Sink { child, addr, dir }
    }

    pub fn stats(&self) -> serde_json::Value {
        std::fs::read(self.dir.join("stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.stats()["messages"].as_u64().unwrap_or(0) as usize
    }

    /// Waits until the sink holds at least `n` messages.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn messages(&self) -> Vec<Received> {
        let mut out = vec![];
        for n in 1..=self.count() {
            let eml = self.dir.join(format!("{n}.eml"));
            let Ok(data) = std::fs::read(&eml) else { continue };
            let env: serde_json::Value =
                serde_json::from_slice(&std::fs::read(self.dir.join(format!("{n}.json"))).unwrap()).unwrap();
            out.push(Received {
                ehlo: env["ehlo"].as_str().unwrap_or_default().to_string(),
                from: env["from"].as_str().unwrap().to_string(),
                to: env["to"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
                data,
                at: std::fs::metadata(&eml).unwrap().modified().unwrap(),
            });
        }
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lua that routes every queue to `sink` with these extra queue and path options.
pub fn relay_to(sink: &str, queue_opts: &str, path_opts: &str) -> String {
    format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }}, {queue_opts} }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ enable_tls = 'Disabled', {path_opts} }}
end)
"#
    )
}

/// A whole policy as KumoMTA's documentation writes one, for `write_policy_text` (`{d}`
/// is the test directory): spool and logs under `{d}`, an SMTP listener relaying for
/// 127.0.0.1 with `listener_opts` added, an HTTP listener, `init_extra` at the end of
/// `init`, and every queue routed to `sink` with `queue_opts`.
pub fn relay_policy(sink: &str, listener_opts: &str, init_extra: &str, queue_opts: &str) -> String {
    format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }}, {listener_opts} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  {init_extra}
end)
{relay}"#,
        relay = relay_to(sink, queue_opts, "")
    )
}
