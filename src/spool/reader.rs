//! Reading stored bodies back: the journal's `Reader` (a `BodySource` for messages whose
//! bodies left memory) and the background check of the bodies recovery stepped over.

use super::Recovered;
use super::index::{Index, Loc};
use super::journal::{Op, Pending, segment_path};
use super::record::{self, Decoded, Record};
use crate::message::{BodyError, BodySource, IdMap, SpoolId};
use parking_lot::Mutex;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::oneshot;

/// Checks, after start-up and off the path of new mail, every body that recovery stepped
/// over: a body whose checksum fails is copied to `corrupt/` and logged, and the messages
/// naming it are removed from the spool — as a corrupt record met during replay would be.
pub(super) fn spawn_verifier(
    recovered: &Recovered,
    reader: Arc<Reader>,
    tx: std::sync::mpsc::Sender<Pending>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut named: IdMap<Vec<SpoolId>> = IdMap::default();
    for m in recovered.messages.iter().filter(|m| m.body.is_stored()) {
        named.entry(m.body.id).or_default().push(m.id);
    }
    if named.is_empty() {
        return None;
    }
    let spawned = std::thread::Builder::new().name("spool-verify".into()).spawn(move || {
        let mut bad = 0;
        for (body, messages) in named {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let Some((loc, bytes)) = reader.corrupt_record(body) else { continue };
            bad += 1;
            let name = reader.dir.join("corrupt").join(format!("{:016}-{}.bad", loc.seq, loc.offset));
            if let Err(e) = fs::write(&name, &bytes) {
                tracing::error!("spool: could not quarantine body {body}: {e}");
            }
            tracing::error!(
                "spool: the body of {} message(s) at {}:{} fails its checksum; quarantined as {}, the messages removed",
                messages.len(),
                segment_path(&reader.dir, loc.seq).display(),
                loc.offset,
                name.display()
            );
            for id in messages {
                let (done, _) = oneshot::channel();
                let _ = tx.send(Pending { op: Op::Remove(id, record::encode_remove(id)), done });
            }
        }
        if bad == 0 {
            tracing::debug!("spool: every stored body read back and checked");
        }
    });
    spawned.map_err(|e| tracing::warn!("spool: bodies not checked in the background: {e}")).ok()
}

/// Reads a body record back from its segment. The writer may move it meanwhile
/// (compaction copies it forward, then deletes the old segment): a segment that is gone
/// or a record that is not the one asked for means "look again".
pub(super) struct Reader {
    pub(super) dir: PathBuf,
    pub(super) index: Arc<Mutex<Index>>,
}

impl Reader {
    /// The record of body `id` and its bytes if it is corrupt (fails its checksum); `None`
    /// if it reads back whole, or is gone.
    fn corrupt_record(&self, id: SpoolId) -> Option<(Loc, Vec<u8>)> {
        use std::os::unix::fs::FileExt;
        let loc = self.index.lock().location(id)?;
        let file = File::open(segment_path(&self.dir, loc.seq)).ok()?;
        let mut buf = vec![0; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset).ok()?;
        match record::decode(&buf) {
            Decoded::Record(..) => None,
            _ => Some((loc, buf)),
        }
    }
}

impl BodySource for Reader {
    fn read_header_section(&self, id: SpoolId) -> Result<Vec<u8>, BodyError> {
        use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
        let fail = |reason: String| BodyError::io(id, reason);
        for _ in 0..4 {
            let Some(loc) = self.index.lock().location(id) else {
                return Err(BodyError::lost(id, "not in the spool (the message was removed)"));
            };
            let path = segment_path(&self.dir, loc.seq);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fail(format!("opening {}: {e}", path.display()))),
            };
            let io = |e: std::io::Error| fail(format!("reading {}: {e}", path.display()));
            file.seek(SeekFrom::Start(loc.offset)).map_err(io)?;
            let mut r = BufReader::with_capacity(64 * 1024, file.take(loc.len));
            let mut head = [0u8; record::HEADER_LEN + 16];
            r.read_exact(&mut head).map_err(io)?;
            if record::body_id(&head) != Some(id) {
                continue;
            }
            // the checksum covers the whole payload: stream it, keep only the headers
            let crc = u32::from_le_bytes(head[10..14].try_into().expect("4 bytes"));
            let mut h = crc32fast::Hasher::new();
            h.update(&head[5..6]);
            h.update(&head[record::HEADER_LEN..]);
            let (mut kept, mut done) = (Vec::new(), false);
            loop {
                let chunk = r.fill_buf().map_err(io)?;
                if chunk.is_empty() {
                    break;
                }
                h.update(chunk);
                if !done {
                    kept.extend_from_slice(chunk);
                    let end = crate::message::headers::header_end(&kept);
                    if end < kept.len() {
                        kept.truncate(end);
                        done = true;
                    }
                }
                let n = chunk.len();
                r.consume(n);
            }
            if h.finalize() != crc {
                return Err(BodyError::lost(id, format!("{}:{} is corrupt (checksum)", path.display(), loc.offset)));
            }
            return Ok(kept);
        }
        Err(fail("the record kept moving".into()))
    }

    fn read_body(&self, id: SpoolId) -> Result<Vec<u8>, BodyError> {
        use std::os::unix::fs::FileExt;
        let fail = |reason: String| BodyError::io(id, reason);
        let mut last = String::new();
        for _ in 0..4 {
            let Some(loc) = self.index.lock().location(id) else {
                return Err(BodyError::lost(id, "not in the spool (the message was removed)"));
            };
            let path = segment_path(&self.dir, loc.seq);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last = format!("{} is gone", path.display());
                    continue;
                }
                Err(e) => return Err(fail(format!("opening {}: {e}", path.display()))),
            };
            let mut buf = vec![0; loc.len as usize];
            file.read_exact_at(&mut buf, loc.offset).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            let start = match record::decode(&buf) {
                Decoded::Record(Record::Body { id: got, data }, _) if got == id => buf.len() - data.len(),
                Decoded::Record(..) => {
                    last = format!("{}:{} holds another record now", path.display(), loc.offset);
                    continue;
                }
                Decoded::Incomplete | Decoded::Corrupt { .. } => {
                    return Err(BodyError::lost(
                        id,
                        format!("{}:{} is corrupt (checksum)", path.display(), loc.offset),
                    ));
                }
            };
            buf.drain(..start);
            return Ok(buf);
        }
        Err(fail(last))
    }
}
