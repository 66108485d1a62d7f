//! Hot reload against the real binary: policy files and components replaced while mail
//! flows; nothing lost or tempfailed, every Reception record names its generation, a new
//! version serves within a second of the write, a broken one is refused.

mod harness;

use harness::plugins::component;
use harness::sink::{Sink, relay_to};
use harness::{Server, http_get, log_records};
use std::path::Path;
use std::time::{Duration, Instant};

fn policy_text(dir: &Path, sink: &str, version: u32) -> String {
    format!(
        r#"-- version {version}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.wasm.load {{ path = '{d}/plugin.wasm' }}
end)
kumo.on('smtp_server_rcpt_to', function(recipient)
  -- keeps the injection going for a few seconds
  kumo.sleep(0.004)
end)
{relay}
"#,
        d = dir.display(),
        relay = relay_to(sink, "", "")
    )
}

/// Replaces `path` atomically (write aside, rename), as deploy tools do.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(server: &Server) -> serde_json::Value {
    let (code, body) = http_get(&server.http[0], "/api/admin/reload/v1");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits for generation `want`; returns how long it took.
fn wait_generation(server: &Server, want: u64) -> Duration {
    let start = Instant::now();
    while status(server)["generation"] != want {
        assert!(start.elapsed() < Duration::from_secs(10), "generation {want} never came: {}", status(server));
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn reloads_under_load_lose_nothing_and_take_effect_within_a_second() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let dir = harness::temp_dir();
    let plugin = dir.path().join("plugin.wasm");
    let versions = [std::fs::read(component("message_policy")).unwrap(), std::fs::read(component("hostile")).unwrap()];
    std::fs::write(&plugin, &versions[0]).unwrap();
    let policy = dir.path().join("init.lua");
    std::fs::write(&policy, policy_text(dir.path(), &sink.addr, 1)).unwrap();
    let server = Server::start(dir.path(), &policy);
    assert_eq!(status(&server)["generation"], 1);

    let addr = server.addr().to_string();
    let load = std::thread::spawn(move || {
        std::process::Command::new(harness::binary())
            .args(["load", "--connections", "4", "--messages", "2000", "--size", "1024", "--target", &addr])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));

    let mut generation = 1;
    let mut slowest = Duration::ZERO;
    // three component swaps, two policy edits, and a broken component in the middle
    // (refused; the next swap replaces it)
    for (step, what) in ["wasm", "lua", "wasm", "broken", "wasm", "lua"].iter().enumerate() {
        match *what {
            "wasm" => replace(&plugin, &versions[(step + 1) % 2]),
            "lua" => replace(&policy, policy_text(dir.path(), &sink.addr, step as u32 + 2).as_bytes()),
            _ => {
                replace(&plugin, b"\0asm garbage");
                std::thread::sleep(Duration::from_millis(600));
                let s = status(&server);
                assert_eq!(s["ok"], false, "the broken component was refused: {s}");
                assert_eq!(s["generation"], generation, "nothing changed");
                assert!(s["error"].as_str().unwrap().contains("plugin.wasm"), "{s}");
                continue;
            }
        }
        generation += 1;
        let took = wait_generation(&server, generation);
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("slowest file write to new generation serving: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "a new version took {slowest:?} to serve");

    let out = load.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok=2000 failed=0"), "no message refused or tempfailed during the reloads: {text}");
    assert!(sink.wait_for(2000, Duration::from_secs(60)), "delivered {}", sink.count());
    assert!(server.stop().success());

    let receptions: Vec<u64> = log_records(dir.path())
        .iter()
        .filter(|r| r["type"] == "Reception")
        .map(|r| r["policy_generation"].as_u64().expect("every Reception names its generation"))
        .collect();
    assert_eq!(receptions.len(), 2000);
    let mut seen: Vec<u64> = receptions.clone();
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 3, "the injection spanned several generations: {seen:?}");
    assert!(seen.iter().all(|g| (1..=generation).contains(g)));
}

#[test]
fn wasmta_reload_reports_a_refused_policy_and_restart_needed_settings() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let dir = harness::temp_dir();
    std::fs::write(dir.path().join("plugin.wasm"), std::fs::read(component("hostile")).unwrap()).unwrap();
    let policy = dir.path().join("init.lua");
    std::fs::write(&policy, policy_text(dir.path(), &sink.addr, 1)).unwrap();
    let server = Server::start(dir.path(), &policy);
    let endpoint = format!("http://{}", server.http[0]);
    let reload = || {
        let out =
            std::process::Command::new(harness::binary()).args(["reload", "--endpoint", &endpoint]).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = reload();
    assert!(ok && text.contains("policy generation 2 serving"), "{text}");

    // a syntax error: refused, with file and line
    let good = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{good}\nkumo.on('smtp_server_ehlo', function(\n")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) = reload();
    assert!(!ok, "{text}");
    assert!(text.contains("init.lua:") && text.contains("keeps serving"), "{text}");
    let mut c = harness::smtp::Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: x\r\n\r\nx").code, 250, "still serving");

    // a listener change needs a restart, and says so
    std::fs::write(
        &policy,
        good.replace(
            "kumo.start_esmtp_listener { listen = '127.0.0.1:0' }",
            "kumo.start_esmtp_listener { listen = '127.0.0.1:0', hostname = 'other.test' }",
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) = reload();
    assert!(ok, "{text}");
    assert!(text.contains("applies after a restart: esmtp listeners"), "{text}");
    assert!(server.stop().success());
}

/// A policy as KumoMTA's documentation writes one, with a helper module beside it and a
/// Lua pool that churns contexts (each is used twice, and lives at most 200 ms).
fn churning_policy(dir: &Path, sink: &str, version: u32) -> String {
    format!(
        r#"-- version {version}
local kumo = require 'kumo'
local helpers = require 'helpers'

kumo.set_max_lua_context_use_count(2)
kumo.set_max_lua_context_age(0.2)

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
end)

kumo.on('smtp_server_rcpt_to', function(recipient)
  -- keeps the injection going for a few seconds
  kumo.sleep(0.004)
end)

kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('tenant', helpers.tenant_of(msg))
end)
{relay}
"#,
        d = dir.display(),
        relay = relay_to(sink, "", "")
    )
}

const HELPERS: &str = r#"local mod = {}
function mod.tenant_of(msg)
  -- a little work per message, so the load spans the broken saves
  local sum = 0
  for i = 1, 2000 do sum = sum + i end
  return 'acme'
end
return mod
"#;

#[test]
fn a_broken_save_under_load_with_churning_contexts_tempfails_nothing() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let dir = harness::temp_dir();
    let policy = dir.path().join("init.lua");
    let helpers = dir.path().join("helpers.lua");
    std::fs::write(&helpers, HELPERS).unwrap();
    std::fs::write(&policy, churning_policy(dir.path(), &sink.addr, 1)).unwrap();
    let server = Server::start(dir.path(), &policy);

    let addr = server.addr().to_string();
    let load = std::thread::spawn(move || {
        std::process::Command::new(harness::binary())
            .args(["load", "--connections", "4", "--messages", "3000", "--size", "1024", "--target", &addr])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));

    // the main file saved half-written (an editor's partial save): refused
    let good = churning_policy(dir.path(), &sink.addr, 2);
    std::fs::write(&policy, &good[..good.len() / 2]).unwrap();
    let refused = |server: &Server| {
        let start = Instant::now();
        while status(server)["ok"] != false {
            assert!(start.elapsed() < Duration::from_secs(10), "the broken save was never refused");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    refused(&server);
    // contexts keep being made for generation 1 while the file on disk is broken
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&policy, &good).unwrap();
    wait_generation(&server, 2);
    // then a required module breaks instead
    std::fs::write(&helpers, "local mod = {}\nfunction mod.tenant_of(msg)\n  return 'acme'\n").unwrap();
    refused(&server);
    assert_eq!(status(&server)["generation"], 2, "the old generation keeps serving");
    std::thread::sleep(Duration::from_millis(800));
    assert!(!load.is_finished(), "the load spanned both broken saves");

    let out = load.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok=3000 failed=0"), "no message tempfailed around the broken saves: {text}");
    assert!(
        !server.stderr_text().contains("cannot create a Lua context"),
        "contexts of the serving generation never read the broken files"
    );
    assert!(sink.wait_for(3000, Duration::from_secs(60)), "delivered {}", sink.count());
    assert!(server.stop().success());
}
