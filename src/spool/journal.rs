//! The embedded spool backend: append-only segment files written by one thread that
//! groups the writes of all concurrent sessions into one `fdatasync`. A message is
//! committed when its Put record is synced; the caller hears "stored" only then.
//!
//! Invariants:
//! * A new segment file is made durable in its directory (`fsync` of the directory)
//!   before any record in it is acknowledged.
//! * Segments are deleted oldest first, and only when they hold no live message, so a
//!   Remove record never outlives the Put it cancels in a way that resurrects it.
//! * Compaction: when the oldest segment holds few live bytes compared with the dead bytes
//!   it keeps on disk (it pins every later segment), its live records are copied, byte for
//!   byte and synced, to the current segment; it then holds nothing live and is deleted. A
//!   crash in between leaves two identical copies, and replay keeps the later one.
//! * An I/O or sync error latches the journal unhealthy: every later write fails fast
//!   (no fsync retry — the kernel may have dropped the dirty pages).
//! * At start-up every segment is replayed; torn or corrupt bytes are copied to
//!   `corrupt/` and logged, never delivered and never silently dropped. Body records are
//!   stepped over by their headers (a restart reads envelopes, not the bytes queued);
//!   a body's checksum is checked whenever it is read back, and a corrupt one fails its
//!   delivery attempts with a reply that says so.

