//! The deferred queue (`deferred_queue = true`): reception skips
//! `smtp_server_message_received` and always answers 250; the deferred injector runs
//! `smtp_server_message_deferred_inject` later and rebinds, bounces or retries.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, log_records, policy, record_counts, spooled, start, temp_dir, wait_for_record};
use std::time::Duration;

/// Routes normal queues to the sink; `inject` is the deferred-inject handler body.
fn deferred_policy(sink: &str, inject: &str) -> String {
    format!(
        r#"
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  assert(domain ~= 'deferred_smtp_inject.kumomta.internal', 'never asked for the deferred queue')
  return kumo.make_queue_config {{ retry_interval = '1 hour', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  if routing_domain == 'deferred_smtp_inject.kumomta.internal' then
    return kumo.make_egress_path {{ connection_limit = kumo.available_parallelism(), refresh_strategy = 'Epoch', max_ready = 80000 }}
  end
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
kumo.on('smtp_server_message_received', function(msg)
  kumo.reject(550, '5.7.1 message_received must not run on a deferred listener')
end)
kumo.on('smtp_server_message_deferred_inject', function(msg, conn_meta)
  assert(conn_meta:get_meta('received_from'), 'conn_meta is rebuilt from the message meta')
  {inject}
end)
"#
    )
}

#[test]
fn deferred_listener_rebinds_and_delivers() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) = start("deferred_queue = true,", &deferred_policy(&sink.addr, "msg:set_meta('tenant', 'acme')"));
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["x@dest.example"], "Subject: deferred\r\n\r\nbody");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    let delivered = wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Delivery").unwrap();
    assert_eq!(delivered["queue"], "acme@dest.example", "the handler's tenant re-routed the message");
    let c = record_counts(dir.path());
    assert_eq!(c.get("Reception"), Some(&1));
    assert_eq!(c.get("DeferredInjectionRebind"), Some(&1));
    assert_eq!(c.get("Delivery"), Some(&1));
    assert_eq!(c.len(), 3, "{c:?}");
    let records = log_records(dir.path());
    let reception = records.iter().find(|r| r["type"] == "Reception").unwrap();
    assert_eq!(reception["queue"], "deferred_smtp_inject.kumomta.internal");
    let rebind = records.iter().find(|r| r["type"] == "DeferredInjectionRebind").unwrap();
    assert_eq!(rebind["delivery_protocol"], "DeferredSmtpInjection");
    assert_eq!(rebind["site"], "unspecified->deferred_smtp_inject.kumomta.internal@defersmtpinject");
    let text = String::from_utf8_lossy(&sink.messages()[0].data).to_string();
    assert!(text.starts_with("X-KumoRef: ") && text.contains("\r\nReceived: "), "{text}");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn a_5xx_rejection_bounces_and_empties_the_spool() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (dir, server) =
        start("deferred_queue = true,", &deferred_policy(&sink.addr, "kumo.reject(550, '5.7.1 not today')"));
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: no\r\n\r\nx").code, 250);
    let b = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Bounce").unwrap();
    assert_eq!(b["response"]["code"], 550);
    assert_eq!(b["response"]["content"], "not today");
    assert_eq!(b["delivery_protocol"], "DeferredSmtpInjection");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
    assert_eq!(sink.count(), 0);
}

#[test]
fn a_4xx_rejection_or_an_error_retries_on_the_one_minute_schedule() {
    for inject in ["kumo.reject(451, '4.7.1 later')", "error('handler broke')"] {
        let d = temp_dir();
        let sink = Sink::start(d.path());
        let extra = format!(
            "{}
kumo.on('requeue_message', function(msg, response) kumo.log_info('requeue fired: ' .. response) end)",
            deferred_policy(&sink.addr, inject)
        );
        let (dir, server) = start("deferred_queue = true,", &extra);
        let mut c = Client::ehlo(server.addr());
        assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: later\r\n\r\nx").code, 250);
        let tf = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").unwrap();
        assert_eq!(tf["queue"], "deferred_smtp_inject.kumomta.internal", "{inject}");
        assert!(server.wait_for_stderr("requeue fired: 45", Duration::from_secs(5)), "{inject}");
        assert!(server.stop().success());
        let msgs = spooled(dir.path());
        assert_eq!(msgs.len(), 1, "{inject}: kept for a retry");
        let m = &msgs[0];
        assert_eq!(m.queue_name(), "deferred_smtp_inject.kumomta.internal");
        assert_eq!(m.num_attempts(), 1);
        let wait = m.due().unwrap() - chrono::Utc::now().timestamp();
        assert!((50..=65).contains(&wait), "{inject}: next attempt in {wait}s, expected about one minute");
        assert_eq!(sink.count(), 0);
    }
}

#[test]
fn the_deferred_queue_backs_off_1_2_4_minutes_for_a_week() {
    use wasmta::queue::retry::delay_for_attempt;
    let c = wasmta::queue::deferred_queue_config();
    let minutes: Vec<u64> =
        (0..4).map(|a| delay_for_attempt(c.retry_interval, c.max_retry_interval, a).as_secs() / 60).collect();
    assert_eq!(minutes, [1, 2, 4, 8]);
    assert_eq!(c.max_age, Duration::from_secs(7 * 86400));
}

