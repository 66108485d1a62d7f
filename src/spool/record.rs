//! The spool's on-disk record format. Each record validates itself: magic, version,
//! kind, payload length and a CRC-32 over kind and payload. A decoder that meets a torn
//! or corrupt record says so (with how far to skip) instead of guessing.
//!
//! ```text
//! magic "WSPL" | version u8 | kind u8 | payload_len u32 LE | crc32 u32 LE | payload
//! Body payload:   body_id [16] | data                    (bytes messages share)
//! Ref payload:    id [16] | meta_len u32 LE | meta (JSON envelope) | body_id [16] | prefix
//! Remove payload: id [16]
//! Put payload:    id [16] | meta_len u32 LE | meta | data  (written before bodies were
//!                 shared; still read)
//! ```
//!
//! A message is a Ref: its envelope, the lines prepended to its copy, and the id of the
//! Body it shares with the other messages of its transaction.

use crate::message::SpoolId;

const MAGIC: &[u8; 4] = b"WSPL";
const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 14;
/// Largest payload accepted; a larger length field means corruption.
pub const MAX_PAYLOAD: usize = 1 << 30;

const KIND_PUT: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_BODY: u8 = 3;
const KIND_REF: u8 = 4;

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message: its meta (JSON envelope) and data.
    Put {
        /// Spool id.
        id: SpoolId,
        /// Envelope JSON.
        meta: &'a [u8],
        /// Message data.
        data: &'a [u8],
    },
    /// The message was removed.
    Remove {
        /// Spool id.
        id: SpoolId,
    },
    /// Message data shared by the Refs that name it.
    Body {
        /// Its id.
        id: SpoolId,
        /// The bytes.
        data: &'a [u8],
    },
    /// A message: envelope, its own prefix, and the Body it shares.
    Ref {
        /// Spool id.
        id: SpoolId,
        /// Envelope JSON.
        meta: &'a [u8],
        /// The Body's id.
        body: SpoolId,
        /// Bytes before the body in this message.
        prefix: &'a [u8],
    },
}

