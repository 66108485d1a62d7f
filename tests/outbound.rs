//! Delivery end to end: the real binary relays to a real SMTP sink over loopback.

mod harness;

use harness::sink::{Sink, relay_to};
use harness::smtp::{Client, ids};
use harness::{Server, log_records, policy, record_counts, spooled, start, temp_dir, wait_for_record};
use std::time::Duration;

#[test]
fn relayed_messages_arrive_byte_exact_with_one_delivery_record_each() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) = start("", &relay_to(&sink.addr, "", ""));
    let mut c = Client::ehlo(server.addr());
    // on the wire (dot-stuffed); stored and relayed unstuffed
    let body = "Subject: dots\r\nFrom: <a@s.example>\r\n\r\n..\r\n...two\r\n..leading dot\r\nline";
    let mut sent = vec![];
    for i in 0..20 {
        let r = c.send_mail("a@s.example", &[&format!("user{i}@dest.example")], body);
        assert_eq!(r.code, 250, "{r:?}");
        sent.push(ids(&r)[0].clone());
    }
    assert!(sink.wait_for(20, Duration::from_secs(20)), "delivered {}", sink.count());
    let got = sink.messages();
    assert_eq!(got.len(), 20);
    for m in &got {
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.starts_with("X-KumoRef: "), "{text}");
        assert!(text.contains("\r\nReceived: from client.test"), "{text}");
        assert!(
            m.data.ends_with(b"Subject: dots\r\nFrom: <a@s.example>\r\n\r\n.\r\n..two\r\n.leading dot\r\nline\r\n"),
            "{text}"
        );
        assert_eq!(m.from, "a@s.example");
    }
    let recipients: std::collections::HashSet<&str> = got.iter().map(|m| m.to[0].as_str()).collect();
    assert_eq!(recipients.len(), 20, "each recipient exactly once");
    let deliveries: Vec<serde_json::Value> =
        log_records(dir.path()).into_iter().filter(|r| r["type"] == "Delivery").collect();
    assert_eq!(deliveries.len(), 20);
    let d0 = &deliveries[0];
    assert_eq!(d0["delivery_protocol"], "ESMTP");
    assert_eq!(d0["egress_pool"], "unspecified");
    assert_eq!(d0["egress_source"], "unspecified");
    assert_eq!(d0["site"], format!("unspecified->mx_list:{}@smtp_client", sink.addr));
    assert_eq!(d0["peer_address"]["addr"], "127.0.0.1");
    assert_eq!(d0["response"]["code"], 250);
    assert_eq!(d0["num_attempts"], 1);
    assert_eq!(d0["queue"], "dest.example");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty(), "delivered messages leave the spool");
}

#[test]
fn tempfail_then_success_is_retried_on_the_backoff_schedule() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) = start("", &relay_to(&sink.addr, "", ""));
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["flaky2-x@dest.example"], "Subject: retry\r\n\r\nx").code, 250);
    let delivered = wait_for_record(dir.path(), Duration::from_secs(20), |r| r["type"] == "Delivery")
        .expect("delivered after retries");
    assert_eq!(delivered["num_attempts"], 3);
    let records = log_records(dir.path());
    let tf: Vec<&serde_json::Value> = records.iter().filter(|r| r["type"] == "TransientFailure").collect();
    assert_eq!(tf.len(), 2);
    assert_eq!(tf[0]["response"]["code"], 451);
    assert_eq!(tf[0]["response"]["command"], "RCPT TO");
    assert_eq!(tf[0]["num_attempts"], 1);
    assert_eq!(tf[1]["num_attempts"], 2);
    // retry_interval 1s: the second retry waits about twice as long as the first
    let t = |r: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(r["event_time"].as_str().unwrap()).unwrap();
    let gap1 = (t(tf[1]) - t(tf[0])).num_milliseconds();
    let gap2 = (t(&delivered) - t(tf[1])).num_milliseconds();
    assert!((900..2000).contains(&gap1), "first retry after {gap1} ms");
    assert!((1800..3200).contains(&gap2), "second retry after {gap2} ms");
    assert_eq!(sink.count(), 1);
    drop(server);
}

