//! Several nodes, one set of limits (`kumo.configure_redis_throttles`): two wasmta
//! processes with their own spools relay to one sink through the same path, and a real
//! `redis-server` (or a three-master cluster) holds the rate, the connection leases and
//! the automation rules for both. Without Redis each node would hold the limits alone:
//! twice the rate and twice the connections reach the provider.

mod harness;

use harness::redis::{Cluster, Redis};
use harness::sink::Sink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A node's policy: relays everything to `sink` with these path options, limits shared
/// through `redis_node` (a Lua string or list) with these extra Redis options.
fn node_policy(dir: &Path, sink: &str, redis_node: &str, redis_opts: &str, path_opts: &str, extra: &str) {
    let text = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.configure_redis_throttles {{ node = {redis_node}, {redis_opts} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
{extra}
"#
    );
    // a policy with the shaping helper has its own get_egress_path_config
    let text = match extra.contains("get_egress_path_config") {
        true => text,
        false => format!(
            "{text}kumo.on('get_egress_path_config', function(domain, source, site)\n  return kumo.make_egress_path {{ enable_tls = 'Disabled', {path_opts} }}\nend)\n"
        ),
    };
    harness::write_policy_text(dir, &text);
}

/// The fleet tests measure rates and timings: they run one at a time, so that nine of
/// them (eighteen servers) do not share two cores at once.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_node(dir: &Path) -> harness::Server {
    harness::Server::start(dir, &dir.join("init.lua"))
}

/// Injects `n` messages into `server` with `wasmta load` (10 connections).
fn inject(server: &harness::Server, n: usize) {
    inject_to(server, n, "user@fleet.example");
}

/// [`inject`] to `recipient`.
fn inject_to(server: &harness::Server, n: usize, recipient: &str) {
    let out = Command::new(harness::binary())
        .args(["load", "--target", server.addr(), "--connections", "10", "--size", "512"])
        .args(["--messages", &n.to_string(), "--recipient", recipient])
        .output()
        .expect("wasmta load");
    assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));
}

fn peak(sink: &Sink) -> u64 {
    sink.stats()["peak_connections"].as_u64().unwrap_or(0)
}

/// Two nodes with `path_opts` relaying `per_node` messages each: the sink's rate over
/// `window` once the burst is spent, and its peak connections.
fn two_node_rate(redis_node: &str, path_opts: &str, per_node: usize, window: Duration) -> (f64, u64) {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (a, b) = (harness::temp_dir(), harness::temp_dir());
    for dir in [&a, &b] {
        node_policy(dir.path(), &sink.addr, redis_node, "", path_opts, "");
    }
    let (na, nb) = (start_node(a.path()), start_node(b.path()));
    std::thread::scope(|s| {
        s.spawn(|| inject(&na, per_node));
        s.spawn(|| inject(&nb, per_node));
    });
    // the GCRA burst (max_burst = the limit) goes first; measure the steady rate after it
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (sink.count(), Instant::now());
    let mut last = c0;
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        let c = sink.count();
        eprint!("{} ", c - last);
        last = c;
    }
    eprintln!();
    let (c1, t1) = (sink.count(), Instant::now());
    let rate = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
    assert!(c1 < 2 * per_node, "the window ended before the queues ran dry ({c1} delivered): rate {rate:.1}/s");
    (rate, peak(&sink))
}

#[test]
fn two_nodes_hold_one_rate_and_one_connection_limit_through_redis() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let node = format!("'{}'", redis.url());
    // each node's backlog alone outlasts the window: which node holds the leases at a
    // given moment is not fair-shared (a node with mail keeps its connections)
    let (rate, peak) = two_node_rate(
        &node,
        "max_message_rate = '50/s', connection_limit = 4, max_ready = 2000",
        1300,
        Duration::from_secs(20),
    );
    eprintln!("shared: {rate:.1}/s combined, peak {peak} connections");
    assert!((47.5..=52.5).contains(&rate), "combined rate {rate:.1}/s: expected 50/s ±5 %");
    assert!(peak <= 4, "the sink saw {peak} connections at once; the fleet's limit is 4");
    // `local:` keeps each node's limits its own: twice the rate reaches the sink
    let (rate, peak) = two_node_rate(
        &node,
        "max_message_rate = 'local:50/s', connection_limit = 'local:4'",
        600,
        Duration::from_secs(5),
    );
    eprintln!("local: {rate:.1}/s combined, peak {peak} connections");
    assert!(rate > 90.0, "with local: limits each node sends 50/s: {rate:.1}/s combined");
    assert!(peak > 4, "with local: limits each node opens its own 4 connections: peak {peak}");
}

