//! SMTP input hazards over real sockets (reliability-tests.md T-15 … T-35 as they apply
//! to reception): limits, smuggling, pipelining, STARTTLS injection, bad bytes, timeouts.

mod harness;

use harness::smtp::{Client, ids};
use harness::{Server, policy, spooled, start, temp_dir};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn t15_overlong_commands_get_500_and_the_session_survives() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    for len in [510usize, 514, 990, 998] {
        let line = format!("NOOP {}", "x".repeat(len - 5));
        assert_eq!(c.cmd(&line).code, 250, "length {len}");
    }
    for len in [999usize, 1001, 4096, 1 << 20, 10 << 20] {
        let line = format!("NOOP {}", "x".repeat(len - 5));
        let r = c.cmd(&line);
        assert!(r.starts("500 5.5.2"), "length {len}: {r:?}");
        assert_eq!(c.cmd("NOOP").code, 250, "session survives after length {len}");
    }
}

#[test]
fn t16_t17_overlong_data_lines_and_oversize_messages_are_refused() {
    let (dir, server) = start("max_message_size = '64 KB',", "");
    let mut c = Client::ehlo(server.addr());
    let long = format!("Subject: x\r\n\r\n{}", "y".repeat(999));
    assert!(c.send_mail("a@s.example", &["b@d.example"], &long).starts("500 5.5.2"));
    let ok = format!("Subject: x\r\n\r\n{}", "y".repeat(998));
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], &ok).code, 250);
    assert!(c.cmd("MAIL FROM:<a@s.example> SIZE=70000").starts("552 5.3.4"));
    let big = format!("Subject: x\r\n\r\n{}", vec!["z".repeat(500); 200].join("\r\n"));
    assert!(c.send_mail("a@s.example", &["b@d.example"], &big).starts("552 5.3.4"));
    assert_eq!(c.cmd("NOOP").code, 250);
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 1);
}

fn smuggle_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let tail =
        b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: spoof\r\n\r\nsmuggled\r\n";
    ["\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r.\r"]
        .iter()
        .map(|s| {
            let mut b = b"Subject: real\r\n\r\nbody".to_vec();
            b.extend_from_slice(s.as_bytes());
            b.extend_from_slice(tail);
            b.extend_from_slice(b"\r\n.\r\n");
            (*s, b)
        })
        .collect()
}

#[test]
fn t18_smuggling_never_yields_a_second_message() {
    for mode in ["Allow", "Fix", "Deny"] {
        let (dir, server) = start(&format!("invalid_line_endings = '{mode}',"), "");
        let mut accepted = 0;
        for (variant, body) in smuggle_bodies() {
            let mut c = Client::ehlo(server.addr());
            c.cmd("MAIL FROM:<a@s.example>");
            c.cmd("RCPT TO:<b@d.example>");
            assert_eq!(c.cmd("DATA").code, 354);
            c.send(&body);
            let r = c.reply();
            if mode == "Deny" {
                assert!(r.starts("550 5.5.2"), "{mode} {variant:?}: {r:?}");
            } else {
                assert_eq!(ids(&r).len(), 1, "{mode} {variant:?}: {r:?}");
                accepted += 1;
            }
            // no reply for smuggled commands is pending: the next reply answers NOOP
            let n = c.cmd("NOOP");
            assert!(n.starts("250 2.0.0"), "{mode} {variant:?}: {n:?}");
        }
        assert!(server.stop().success());
        let msgs = spooled(dir.path());
        assert_eq!(msgs.len(), accepted, "{mode}: exactly one message per DATA");
        for m in msgs {
            assert!(
                m.data().unwrap().windows(10).any(|w| w == b"MAIL FROM:"),
                "{mode}: smuggled text stays in the body"
            );
        }
    }
}

