//! What operators do by habit or by mistake, against the real binary: a second start on
//! the same spool, a bounce with no scope, cancelling a suspension, a typo in a throttle,
//! reading the queue gauges during a backlog, piping a report into `head`. None of it may
//! lose, stall or silently change mail.

mod harness;

use harness::cli::{cli, json, text};
use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, http_get, record_counts, spooled, temp_dir, wait_for_record};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A policy as KumoMTA's documentation writes one, relaying every queue to `sink`.
fn kumo_policy(spool: &Path, logs: &Path, sink: &str, path_opts: &str) -> String {
    format!(
        r#"local kumo = require 'kumo'

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{spool}' }}
  kumo.configure_local_logs {{ log_dir = '{logs}' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1 hour',
    protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }},
  }}
end)

kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled', {path_opts} }}
end)
"#,
        spool = spool.display(),
        logs = logs.display(),
    )
}

/// Writes the policy into `dir/init.lua`.
fn write_policy(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("init.lua");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts `wasmta serve` on a policy and waits for it to exit (it must not start).
fn refused_start(dir: &Path, policy: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(harness::binary())
        .args(["serve", "--policy"])
        .arg(policy)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a second server on the same directory kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_server_on_the_same_spool_or_log_directory_is_refused_and_nothing_is_lost() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (spool, logs) = (d.path().join("spool"), d.path().join("logs"));
    let a = temp_dir();
    let policy = write_policy(a.path(), &kumo_policy(&spool, &logs, &sink.addr, ""));
    let first = Server::start(a.path(), &policy);
    let mut c = Client::ehlo(first.addr());
    for i in 0..10 {
        // the sink tempfails these: they stay in the spool for an hour
        assert_eq!(
            c.send_mail("a@s.example", &[&format!("tempfail{i}@dest.example")], "Subject: x\r\n\r\nx").code,
            250
        );
    }
    let pid = first.child.id();

    // the same spool (other ports, other logs): refused at once, naming the directory and the holder
    let b = temp_dir();
    let policy_b = write_policy(b.path(), &kumo_policy(&spool, &b.path().join("logs"), &sink.addr, ""));
    let (code, err, took) = refused_start(b.path(), &policy_b);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&spool.display().to_string()) && err.contains(&format!("pid {pid}")), "{err}");
    assert!(took < Duration::from_secs(15), "refused after {took:?}");
    // the same log directory with its own spool: refused too
    let policy_c = write_policy(b.path(), &kumo_policy(&b.path().join("spool"), &logs, &sink.addr, ""));
    let (code, err, _) = refused_start(b.path(), &policy_c);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&logs.display().to_string()) && err.contains(&format!("pid {pid}")), "{err}");

    // the first server still takes mail, and a crash leaves a lock file that does not block a restart
    assert_eq!(c.send_mail("a@s.example", &["tempfail10@dest.example"], "Subject: x\r\n\r\nx").code, 250);
    first.kill9();
    assert!(spool.join(".lock").exists(), "the stale lock file is still there");
    let again = Server::start(a.path(), &policy);
    assert!(again.wait_for_stderr("11 message(s) enumerated", Duration::from_secs(10)), "{}", again.stderr_text());
    let log = again.stderr.clone();
    assert!(again.stop().success(), "{}", log.lock().unwrap().join("\n"));
    assert_eq!(spooled(d.path()).len(), 11, "every acknowledged message is there");
}