#[test]
fn a_redis_cluster_of_three_masters_holds_the_limits_the_same() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(cluster) = Cluster::start(d.path()) else { return };
    // 600 at 50/s outlast the 10 s even when one node holds every lease
    let (rate, peak) = two_node_rate(
        &cluster.lua_nodes(),
        "max_message_rate = '50/s', connection_limit = 4",
        600,
        Duration::from_secs(8),
    );
    eprintln!("cluster: {rate:.1}/s combined, peak {peak} connections");
    assert!((47.5..=52.5).contains(&rate), "combined rate {rate:.1}/s: expected 50/s ±5 %");
    assert!(peak <= 4, "peak {peak} connections; the fleet's limit is 4");
}

#[test]
fn a_killed_nodes_leases_lapse_within_the_lease_time() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let (a, b) = (harness::temp_dir(), harness::temp_dir());
    // each node sends at most 20/s on its own: A's 200 keep its 4 connections busy
    let path = "connection_limit = 4, max_message_rate = 'local:20/s,max_burst=1'";
    for dir in [&a, &b] {
        node_policy(dir.path(), &sink.addr, &format!("'{}'", redis.url()), "lease_duration = '3s'", path, "");
    }
    let (na, nb) = (start_node(a.path()), start_node(b.path()));
    inject_to(&na, 200, "a@fleet.example");
    assert!(sink.wait_for(10, Duration::from_secs(20)), "node A delivers");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.stats()["connections"], 4, "A uses its 4 connections");
    let key = redis.cli(&["--scan", "--pattern", "wasmta:lease:*"]);
    assert_eq!(redis.cli(&["zcard", key.trim()]).trim(), "4", "A holds 4 leases in Redis ({key})");
    assert_eq!(na.metric("redis_connection_leases_held"), Some(4.0));
    // B waits for A's connections: the fleet's limit is full
    inject_to(&nb, 20, "b@fleet.example");
    std::thread::sleep(Duration::from_secs(2));
    let from_b = |sink: &Sink| sink.messages().iter().filter(|m| m.to[0] == "b@fleet.example").count();
    assert_eq!(from_b(&sink), 0, "B must not connect while A holds every lease");
    assert_eq!(peak(&sink), 4);
    let killed = Instant::now();
    na.kill9();
    let deadline = killed + Duration::from_secs(15);
    while from_b(&sink) < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed.elapsed();
    assert_eq!(from_b(&sink), 20, "B delivers once A's leases lapse");
    eprintln!("B delivered its 20 {took:?} after A was killed (lease 3 s)");
    assert!(took <= Duration::from_secs(6), "A's leases lapse within the lease time: took {took:?}");
    assert_eq!(sink.stats()["connections"], 4, "B uses the whole limit");
    assert!(peak(&sink) <= 4, "never more than the limit: peak {}", peak(&sink));
    drop(nb);
}

