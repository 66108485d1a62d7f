//! Policy components: the example policy (`plugins/example-policy.lua`) as Lua, as Rust
//! components and as Go components answers one corpus with identical SMTP replies and
//! identical log records; hostile components never take the server down.

mod harness;

use harness::plugins::{component, example_lua, go_component, lua_message_policy};
use harness::sink::Sink;
use harness::smtp::Client;
use harness::{log_records, record_counts, start_policy_text};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn plugin() -> PathBuf {
    component("message_policy")
}

#[derive(Clone, Copy, Debug)]
enum Flavour {
    Lua,
    Rust,
    Go,
}

/// Init with a normal and a deferred listener, then the example policy in one flavour.
fn example_policy(flavour: Flavour) -> String {
    let loads: Vec<PathBuf> = match flavour {
        Flavour::Lua => vec![],
        Flavour::Rust => vec![component("message_policy"), component("deferred_router"), component("router")],
        Flavour::Go => vec![go_component("message-policy"), go_component("deferred-router"), go_component("router")],
    };
    let loads: String = loads.iter().map(|p| format!("  kumo.wasm.load {{ path = '{}' }}\n", p.display())).collect();
    format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test', deferred_queue = true }}
{loads}end)
kumo.on('smtp_server_mail_from', function(sender)
  if sender.domain == 'lua-blocked.example' then kumo.reject(550, '5.7.1 blocked by lua') end
end)
{lua}
"#,
        lua = if matches!(flavour, Flavour::Lua) { example_lua() } else { String::new() },
    )
}

/// A log record without what differs run to run: ids, times, ports.
fn normalised(mut r: Value) -> String {
    if let Some(o) = r.as_object_mut() {
        for k in [
            "id",
            "timestamp",
            "created",
            "created_time",
            "event_time",
            "nodeid",
            "session_id",
            "peer_address",
            "source_address",
        ] {
            o.remove(k);
        }
        if let Some(meta) = o.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("received_from");
            meta.remove("received_via");
        }
        // the sink numbers what it queues
        if let Some(c) = o.get_mut("response").and_then(|r| r.get_mut("content"))
            && c.as_str().is_some_and(|t| t.starts_with("OK queued as "))
        {
            *c = Value::from("OK queued as N");
        }
    }
    r.to_string()
}

/// Sends the corpus through the example policy; returns the replies and the sorted,
/// normalised log records.
fn run_corpus(flavour: Flavour, sink: &Sink) -> (Vec<String>, Vec<String>) {
    let port = sink.addr.rsplit(':').next().unwrap();
    let to = format!("r@{port}.smarthost.test");
    let (dir, server) = start_policy_text(&example_policy(flavour));
    let big = format!("Subject: big\r\n\r\n{}", "0123456789abcdef\r\n".repeat(5000));
    let queue_header = format!("Subject: queued\r\nX-Queue: special@{port}.smarthost.test\r\n\r\nbody");
    let normal = [
        ("a@s.example", "Subject: plain\r\n\r\nbody"),
        ("a@s.example", "Subject: tenant\r\nX-Tenant: acme\r\n\r\nbody"),
        ("a@s.example", "Subject: spam\r\nX-Block: spam\r\n\r\nbody"),
        ("a@s.example", big.as_str()),
        ("x@lua-blocked.example", "Subject: lua\r\n\r\nbody"),
    ];
    let deferred = [
        ("a@s.example", "Subject: routed\r\nX-Tenant: t1\r\nX-Campaign: c1\r\n\r\nbody"),
        ("a@s.example", queue_header.as_str()),
        ("spammer@bulk.example", "Subject: spammer\r\n\r\nbody"),
        ("x@blocked.example", "Subject: blocked domain\r\n\r\nbody"),
    ];
    let mut replies = vec![];
    for (addr, corpus) in [(&server.smtp[0], &normal[..]), (&server.smtp[1], &deferred[..])] {
        let mut c = Client::ehlo(addr);
        for (from, body) in corpus {
            let r = c.send_mail(from, &[to.as_str()], body);
            // ids differ run to run; keep code and text otherwise
            replies.push(r.text.trim_end().split(" ids=").next().unwrap().to_string());
        }
    }
    // 2 + 2 delivered, 2 bounced by the deferred router
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = record_counts(dir.path());
        if c.get("Delivery") >= Some(&4) && c.get("Bounce") >= Some(&2) {
            break;
        }
        assert!(Instant::now() < deadline, "{flavour:?}: deliveries did not finish: {c:?}\n{}", server.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stop().success());
    let mut records: Vec<String> = log_records(dir.path()).into_iter().map(normalised).collect();
    records.sort();
    (replies, records)
}

