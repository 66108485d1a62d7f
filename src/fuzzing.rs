//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz on nightly), kept in the library so
//! that `cargo test` also runs them (tests/fuzz_smoke.rs: seeds plus random inputs on
//! stable). Each panics only when a property breaks.

use crate::protocol::client::ReplyReader;
use crate::protocol::{DataReceiver, LineEndings};
use crate::spool::record::{Decoded, Record, decode, encode_body, encode_put, encode_ref, encode_remove};

/// The command parser: any line gives a command or a reply, never a panic; a reply is a
/// 4xx/5xx.
pub fn command(data: &[u8]) {
    if let Err(reply) = crate::protocol::command::parse(data) {
        assert!((400..600).contains(&reply.code), "parse error with code {}", reply.code);
    }
}

fn receive(
    chunks: &[&[u8]],
    endings: LineEndings,
) -> (Option<usize>, Option<Result<Vec<u8>, crate::protocol::DataError>>) {
    let mut rx = DataReceiver::new(64 * 1024, 998, endings);
    let mut offset = 0;
    for chunk in chunks {
        if let Some(n) = rx.feed(chunk) {
            return (Some(offset + n), Some(rx.finish()));
        }
        offset += chunk.len();
    }
    (None, None)
}

/// The DATA receiver: the whole input at once and the same input cut at the points the
/// first bytes choose give the same end offset and the same message (or error).
pub fn data_chunking(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let endings = match data[0] % 3 {
        0 => LineEndings::Deny,
        1 => LineEndings::Allow,
        _ => LineEndings::Fix,
    };
    let cuts = data[1] as usize;
    let input = &data[2..];
    let whole = receive(&[input], endings);
    let mut chunks = vec![];
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let size = 1 + (cuts.wrapping_mul(31).wrapping_add(i * 17) % 7);
        let (a, b) = rest.split_at(size.min(rest.len()));
        chunks.push(a);
        rest = b;
        i += 1;
    }
    let chunked = receive(&chunks, endings);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    if let (Some(n), Some(Ok(body))) = &whole {
        assert!(*n <= input.len());
        assert!(
            input[..*n].ends_with(b"\r\n.\r\n") || input[..*n].ends_with(b"\n.\n") || input[..*n].ends_with(b".\r\n")
        );
        assert!(body.len() <= 64 * 1024);
    }
}

/// The client's reply reader: any bytes, in any chunking, give replies or errors with
/// bounded buffering, never a panic.
pub fn reply(data: &[u8]) {
    let mut r = ReplyReader::default();
    for chunk in data.chunks(13) {
        r.push(chunk);
        let mut n = 0;
        while let Some(reply) = r.next_reply() {
            if let Ok(reply) = reply {
                assert!((100..600).contains(&reply.code), "reply code {}", reply.code);
            }
            n += 1;
            if n > 10_000 {
                panic!("next_reply does not make progress");
            }
        }
    }
}

/// The spool record decoder: anything decodes to a record, incomplete or corrupt with a
/// forward skip; a decoded record re-encodes to exactly the bytes it came from.
pub fn spool_record(data: &[u8]) {
    let mut at = 0;
    let mut steps = 0;
    while at < data.len() {
        steps += 1;
        assert!(steps <= data.len() + 1, "the decoder does not move forward");
        match decode(&data[at..]) {
            Decoded::Record(record, len) => {
                let again = match record {
                    Record::Put { id, meta, data: body } => encode_put(id, meta, body),
                    Record::Remove { id } => encode_remove(id),
                    Record::Body { id, data } => encode_body(id, data),
                    Record::Ref { id, meta, body, prefix } => encode_ref(id, meta, body, prefix),
                };
                assert_eq!(&again[..], &data[at..at + len], "re-encoding differs");
                at += len;
            }
            Decoded::Incomplete => break,
            Decoded::Corrupt { skip, .. } => {
                assert!(skip > 0, "a corrupt record must be skipped forward");
                at += skip;
            }
        }
    }
}

/// The shaping loader: any text, as TOML and as JSON, loads or gives errors naming the
/// file, never a panic.
pub fn shaping(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for path in ["fuzz.toml", "fuzz.json"] {
        if let Err(errors) = crate::shaping::file::ShapingFile::parse(path, &text) {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.starts_with(path)), "{errors:?}");
        }
    }
}

/// The in-house header reader and editor (reliability-tests T-42): fields lie in order
/// inside the header section, values unfold without panicking, removing nothing changes
/// nothing, and a prepended field comes first with the body left as it was.
pub fn headers(data: &[u8]) {
    use crate::message::headers;
    let end = headers::header_end(data);
    assert!(end <= data.len());
    let mut last = 0;
    for f in headers::fields(data) {
        assert!(f.span.start >= last && f.span.end <= end && f.span.start < f.span.end, "{:?}", f.span);
        last = f.span.end;
        let _ = f.value();
    }
    assert_eq!(headers::remove_where(data, |_| false), data);
    let with = headers::prepend(data, "X-Fuzz", "v");
    assert_eq!(headers::fields(&with).first().map(|f| f.name), Some("X-Fuzz"));
    assert_eq!(&with[headers::header_end(&with)..], &data[end..], "the body changed");
}
