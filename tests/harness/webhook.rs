//! A real HTTP/1.1 webhook receiver for log hook tests (its own small server on std
//! sockets, keep-alive included): it keeps every request body and answers 200, 503, or
//! nothing at all (it stops listening and drops open connections) as the test says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    /// 200 OK.
    Up = 0,
    /// 503 Service Unavailable.
    Unavailable = 1,
    /// Connections refused (not listening).
    Down = 2,
    /// 400 Bad Request (a permanent refusal).
    Refusing = 3,
}

struct State {
    bodies: Mutex<Vec<Vec<u8>>>,
    mode: AtomicU8,
    requests: AtomicUsize,
}

/// The receiver; stops with the test process.
pub struct Webhook {
    /// `127.0.0.1:port`.
    pub addr: String,
    state: Arc<State>,
}

fn mode(state: &State) -> Mode {
    match state.mode.load(Ordering::SeqCst) {
        0 => Mode::Up,
        1 => Mode::Unavailable,
        3 => Mode::Refusing,
        _ => Mode::Down,
    }
}

impl Webhook {
    /// Starts listening on a free port.
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            bodies: Mutex::new(vec![]),
            mode: AtomicU8::new(Mode::Up as u8),
            requests: AtomicUsize::new(0),
        });
        let (st, at) = (state.clone(), addr.clone());
        std::thread::spawn(move || accept_loop(Some(listener), &at, st));
        Webhook { addr, state }
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, m: Mode) {
        self.state.mode.store(m as u8, Ordering::SeqCst);
    }

    /// Every body received with a 200 answer, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// Requests answered (any status).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The JSON records accepted: a body is one record or an array of them.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let mut out = vec![];
        for b in self.bodies() {
            match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(serde_json::Value::Array(list)) => out.extend(list),
                Ok(v) => out.push(v),
                Err(e) => panic!("webhook body is not JSON ({e}): {}", String::from_utf8_lossy(&b)),
            }
        }
        out
    }
}

fn accept_loop(mut listener: Option<TcpListener>, addr: &str, state: Arc<State>) {
    loop {
        if mode(&state) == Mode::Down {
            listener = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener.insert(l)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((stream, _)) => {
                let st = state.clone();
                std::thread::spawn(move || serve(stream, st));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve(stream: TcpStream, state: Arc<State>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, text) = match mode(&state) {
            Mode::Down => return,
            Mode::Unavailable => (503, "Service Unavailable"),
            Mode::Refusing => (400, "Bad Request"),
            Mode::Up => {
                state.bodies.lock().unwrap().push(body);
                (200, "OK")
            }
        };
        state.requests.fetch_add(1, Ordering::SeqCst);
        let reply = format!("HTTP/1.1 {status} {text}\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