use super::index::{Index, Loc};
use super::record::{self, Decoded, Record};
use super::{Recovered, SpoolError};
use crate::message::packed::pack_record;
use crate::message::{Body, BodyError, BodySource, SpoolId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::oneshot;

/// Roll to a new segment beyond this size.
const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;
/// Most bytes written under one sync.
const BATCH_LIMIT: usize = 16 * 1024 * 1024;
/// Most live bytes one compaction step copies.
const COMPACT_LIMIT: u64 = 16 * 1024 * 1024;
/// How long the writer waits for work before it looks for compaction.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

enum Op {
    /// A message's Ref record, and the Body it names (written first unless it is live).
    Put {
        id: SpoolId,
        record: Vec<u8>,
        body: Body,
    },
    Remove(SpoolId, Vec<u8>),
}

struct Pending {
    op: Op,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// The journal. It holds the directory's lock (one server per spool) from before the
/// first read until its writer thread has finished, which dropping it waits for.
pub struct Journal {
    tx: Option<std::sync::mpsc::Sender<Pending>>,
    reader: Arc<Reader>,
    /// Checks the bodies stepped over at start-up, in the background.
    verifier: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
    _lock: crate::dirlock::DirLock,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // the verifier holds a sender: it goes first
        self.stop.store(true, Ordering::Release);
        if let Some(v) = self.verifier.take() {
            let _ = v.join();
        }
        // the writer ends when its channel closes; the lock goes only after it has
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, replays it, and starts the
    /// writer thread.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), SpoolError> {
        Journal::open_with(dir, SEGMENT_LIMIT)
    }

    /// [`Journal::open`] rolling segments at `segment_limit` bytes.
    pub fn open_with(dir: &Path, segment_limit: u64) -> Result<(Journal, Recovered), SpoolError> {
        let io = |what: &str, e: std::io::Error| SpoolError::Io(format!("{what} {}: {e}", dir.display()));
        let lock = crate::dirlock::DirLock::acquire(dir).map_err(|e| SpoolError::Locked(e.to_string()))?;
        fs::create_dir_all(dir.join("corrupt")).map_err(|e| io("creating", e))?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io("reading", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        seqs.sort_unstable();

        let index = Arc::new(Mutex::new(Index::default()));
        let reader = Arc::new(Reader { dir: dir.to_path_buf(), index: index.clone() });
        let mut recovered = Recovered::default();
        let mut replay = Replay::default();
        {
            let mut ix = index.lock();
            for &seq in &seqs {
                replay_segment(dir, seq, &mut ix, &mut replay, &mut recovered)?;
            }
            replay.finish(&mut ix, &mut recovered, reader.clone());
        }

        let next_seq = seqs.last().map(|s| s + 1).unwrap_or(1);
        let (file, path) = create_segment(dir, next_seq).map_err(|e| io("creating a segment in", e))?;
        index.lock().open_segment(next_seq);
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            seq: next_seq,
            file,
            path,
            size: 0,
            segment_limit,
            compact_failed: None,
            roll_deferred: false,
            index: index.clone(),
            healthy: healthy.clone(),
        };
        writer.delete_dead_segments();
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SpoolError::Io(format!("spawning the spool writer: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let verifier = spawn_verifier(&recovered, reader.clone(), tx.clone(), stop.clone());
        let journal = Journal { tx: Some(tx), reader, verifier, stop, healthy, writer: Some(writer), _lock: lock };
        Ok((journal, recovered))
    }

    async fn submit(&self, op: Op) -> Result<(), SpoolError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(SpoolError::Unhealthy)?;
        tx.send(Pending { op, done }).map_err(|_| SpoolError::Unhealthy)?;
        wait.await.unwrap_or(Err(SpoolError::Unhealthy))
    }

    /// Stores a message durably: its envelope, its own prefix and the body it shares
    /// (written once, by the first message that needs it while no live message names it).
    pub async fn put(&self, id: SpoolId, meta: &[u8], prefix: &[u8], body: &Body) -> Result<(), SpoolError> {
        let record = record::encode_ref(id, meta, body.id, prefix);
        self.submit(Op::Put { id, record, body: body.clone() }).await
    }

    /// Stores a message whose data is all its own.
    pub async fn put_data(&self, id: SpoolId, meta: &[u8], data: &[u8]) -> Result<(), SpoolError> {
        self.put(id, meta, b"", &Body::new(data.to_vec())).await
    }

    /// Removes a message durably.
    pub async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.submit(Op::Remove(id, record::encode_remove(id))).await
    }

    /// False once a write or sync failed.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Reads stored bodies back (for messages whose bytes left memory).
    pub fn body_source(&self) -> Arc<dyn BodySource> {
        self.reader.clone()
    }
}

/// Checks, after start-up and off the path of new mail, every body that recovery stepped
/// over: a body whose checksum fails is copied to `corrupt/` and logged, and the messages
/// naming it are removed from the spool — as a corrupt record met during replay would be.
fn spawn_verifier(
    recovered: &Recovered,
    reader: Arc<Reader>,
    tx: std::sync::mpsc::Sender<Pending>,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut named: HashMap<SpoolId, Vec<SpoolId>> = HashMap::new();
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
struct Reader {
    dir: PathBuf,
    index: Arc<Mutex<Index>>,
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
    fn read_body(&self, id: SpoolId) -> Result<Vec<u8>, BodyError> {
        use std::os::unix::fs::FileExt;
        let fail = |reason: String| BodyError { id, reason };
        let mut last = String::new();
        for _ in 0..4 {
            let Some(loc) = self.index.lock().location(id) else {
                return Err(fail("not in the spool (the message was removed)".into()));
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
                    return Err(fail(format!("{}:{} is corrupt (checksum)", path.display(), loc.offset)));
                }
            };
            buf.drain(..start);
            return Ok(buf);
        }
        Err(fail(last))
    }
}

/// Creates segment `seq` and makes it durable in its directory. On failure nothing is
/// left behind, so it can simply be tried again.
fn create_segment(dir: &Path, seq: u64) -> std::io::Result<(File, PathBuf)> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
    if let Err(e) = sync_dir(dir) {
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

/// Running out of descriptors (EMFILE, ENFILE) or kernel memory passes: not a reason to
/// stop taking mail for good.
fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM))
}

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
struct Replay {
    /// Live messages: envelope and prefix (packed), body id.
    messages: HashMap<SpoolId, (Box<[u8]>, SpoolId)>,
    /// Bodies by id: the length of one in a Body record (read again when needed), or the
    /// bytes of an old Put record's data.
    bodies: HashMap<SpoolId, Found>,
}

/// A body met during replay.
enum Found {
    Stored(usize),
    Inline(Arc<Vec<u8>>),
}

