//! A deliberately plain SMTP client for tests: raw writes (so tests can send malformed
//! or pipelined input) and lossy reply reading (a server that echoes garbage cannot trip
//! the harness).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply: code and full text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// `"550 5.7.1"`-style prefix check on the last line.
    pub fn starts(&self, prefix: &str) -> bool {
        self.text.lines().last().unwrap_or("").starts_with(prefix)
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Connects from the loopback address `from` (say 127.0.0.2) and reads the banner.
    pub fn open_from(addr: &str, from: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).expect("bind the client address");
            socket.connect(addr.parse().unwrap()).await.expect("connect")
        });
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut c = Client { stream, buf: Vec::new() };
        let banner = c.reply();
        assert_eq!(banner.code, 220, "banner: {banner:?}");
        c
    }

    /// Connects and reads the banner.
    pub fn open(addr: &str) -> Client {
        let mut c = Client::connect(addr);
        let banner = c.reply();
        assert_eq!(banner.code, 220, "banner: {banner:?}");
        c
    }

    /// Connects, reads the banner, says EHLO.
    pub fn ehlo(addr: &str) -> Client {
        let mut c = Client::open(addr);
        let r = c.cmd("EHLO client.test");
        assert_eq!(r.code, 250, "{r:?}");
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one (possibly multi-line) reply; code 0 when the connection closed.
    pub fn reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let line = match self.line() {
                Some(l) => l,
                None => return Reply { code: 0, text },
            };
            text.push_str(&line);
            text.push('\n');
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Reply { code, text };
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// A whole transaction; returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return r;
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            if r.code != 250 {
                return r;
            }
        }
        let r = self.cmd("DATA");
        if r.code != 354 {
            return r;
        }
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }

    /// Sends without failing when the peer has gone; false if the write failed.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// True when a reply (or the end of the stream) is waiting to be read.
    pub fn has_input(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let ready = !matches!(self.stream.peek(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
        self.stream.set_nonblocking(false).expect("blocking");
        ready
    }

    /// True when the server closed the connection.
    pub fn closed(&mut self) -> bool {
        self.line().is_none()
    }
}

/// The spool ids in a `250 ... ids=a,b` reply (continued on more lines when long).
pub fn ids(reply: &Reply) -> Vec<String> {
    // each line is `250-2.0.0 text` or `250 2.0.0 text`: rejoin the texts
    let text: String = reply.text.lines().map(|l| l.get(10..).unwrap_or("")).collect();
    text.split("ids=").nth(1).map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default()
}