#[test]
fn redis_stopped_for_ten_seconds_loses_nothing_and_sends_nothing_past_the_limits() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let (a, b) = (harness::temp_dir(), harness::temp_dir());
    let path = "max_message_rate = '50/s', connection_limit = 4";
    for dir in [&a, &b] {
        node_policy(dir.path(), &sink.addr, &format!("'{}'", redis.url()), "response_timeout = '500ms'", path, "");
    }
    let (na, nb) = (start_node(a.path()), start_node(b.path()));
    std::thread::scope(|s| {
        s.spawn(|| inject(&na, 400));
        s.spawn(|| inject(&nb, 400));
    });
    std::thread::sleep(Duration::from_secs(3));
    redis.pause();
    std::thread::sleep(Duration::from_secs(1));
    let held = sink.count();
    std::thread::sleep(Duration::from_secs(9));
    let during = sink.count() - held;
    redis.resume();
    eprintln!("{held} delivered before the pause, {during} while Redis was stopped");
    assert!(during <= 4, "nothing may pass the shared limits unchecked while Redis is away: {during} delivered");
    assert!(na.wait_for_stderr("shared limits wait until Redis answers", Duration::from_secs(1)), "said why");
    assert!(na.metric("redis_errors_total").unwrap_or(0.0) > 0.0, "counted");
    assert!(sink.wait_for(800, Duration::from_secs(40)), "both nodes resume: {} of 800", sink.count());
    assert!(na.wait_for_stderr("answering again", Duration::from_secs(1)), "said it is back: {}", na.stderr_text());
    assert!(peak(&sink) <= 4, "peak {} connections", peak(&sink));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 800, "each message once");
    for dir in [&a, &b] {
        let bounced = harness::log_records(dir.path()).iter().filter(|r| r["type"] == "Bounce").count();
        assert_eq!(bounced, 0);
    }
}

#[test]
fn a_suspend_rule_fired_on_one_node_stops_the_other_within_a_second() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let (a, b) = (harness::temp_dir(), harness::temp_dir());
    // connections stay each node's own here, so A's attempt need not wait for B's
    let shaping = "[\"default\"]\nenable_tls = \"Disabled\"\nmax_message_rate = \"20/s\"\nconnection_limit = \"local:4\"\n\n[[\"default\".automation]]\nregex = \"you said tempfail\"\naction = \"Suspend\"\nduration = \"1h\"\n";
    let helper = r#"local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation { no_default_files = true, extra_files = { '{d}/shaping.toml' } }
kumo.on('get_egress_path_config', shaper.get_egress_path_config)"#;
    for dir in [&a, &b] {
        std::fs::write(dir.path().join("shaping.toml"), shaping).unwrap();
        node_policy(dir.path(), &sink.addr, &format!("'{}'", redis.url()), "", "", helper);
    }
    let (na, nb) = (start_node(a.path()), start_node(b.path()));
    // B sends a steady stream
    inject(&nb, 300);
    assert!(sink.wait_for(20, Duration::from_secs(10)));
    // A meets a 451 that fires the rule
    let mut c = harness::smtp::Client::ehlo(na.addr());
    assert_eq!(c.send_mail("a@s.example", &["tempfail@fleet.example"], "Subject: t\r\n\r\nx").code, 250);
    assert!(na.wait_for_stderr("automation: a rule of shaping entry default matched", Duration::from_secs(10)));
    let fired = Instant::now();
    assert!(
        nb.wait_for_stderr("(fired on node", Duration::from_secs(1)),
        "B applies A's action within a second: {}",
        nb.stderr_text()
    );
    // B's deliveries stop: one in flight may finish
    std::thread::sleep(Duration::from_secs(1).saturating_sub(fired.elapsed()) + Duration::from_millis(200));
    let stopped = sink.count();
    std::thread::sleep(Duration::from_secs(2));
    assert!(sink.count() <= stopped + 1, "B kept delivering: {stopped} then {}", sink.count());
    assert!(sink.count() < 300, "B's queue is held, not drained");
    // a node that starts later picks up the rule still in force
    let c3 = harness::temp_dir();
    std::fs::write(c3.path().join("shaping.toml"), shaping).unwrap();
    node_policy(c3.path(), &sink.addr, &format!("'{}'", redis.url()), "", "", helper);
    let nc = start_node(c3.path());
    assert!(nc.wait_for_stderr("(fired on node", Duration::from_secs(2)), "a late node picks the rule up");
    drop((na, nb, nc));
}