#[test]
fn permanent_failures_bounce_and_leave_the_spool() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) = start("", &relay_to(&sink.addr, "", ""));
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["permfail@dest.example"], "Subject: no\r\n\r\nx").code, 250);
    let b = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Bounce").expect("Bounce");
    assert_eq!(b["response"]["code"], 550);
    assert_eq!(b["response"]["content"], "you said permfail");
    assert_eq!(b["recipient"], "permfail@dest.example");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
    assert_eq!(sink.count(), 0);
}

#[test]
fn unreachable_hosts_tempfail_and_max_age_expires() {
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (dir, server) = start("", &relay_to(&format!("127.0.0.1:{port}"), "max_age = '3s'", ""));
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: lost\r\n\r\nx").code, 250);
    let tf = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure")
        .expect("TransientFailure");
    assert!(tf["response"]["content"].as_str().unwrap().contains("failed to connect"), "{tf}");
    let exp = wait_for_record(dir.path(), Duration::from_secs(20), |r| r["type"] == "Expiration").expect("Expiration");
    assert_eq!(exp["response"]["code"], 551);
    assert_eq!(exp["response"]["enhanced_code"]["subject"], 4);
    assert_eq!(exp["response"]["enhanced_code"]["detail"], 7);
    assert!(exp["response"]["content"].as_str().unwrap().contains("exceeds max_age=3s"), "{exp}");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn connection_limit_is_never_exceeded() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start("", &relay_to(&sink.addr, "", "connection_limit = 2"));
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "20", "--messages", "200", "--size", "512", "--target", server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success());
    assert!(sink.wait_for(200, Duration::from_secs(30)), "delivered {}", sink.count());
    let peak = sink.stats()["peak_connections"].as_u64().unwrap();
    assert!(peak <= 2, "the sink saw {peak} connections at once");
    assert_eq!(peak, 2, "both allowed connections were used");
}

#[test]
fn max_message_rate_holds_within_ten_percent() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start("", &relay_to(&sink.addr, "", "max_message_rate = '20/s', connection_limit = 4"));
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "10", "--messages", "120", "--size", "512", "--target", server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success());
    assert!(sink.wait_for(120, Duration::from_secs(30)), "delivered {}", sink.count());
    let mut times: Vec<std::time::SystemTime> = sink.messages().iter().map(|m| m.at).collect();
    times.sort();
    // once the initial burst of 20 is spent the rate is the limit: 80 messages in ~4 s
    let steady = times[119].duration_since(times[39]).unwrap().as_secs_f64();
    let rate = 80.0 / steady;
    assert!((18.0..=22.0).contains(&rate), "steady rate {rate:.1}/s over {steady:.2}s");
}

#[test]
fn dns_mx_resolution_null_mx_and_prohibited_hosts() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap();
    let extra = format!(
        r#"
kumo.on('pre_init', function()
end)
kumo.on('get_queue_config', function(domain) return kumo.make_queue_config {{ retry_interval = '1s' }} end)
kumo.on('get_egress_path_config', function(domain, source, site)
  if domain == 'allowed.example' then
    return kumo.make_egress_path {{ enable_tls = 'Disabled', smtp_port = {port}, prohibited_hosts = {{}} }}
  end
  return kumo.make_egress_path {{ enable_tls = 'Disabled', smtp_port = {port} }}
end)
"#
    );
    let dir = temp_dir();
    let mut p = policy(dir.path(), "", &extra);
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "kumo.set_policy_timeout('2 seconds')",
        "kumo.set_policy_timeout('2 seconds')
  kumo.dns.configure_test_resolver [[
$ORIGIN example.
allowed  MX 10 mx1.allowed
mx1.allowed A 127.0.0.1
local    MX 10 mx.local
mx.local A 127.0.0.2
nomail   MX 0 .
]]",
    );
    std::fs::write(&p, text).unwrap();
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    for rcpt in ["a@allowed.example", "b@local.example", "c@nomail.example"] {
        assert_eq!(c.send_mail("s@s.example", &[rcpt], "Subject: dns\r\n\r\nx").code, 250, "{rcpt}");
    }
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    let delivered = wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Delivery").unwrap();
    assert_eq!(delivered["recipient"], "a@allowed.example");
    assert_eq!(delivered["site"], "unspecified->mx1.allowed.example@smtp_client");
    let prohibited = wait_for_record(dir.path(), Duration::from_secs(10), |r| {
        r["type"] == "Bounce" && r["recipient"] == "b@local.example"
    })
    .unwrap();
    assert!(
        prohibited["response"].to_string().contains("5.4.4") || prohibited["response"]["enhanced_code"]["detail"] == 4,
        "{prohibited}"
    );
    let null = wait_for_record(dir.path(), Duration::from_secs(10), |r| {
        r["type"] == "Bounce" && r["recipient"] == "c@nomail.example"
    })
    .unwrap();
    assert_eq!(null["response"]["code"], 556);
    p.pop();
}

