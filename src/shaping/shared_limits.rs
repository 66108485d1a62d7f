//! Connection limits held in Redis for the whole fleet: each limit is a sorted set of
//! leases scored by their expiry (Redis server time). A connection takes a lease on every
//! name its path lists (in name order; on a full one it gives back those it took), renews
//! them every third of `lease_duration` while it is open, and removes them when it ends.
//! A node that dies stops renewing, so its leases lapse within `lease_duration`.
//!
//! A renewal that fails (Redis away, or the lease gone because Redis lost its data) marks
//! the lease no longer held: the connection ends after its current message, and a new one
//! waits for Redis, so the fleet never runs more connections than the limit for longer
//! than one renewal interval.

use super::redis::Redis;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Takes a lease: KEYS[1] the limit, ARGV member, limit, lease ms. Answers 1 or 0.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"#;

/// Renews a lease: KEYS[1] the limit, ARGV member, lease ms. Answers 0 when it lapsed.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) < now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"#;

fn key(name: &str) -> String {
    format!("wasmta:lease:{name}")
}

/// The set of limit keys node `node` has taken leases in (so a restart can give back
/// what the previous run of the same node held: its id is kept with its spool).
fn index(node: &str) -> String {
    format!("wasmta:node-leases:{node}")
}

/// The fleet's connection limits.
pub struct SharedLimits {
    redis: Arc<Redis>,
    take: redis::Script,
    renew: Arc<redis::Script>,
    node: String,
    held: Arc<AtomicI64>,
}

/// Leases on some shared limits; dropping it gives them back.
pub struct SharedLease {
    redis: Arc<Redis>,
    names: Vec<String>,
    member: String,
    held: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    gauge: Arc<AtomicI64>,
}

impl SharedLease {
    /// False once a renewal failed: end the connection.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for SharedLease {
    fn drop(&mut self) {
        self.renewer.abort();
        self.gauge.fetch_sub(self.names.len() as i64, Ordering::Relaxed);
        let (redis, names, member) = (self.redis.clone(), std::mem::take(&mut self.names), self.member.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { release(&redis, &names, &member).await });
        }
    }
}

impl SharedLimits {
    /// Limits in `redis`; `node` tells this node's leases apart (for operators reading Redis).
    pub fn new(redis: Arc<Redis>, node: &str) -> Self {
        SharedLimits {
            redis,
            take: redis::Script::new(TAKE),
            renew: Arc::new(redis::Script::new(RENEW)),
            node: node.to_string(),
            held: crate::metrics::gauge(
                "redis_connection_leases_held",
                "Connection leases this node holds in the shared Redis.",
                &[],
            ),
        }
    }

    /// `fallback_node_count`: while Redis is away, hold 1/N of each limit locally.
    pub fn fallback_node_count(&self) -> Option<u32> {
        self.redis.config.fallback_node_count
    }

    fn lease_ms(&self) -> u64 {
        self.redis.config.lease_duration.as_millis() as u64
    }

    /// Gives back the leases an earlier run of this node held (it was killed, or stopped
    /// before it could remove them): a restarted node need not wait for them to lapse.
    pub async fn reclaim(&self) -> Result<usize, String> {
        let keys: Vec<String> =
            self.redis.query("lease reclaim", redis::cmd("SMEMBERS").arg(index(&self.node))).await?;
        let prefix = format!("{}:", self.node);
        let mut freed = 0;
        for k in keys {
            let members: Vec<String> =
                self.redis.query("lease reclaim", redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1)).await?;
            let mine: Vec<&String> = members.iter().filter(|m| m.starts_with(&prefix)).collect();
            if !mine.is_empty() {
                freed += self.redis.query::<usize>("lease reclaim", redis::cmd("ZREM").arg(&k).arg(mine)).await?;
            }
        }
        let _ = self.redis.query::<i64>("lease reclaim", redis::cmd("DEL").arg(index(&self.node))).await;
        Ok(freed)
    }

    /// Takes a lease on every `(name, limit)`: `Ok(None)` when one is full, `Err` when
    /// Redis did not answer.
    pub async fn try_acquire(&self, wanted: &BTreeMap<String, usize>) -> Result<Option<SharedLease>, String> {
        let member = format!("{}:{}", self.node, uuid::Uuid::new_v4());
        let mut taken: Vec<String> = vec![];
        for (name, limit) in wanted {
            let mut invocation = self.take.key(key(name));
            invocation.arg(&member).arg(*limit).arg(self.lease_ms());
            match self.redis.script::<i64>("lease", invocation).await {
                Ok(1) => taken.push(name.clone()),
                other => {
                    release(&self.redis, &taken, &member).await;
                    return other.map(|_| None);
                }
            }
        }
        if !taken.is_empty() {
            // best effort: without it a lease still lapses by itself
            let mut cmd = redis::cmd("SADD");
            cmd.arg(index(&self.node));
            for name in &taken {
                cmd.arg(key(name));
            }
            let _ = self.redis.query::<i64>("lease index", &cmd).await;
        }
        self.held.fetch_add(taken.len() as i64, Ordering::Relaxed);
        let held = Arc::new(AtomicBool::new(true));
        let renewer =
            tokio::spawn(renew(self.redis.clone(), self.renew.clone(), taken.clone(), member.clone(), held.clone()));
        Ok(Some(SharedLease {
            redis: self.redis.clone(),
            names: taken,
            member,
            held,
            renewer,
            gauge: self.held.clone(),
        }))
    }
}

/// Removes `member`'s leases on `names`. A failure is counted and logged by the Redis
/// layer and costs nothing more: the lease lapses by itself.
async fn release(redis: &Redis, names: &[String], member: &str) {
    for name in names {
        let _ = redis.query::<i64>("lease release", redis::cmd("ZREM").arg(key(name)).arg(member)).await;
    }
}

async fn renew(
    redis: Arc<Redis>,
    script: Arc<redis::Script>,
    names: Vec<String>,
    member: String,
    held: Arc<AtomicBool>,
) {
    let lease = redis.config.lease_duration;
    loop {
        tokio::time::sleep(lease / 3).await;
        for name in &names {
            let mut invocation = script.key(key(name));
            invocation.arg(&member).arg(lease.as_millis() as u64);
            match redis.script::<i64>("lease renewal", invocation).await {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!("redis: connection lease on {name} lapsed; the connection ends after its message");
                    held.store(false, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    held.store(false, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
