//! The delivery client against hostile destinations and what it puts on the wire
//! (reliability-tests T-20, T-25, T-37): a fake server in a thread speaks whatever the test
//! scripts, the real binary delivers to it, and the outcome is read from the real log
//! records and the captured bytes.

mod harness;

use harness::sink::relay_to;
use harness::smtp::Client;
use harness::{start, wait_for_record};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves every connection to a new listener with `handler`; returns its address.
fn fake_destination(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || h(stream));
        }
    });
    addr
}

fn line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    let _ = r.read_line(&mut l);
    l
}

#[test]
fn t25_replies_injected_before_the_tls_handshake_are_discarded() {
    let config = wasmta::tls::acceptor(&Default::default()).unwrap().config().clone();
    // what the fake server saw: "fooled" if the client acted on the injected reply
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let addr = fake_destination(move |mut tcp| {
        let note = |s: String| log.lock().unwrap().push(s);
        tcp.write_all(b"220 fake.test ESMTP\r\n").unwrap();
        let mut plain = BufReader::new(tcp.try_clone().unwrap());
        note(line(&mut plain));
        tcp.write_all(b"250-fake.test\r\n250 STARTTLS\r\n").unwrap();
        note(line(&mut plain));
        // the injection: a reply the client must not read as the TLS-era answer to EHLO
        tcp.write_all(b"220 go ahead\r\n250 injected\r\n").unwrap();
        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        note(line(&mut tls)); // EHLO again, over TLS
        // a client fooled by the injection would not wait for this reply: MAIL arrives now
        tls.get_ref().sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        let early = tls.buffer().len() + tls.get_mut().read(&mut [0u8; 64]).unwrap_or(0);
        if early > 0 {
            note("fooled".into());
            return;
        }
        tls.get_ref().sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tls.get_mut().write_all(b"250 fake.test\r\n").unwrap();
        loop {
            let cmd = line(&mut tls);
            if cmd.is_empty() {
                return;
            }
            note(cmd.clone());
            let reply: &[u8] = match cmd.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "DATA" => {
                    tls.get_mut().write_all(b"354 go\r\n").unwrap();
                    while line(&mut tls) != ".\r\n" {}
                    note("message".into());
                    b"250 2.0.0 accepted\r\n"
                }
                "QUIT" => b"221 bye\r\n",
                _ => b"250 ok\r\n",
            };
            tls.get_mut().write_all(reply).unwrap();
        }
    });
    let (dir, server) =
        start("", &relay_to(&addr, "", "").replace("enable_tls = 'Disabled'", "enable_tls = 'RequiredInsecure'"));
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: tls\r\n\r\nx").code, 250);
    let d = wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Delivery");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.contains(&"fooled".to_string()), "the client used the injected reply: {seen:?}");
    let d = d.unwrap_or_else(|| panic!("no delivery; the fake server saw {seen:?}"));
    assert_eq!(d["tls_protocol_version"], "TLSv1_3", "{d}");
    assert!(seen.iter().filter(|s| s.starts_with("EHLO")).count() == 2, "EHLO again after TLS: {seen:?}");
    assert!(seen.contains(&"message".to_string()));
}

#[test]
fn t37_hostile_replies_are_bounded_and_tempfail() {
    // three hostile destinations, one per recipient domain's queue
    let endless = fake_destination(|mut tcp| {
        // a greeting continued forever
        let _ = tcp.write_all(b"220-fake\r\n");
        let chunk = b"220-and more and more and more\r\n".repeat(1000);
        while tcp.write_all(&chunk).is_ok() {}
    });
    let garbage = fake_destination(|mut tcp| {
        let _ = tcp.write_all(b"ABC not a reply code\r\n");
        std::thread::sleep(Duration::from_secs(5));
    });
    let long_line = fake_destination(|mut tcp| {
        let _ = tcp.write_all(format!("220 {}\r\n", "x".repeat(100_000)).as_bytes());
        std::thread::sleep(Duration::from_secs(5));
    });
    let routes = [("endless", &endless), ("garbage", &garbage), ("long", &long_line)];
    let table: String = routes.iter().map(|(d, a)| format!("['{d}.example'] = '{a}', ")).collect();
    let policy = format!(
        "local routes = {{ {table} }}
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config {{ retry_interval = '1 minute', protocol = {{ smtp = {{ mx_list = {{ routes[domain] }} }} }} }}
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path {{ enable_tls = 'Disabled', connect_timeout = '3s', banner_timeout = '3s' }}
end)"
    );
    let (dir, server) = start("", &policy);
    let mut c = Client::ehlo(server.addr());
    for (d, _) in routes {
        assert_eq!(c.send_mail("a@s.example", &[&format!("r@{d}.example")], "Subject: x\r\n\r\nx").code, 250);
    }
    for (d, _) in routes {
        let r = wait_for_record(dir.path(), Duration::from_secs(15), |r| {
            r["type"] == "TransientFailure" && r["recipient"].as_str().is_some_and(|x| x.contains(d))
        });
        assert!(r.is_some(), "{d}: no transient failure logged");
    }
    // the server is unharmed and its memory bounded
    assert_eq!(c.cmd("NOOP").code, 250);
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 512 * 1024, "RSS {rss_kib} KiB");
    assert!(server.stop().success());
}

