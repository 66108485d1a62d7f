//! Queues: scheduled queues (named from meta, retry and expiry), ready queues (one per
//! egress path, connection limits and rates), the manager that moves messages between
//! them, and the retry arithmetic.

pub mod admin;
pub mod admit;
pub mod automation;
mod custom;
mod deferred;
mod disposition;
mod fleet_rules;
pub mod listing;
pub mod log_hook;
pub mod manager;
pub mod ready;
pub mod retry;
pub mod rewrite;
pub mod scheduled;

pub use manager::{InsertReason, QueueManager};

/// The special queue that discards messages after reception.
pub const NULL_QUEUE: &str = "null";

/// The queue a `deferred_queue` listener sends every message to; drained by the deferred
/// injector, which runs `smtp_server_message_deferred_inject` and rebinds the message.
pub const DEFERRED_QUEUE: &str = "deferred_smtp_inject.kumomta.internal";

/// The fixed configuration of [`DEFERRED_QUEUE`]: one-minute base retry, exponential
/// backoff without a cap, expiry after a week. `get_queue_config` is never asked.
pub fn deferred_queue_config() -> crate::config::queue::QueueConfig {
    crate::config::queue::QueueConfig { retry_interval: std::time::Duration::from_secs(60), ..Default::default() }
}
