//! Writes log records as zstd-compressed JSON lines into segments named
//! `YYYYMMDD-HHMMSS` (UTC), rolled by size or age. Each batch is flushed as a complete
//! zstd block so a live segment can be read up to its last record.

use super::record::LogRecord;
use crate::config::storage::LocalLogsConfig;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

enum Msg {
    Record(Box<LogRecord>),
    Close,
}

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
    /// Starts a writer for `config`.
    pub fn start(config: &LocalLogsConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.log_dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.back_pressure.max(1));
        let config = config.clone();
        let thread = std::thread::Builder::new().name("log-writer".into()).spawn(move || run(config, rx))?;
        Ok(SegmentWriter { tx, thread: Some(thread) })
    }

    /// Queues a record (waits when `back_pressure` records are pending).
    pub fn write(&self, record: LogRecord) {
        let _ = self.tx.send(Msg::Record(Box::new(record)));
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
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Msg::Close),
        };
        let mut close = false;
        let mut pending = first.into_iter().collect::<Vec<_>>();
        while let Ok(m) = rx.try_recv() {
            pending.push(m);
        }
        for m in pending {
            match m {
                Msg::Close => close = true,
                Msg::Record(r) => {
                    if segment.is_none() {
                        match open_segment(&dir, config.compression_level) {
                            Ok(s) => segment = Some(s),
                            Err(e) => {
                                tracing::error!("logs: cannot open a segment in {}: {e}", dir.display());
                                continue;
                            }
                        }
                    }
                    let seg = segment.as_mut().expect("open");
                    line.clear();
                    if serde_json::to_writer(&mut line, &r).is_ok() {
                        line.push(b'\n');
                        if let Err(e) = seg.encoder.write_all(&line) {
                            tracing::error!("logs: writing {}: {e}", seg.path.display());
                        }
                        seg.bytes += line.len() as u64;
                    }
                }
            }
        }
        if let Some(seg) = segment.as_mut() {
            let _ = seg.encoder.flush();
            let too_old = config.max_segment_duration.is_some_and(|d| seg.opened.elapsed() >= d);
            if close || too_old || seg.bytes >= config.max_file_size {
                let seg = segment.take().expect("open");
                let path = seg.path.clone();
                if let Err(e) = seg.encoder.finish().and_then(|mut f| f.flush()) {
                    tracing::error!("logs: finishing {}: {e}", path.display());
                }
            }
        }
        if close {
            return;
        }
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
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
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
        let reply = crate::smtp::protocol::Reply::new(250, "2.0.0", "OK");
        for _ in 0..30 {
            w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)));
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
        let reply = crate::smtp::protocol::Reply::new(250, "2.0.0", "OK");
        w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)));
        std::thread::sleep(Duration::from_millis(2200));
        w.write(LogRecord::new(RecordType::Reception, Response::from_reply(&reply, None)));
        w.close();
        assert_eq!(read_all(dir.path()), (2, 2));
    }
}