#[test]
fn t21_dot_stuffing_round_trips() {
    let (dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    c.cmd("RCPT TO:<b@d.example>");
    c.cmd("DATA");
    c.send(b"Subject: dots\r\n\r\n..\r\n...leading\r\n..\r\nend\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert!(server.stop().success());
    let m = &spooled(dir.path())[0];
    assert!(
        m.data().unwrap().ends_with(b"Subject: dots\r\n\r\n.\r\n..leading\r\n.\r\nend\r\n"),
        "{:?}",
        String::from_utf8_lossy(&m.data().unwrap())
    );
}

#[test]
fn t22_t28_pipelined_input_in_any_chunking_gets_the_same_replies() {
    let (_dir, server) = start("", "");
    let script = b"EHLO pipe.test\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@d.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<d@d.example>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n";
    let mut transcripts = vec![];
    for chunk in [script.len(), 1, 3, 7, 64] {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut banner = [0u8; 256];
        let _ = s.read(&mut banner).unwrap();
        for part in script.chunks(chunk) {
            s.write_all(part).unwrap();
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let codes: Vec<String> =
            text.lines().filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ').map(|l| l[..3].to_string()).collect();
        assert_eq!(codes, ["250", "250", "250", "250", "250", "354", "250", "250", "221"], "chunk {chunk}: {text}");
        transcripts.push(codes);
    }
}

#[test]
fn t23_t24_t26_starttls_discards_injected_plaintext_and_resets_state() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@evil.example>\r\n");
    let r = c.reply();
    assert!(r.starts("220 2.0.0"), "{r:?}");
    let mut tls = harness::tls::client("mx.test");
    let mut tcp = c.stream.try_clone().unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    // after the handshake the first reply must answer our MAIL, not the injected commands
    stream.write_all(b"MAIL FROM:<a@s.example>\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.starts_with("503 5.5.1"), "EHLO is required again after STARTTLS (T-24): {first}");
    stream.write_all(b"EHLO again.test\r\n").unwrap();
    let n = stream.read(&mut buf).unwrap();
    let ehlo = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ehlo.starts_with("250-mx.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "STARTTLS is not offered twice: {ehlo}");
    stream.write_all(b"STARTTLS\r\n").unwrap();
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("503 5.5.1"), "T-26");
}

#[test]
fn t27_input_before_the_greeting_is_refused() {
    let (_dir, server) = start("", "kumo.on('smtp_server_connection_accepted', function(conn) kumo.sleep(0.3) end)");
    let mut c = Client::connect(server.addr());
    c.send(b"EHLO eager.test\r\n");
    let r = c.reply();
    assert!(r.starts("554 5.5.0"), "{r:?}");
    assert!(c.closed());
}

#[test]
fn t29_null_sender_and_foreign_recipients_without_trust() {
    let (_dir, server) = start("relay_hosts = {},", "");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert!(c.cmd("RCPT TO:<x@foreign.example>").starts("550 5.7.1"));
}

#[test]
fn t30_recipient_limit_accepts_100_and_tempfails_the_excess() {
    let (_dir, server) = start("max_recipients_per_message = 100,", "");
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    for i in 0..100 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@d.example>")).code, 250, "recipient {i}");
    }
    assert!(c.cmd("RCPT TO:<r100@d.example>").starts("452 4.5.3"));
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n");
    assert_eq!(ids(&c.reply()).len(), 100);
}

#[test]
fn t31_invalid_utf8_and_nul_get_501_and_the_session_survives() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    c.send(b"\x80\x81\r\n");
    assert!(c.reply().starts("501 5.5.2"));
    c.send(b"MAIL FROM:<a\0b@c.example>\r\n");
    assert!(c.reply().starts("501 5.5.2"));
    c.send(b"EHLO bad\x01name\r\n");
    assert_eq!(c.reply().code, 501);
    assert_eq!(c.cmd("NOOP").code, 250);
    assert!(c.cmd("FROB").starts("500 5.5.1"));
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], "Subject: x\r\n\r\nx").code, 250);
}

