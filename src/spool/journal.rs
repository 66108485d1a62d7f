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
            let mut ix = index.lock();
            for &seq in &seqs {
                replay_segment(dir, seq, &mut ix, &mut replay, &mut recovered)?;
            }
            replay.finish(dir, &mut ix, &mut recovered, reader.clone());
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
        assert_eq!(source.read_header_section(body.id).unwrap(), b"kept in the spool only", "no blank line: all");
        assert_ne!(first.seq, moved.seq, "compaction moved the body forward");
        assert!(!segment_path(dir.path(), first.seq).exists());
        j.remove(old).await.unwrap();
        let gone = source.read_body(body.id).unwrap_err().to_string();
        assert!(gone.contains("removed"), "{gone}");
    }

    #[tokio::test]
    async fn header_reads_stream_the_body_and_still_check_it() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let text = format!("Subject: waiting\r\nX-A: 1\r\n\r\n{}", "body text ".repeat(30_000));
        let body = Body::new(text.clone().into_bytes());
        j.put(SpoolId::new(), b"{}", b"", &body).await.unwrap();
        let source = j.body_source();
        assert_eq!(source.read_header_section(body.id).unwrap(), b"Subject: waiting\r\nX-A: 1\r\n");
        // a flipped byte far into the text still fails the read of the headers
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let at = memchr::memmem::rfind(&bytes, b"body text").unwrap();
        bytes[at] ^= 0x20;
        fs::write(&seg, bytes).unwrap();
        let err = source.read_header_section(body.id).unwrap_err().to_string();
        assert!(err.contains("corrupt (checksum)"), "{err}");
    }

    #[tokio::test]
    async fn a_message_whose_body_is_lost_is_reported_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolId::new();
        let body = Body::new(vec![b'q'; 3000]);
        {
            let (j, _) = Journal::open_with(dir.path(), 4096).unwrap();
            j.put(a, b"{\"n\":1}", b"", &body).await.unwrap();
            for _ in 0..4 {
                j.put_data(SpoolId::new(), b"{}", &[b'x'; 1500]).await.unwrap();
            }
            // a retry rewrites only the message's record, in a later segment
            j.put(a, b"{\"n\":2}", b"", &body).await.unwrap();
        }
        // the body's segment loses its tail (the body record is cut)
        let seg = segment_path(dir.path(), 1);
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len.min(1000)).unwrap();
        drop(f);
        let (j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.messages.iter().all(|m| m.id != a));
        assert!(dir.path().join("corrupt").join(format!("{a}.envelope.json")).exists(), "its envelope is kept");
        drop(j);
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.messages.iter().all(|m| m.id != a));
        assert_eq!(rec.quarantined, 0, "reported once, not at every start");
    }

    #[tokio::test]
    async fn starts_that_write_nothing_leave_no_empty_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            j.put_data(SpoolId::new(), b"{}", b"kept").await.unwrap();
        }
        for _ in 0..3 {
            let (_j, rec) = Journal::open(dir.path()).unwrap();
            assert_eq!(rec.messages.len(), 1);
        }
        // the live segment and the current one
        assert_eq!(segment_files(dir.path()), 2);
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
