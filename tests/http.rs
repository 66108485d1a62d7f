//! The HTTP API against the real binary: injection, the admin endpoints, metrics, the
//! CLI commands that call them, and who may call them.

mod harness;

use harness::sink::{Sink, relay_to};
use harness::smtp::Client;
use harness::{http_get, http_request, log_records, start_policy_text, wait_for_record};
use serde_json::Value;
use std::time::Duration;

fn policy(sink: &str, http_opts: &str, extra: &str) -> String {
    format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0', {http_opts} }}
end)
{relay}
{extra}
"#,
        relay = relay_to(sink, "retry_interval = '1h'", "")
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn inject_api_takes_raw_and_built_content_with_substitutions() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let extra = r#"
kumo.on('http_message_generated', function(msg)
  msg:set_meta('tenant', 'api')
end)
"#;
    let (dir, server) = start_policy_text(&policy(&sink.addr, "", extra));
    let http = &server.http[0];
    let raw = r#"{"envelope_sender": "news@s.example", "content": "Subject: hi {{ name }}\r\n\r\nDear {{ name }}, code {{ code }}.\r\n",
        "substitutions": {"code": "XYZ"},
        "recipients": [{"email": "ann@a.example", "name": "Ann"}, {"email": "bob@b.example", "substitutions": {"name": "Bob"}},
                       {"email": "not an address"}]}"#;
    let (code, body) = http_request(http, "POST", "/api/inject/v1", Some(raw), &[]);
    assert_eq!(code, 200, "{body}");
    let r = json(&body);
    assert_eq!(r["success_count"], 2);
    assert_eq!(r["fail_count"], 1);
    assert_eq!(r["failed_recipients"][0], "not an address");
    let built = r#"{"envelope_sender": "news@s.example", "recipients": [{"email": "cy@c.example", "name": "Cy"}],
        "content": {"subject": "Built", "text_body": "plain {{ name }}", "html_body": "<p>{{ name }}</p>",
                    "from": {"email": "news@s.example", "name": "News"}, "headers": {"X-Campaign": "spring"}}}"#;
    let (code, body) = http_request(http, "POST", "/api/inject/v1", Some(built), &[]);
    assert_eq!(code, 200, "{body}");
    assert!(sink.wait_for(3, Duration::from_secs(10)));
    let texts: Vec<String> = sink.messages().iter().map(|m| String::from_utf8_lossy(&m.data).to_string()).collect();
    assert!(texts.iter().any(|t| t.contains("Subject: hi Ann") && t.contains("Dear Ann, code XYZ.")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("Dear Bob, code XYZ.")), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("From: \"News\" <news@s.example>") && t.contains("<p>Cy</p>")),
        "{texts:?}"
    );
    assert!(server.stop().success());
    let receptions: Vec<Value> = log_records(dir.path()).into_iter().filter(|r| r["type"] == "Reception").collect();
    assert_eq!(receptions.len(), 3);
    assert!(
        receptions
            .iter()
            .all(|r| r["reception_protocol"] == "HTTP" && r["queue"].as_str().unwrap().starts_with("api@"))
    );
}

