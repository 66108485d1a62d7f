//! Writes log records as zstd-compressed JSON lines into segments named
//! `YYYYMMDD-HHMMSS` (UTC), rolled by size or age. Each batch is flushed as a complete
//! zstd block so a live segment can be read up to its last record, and written to the
//! file (the page cache: it survives `kill -9`) before the records' acknowledgements are
//! sent. A segment that cannot be opened (full disk, no descriptors) keeps its records
//! for the next try; they are never dropped silently.

use super::record::LogRecord;
use crate::config::storage::LocalLogsConfig;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

enum Msg {
    Record(Box<LogRecord>, Option<Ack>),
    Close,
}

/// Told once a record is in the file, or kept for a retry after a failed write.
pub type Ack = tokio::sync::oneshot::Sender<()>;

/// Records kept for a retry while no segment can be opened before the oldest are dropped
/// (counted in `log_records_dropped_total` and logged).
const RETRY_LIMIT: usize = 100_000;

/// One log directory's writer thread.
pub struct SegmentWriter {
    tx: SyncSender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Segment {
    encoder: zstd::Encoder<'static, File>,
    opened: Instant,
    bytes: u64,
    path: PathBuf,
}

fn open_segment(dir: &Path, level: i32) -> std::io::Result<Segment> {
    std::fs::create_dir_all(dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let mut path = dir.join(&stamp);
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{stamp}.{n}"));
        n += 1;
    }
    let file = File::create(&path)?;
    let encoder = zstd::Encoder::new(file, if level == 0 { 3 } else { level })?;
    Ok(Segment { encoder, opened: Instant::now(), bytes: 0, path })
}

impl SegmentWriter {
    /// Starts a writer for `config`. The directory is locked for this process (one server
    /// per log directory) until the writer thread ends.
    pub fn start(config: &LocalLogsConfig) -> std::io::Result<Self> {
        let lock = crate::dirlock::DirLock::acquire(Path::new(&config.log_dir)).map_err(std::io::Error::other)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.back_pressure.max(1));
        let config = config.clone();
        let thread = std::thread::Builder::new().name("log-writer".into()).spawn(move || {
            let _lock = lock;
            run(config, rx)
        })?;
        Ok(SegmentWriter { tx, thread: Some(thread) })
    }

    /// Queues a record (waits when `back_pressure` records are pending); `ack` is told
    /// when it has been written.
    pub fn write(&self, record: LogRecord, ack: Option<Ack>) {
        if self.tx.send(Msg::Record(Box::new(record), ack)).is_err() {
            crate::metrics::core::log_records_dropped().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("logs: a record arrived after its writer stopped; dropped");
        }
    }

    /// Finishes the current segment and stops the thread.
    pub fn close(&mut self) {
        let _ = self.tx.send(Msg::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(config: LocalLogsConfig, rx: Receiver<Msg>) {
    let dir = PathBuf::from(&config.log_dir);
    let mut segment: Option<Segment> = None;
    let mut line = Vec::with_capacity(1024);
    // records waiting for a segment that could not be opened
    let mut retry: std::collections::VecDeque<Box<LogRecord>> = Default::default();
    let mut failing = false;
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Msg::Close),
        };
        let mut close = false;
        let mut acks = vec![];
        let mut pending: Records = retry.drain(..).collect();
        for m in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match m {
                Msg::Close => close = true,
                Msg::Record(r, ack) => {
                    pending.push(r);
                    acks.extend(ack);
                }
            }
        }
        if !pending.is_empty() && segment.is_none() {
            match open_segment(&dir, config.compression_level) {
                Ok(s) => {
                    if failing {
                        tracing::info!("logs: writing to {} again", dir.display());
                        failing = false;
                    }
                    segment = Some(s);
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(
                            "logs: cannot open a segment in {}: {e}; {} record(s) kept for a retry",
                            dir.display(),
                            pending.len()
                        );
                        failing = true;
                    }
                    crate::metrics::core::log_write_failures().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    keep_for_retry(&mut retry, pending);
                    pending = vec![];
                }
            }
        }
        if let Some(seg) = segment.as_mut() {
            for r in pending {
                line.clear();
                if serde_json::to_writer(&mut line, &r).is_ok() {
                    line.push(b'\n');
                    if let Err(e) = seg.encoder.write_all(&line) {
                        tracing::error!("logs: writing {}: {e}; the record is lost", seg.path.display());
                        crate::metrics::core::log_records_dropped().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    seg.bytes += line.len() as u64;
                }
            }
            if let Err(e) = seg.encoder.flush() {
                tracing::error!("logs: flushing {}: {e}", seg.path.display());
            }
            let too_old = config.max_segment_duration.is_some_and(|d| seg.opened.elapsed() >= d);
            if close || too_old || seg.bytes >= config.max_file_size {
                let seg = segment.take().expect("open");
                let path = seg.path.clone();
                if let Err(e) = seg.encoder.finish().and_then(|mut f| f.flush()) {
                    tracing::error!("logs: finishing {}: {e}", path.display());
                }
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if close {
            if !retry.is_empty() {
                crate::metrics::core::log_records_dropped()
                    .fetch_add(retry.len() as i64, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    "logs: {} record(s) for {} could not be written at shutdown",
                    retry.len(),
                    dir.display()
                );
            }
            return;
        }
    }
}

/// Records on their way to a segment (boxed: they travel through the channel so).
#[allow(clippy::vec_box)]
type Records = Vec<Box<LogRecord>>;

/// Keeps records for the next try, dropping (and counting) the oldest beyond the limit.
fn keep_for_retry(retry: &mut std::collections::VecDeque<Box<LogRecord>>, records: Records) {
    retry.extend(records);
    let over = retry.len().saturating_sub(RETRY_LIMIT);
    if over > 0 {
        retry.drain(..over);
        crate::metrics::core::log_records_dropped().fetch_add(over as i64, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("logs: {over} record(s) dropped: no segment could be opened for too long");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::{RecordType, Response};

    fn read_all(dir: &Path) -> (usize, usize) {
        let mut files = 0;
        let mut lines = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|n| n == crate::dirlock::LOCK_FILE) {
                continue;
            }
            let bytes = std::fs::read(path).unwrap();
            let text = zstd::decode_all(&bytes[..]).expect("finished segments decode");
            files += 1;
            lines += text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        }
        (files, lines)
    }

    #[test]
    fn rolls_by_size_and_finishes_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config: LocalLogsConfig = crate::config::decode(serde_json::json!({
            "log_dir": dir.path().to_str().unwrap(), "max_file_size": 2000,
        }))
        .unwrap();
        let mut w = SegmentWriter::start(&config).unwrap();
        let reply = crate::protocol::Reply::new(250, "2.0.0", "OK");
        for _ in 0..30 {
            w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)), None);
            std::thread::sleep(Duration::from_millis(2));
        }
        w.close();
        let (files, lines) = read_all(dir.path());
        assert_eq!(lines, 30);
        assert!(files >= 3, "30 records of ~700 bytes roll a 2000-byte limit: {files} segment(s)");
    }

    #[test]
    fn rolls_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let config: LocalLogsConfig = crate::config::decode(serde_json::json!({
            "log_dir": dir.path().to_str().unwrap(), "max_segment_duration": "1s",
        }))
        .unwrap();
        let mut w = SegmentWriter::start(&config).unwrap();
        let reply = crate::protocol::Reply::new(250, "2.0.0", "OK");
        w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)), None);
        std::thread::sleep(Duration::from_millis(2200));
        w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)), None);
        w.close();
        assert_eq!(read_all(dir.path()), (2, 2));
    }
}
