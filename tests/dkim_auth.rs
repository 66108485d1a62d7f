//! DKIM signing checked by an independent verifier (Debian's dkimpy), written the way
//! KumoMTA's documentation writes it: `policy-extras.dkim_sign` with a `dkim_data.toml`,
//! and `kumo.dkim.*_signer` with `msg:dkim_sign` directly.

mod harness;

use harness::dkim::{PYTHON, dkimpy_sign, keys, run, verifier_installed};
use harness::sink::{Sink, relay_to};
use harness::smtp::Client;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// dkimpy's verdict on each file, with a DNS function that answers the test keys.
fn verify(files: &[std::path::PathBuf], rsa: &str, ed: &str) -> Vec<bool> {
    let script = r#"
import sys, dkim
rsa, ed = sys.argv[1], sys.argv[2]
def dns(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    if n.startswith('s2048._domainkey.'):
        return ('v=DKIM1; k=rsa; p=' + rsa).encode()
    if n.startswith('ed1._domainkey.'):
        return ('v=DKIM1; k=ed25519; p=' + ed).encode()
    return None
for path in sys.argv[3:]:
    data = open(path, 'rb').read()
    print('PASS' if dkim.verify(data, dnsfunc=dns) else 'FAIL')
"#;
    let out = run(Command::new(PYTHON).args(["-c", script, rsa, ed]).args(files));
    String::from_utf8_lossy(&out).lines().map(|l| l == "PASS").collect()
}

/// What each signing test starts from: a directory with the keys, their DNS values and
/// a sink; None (said why) without the verifier.
struct Setup {
    dir: tempfile::TempDir,
    rsa: String,
    ed: String,
    sink: Sink,
}

fn setup() -> Option<Setup> {
    if !verifier_installed() {
        return None;
    }
    let dir = harness::temp_dir();
    let (rsa, ed) = keys(dir.path());
    let sink = Sink::start(dir.path());
    Some(Setup { dir, rsa, ed, sink })
}

#[test]
fn signatures_made_here_verify_with_dkimpy_after_relay_and_break_when_modified() {
    let Some(Setup { dir, rsa, ed, sink }) = setup() else { return };
    let d = dir.path();
    let ed_pem = std::fs::read_to_string(d.join("ed.key")).unwrap();
    std::fs::write(
        d.join("dkim_data.toml"),
        format!(
            r#"[base]
selector = "s2048"
headers = ["From", "To", "Subject", "Date"]

[domain."rsa.example"]
filename = "{d}/rsa.key"

[domain."simple.example"]
filename = "{d}/rsa.key"
header_canonicalization = "simple"
body_canonicalization = "simple"

[domain."ed.example"]
selector = "ed1"
algo = "ed25519"
filename = "{d}/ed.key"
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let policy = format!(
        r#"local kumo = require 'kumo'
local dkim_sign = require 'policy-extras.dkim_sign'
local dkim_signer = dkim_sign:setup {{ '{{d}}/dkim_data.toml' }}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('smtp_server_message_received', function(msg)
  local case = msg:get_first_named_header_value('X-Case')
  if case == 'rsa-simple-oversign' then
    msg:dkim_sign(kumo.dkim.rsa_sha256_signer {{
      domain = 'direct.example', selector = 's2048', headers = {{ 'From', 'To', 'Subject' }},
      key = '{{d}}/rsa.key', header_canonicalization = 'simple', body_canonicalization = 'simple',
      over_sign = true,
    }})
  elseif case == 'ed-relaxed-oversign' then
    msg:dkim_sign(kumo.dkim.ed25519_signer {{
      domain = 'direct.example', selector = 'ed1', headers = {{ 'From', 'To', 'Subject' }},
      key = {{ key_data = [[{ed_pem}]] }}, over_sign = true,
    }})
  else
    dkim_signer(msg)
  end
end)
{relay}
"#,
        relay = relay_to(&sink.addr, "", "")
    );
    let path = harness::write_policy_text(d, &policy);
    let server = harness::Server::start(d, &path);
    let cases = [
        ("a@rsa.example", "", "rsa relaxed/relaxed by the helper"),
        ("a@simple.example", "", "rsa simple/simple by the helper"),
        ("a@ed.example", "", "ed25519 by the helper"),
        ("a@rsa.example", "X-Case: rsa-simple-oversign\r\n", "rsa simple/simple over-signed"),
        ("a@rsa.example", "X-Case: ed-relaxed-oversign\r\n", "ed25519 relaxed over-signed"),
    ];
    let mut c = Client::ehlo(server.addr());
    for (from, extra, what) in cases {
        let body = format!(
            "From: <{from}>\r\nTo: <r@dest.example>\r\nSubject: {what}\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n{extra}\r\nHello,   world \r\n\r\n\r\n"
        );
        assert_eq!(c.send_mail(from, &["r@dest.example"], &body).code, 250, "{what}");
    }
    assert!(sink.wait_for(cases.len(), Duration::from_secs(20)));
    let files: Vec<_> = (1..=cases.len()).map(|n| sink.dir.join(format!("{n}.eml"))).collect();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("DKIM-Signature:") || text.contains("\nDKIM-Signature:"), "unsigned: {text}");
    }
    let verdicts = verify(&files, &rsa, &ed);
    for ((_, _, what), ok) in cases.iter().zip(&verdicts) {
        assert!(ok, "{what}: dkimpy rejects the signature");
    }
    // a message changed after signing fails: the body, and (over-signed) one more Subject
    let changed = d.join("changed.eml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&changed, text.replace("Hello,", "Hullo,")).unwrap();
    let added = d.join("added.eml");
    let text = std::fs::read_to_string(&files[3]).unwrap();
    std::fs::write(&added, text.replacen("\nSubject:", "\nSubject: added\r\nSubject:", 1)).unwrap();
    assert_eq!(verify(&[changed, added], &rsa, &ed), [false, false]);
    // without over-signing an added header of an unsigned name passes: the control
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let extra = d.join("extra.eml");
    std::fs::write(&extra, text.replacen("\nSubject:", "\nX-Added: yes\r\nSubject:", 1)).unwrap();
    assert_eq!(verify(&[extra], &rsa, &ed), [true]);
    server.stop();
}

#[test]
fn signer_mistakes_are_named_where_the_signer_is_made() {
    let dir = harness::temp_dir();
    let d = dir.path();
    std::fs::write(d.join("bad.key"), "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let policy = r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.configure_local_logs { log_dir = '{d}/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg)
  local case = msg:get_first_named_header_value('X-Case')
  local p = { domain = 'x.example', selector = 's', headers = { 'From' }, key = '{d}/missing.key' }
  if case == 'bad-key' then p.key = '{d}/bad.key' end
  if case == 'typo' then p.header_canonicalisation = 'simple' end
  if case == 'canon' then p.body_canonicalization = 'loose' end
  if case == 'vault' then p.key = { vault_mount = 'secret', vault_path = 'dkim/x' } end
  msg:dkim_sign(kumo.dkim.rsa_sha256_signer(p))
end)
"#;
    let path = harness::write_policy_text(d, policy);
    let server = harness::Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    for (case, expected) in [
        ("missing", "missing.key"),
        ("bad-key", "not an RSA private key"),
        ("typo", "header_canonicalisation"),
        ("canon", "body_canonicalization"),
        ("vault", "Vault"),
    ] {
        let r =
            c.send_mail("a@x.example", &["r@dest.example"], &format!("From: a@x.example\r\nX-Case: {case}\r\n\r\nx"));
        assert!(r.code >= 400, "{case}: accepted unsigned: {r:?}");
        // The error line reaches stderr through the harness's reader thread: wait for it.
        let seen = server.wait_for_stderr(expected, Duration::from_secs(10));
        let log = server.stderr_text();
        assert!(seen && log.contains("kumo.dkim.rsa_sha256_signer"), "{case}: {log}");
    }
    server.stop();
}

/// A policy with AUTH checked by `smtp_server_auth_plain` (daniel / tiger), nobody in
/// `relay_hosts`, and `auth.example` relaying for the authorization identity `daniel`.
fn auth_policy(d: &Path, sink: &str, listener_opts: &str) -> std::path::PathBuf {
    let text = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs', meta = {{ 'authn_id', 'authz_id' }} }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{}}, {listener_opts} }}
end)
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  local password_database = {{ ['daniel'] = 'tiger' }}
  if password == '' then
    return false
  end
  return password_database[authc] == password
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'auth.example' then
    return kumo.make_listener_domain {{ relay_from_authz = {{ 'daniel' }} }}
  end
end)
{relay}
"#,
        relay = relay_to(sink, "", "")
    );
    harness::write_policy_text(d, &text)
}

