//! Start-up replay of the journal's segments: which messages are live, where each record
//! is, which bytes are torn or corrupt (copied to `corrupt/`). Body records are stepped
//! over by their headers; everything else is read and checked.

use super::index::{Index, Loc};
use super::journal::segment_path;
use super::record::{self, Decoded, Record};
use super::{Recovered, SpoolError};
use crate::message::packed::pack_record;
use crate::message::{Body, BodySource, IdMap, SpoolId};
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

fn quarantine(dir: &Path, seq: u64, offset: usize, bytes: &[u8], reason: &str, recovered: &mut Recovered) {
    let name = dir.join("corrupt").join(format!("{seq:016}-{offset}.bad"));
    match fs::write(&name, bytes) {
        Ok(()) => tracing::error!(
            "spool: {} bytes at {}:{} are {reason}; quarantined as {}",
            bytes.len(),
            segment_path(dir, seq).display(),
            offset,
            name.display()
        ),
        Err(e) => tracing::error!("spool: {reason} at segment {seq} offset {offset}; could not quarantine: {e}"),
    }
    recovered.quarantined += 1;
}

/// What the segments say, gathered over the whole replay: a Ref may come before the Body
/// it names (compaction copies a body forward past its messages).
#[derive(Default)]
pub(super) struct Replay {
    /// Live messages: envelope and prefix (packed), body id.
    messages: IdMap<(Box<[u8]>, SpoolId)>,
    /// Bodies by id: the length of one in a Body record (read again when needed), or the
    /// bytes of an old Put record's data.
    bodies: IdMap<Found>,
}

/// A body met during replay.
enum Found {
    Stored(usize),
    Inline(Arc<Vec<u8>>),
}

impl Replay {
    /// Pairs messages with their bodies; a message whose body is missing is reported and
    /// counted, never delivered half.
    pub(super) fn finish(
        mut self,
        dir: &Path,
        index: &mut Index,
        recovered: &mut Recovered,
        source: Arc<dyn BodySource>,
    ) {
        index.sweep_bodies(self.bodies.keys().copied().collect::<Vec<_>>());
        let mut ids: Vec<SpoolId> = self.messages.keys().copied().collect();
        ids.sort();
        // the messages of one transaction share one Body (one load serves them all)
        let mut shared: IdMap<Body> = IdMap::default();
        for id in ids {
            let (packed, body_id) = self.messages.remove(&id).expect("present");
            let body = self.bodies.get(&body_id).map(|found| {
                shared.entry(body_id).or_insert_with(|| match found {
                    Found::Stored(len) => Body::stored(body_id, *len, source.clone()),
                    Found::Inline(bytes) => Body::in_memory(body_id, bytes.clone()),
                })
            });
            match body {
                Some(body) => {
                    let body = body.clone();
                    recovered.messages.push(super::RecoveredMessage { id, packed, body });
                }
                None => {
                    // its envelope is kept for the operator; the message is removed (a
                    // Remove record once the writer runs), so it is reported once, not at
                    // every start, and compaction does not carry it forward
                    let name = dir.join("corrupt").join(format!("{id}.envelope.json"));
                    let kept = fs::write(&name, crate::message::packed::split_record(&packed).0);
                    tracing::error!(
                        "spool: message {id} names body {body_id}, which is not in the spool; not delivered, removed{}",
                        match kept {
                            Ok(()) => format!("; its envelope is in {}", name.display()),
                            Err(e) => format!("; its envelope could not be kept: {e}"),
                        }
                    );
                    index.remove(id);
                    recovered.orphans.push(id);
                    recovered.quarantined += 1;
                }
            }
        }
    }
}