impl Replay {
    /// Pairs messages with their bodies; a message whose body is missing is reported and
    /// counted, never delivered half.
    fn finish(mut self, index: &mut Index, recovered: &mut Recovered, source: Arc<dyn BodySource>) {
        index.sweep_bodies(self.bodies.keys().copied().collect::<Vec<_>>());
        let mut ids: Vec<SpoolId> = self.messages.keys().copied().collect();
        ids.sort();
        // the messages of one transaction share one Body (one load serves them all)
        let mut shared: HashMap<SpoolId, Body> = HashMap::new();
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
                    tracing::error!(
                        "spool: message {id} names body {body_id}, which is not in the spool; not delivered"
                    );
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
fn replay_segment(
    dir: &Path,
    seq: u64,
    index: &mut Index,
    replay: &mut Replay,
    recovered: &mut Recovered,
) -> Result<(), SpoolError> {
    use std::os::unix::fs::FileExt;
    let path = segment_path(dir, seq);
    let io = |e: std::io::Error| SpoolError::Io(format!("reading {}: {e}", path.display()));
    let file = File::open(&path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    index.open_segment(seq);
    let mut pos = 0u64;
    // the last body stepped over: where to go back to if the next header is not one
    let mut skipped: Option<(u64, SpoolId)> = None;
    let mut head = [0u8; record::HEADER_LEN + 16];
    while pos < size {
        let avail = (size - pos).min(head.len() as u64) as usize;
        file.read_exact_at(&mut head[..avail], pos).map_err(io)?;
        let peeked = record::peek(&head[..avail]).filter(|(_, total)| pos + *total as u64 <= size);
        let Some((_, total)) = peeked else {
            let from = match skipped.take() {
                Some((at, id)) => {
                    replay.bodies.remove(&id);
                    index.forget_record(id);
                    at
                }
                None => pos,
            };
            let mut rest = vec![0u8; (size - from) as usize];
            file.read_exact_at(&mut rest, from).map_err(io)?;
            return replay_bytes(dir, seq, from, &rest, index, replay, recovered);
        };
        if let Some(id) = record::body_id(&head[..avail]) {
            let len = total - record::HEADER_LEN - 16;
            replay.bodies.insert(id, Found::Stored(len));
            index.put_body(id, Loc { seq, offset: pos, len: total as u64 });
            skipped = Some((pos, id));
        } else {
            let mut buf = vec![0u8; total];
            file.read_exact_at(&mut buf, pos).map_err(io)?;
            if !matches!(record::decode(&buf), Decoded::Record(..)) {
                // a record whose checksum fails: go through it byte by byte
                let mut rest = vec![0u8; (size - pos) as usize];
                file.read_exact_at(&mut rest, pos).map_err(io)?;
                return replay_bytes(dir, seq, pos, &rest, index, replay, recovered);
            }
            replay_bytes(dir, seq, pos, &buf, index, replay, recovered)?;
            skipped = None;
        }
        pos += total as u64;
    }
    index.set_size(seq, size);
    Ok(())
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
                if serde_json::from_slice::<serde_json::Value>(meta).is_err() =>
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

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    path: PathBuf,
    size: u64,
    segment_limit: u64,
    /// A segment whose compaction failed once (left alone).
    compact_failed: Option<u64>,
    /// The last roll ran out of descriptors (said once, tried at every commit).
    roll_deferred: bool,
    /// Shared with the [`Reader`]; locked briefly, never across I/O.
    index: Arc<Mutex<Index>>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Pending>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let first = match rx.recv_timeout(IDLE) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    self.compact();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let mut bytes = batch[0].len();
            while bytes < BATCH_LIMIT {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let result = self.commit(&batch, &mut buf);
            for p in batch {
                let _ = p.done.send(result.clone());
            }
        }
    }

    fn commit(&mut self, batch: &[Pending], buf: &mut Vec<u8>) -> Result<(), SpoolError> {
        /// What one piece of the batch does to the index once it is on disk.
        enum Entry {
            Body(SpoolId),
            Message(SpoolId, SpoolId),
            Remove(SpoolId),
        }
        buf.clear();
        let mut entries: Vec<(Entry, u64)> = Vec::with_capacity(batch.len() + 1);
        let mut new_bodies: Vec<SpoolId> = vec![];
        for p in batch {
            match &p.op {
                Op::Put { id, record, body } => {
                    if !self.index.lock().is_live(body.id) && !new_bodies.contains(&body.id) {
                        // a body only the spool held died with its last message meanwhile
                        let Some(bytes) = body.loaded() else {
                            return Err(SpoolError::Io(format!("the body of {id} is no longer in the spool")));
                        };
                        let encoded = record::encode_body(body.id, &bytes);
                        buf.extend_from_slice(&encoded);
                        entries.push((Entry::Body(body.id), encoded.len() as u64));
                        new_bodies.push(body.id);
                    }
                    buf.extend_from_slice(record);
                    entries.push((Entry::Message(*id, body.id), record.len() as u64));
                }
                Op::Remove(id, record) => {
                    buf.extend_from_slice(record);
                    entries.push((Entry::Remove(*id), record.len() as u64));
                }
            }
        }
        let start = self.append(buf)?;
        let mut offset = start;
        let mut index = self.index.lock();
        for (entry, len) in entries {
            let loc = Loc { seq: self.seq, offset, len };
            match entry {
                Entry::Body(id) => index.put_body(id, loc),
                Entry::Message(id, body) => index.put(id, loc, Some(body)),
                Entry::Remove(id) => index.remove(id),
            }
            offset += len;
        }
        drop(index);
        if self.size >= self.segment_limit {
            // this batch is durable whatever happens next: a failed roll latches the spool
            // for later writes but must not turn these acknowledgements into errors
            if self.roll().is_ok() {
                self.compact();
            }
        }
        self.delete_dead_segments();
        Ok(())
    }

    /// Appends `buf` to the current segment and syncs it; returns the offset it starts at.
    fn append(&mut self, buf: &[u8]) -> Result<u64, SpoolError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        if let Err(e) = self.file.write_all(buf) {
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) && self.undo_partial_write() {
                tracing::error!("spool: {} is full ({e}); the write was undone", self.path.display());
                return Err(SpoolError::NoSpace(e.to_string()));
            }
            return Err(self.latch(e));
        }
        // a failed sync is never retried: the kernel may have dropped the dirty pages
        if let Err(e) = self.file.sync_data() {
            return Err(self.latch(e));
        }
        let start = self.size;
        self.size += buf.len() as u64;
        self.index.lock().set_size(self.seq, self.size);
        Ok(start)
    }