fn swaks_installed() -> bool {
    let ok = Command::new("swaks").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: needs swaks (apt-get install swaks)");
    }
    ok
}

/// `swaks` against `addr` with these extra arguments: (exit status ok, transcript).
fn swaks(addr: &str, args: &[&str]) -> (bool, String) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("swaks")
        .args(["--server", host, "--port", port, "--from", "a@auth.example", "--to", "r@dest.example"])
        .args(["--timeout", "10", "--body", "hello"])
        .args(args)
        .output()
        .expect("swaks");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn swaks_authenticates_over_starttls_and_only_then_may_relay() {
    if !swaks_installed() {
        return;
    }
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let server = harness::Server::start(d, &auth_policy(d, &sink.addr, ""));
    let addr = server.addr().to_string();
    assert!(!server.stderr_text().contains("smtp_server_auth_plain event is accepted but not called"), "false warning");
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, t) =
            swaks(&addr, &["--tls", "--auth", mechanism, "--auth-user", "daniel", "--auth-password", "tiger"]);
        assert!(ok && t.contains("235 2.7.0"), "{mechanism}: {t}");
        let (ok, t) = swaks(&addr, &["--tls", "--auth", mechanism, "--auth-user", "daniel", "--auth-password", "lion"]);
        assert!(!ok && t.contains("535 5.7.8"), "{mechanism} with a bad password: {t}");
    }
    assert!(sink.wait_for(2, Duration::from_secs(10)), "the two authenticated messages are relayed");
    // no AUTH before STARTTLS: not offered, and refused when tried
    let mut c = Client::ehlo(&addr);
    let ehlo = c.cmd("EHLO client.test");
    assert!(!ehlo.text.contains("AUTH"), "AUTH offered in clear text: {ehlo:?}");
    let r = c.cmd("AUTH PLAIN AGRhbmllbAB0aWdlcg==");
    assert!(r.starts("530 5.7.0"), "{r:?}");
    // unauthenticated (over TLS too), relaying is refused
    let (ok, t) = swaks(&addr, &["--tls"]);
    assert!(!ok && t.contains("550 5.7.1"), "{t}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 2);
    // the Reception record carries the identities
    let records = harness::log_records(d);
    let received: Vec<_> = records.iter().filter(|r| r["type"] == "Reception").collect();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r["meta"]["authn_id"] == "daniel" && r["meta"]["authz_id"] == "daniel"));
    server.stop();
}