#[test]
fn a_restart_resumes_the_deferred_queue() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    // first run: the injector is slow, so the message is still in the deferred queue
    let slow = policy(dir.path(), "deferred_queue = true,", &deferred_policy(&sink.addr, "kumo.sleep(1.5)"));
    let server = Server::start(dir.path(), &slow);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: resume\r\n\r\nx").code, 250);
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    assert_eq!(sink.count(), 0);
    // second run: enumeration puts it back into the deferred queue and it is processed
    let fast = policy(dir.path(), "deferred_queue = true,", &deferred_policy(&sink.addr, ""));
    let _server = Server::start(dir.path(), &fast);
    assert!(sink.wait_for(1, Duration::from_secs(10)), "the message was not resumed");
    assert!(wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "DeferredInjectionRebind").is_some());
}

#[test]
fn a_normal_listener_still_runs_message_received() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let (_dir, server) = start("", &deferred_policy(&sink.addr, ""));
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["x@dest.example"], "Subject: normal\r\n\r\nx");
    assert!(r.starts("550 5.7.1"), "{r:?}");
}

#[test]
fn deferred_spool_keeps_messages_in_memory_until_the_first_transient_failure() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let inject = "if msg:get_first_named_header_value('Subject') == 'fail' then kumo.reject(451, '4.7.1 later') end
  kumo.sleep(1.5)";
    let p = policy(dir.path(), "deferred_queue = true, deferred_spool = true,", &deferred_policy(&sink.addr, inject));
    // the in-flight handler sleeps 1.5 s: leave it room on a loaded machine
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("set_policy_timeout('2 seconds')", "set_policy_timeout('20 seconds')");
    std::fs::write(&p, text).unwrap();
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["x@dest.example"], "Subject: memory\r\n\r\nx").code, 250);
    assert_eq!(c.send_mail("a@s.example", &["y@dest.example"], "Subject: fail\r\n\r\nx").code, 250);
    assert!(wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure").is_some());
    server.kill9();
    let msgs = spooled(dir.path());
    let rcpts: Vec<String> = msgs.iter().map(|m| m.recipient().unwrap().email()).collect();
    assert_eq!(rcpts, ["y@dest.example"], "only the message that failed once was written to the spool");
}

#[test]
fn the_seeds_shaping_toml_example_sets_the_injector_parallelism() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    // the seed's shaping section, as written
    std::fs::write(
        dir.path().join("shaping.toml"),
        r#"
["deferred_smtp_inject.kumomta.internal"]
# The domain is fake and doesn't resolve, don't try to resolve it
mx_rollup = false
# Set connection_limit to a small multiple of the number of
# CPUs in the system.  Experiment to find what works best in
# your environment.  Try either 1x or 2x number of cpus to start.
connection_limit = 12
# Increase max_ready to something appropriate; since this queue
# is a fan-in, it will typically hold more messages than your
# other queues
max_ready = 80000
"#,
    )
    .unwrap();
    let extra = format!(
        r#"
local shaping = require 'policy-extras.shaping'
local get_path = shaping:setup({{ '{d}/shaping.toml' }})
kumo.on('get_egress_path_config', get_path)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('smtp_server_message_deferred_inject', function(msg)
  local p = get_path('deferred_smtp_inject.kumomta.internal', 'unspecified', 'deferred_smtp_inject.kumomta.internal')
  kumo.log_info('deferred path: connection_limit=' .. p.connection_limit .. ' max_ready=' .. p.max_ready .. ' refresh=' .. p.refresh_strategy)
  kumo.sleep(1)
end)
"#,
        d = dir.path().display(),
        sink = sink.addr
    );
    let p = policy(dir.path(), "deferred_queue = true,", &extra);
    let _server = Server::start(dir.path(), &p);
    let load = std::process::Command::new(harness::binary())
        .args(["load", "--connections", "12", "--messages", "12", "--size", "512", "--target", _server.addr()])
        .output()
        .unwrap();
    assert!(load.status.success());
    assert!(sink.wait_for(12, Duration::from_secs(20)), "delivered {}", sink.count());
    let records = log_records(dir.path());
    let times = |kind: &str| -> Vec<chrono::DateTime<chrono::FixedOffset>> {
        records
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| chrono::DateTime::parse_from_rfc3339(r["event_time"].as_str().unwrap()).unwrap())
            .collect()
    };
    let first = *times("Reception").iter().min().unwrap();
    let last = *times("DeferredInjectionRebind").iter().max().unwrap();
    let took = (last - first).num_milliseconds();
    assert_eq!(times("DeferredInjectionRebind").len(), 12);
    assert!(took < 3000, "12 one-second injections took {took} ms: they did not run 12 at a time");
    assert!(_server.stderr_text().contains("deferred path: connection_limit=12 max_ready=80000 refresh=Epoch"));
    let delivery = records.iter().find(|r| r["type"] == "Delivery").unwrap();
    assert_eq!(delivery["site"], format!("unspecified->mx_list:{}@smtp_client", sink.addr));
}
