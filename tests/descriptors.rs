//! Running out of file descriptors (reliability-tests T-35's cousin): a flood of idle
//! connections under a low `ulimit -n` must not leave the spool or the logs unable to open
//! files, and the spool never latches on EMFILE. Its own test binary: it lowers its own
//! descriptor limit.

mod harness;

use harness::smtp::Client;
use harness::{Server, http_get, policy, record_counts, temp_dir};
use std::time::Duration;

/// The server under `ulimit -n 300` (util-linux `prlimit`), flooded with 400 idle
/// connections: most are turned away at once, mail still flows on the ones it kept, and
/// after the flood it is healthy.
#[test]
fn a_connection_flood_under_a_low_descriptor_limit_leaves_reception_working() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `prlimit` is not installed");
        return;
    }
    let dir = temp_dir();
    let p =
        policy(dir.path(), "", "kumo.on('init', function() kumo.start_http_listener { listen = '127.0.0.1:0' } end)");
    // the harness's policy has one init; add the HTTP listener inside it instead
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("kumo.on('init', function() kumo.start_http_listener { listen = '127.0.0.1:0' } end)", "");
    let text = text.replacen(
        "kumo.on('init', function()",
        "kumo.on('init', function()\n  kumo.start_http_listener { listen = '127.0.0.1:0' }",
        1,
    );
    std::fs::write(&p, text).unwrap();
    let server = Server::start_wrapped(dir.path(), &p, &[], &["prlimit", "--nofile=300:300", "--"]);
    assert!(server.stderr_text().contains("soft limit 300, hard limit 300"), "{}", server.stderr_text());
    // a session opened before the flood
    let mut c = Client::ehlo(server.addr());
    let mut flood = vec![];
    let mut refused = 0;
    for _ in 0..400 {
        match std::net::TcpStream::connect(server.addr()) {
            Ok(s) => flood.push(s),
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // the flood is turned away at the budget: a session from before it still takes mail,
    // and the records are written
    let mut turned_away = 0;
    for s in &mut flood[..] {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut banner = [0u8; 3];
        if std::io::Read::read_exact(s, &mut banner).is_ok() && &banner == b"421" {
            turned_away += 1;
        }
    }
    assert!(turned_away > 100, "most of the flood was turned away at once: {turned_away}");
    for i in 0..20 {
        let r = c.send_mail("a@s.example", &[&format!("r{i}@d.example")], "Subject: x\r\n\r\nx");
        assert_eq!(r.code, 250, "message {i} during the flood (refused connects: {refused}): {r:?}");
    }
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = http_get(&server.http[0], "/api/check-liveness/v1");
    assert_eq!(code, 200, "{body}");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["after@d.example"], "Subject: x\r\n\r\nx").code, 250);
    drop(c);
    assert!(server.stop().success());
    assert_eq!(record_counts(dir.path()).get("Reception"), Some(&21), "no log record lost");
}