#[test]
fn auth_failures_close_the_connection_and_credentials_are_never_logged() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    // on plaintext, as the listener option allows for a trusted network
    let server = harness::Server::start(d, &auth_policy(d, &sink.addr, "allow_auth_without_tls = true"));
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mut c = Client::ehlo(server.addr());
    assert!(c.cmd("EHLO client.test").text.contains("AUTH PLAIN LOGIN"));
    assert!(c.cmd("AUTH CRAM-MD5").starts("504 5.5.4"));
    assert!(c.cmd("AUTH s3cret-lion-0").starts("504 5.5.4"), "a password typed as the mechanism");
    assert!(c.cmd("AUTH PLAIN !!!").starts("501 5.5.2"));
    // AUTH LOGIN, step by step, a wrong password
    assert!(c.cmd("AUTH LOGIN").starts("334 VXNlcm5hbWU6"));
    assert!(c.cmd(&b64("daniel")).starts("334 UGFzc3dvcmQ6"));
    assert!(c.cmd(&b64("s3cret-lion-1")).starts("535 5.7.8"));
    // PLAIN without an initial response, cancelled
    assert!(c.cmd("AUTH PLAIN").starts("334"));
    assert!(c.cmd("*").starts("501"));
    assert!(c.cmd(&format!("AUTH PLAIN {}", b64("\0daniel\0s3cret-lion-2"))).starts("535 5.7.8"));
    let third = c.cmd(&format!("AUTH PLAIN {}", b64("\0daniel\0s3cret-lion-3")));
    assert!(third.starts("535 5.7.8"), "{third:?}");
    let closed = c.reply();
    assert!(closed.starts("421 4.7.0"), "the third failure closes the connection: {closed:?}");
    // a good login works on a new connection, and may then relay
    let mut c = Client::ehlo(server.addr());
    c.cmd("EHLO client.test");
    assert!(c.cmd(&format!("AUTH PLAIN {}", b64("\0daniel\0tiger"))).starts("235 2.7.0"));
    assert!(c.cmd("AUTH PLAIN AGRhbmllbAB0aWdlcg==").starts("503"), "once is enough");
    assert_eq!(c.send_mail("a@auth.example", &["r@dest.example"], "Subject: x\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    let mut everything = server.stderr_text();
    server.stop();
    // no password, plain or encoded, in any record or log line
    everything.push_str(&serde_json::to_string(&harness::log_records(d)).unwrap());
    assert!(everything.contains("AUTH (unrecognized mechanism)"), "the misplaced password is not logged");
    for secret in ["s3cret-lion", "tiger"] {
        assert!(!everything.contains(secret), "{secret} was logged");
    }
    for n in 1..=3 {
        let encoded = b64(&format!("\0daniel\0s3cret-lion-{n}"));
        assert!(!everything.contains(&encoded), "an AUTH line was logged");
    }
    assert!(everything.contains("AUTH PLAIN"), "the rejections are logged, cut to the mechanism");
}

#[test]
fn a_wasm_component_signs_through_the_hosts_dkim_sign() {
    let Some(Setup { dir, rsa, ed, sink }) = setup() else { return };
    let d = dir.path();
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let data = format!("data={}", d.display());
    let key = format!("dkim-key={}", d.join("rsa.key").display());
    let args = [
        "--set",
        "listen=127.0.0.1:0",
        "--set",
        &data,
        "--set",
        "test-dns=1",
        "--set",
        &key,
        "--set",
        "dkim-domain=wasm.example",
    ];
    let server = harness::Server::start_args(d, &harness::plugins::component("standalone"), &args);
    let mut c = Client::ehlo(server.addr());
    let to = format!("r@{port}.smarthost.test");
    let body = "From: <a@wasm.example>\r\nTo: <r@x>\r\nSubject: signed in wasm\r\n\r\nhello\r\n";
    assert_eq!(c.send_mail("a@wasm.example", &[to.as_str()], body).code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    let file = sink.dir.join("1.eml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("d=wasm.example") && text.contains("X-Wasm-Policy"), "{text}");
    assert_eq!(verify(&[file], &rsa, &ed), [true], "dkimpy rejects the component's signature");
    server.stop();
}

#[test]
fn received_signatures_are_verified_through_the_test_resolver() {
    let Some(Setup { dir, rsa, sink, .. }) = setup() else { return };
    let d = dir.path();
    // the public key in the policy's own zone: no real DNS
    let quoted: Vec<String> = format!("v=DKIM1; k=rsa; p={rsa}")
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let policy = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.dns.configure_test_resolver [[
s2048._domainkey.signed.example. TXT {txt}
]]
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('smtp_server_message_received', function(msg)
  local results = msg:dkim_verify()
  if #results == 0 then
    results = {{ {{ method = 'dkim', result = 'none', reason = 'message was not signed' }} }}
  end
  msg:add_authentication_results('mx.test', results)
  msg:set_meta('dkim', results[1].result)
end)
{relay}
"#,
        txt = quoted.join(" "),
        relay = relay_to(&sink.addr, "", "")
    );
    let path = harness::write_policy_text(d, &policy);
    let server = harness::Server::start(d, &path);
    // signed by dkimpy, the independent signer
    let plain = "From: <a@signed.example>\r\nTo: <r@dest.example>\r\nSubject: verified\r\n\r\nhello world\r\n";
    let body = dkimpy_sign(&d.join("rsa.key"), "s2048", "signed.example", plain);
    let tampered = body.replace("hello world", "hello there");
    let unsigned = "From: <a@signed.example>\r\nSubject: plain\r\n\r\nhello\r\n".to_string();
    let mut c = Client::ehlo(server.addr());
    for b in [&body, &tampered, &unsigned] {
        let b = b.trim_end_matches("\r\n");
        assert_eq!(c.send_mail("a@signed.example", &["r@dest.example"], b).code, 250);
    }
    assert!(sink.wait_for(3, Duration::from_secs(10)));
    // each message as the sink got it (delivery order may differ): its body says which
    let mut seen = 0;
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.data).to_string();
        let at = text.find("Authentication-Results: mx.test;").expect("header added");
        let header = text[at..].split("\n\n").next().unwrap().split("\r\n\r\n").next().unwrap().to_string();
        let expected = if text.contains("hello world") {
            "dkim=pass"
        } else if text.contains("hello there") {
            // mail-auth calls a body hash mismatch neutral (RFC 6376 §3.9 leaves it open)
            "dkim=neutral"
        } else {
            "dkim=none"
        };
        assert!(header.contains(expected), "{expected} expected: {header}");
        if expected == "dkim=neutral" {
            assert!(header.contains("body hash does not match"), "{header}");
        }
        if expected == "dkim=pass" {
            assert!(header.contains("header.d=signed.example"), "{header}");
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
    server.stop();
}