#[test]
fn t33_idle_clients_are_disconnected_with_421() {
    let (_dir, server) = start("client_timeout = '1 second',", "");
    let mut c = Client::ehlo(server.addr());
    let started = std::time::Instant::now();
    let r = c.reply();
    assert!(r.starts("421 4.4.2"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // a slowloris in DATA is cut off the same way
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    c.cmd("RCPT TO:<b@d.example>");
    c.cmd("DATA");
    c.send(b"Subject: slow\r\n");
    assert!(c.reply().starts("421 4.4.2"));
}

#[test]
fn t34_error_budget_closes_the_session() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    for i in 0..20 {
        assert!(c.cmd("BOGUS").starts("500 5.5.1"), "error {i}");
    }
    let r = c.reply();
    assert!(r.starts("421 4.7.0"), "{r:?}");
    assert!(c.closed());
}

#[test]
fn sequence_errors_get_503() {
    let (_dir, server) = start("", "");
    let mut c = Client::open(server.addr());
    assert!(c.cmd("MAIL FROM:<a@s.example>").starts("503 5.5.1"));
    c.cmd("EHLO x");
    assert!(c.cmd("RCPT TO:<b@d.example>").starts("503 5.5.1"));
    assert!(c.cmd("DATA").starts("503 5.5.1"));
    assert_eq!(c.cmd("MAIL FROM:<a@s.example>").code, 250);
    assert!(c.cmd("MAIL FROM:<a@s.example>").starts("503 5.5.1"));
    assert!(c.cmd("DATA").starts("503 5.5.1"));
    assert_eq!(c.cmd("RSET").code, 250);
    assert_eq!(c.cmd("VRFY someone").code, 252);
    assert_eq!(c.cmd("HELP").code, 214);
}

#[test]
fn listener_limits_are_configurable() {
    let (_dir, server) = start(
        "line_length_hard_limit = 100, max_messages_per_connection = 2, data_processing_timeout = '1 second',",
        "kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('Subject') == 'slow' then kumo.sleep(3) end
end)",
    );
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd(&format!("NOOP {}", "x".repeat(95))).code, 250);
    assert!(c.cmd(&format!("NOOP {}", "x".repeat(96))).starts("500 5.5.2"));
    let started = std::time::Instant::now();
    let r = c.send_mail("a@s.example", &["b@d.example"], "Subject: slow\r\n\r\nx");
    assert!(r.starts("451 4.4.5"), "{r:?}");
    assert!(r.text.contains("data_processing_timeout"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], "Subject: 1\r\n\r\nx").code, 250);
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], "Subject: 2\r\n\r\nx").code, 250);
    assert!(c.cmd("MAIL FROM:<a@s.example>").starts("451 4.5.3"));
}

#[test]
fn configured_tls_certificate_is_presented() {
    let dir = temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let opts = format!("tls_certificate = '{d}/cert.pem', tls_private_key = '{d}/key.pem',", d = dir.path().display());
    let p = policy(dir.path(), &opts, "");
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    assert!(c.cmd("STARTTLS").starts("220"));
    let mut tls = harness::tls::client("mx.test");
    let mut tcp = c.stream.try_clone().unwrap();
    {
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        stream.write_all(b"EHLO tls.test\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("250-mx.test"));
    }
    let presented = tls.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented.as_ref(), cert.cert.der().as_ref());
}

#[test]
fn t29_open_relay_address_forms_are_refused() {
    // only ours.example is a listener domain that takes mail; nothing relays elsewhere
    let extra = "kumo.on('get_listener_domain', function(domain) if domain == 'ours.example' then return kumo.make_listener_domain { relay_to = true } end end)";
    let (_dir, server) = start("relay_hosts = {},", extra);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd("MAIL FROM:<a@s.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@ours.example>").code, 250, "our own domain is accepted");
    for rcpt in [
        "<victim%foreign.example@ours.example>",
        "<@ours.example:victim@foreign.example>",
        "<\"victim@foreign.example\"@ours.example>",
        "<victim@[192.0.2.1]>",
        "<victim@FOREIGN.example>",
        "<victim@foreign.example.>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        let relayed = r.code == 250;
        // a%b@ours and "a@b"@ours are local parts of ours.example: accepted for ours, and
        // the message goes to ours.example, never to foreign.example
        if relayed {
            assert!(rcpt.ends_with("@ours.example>"), "{rcpt} was accepted: {r:?}");
        } else {
            assert!(r.code >= 500 || r.code == 501, "{rcpt}: {r:?}");
        }
    }
}