    fn latch(&self, e: std::io::Error) -> SpoolError {
        self.healthy.store(false, Ordering::Release);
        tracing::error!(
            "spool: writing {} failed: {e}; the spool is now unhealthy and refuses new messages",
            self.path.display()
        );
        SpoolError::Io(e.to_string())
    }

    /// Copies the live records of the oldest segment forward while that is cheap compared
    /// with the dead bytes it keeps on disk, then deletes what became dead.
    fn compact(&mut self) {
        loop {
            let Some((oldest, seg)) = self.index.lock().oldest() else { return };
            if oldest == self.seq || !self.healthy.load(Ordering::Acquire) || self.compact_failed == Some(oldest) {
                return;
            }
            let dead = self.index.lock().dead_bytes_before(self.seq);
            let worth_it = seg.live_bytes <= COMPACT_LIMIT && seg.live_bytes * 2 <= dead;
            if seg.records > 0 && !worth_it {
                return;
            }
            if seg.records > 0 {
                match self.copy_forward(oldest) {
                    Ok(n) => tracing::info!("spool: compaction moved {n} live message(s) out of segment {oldest}"),
                    Err(e) => {
                        // not retried for this segment (no error every idle second)
                        tracing::error!("spool: compacting segment {oldest}: {e}; it stays as it is");
                        self.compact_failed = Some(oldest);
                        return;
                    }
                }
            }
            let before = self.index.lock().segment_count();
            self.delete_dead_segments();
            if self.index.lock().segment_count() == before {
                return;
            }
        }
    }

