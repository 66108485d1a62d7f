//! Queues at scale: a waiting message keeps its envelope in memory and its body in the
//! spool only; a restart enumerates envelopes without reading bodies into memory; a
//! backlog drains with every body intact across a kill -9. The server is the real binary
//! fed by `wasmta load` and plain SMTP; memory is its resident set from /proc.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, http_request, temp_dir, write_policy_text};
use std::time::{Duration, Instant};

fn policy(sink: &str, path_opts: &str) -> String {
    format!(
        r#"
local kumo = require 'kumo'

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)

kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ enable_tls = 'Disabled', {path_opts} }}
end)
"#
    )
}

fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn suspend(server: &Server, domain: &str) {
    let body = format!(r#"{{"domain": "{domain}", "reason": "provider block", "duration": "1h"}}"#);
    let (code, text) = http_request(&server.http[0], "POST", "/api/admin/suspend/v1", Some(&body), &[]);
    assert_eq!(code, 200, "{text}");
}

/// 20,000 waiting messages of 32 KiB (640 MB of bodies) must not live in memory: before
/// bodies left memory the server grew by ~700 MB here. A restart must enumerate them
/// without reading their bodies into memory either.
#[test]
fn waiting_bodies_stay_in_the_spool_and_restart_reads_none() {
    const N: usize = 20_000;
    const LIMIT_KIB: u64 = 60 * 1024;
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &policy(&sink.addr, ""));
    let server = Server::start(dir.path(), &p);
    suspend(&server, "example.com");
    let before = rss_kib(&server);
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "20", "--messages", &N.to_string(), "--size", "32768"])
        .args(["--target", server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 0, "suspended");
    let grown = rss_kib(&server).saturating_sub(before);
    assert!(grown < LIMIT_KIB, "{N} waiting 32 KiB messages grew the server by {grown} KiB");

    // a crash, then a start on the full spool: envelopes only
    server.kill9();
    let fresh_dir = temp_dir();
    let fresh = Server::start(fresh_dir.path(), &write_policy_text(fresh_dir.path(), &policy(&sink.addr, "")));
    let baseline = rss_kib(&fresh);
    drop(fresh);
    // the provider still throttles us after the restart: one connection an hour (to a
    // port nobody listens on), so the backlog waits while the server is measured
    let p = write_policy_text(dir.path(), &policy("127.0.0.1:9", "max_connection_rate = '1/h'"));
    let started = Instant::now();
    let server = Server::start(dir.path(), &p);
    assert!(
        server.wait_for_stderr(&format!("{N} message(s) enumerated"), Duration::from_secs(60)),
        "{}",
        server.stderr_text()
    );
    let after_restart = rss_kib(&server).saturating_sub(baseline);
    assert!(after_restart < LIMIT_KIB, "restart with {N} queued took {after_restart} KiB beyond a fresh start");
    eprintln!(
        "{N} x 32 KiB waiting: +{grown} KiB ({} B/message); restart in {:?}: +{after_restart} KiB",
        grown * 1024 / N as u64,
        started.elapsed()
    );
}