#[test]
fn admin_endpoints_suspend_inspect_bounce_and_rebind() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) = start_policy_text(&policy(&sink.addr, "", ""));
    let http = &server.http[0];
    // hold hold.example's mail, then look at it
    let (code, body) = http_request(
        http,
        "POST",
        "/api/admin/suspend/v1",
        Some(r#"{"domain": "hold.example", "reason": "maintenance", "duration": "1h"}"#),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let suspend_id = json(&body)["id"].as_str().unwrap().to_string();
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["x@hold.example"], "Subject: held\r\n\r\nx");
    let id = harness::smtp::ids(&r)[0].clone();
    assert_eq!(c.send_mail("a@s.example", &["y@hold.example"], "Subject: held 2\r\n\r\nx").code, 250);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.count(), 0, "suspended");
    let (_, list) = http_get(http, "/api/admin/suspend/v1");
    assert_eq!(json(&list)[0]["reason"], "maintenance");
    let (code, body) = http_get(http, &format!("/api/admin/inspect-message/v1?id={id}&want_body=true"));
    assert_eq!(code, 200, "{body}");
    let m = json(&body);
    assert_eq!(m["message"]["recipients"][0], "x@hold.example");
    assert!(m["message"]["data"].as_str().unwrap().contains("Subject: held"));
    let (code, body) = http_get(http, "/api/admin/inspect-sched-q/v1?queue_name=hold.example");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["message_count"], 2);
    let (code, _) = http_get(http, "/api/admin/inspect-message/v1?id=nonexistent");
    assert_eq!(code, 404);

    // rebind one queue's mail to a tenant, then bounce the lot
    let (code, body) = http_request(
        http,
        "POST",
        "/api/admin/rebind/v1",
        Some(r#"{"domain": "hold.example", "reason": "move", "data": {"tenant": "moved"}}"#),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["total_rebound"], 2);
    let (code, body) = http_request(
        http,
        "POST",
        "/api/admin/bounce/v1",
        Some(r#"{"domain": "hold.example", "reason": "cleanup", "duration": "10m"}"#),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let b = json(&body);
    assert_eq!(b["total_bounced"], 2, "{b}");
    assert_eq!(b["bounced"]["moved@hold.example"], 2, "{b}");
    let bounced = wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "AdminBounce").unwrap();
    assert!(bounced["response"]["content"].as_str().unwrap().contains("cleanup"));
    // new mail for the domain bounces while the bounce holds, with the same AdminBounce
    // record as the queued mail (`logs --type AdminBounce` finds both)
    assert_eq!(c.send_mail("a@s.example", &["z@hold.example"], "Subject: late\r\n\r\nx").code, 250);
    let late = wait_for_record(dir.path(), Duration::from_secs(5), |r| {
        r["type"] == "AdminBounce" && r["recipient"] == "z@hold.example"
    })
    .expect("bounced by the held bounce");
    assert_eq!(late["response"]["content"], "Administrator bounced with reason: cleanup", "{late}");
    let (_, list) = http_get(http, "/api/admin/bounce/v1");
    let bounce_id = json(&list)[0]["id"].as_str().unwrap().to_string();
    let (code, _) =
        http_request(http, "DELETE", "/api/admin/bounce/v1", Some(&format!(r#"{{"id": "{bounce_id}"}}"#)), &[]);
    assert_eq!(code, 200);
    let (code, _) =
        http_request(http, "DELETE", "/api/admin/suspend/v1", Some(&format!(r#"{{"id": "{suspend_id}"}}"#)), &[]);
    assert_eq!(code, 200);
    let (code, _) =
        http_request(http, "DELETE", "/api/admin/suspend/v1", Some(&format!(r#"{{"id": "{suspend_id}"}}"#)), &[]);
    assert_eq!(code, 404, "already gone");
    assert_eq!(c.send_mail("a@s.example", &["w@hold.example"], "Subject: free\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)), "delivered once both are cancelled");

    // ready queues: state, suspension
    let (_, states) = http_get(http, "/api/admin/ready-q-states/v1");
    let states = json(&states);
    let name = states["states_by_ready_queue"].as_object().unwrap().keys().next().unwrap().clone();
    let body = format!(r#"{{"name": "{name}", "reason": "slow down"}}"#);
    let (code, _) = http_request(http, "POST", "/api/admin/suspend-ready-q/v1", Some(&body), &[]);
    assert_eq!(code, 200);
    let (_, list) = http_get(http, "/api/admin/suspend-ready-q/v1");
    assert_eq!(json(&list)[0]["name"], name);
    let (_, state) = http_get(http, &format!("/api/admin/inspect-ready-q/v1?name={}", name.replace('>', "%3E")));
    assert!(state.contains("\"suspended\":true"), "{state}");
    let (code, body) = http_request(http, "POST", "/api/admin/bounce/v1", Some(r#"{"reason": "x", "bogus": 1}"#), &[]);
    assert!(code >= 400 && body.contains("bogus"), "unknown fields are refused: {code} {body}");
    assert!(server.stop().success());
}

#[test]
fn metrics_are_prometheus_text_and_json() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) =
        start_policy_text(&policy(&sink.addr, "", "kumo.on('smtp_server_message_received', function(msg) end)"));
    let mut c = Client::ehlo(server.addr());
    for _ in 0..3 {
        assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: m\r\n\r\nx").code, 250);
    }
    assert!(sink.wait_for(3, Duration::from_secs(10)));
    // the sink counts a message at its 250; the server counts it once it has read that
    // reply and written the Delivery record: moments later
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (code, text) = loop {
        let (code, text) = http_get(&server.http[0], "/metrics");
        if text.contains("total_messages_delivered 3") || std::time::Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200);
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name in {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in {line}");
        }
    }
    assert!(text.contains("total_messages_received 3"), "{text}");
    assert!(text.contains("total_messages_delivered 3"), "{text}");
    assert!(text.contains("scheduled_count{queue=\"dest.example\"}"), "{text}");
    assert!(text.contains("policy_event_latency_seconds_count{event=\"smtp_server_message_received\""), "{text}");
    let (code, body) = http_get(&server.http[0], "/metrics.json");
    assert_eq!(code, 200);
    assert_eq!(json(&body)["total_messages_received"]["value"], 3);
    let (code, body) = http_get(&server.http[0], "/api/openapi.json");
    assert_eq!(code, 200);
    let doc = json(&body);
    for path in ["/api/inject/v1", "/api/admin/bounce/v1", "/api/admin/suspend-ready-q/v1", "/api/admin/reload/v1"] {
        assert!(doc["paths"][path].is_object(), "the OpenAPI document covers {path}");
    }
    drop(server);
}

#[test]
fn untrusted_peers_need_credentials_the_policy_accepts() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let extra = r#"
kumo.on('http_server_validate_auth_basic', function(user, password)
  return user == 'admin' and password == 'secret'
end)
kumo.on('http_server_validate_auth_bearer', function(token)
  return token == 'tok-123'
end)
"#;
    let (_dir, server) = start_policy_text(&policy(&sink.addr, "trusted_hosts = { '10.0.0.0/8' }", extra));
    let http = &server.http[0];
    let (code, _) = http_get(http, "/api/check-liveness/v1");
    assert_eq!(code, 200, "liveness is open to all");
    let (code, body) = http_get(http, "/metrics");
    assert_eq!(code, 401, "{body}");
    let (code, _) = http_request(http, "POST", "/api/admin/bounce/v1", Some(r#"{"reason": "x"}"#), &[]);
    assert_eq!(code, 401, "admin calls are refused too");
    use base64::Engine as _;
    let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:secret"));
    let bad = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:guess"));
    assert_eq!(http_request(http, "GET", "/metrics", None, &[("Authorization", &good)]).0, 200);
    assert_eq!(http_request(http, "GET", "/metrics", None, &[("Authorization", &bad)]).0, 401);
    assert_eq!(http_request(http, "GET", "/metrics", None, &[("Authorization", "Bearer tok-123")]).0, 200);
    assert_eq!(http_request(http, "GET", "/metrics", None, &[("Authorization", "Bearer nope")]).0, 401);
    drop(server);
}

#[test]
fn cli_commands_talk_to_the_api() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start_policy_text(&policy(&sink.addr, "", ""));
    let endpoint = format!("http://{}", server.http[0]);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(harness::binary())
            .args(args)
            .env("WASMTA_ENDPOINT", &endpoint)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = cli(&["suspend", "--domain", "cli.example", "--reason", "from the cli", "--duration", "1h"]);
    assert!(ok, "{text}");
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["r@cli.example"], "Subject: c\r\n\r\nx");
    let id = harness::smtp::ids(&r)[0].clone();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, text) = cli(&["queue-summary"]);
    assert!(ok && text.contains("cli.example") && text.contains("SCHEDULED QUEUE"), "{text}");
    let (ok, text) = cli(&["suspend-list"]);
    assert!(ok && text.contains("from the cli"), "{text}");
    let (ok, text) = cli(&["inspect-message", &id]);
    assert!(ok && text.contains("r@cli.example"), "{text}");
    let (ok, text) = cli(&["bounce", "--domain", "cli.example", "--reason", "cli bounce"]);
    assert!(ok && text.contains("\"total_bounced\": 1"), "{text}");
    let (ok, text) = cli(&["bounce-list"]);
    assert!(ok && text.contains("cli bounce"), "{text}");
    let (ok, text) = cli(&["bounce-cancel", "--id", "no-such-id"]);
    assert!(!ok && text.contains("404") && text.contains("no bounce entry"), "server errors are shown plainly: {text}");
    let (ok, text) = cli(&["--help"]);
    assert!(ok && text.contains("suspend-ready-q"), "{text}");
    let out = std::process::Command::new(harness::binary())
        .args(["queue-summary", "--endpoint", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach wasmta"));
    drop(server);
}

#[test]
fn top_shows_message_rates_connections_and_queues() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start_policy_text(&policy(&sink.addr, "", ""));
    let mut c = Client::ehlo(server.addr());
    for i in 0..3 {
        // the sink tempfails these: they wait an hour in their scheduled queue
        let r = c.send_mail("a@s.example", &[&format!("tempfail{i}@top.example")], "Subject: t\r\n\r\nx");
        assert_eq!(r.code, 250);
    }
    assert!(
        wait_for_record(&server.dir, Duration::from_secs(10), |r| r["type"] == "TransientFailure"
            && r["recipient"] == "tempfail2@top.example")
        .is_some()
    );
    let out = std::process::Command::new(harness::binary())
        .args(["top", "--count", "2", "--interval", "200ms", "--endpoint", &format!("http://{}", server.http[0])])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let frames: Vec<&str> = text.split("wasmta at ").skip(1).collect();
    assert_eq!(frames.len(), 2, "{text}");
    let line = |frame: &str, label: &str| -> Vec<String> {
        let l = frame.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {frame}"));
        l.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(line(frames[0], "received")[1], "3", "{text}");
    assert_eq!(line(frames[0], "received")[2], "-", "no rate before a second sample");
    assert_eq!(line(frames[1], "received")[2], "0.0", "nothing arrived between the samples");
    assert_eq!(line(frames[1], "transfail")[1], "3", "{text}");
    assert!(frames[1].contains("top.example") && frames[1].contains("SCHEDULED QUEUE"), "{text}");
}

/// One HTTPS request over a client that accepts the self-signed certificate; the status
/// line and headers+body.
fn https_get(addr: &str, path: &str, auth: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut tls = harness::tls::client("localhost");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn use_tls_serves_https_with_the_same_trust_rules() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start_policy_text(&policy(
        &sink.addr,
        "use_tls = true, hostname = 'localhost', trusted_hosts = {}",
        "kumo.on('http_server_validate_auth_basic', function(user, password) return user == 'ops' and password == 's3cret' end)",
    ));
    let addr = &server.http[0];
    let open = https_get(addr, "/api/check-liveness/v1", None);
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");
    let refused = https_get(addr, "/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "the peer address reaches the trust check: {refused}");
    let basic = format!("Basic {}", base64_encode(b"ops:s3cret"));
    let metrics = https_get(addr, "/metrics", Some(&basic));
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("# HELP connection_count"), "{metrics}");
    // plain HTTP on the TLS port gets no HTTP answer
    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET /api/check-liveness/v1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));
}

#[test]
fn the_cli_talks_https_and_checks_the_certificate_unless_told_not_to() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start_policy_text(&policy(&sink.addr, "use_tls = true, hostname = 'localhost'", ""));
    let endpoint = format!("https://{}", server.http[0]);
    let run = |extra: &[&str]| {
        std::process::Command::new(harness::binary())
            .args(["queue-summary", "--endpoint", &endpoint])
            .args(extra)
            .output()
            .unwrap()
    };
    let checked = run(&[]);
    assert!(!checked.status.success(), "a self-signed certificate is refused by default");
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
    let insecure = run(&["--insecure"]);
    assert!(insecure.status.success(), "{}", String::from_utf8_lossy(&insecure.stderr));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn the_http_listener_bounds_idle_slow_and_too_many_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start_policy_text(&policy(&sink.addr, "client_timeout = '2s', max_connections = 5", ""));
    let addr = server.http[0].clone();
    let closed_within = |s: &mut TcpStream, limit: Duration| -> (bool, String) {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut text = Vec::new();
        let ok = s.read_to_end(&mut text).is_ok();
        (ok, String::from_utf8_lossy(&text).to_string())
    };
    // five idle connections fill the listener; the sixth is answered 503 and closed
    let mut idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut sixth = TcpStream::connect(&addr).unwrap();
    let (closed, text) = closed_within(&mut sixth, Duration::from_secs(2));
    assert!(closed && text.starts_with("HTTP/1.1 503"), "{text:?}");
    // the idle ones are let go after client_timeout
    let started = std::time::Instant::now();
    for s in &mut idle {
        let (closed, _) = closed_within(s, Duration::from_secs(5));
        assert!(closed, "an idle connection stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // a header trickled a byte every half second is cut off
    let mut slow = TcpStream::connect(&addr).unwrap();
    let started = std::time::Instant::now();
    for b in b"GET /api/check-liveness/v1 HTTP/1.1\r\nHost: x\r\n\r\n" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let (closed, text) = closed_within(&mut slow, Duration::from_secs(5));
    assert!(closed && !text.contains("200 OK"), "{text:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    // a body that stops half-way gets 408
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /api/admin/bump-config-epoch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let (_, text) = closed_within(&mut half, Duration::from_secs(6));
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // and the listener still serves
    let (code, _) = http_get(&addr, "/api/check-liveness/v1");
    assert_eq!(code, 200);
    drop(server);
}
