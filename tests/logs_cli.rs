//! `wasmta logs` on a running server's log directory (the live segment included, which
//! `zstdcat` cannot read), one message's history, `--follow`, and `set-log-filter`; with
//! the mistakes an operator makes next to each.

mod harness;

use harness::cli::{cli, text};
use harness::sink::{Sink, relay_policy};
use harness::smtp::{Client, ids};
use harness::{Server, log_records, wait_for_record};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn logs(d: &std::path::Path, args: &[&str]) -> Output {
    Command::new(harness::binary()).arg("logs").arg("--dir").arg(d.join("logs")).args(args).output().unwrap()
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn logs_reads_the_live_segment_filters_and_follows() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = relay_policy(&sink.addr, "", "", "retry_interval = '1 hour'");
    let path = harness::write_policy_text(d, &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let delivered = ids(&c.send_mail("a@s.example", &["r@dest.example"], "Subject: one\r\n\r\nx"))[0].clone();
    let deferred = ids(&c.send_mail("a@s.example", &["tempfail@dest.example"], "Subject: two\r\n\r\nx"))[0].clone();
    assert!(wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "Delivery").is_some());
    assert!(wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "TransientFailure").is_some());

    // the segment being written: zstdcat refuses it, `wasmta logs` reads every record
    let segment = std::fs::read_dir(d.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("20"))
        .unwrap();
    if let Ok(z) = Command::new("zstdcat").arg(&segment).output() {
        assert!(!z.status.success(), "zstdcat reads an unfinished segment? then this claim is wrong");
    }
    let all = logs(d, &["--json"]);
    assert!(all.status.success(), "{}", text(&all));
    assert_eq!(lines(&all).len(), log_records(d).len());
    assert_eq!(lines(&all).len(), 4, "{}", text(&all));

    // one message's history in order, readable
    let history = lines(&logs(d, &["--id", &delivered]));
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains("Reception") && history[1].contains("Delivery"), "{history:?}");
    assert!(history[1].contains("<r@dest.example>") && history[1].contains(" 250 "), "{history:?}");
    let failures = lines(&logs(d, &["--type", "transientfailure"]));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains(&deferred) && failures[0].contains(" 4"), "{failures:?}");
    assert_eq!(lines(&logs(d, &["--since", "1h"])).len(), 4);
    assert_eq!(lines(&logs(d, &["--since", "2099-01-01T00:00:00Z"])).len(), 0);

    // --follow prints what is written after it started
    let mut follow = Command::new(harness::binary())
        .args(["logs", "--follow", "--type", "Delivery", "--dir"])
        .arg(d.join("logs"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // the existing Delivery first
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("the existing record");
    assert!(first.contains(&delivered), "{first}");
    let later = ids(&c.send_mail("a@s.example", &["r2@dest.example"], "Subject: three\r\n\r\nx"))[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(&later) => break true,
            _ if Instant::now() > deadline => break false,
            _ => {}
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "--follow printed the new Delivery");

    // mistakes: a type that does not exist, an id with no records, a wrong --since, a
    // missing directory, a directory with no segments
    let out = logs(d, &["--type", "Delivered"]);
    assert!(!out.status.success() && text(&out).contains("TransientFailure"), "lists the types: {}", text(&out));
    let out = logs(d, &["--id", "0000aaaa"]);
    assert!(out.status.success() && text(&out).contains("no records for 0000aaaa"), "{}", text(&out));
    let out = Command::new(harness::binary()).args(["logs", "--dir"]).arg(d.join("spool")).output().unwrap();
    assert!(text(&out).contains("not a log segment"), "{}", text(&out));
    let empty = harness::temp_dir();
    let out = Command::new(harness::binary()).args(["logs", "--dir"]).arg(empty.path()).output().unwrap();
    assert!(text(&out).contains("no log segments"), "{}", text(&out));
    let out = logs(d, &["--since", "yesterday"]);
    assert!(!out.status.success() && text(&out).contains("yesterday"), "{}", text(&out));
    let out = Command::new(harness::binary()).args(["logs", "--dir", "/nonexistent/logs"]).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("/nonexistent/logs"), "{}", text(&out));

    // the diagnostic log filter changes live; a bad one is refused and the old one stays
    let out = cli(&server, &["set-log-filter", ""]);
    assert!(!out.status.success() && text(&out).contains("silence"), "{}", text(&out));
    let out = cli(&server, &["set-log-filter", "wasmta=loud"]);
    assert!(!out.status.success() && text(&out).contains("loud"), "{}", text(&out));
    assert!(!server.stderr_text().contains(" DEBUG "), "info by default");
    let out = cli(&server, &["set-log-filter", "info,wasmta::queue=trace"]);
    assert!(out.status.success(), "{}", text(&out));
    c.send_mail("a@s.example", &["r3@dest.example"], "Subject: four\r\n\r\nx");
    assert!(server.wait_for_stderr(" TRACE ", Duration::from_secs(10)), "{}", server.stderr_text());
    server.stop();
}
