//! The small shared state every layer of one server reads: the configuration epoch and
//! the shutdown flag. They are values (cheap clones of one shared cell) handed down from
//! `serve`, never process-wide statics, so two servers in one process stay apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The configuration epoch: `Epoch`-refreshed objects (egress paths, queue configs,
/// memoized values) are fetched again when it moves (`kumo.bump_config_epoch`, a shaping
/// or monitored file change, an automation rule).
#[derive(Clone, Default, Debug)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the epoch; returns the new value.
    pub fn bump(&self) -> u64 {
        let e = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!("configuration epoch is now {e}");
        e
    }
}

/// Set once the server begins to stop: policy calls in flight are cancelled at their next
/// check (the Wasm epoch tick, the Lua instruction hook) and fail as temporary.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Marks the server as stopping.
    pub fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Shutdown::begin`] was called.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
