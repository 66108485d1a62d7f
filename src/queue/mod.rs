//! Queues: scheduled queues (named from meta, retry and expiry), ready queues (one per
//! egress path, connection limits and rates), the manager that moves messages between
//! them, and the retry arithmetic.

pub mod manager;
pub mod ready;
pub mod retry;
pub mod scheduled;

pub use manager::{InsertReason, QueueManager};

/// The special queue that discards messages after reception.
pub const NULL_QUEUE: &str = "null";
