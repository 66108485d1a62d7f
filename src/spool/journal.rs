//! The embedded spool backend: append-only segment files written by one thread that
//! groups the writes of all concurrent sessions into one `fdatasync`. A message is
//! committed when its Put record is synced; the caller hears "stored" only then.
//!
//! Invariants:
//! * A new segment file is made durable in its directory (`fsync` of the directory)
//!   before any record in it is acknowledged.
//! * Segments are deleted oldest first, and only when they hold no live message, so a
//!   Remove record never outlives the Put it cancels in a way that resurrects it.
//! * An I/O or sync error latches the journal unhealthy: every later write fails fast
//!   (no fsync retry — the kernel may have dropped the dirty pages).
//! * At start-up every segment is replayed; torn or corrupt bytes are copied to
//!   `corrupt/` and logged, never delivered and never silently dropped.

use super::record::{self, Decoded, Record};
use super::{Recovered, SpoolError};
use crate::message::SpoolId;
use std::collections::{BTreeMap, HashMap};
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

enum Op {
    Put(SpoolId, Vec<u8>),
    Remove(SpoolId, Vec<u8>),
}

struct Pending {
    op: Op,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

#[derive(Default)]
struct Index {
    /// Live message → segment holding its newest Put.
    location: HashMap<SpoolId, u64>,
    /// Segment → live messages in it.
    live: BTreeMap<u64, usize>,
}

/// The journal.
pub struct Journal {
    tx: std::sync::mpsc::Sender<Pending>,
    healthy: Arc<AtomicBool>,
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
        let io = |what: &str, e: std::io::Error| SpoolError::Io(format!("{what} {}: {e}", dir.display()));
        fs::create_dir_all(dir.join("corrupt")).map_err(|e| io("creating", e))?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io("reading", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        seqs.sort_unstable();

        let mut index = Index::default();
        let mut recovered = Recovered::default();
        let mut messages: HashMap<SpoolId, (Vec<u8>, Vec<u8>)> = HashMap::new();
        for &seq in &seqs {
            replay_segment(dir, seq, &mut index, &mut messages, &mut recovered)?;
        }
        let mut ids: Vec<SpoolId> = messages.keys().copied().collect();
        ids.sort();
        for id in ids {
            let (meta, data) = messages.remove(&id).expect("present");
            recovered.messages.push((id, meta, data));
        }

        let next_seq = seqs.last().map(|s| s + 1).unwrap_or(1);
        let (file, path) = create_segment(dir, next_seq)?;
        index.live.insert(next_seq, 0);
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut writer =
            Writer { dir: dir.to_path_buf(), seq: next_seq, file, path, size: 0, index, healthy: healthy.clone() };
        writer.delete_dead_segments();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SpoolError::Io(format!("spawning the spool writer: {e}")))?;
        Ok((Journal { tx, healthy }, recovered))
    }

    async fn submit(&self, op: Op) -> Result<(), SpoolError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        let (done, wait) = oneshot::channel();
        self.tx.send(Pending { op, done }).map_err(|_| SpoolError::Unhealthy)?;
        wait.await.unwrap_or(Err(SpoolError::Unhealthy))
    }

    /// Stores a message durably.
    pub async fn put(&self, id: SpoolId, meta: &[u8], data: &[u8]) -> Result<(), SpoolError> {
        self.submit(Op::Put(id, record::encode_put(id, meta, data))).await
    }

    /// Removes a message durably.
    pub async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.submit(Op::Remove(id, record::encode_remove(id))).await
    }

    /// False once a write or sync failed.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), SpoolError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| SpoolError::Io(format!("creating {}: {e}", path.display())))?;
    sync_dir(dir).map_err(|e| SpoolError::Io(format!("syncing {}: {e}", dir.display())))?;
    Ok((file, path))
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

