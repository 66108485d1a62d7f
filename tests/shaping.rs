//! Shaping through `policy-extras.shaping` against the real binary: the files' values
//! reach live ready queues, and an edited file takes effect within seconds, no restart.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use std::time::{Duration, Instant};

fn shaping_file(port: &str, ehlo: &str) -> String {
    format!(
        "[\"{port}.smarthost.test\"]\nmx_rollup = false\nenable_tls = \"Disabled\"\nehlo_domain = \"{ehlo}\"\nmax_deliveries_per_connection = 1\n"
    )
}

fn helper_policy(port: &str, extra: &str) -> String {
    format!(
        r#"
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {{ no_default_files = true, extra_files = {{ '{{d}}/shaping.toml' }} }}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
end)
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{port}' }} }} }} }}
end)
kumo.on('get_egress_path_config', shaper.get_egress_path_config)
{extra}
"#
    )
}

#[test]
fn an_edited_shaping_file_changes_live_ready_queues_within_seconds() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    let file = dir.path().join("shaping.toml");
    std::fs::write(&file, shaping_file(&port, "before.test")).unwrap();
    let text = helper_policy(&port, "").replace("{d}", &dir.path().display().to_string());
    let policy = dir.path().join("init.lua");
    std::fs::write(
        &policy,
        text.replacen(
            "kumo.on('init', function()",
            "kumo.on('init', function()\n  kumo.dns.configure_test_resolver ''",
            1,
        ),
    )
    .unwrap();
    let server = harness::Server::start(dir.path(), &policy);
    let to = format!("r@{port}.smarthost.test");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 1\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    assert_eq!(sink.messages()[0].ehlo, "before.test", "the shaping file's ehlo_domain was used");

    // edit the file the way editors do: write a new file and rename it over the old one
    let tmp = dir.path().join(".shaping.toml.swp");
    std::fs::write(&tmp, shaping_file(&port, "after.test")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let edited = Instant::now();
    assert!(server.wait_for_stderr("configuration epoch is now", Duration::from_secs(5)), "the change was seen");
    let seen = edited.elapsed();
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 2\r\n\r\nx").code, 250);
    assert!(sink.wait_for(2, Duration::from_secs(10)));
    assert_eq!(sink.messages()[1].ehlo, "after.test", "the live ready queue took the new value");
    assert!(seen < Duration::from_secs(2), "noticed in {seen:?}");

    // a broken edit is refused: the last good data keeps serving
    std::fs::write(&file, "[\"x\"]\nconection_limit = 1\n").unwrap();
    assert!(server.wait_for_stderr("configuration epoch is now 2", Duration::from_secs(10)), "the edit was seen");
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 3\r\n\r\nx").code, 250);
    assert!(sink.wait_for(3, Duration::from_secs(10)));
    assert_eq!(sink.messages()[2].ehlo, "after.test");
    assert!(server.wait_for_stderr("reload refused", Duration::from_secs(10)), "the error was logged");
    assert!(server.stop().success());
}

