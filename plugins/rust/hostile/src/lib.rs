//! A policy component that misbehaves on request (header `X-Hostile`): `loop` spins
//! forever, `panic` traps, `memory` grows memory past any sane cap, `stack` recurses
//! without end. Anything else is accepted. wasmta's sandbox tests use it.

wit_bindgen::generate!({ path: "../../../wit", world: "message-policy" });

use exports::wasmta::policy::message_received::Guest;
use wasmta::policy::types::{ConnMeta, Message, Rejection};

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
            _ => Ok(()),
        }
    }
}

export!(Hostile);
