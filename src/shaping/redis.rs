//! The Redis connection (one server or a cluster) that `configure_redis_throttles`
//! names, shared by the fleet's throttles, connection leases and automation rules. Every
//! request has a deadline (`response_timeout`): a Redis that is down or stalled makes the
//! callers wait and retry, never the whole server. Requests are timed into
//! `redis_latency_seconds`; failures count into `redis_errors_total` and are logged at
//! most every 10 s.

use crate::config::redis::RedisThrottlesConfig;
use crate::metrics::Histogram;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, ScriptInvocation, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One connection of the pool.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How connections are made.
enum Maker {
    /// Reconnecting managers, made at once and connected on first use.
    Single(Vec<Conn>),
    /// Cluster connections, made on first use (and again after a failed attempt).
    Cluster { client: Box<redis::cluster::ClusterClient>, made: tokio::sync::Mutex<Vec<Conn>> },
}

/// The shared Redis.
pub struct Redis {
    maker: Maker,
    next: AtomicUsize,
    pub config: RedisThrottlesConfig,
    latency: Arc<Histogram>,
    errors: Arc<AtomicI64>,
    last_logged: Mutex<Option<Instant>>,
    /// Set while requests fail, so the first success after says Redis is back.
    failing: std::sync::atomic::AtomicBool,
}

impl Redis {
    /// Opens (lazily: nothing connects until the first request) the configured Redis.
    /// Must run inside the tokio runtime.
    pub fn open(config: &RedisThrottlesConfig) -> Result<Arc<Redis>, String> {
        config.check()?;
        let fail = |e: redis::RedisError| format!("configure_redis_throttles: {e}");
        let urls = config.node.urls();
        let maker = if config.is_cluster() {
            let mut b = redis::cluster::ClusterClient::builder(urls)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout);
            if let Some(u) = &config.username {
                b = b.username(u);
            }
            if let Some(p) = &config.password {
                b = b.password(p);
            }
            if config.read_from_replicas {
                b = b.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
            }
            Maker::Cluster { client: Box::new(b.build().map_err(fail)?), made: Default::default() }
        } else {
            let mut info = redis::IntoConnectionInfo::into_connection_info(urls[0].as_str()).map_err(fail)?;
            let mut settings = info.redis_settings().clone();
            if let Some(u) = &config.username {
                settings = settings.set_username(u);
            }
            if let Some(p) = &config.password {
                settings = settings.set_password(p);
            }
            info = info.set_redis_settings(settings);
            let client = redis::Client::open(info).map_err(fail)?;
            let manager = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let mut conns = vec![];
            for _ in 0..config.pool_size {
                let m = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()).map_err(fail)?;
                conns.push(Conn::Single(m));
            }
            Maker::Single(conns)
        };
        Ok(Arc::new(Redis {
            maker,
            next: AtomicUsize::new(0),
            config: config.clone(),
            latency: crate::metrics::histogram(
                "redis_latency_seconds",
                "Round trips to the shared Redis (throttles, leases, automation rules).",
                &[],
            ),
            errors: crate::metrics::counter(
                "redis_errors_total",
                "Requests to the shared Redis that failed or timed out.",
                &[],
            ),
            last_logged: Mutex::new(None),
            failing: Default::default(),
        }))
    }

    async fn conn(&self) -> Result<Conn, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.maker {
            Maker::Single(conns) => Ok(conns[i % conns.len()].clone()),
            Maker::Cluster { client, made } => {
                let mut made = made.lock().await;
                if made.is_empty() {
                    for _ in 0..self.config.pool_size {
                        let c = client.get_async_connection().await.map_err(|e| e.to_string())?;
                        made.push(Conn::Cluster(c));
                    }
                }
                Ok(made[i % made.len()].clone())
            }
        }
    }

    /// Runs `invocation` within the deadline.
    pub async fn script<T: FromRedisValue>(&self, what: &str, invocation: ScriptInvocation<'_>) -> Result<T, String> {
        self.timed(what, async {
            let mut conn = self.conn().await?;
            invocation.invoke_async::<T>(&mut conn).await.map_err(|e| e.to_string())
        })
        .await
    }

    /// Runs `cmd` within the deadline.
    pub async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, String> {
        self.timed(what, async {
            let mut conn = self.conn().await?;
            cmd.query_async::<T>(&mut conn).await.map_err(|e| e.to_string())
        })
        .await
    }

    /// One request with its deadline, timed and, when it fails, counted and said.
    async fn timed<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let deadline = self.config.response_timeout + self.config.connect_timeout;
        let result = tokio::time::timeout(deadline, request)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")));
        self.finish(what, started, result)
    }

    fn finish<T>(&self, what: &str, started: Instant, result: Result<T, String>) -> Result<T, String> {
        self.latency.observe(started.elapsed());
        if result.is_ok() && self.failing.swap(false, Ordering::Relaxed) {
            tracing::warn!("redis ({}): answering again; shared limits resume", self.config.node.urls().join(","));
        }
        if let Err(e) = &result {
            self.failing.store(true, Ordering::Relaxed);
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut last = self.last_logged.lock();
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::error!(
                    "redis ({}): requests fail (this one: {what}): {e}; shared limits wait until Redis answers{}",
                    self.config.node.urls().join(","),
                    match self.config.fallback_node_count {
                        Some(n) => format!(" (meanwhile local limits at 1/{n})"),
                        None => String::new(),
                    }
                );
            }
        }
        result
    }
}
