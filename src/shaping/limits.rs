//! Named connection limits shared by every ready queue of the process
//! (`additional_connection_limits`, and the `shaping-provider-<name>-<source>-limit`
//! entries shaping makes from `provider_connection_limit`): a connection needs a lease on
//! every name its egress path lists, all at once or none; the lease ends with the
//! connection.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;

/// The registry.
#[derive(Default)]
pub struct NamedLimits {
    open: Mutex<HashMap<String, usize>>,
    freed: Notify,
}

/// Leases on some named limits; dropping it gives them back.
pub struct Lease {
    limits: Arc<NamedLimits>,
    names: Vec<String>,
}

impl NamedLimits {
    /// Takes a lease on every `(name, limit)`, or nothing when one is full.
    pub fn try_acquire(self: &Arc<Self>, wanted: &BTreeMap<String, usize>) -> Option<Lease> {
        let mut open = self.open.lock();
        if wanted.iter().any(|(name, limit)| open.get(name).copied().unwrap_or(0) >= *limit) {
            return None;
        }
        for name in wanted.keys() {
            *open.entry(name.clone()).or_default() += 1;
        }
        Some(Lease { limits: self.clone(), names: wanted.keys().cloned().collect() })
    }

    /// Waits for a lease; `None` when `give_up` says so (checked at least once a second).
    pub async fn acquire(
        self: &Arc<Self>,
        wanted: &BTreeMap<String, usize>,
        give_up: impl Fn() -> bool,
    ) -> Option<Lease> {
        loop {
            let freed = self.freed.notified();
            if let Some(lease) = self.try_acquire(wanted) {
                return Some(lease);
            }
            if give_up() {
                return None;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), freed).await;
        }
    }

    /// Connections open under `name`.
    pub fn open(&self, name: &str) -> usize {
        self.open.lock().get(name).copied().unwrap_or(0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        for name in &self.names {
            if let Some(n) = open.get_mut(name) {
                *n = n.saturating_sub(1);
            }
        }
        drop(open);
        self.limits.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing_and_released_on_drop() {
        let limits = Arc::new(NamedLimits::default());
        let a: BTreeMap<String, usize> = [("p".to_string(), 2)].into();
        let ab: BTreeMap<String, usize> = [("p".to_string(), 2), ("q".to_string(), 1)].into();
        let l1 = limits.try_acquire(&ab).unwrap();
        let l2 = limits.try_acquire(&a).unwrap();
        assert!(limits.try_acquire(&a).is_none(), "p is full");
        drop(l2);
        assert!(limits.try_acquire(&ab).is_none(), "q is still full, so p is not taken either");
        assert_eq!(limits.open("p"), 1);
        drop(l1);
        assert_eq!((limits.open("p"), limits.open("q")), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_a_lease_ends() {
        let limits = Arc::new(NamedLimits::default());
        let one: BTreeMap<String, usize> = [("p".to_string(), 1)].into();
        let held = limits.try_acquire(&one).unwrap();
        let l2 = limits.clone();
        let one2 = one.clone();
        let waiter = tokio::spawn(async move { l2.acquire(&one2, || false).await.is_some() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(held);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(500), waiter).await.unwrap().unwrap());
    }
}
