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
use super::reader::{Reader, spawn_verifier};
use super::record::{self, Decoded, Record};
use super::replay::{Replay, replay_segment};
use super::{Recovered, SpoolError};
use crate::message::{Body, BodySource, SpoolId};
use parking_lot::Mutex;
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

pub(super) enum Op {
    /// A message's Ref record, and the Body it names (written first unless it is live).
    Put {
        id: SpoolId,
        record: Vec<u8>,
        body: Body,
    },
    Remove(SpoolId, Vec<u8>),
}

pub(super) struct Pending {
    pub(super) op: Op,
    pub(super) done: oneshot::Sender<Result<(), SpoolError>>,
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

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
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
            let started = std::time::Instant::now();
            let mut ix = index.lock();
            for &seq in &seqs {
                replay_segment(dir, seq, &mut ix, &mut replay, &mut recovered)?;
            }
            let replayed = started.elapsed();
            replay.finish(dir, &mut ix, &mut recovered, reader.clone());
            tracing::info!(
                "spool: {} segment(s) replayed in {:.2?}, {} live message(s) paired with their bodies in {:.2?}",
                seqs.len(),
                replayed,
                recovered.messages.len(),
                started.elapsed() - replayed
            );
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
        // messages whose body is gone: their removal made durable
        for id in std::mem::take(&mut recovered.orphans) {
            let (done, _) = oneshot::channel();
            let _ = tx.send(Pending { op: Op::Remove(id, record::encode_remove(id)), done });
        }
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
        // empty files left by starts that wrote nothing, anywhere in the sequence
        let empty = self.index.lock().empty_segments(self.seq);
        for seq in empty {
            if fs::remove_file(segment_path(&self.dir, seq)).is_ok() {
                self.index.lock().drop_segment(seq);
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
#[path = "journal_tests.rs"]
mod tests;
