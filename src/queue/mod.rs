//! Scheduled queues. For now a message handed to the queue layer is kept scheduled
//! (by id, without its data) in its named queue; delivery comes with the outbound work.

pub mod retry;

use crate::message::{Message, SpoolId};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Why a message entered a queue (KumoMTA's insert reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertReason {
    /// Just received.
    Received,
    /// Found in the spool at start-up.
    Enumerated,
}

/// The special queue that discards messages after reception.
pub const NULL_QUEUE: &str = "null";

/// All scheduled queues.
#[derive(Default)]
pub struct QueueManager {
    queues: Mutex<BTreeMap<String, Vec<SpoolId>>>,
}

impl QueueManager {
    /// A manager with no queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a message into its queue.
    pub fn insert(&self, message: &Message, reason: InsertReason) {
        let name = message.queue_name();
        tracing::trace!("queue {name}: insert {} ({reason:?})", message.id());
        self.queues.lock().entry(name).or_default().push(message.id());
    }

    /// (queue name, message count) for every queue.
    pub fn summary(&self) -> Vec<(String, usize)> {
        self.queues.lock().iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    /// Messages held in all queues.
    pub fn total(&self) -> usize {
        self.queues.lock().values().map(Vec::len).sum()
    }
}
