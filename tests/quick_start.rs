//! The README's quick start, run as written in a scratch directory: the sink, the server
//! with `WASMTA_SMARTHOST`, one `swaks` line, and `wasmta logs --follow` showing the
//! message's Reception and then its Delivery. Only `./target/release/wasmta` is replaced
//! by the binary under test and `policy/init.lua` by the repository's (the scratch
//! directory is not a clone); `cargo build --release` is what built the binary.

mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lines of the README's quick-start block.
fn quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme.find("<!-- quick-start").expect("the README marks its quick start");
    let block = &readme[at..];
    let start = block.find("```sh\n").expect("a sh block") + 6;
    let end = block[start..].find("```").unwrap() + start;
    block[start..end].lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect()
}

fn shell(line: &str, dir: &std::path::Path) -> Command {
    let repo_policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policy/init.lua");
    let line = line.replace("./target/release/wasmta", harness::binary()).replace("policy/init.lua", repo_policy);
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {line}")]).current_dir(dir);
    c
}

fn wait_port(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "exited before listening on {addr}");
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM: the server stops cleanly
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_readme_quick_start_delivers_a_message_and_shows_it() {
    let lines = quick_start();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "cargo build --release");
    let dir = harness::temp_dir();
    let d = dir.path();
    let mut running = Running(vec![]);

    // the sink
    assert!(lines[1].contains(" sink "), "{}", lines[1]);
    let mut sink = shell(&lines[1], d).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_port("127.0.0.1:2526", &mut sink);
    running.0.push(sink);

    // the server, relaying to it
    assert!(lines[2].starts_with("WASMTA_SMARTHOST=") && lines[2].contains(" serve"), "{}", lines[2]);
    let (var, rest) = lines[2].split_once(' ').unwrap();
    let (k, v) = var.split_once('=').unwrap();
    let mut serve = shell(rest, d).env(k, v).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_port("127.0.0.1:2525", &mut serve);
    running.0.push(serve);

    // one message
    assert!(lines[3].starts_with("swaks "), "{}", lines[3]);
    if Command::new("swaks").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = shell(&lines[3], d).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    } else {
        eprintln!("SKIPPED the swaks line: swaks is not installed (apt-get install swaks); sending with the harness");
        let mut c = harness::smtp::Client::ehlo("127.0.0.1:2525");
        assert_eq!(c.send_mail("me@example.com", &["you@example.net"], "Subject: hi\r\n\r\nhello").code, 250);
    }

    // its history, followed
    assert!(lines[4].contains(" logs --follow"), "{}", lines[4]);
    let mut follow = shell(&lines[4], d).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    running.0.push(follow);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vec![];
    while !seen.iter().any(|l: &String| l.contains("Delivery")) {
        assert!(Instant::now() < deadline, "no Delivery record followed: {seen:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    assert!(seen[0].contains("Reception") && seen[0].contains("<you@example.net>"), "{seen:?}");
    let delivered = seen.iter().find(|l| l.contains("Delivery")).unwrap();
    assert!(delivered.contains(" 250 "), "{delivered}");
    // and the sink has it
    assert!(std::fs::read_dir(d.join("data/sink")).is_ok_and(|rd| rd.count() > 0), "the sink stored it");
}
