//! `kumo.configure_redis_throttles{...}`: the Redis server or cluster several nodes share
//! their throttles, connection limits and automation rules through. KumoMTA's keys
//! (`node`, `cluster`, `username`, `password`, `pool_size`, `connect_timeout`,
//! `read_from_replicas`) plus wasmta's: `response_timeout`, `lease_duration` (how long a
//! dead node's connection leases outlive it) and `fallback_node_count` (while Redis is
//! unreachable, shared limits become local limits divided by this many nodes; off unless
//! set).

use super::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One URL or a list of cluster nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Nodes {
    One(String),
    Many(Vec<String>),
}

impl Nodes {
    /// The URLs.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Nodes::One(u) => vec![u.clone()],
            Nodes::Many(list) => list.clone(),
        }
    }
}

/// `configure_redis_throttles` options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisThrottlesConfig {
    /// `redis://host:port` (or `rediss://`), or a list of cluster nodes.
    pub node: Nodes,
    /// Cluster mode; by default on when `node` lists more than one URL.
    #[serde(default)]
    pub cluster: Option<bool>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Connections kept open (requests are multiplexed over each).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_connect_timeout", with = "units::duration")]
    pub connect_timeout: Duration,
    /// Cluster reads may go to replicas (the scripts always run on the masters).
    #[serde(default)]
    pub read_from_replicas: bool,
    /// The longest wait for one answer; past it Redis counts as unreachable.
    #[serde(default = "default_response_timeout", with = "units::duration")]
    pub response_timeout: Duration,
    /// How long a connection lease lasts unless renewed (renewed every third of it).
    #[serde(default = "default_lease_duration", with = "units::duration")]
    pub lease_duration: Duration,
    /// While Redis is unreachable: shared limits held locally at 1/N (unset: wait).
    #[serde(default)]
    pub fallback_node_count: Option<u32>,
}

fn default_pool_size() -> usize {
    10
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(30)
}

impl RedisThrottlesConfig {
    /// Checks what serde cannot: URLs, sizes, durations; errors name the key.
    pub fn check(&self) -> Result<(), String> {
        let urls = self.node.urls();
        if urls.is_empty() {
            return Err("node: no Redis node given".into());
        }
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(format!("node: {u:?} is not a redis:// or rediss:// URL"));
            }
            if redis::parse_redis_url(u).is_none() {
                return Err(format!("node: {u:?} is not a valid Redis URL"));
            }
        }
        if self.cluster == Some(false) && urls.len() > 1 {
            return Err("cluster: false with several nodes; give one node or set cluster = true".into());
        }
        if self.pool_size == 0 {
            return Err("pool_size: must be at least 1".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err("lease_duration: must be at least 1s".into());
        }
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err("connect_timeout/response_timeout: must be more than 0".into());
        }
        if self.fallback_node_count == Some(0) {
            return Err("fallback_node_count: must be at least 1".into());
        }
        Ok(())
    }

    /// Whether to speak the cluster protocol.
    pub fn is_cluster(&self) -> bool {
        self.cluster.unwrap_or(matches!(&self.node, Nodes::Many(l) if l.len() > 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<RedisThrottlesConfig, String> {
        let c: RedisThrottlesConfig = crate::config::decode(v)?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn kumomtas_keys_and_mistakes() {
        let c = parse(json!({"node": "redis://127.0.0.1:6379"})).unwrap();
        assert!(!c.is_cluster());
        assert_eq!((c.pool_size, c.lease_duration), (10, Duration::from_secs(30)));
        let c =
            parse(json!({"node": ["redis://a:1", "redis://b:2"], "connect_timeout": "2s", "read_from_replicas": true}))
                .unwrap();
        assert!(c.is_cluster());
        for (bad, key) in [
            (json!({"node": "http://x:1"}), "node"),
            (json!({"node": []}), "node"),
            (json!({"node": "redis://x:1", "pool_size": 0}), "pool_size"),
            (json!({"node": "redis://x:1", "pool_sise": 3}), "pool_sise"),
            (json!({"node": "redis://x:1", "lease_duration": "10ms"}), "lease_duration"),
            (json!({"node": ["redis://a:1", "redis://b:2"], "cluster": false}), "cluster"),
            (json!({"node": "redis://x:1", "fallback_node_count": 0}), "fallback_node_count"),
            (json!({"nodes": "redis://x:1"}), "nodes"),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