#[test]
fn t32_header_bombs_and_mail_loops_are_refused_quickly() {
    let (dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    let hops =
        |n: usize| (0..n).map(|i| format!("Received: from hop{i}.example by x; Sat, 28 Nov 2026 00:00:00 +0000\r\n"));
    // 50 hops is the limit (Postfix's hopcount_limit): accepted
    let fifty: String = hops(50).collect();
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], &format!("{fifty}Subject: ok\r\n\r\nx")).code, 250);
    // 101 hops: a loop
    let loop_msg: String = hops(101).collect::<String>() + "Subject: loop\r\n\r\nx";
    let r = c.send_mail("a@s.example", &["b@d.example"], &loop_msg);
    assert!(r.starts("554 5.4.6"), "{r:?}");
    // a 1 MB header section of short fields: refused by size, without quadratic work
    let bomb: String = (0..90_000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>() + "\r\nbody";
    assert!(bomb.len() > 1_000_000);
    let started = std::time::Instant::now();
    let r = c.send_mail("a@s.example", &["b@d.example"], &bomb);
    assert!(r.starts("552 5.3.4"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // a 10,000-character header line is over the line limit
    let long = format!("Subject: {}\r\n\r\nx", "s".repeat(10_000));
    assert!(c.send_mail("a@s.example", &["b@d.example"], &long).starts("500 5.5.2"));
    assert_eq!(c.cmd("NOOP").code, 250, "the session survives all of them");
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 1, "only the 50-hop message was queued");
}

#[test]
fn t32_header_limits_are_listener_options() {
    let (_dir, server) = start("max_received_headers = 2, max_header_size = '200',", "");
    let mut c = Client::ehlo(server.addr());
    let two = "Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nx";
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], two).code, 250);
    assert!(c.send_mail("a@s.example", &["b@d.example"], &format!("Received: c\r\n{two}")).starts("554 5.4.6"));
    let big = format!("Subject: {}\r\n\r\nx", "s".repeat(200));
    assert!(c.send_mail("a@s.example", &["b@d.example"], &big).starts("552 5.3.4"));
}

