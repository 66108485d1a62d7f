//! A policy component that misbehaves on request (header `X-Hostile`): `loop` spins
//! forever, `panic` traps, `memory` grows memory past any sane cap, `stack` recurses
//! without end; `bad-handle`, `bad-json`, `bad-address` and `huge-log` pass hostile
//! arguments to host calls (a garbage-accepting host answers 550); `connect` and `file` try to
//! reach the network and the file system (denied: no capability); `throttle` takes from a
//! 2/min throttle and tempfails when it is empty. Anything else is
//! accepted. wasmta's sandbox tests use it.

wit_bindgen::generate!({ path: "../../../wit", world: "message-policy" });

use exports::wasmta::policy::message_received::Guest;
use wasmta::policy::host::{Level, log};
use wasmta::policy::types::{ConnMeta, Message, Rejection};

fn accepted_garbage(what: &str) -> Result<(), Rejection> {
    Err(Rejection {
        code: 550,
        enhanced_code: Some("5.7.1".into()),
        text: format!("host accepted {what}"),
        disconnect: None,
    })
}

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, trail: &mut Vec<u64>) -> u64 {
    trail.push(n);
    recurse(n + 1, trail) + trail.len() as u64
}

impl Guest for Hostile {
    fn smtp_server_message_received(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
        match msg.get_first_named_header_value("X-Hostile").as_deref() {
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("panic") => panic!("hostile plugin panics on purpose"),
            Some("memory") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 8 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("stack") => {
                let mut trail = Vec::new();
                let n = recurse(0, &mut trail);
                std::hint::black_box(n);
                Ok(())
            }
            Some("bad-handle") => {
                // SAFETY (of the guest): none; this handle was never given to us
                let forged = unsafe { Message::from_handle(0x7fff_fff0) };
                let id = forged.id();
                std::hint::black_box(id);
                accepted_garbage("a forged handle")
            }
            Some("bad-json") => match msg.set_meta("k", "{not json") {
                Err(_) => Ok(()),
                Ok(()) => accepted_garbage("invalid JSON"),
            },
            Some("bad-address") => match msg.set_sender("not an address\r\nRCPT TO:<x@y>") {
                Err(_) => Ok(()),
                Ok(()) => accepted_garbage("an invalid address"),
            },
            Some("throttle") => match wasmta::policy::host::throttle("hostile", "2/min") {
                Ok(None) => Ok(()),
                Ok(Some(ms)) => Err(Rejection {
                    code: 451,
                    enhanced_code: Some("4.7.1".into()),
                    text: format!("throttled for {}s", ms.div_ceil(1000)),
                    disconnect: None,
                }),
                Err(e) => Err(Rejection { code: 451, enhanced_code: Some("4.3.0".into()), text: e, disconnect: None }),
            },
            Some("connect") => {
                match std::net::TcpStream::connect(msg.get_first_named_header_value("X-Target").unwrap_or_default()) {
                    Err(_) => Ok(()),
                    Ok(_) => accepted_garbage("an outbound connection"),
                }
            }
            Some("file") => match std::fs::read("/etc/passwd") {
                Err(_) => Ok(()),
                Ok(_) => accepted_garbage("a file read"),
            },
            Some("huge-log") => {
                log(Level::Error, &"x".repeat(4 << 20));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

export!(Hostile);