/// What the decoder found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and its encoded length.
    Record(Record<'a>, usize),
    /// The input ends inside a record (a torn write at the tail).
    Incomplete,
    /// Bytes that are not a valid record; the next candidate record starts `skip` bytes on.
    Corrupt {
        /// Bytes to skip.
        skip: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

fn frame(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    for p in payload {
        crc.update(p);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
    out
}

/// Encodes a Put record.
pub fn encode_put(id: SpoolId, meta: &[u8], data: &[u8]) -> Vec<u8> {
    frame(KIND_PUT, &[id.as_bytes(), &(meta.len() as u32).to_le_bytes(), meta, data])
}

/// Encodes a Body record.
pub fn encode_body(id: SpoolId, data: &[u8]) -> Vec<u8> {
    frame(KIND_BODY, &[id.as_bytes(), data])
}

/// Encodes a Ref record.
pub fn encode_ref(id: SpoolId, meta: &[u8], body: SpoolId, prefix: &[u8]) -> Vec<u8> {
    frame(KIND_REF, &[id.as_bytes(), &(meta.len() as u32).to_le_bytes(), meta, body.as_bytes(), prefix])
}

/// Encodes a Remove record.
pub fn encode_remove(id: SpoolId) -> Vec<u8> {
    frame(KIND_REMOVE, &[id.as_bytes()])
}

/// The header of a record: its kind and whole length, if `head` (at least
/// [`HEADER_LEN`] bytes) starts like one. The payload is not checked.
pub fn peek(head: &[u8]) -> Option<(u8, usize)> {
    if head.len() < HEADER_LEN || &head[..4] != MAGIC || head[4] != VERSION {
        return None;
    }
    let len = u32::from_le_bytes(head[6..10].try_into().expect("4 bytes")) as usize;
    (len <= MAX_PAYLOAD).then_some((head[5], HEADER_LEN + len))
}

/// The id of a Body record from its first `HEADER_LEN + 16` bytes (checked by [`peek`]).
pub fn body_id(head: &[u8]) -> Option<SpoolId> {
    match peek(head) {
        Some((KIND_BODY, total)) if total >= HEADER_LEN + 16 && head.len() >= HEADER_LEN + 16 => {
            Some(SpoolId::from_bytes(head[HEADER_LEN..HEADER_LEN + 16].try_into().expect("16 bytes")))
        }
        _ => None,
    }
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            Decoded::Incomplete
        } else {
            corrupt(buf, "bad magic")
        };
    }
    if &buf[..4] != MAGIC {
        return corrupt(buf, "bad magic");
    }
    if buf[4] != VERSION {
        return corrupt(buf, "unknown version");
    }
    let kind = buf[5];
    let len = u32::from_le_bytes(buf[6..10].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[10..14].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return corrupt(buf, "length out of range");
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    if h.finalize() != crc {
        return corrupt(buf, "checksum mismatch");
    }
    let total = HEADER_LEN + len;
    let id = |p: &[u8]| p.get(..16).map(|b| SpoolId::from_bytes(b.try_into().expect("16 bytes")));
    match kind {
        KIND_PUT => {
            let (Some(id), Some(meta_len)) = (id(payload), payload.get(16..20)) else {
                return corrupt(buf, "short put record");
            };
            let meta_len = u32::from_le_bytes(meta_len.try_into().expect("4 bytes")) as usize;
            let Some(meta) = payload.get(20..20 + meta_len) else {
                return corrupt(buf, "meta length out of range");
            };
            Decoded::Record(Record::Put { id, meta, data: &payload[20 + meta_len..] }, total)
        }
        KIND_REMOVE if payload.len() == 16 => {
            Decoded::Record(Record::Remove { id: id(payload).expect("16 bytes") }, total)
        }
        KIND_BODY if payload.len() >= 16 => {
            Decoded::Record(Record::Body { id: id(payload).expect("16 bytes"), data: &payload[16..] }, total)
        }
        KIND_REF => {
            let (Some(message), Some(meta_len)) = (id(payload), payload.get(16..20)) else {
                return corrupt(buf, "short ref record");
            };
            let meta_len = u32::from_le_bytes(meta_len.try_into().expect("4 bytes")) as usize;
            let (Some(meta), Some(body)) = (payload.get(20..20 + meta_len), payload.get(20 + meta_len..).and_then(id))
            else {
                return corrupt(buf, "ref lengths out of range");
            };
            Decoded::Record(Record::Ref { id: message, meta, body, prefix: &payload[36 + meta_len..] }, total)
        }
        _ => corrupt(buf, "unknown record kind"),
    }
}

/// Corrupt bytes: skip to the next occurrence of the magic after the first byte.
fn corrupt<'a>(buf: &'a [u8], reason: &'static str) -> Decoded<'a> {
    let skip = memchr::memmem::find(&buf[1..], MAGIC).map(|i| i + 1).unwrap_or(buf.len());
    Decoded::Corrupt { skip, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = SpoolId::new();
        let put = encode_put(id, b"{\"a\":1}", b"Subject: x\r\n\r\nbody");
        assert_eq!(
            decode(&put),
            Decoded::Record(Record::Put { id, meta: b"{\"a\":1}", data: b"Subject: x\r\n\r\nbody" }, put.len())
        );
        let rm = encode_remove(id);
        assert_eq!(decode(&rm), Decoded::Record(Record::Remove { id }, rm.len()));
        let body_id = SpoolId::new();
        let body = encode_body(body_id, b"shared");
        assert_eq!(decode(&body), Decoded::Record(Record::Body { id: body_id, data: b"shared" }, body.len()));
        let r = encode_ref(id, b"{}", body_id, b"Received: x\r\n");
        assert_eq!(
            decode(&r),
            Decoded::Record(Record::Ref { id, meta: b"{}", body: body_id, prefix: b"Received: x\r\n" }, r.len())
        );
        let short = encode_ref(id, b"{}", body_id, b"");
        assert!(matches!(decode(&short[..short.len() - 1]), Decoded::Incomplete));
    }

    #[test]
    fn torn_tail_is_incomplete_at_every_cut() {
        let put = encode_put(SpoolId::new(), b"{}", b"data");
        for cut in 0..put.len() {
            assert_eq!(decode(&put[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let put = encode_put(SpoolId::new(), b"{\"x\":true}", b"hello");
        for i in 0..put.len() {
            let mut bad = put.clone();
            bad[i] ^= 0x41;
            match decode(&bad) {
                Decoded::Corrupt { .. } | Decoded::Incomplete => {}
                Decoded::Record(..) => panic!("flip at {i} went unnoticed"),
            }
        }
    }

    #[test]
    fn corrupt_skips_to_next_record() {
        let mut buf = b"garbage!".to_vec();
        let rm = encode_remove(SpoolId::new());
        buf.extend_from_slice(&rm);
        match decode(&buf) {
            Decoded::Corrupt { skip, .. } => assert_eq!(skip, 8),
            other => panic!("{other:?}"),
        }
    }
}
