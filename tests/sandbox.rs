//! The Wasm sandbox (reliability-tests T-43 … T-55): a hostile component never takes the
//! server down, a message it was handling tempfails and is never half-accepted, a crash
//! loop opens the plugin's circuit, and fuel makes runs deterministic.

mod harness;

use harness::plugins::component;
use harness::smtp::Client;
use harness::{spooled, start_policy_text};
use std::time::{Duration, Instant};

/// The hostile plugin with these `kumo.wasm.load` options, an HTTP listener for /metrics.
fn hostile(options: &str) -> String {
    format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.wasm.load {{ path = '{}', {options} }}
end)
"#,
        component("hostile").display()
    )
}

fn mail(c: &mut Client, mode: &str) -> harness::smtp::Reply {
    c.send_mail("a@s.example", &["r@dest.example"], &format!("Subject: {mode}\r\nX-Hostile: {mode}\r\n\r\nx"))
}

#[test]
fn a_hostile_component_never_takes_the_server_down() {
    // T-43 infinite loop, T-45 memory bomb, T-47 panic, T-48 stack overflow
    let (dir, server) = start_policy_text(&hostile("budget = '500ms', circuit_failures = 100"));
    let mut c = Client::ehlo(server.addr());
    for mode in ["loop", "panic", "memory", "stack", "loop", "panic"] {
        let started = Instant::now();
        let r = mail(&mut c, mode);
        assert!(r.starts("451 4.3.0"), "{mode}: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode} took {:?}", started.elapsed());
    }
    let r = mail(&mut c, "fine");
    assert_eq!(r.code, 250, "a fresh instance serves the next message: {r:?}");
    assert_eq!(server.metric("wasm_plugin_failures_total{plugin=\"hostile.wasm\",reason=\"trap\"}"), Some(6.0));
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 1, "only the accepted message was stored");
}

#[test]
fn hostile_host_call_arguments_get_errors_not_panics() {
    // T-51: forged handle, invalid JSON, invalid address, a 4 MiB log line
    let (dir, server) = start_policy_text(&hostile("circuit_failures = 100"));
    let mut c = Client::ehlo(server.addr());
    let r = mail(&mut c, "bad-handle");
    assert!(r.starts("451 4.3.0"), "a forged handle traps the guest, not the host: {r:?}");
    for mode in ["bad-json", "bad-address", "huge-log"] {
        let r = mail(&mut c, mode);
        assert_eq!(r.code, 250, "{mode}: the host answered with an error result: {r:?}");
    }
    assert!(server.stderr_text().lines().all(|l| l.len() < 64 << 10), "the host capped the log line");
    assert!(server.stop().success(), "no panic");
    assert_eq!(spooled(dir.path()).len(), 3);
}