#[test]
fn t33_a_trickling_client_is_cut_off_by_the_session_duration_cap() {
    let (_dir, server) = start("client_timeout = '2 seconds', max_session_duration = '3 seconds',", "");
    // each byte arrives well inside client_timeout, so only the total cap can end this
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    c.cmd("RCPT TO:<b@d.example>");
    c.cmd("DATA");
    let started = std::time::Instant::now();
    let reply = loop {
        if c.has_input() || !c.try_send(b"x") {
            break c.reply();
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
    };
    assert!(reply.starts("421 4.3.2"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn t36_bdat_is_not_offered_and_is_refused_without_desynchronising() {
    // KumoMTA offers no CHUNKING, nor do we: BDAT is an unknown command
    let (_dir, server) = start("", "");
    let mut c = Client::open(server.addr());
    let ehlo = c.cmd("EHLO client.example");
    assert!(!ehlo.text.to_ascii_uppercase().contains("CHUNKING"), "{ehlo:?}");
    c.cmd("MAIL FROM:<a@s.example>");
    c.cmd("RCPT TO:<b@d.example>");
    let r = c.cmd("BDAT 0 LAST");
    assert!(r.code == 500 || r.code == 502, "{r:?}");
    assert!(c.cmd("DATA").starts("354"), "the transaction is intact");
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
}

#[test]
fn a_silent_or_trickling_starttls_handshake_is_cut_off() {
    let (_dir, server) = start("client_timeout = '2 seconds', max_session_duration = '4 seconds',", "");
    // nothing after the 220: the handshake gets client_timeout
    let mut c = Client::ehlo(server.addr());
    assert!(c.cmd("STARTTLS").starts("220"));
    let started = std::time::Instant::now();
    assert!(c.closed(), "the server hangs up");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // a byte every second keeps no handshake alive past the session's end
    let mut c = Client::ehlo(server.addr());
    assert!(c.cmd("STARTTLS").starts("220"));
    let started = std::time::Instant::now();
    let mut hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".iter();
    let cut = loop {
        std::thread::sleep(Duration::from_millis(900));
        let Some(b) = hello.next() else { break false };
        if !c.try_send(&[*b]) || c.has_input() {
            break true;
        }
    };
    assert!(cut || c.closed(), "cut off while trickling");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

#[test]
fn reply_lines_stay_within_512_octets_for_a_thousand_recipients() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    for i in 0..1024 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@d.example>")).code, 250);
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.lines().all(|l| l.len() + 2 <= 512), "{}", r.text.lines().map(str::len).max().unwrap());
    assert_eq!(ids(&r).len(), 1024, "every id is still there, across lines");
    // and Python's smtplib, which refuses lines over 8192 octets, reads it
    if std::process::Command::new("python3").arg("--version").output().is_ok() {
        let script = format!(
            "import smtplib\ns = smtplib.SMTP('{}'.split(':')[0], int('{}'.split(':')[1]))\nrcpts = ['r%d@d.example' % i for i in range(300)]\nrefused = s.sendmail('a@s.example', rcpts, 'Subject: py\\r\\n\\r\\nx\\r\\n')\nprint('refused', len(refused))\ns.quit()\n",
            server.addr(),
            server.addr()
        );
        let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("refused 0"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn excess_recipients_are_not_errors_that_end_the_session() {
    let (_dir, server) = start("max_recipients_per_message = 10,", "");
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    for i in 0..10 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@d.example>")).code, 250);
    }
    // a client pushing 50 more (the error budget is 20) keeps its transaction
    for i in 10..60 {
        assert!(c.cmd(&format!("RCPT TO:<r{i}@d.example>")).starts("452 4.5.3"), "{i}");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: some\r\n\r\nx\r\n.\r\n");
    assert_eq!(ids(&c.reply()).len(), 10);
}

#[test]
fn postmaster_parameters_and_nul_follow_the_rfcs() {
    let (dir, server) = start("invalid_line_endings = 'Deny',", "");
    let mut c = Client::ehlo(server.addr());
    // RFC 5321 §4.5.1: RCPT TO:<Postmaster> without a domain is accepted
    assert_eq!(c.cmd("MAIL FROM:<a@s.example>").code, 250);
    let r = c.cmd("RCPT TO:<Postmaster>");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RSET").code, 250);
    // unknown or invalid parameters: 555 5.5.4, not silence
    for bad in
        ["MAIL FROM:<a@s.example> SIZE=abc", "MAIL FROM:<a@s.example> FROB=1", "MAIL FROM:<a@s.example> BODY=BINARY"]
    {
        assert!(c.cmd(bad).starts("555 5.5.4"), "{bad}");
    }
    assert_eq!(c.cmd("MAIL FROM:<a@s.example> SIZE=100 BODY=8BITMIME SMTPUTF8").code, 250);
    assert!(c.cmd("RCPT TO:<b@d.example> NOTIFY=NEVER").starts("555 5.5.4"));
    assert_eq!(c.cmd("RCPT TO:<b@d.example>").code, 250);
    // a NUL in DATA is refused in strict mode
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: nul\r\n\r\nhello\0world\r\n\0.\r\nafter\r\n.\r\n");
    assert!(c.reply().starts("550 5.6.0"));
    assert_eq!(c.cmd("NOOP").code, 250, "the session goes on");
    drop(c);
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());

    // in any other mode NULs are removed: no `NUL . CRLF` line can end data downstream
    let (dir, server) = start("invalid_line_endings = 'Fix',", "");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(
        c.send_mail("a@s.example", &["b@d.example"], "Subject: nul\r\n\r\nhello\0world\r\n\0.\r\nafter").code,
        250
    );
    drop(c);
    assert!(server.stop().success());
    let kept = spooled(dir.path());
    let data = kept[0].data().unwrap();
    assert!(!data.contains(&0), "{:?}", String::from_utf8_lossy(&data));
    assert!(String::from_utf8_lossy(&data).contains("helloworld\r\n.\r\nafter"));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

#[test]
fn one_transaction_to_200_recipients_keeps_one_copy_of_its_body() {
    let (dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    let before = rss_kib(server.child.id());
    c.cmd("MAIL FROM:<a@s.example>");
    for i in 0..200 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@d.example>")).code, 250);
    }
    assert_eq!(c.cmd("DATA").code, 354);
    let line = format!("{}\r\n", "x".repeat(998));
    let mut body = String::from("Subject: big\r\n\r\n");
    while body.len() < 10 * 1024 * 1024 {
        body.push_str(&line);
    }
    c.send(body.as_bytes());
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(ids(&r).len(), 200, "{}", &r.text[..r.text.len().min(300)]);
    let grown_mib = rss_kib(server.child.id()).saturating_sub(before) / 1024;
    let spool_mib = dir_bytes(&dir.path().join("spool")) / (1024 * 1024);
    eprintln!("200 recipients x 10 MiB: RSS grew {grown_mib} MiB, spool holds {spool_mib} MiB");
    // one copy in the spool; in memory the body, the receive buffer and allocator slack
    assert!(spool_mib <= 12, "the spool holds {spool_mib} MiB (200 copies would be 2,000)");
    assert!(grown_mib <= 120, "RSS grew {grown_mib} MiB (200 copies would be 2,000)");
    drop(c);
    assert!(server.stop().success());
    let kept = spooled(dir.path());
    assert_eq!(kept.len(), 200);
    assert!(
        kept.iter()
            .all(|m| m.first_header("Received").unwrap().is_some_and(|r| r.contains(&m.recipient().unwrap().email())))
    );
}