/// Replays one segment. Body records are stepped over by their headers — their bytes are
/// neither read nor kept, so a restart reads envelopes, not the bytes queued; a body's
/// checksum is checked when it is read back for delivery. Every other record is read and
/// checked. Anything unexpected (a header that does not parse, a record that runs past
/// the end, a body skip that does not land on a record) is replayed byte by byte from
/// the last sure place, so torn tails and corruption are found as before.
pub(super) fn replay_segment(
    dir: &Path,
    seq: u64,
    index: &mut Index,
    replay: &mut Replay,
    recovered: &mut Recovered,
) -> Result<(), SpoolError> {
    let path = segment_path(dir, seq);
    let io = |e: std::io::Error| SpoolError::Io(format!("reading {}: {e}", path.display()));
    let file = File::open(&path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut window = Window::new(&file, size);
    index.open_segment(seq);
    let mut pos = 0u64;
    // the last body stepped over: where to go back to if the next header is not one
    let mut skipped: Option<(u64, SpoolId)> = None;
    while pos < size {
        let head = window.get(pos, (size - pos).min((record::HEADER_LEN + 16) as u64) as usize).map_err(io)?;
        let peeked = record::peek(head).filter(|(_, total)| pos + *total as u64 <= size);
        let Some((_, total)) = peeked else {
            let from = match skipped.take() {
                Some((at, id)) => {
                    replay.bodies.remove(&id);
                    index.forget_record(id);
                    at
                }
                None => pos,
            };
            let rest = window.get(from, (size - from) as usize).map_err(io)?;
            return replay_bytes(dir, seq, from, rest, index, replay, recovered);
        };
        if let Some(id) = record::body_id(head) {
            let len = total - record::HEADER_LEN - 16;
            replay.bodies.insert(id, Found::Stored(len));
            index.put_body(id, Loc { seq, offset: pos, len: total as u64 });
            skipped = Some((pos, id));
        } else {
            let buf = window.get(pos, total).map_err(io)?;
            if !matches!(record::decode(buf), Decoded::Record(..)) {
                // a record whose checksum fails: go through it byte by byte
                let rest = window.get(pos, (size - pos) as usize).map_err(io)?;
                return replay_bytes(dir, seq, pos, rest, index, replay, recovered);
            }
            replay_bytes(dir, seq, pos, buf, index, replay, recovered)?;
            skipped = None;
        }
        pos += total as u64;
    }
    index.set_size(seq, size);
    Ok(())
}

/// Reads a segment front to back in large chunks: many small records cost one read
/// each chunk, and a body larger than a chunk is stepped over without being read.
struct Window<'a> {
    file: &'a File,
    size: u64,
    start: u64,
    data: Vec<u8>,
}

impl<'a> Window<'a> {
    const CHUNK: usize = 1 << 20;

    fn new(file: &'a File, size: u64) -> Self {
        Window { file, size, start: 0, data: Vec::new() }
    }

    /// The `len` bytes at `pos` (which the caller keeps within the file).
    fn get(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        use std::os::unix::fs::FileExt;
        let end = self.start + self.data.len() as u64;
        if pos < self.start || pos + len as u64 > end {
            let n = (len.max(Self::CHUNK) as u64).min(self.size - pos) as usize;
            self.data.resize(n, 0);
            self.file.read_exact_at(&mut self.data, pos)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.data[at..at + len])
    }
}

/// Replays `buf`, the bytes of segment `seq` from offset `base` to its end (or one whole
/// record), checking every record; quarantines corrupt bytes and cuts a torn tail.
fn replay_bytes(
    dir: &Path,
    seq: u64,
    base: u64,
    buf: &[u8],
    index: &mut Index,
    replay: &mut Replay,
    recovered: &mut Recovered,
) -> Result<(), SpoolError> {
    let path = segment_path(dir, seq);
    let mut pos = 0;
    while pos < buf.len() {
        let at = base as usize + pos;
        let loc = |len: usize| Loc { seq, offset: at as u64, len: len as u64 };
        match record::decode(&buf[pos..]) {
            Decoded::Record(Record::Put { meta, .. } | Record::Ref { meta, .. }, len)
                if serde_json::from_slice::<serde::de::IgnoredAny>(meta).is_err() =>
            {
                quarantine(dir, seq, at, &buf[pos..pos + len], "a record with unreadable meta", recovered);
                pos += len;
            }
            Decoded::Record(Record::Put { id, meta, data }, len) => {
                // written before bodies were shared: the message's data is its own body
                let body = SpoolId::new();
                replay.bodies.insert(body, Found::Inline(Arc::new(data.to_vec())));
                replay.messages.insert(id, (pack_record(meta, b""), body));
                index.put(id, loc(len), None);
                pos += len;
            }
            Decoded::Record(Record::Ref { id, meta, body, prefix }, len) => {
                replay.messages.insert(id, (pack_record(meta, prefix), body));
                index.put(id, loc(len), Some(body));
                pos += len;
            }
            Decoded::Record(Record::Body { id, data }, len) => {
                replay.bodies.insert(id, Found::Stored(data.len()));
                index.put_body(id, loc(len));
                pos += len;
            }
            Decoded::Record(Record::Remove { id }, len) => {
                index.remove(id);
                replay.messages.remove(&id);
                pos += len;
            }
            Decoded::Incomplete => {
                // a write torn by a crash before it was acknowledged
                quarantine(dir, seq, at, &buf[pos..], "a torn (incomplete) record", recovered);
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| SpoolError::Io(e.to_string()))?;
                f.set_len(at as u64).and_then(|_| f.sync_all()).map_err(|e| SpoolError::Io(e.to_string()))?;
                index.set_size(seq, at as u64);
                return Ok(());
            }
            Decoded::Corrupt { skip, reason } => {
                quarantine(dir, seq, at, &buf[pos..pos + skip], reason, recovered);
                pos += skip;
            }
        }
    }
    index.set_size(seq, base + buf.len() as u64);
    Ok(())
}