fn wasmta(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(harness::binary()).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const ZONE: &str = "$ORIGIN example.\n@ 300 IN SOA ns hostmaster 1 1 1 1 1\n";

#[test]
fn shaping_check_loads_kumomtas_default_file_and_reports_errors_by_line() {
    let dir = harness::temp_dir();
    let zone = dir.path().join("zone");
    std::fs::write(&zone, ZONE).unwrap();
    let zone = zone.display().to_string();
    let kumo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kumomta-shaping.toml");
    let (ok, text) = wasmta(&["shaping", "check", "--dns-zone", &zone, kumo]);
    assert!(ok, "{text}");
    assert!(text.contains("0 error(s)"), "{text}");
    assert!(text.contains("dns_fail"), "offline, rolled-up entries cannot resolve: {text}");
    let (ok, text) = wasmta(&["shaping", "check", "--dns-zone", &zone, "--options", r#"{"dns_fail": "Ignore"}"#, kumo]);
    assert!(ok && text.contains("0 warning(s)"), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[\"default\"]\nconnection_limit = 10\n\n[\"example.com\"]\nmax_ready = \"many\"\nconection_limit = 3\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let (ok, text) = wasmta(&["shaping", "check", "--dns-zone", &zone, kumo, &bad]);
    assert!(!ok, "{text}");
    assert!(text.contains("bad.toml:6: example.com: unknown key \"conection_limit\""), "{text}");
    assert!(text.contains("bad.toml:5: example.com: max_ready"), "{text}");
}

#[test]
fn shaping_resolve_prints_the_merged_egress_path() {
    let dir = harness::temp_dir();
    let zone = dir.path().join("zone");
    std::fs::write(&zone, "gmail.com MX 5 gmail-smtp-in.l.google.com\n").unwrap();
    let extra = dir.path().join("extra.toml");
    std::fs::write(
        &extra,
        "[\"gmail.com\"]\nconnection_limit = 7\n[\"gmail.com\".sources.\"ip-1\"]\nmax_deliveries_per_connection = 9\n",
    )
    .unwrap();
    let kumo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kumomta-shaping.toml");
    let zone = zone.display().to_string();
    let extra = extra.display().to_string();
    let (ok, text) =
        wasmta(&["shaping", "resolve", "--dns-zone", &zone, "gmail.com", "--source", "ip-1", kumo, &extra]);
    assert!(ok, "{text}");
    assert!(text.contains("site gmail-smtp-in.l.google.com"), "{text}");
    let json: serde_json::Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    assert_eq!(json["provider_name"], "google", "{json}");
    assert_eq!(json["enable_tls"], "Required", "the google provider block: {json}");
    assert_eq!(json["connection_limit"], 7, "the extra file's domain entry wins: {json}");
    assert_eq!(json["max_deliveries_per_connection"], 9, "the source override comes last: {json}");
    assert_eq!(json["refresh_strategy"], "Epoch");
}

/// Two ready queues (the same sink seen as two sites) with these egress path options.
fn two_sites_policy(sink: &str, path_opts: &str) -> String {
    let port = sink.rsplit(':').next().unwrap();
    format!(
        r#"
kumo.on('get_queue_config', function(domain)
  local mx = domain == 'a.example' and '127.0.0.1:{port}' or '[127.0.0.1]:{port}'
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ mx }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ enable_tls = 'Disabled', connection_limit = 10, {path_opts} }}
end)
"#
    )
}

fn inject_both(server: &harness::Server, each: usize) {
    let loads: Vec<_> = ["r@a.example", "r@b.example"]
        .iter()
        .map(|rcpt| {
            std::process::Command::new(harness::binary())
                .args(["load", "--connections", "10", "--size", "512", "--target", server.addr(), "--recipient", rcpt])
                .args(["--messages", &each.to_string()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut l in loads {
        assert!(l.wait().unwrap().success());
    }
}

#[test]
fn additional_connection_limits_are_shared_across_ready_queues() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) =
        harness::start("", &two_sites_policy(&sink.addr, "additional_connection_limits = { shared = 2 }"));
    inject_both(&server, 150);
    assert!(sink.wait_for(300, Duration::from_secs(30)), "delivered {}", sink.count());
    let peak = sink.stats()["peak_connections"].as_u64().unwrap();
    assert!(peak <= 2, "two ready queues of 10 connections each shared a limit of 2, the sink saw {peak}");
    assert_eq!(peak, 2);
}

#[test]
fn additional_message_rate_throttles_are_shared_across_ready_queues() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let opts = "additional_message_rate_throttles = { shared = '20/s' }";
    let (_dir, server) = harness::start("", &two_sites_policy(&sink.addr, opts));
    inject_both(&server, 70);
    assert!(sink.wait_for(140, Duration::from_secs(30)), "delivered {}", sink.count());
    let mut times: Vec<std::time::SystemTime> = sink.messages().iter().map(|m| m.at).collect();
    times.sort();
    // after the burst of 20, both queues together get 20/s: 100 messages in about 5 s
    let steady = times[139].duration_since(times[39]).unwrap().as_secs_f64();
    let rate = 100.0 / steady;
    assert!((19.0..=21.0).contains(&rate), "steady combined rate {rate:.2}/s over {steady:.2}s (limit 20/s ±5 %)");
}

/// Two sites (as in `two_sites_policy`), egress paths from the shaping helper with this
/// file, and the `tenant` meta from `X-Tenant`.
fn automation_server(rules: &str) -> (tempfile::TempDir, Sink, harness::Server, String) {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    std::fs::write(
        dir.path().join("shaping.toml"),
        format!("[\"default\"]\nenable_tls = \"Disabled\"\nehlo_domain = \"before.test\"\n{rules}"),
    )
    .unwrap();
    let text = format!(
        r#"
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {{ no_default_files = true, extra_files = {{ '{d}/shaping.toml' }} }}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
end)
kumo.on('smtp_server_message_received', function(msg)
  local tenant = msg:get_first_named_header_value('X-Tenant')
  if tenant then msg:set_meta('tenant', tenant) end
end)
kumo.on('get_queue_config', function(domain)
  local mx = domain == 'a.example' and '127.0.0.1:{port}' or '[127.0.0.1]:{port}'
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ mx }} }} }} }}
end)
kumo.on('get_egress_path_config', shaper.get_egress_path_config)
"#,
        d = dir.path().display()
    );
    let policy = dir.path().join("init.lua");
    std::fs::write(&policy, text).unwrap();
    let server = harness::Server::start(dir.path(), &policy);
    std::mem::forget(d);
    (dir, sink, server, port)
}

fn send(server: &harness::Server, to: &str, headers: &str) {
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &[to], &format!("Subject: t\r\n{headers}\r\nx"));
    assert_eq!(r.code, 250, "{r:?}");
}