#[test]
fn t20_what_leaves_has_only_crlf_and_every_dot_after_a_line_feed_stuffed() {
    // a body accepted with bare line ends (invalid_line_endings = 'Allow') that would end
    // DATA early at a lenient receiver, followed by a smuggled transaction
    let captured = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = captured.clone();
    let addr = fake_destination(move |mut tcp| {
        let mut r = BufReader::new(tcp.try_clone().unwrap());
        tcp.write_all(b"220 fake.test ESMTP\r\n").unwrap();
        loop {
            let cmd = line(&mut r);
            if cmd.is_empty() {
                return;
            }
            let verb = cmd.get(..4).unwrap_or("").to_ascii_uppercase();
            if verb == "DATA" {
                tcp.write_all(b"354 go\r\n").unwrap();
                let mut raw = Vec::new();
                while !raw.ends_with(b"\r\n.\r\n") {
                    let mut byte = [0u8; 1];
                    if r.read_exact(&mut byte).is_err() {
                        return;
                    }
                    raw.push(byte[0]);
                }
                sink.lock().unwrap().push(raw);
                tcp.write_all(b"250 2.0.0 one message\r\n").unwrap();
            } else if verb == "QUIT" {
                let _ = tcp.write_all(b"221 bye\r\n");
                return;
            } else if verb == "EHLO" {
                tcp.write_all(b"250 fake.test\r\n").unwrap();
            } else {
                tcp.write_all(b"250 ok\r\n").unwrap();
            }
        }
    });
    let (dir, server) = start("invalid_line_endings = 'Allow',", &relay_to(&addr, "", ""));
    let mut c = Client::ehlo(server.addr());
    let body = "Subject: smuggle\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@d.example>\r\nDATA\r\nspoof\n.\nlast\r.\rend";
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], body).code, 250);
    assert!(wait_for_record(dir.path(), Duration::from_secs(10), |r| r["type"] == "Delivery").is_some());
    let captured = captured.lock().unwrap().clone();
    assert_eq!(captured.len(), 1, "exactly one DATA transaction reached the destination");
    let raw = &captured[0];
    let text = String::from_utf8_lossy(raw);
    for (i, b) in raw.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && raw[i - 1] == b'\r', "bare LF at {i}: {text:?}"),
            b'\r' => assert!(raw.get(i + 1) == Some(&b'\n'), "bare CR at {i}: {text:?}"),
            _ => {}
        }
    }
    let end = raw.len() - 5;
    assert!(!raw[..end + 2].windows(5).any(|w| w == b"\r\n.\r\n"), "an early terminator: {text:?}");
    assert!(text.contains("\r\n..\r\nMAIL FROM:<evil@x.example>"), "the dot line was stuffed: {text:?}");
}

/// What a scripted destination really answered: (recipient, code).
type Truth = Arc<Mutex<Vec<(String, u16)>>>;

/// A destination that answers every command correctly but sends four replies nobody
/// asked for right after its reply to `at` (`EHLO`, `MAIL` or the end of `DATA`).
fn injecting_destination(at: &'static str, pipelining: bool, truth: Truth) -> String {
    fake_destination(move |mut tcp| {
        let extra = b"250 2.0.0 extra\r\n".repeat(4);
        let mut r = BufReader::new(tcp.try_clone().unwrap());
        let _ = tcp.write_all(b"220 fake.test ESMTP\r\n");
        let mut rcpts: Vec<String> = vec![];
        loop {
            let cmd = line(&mut r);
            if cmd.is_empty() {
                return;
            }
            let verb = cmd.get(..4).unwrap_or("").to_ascii_uppercase();
            let mut reply: Vec<u8> = match verb.as_str() {
                "EHLO" if pipelining => b"250-fake.test\r\n250 PIPELINING\r\n".to_vec(),
                "EHLO" | "HELO" => b"250 fake.test\r\n".to_vec(),
                "RCPT" => {
                    let rcpt = cmd.trim().trim_start_matches("RCPT TO:<").trim_end_matches('>').to_string();
                    if rcpt.starts_with("refuse") {
                        truth.lock().unwrap().push((rcpt, 550));
                        b"550 5.1.1 no such user\r\n".to_vec()
                    } else {
                        rcpts.push(rcpt);
                        b"250 2.1.5 ok\r\n".to_vec()
                    }
                }
                "DATA" => {
                    let _ = tcp.write_all(b"354 go\r\n");
                    while line(&mut r) != ".\r\n" {}
                    for rcpt in rcpts.drain(..) {
                        truth.lock().unwrap().push((rcpt, 250));
                    }
                    b"250 2.0.0 accepted\r\n".to_vec()
                }
                "QUIT" => {
                    let _ = tcp.write_all(b"221 bye\r\n");
                    return;
                }
                _ => {
                    rcpts.clear();
                    b"250 2.0.0 ok\r\n".to_vec()
                }
            };
            let injected = match verb.as_str() {
                "EHLO" => at == "EHLO",
                "MAIL" => at == "MAIL",
                "DATA" => at == "DATA",
                _ => false,
            };
            if injected {
                reply.extend_from_slice(&extra);
            }
            if tcp.write_all(&reply).is_err() {
                return;
            }
        }
    })
}