#[test]
fn requeue_message_fires_and_can_bounce() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let extra = format!(
        "{}
kumo.on('requeue_message', function(msg, response, context, increment_attempts, delay)
  assert(response:find('451', 1, true), response)
  assert(context[1] == 'LoggedTransientFailure')
  assert(increment_attempts == true and delay > 0)
  if msg:num_attempts() >= 2 then kumo.reject(550, '5.7.1 gave up after ' .. msg:num_attempts()) end
end)",
        relay_to(&sink.addr, "", "")
    );
    let (dir, server) = start("", &extra);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["tempfail@dest.example"], "Subject: t\r\n\r\nx").code, 250);
    let b = wait_for_record(dir.path(), Duration::from_secs(15), |r| r["type"] == "Bounce").expect("Bounce");
    assert_eq!(b["response"]["content"], "gave up after 2");
    assert_eq!(record_counts(dir.path()).get("TransientFailure"), Some(&2));
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn kill_9_while_delivering_delivers_everything_after_restart() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let p = policy(
        dir.path(),
        "",
        &relay_to(&sink.addr, "", "connection_limit = 1, max_message_rate = '10/s,max_burst=1'"),
    );
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    let mut accepted = std::collections::HashSet::new();
    // 100 messages at 10/s take 10 s to deliver: the kill lands mid-delivery even when a
    // loaded machine takes seconds to accept them
    for i in 0..100 {
        let rcpt = format!("r{i}@dest.example");
        assert_eq!(c.send_mail("a@s.example", &[&rcpt], "Subject: crash\r\n\r\nx").code, 250);
        accepted.insert(rcpt);
    }
    assert!(sink.wait_for(10, Duration::from_secs(10)));
    server.kill9();
    let before = sink.count();
    assert!(before < 100, "the crash happened mid-delivery ({before} delivered)");
    let server = Server::start(dir.path(), &p);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::HashSet<String> = sink.messages().into_iter().map(|m| m.to[0].clone()).collect();
        if accepted.is_subset(&got) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missing {} after restart", accepted.difference(&got).count());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sink.count() <= 150 + 2, "duplicates bounded by what was in flight: {}", sink.count());
    assert!(server.stop().success());
    // a message leaves the spool only after its Delivery record is written: every arrival
    // has its record, the crash notwithstanding
    let recorded: std::collections::HashSet<String> = harness::log_records(dir.path())
        .into_iter()
        .filter(|r| r["type"] == "Delivery")
        .filter_map(|r| r["recipient"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<String> = accepted.difference(&recorded).cloned().collect();
    assert!(missing.is_empty(), "delivered without a Delivery record: {missing:?}");
}

#[test]
fn a_full_ready_queue_holds_back_without_long_stalls() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start("", &relay_to(&sink.addr, "", "max_ready = 5, connection_limit = 1"));
    let started = std::time::Instant::now();
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "10", "--messages", "100", "--size", "512", "--target", server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success());
    assert!(sink.wait_for(100, Duration::from_secs(20)), "delivered {}", sink.count());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn enable_tls_modes_against_a_self_signed_starttls_server() {
    // the destination is another wasmta: it offers STARTTLS with a self-signed certificate
    let (dest_dir, dest) = start("", "");
    let cases =
        [("RequiredInsecure", true), ("OpportunisticInsecure", true), ("Opportunistic", false), ("Required", false)];
    for (mode, delivers) in cases {
        let (dir, server) = start(
            "",
            &relay_to(dest.addr(), "", "").replace("enable_tls = 'Disabled'", &format!("enable_tls = '{mode}'")),
        );
        let mut c = Client::ehlo(server.addr());
        assert_eq!(c.send_mail("a@s.example", &[&format!("{mode}@dest.example")], "Subject: tls\r\n\r\nx").code, 250);
        if delivers {
            let d = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Delivery").expect(mode);
            assert_eq!(d["tls_protocol_version"], "TLSv1_3", "{mode}: {d}");
            assert!(d["tls_cipher"].as_str().unwrap().starts_with("TLS13_"), "{d}");
        } else {
            let tf =
                wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").expect(mode);
            assert!(tf["response"]["content"].as_str().unwrap().contains("TLS handshake"), "{mode}: {tf}");
        }
        drop(server);
    }
    assert!(dest.stop().success());
    let got: Vec<String> = spooled(dest_dir.path()).iter().map(|m| m.recipient().unwrap().user().to_string()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&"RequiredInsecure".to_string()) && got.contains(&"OpportunisticInsecure".to_string()));
}