    /// Re-appends, unchanged, every live record of segment `seq`; returns how many.
    fn copy_forward(&mut self, seq: u64) -> Result<usize, SpoolError> {
        use std::os::unix::fs::FileExt;
        let live = self.index.lock().live_in(seq);
        let path = segment_path(&self.dir, seq);
        let file = File::open(&path).map_err(|e| SpoolError::Io(format!("opening {}: {e}", path.display())))?;
        let mut buf = Vec::with_capacity(live.iter().map(|(_, l)| l.len as usize).sum());
        for (id, loc) in &live {
            let at = buf.len();
            buf.resize(at + loc.len as usize, 0);
            file.read_exact_at(&mut buf[at..], loc.offset)
                .map_err(|e| SpoolError::Io(format!("reading {}: {e}", path.display())))?;
            match record::decode(&buf[at..]) {
                Decoded::Record(
                    Record::Put { id: got, .. } | Record::Ref { id: got, .. } | Record::Body { id: got, .. },
                    len,
                ) if got == *id && len as u64 == loc.len => {}
                _ => {
                    return Err(SpoolError::Io(format!("{}: the record of {id} no longer reads back", path.display())));
                }
            }
        }
        let start = self.append(&buf)?;
        let mut offset = start;
        let mut index = self.index.lock();
        for (id, loc) in &live {
            index.relocate(*id, Loc { seq: self.seq, offset, len: loc.len });
            offset += loc.len;
        }
        drop(index);
        if self.size >= self.segment_limit {
            self.roll()?;
        }
        Ok(live.len())
    }

    /// Cuts the segment back to its last committed length after a write that ran out of
    /// space (nothing of it was synced or acknowledged). False if that failed too.
    fn undo_partial_write(&mut self) -> bool {
        match self.file.set_len(self.size).and_then(|_| self.file.sync_all()) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("spool: truncating {} after a failed write: {e}", self.path.display());
                false
            }
        }
    }

    /// Starts the next segment. Out of descriptors, the current segment simply grows
    /// past its limit and the next commit tries again; any other failure latches.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let (file, path) = match create_segment(&self.dir, self.seq + 1) {
            Ok(x) => x,
            Err(e) if is_exhaustion(&e) => {
                if !self.roll_deferred {
                    tracing::warn!("spool: cannot start a new segment yet ({e}); the current one keeps growing");
                    self.roll_deferred = true;
                }
                return Err(SpoolError::Io(e.to_string()));
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                tracing::error!(
                    "spool: creating a segment in {}: {e}; the spool is now unhealthy and refuses new messages",
                    self.dir.display()
                );
                return Err(SpoolError::Io(e.to_string()));
            }
        };
        if self.roll_deferred {
            tracing::info!("spool: new segments can be made again");
            self.roll_deferred = false;
        }
        self.seq += 1;
        self.file = file;
        self.path = path;
        self.size = 0;
        self.index.lock().open_segment(self.seq);
        Ok(())
    }

    /// Deletes the oldest segments while they hold no live message.
    fn delete_dead_segments(&mut self) {
        loop {
            let Some((seq, seg)) = self.index.lock().oldest() else { break };
            if seg.records != 0 || seq == self.seq {
                break;
            }
            let path = segment_path(&self.dir, seq);
            // each deletion is made durable before the next: were a later segment gone and
            // an earlier one back after a power cut, its Puts would lose their Removes
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("spool: removing {}: {e}", path.display());
                break;
            }
            self.index.lock().drop_segment(seq);
            if let Err(e) = sync_dir(&self.dir) {
                tracing::warn!("spool: syncing {} after a removal: {e}", self.dir.display());
                break;
            }
        }
    }
}

