//! Durable storage of messages. The `SpoolBackend` trait is the boundary; the embedded
//! journal (`journal`) is the default backend and serves both `LocalDisk` and `RocksDB`
//! spool definitions. A message is acknowledged only after its record is synced.

mod index;
pub mod journal;
mod reader;
pub mod record;
mod replay;
pub mod space;

use crate::config::storage::{MinFree, SpoolConfig, SpoolKind};
use crate::message::{Body, BodyError, BodySource, Message, SpoolId};
use space::DiskMonitor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the spool could not take or drop a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// A read, write or sync failed.
    #[error("spool I/O error: {0}")]
    Io(String),
    /// An earlier failure latched the spool unhealthy.
    #[error("spool is unhealthy after an earlier I/O error")]
    Unhealthy,
    /// The filesystem ran out of space (or quota) during the write; the partial write was
    /// undone and the spool stays healthy.
    #[error("spool filesystem is full: {0}")]
    NoSpace(String),
    /// Free space is below the configured minimum.
    #[error("free space is below min_free_space/min_free_inodes (spool or log directory)")]
    LowSpace,
    /// Another server holds the spool directory.
    #[error("spool: {0}")]
    Locked(String),
}

/// A message found in the spool.
pub struct RecoveredMessage {
    /// Spool id.
    pub id: SpoolId,
    /// Envelope JSON and this message's own bytes before the body, packed in one
    /// allocation ([`crate::message::packed::pack_record`]).
    pub packed: Box<[u8]>,
    /// The body (shared with the other messages of its transaction).
    pub body: Body,
}

impl RecoveredMessage {
    /// The envelope JSON.
    pub fn meta(&self) -> &[u8] {
        crate::message::packed::split_record(&self.packed).0
    }

    /// This message's own bytes before the body.
    pub fn prefix(&self) -> &[u8] {
        crate::message::packed::split_record(&self.packed).1
    }

    /// The whole data (the body read from the segment if it is not in memory).
    pub fn data(&self) -> Result<Vec<u8>, BodyError> {
        Ok([self.prefix(), &self.body.read()?[..]].concat())
    }
}

/// What a backend found when it opened.
#[derive(Default)]
pub struct Recovered {
    /// Live messages, by id.
    pub messages: Vec<RecoveredMessage>,
    /// Records moved to quarantine.
    pub quarantined: usize,
    /// Messages whose body is not in the spool (removed once the writer runs).
    pub orphans: Vec<SpoolId>,
}

/// A storage engine for messages.
#[async_trait::async_trait]
pub trait SpoolBackend: Send + Sync {
    /// Stores a message durably: its envelope, its own prefix and the body it may share
    /// with other messages; returns only once it would survive a crash.
    async fn put(&self, id: SpoolId, meta: &[u8], prefix: &[u8], body: &Body) -> Result<(), SpoolError>;
    /// Removes a message.
    async fn remove(&self, id: SpoolId) -> Result<(), SpoolError>;
    /// False once the backend has latched an error.
    fn healthy(&self) -> bool;
    /// Where stored bodies can be read back; `None` keeps every body in memory.
    fn body_source(&self) -> Option<Arc<dyn BodySource>> {
        None
    }
}

#[async_trait::async_trait]
impl SpoolBackend for journal::Journal {
    async fn put(&self, id: SpoolId, meta: &[u8], prefix: &[u8], body: &Body) -> Result<(), SpoolError> {
        journal::Journal::put(self, id, meta, prefix, body).await
    }
    async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        journal::Journal::remove(self, id).await
    }
    fn healthy(&self) -> bool {
        journal::Journal::healthy(self)
    }
    fn body_source(&self) -> Option<Arc<dyn BodySource>> {
        Some(journal::Journal::body_source(self))
    }
}

/// The spool the server uses.
#[derive(Clone)]
pub struct Spool {
    backend: Arc<dyn SpoolBackend>,
    space: Arc<DiskMonitor>,
    /// Other directories whose free space new mail also needs (the log directories with a
    /// `min_free_space` of their own).
    also: Vec<Arc<DiskMonitor>>,
    path: PathBuf,
    /// `kumo.suspend_delivery_when_spool_unhealthy` (default true).
    suspend_when_unhealthy: Arc<std::sync::atomic::AtomicBool>,
}

/// Messages found at start-up, opened one at a time as they are taken (so a large spool
/// is never all open at once).
pub struct Startup {
    recovered: Vec<RecoveredMessage>,
    /// Records quarantined as torn or corrupt (messages found unreadable while taken are
    /// counted by the caller).
    pub quarantined: usize,
}

impl Startup {
    /// How many live messages were found.
    pub fn len(&self) -> usize {
        self.recovered.len()
    }

    /// True when the spool held no live message.
    pub fn is_empty(&self) -> bool {
        self.recovered.is_empty()
    }

    /// The live messages, oldest first: each checked as it is opened; one whose envelope
    /// does not read is an error naming it (it is left in the journal, not delivered).
    pub fn messages(self) -> impl Iterator<Item = Result<Message, String>> {
        self.recovered.into_iter().map(|m| {
            Message::from_record(m.id, m.packed, m.body).map_err(|e| {
                format!("spool: message {} has an unreadable envelope ({e}); left in the journal, not delivered", m.id)
            })
        })
    }
}

