//! A structure-aware session fuzzer (reliability-tests T-40) over real sockets against the
//! real listener in process: random command sequences — valid, out of order, malformed,
//! with smuggling bodies and bad bytes — written in random chunks. Invariants: every
//! session ends with a reply (221 after QUIT, or a 4xx/5xx that closes), never an abrupt
//! close (a panicking session task would be one), and the messages the spool holds are
//! exactly the ids acknowledged with 250. `WASMTA_SESSION_FUZZ=N` runs N sessions
//! (default 300); the seed is printed on failure.

mod harness;

use harness::inproc::{reliable, serve};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// xorshift64*: deterministic, so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"MAIL FROM:<a@s.example>\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<a@s.example> SIZE=100 BODY=8BITMIME\r\n",
    b"RCPT TO:<r@d.example>\r\n",
    b"RCPT TO:<r2@other.example>\r\n",
    b"RCPT TO:<bad\r\n",
    b"RCPT TO:<\"q@x\"@d.example>\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"NOOP\n",
    b"VRFY someone\r\n",
    b"HELP\r\n",
    b"BDAT 5 LAST\r\n",
    b"AUTH PLAIN AGFAYg==\r\n",
    b"\x80\x81\xfe\r\n",
    b"MAIL FROM:<a\0b@c>\r\n",
    b"\r\n",
];

const BODY_PARTS: &[&[u8]] = &[
    b"Subject: fuzz\r\n",
    b"Received: from x by y\r\n",
    b"\r\n",
    b"text line\r\n",
    b"..leading dot\r\n",
    b".\n",
    b"\n.\n",
    b"\r.\r\n",
    b"\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@d.example>\r\nDATA\r\n",
    b"bare\rcr\r\n",
    b"\xc3\xa9t\xc3\xa9\r\n",
];

/// One session's script: commands, sometimes a DATA with a body, then a tail that ends
/// DATA if one is open and QUITs either way.
fn script(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(4) != 0 {
        out.extend_from_slice(b"EHLO client.example\r\n");
    }
    for _ in 0..rng.below(25) {
        match rng.below(10) {
            0..=6 => out.extend_from_slice(rng.pick(COMMANDS)),
            7 => {
                out.extend_from_slice(b"DATA\r\n");
                for _ in 0..rng.below(8) {
                    out.extend_from_slice(rng.pick(BODY_PARTS));
                }
                out.extend_from_slice(b"\r\n.\r\n");
            }
            8 => {
                // a valid transaction
                out.extend_from_slice(
                    b"MAIL FROM:<a@s.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\nSubject: ok\r\n\r\nx\r\n.\r\n",
                );
            }
            _ => {
                let n = rng.below(40) + 1;
                out.extend((0..n).map(|_| rng.below(256) as u8));
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    out
}

/// Runs one session; returns every reply line the server wrote.
fn run_session(addr: &str, rng: &mut Rng) -> Vec<String> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut banner = [0u8; 256];
    let n = s.read(&mut banner).expect("banner");
    assert!(banner[..n].starts_with(b"220 "), "{:?}", String::from_utf8_lossy(&banner[..n]));
    let bytes = script(rng);
    let mut pos = 0;
    while pos < bytes.len() {
        let end = (pos + 1 + rng.below(64)).min(bytes.len());
        if s.write_all(&bytes[pos..end]).is_err() {
            break; // the server closed (error budget, protocol violation)
        }
        pos = end;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).lines().map(str::to_string).collect()
}

#[test]
fn random_sessions_keep_the_protocol_and_the_spool_in_step() {
    let sessions: u64 = std::env::var("WASMTA_SESSION_FUZZ").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let backend = reliable();
    let (rt, addr) = serve(backend.clone(), &[("client_timeout", "3 seconds")]);
    let mut acknowledged = 0usize;
    for seed in 1..=sessions {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let lines = run_session(&addr, &mut rng);
        let last = lines.last().cloned().unwrap_or_default();
        let closing = last.starts_with("221 ") || last.starts_with("421 ") || last.starts_with("554 ");
        assert!(closing, "seed {seed}: the session ended without a closing reply: {lines:?}");
        for l in &lines {
            if let Some(ids) = l.strip_prefix("250 2.0.0 OK ids=") {
                acknowledged += ids.split(',').count();
            }
        }
        assert_eq!(backend.live(), acknowledged, "seed {seed}: stored and acknowledged differ");
    }
    assert!(acknowledged > sessions as usize / 2, "the sessions did deliver messages: {acknowledged}");
    drop(rt);
}
