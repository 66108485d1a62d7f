//! Per-message operator commands against the real binary, as a Postfix or kcli operator
//! would use them: `queue-list` (mailq), `message hold|release|requeue|bounce|delete`
//! (postsuper), ids piped on standard input, `qshape`, and the mistakes next to them.

mod harness;

use harness::cli::{cli, cli_stdin, json, text};
use harness::sink::{Sink, relay_policy};
use harness::smtp::{Client, ids};
use harness::{Server, http_get, record_counts, wait_for_record};
use std::time::Duration;

fn policy(d: &std::path::Path, sink: &str) -> std::path::PathBuf {
    policy_with(d, sink, "")
}

fn policy_with(d: &std::path::Path, sink: &str, extra: &str) -> std::path::PathBuf {
    let text = relay_policy(sink, "", "", "retry_interval = '1 hour'") + extra;
    harness::write_policy_text(d, &text)
}

/// The listing's messages by id.
fn listed(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["queue-list", "--json"];
    all.extend_from_slice(args);
    let out = cli(server, &all);
    assert!(out.status.success(), "{}", text(&out));
    json(&out)
}

fn entry<'a>(listing: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    listing["messages"].as_array().unwrap().iter().find(|m| m["id"] == id)
}

fn transient_failures(d: &std::path::Path) -> usize {
    record_counts(d).get("TransientFailure").copied().unwrap_or(0)
}