#[test]
fn replies_nobody_asked_for_never_credit_the_wrong_message() {
    let truth: Truth = Arc::default();
    let mut routes = vec![];
    for at in ["EHLO", "MAIL", "DATA"] {
        for pipelining in [true, false] {
            let domain = format!("{}-{}.example", at.to_ascii_lowercase(), if pipelining { "pipe" } else { "plain" });
            routes.push((domain, injecting_destination(at, pipelining, truth.clone()), pipelining));
        }
    }
    let table: String = routes.iter().map(|(d, a, p)| format!("['{d}'] = {{ '{a}', {p} }}, ")).collect();
    let policy = format!(
        "local kumo = require 'kumo'
local routes = {{ {table} }}
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config {{ retry_interval = '1 hour', protocol = {{ smtp = {{ mx_list = {{ routes[domain][1] }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain)
  return kumo.make_egress_path {{ enable_tls = 'Disabled', enable_pipelining = routes[domain][2] }}
end)"
    );
    let (dir, server) = start("", &policy);
    let mut c = Client::ehlo(server.addr());
    let mut sent = vec![];
    for (d, _, _) in &routes {
        // A is accepted, B refused at RCPT, C accepted: one connection takes them in turn
        for local in ["a", "refuse-b", "c"] {
            let rcpt = format!("{local}@{d}");
            assert_eq!(c.send_mail("s@s.example", &[&rcpt], "Subject: x\r\n\r\nx").code, 250);
            sent.push(rcpt);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records: Vec<serde_json::Value> = harness::log_records(dir.path())
            .into_iter()
            .filter(|r| ["Delivery", "Bounce", "TransientFailure"].contains(&r["type"].as_str().unwrap_or("")))
            .collect();
        let decided = |rcpt: &String| records.iter().any(|r| r["recipient"] == rcpt.as_str());
        if sent.iter().all(decided) {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "undecided: {:?}",
            sent.iter().filter(|r| !decided(r)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let truth = truth.lock().unwrap().clone();
    let mut violations = 0;
    for r in &records {
        let rcpt = r["recipient"].as_str().unwrap().to_string();
        let content = r["response"]["content"].as_str().unwrap_or("");
        assert!(!content.contains("extra"), "a reply nobody asked for was credited to {rcpt}: {r}");
        match r["type"].as_str().unwrap() {
            "Delivery" => {
                assert!(truth.contains(&(rcpt.clone(), 250)), "{rcpt} logged Delivered but never accepted: {r}")
            }
            "Bounce" => assert!(truth.contains(&(rcpt.clone(), 550)), "{rcpt} bounced but never refused: {r}"),
            _ => violations += usize::from(content.contains("no command asked for")),
        }
    }
    assert!(violations >= 6, "every destination's stray replies were noticed: {violations}");
    assert!(
        records.iter().all(|r| !(r["type"] == "Delivery" && r["recipient"].as_str().unwrap().starts_with("refuse")))
    );
    assert!(server.stop().success());
}

#[test]
fn a_banner_trickled_a_byte_a_second_times_out_as_a_whole() {
    let addr = fake_destination(|mut tcp| {
        for b in b"220 trickle.test is very slow to say hello\r\n" {
            if tcp.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let policy = relay_to(&addr, "retry_interval = '1 hour'", "banner_timeout = '3s'");
    let (dir, server) = start("", &policy);
    let mut c = Client::ehlo(server.addr());
    let sent = std::time::Instant::now();
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: x\r\n\r\nx").code, 250);
    let r = wait_for_record(dir.path(), Duration::from_secs(30), |r| r["type"] == "TransientFailure").unwrap();
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(8), "the 3 s banner_timeout bounds the whole banner, not each byte: {took:?}");
    assert!(r["response"]["content"].as_str().unwrap().contains("timed out"), "{r}");
    drop(server);
}