#[test]
fn required_tls_without_starttls_tempfails() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, _server) =
        start("", &relay_to(&sink.addr, "", "").replace("enable_tls = 'Disabled'", "enable_tls = 'Required'"));
    let mut c = Client::ehlo(_server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: tls\r\n\r\nx").code, 250);
    let tf = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
    assert!(tf["response"]["content"].as_str().unwrap().contains("does not offer STARTTLS"), "{tf}");
    assert_eq!(sink.count(), 0);
}

#[test]
fn egress_pools_and_sources_choose_how_mail_leaves() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let extra = format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ egress_pool = 'pool-a', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_pool', function(name)
  assert(name == 'pool-a', name)
  return kumo.make_egress_pool {{ name = 'pool-a', entries = {{ {{ name = 'ip-1', weight = 1 }} }} }}
end)
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source {{ name = name, source_address = '127.0.0.1', ehlo_domain = name .. '.sender.example' }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  assert(source == 'ip-1', source)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        sink = sink.addr
    );
    let (dir, server) = start("", &extra);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: pool\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    assert_eq!(sink.messages()[0].ehlo, "ip-1.sender.example");
    let d = wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Delivery").unwrap();
    assert_eq!(d["egress_pool"], "pool-a");
    assert_eq!(d["egress_source"], "ip-1");
    assert_eq!(d["site"], format!("ip-1->mx_list:{}@smtp_client", sink.addr));
    drop(server);
}

#[test]
fn requeue_message_can_reroute_to_another_queue_immediately() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let extra = format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1 hour', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function() return kumo.make_egress_path {{ enable_tls = 'Disabled' }} end)
kumo.on('requeue_message', function(msg) msg:set_meta('queue', 'rerouted.example') end)
"#,
        sink = sink.addr
    );
    let (dir, _server) = start("", &extra);
    let mut c = Client::ehlo(_server.addr());
    assert_eq!(c.send_mail("a@s.example", &["flaky1-x@dest.example"], "Subject: r\r\n\r\nx").code, 250);
    let d = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Delivery")
        .expect("delivered without waiting an hour");
    assert_eq!(d["queue"], "rerouted.example");
    assert_eq!(d["num_attempts"], 2);
}

#[test]
fn skip_hosts_that_cover_every_host_tempfail() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, _server) = start("", &relay_to(&sink.addr, "", "skip_hosts = { '127.0.0.0/8' }"));
    let mut c = Client::ehlo(_server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: s\r\n\r\nx").code, 250);
    let tf = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
    assert_eq!(tf["response"]["code"], 451);
    assert!(tf["response"]["content"].as_str().unwrap().contains("skip_hosts"), "{tf}");
    assert_eq!(sink.count(), 0);
}