fn replay_segment(
    dir: &Path,
    seq: u64,
    index: &mut Index,
    messages: &mut HashMap<SpoolId, (Vec<u8>, Vec<u8>)>,
    recovered: &mut Recovered,
) -> Result<(), SpoolError> {
    let path = segment_path(dir, seq);
    let buf = fs::read(&path).map_err(|e| SpoolError::Io(format!("reading {}: {e}", path.display())))?;
    let mut pos = 0;
    index.live.entry(seq).or_insert(0);
    while pos < buf.len() {
        match record::decode(&buf[pos..]) {
            Decoded::Record(Record::Put { id, meta, data }, len) => {
                if serde_json::from_slice::<serde_json::Value>(meta).is_err() {
                    quarantine(dir, seq, pos, &buf[pos..pos + len], "a record with unreadable meta", recovered);
                } else {
                    if let Some(old) = index.location.insert(id, seq) {
                        *index.live.get_mut(&old).expect("segment") -= 1;
                    }
                    *index.live.get_mut(&seq).expect("segment") += 1;
                    messages.insert(id, (meta.to_vec(), data.to_vec()));
                }
                pos += len;
            }
            Decoded::Record(Record::Remove { id }, len) => {
                if let Some(old) = index.location.remove(&id) {
                    *index.live.get_mut(&old).expect("segment") -= 1;
                }
                messages.remove(&id);
                pos += len;
            }
            Decoded::Incomplete => {
                // a write torn by a crash before it was acknowledged
                quarantine(dir, seq, pos, &buf[pos..], "a torn (incomplete) record", recovered);
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| SpoolError::Io(e.to_string()))?;
                f.set_len(pos as u64).and_then(|_| f.sync_all()).map_err(|e| SpoolError::Io(e.to_string()))?;
                break;
            }
            Decoded::Corrupt { skip, reason } => {
                quarantine(dir, seq, pos, &buf[pos..pos + skip], reason, recovered);
                pos += skip;
            }
        }
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    path: PathBuf,
    size: u64,
    index: Index,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Pending>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
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
        if !self.healthy.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        buf.clear();
        for p in batch {
            buf.extend_from_slice(p.bytes());
        }
        if let Err(e) = self.file.write_all(buf) {
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) && self.undo_partial_write() {
                tracing::error!("spool: {} is full ({e}); the write was undone", self.path.display());
                return Err(SpoolError::NoSpace(e.to_string()));
            }
            self.healthy.store(false, Ordering::Release);
            tracing::error!(
                "spool: writing {} failed: {e}; the spool is now unhealthy and refuses new messages",
                self.path.display()
            );
            return Err(SpoolError::Io(e.to_string()));
        }
        // a failed sync is never retried: the kernel may have dropped the dirty pages
        if let Err(e) = self.file.sync_data() {
            self.healthy.store(false, Ordering::Release);
            tracing::error!(
                "spool: writing {} failed: {e}; the spool is now unhealthy and refuses new messages",
                self.path.display()
            );
            return Err(SpoolError::Io(e.to_string()));
        }
        self.size += buf.len() as u64;
        for p in batch {
            match &p.op {
                Op::Put(id, _) => {
                    if let Some(old) = self.index.location.insert(*id, self.seq) {
                        *self.index.live.get_mut(&old).expect("segment") -= 1;
                    }
                    *self.index.live.get_mut(&self.seq).expect("segment") += 1;
                }
                Op::Remove(id, _) => {
                    if let Some(old) = self.index.location.remove(id) {
                        *self.index.live.get_mut(&old).expect("segment") -= 1;
                    }
                }
            }
        }
        if self.size >= SEGMENT_LIMIT {
            self.roll()?;
        }
        self.delete_dead_segments();
        Ok(())
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

    fn roll(&mut self) -> Result<(), SpoolError> {
        let (file, path) =
            create_segment(&self.dir, self.seq + 1).inspect_err(|_| self.healthy.store(false, Ordering::Release))?;
        self.seq += 1;
        self.file = file;
        self.path = path;
        self.size = 0;
        self.index.live.insert(self.seq, 0);
        Ok(())
    }

    /// Deletes the oldest segments while they hold no live message.
    fn delete_dead_segments(&mut self) {
        while let Some((&seq, &live)) = self.index.live.first_key_value() {
            if live != 0 || seq == self.seq {
                break;
            }
            let path = segment_path(&self.dir, seq);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("spool: removing {}: {e}", path.display());
                break;
            }
            self.index.live.remove(&seq);
        }
    }
}

impl Pending {
    fn bytes(&self) -> &[u8] {
        match &self.op {
            Op::Put(_, b) | Op::Remove(_, b) => b,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
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
            j.put(a, b"{}", b"A").await.unwrap();
            j.put(b, b"{}", b"B").await.unwrap();
            j.put(c, b"{}", b"C").await.unwrap();
            j.remove(b).await.unwrap();
        }
        let (_j, rec) = Journal::open(dir.path()).unwrap();
        let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.0).collect();
        assert_eq!(ids, vec![a, c]);
        assert_eq!(rec.messages[1].2, b"C");
        assert_eq!(rec.quarantined, 0);
    }

    #[tokio::test]
    async fn torn_tail_and_corruption_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (SpoolId::new(), SpoolId::new());
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            j.put(a, b"{}", b"AAAA").await.unwrap();
            j.put(b, b"{}", b"BBBB").await.unwrap();
        }
        // corrupt the first record's data and append a torn record
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let pos = memchr::memmem::find(&bytes, b"AAAA").unwrap();
        bytes[pos] = b'Z';
        let torn = record::encode_put(SpoolId::new(), b"{}", b"torn");
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        fs::write(&seg, &bytes).unwrap();

        let (_j, rec) = Journal::open(dir.path()).unwrap();
        let ids: Vec<SpoolId> = rec.messages.iter().map(|m| m.0).collect();
        assert_eq!(ids, vec![b], "the corrupt and the torn record are never recovered");
        assert_eq!(rec.quarantined, 2);
        assert_eq!(fs::read_dir(dir.path().join("corrupt")).unwrap().count(), 2);
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
                        j.put(id, b"{}", d).await.unwrap();
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
        for cut in 0..=image.len() {
            let crashed = tempfile::tempdir().unwrap();
            fs::write(segment_path(crashed.path(), 1), &image[..cut]).unwrap();
            let (_j, rec) = Journal::open(crashed.path()).unwrap();
            let (end, expected) = acked.iter().rev().find(|(end, _)| *end as usize <= cut).unwrap();
            let mut got: State = rec.messages.iter().map(|m| (m.0, m.2.clone())).collect();
            let mut want = expected.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(rec.quarantined, usize::from(*end as usize != cut), "cut at {cut}: the torn tail only");
        }
    }

    #[tokio::test]
    async fn dead_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = SpoolId::new();
        {
            let (j, _) = Journal::open(dir.path()).unwrap();
            j.put(a, b"{}", b"A").await.unwrap();
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