#[test]
fn a_wasm_component_configures_the_fleet_through_its_config_import() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    let data = format!("data={}", dir.path().display());
    let node = format!("redis={}", redis.url());
    let args = ["--set", "listen=127.0.0.1:0", "--set", &data, "--set", "test-dns=1", "--set", &node];
    let server = harness::Server::start_args(dir.path(), &harness::plugins::component("standalone"), &args);
    assert!(server.wait_for_stderr(&format!("shared through {}", redis.url()), Duration::from_secs(5)));
    let mut c = harness::smtp::Client::ehlo(server.addr());
    let to = format!("r@{port}.smarthost.test");
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: one\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    // the open connection holds its connection_limit lease in Redis
    let keys = redis.cli(&["--scan", "--pattern", "wasmta:lease:connection_limit:*"]);
    assert!(!keys.trim().is_empty(), "no lease in Redis");
    assert_eq!(redis.cli(&["zcard", keys.lines().next().unwrap()]).trim(), "1");
}

#[test]
fn with_a_fallback_node_count_a_node_holds_its_share_while_redis_is_gone() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(mut redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let a = harness::temp_dir();
    let opts = "fallback_node_count = 2, response_timeout = '300ms', connect_timeout = '300ms'";
    node_policy(a.path(), &sink.addr, &format!("'{}'", redis.url()), opts, "max_message_rate = '50/s'", "");
    let na = start_node(a.path());
    redis.stop();
    inject(&na, 400);
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (sink.count(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let rate = (sink.count() - c0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("Redis gone, fallback_node_count = 2: {rate:.1}/s");
    assert!((22.0..=28.0).contains(&rate), "half of 50/s while Redis is gone: {rate:.1}/s");
    assert!(na.wait_for_stderr("meanwhile local limits at 1/2", Duration::from_secs(1)), "said so");
    // Redis back (empty): the node goes back to the shared limit and finishes
    redis.restart_empty();
    assert!(sink.wait_for(400, Duration::from_secs(30)), "{} of 400", sink.count());
}

#[test]
fn configure_redis_throttles_mistakes_are_named() {
    let _serial = serial();
    for (options, expected) in [
        ("node = 'http://127.0.0.1:6379'", "not a redis:// or rediss:// URL"),
        ("node = 'redis://127.0.0.1:6379', pool_sise = 3", "pool_sise"),
        ("node = 'redis://127.0.0.1:6379', lease_duration = 'soon'", "lease_duration"),
        ("nodes = 'redis://127.0.0.1:6379'", "nodes"),
    ] {
        let dir = harness::temp_dir();
        node_policy(dir.path(), "127.0.0.1:9", "'redis://127.0.0.1:1'", "", "", "");
        let text = std::fs::read_to_string(dir.path().join("init.lua")).unwrap();
        let text = text.replace("node = 'redis://127.0.0.1:1', ", &format!("{options}, "));
        std::fs::write(dir.path().join("init.lua"), text).unwrap();
        let out = Command::new(harness::binary())
            .args(["check", "--policy"])
            .arg(dir.path().join("init.lua"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{options}: accepted\n{text}");
        assert!(text.contains("configure_redis_throttles") && text.contains(expected), "{options}:\n{text}");
    }
}

#[test]
fn a_node_restarted_after_kill_9_gives_back_its_old_leases_at_once() {
    let _serial = serial();
    let d = harness::temp_dir();
    let Some(redis) = Redis::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let a = harness::temp_dir();
    // a long lease: without giving them back, the restarted node would wait 60 s
    let path = "connection_limit = 4, max_message_rate = 'local:20/s,max_burst=1'";
    node_policy(a.path(), &sink.addr, &format!("'{}'", redis.url()), "lease_duration = '60s'", path, "");
    let na = start_node(a.path());
    inject(&na, 100);
    assert!(sink.wait_for(10, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.stats()["connections"], 4);
    na.kill9();
    let before = sink.count();
    let na = start_node(a.path());
    assert!(na.wait_for_stderr("gave back 4 connection lease(s)", Duration::from_secs(5)), "{}", na.stderr_text());
    // the spool's remaining messages go out at once, not after the old leases lapse
    assert!(sink.wait_for(before + 20, Duration::from_secs(10)), "{} then {}", before, sink.count());
}