impl Pending {
    /// Bytes this operation may write (a body counted even if it turns out to be live).
    fn len(&self) -> usize {
        match &self.op {
            Op::Put { record, body, .. } => record.len() + body.len(),
            Op::Remove(_, b) => b.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen_and_honours_removes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (SpoolId::new(), SpoolId::new(), SpoolId::new());
        {
            let (j, rec) = Journal::open(dir.path()).unwrap();
            assert!(rec.messages.is_empty());
            j.put_data(a, b"{}", b"A").await.unwrap();
            j.put_data(b, b"{}", b"B").await.unwrap();
            j.put_data(c, b"{}", b"C").await.unwrap();
            j.remove(b).await.unwrap();
        }
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a, c]);
        assert_eq!(rec.messages[1].data().unwrap(), b"C");
        assert_eq!(rec.quarantined, 0);
    }

    #[tokio::test]
    async fn torn_tail_and_corruption_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (SpoolId::new(), SpoolId::new());
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            j.put_data(a, b"{}", b"AAAA").await.unwrap();
            j.put_data(b, b"{}", b"BBBB").await.unwrap();
        }
        // corrupt the first record's data and append a torn record
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let pos = memchr::memmem::find(&bytes, b"AAAA").unwrap();
        bytes[pos] = b'Z';
        let torn = record::encode_put(SpoolId::new(), b"{}", b"torn");
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        fs::write(&seg, &bytes).unwrap();

        let (j, rec) = Journal::open(dir.path()).unwrap();
        let mut ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
        ids.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(ids, want, "bodies are stepped over at start-up; the torn record is never recovered");
        assert_eq!(rec.quarantined, 1, "the torn record");
        // a corrupt body read for delivery says why, and is never delivered
        let by_id = |id| rec.messages.iter().find(|m| m.id == id).unwrap();
        let err = by_id(a).data().unwrap_err().to_string();
        assert!(err.contains("corrupt (checksum)"), "{err}");
        assert_eq!(by_id(b).data().unwrap(), b"BBBB");
        // the background check quarantines it and removes its message
        let corrupt = || fs::read_dir(dir.path().join("corrupt")).unwrap().count();
        for _ in 0..200 {
            if corrupt() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(corrupt(), 2, "the torn record and the corrupt body");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(j);
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![b], "the message whose body was corrupt is removed");
    }

    /// A power cut keeps what was synced and any prefix of what was not: for every cut
    /// point of the segment, recovery yields exactly the state after the last whole record
    /// before the cut, so every acknowledged operation survives a cut at or after its sync,
    /// and no half record is ever recovered (T-2, T-3).
    #[tokio::test]
    async fn every_cut_point_recovers_exactly_the_whole_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (SpoolId::new(), SpoolId::new(), SpoolId::new());
        let seg = segment_path(dir.path(), 1);
        // (synced length once the operation was acknowledged, the live state then)
        type State = Vec<(SpoolId, Vec<u8>)>;
        let mut acked: Vec<(u64, State)> = vec![(0, vec![])];
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            let mut state: State = vec![];
            let ops: Vec<(SpoolId, Option<&[u8]>)> =
                vec![(a, Some(b"first")), (b, Some(b"second")), (a, None), (c, Some(b"third")), (b, Some(b"again"))];
            for (id, data) in ops {
                match data {
                    Some(d) => {
                        j.put_data(id, b"{}", d).await.unwrap();
                        state.retain(|(x, _)| *x != id);
                        state.push((id, d.to_vec()));
                    }
                    None => {
                        j.remove(id).await.unwrap();
                        state.retain(|(x, _)| *x != id);
                    }
                }
                acked.push((fs::metadata(&seg).unwrap().len(), state.clone()));
            }
        }
        let image = fs::read(&seg).unwrap();
        let mut boundaries = vec![0];
        while let Decoded::Record(_, len) = record::decode(&image[*boundaries.last().unwrap()..]) {
            boundaries.push(boundaries.last().unwrap() + len);
        }
        assert_eq!(*boundaries.last().unwrap(), image.len());
        for cut in 0..=image.len() {
            let crashed = tempfile::tempdir().unwrap();
            fs::write(segment_path(crashed.path(), 1), &image[..cut]).unwrap();
            let (_j, rec) = Journal::open(crashed.path()).unwrap();
            let (_, expected) = acked.iter().rev().find(|(end, _)| *end as usize <= cut).unwrap();
            let mut got: State = rec.messages.iter().map(|m| (m.id, m.data().unwrap())).collect();
            let mut want = expected.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "cut at {cut}");
            // a message is two records (its body, then its ref): a cut between them tears
            // nothing, and the body alone is dead
            assert_eq!(rec.quarantined, usize::from(!boundaries.contains(&cut)), "cut at {cut}: the torn tail only");
        }
    }

    fn segment_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
            .count()
    }

    #[tokio::test]
    async fn a_long_lived_message_does_not_pin_the_segments_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let old = SpoolId::new();
        {
            let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
            j.put_data(old, b"{\"long\":1}", b"retried for days").await.unwrap();
            for _ in 0..300 {
                let id = SpoolId::new();
                j.put_data(id, b"{}", &[b'x'; 500]).await.unwrap();
                j.remove(id).await.unwrap();
            }
            // about 40 segments were written; compaction moved the old message forward
            assert!(segment_files(dir.path()) <= 3, "{} segment files kept", segment_files(dir.path()));
        }
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 1);
        assert_eq!((rec.messages[0].id, rec.messages[0].data().unwrap()), (old, b"retried for days".to_vec()));
        assert_eq!(rec.quarantined, 0);
    }

    #[tokio::test]
    async fn a_waiting_body_reads_back_after_compaction_moved_it() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
        let source = j.body_source();
        let old = SpoolId::new();
        let body = Body::new(b"kept in the spool only".to_vec());
        j.put(old, b"{}", b"", &body).await.unwrap();
        let first = j.reader.index.lock().location(body.id).unwrap();
        for _ in 0..300 {
            let id = SpoolId::new();
            j.put_data(id, b"{}", &[b'x'; 500]).await.unwrap();
            j.remove(id).await.unwrap();
            // reads race the writer's moves and deletions: every one finds the body
            assert_eq!(source.read_body(body.id).unwrap(), b"kept in the spool only");
        }
        let moved = j.reader.index.lock().location(body.id).unwrap();
        assert_ne!(first.seq, moved.seq, "compaction moved the body forward");
        assert!(!segment_path(dir.path(), first.seq).exists());
        j.remove(old).await.unwrap();
        let gone = source.read_body(body.id).unwrap_err().to_string();
        assert!(gone.contains("removed"), "{gone}");
    }

    #[tokio::test]
    async fn mostly_live_segments_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
        let mut ids = vec![];
        for _ in 0..40 {
            let id = SpoolId::new();
            j.put_data(id, b"{}", &[b'y'; 500]).await.unwrap();
            ids.push(id);
        }
        // a backlog: everything is live, so nothing is worth copying
        let before = segment_files(dir.path());
        assert!(before >= 5, "{before}");
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(segment_files(dir.path()), before);
        drop(j);
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 40);
    }

    #[tokio::test]
    async fn one_body_serves_every_message_of_a_transaction_and_dies_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let body = Body::new(vec![b'z'; 100_000]);
        let ids: Vec<SpoolId> = (0..50).map(|_| SpoolId::new()).collect();
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            let prefixes: Vec<Vec<u8>> = ids.iter().map(|id| format!("Received: {id}\r\n").into_bytes()).collect();
            let puts = ids.iter().zip(&prefixes).map(|(id, p)| j.put(*id, b"{}", p, &body));
            for r in futures::future::join_all(puts).await {
                r.unwrap();
            }
            // an update names the same body: only the ref is written again
            j.put(ids[0], b"{\"num_attempts\":1}", b"Received: again\r\n", &body).await.unwrap();
        }
        let size: u64 = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(size < 110_000, "50 messages, one 100 KB body on disk: {size} bytes");
        {
            let (j, rec) = Journal::open(dir.path()).unwrap();
            assert_eq!(rec.messages.len(), 50);
            assert!(rec.messages.iter().all(|m| m.body.same_as(&rec.messages[0].body)), "one body in memory");
            let first = rec.messages.iter().find(|m| m.id == ids[0]).unwrap();
            assert_eq!(first.prefix(), b"Received: again\r\n");
            for id in &ids[1..] {
                j.remove(*id).await.unwrap();
            }
        }
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.messages.len(), 1, "the body outlives all but the last message");
        assert_eq!(rec.messages[0].body.len(), 100_000);
        assert!(rec.messages[0].body.loaded().is_none(), "recovery reads no body into memory");
        assert_eq!(rec.messages[0].body.read().unwrap().len(), 100_000);
        j.remove(ids[0]).await.unwrap();
        drop(j);
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.messages.is_empty());
    }

    #[tokio::test]
    async fn dead_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolId::new();
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            j.put_data(a, b"{}", b"A").await.unwrap();
        }
        {
            let (j, rec) = Journal::open(dir.path()).unwrap();
            assert_eq!(rec.messages.len(), 1);
            j.remove(a).await.unwrap();
        }
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.messages.is_empty());
        let segs =
            fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some()).count();
        assert!(segs <= 2, "old segments were removed, {segs} remain");
    }
}