#[test]
fn a_crash_loop_opens_the_circuit_and_a_probe_closes_it() {
    // T-50
    let (dir, server) =
        start_policy_text(&hostile("circuit_failures = 3, circuit_window = '1m', circuit_cooldown = '2s'"));
    let mut c = Client::ehlo(server.addr());
    for _ in 0..3 {
        assert!(mail(&mut c, "panic").starts("451 4.3.0"));
    }
    let started = Instant::now();
    let r = mail(&mut c, "fine");
    assert!(r.starts("451 4.3.0"), "the open circuit refuses even good mail, without a verdict no 250: {r:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "fast tempfail");
    assert_eq!(server.metric("wasm_plugin_circuit_open{plugin=\"hostile.wasm\"}"), Some(1.0));
    assert_eq!(server.metric("wasm_plugin_failures_total{plugin=\"hostile.wasm\",reason=\"circuit_open\"}"), Some(1.0));
    assert!(server.wait_for_stderr("circuit opened after repeated failures", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(2200));
    let r = mail(&mut c, "fine");
    assert_eq!(r.code, 250, "after the cooldown one probe goes through and closes the circuit: {r:?}");
    assert_eq!(server.metric("wasm_plugin_circuit_open{plugin=\"hostile.wasm\"}"), Some(0.0));
    assert_eq!(mail(&mut c, "fine").code, 250);
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 2, "nothing accepted without a verdict, nothing lost");
}

#[test]
fn shutdown_cancels_a_long_hook_with_421() {
    // T-54
    let (dir, server) = start_policy_text(&hostile("budget = '60s'"));
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    c.cmd("RCPT TO:<r@dest.example>");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: loop\r\nX-Hostile: loop\r\n\r\nx\r\n.\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    server.terminate();
    let r = c.reply();
    assert!(r.starts("421 4.3.2"), "the in-flight transaction is told to come back: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "cancelled at the next epoch tick, not after 60 s");
    assert!(server.stop().success(), "shutdown completes");
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn fuel_makes_verdicts_and_costs_deterministic() {
    // T-55: the same corpus twice, with a fuel budget instead of a deadline
    let run = || {
        let (_dir, server) = start_policy_text(&hostile("fuel = 20000000, budget = '60s', circuit_failures = 100"));
        let mut c = Client::ehlo(server.addr());
        let replies: Vec<u16> = ["fine", "loop", "fine", "bad-json"].iter().map(|m| mail(&mut c, m).code).collect();
        let fuel = server.metric("wasm_plugin_fuel_consumed_total{plugin=\"hostile.wasm\"}").expect("fuel metric");
        assert!(server.stop().success());
        (replies, fuel)
    };
    let (first, fuel) = run();
    assert_eq!(first, vec![250, 451, 250, 250], "the loop runs out of fuel, not time");
    assert!(fuel >= 20_000_000.0, "the loop burnt its whole budget: {fuel}");
    assert_eq!(run(), (first, fuel), "same verdicts, same fuel");
}

#[test]
fn throttles_work_the_same_from_lua_and_from_a_component() {
    // the component's `throttle` import and Lua's kumo.make_throttle share one registry
    let text = hostile("circuit_failures = 100")
        + r#"
kumo.on('smtp_server_mail_from', function(sender)
  if sender.user == 'lua-throttled' then
    local t = kumo.make_throttle('lua-test', '2/min'):throttle()
    if t.throttled then kumo.reject(451, '4.7.1 throttled by lua') end
  end
end)
"#;
    let (_dir, server) = start_policy_text(&text);
    let mut c = Client::ehlo(server.addr());
    let codes: Vec<u16> = (0..3).map(|_| mail(&mut c, "throttle").code).collect();
    assert_eq!(codes, vec![250, 250, 451], "2/min: the third is throttled");
    let lua: Vec<u16> = (0..3)
        .map(|_| c.send_mail("lua-throttled@s.example", &["r@dest.example"], "Subject: t\r\n\r\nx").code)
        .collect();
    assert_eq!(lua, vec![250, 250, 451]);
    assert!(server.stop().success());
}

#[test]
fn a_routing_hook_that_traps_requeues_the_message_as_a_transient_failure() {
    // T-49
    let text = format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.wasm.load {{ path = '{}', circuit_failures = 100 }}
end)
"#,
        component("hostile_router").display()
    );
    let (dir, server) = start_policy_text(&text);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@trap.example"], "Subject: t\r\n\r\nx").code, 250);
    let t = harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "TransientFailure")
        .expect("a TransientFailure record");
    let text = t["response"]["content"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("get_queue_config"), "{t}");
    assert_eq!(t["num_attempts"], 1, "the attempt counts");
    assert!(server.stop().success(), "the server survived the trap");
    let kept = spooled(dir.path());
    assert_eq!(kept.len(), 1, "nothing lost: the message waits for its retry");
    assert_eq!(kept[0].num_attempts(), 1);
}

#[test]
fn a_component_has_no_network_and_no_files() {
    // T-52: the WASI context grants nothing; attempts fail inside the guest
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let (_dir, server) = start_policy_text(&hostile("circuit_failures = 100"));
    let mut c = Client::ehlo(server.addr());
    let body = format!("Subject: c\r\nX-Hostile: connect\r\nX-Target: {target}\r\n\r\nx");
    let r = c.send_mail("a@s.example", &["r@dest.example"], &body);
    assert_eq!(r.code, 250, "the connect was refused to the guest: {r:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing reached the listener");
    assert_eq!(mail(&mut c, "file").code, 250, "no file system either");
    assert!(server.stop().success());
}