impl Spool {
    /// Opens the spool the policy defined (`data`, or the first definition), or the
    /// default under `fallback_dir`. KumoMTA's separate `meta` spool is kept in the same
    /// journal so that a message has one commit point.
    pub fn open(defs: &[SpoolConfig], fallback_dir: &Path) -> Result<(Spool, Startup), SpoolError> {
        let def = defs.iter().find(|d| d.name == "data").or_else(|| defs.first());
        let (path, kind, min_space, min_inodes) = match def {
            Some(d) => (PathBuf::from(&d.path), d.kind, d.min_free_space, d.min_free_inodes),
            None => (fallback_dir.to_path_buf(), SpoolKind::LocalDisk, MinFree::default_space(), MinFree::default()),
        };
        for d in defs.iter().filter(|d| Some(*d as *const _) != def.map(|x| x as *const _)) {
            tracing::info!(
                "spool '{}' ({}) is stored in the '{}' journal: one commit point per message",
                d.name,
                d.path,
                def.map(|d| d.name.as_str()).unwrap_or("data")
            );
        }
        tracing::info!(
            "spool: embedded journal backend at {} (serving kind={kind:?}; every acknowledged message is fsynced, commits are grouped)",
            path.display()
        );
        let (journal, recovered) = journal::Journal::open(&path)?;
        let startup = Startup { quarantined: recovered.quarantined, recovered: recovered.messages };
        let space = DiskMonitor::new(&path, min_space, min_inodes);
        let spool =
            Spool { backend: Arc::new(journal), space, also: vec![], path, suspend_when_unhealthy: Default::default() };
        spool.set_suspend_delivery_when_unhealthy(true);
        Ok((spool, startup))
    }

    /// A spool over another backend (fault-injecting backends in tests, other stores);
    /// `path` is where free space is watched.
    pub fn with_backend(backend: Arc<dyn SpoolBackend>, path: &Path) -> Spool {
        let space = DiskMonitor::new(path, MinFree::default_space(), MinFree::default());
        let spool = Spool {
            backend,
            space,
            also: vec![],
            path: path.to_path_buf(),
            suspend_when_unhealthy: Default::default(),
        };
        spool.set_suspend_delivery_when_unhealthy(true);
        spool
    }

    /// Refuses new mail also while `dir`'s filesystem is under these floors
    /// (`configure_local_logs`'s `min_free_space` / `min_free_inodes`): a record that
    /// cannot be written is an acknowledged message nobody can account for.
    pub fn also_guard(&mut self, dir: &Path, min_space: MinFree, min_inodes: MinFree) {
        self.also.push(DiskMonitor::new(dir, min_space, min_inodes));
    }

    /// Starts background upkeep (free-space polling).
    pub fn start(&self) {
        self.space.start();
        for m in &self.also {
            m.start();
        }
    }

    /// Where the spool lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while deliveries should wait: the spool is unhealthy and
    /// `kumo.suspend_delivery_when_spool_unhealthy` is on (the default). A delivery whose
    /// removal could not be recorded would be repeated after a restart, so pausing bounds
    /// the duplicates.
    pub fn delivery_paused(&self) -> bool {
        self.suspend_when_unhealthy.load(std::sync::atomic::Ordering::Relaxed) && !self.backend.healthy()
    }

    /// `kumo.suspend_delivery_when_spool_unhealthy`.
    pub fn set_suspend_delivery_when_unhealthy(&self, on: bool) {
        self.suspend_when_unhealthy.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ok when new messages can be taken.
    pub fn accepting(&self) -> Result<(), SpoolError> {
        if !self.backend.healthy() {
            Err(SpoolError::Unhealthy)
        } else if self.space.is_low() || self.also.iter().any(|m| m.is_low()) {
            Err(SpoolError::LowSpace)
        } else {
            Ok(())
        }
    }

    /// Stores a message durably.
    pub async fn store(&self, message: &Message) -> Result<(), SpoolError> {
        let meta = message.with_envelope(serde_json::to_vec).map_err(|e| SpoolError::Io(e.to_string()))?;
        let (prefix, body) = message.parts();
        self.backend.put(message.id(), &meta, &prefix, &body).await?;
        message.set_spooled();
        // the body may now leave memory while the message waits
        if let Some(source) = self.backend.body_source() {
            body.set_source(source);
        }
        Ok(())
    }

    /// Stores a message's new state if the spool holds a copy; a `deferred_spool` message
    /// stays in memory until its first transient failure stores it.
    pub async fn update(&self, message: &Message) -> Result<(), SpoolError> {
        if message.spooled() { self.store(message).await } else { Ok(()) }
    }

    /// Removes a message.
    pub async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.backend.remove(id).await
    }
}

/// A spool backend in memory whose operations complete at once: for tests under paused
/// tokio time, where waiting on the journal's writer thread would let the clock jump.
#[cfg(test)]
pub mod memory {
    use super::{SpoolBackend, SpoolError};
    use crate::message::{Body, SpoolId};
    use std::collections::HashSet;

    /// Ids stored and not removed.
    #[derive(Default)]
    pub struct Memory(pub parking_lot::Mutex<HashSet<SpoolId>>);

    #[async_trait::async_trait]
    impl SpoolBackend for Memory {
        async fn put(&self, id: SpoolId, _meta: &[u8], _prefix: &[u8], _body: &Body) -> Result<(), SpoolError> {
            self.0.lock().insert(id);
            Ok(())
        }
        async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
            self.0.lock().remove(&id);
            Ok(())
        }
        fn healthy(&self) -> bool {
            true
        }
    }
}
