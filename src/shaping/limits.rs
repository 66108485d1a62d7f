//! Named connection limits shared by every ready queue of the process
//! (`additional_connection_limits`, and the `shaping-provider-<name>-<source>-limit`
//! entries shaping makes from `provider_connection_limit`): a connection needs a lease on
//! every name its egress path lists, all at once or none; the lease ends with the
//! connection. With `configure_redis_throttles`, limits without `local:` are held in
//! Redis for the whole fleet instead ([`super::shared_limits`]).

use super::shared_limits::{SharedLease, SharedLimits};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;

/// The registry.
#[derive(Default)]
pub struct NamedLimits {
    open: Mutex<HashMap<String, usize>>,
    freed: Notify,
    shared: std::sync::OnceLock<SharedLimits>,
}

/// The leases one connection holds: in process and in Redis.
pub struct ConnectionLease {
    _local: Lease,
    shared: Option<SharedLease>,
}

/// How long a connection holding fleet-wide leases stays open without work, at most: an
/// idle connection would otherwise keep its lease from a node that has mail.
pub const SHARED_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

impl ConnectionLease {
    /// False once a shared lease could not be renewed: end the connection.
    pub fn held(&self) -> bool {
        self.shared.as_ref().is_none_or(SharedLease::held)
    }

    /// How long to stay open without work: `idle_timeout`, at most [`SHARED_IDLE`] when
    /// the lease is the fleet's.
    pub fn idle(&self, idle_timeout: std::time::Duration) -> std::time::Duration {
        match self.shared {
            Some(_) => idle_timeout.min(SHARED_IDLE),
            None => idle_timeout,
        }
    }
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

    /// From now on, limits not marked `local:` are held in Redis.
    pub fn share(&self, shared: SharedLimits) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("connection limits: already shared through Redis");
        }
    }

    /// Gives back what an earlier run of this node left in Redis (see
    /// [`SharedLimits::reclaim`]); 0 when limits are not shared.
    pub async fn reclaim(&self) -> Result<usize, String> {
        match self.shared.get() {
            Some(s) => s.reclaim().await,
            None => Ok(0),
        }
    }

    /// True when limits are held in Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// Waits for leases on every `local` limit (in process) and every `shared` one (in
    /// Redis, when shared; else in process too); `None` when `give_up` says so.
    pub async fn acquire_all(
        self: &Arc<Self>,
        mut local: BTreeMap<String, usize>,
        shared: BTreeMap<String, usize>,
        give_up: impl Fn() -> bool,
    ) -> Option<ConnectionLease> {
        let Some(redis) = self.shared.get().filter(|_| !shared.is_empty()) else {
            local.extend(shared);
            return self.acquire(&local, give_up).await.map(|l| ConnectionLease { _local: l, shared: None });
        };
        loop {
            let l = self.acquire(&local, &give_up).await?;
            // the process's own lease first, so a full local limit costs Redis nothing
            match redis.try_acquire(&shared).await {
                Ok(Some(s)) => return Some(ConnectionLease { _local: l, shared: Some(s) }),
                Ok(None) => {
                    drop(l);
                    tokio::time::sleep(std::time::Duration::from_millis(50 + rand::random::<u64>() % 150)).await;
                }
                Err(_) => {
                    drop(l);
                    if let Some(nodes) = redis.fallback_node_count() {
                        // Redis is away: this node's share of each limit, held here
                        let share = shared.iter().map(|(k, v)| (format!("fallback:{k}"), (v / nodes as usize).max(1)));
                        let mut alone = local.clone();
                        alone.extend(share);
                        if let Some(l) = self.try_acquire(&alone) {
                            return Some(ConnectionLease { _local: l, shared: None });
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            if give_up() {
                return None;
            }
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