fn delivered_to(sink: &Sink, rcpt: &str) -> Vec<harness::sink::Received> {
    sink.messages().into_iter().filter(|m| m.to.iter().any(|t| t == rcpt)).collect()
}

#[test]
fn a_suspend_rule_holds_that_path_and_only_that_path() {
    let rules = "[[\"default\".automation]]\nregex = \"you said tempfail\"\naction = \"Suspend\"\nduration = \"1h\"\n";
    let (dir, sink, server, _) = automation_server(rules);
    send(&server, "tempfail@a.example", "");
    harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
    assert!(server.wait_for_stderr("automation: a rule of shaping entry default matched", Duration::from_secs(5)));
    send(&server, "ok@a.example", "");
    send(&server, "ok@b.example", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered_to(&sink, "ok@b.example").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delivered_to(&sink, "ok@b.example").len(), 1, "the other site's path is not suspended");
    std::thread::sleep(Duration::from_secs(2));
    assert!(delivered_to(&sink, "ok@a.example").is_empty(), "the suspended path delivered nothing");
    assert!(server.stop().success());
    let kept: Vec<String> = harness::spooled(dir.path()).iter().map(|m| m.recipient().unwrap().email()).collect();
    assert!(kept.contains(&"ok@a.example".to_string()), "held, not lost: {kept:?}");
}

#[test]
fn a_set_config_rule_changes_that_path_until_it_expires() {
    let rules = "[[\"default\".automation]]\nregex = \"try again later\"\naction = [{SetConfig={name=\"ehlo_domain\", value=\"automated.test\"}}, {SetConfig={name=\"max_deliveries_per_connection\", value=1}}]\nduration = \"3s\"\n";
    let (dir, sink, server, _) = automation_server(rules);
    // fails once ("try again later (1 of 1)"), then is delivered: the rule fires once
    send(&server, "flaky1-x@a.example", "");
    harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
    assert!(server.wait_for_stderr("automation: a rule", Duration::from_secs(5)));
    send(&server, "one@a.example", "");
    send(&server, "one@b.example", "");
    assert!(sink.wait_for(2, Duration::from_secs(10)));
    assert_eq!(delivered_to(&sink, "one@a.example")[0].ehlo, "automated.test", "the rule's override applies to a");
    assert_eq!(delivered_to(&sink, "one@b.example")[0].ehlo, "before.test", "and only to a");
    assert!(server.wait_for_stderr("expired", Duration::from_secs(10)), "the override expires by itself");
    std::thread::sleep(Duration::from_millis(300));
    send(&server, "two@a.example", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered_to(&sink, "two@a.example").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delivered_to(&sink, "two@a.example")[0].ehlo, "before.test");
    drop(server);
}

#[test]
fn a_threshold_bounce_tenant_rule_bounces_that_tenants_mail() {
    let rules = "[[\"default\".automation]]\nregex = \"you said tempfail\"\naction = \"BounceTenant\"\ntrigger = {Threshold=\"2/min\"}\nduration = \"1h\"\n";
    let (dir, sink, server, _) = automation_server(rules);
    send(&server, "tempfail@a.example", "X-Tenant: acme\r\n");
    // the first failure does not reach the threshold; the retry (1 s later) does
    assert!(server.wait_for_stderr("BounceTenant", Duration::from_secs(10)), "{}", server.stderr_text());
    send(&server, "later@a.example", "X-Tenant: acme\r\n");
    send(&server, "other@a.example", "X-Tenant: other\r\n");
    let bounced = harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| {
        r["type"] == "Bounce" && r["recipient"] == "later@a.example"
    })
    .expect("acme's new mail bounced");
    assert!(bounced["response"]["content"].as_str().unwrap().contains("automation rule"), "{bounced}");
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    assert_eq!(delivered_to(&sink, "other@a.example").len(), 1, "another tenant's mail still goes");
    drop(server);
}

#[test]
fn the_queue_level_max_message_rate_holds_within_five_percent() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let policy = harness::sink::relay_to(&sink.addr, "max_message_rate = '20/s'", "connection_limit = 4");
    let (_dir, server) = harness::start("", &policy);
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "10", "--messages", "140", "--size", "512", "--target", server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success());
    assert!(sink.wait_for(140, Duration::from_secs(30)), "delivered {}", sink.count());
    let mut times: Vec<std::time::SystemTime> = sink.messages().iter().map(|m| m.at).collect();
    times.sort();
    // after the burst of 20: 100 messages at 20/s take 5 s
    let steady = times[139].duration_since(times[39]).unwrap().as_secs_f64();
    let rate = 100.0 / steady;
    assert!((19.0..=21.0).contains(&rate), "steady rate {rate:.2}/s over {steady:.2}s (limit 20/s ±5 %)");
}
