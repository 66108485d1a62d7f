//! `wasmta trace-smtp-server` and `trace-smtp-client` watching a running server's
//! sessions live, as kcli's do: the protocol lines both ways, message content as its size
//! only, AUTH credentials never; filters by peer; a wrong filter is an error.

mod harness;

use harness::Server;
use harness::cli::{cli, text};
use harness::sink::{Sink, relay_policy};
use harness::smtp::Client;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

struct Watch {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(server: &Server, args: &[&str]) -> Watch {
        let mut child = Command::new(harness::binary())
            .args(args)
            .args(["--endpoint", &format!("http://{}", server.http[0])])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Watch { child, lines, seen: vec![] }
    }

    /// Reads until a line contains `needle`; false after `within`.
    fn until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(l);
                if self.seen.last().unwrap().contains(needle) {
                    return true;
                }
            }
        }
        false
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn traces_show_both_directions_and_never_content_or_credentials() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = relay_policy(&sink.addr, "allow_auth_without_tls = true", "", "")
        + r#"
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  return authc == 'daniel' and password == 'tiger'
end)
"#;
    let path = harness::write_policy_text(d, &policy);
    let server = Server::start(d, &path);

    let mut inbound = Watch::start(&server, &["trace-smtp-server", "--peer", "127.0.0.1"]);
    let mut outbound = Watch::start(&server, &["trace-smtp-client", "--domain", "dest.example"]);
    let mut elsewhere = Watch::start(&server, &["trace-smtp-server", "--peer", "10.0.0.0/8"]);
    // the watchers subscribe when their request arrives: knock until the trace shows it
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut knock = Client::open(server.addr());
        knock.cmd("QUIT");
        if inbound.until("=== closed", Duration::from_millis(300)) {
            break;
        }
        assert!(Instant::now() < deadline, "the trace never showed a session");
    }

    let mut c = Client::ehlo(server.addr());
    // AUTH PLAIN \0daniel\0tiger
    assert_eq!(c.cmd("AUTH PLAIN AGRhbmllbAB0aWdlcg==").code, 235);
    let r = c.send_mail("a@s.example", &["r@dest.example"], "Subject: traced\r\n\r\nSECRET-BODY-TEXT");
    assert_eq!(r.code, 250);
    c.cmd("QUIT");
    assert!(sink.wait_for(1, Duration::from_secs(10)));

    assert!(inbound.until("=== closed", Duration::from_secs(10)), "{}", inbound.text());
    let t = inbound.text();
    for expected in [
        "< EHLO client.test",
        "> 250",
        "< AUTH PLAIN (credentials hidden)",
        "> 235",
        "< MAIL FROM:<a@s.example>",
        "< RCPT TO:<r@dest.example>",
        "> 354",
        "(message data: ",
        "> 221",
    ] {
        assert!(t.contains(expected), "{expected} in the server trace:\n{t}");
    }
    assert!(
        !t.contains("SECRET-BODY-TEXT") && !t.contains("AGRhbmllbAB0aWdlcg"),
        "content or credentials traced:\n{t}"
    );

    assert!(outbound.until("(message data: ", Duration::from_secs(10)), "{}", outbound.text());
    assert!(outbound.until("< 250", Duration::from_secs(10)), "{}", outbound.text());
    let t = outbound.text();
    for expected in ["=== connected", "< 220", "> EHLO", "RCPT TO:<r@dest.example>"] {
        assert!(t.contains(expected), "{expected} in the client trace:\n{t}");
    }
    assert!(!t.contains("SECRET-BODY-TEXT"), "content traced:\n{t}");

    // the 10/8 watcher saw none of it
    assert!(!elsewhere.until("EHLO", Duration::from_millis(500)), "{}", elsewhere.text());
    // a filter that is no address is refused, naming it
    let out = cli(&server, &["trace-smtp-server", "--peer", "not-an-ip"]);
    assert!(!out.status.success() && text(&out).contains("not-an-ip"), "{}", text(&out));
    server.stop();
}