#[test]
fn lua_rust_and_go_versions_of_the_example_policy_agree() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let (lua_replies, lua_records) = run_corpus(Flavour::Lua, &sink);
    assert_eq!(
        lua_replies[..5],
        [
            "250 2.0.0 OK".to_string(),
            "250 2.0.0 OK".to_string(),
            "550 5.7.1 blocked by wasm policy: spam".to_string(),
            "552 5.3.4 message exceeds the policy size limit".to_string(),
            "550 5.7.1 blocked by lua".to_string(),
        ],
        "{lua_replies:?}"
    );
    assert!(
        lua_replies[5..].iter().all(|r| r.starts_with("250")),
        "the deferred listener always says 250: {lua_replies:?}"
    );
    let queues: Vec<&str> = lua_records
        .iter()
        .filter(|r| r.contains("\"type\":\"Delivery\""))
        .filter_map(|r| r.split("\"queue\":\"").nth(1))
        .collect();
    assert!(queues.iter().any(|q| q.starts_with("c1:t1@")), "X-Tenant/X-Campaign route deferred mail: {queues:?}");
    assert!(queues.iter().any(|q| q.starts_with("special@")), "X-Queue routes deferred mail: {queues:?}");
    assert!(queues.iter().any(|q| q.starts_with("acme@")), "X-Tenant sets the tenant: {queues:?}");
    assert!(sink.messages().iter().all(|m| m.ehlo == "router.wasm.test"), "the routing policy chose the EHLO name");
    for flavour in [Flavour::Rust, Flavour::Go] {
        let (replies, records) = run_corpus(flavour, &sink);
        assert_eq!(replies, lua_replies, "{flavour:?} replies differ from Lua");
        let only_here: Vec<&String> = records.iter().filter(|r| !lua_records.contains(r)).collect();
        let only_lua: Vec<&String> = lua_records.iter().filter(|r| !records.contains(r)).collect();
        assert!(
            only_here.is_empty() && only_lua.is_empty(),
            "{flavour:?} records: {only_here:#?}\nLua records: {only_lua:#?}"
        );
        assert_eq!(records, lua_records, "{flavour:?} log records differ from Lua (same kinds, different counts)");
    }
    assert_eq!(sink.messages().len(), 12, "every flavour delivered its 4 messages");
    assert!(sink.messages().iter().all(|m| m.ehlo == "router.wasm.test"));
}

#[test]
fn a_single_event_claimed_by_both_engines_is_refused() {
    let dir = harness::temp_dir();
    let text = format!(
        "kumo.on('init', function() kumo.wasm.load {{ path = '{}' }} end)\n{}",
        plugin().display(),
        lua_message_policy()
    );
    let path = dir.path().join("init.lua");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(harness::binary()).args(["serve", "--policy"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtp_server_message_received event is handled by more than one engine"), "{err}");
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

#[test]
fn a_wasm_only_deployment_receives_delivers_and_logs() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    let data = format!("data={}", dir.path().display());
    let args = ["--set", "listen=127.0.0.1:0", "--set", data.as_str(), "--set", "test-dns=1"];
    let server = harness::Server::start_args(dir.path(), &component("standalone"), &args);
    let mut c = Client::ehlo(server.addr());
    let to = format!("r@{port}.smarthost.test");
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: one\r\nX-Tenant: acme\r\n\r\nx").code, 250);
    let r = c.send_mail("a@s.example", &[to.as_str()], "Subject: two\r\nX-Block: no\r\n\r\nx");
    assert!(r.starts("550 5.7.1 blocked by wasm policy: no"), "{r:?}");
    assert!(sink.wait_for(1, Duration::from_secs(10)), "the component's route was not used");
    let m = &sink.messages()[0];
    assert_eq!(m.ehlo, "standalone.wasm.test");
    assert!(String::from_utf8_lossy(&m.data).contains("X-Wasm-Policy: checked"));
    let delivery = harness::wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Delivery")
        .expect("Delivery record");
    assert_eq!(delivery["queue"], format!("acme@{port}.smarthost.test"));
    assert!(server.stop().success());
    let counts = record_counts(dir.path());
    assert_eq!(counts.get("Reception"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("Rejection"), Some(&1), "{counts:?}");
    assert!(!dir.path().join("init.lua").exists(), "no Lua file was involved");
}

#[test]
fn a_component_without_init_cannot_be_a_whole_deployment() {
    let out = std::process::Command::new(harness::binary()).args(["check", "--policy"]).arg(plugin()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a component that exports wasmta:policy/init"), "{err}");
    let out = std::process::Command::new(harness::binary())
        .args(["check", "--policy"])
        .arg(component("standalone"))
        .args(["--set", "listen=127.0.0.1:2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("(1 esmtp listener(s), 1 spool(s), 1 log destination(s)"), "{text}");
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let cache = harness::temp_dir();
    let run = || {
        let out = std::process::Command::new(harness::binary())
            .args(["check", "--policy"])
            .arg(component("standalone"))
            .env("WASMTA_CACHE_DIR", cache.path())
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = run();
    assert!(first.contains("standalone.wasm: compiled in"), "{first}");
    let artefacts: Vec<_> = std::fs::read_dir(cache.path().join("components")).unwrap().collect();
    assert_eq!(artefacts.len(), 1, "one artefact per component and engine");
    let second = run();
    assert!(second.contains("standalone.wasm: from the compiled-component cache"), "{second}");
    // a damaged artefact is recompiled, not trusted
    let path = artefacts[0].as_ref().unwrap().path();
    std::fs::write(&path, b"garbage").unwrap();
    let third = run();
    assert!(third.contains("unusable") && third.contains("standalone.wasm: compiled in"), "{third}");
}

#[test]
fn a_wasm_only_deployment_uses_shaping_files_and_overrides_one_field() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    let shaping = dir.path().join("shaping.toml");
    std::fs::write(
        &shaping,
        format!(
            "[\"{port}.smarthost.test\"]\nmx_rollup = false\nenable_tls = \"Disabled\"\nehlo_domain = \"shaped.test\"\n"
        ),
    )
    .unwrap();
    let data = format!("data={}", dir.path().display());
    let shaping_arg = format!("shaping={}", shaping.display());
    let args = ["--set", "listen=127.0.0.1:0", "--set", &data, "--set", "test-dns=1", "--set", &shaping_arg];
    let server = harness::Server::start_args(dir.path(), &component("standalone"), &args);
    let mut c = Client::ehlo(server.addr());
    let to = format!("r@{port}.smarthost.test");
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: one\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    assert_eq!(
        sink.messages()[0].ehlo,
        "wasm-over-shaped.test",
        "shaped options, one field overridden by the component"
    );
    assert!(server.stop().success());
}
