//! Policy components: the example Rust plugin (`plugins/rust/message-policy`) loaded with
//! `kumo.wasm.load`, answering exactly as the same policy written in Lua.

mod harness;

use harness::plugins::{LUA_EQUIVALENT, component};
use harness::smtp::Client;
use harness::{spooled, start_policy_text};
use std::path::PathBuf;

fn plugin() -> PathBuf {
    component("message_policy")
}

fn policy_text(handler: &str) -> String {
    format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  {load}
end)
kumo.on('smtp_server_mail_from', function(sender)
  if sender.domain == 'lua-blocked.example' then kumo.reject(550, '5.7.1 blocked by lua') end
end)
{lua}
"#,
        load = if handler == "wasm" {
            format!("kumo.wasm.load {{ path = '{}' }}", plugin().display())
        } else {
            String::new()
        },
        lua = if handler == "lua" { LUA_EQUIVALENT } else { "" },
    )
}

/// The corpus: (sender, headers) → the replies a client sees.
fn run_corpus(handler: &str) -> (Vec<String>, Vec<(String, String, bool)>) {
    let (dir, server) = start_policy_text(&policy_text(handler));
    let mut c = Client::ehlo(server.addr());
    let corpus = [
        ("a@s.example", "Subject: plain\r\n\r\nbody"),
        ("a@s.example", "Subject: tenant\r\nX-Tenant: acme\r\n\r\nbody"),
        ("a@s.example", "Subject: spam\r\nX-Block: spam\r\n\r\nbody"),
        ("x@lua-blocked.example", "Subject: lua\r\n\r\nbody"),
    ];
    let mut replies = vec![];
    for (from, body) in corpus {
        let r = c.send_mail(from, &["r@dest.example"], body);
        // ids differ run to run; keep code and text otherwise
        replies.push(r.text.trim_end().split(" ids=").next().unwrap().to_string());
    }
    assert!(server.stop().success());
    let mut stored: Vec<(String, String, bool)> = spooled(dir.path())
        .iter()
        .map(|m| {
            let subject = m.first_header("Subject").unwrap_or_default();
            (subject, m.queue_name(), m.first_header("X-Wasm-Policy").as_deref() == Some("checked"))
        })
        .collect();
    stored.sort();
    (replies, stored)
}

#[test]
fn a_rust_component_decides_exactly_like_the_lua_policy() {
    let (wasm_replies, wasm_stored) = run_corpus("wasm");
    let (lua_replies, lua_stored) = run_corpus("lua");
    assert_eq!(wasm_replies[2], "550 5.7.1 blocked by wasm policy: spam");
    assert_eq!(wasm_replies[3], "550 5.7.1 blocked by lua", "Lua still handles the events the component does not");
    assert_eq!(wasm_replies, lua_replies);
    assert_eq!(
        wasm_stored,
        vec![
            ("plain".to_string(), "dest.example".to_string(), true),
            ("tenant".to_string(), "acme@dest.example".to_string(), true)
        ]
    );
    assert_eq!(wasm_stored, lua_stored);
}

#[test]
fn a_single_event_claimed_by_both_engines_is_refused() {
    let dir = harness::temp_dir();
    let text = policy_text("wasm").replace("{d}", &dir.path().display().to_string()) + LUA_EQUIVALENT;
    let path = dir.path().join("init.lua");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(harness::binary()).args(["serve", "--policy"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtp_server_message_received event is handled by more than one engine"), "{err}");
}

#[test]
fn a_hostile_component_never_takes_the_server_down() {
    // T-43 infinite loop, T-45 memory bomb, T-47 panic, T-48 stack overflow
    let text = format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.wasm.load {{ path = '{}', budget = '500ms' }}
end)
"#,
        component("hostile").display()
    );
    let (dir, server) = start_policy_text(&text);
    let mut c = Client::ehlo(server.addr());
    for mode in ["loop", "panic", "memory", "stack", "loop", "panic"] {
        let started = std::time::Instant::now();
        let r = c.send_mail("a@s.example", &["r@dest.example"], &format!("Subject: x\r\nX-Hostile: {mode}\r\n\r\nx"));
        assert!(r.starts("451 4.3.0"), "{mode}: {r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{mode} took {:?}", started.elapsed());
    }
    let r = c.send_mail("a@s.example", &["r@dest.example"], "Subject: fine\r\n\r\nx");
    assert_eq!(r.code, 250, "a fresh instance serves the next message: {r:?}");
    assert!(server.stop().success());
    let stored = spooled(dir.path());
    assert_eq!(stored.len(), 1, "only the accepted message was stored");
}

#[test]
fn a_routing_component_chooses_where_mail_goes() {
    let d = harness::temp_dir();
    let sink = harness::sink::Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let text = format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.wasm.load {{ path = '{}' }}
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('routing_domain', '{port}.smarthost.test')
end)
"#,
        component("router").display()
    );
    let (dir, server) = start_policy_text(&text);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: routed\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, std::time::Duration::from_secs(10)), "the component's route was not used");
    assert_eq!(sink.messages()[0].ehlo, "router.wasm.test");
    let d =
        harness::wait_for_record(dir.path(), std::time::Duration::from_secs(5), |r| r["type"] == "Delivery").unwrap();
    assert_eq!(d["queue"], format!("dest.example!{port}.smarthost.test"));
    drop(server);
}

#[test]
fn check_compiles_components_and_refuses_a_broken_one() {
    let dir = harness::temp_dir();
    let bad = dir.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm not really").unwrap();
    for (path, ok) in [(plugin(), true), (bad, false)] {
        let policy = dir.path().join("init.lua");
        std::fs::write(
            &policy,
            format!("kumo.on('init', function() kumo.wasm.load {{ path = '{}' }} end)\n", path.display()),
        )
        .unwrap();
        let out =
            std::process::Command::new(harness::binary()).args(["check", "--policy"]).arg(&policy).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.success(), ok, "{text}");
        if !ok {
            assert!(text.contains("broken.wasm: not a valid policy component"), "{text}");
        }
    }
}
