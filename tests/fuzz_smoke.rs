//! The fuzz targets' bodies (`wasmta::fuzzing`, run for real by cargo-fuzz in `fuzz/`) on
//! stable: each seed, then a few thousand random mutations of the seeds, so `cargo test`
//! catches a broken property even where nightly is not installed.

use wasmta::fuzzing;

/// xorshift: the same inputs every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.next() % 8 {
            let r = self.next();
            let at = if v.is_empty() { 0 } else { (r as usize >> 8) % v.len() };
            match r % 4 {
                0 if !v.is_empty() => v[at] = (r >> 32) as u8,
                1 => v.insert(at, (r >> 24) as u8),
                2 if !v.is_empty() => {
                    v.remove(at);
                }
                _ => {
                    let piece: Vec<u8> = v[at..].iter().take(16).copied().collect();
                    v.splice(at..at, piece);
                }
            }
        }
        v
    }
}

fn run(target: fn(&[u8]), seeds: &[&[u8]]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in seeds {
        target(seed);
    }
    for i in 0..3000 {
        let input = rng.mutate(seeds[i % seeds.len()]);
        target(&input);
    }
}

#[test]
fn command_parser() {
    run(
        fuzzing::command,
        &[
            b"MAIL FROM:<a@b.example> SIZE=10\r\n",
            b"RCPT TO:<\"x y\"@[127.0.0.1]>\r\n",
            b"EHLO x\r\n",
            b"AUTH PLAIN AGxvZ2lu\r\n",
        ],
    );
}

#[test]
fn data_receiver_whole_and_chunked_agree() {
    run(
        fuzzing::data_chunking,
        &[
            b"\x00\x05Subject: x\r\n\r\nbody\r\n..stuffed\r\n.\r\nQUIT\r\n",
            b"\x01\x02a\nb\r\n.\n.\r\n",
            b"\x02\x07\r\n.\r\n",
        ],
    );
}

#[test]
fn reply_reader() {
    run(fuzzing::reply, &[b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n", b"451 4.3.0 later\r\n550 no\n"]);
}

#[test]
fn spool_record_decoder() {
    let id = wasmta::message::SpoolId::from_bytes([7; 16]);
    let mut seed = wasmta::spool::record::encode_put(id, b"{\"sender\":\"a@b\"}", b"Subject: x\r\n\r\nbody");
    seed.extend(wasmta::spool::record::encode_remove(id));
    run(fuzzing::spool_record, &[&seed, b"WSPL\x01\x01\xff\xff\xff\x7f"]);
}

#[test]
fn shaping_loader() {
    let kumo = include_bytes!("data/kumomta-shaping.toml");
    run(
        fuzzing::shaping,
        &[&kumo[..2000], b"[\"default\"]\nconnection_limit = 3\n", b"{\"default\": {\"max_ready\": 5}}"],
    );
}

#[test]
fn inputs_the_fuzzers_found() {
    // each once crashed a target; they stay as regression inputs
    fuzzing::command(b"RCPT TO\xc6\xbc\"x\r\n");
    fuzzing::reply(b"750 no\r\n");
}

#[test]
fn header_reader_and_editor() {
    run(
        fuzzing::headers,
        &[
            b"Subject: hi\r\n folded\r\nFrom: a@b\r\n\r\nbody\r\n",
            b"\r\nbody only\r\n",
            b" leading continuation\r\nX: y\r\n\r\n",
            b"no colon line\r\nX: y\nbare: lf\n\nbody",
            b"Received: a\r\nReceived: b\r\n",
            b"",
        ],
    );
}