#[test]
fn cli_bounce_suspend_and_rebind_without_a_scope_refuse_unless_everything() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let policy = write_policy(d.path(), &kumo_policy(&d.path().join("spool"), &d.path().join("logs"), &sink.addr, ""));
    let server = Server::start(d.path(), &policy);
    let mut c = Client::ehlo(server.addr());
    for i in 0..3 {
        assert_eq!(
            c.send_mail("a@s.example", &[&format!("tempfail{i}@dest.example")], "Subject: x\r\n\r\nx").code,
            250
        );
    }
    assert!(
        wait_for_record(d.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure"
            && r["recipient"] == "tempfail2@dest.example")
        .is_some()
    );
    for cmd in ["bounce", "suspend", "rebind"] {
        let out = cli(&server, &[cmd, "--reason", "oops"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        assert!(text(&out).contains("--everything"), "{cmd}: {}", text(&out));
        let out = cli(&server, &[cmd, "--reason", "oops", "--everything", "--domain", "dest.example"]);
        assert_eq!(out.status.code(), Some(2), "--everything with a scope is a usage error: {}", text(&out));
    }
    let out = cli(&server, &["rebind", "--reason", "x", "--domain", "dest.example", "--duration", "5m"]);
    assert_eq!(out.status.code(), Some(2), "rebind takes no --duration: {}", text(&out));
    assert_eq!(record_counts(d.path()).get("AdminBounce"), None, "nothing was bounced");
    assert_eq!(server.metric("total_messages_fail"), Some(0.0));

    let out = cli(&server, &["bounce", "--reason", "purge", "--everything", "--duration", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["total_bounced"], 3);
    assert_eq!(record_counts(d.path()).get("AdminBounce"), Some(&3));
    assert_eq!(server.metric("total_messages_fail"), Some(3.0), "admin bounces count as failures");
}

#[test]
fn cancelling_a_hold_releases_its_mail_at_once() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let policy = write_policy(d.path(), &kumo_policy(&d.path().join("spool"), &d.path().join("logs"), &sink.addr, ""));
    let server = Server::start(d.path(), &policy);
    let mut c = Client::ehlo(server.addr());

    // a scheduled-queue suspension, cancelled after a few seconds of a 10-minute hold
    let out = cli(&server, &["suspend", "--domain", "held.example", "--reason", "maint", "--duration", "10m"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = json(&out)["id"].as_str().unwrap().to_string();
    assert_eq!(c.send_mail("a@s.example", &["r@held.example"], "Subject: held\r\n\r\nx").code, 250);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 0, "held while suspended");
    let listed = cli(&server, &["suspend-list"]);
    let remaining = json(&listed)[0]["duration"].as_str().unwrap().to_string();
    assert!(!remaining.contains("ms") && !remaining.contains("ns"), "whole seconds: {remaining}");
    let cancelled = Instant::now();
    assert!(cli(&server, &["suspend-cancel", "--id", &id]).status.success());
    assert!(sink.wait_for(1, Duration::from_secs(10)), "delivered after the cancel");
    assert!(cancelled.elapsed() < Duration::from_secs(5), "released at once: {:?}", cancelled.elapsed());

    // a ready-queue suspension
    let name = format!("unspecified->mx_list:{}@smtp_client", sink.addr);
    let out = cli(&server, &["suspend-ready-q", "--name", &name, "--reason", "maint", "--duration", "10m"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["queue_exists"], true, "{}", text(&out));
    let id = json(&out)["id"].as_str().unwrap().to_string();
    assert_eq!(c.send_mail("a@s.example", &["r@held.example"], "Subject: held\r\n\r\nx").code, 250);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 1, "held while the ready queue is suspended");
    assert!(cli(&server, &["suspend-ready-q-cancel", "--id", &id]).status.success());
    assert!(sink.wait_for(2, Duration::from_secs(5)), "delivered after the cancel");
    let out = cli(&server, &["suspend-ready-q", "--name", "nope", "--reason", "x"]);
    assert!(!out.status.success() && text(&out).contains("source->site@protocol"), "{}", text(&out));

    // a bounce hold stops bouncing new mail the moment it is cancelled
    let out = cli(&server, &["bounce", "--domain", "held.example", "--reason", "bad list", "--duration", "10m"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = json(&out)["id"].as_str().unwrap().to_string();
    assert_eq!(c.send_mail("a@s.example", &["r@held.example"], "Subject: b\r\n\r\nx").code, 250);
    assert!(wait_for_record(d.path(), Duration::from_secs(10), |r| r["type"] == "AdminBounce").is_some());
    assert!(cli(&server, &["bounce-cancel", "--id", &id]).status.success());
    assert_eq!(c.send_mail("a@s.example", &["r@held.example"], "Subject: ok\r\n\r\nx").code, 250);
    assert!(sink.wait_for(3, Duration::from_secs(5)), "delivered once the bounce is cancelled");
}

#[test]
fn invalid_throttles_are_errors_in_check_and_tempfail_the_event_at_run_time() {
    let d = temp_dir();
    let shaping = d.path().join("shaping.toml");
    std::fs::write(
        &shaping,
        "[\"default\"]\nconnection_limit = 2\n\n[\"dest.example\"]\nmax_message_rate = \"banana\"\n",
    )
    .unwrap();
    let out = Command::new(harness::binary()).args(["shaping", "check"]).arg(&shaping).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expect = format!("{}:5: dest.example: max_message_rate: invalid throttle \"banana\"", shaping.display());
    assert!(text(&out).contains(&expect), "{}", text(&out));

    // the same file through the shaping helper: `wasmta check` refuses the policy
    let policy = format!(
        "{}\nlocal shaping = require 'policy-extras.shaping'\nlocal get_path = shaping:setup {{ '{}' }}\n",
        kumo_policy(&d.path().join("spool"), &d.path().join("logs"), "127.0.0.1:1", ""),
        shaping.display()
    )
    .replace("kumo.on('get_egress_path_config'", "kumo.on('unused_egress_path_config'");
    let p = write_policy(d.path(), &policy);
    let out = Command::new(harness::binary()).args(["check", "--policy"]).arg(&p).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("max_message_rate") && text(&out).contains("banana"), "{}", text(&out));

    // a listen address `serve` would refuse is refused by `check`
    let p = write_policy(
        d.path(),
        &kumo_policy(&d.path().join("spool"), &d.path().join("logs"), "127.0.0.1:1", "")
            .replace("listen = '127.0.0.1:0', hostname", "listen = '127.0.0.1:99999', hostname"),
    );
    let out = Command::new(harness::binary()).args(["check", "--policy"]).arg(&p).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("init.lua:") && text(&out).contains("listen: port \"99999\""), "{}", text(&out));

    // at run time a handler's bad throttle fails its event: TransientFailure naming the key
    let sink = Sink::start(d.path());
    let policy =
        kumo_policy(&d.path().join("spool"), &d.path().join("logs"), &sink.addr, "max_message_rate = '100/fortnight'");
    let p = write_policy(d.path(), &policy);
    let server = Server::start(d.path(), &p);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: x\r\n\r\nx").code, 250);
    let r = wait_for_record(d.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
    let content = r["response"]["content"].as_str().unwrap();
    assert!(content.contains("max_message_rate") && content.contains("100/fortnight"), "{r}");
    assert_eq!(sink.count(), 0, "never delivered unthrottled");
}

/// A destination that answers everything but the end of DATA: deliveries hang there.
fn stalling_destination() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let _ = stream.write_all(b"220 stall.test\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let reply: &[u8] = if in_data {
                        if line == ".\r\n" {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                        b""
                    } else if line.starts_with("EHLO") {
                        b"250-stall.test\r\n250 PIPELINING\r\n"
                    } else if line.starts_with("DATA") {
                        in_data = true;
                        b"354 go\r\n"
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = stream.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn queue_gauges_add_up_to_every_message_held_during_a_backlog() {
    let d = temp_dir();
    let dest = stalling_destination();
    let policy = kumo_policy(
        &d.path().join("spool"),
        &d.path().join("logs"),
        &dest,
        "connection_limit = 2, max_ready = 5, enable_pipelining = false, data_dot_timeout = '1 hour'",
    );
    let server = Server::start(d.path(), &write_policy(d.path(), &policy));
    let mut c = Client::ehlo(server.addr());
    for i in 0..30 {
        assert_eq!(c.send_mail("a@s.example", &[&format!("r{i}@dest.example")], "Subject: x\r\n\r\nx").code, 250);
    }
    let gauge = |m: &serde_json::Value, name: &str| -> i64 {
        match &m[name]["value"] {
            serde_json::Value::Number(n) => n.as_i64().unwrap(),
            serde_json::Value::Object(by_label) => {
                by_label.values().flat_map(|v| v.as_object().unwrap().values()).map(|n| n.as_i64().unwrap()).sum()
            }
            _ => 0,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (_, body) = http_get(&server.http[0], "/metrics.json");
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        if gauge(&m, "delivering_count") == 2 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let parts = ["scheduled_count", "ready_count", "transit_count", "delivering_count"].map(|n| gauge(&m, n));
    assert_eq!(parts[3], 2, "two connections hang at the end of DATA: {parts:?}");
    assert_eq!(parts[1], 5, "the ready queue is full: {parts:?}");
    assert_eq!(parts.iter().sum::<i64>(), 30, "every undelivered message is in one gauge: {parts:?}");
    assert_eq!(gauge(&m, "message_count"), 30);
    let out = cli(&server, &["queue-summary"]);
    assert!(text(&out).contains("in delivery: 2") && text(&out).contains("messages in all: 30"), "{}", text(&out));
}

#[test]
fn metrics_exist_at_zero_from_the_start_and_json_is_kumomtas_shape() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let policy = write_policy(d.path(), &kumo_policy(&d.path().join("spool"), &d.path().join("logs"), &sink.addr, ""));
    let server = Server::start(d.path(), &policy);
    let (_, text) = http_get(&server.http[0], "/metrics");
    for series in [
        "total_messages_received 0",
        "total_messages_delivered 0",
        "total_messages_fail 0",
        "total_messages_transfail 0",
        "connection_count{service=\"esmtp_listener\"} 0",
        "connection_count{service=\"smtp_client\"} 0",
        "message_count 0",
    ] {
        assert!(text.lines().any(|l| l == series), "missing {series:?} in:\n{text}");
    }
    assert!(text.contains("# TYPE scheduled_count gauge") && text.contains("# TYPE ready_count gauge"), "{text}");

    let mut c = Client::ehlo(server.addr());
    assert_eq!(server.metric("connection_count{service=\"esmtp_listener\"}"), Some(1.0), "this session");
    assert_eq!(c.send_mail("a@s.example", &["tempfail@dest.example"], "Subject: x\r\n\r\nx").code, 250);
    assert!(wait_for_record(d.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").is_some());
    // the record is written before the message is stored and back in its scheduled queue
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (body, m) = loop {
        let (_, body) = http_get(&server.http[0], "/metrics.json");
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        if m["scheduled_count"]["value"]["queue"]["dest.example"] == 1 || std::time::Instant::now() > deadline {
            break (body, m);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(m["scheduled_count"]["value"], serde_json::json!({"queue": {"dest.example": 1}}), "{body}");
    assert_eq!(m["scheduled_count"]["type"], "gauge");
    assert_eq!(m["total_messages_transfail"]["value"], 1);
    assert_eq!(m["total_messages_transfail"]["type"], "counter");
    drop(c);
}

#[test]
fn cli_paper_cuts() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let policy = write_policy(d.path(), &kumo_policy(&d.path().join("spool"), &d.path().join("logs"), &sink.addr, ""));
    let server = Server::start(d.path(), &policy);
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["tempfail@dest.example"], "Subject: x\r\n\r\nx");
    let id = harness::smtp::ids(&r)[0].clone();
    assert!(wait_for_record(d.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").is_some());

    // the id as a positional argument
    let out = cli(&server, &["inspect-message", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["message"]["recipients"][0], "tempfail@dest.example");

    // a report piped into a reader that goes away ends quietly (no panic)
    let mut child = Command::new(harness::binary())
        .args(["top", "--interval", "1ms", "--endpoint", &format!("http://{}", server.http[0])])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");

    // `top` on a terminal quits on `q` (util-linux `script` gives it a pseudo-terminal)
    if Command::new("script").arg("--version").output().is_ok() {
        let command = format!("{} top --interval 200ms --endpoint http://{}", harness::binary(), server.http[0]);
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = [0u8; 256];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut seen).unwrap();
        assert!(String::from_utf8_lossy(&seen).contains("q quits"), "{}", String::from_utf8_lossy(&seen));
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"q").unwrap();
        let asked = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(asked.elapsed() < Duration::from_secs(5), "top ignored q");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    } else {
        eprintln!("skipped the `top` keypress check: util-linux `script` is not installed");
    }
}

/// A stop (SIGTERM) while a delivery is in flight lets it finish, within the shutdown
/// deadline, before the log writers close: its Delivery record is written, never dropped
/// with "a record arrived after its writer stopped".
#[test]
fn a_stop_during_a_delivery_logs_its_outcome() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = listener.local_addr().unwrap().to_string();
    let in_data = std::sync::Arc::new(AtomicBool::new(false));
    let seen = in_data.clone();
    // a destination that takes two seconds to answer the end of DATA
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut out = tcp.try_clone().unwrap();
                let mut r = BufReader::new(tcp);
                let _ = out.write_all(b"220 slow.test ESMTP\r\n");
                let mut in_body = false;
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if in_body {
                        if l != ".\r\n" {
                            continue;
                        }
                        in_body = false;
                        seen.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_secs(2));
                        b"250 2.0.0 taken slowly\r\n"
                    } else if l.to_ascii_uppercase().starts_with("DATA") {
                        in_body = true;
                        b"354 go\r\n"
                    } else if l.to_ascii_uppercase().starts_with("QUIT") {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = out.write_all(reply);
                }
            });
        }
    });
    let dir = temp_dir();
    let p = dir.path().join("init.lua");
    std::fs::write(&p, kumo_policy(&dir.path().join("spool"), &dir.path().join("logs"), &dest, "")).unwrap();
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: slow\r\n\r\nx\r\n").code, 250);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_data.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the delivery never reached the end of DATA");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = {
        let s = server.stderr.clone();
        assert!(server.stop().success());
        s.lock().unwrap().join("\n")
    };
    assert!(!stderr.contains("after its writer stopped"), "{stderr}");
    let delivered = harness::log_records(dir.path()).into_iter().find(|r| r["type"] == "Delivery");
    assert!(delivered.is_some(), "the in-flight delivery's record was written: {stderr}");
}