fn wait_failures(d: &std::path::Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while transient_failures(d) < n {
        assert!(std::time::Instant::now() < deadline, "{} of {n} TransientFailure records", transient_failures(d));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn list_hold_release_requeue_bounce_and_delete_by_id() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let path = policy(d, &sink.addr);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let mut sent = vec![];
    // the sink tempfails these: they wait an hour for their next attempt
    for (i, domain) in
        ["dest.example", "dest.example", "dest.example", "dest.example", "other.example", "other.example"]
            .iter()
            .enumerate()
    {
        let r = c.send_mail("a@s.example", &[&format!("tempfail{i}@{domain}")], "Subject: x\r\n\r\nx");
        assert_eq!(r.code, 250);
        sent.push(ids(&r)[0].clone());
    }
    wait_failures(d, 6);

    let all = listed(&server, &[]);
    assert_eq!(all["matched"], 6, "{all}");
    let first = entry(&all, &sent[0]).expect("listed");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["held"], false);
    assert!(first["last_response"].as_str().unwrap().starts_with("4"), "{first}");
    assert!(first["next_due"].is_string(), "{first}");
    // oldest first, filters, limit
    let order: Vec<&str> = all["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(order, sent.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed(&server, &["--domain", "other.example"])["matched"], 2);
    let two = listed(&server, &["--limit", "2"]);
    assert_eq!((two["matched"].as_u64(), two["messages"].as_array().unwrap().len()), (Some(6), 2));
    assert_eq!(listed(&server, &["--older-than", "1h"])["matched"], 0);
    // a cut id list says so, on stderr (a pipe into `message` must not act on part unawares)
    let out = cli(&server, &["queue-list", "--ids-only", "--limit", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 6 ids listed"), "{}", text(&out));
    // the readable table says the same
    let table = text(&cli(&server, &["queue-list"]));
    assert!(table.starts_with("ID") && table.contains(&sent[0]) && table.contains("(6 message(s))"), "{table}");

    // hold: kept across a restart, then released
    let out = cli(&server, &["message", "hold", &sent[0]]);
    assert!(out.status.success() && text(&out).contains("held"), "{}", text(&out));
    let again = cli(&server, &["message", "hold", &sent[0]]);
    assert!(!again.status.success() && text(&again).contains("already held"), "{}", text(&again));
    assert_eq!(entry(&listed(&server, &[]), &sent[0]).unwrap()["held"], true);
    // queue-summary: oldest message, the last error, and the markers
    let out = cli(&server, &["suspend", "--domain", "other.example", "--reason", "x", "--duration", "1h"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = text(&cli(&server, &["queue-summary"]));
    let line = |q: &str| summary.lines().find(|l| l.starts_with(q)).unwrap_or_default().to_string();
    assert!(line("dest.example").contains("1 held") && line("dest.example").contains("  4"), "{summary}");
    assert!(line("other.example").contains("suspended"), "{summary}");
    let details = json(&cli(&server, &["queue-summary", "--json"]));
    let dest = details["queues"].as_array().unwrap().iter().find(|q| q["name"] == "dest.example").unwrap().clone();
    assert_eq!((dest["count"].as_u64(), dest["held"].as_u64()), (Some(4), Some(1)), "{dest}");
    assert!(dest["oldest_age_secs"].as_i64().is_some() && dest["last_error"].is_string(), "{dest}");
    server.stop();
    let server = Server::start(d, &path);
    let listing = listed(&server, &[]);
    assert_eq!(listing["matched"], 6, "nothing lost across the restart: {listing}");
    assert_eq!(entry(&listing, &sent[0]).unwrap()["held"], true, "still held after a restart");
    let out = cli(&server, &["message", "requeue", &sent[0]]);
    assert!(text(&out).contains("held: release it instead"), "{}", text(&out));
    let out = cli(&server, &["message", "release", &sent[0]]);
    assert!(out.status.success(), "{}", text(&out));
    // released and requeued messages are attempted at once (and tempfail again)
    let out = cli(&server, &["message", "requeue", &sent[1]]);
    assert!(out.status.success(), "{}", text(&out));
    wait_failures(d, 8);
    let listing = listed(&server, &[]);
    assert_eq!(entry(&listing, &sent[0]).unwrap()["attempts"], 2, "{listing}");
    assert_eq!(entry(&listing, &sent[1]).unwrap()["attempts"], 2, "{listing}");
    assert_eq!(entry(&listing, &sent[2]).unwrap()["attempts"], 1);

    // bounce one: an AdminBounce record naming it
    let out = cli(&server, &["message", "bounce", "--reason", "customer asked", &sent[2]]);
    assert!(out.status.success(), "{}", text(&out));
    let r = wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "AdminBounce").expect("AdminBounce");
    assert_eq!(r["id"], sent[2].as_str());
    assert!(r["response"]["content"].as_str().unwrap().contains("customer asked"), "{r}");
    // delete needs --yes; then an AdminDelete record, and no Bounce
    let out = cli(&server, &["message", "delete", &sent[3]]);
    assert!(!out.status.success() && text(&out).contains("--yes"), "{}", text(&out));
    assert!(entry(&listed(&server, &[]), &sent[3]).is_some(), "a refused delete leaves the message");
    let out = cli(&server, &["message", "delete", "--yes", &sent[3]]);
    assert!(out.status.success(), "{}", text(&out));
    let r = wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "AdminDelete").expect("AdminDelete");
    assert_eq!(r["id"], sent[3].as_str());

    // ids on standard input, one of them not an id and one not queued
    let input = format!("{}\n{} not-an-id\n{}\n", sent[4], sent[5], sent[2]);
    let out = cli_stdin(&server, &["message", "bounce", "--reason", "cleanup", "--json"], &input);
    assert!(!out.status.success(), "a partly failed action exits non-zero: {}", text(&out));
    let results = json(&out)["results"].as_array().unwrap().clone();
    let result = |id: &str| results.iter().find(|r| r["id"] == id).unwrap()["result"].as_str().unwrap().to_string();
    assert_eq!(result(&sent[4]), "bounced");
    assert_eq!(result(&sent[5]), "bounced");
    assert_eq!(result("not-an-id"), "not a message id");
    assert!(result(&sent[2]).starts_with("not queued"), "{results:?}");
    let listing = listed(&server, &[]);
    assert_eq!(listing["matched"], 2, "{listing}");

    // qshape: the two left, both on dest.example, under 5 minutes old
    let shape = json(&cli(&server, &["qshape", "--json"]));
    assert_eq!(shape["domains"][0]["domain"], "dest.example", "{shape}");
    assert_eq!(shape["domains"][0]["total"], 2);
    assert_eq!(shape["domains"][0]["counts"][0], 2);

    // misuse through the API: a misspelt filter and an unknown action are 400s that say so
    let (status, body) = http_get(&server.http[0], "/api/admin/queue-list/v1?limt=5");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limt"), "{body}");
    let out = cli(&server, &["message", "explode", &sent[0]]);
    assert!(!out.status.success() && text(&out).contains("explode"), "{}", text(&out));
    let counts = record_counts(d);
    assert_eq!(counts.get("Bounce"), None, "operators' actions are Admin records, never Bounce: {counts:?}");
    assert_eq!(counts.get("AdminBounce"), Some(&3));
    server.stop();
}

#[test]
fn a_hundred_thousand_queued_messages_list_at_once_and_bounce_with_progress() {
    const N: usize = 100_000;
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    // not before an hour from now (in the envelope: across restarts too), as a sender's
    // scheduled campaign would be
    let later = r#"
kumo.on('http_message_generated', function(msg)
  msg:set_scheduling { first_attempt = os.date('!%Y-%m-%dT%H:%M:%SZ', os.time() + 3600) }
end)
"#;
    let path = policy_with(d, &sink.addr, later);
    let server = Server::start(d, &path);
    let started = std::time::Instant::now();
    for batch in 0..N / 500 {
        let recipients: Vec<serde_json::Value> =
            (0..500).map(|i| serde_json::json!({ "email": format!("r{batch}-{i}@dest.example") })).collect();
        let body = serde_json::json!({
            "envelope_sender": "a@s.example", "recipients": recipients,
            "content": "Subject: backlog\r\n\r\nx",
        });
        let (code, text) =
            harness::http_request(&server.http[0], "POST", "/api/inject/v1", Some(&body.to_string()), &[]);
        assert_eq!(code, 200, "{text}");
    }
    eprintln!("{N} messages injected in {:?}", started.elapsed());

    // a restart recovers them: meanwhile liveness says how far it is, the rest waits
    server.stop();
    let (statuses, log) = watch_recovery(d, &path);
    assert!(
        statuses.iter().any(|(code, body)| *code == 503 && body.contains("recovering: ")),
        "liveness during recovery: {statuses:?}"
    );
    assert_eq!(statuses.last().unwrap().0, 200, "{statuses:?}");
    assert!(log.contains(&format!("{N} message(s) enumerated")), "{log}");
    let server = Server::start(d, &path);

    let t = std::time::Instant::now();
    let out = cli(&server, &["queue-list", "--limit", "10", "--json"]);
    let took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["matched"], N, "{}", text(&out));
    assert_eq!(v["messages"].as_array().unwrap().len(), 10);
    eprintln!("queue-list --limit 10 over {N}: {took:?}");
    assert!(took < Duration::from_secs(1), "listing took {took:?}");

    let t = std::time::Instant::now();
    let out = cli(&server, &["bounce", "--domain", "dest.example", "--reason", "bulk"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    eprintln!("bounce of {N}: {:?}\n{said}", t.elapsed());
    if said.contains("\"in_progress\": true") {
        let progress: Vec<&str> = said.lines().filter(|l| l.contains("queued message(s) bounced")).collect();
        assert!(!progress.is_empty(), "{said}");
        assert!(progress.last().unwrap().contains(&format!("{N} of {N}")), "{said}");
    } else {
        assert!(said.contains(&format!("\"total_bounced\": {N}")), "{said}");
    }
    assert_eq!(json(&cli(&server, &["queue-list", "--json"]))["matched"], 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while record_counts(d).get("AdminBounce").copied().unwrap_or(0) < N {
        assert!(std::time::Instant::now() < deadline, "{:?}", record_counts(d));
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
    assert!(harness::spooled(d).is_empty(), "every bounced message left the spool");
}

/// Starts the server on `policy` and polls its liveness from the moment its HTTP listener
/// is up until it answers 200; returns every (status, body) seen and its diagnostic log.
fn watch_recovery(d: &std::path::Path, policy: &std::path::Path) -> (Vec<(u16, String)>, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(harness::binary())
        .args(["serve", "--policy"])
        .arg(policy)
        .current_dir(d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let http = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the server says where HTTP listens");
        log.push_str(&line);
        log.push('\n');
        if let Some(at) = line.find("http listener on ") {
            break line[at + 17..].trim().to_string();
        }
    };
    let mut statuses = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = http_get(&http, "/api/check-liveness/v1");
        statuses.push((code, body));
        if code == 200 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push_str(&line);
        log.push('\n');
    }
    (statuses, log)
}