/// A backlog read back from the spool after a crash drains with every body byte for
/// byte, and a kill -9 in the middle of the drain loses nothing.
#[test]
fn kill_9_during_a_backlog_drain_loses_nothing_and_bodies_arrive_intact() {
    const N: usize = 600;
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let text = policy(&sink.addr, "max_message_rate = '100/s,max_burst=1'");
    let p = write_policy_text(dir.path(), &text);
    let server = Server::start(dir.path(), &p);
    suspend(&server, "dest.example");
    let mut expected = std::collections::HashMap::new();
    let mut c = Client::ehlo(server.addr());
    for i in 0..N {
        let rcpt = format!("r{i}@dest.example");
        // distinct bodies of different sizes: a body paired with the wrong message shows
        let line = format!("message {i} of the backlog {}\r\n", "x".repeat(i % 70));
        let body = format!("Subject: backlog {i}\r\n\r\n{}", line.repeat(20 + i % 50));
        assert_eq!(c.send_mail("a@s.example", &[&rcpt], &body).code, 250);
        expected.insert(rcpt, body);
    }
    drop(c);
    // the suspension lives in memory: the restart starts the drain from the spool
    server.kill9();
    let server = Server::start(dir.path(), &p);
    assert!(sink.wait_for(100, Duration::from_secs(30)), "draining: {}", sink.count());
    server.kill9();
    let mid = sink.count();
    assert!(mid < N, "the crash happened mid-drain ({mid} delivered)");
    let server = Server::start(dir.path(), &p);
    // the sink counts deliveries, and a crash repeats the few in flight: wait for N
    // distinct recipients, not N deliveries
    let distinct = || sink.messages().iter().map(|m| m.to[0].clone()).collect::<std::collections::HashSet<_>>().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct() < N {
        assert!(Instant::now() < deadline, "only {} of {N} after the restart", distinct());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.stop().success());
    let got = sink.messages();
    let mut seen = std::collections::HashSet::new();
    for m in &got {
        let rcpt = &m.to[0];
        let want = expected.get(rcpt).unwrap_or_else(|| panic!("unexpected {rcpt}"));
        let text = String::from_utf8_lossy(&m.data);
        // the client ends DATA with CRLF . CRLF after the text: the text and that CRLF arrive
        let want = format!("{want}\r\n");
        assert!(text.ends_with(&want), "{rcpt}: the body that arrived is not the one accepted:\n{text}");
        seen.insert(rcpt.clone());
    }
    assert_eq!(seen.len(), N, "every accepted message arrived");
    // at 100/s with one message per connection in flight, a crash repeats a few at most
    assert!(got.len() <= N + 40, "duplicates bounded by what was in flight: {}", got.len());
}

/// A waiting message whose body is corrupted on disk while the server is stopped is never
/// delivered: the background check quarantines it and its attempt bounces (a Bounce
/// record the sender's systems see), while the others are delivered.
#[test]
fn a_body_corrupted_at_rest_bounces_and_is_never_delivered() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &policy(&sink.addr, ""));
    let server = Server::start(dir.path(), &p);
    suspend(&server, "dest.example");
    let mut c = Client::ehlo(server.addr());
    let good = format!("Subject: good\r\n\r\n{}", "intact line\r\n".repeat(200));
    let bad = format!("Subject: bad\r\n\r\n{}", "DAMAGED-LATER line\r\n".repeat(200));
    assert_eq!(c.send_mail("a@s.example", &["good@dest.example"], &good).code, 250);
    assert_eq!(c.send_mail("a@s.example", &["bad@dest.example"], &bad).code, 250);
    drop(c);
    assert!(server.stop().success());
    let spool = dir.path().join("spool");
    let mut flipped = false;
    for e in std::fs::read_dir(&spool).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(12).rposition(|w| w == b"DAMAGED-LATE") {
            bytes[at] ^= 0x20;
            std::fs::write(&path, bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "found the body to damage");
    // the suspension does not survive the restart: both are attempted
    let server = Server::start(dir.path(), &p);
    let bounce = harness::wait_for_record(dir.path(), Duration::from_secs(20), |r| {
        r["type"] == "Bounce" && r["recipient"] == "bad@dest.example"
    })
    .expect("a Bounce record for the damaged message");
    assert_eq!(bounce["response"]["code"], 550, "{bounce}");
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<String> = sink.messages().into_iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(got, vec!["good@dest.example".to_string()], "the damaged message is never delivered");
    assert!(std::fs::read_dir(spool.join("corrupt")).unwrap().count() >= 1, "quarantined for inspection");
    assert!(server.stop().success());
    assert!(harness::spooled(dir.path()).is_empty(), "nothing left queued");
}
