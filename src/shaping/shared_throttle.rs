//! Throttles held in Redis, so every node configured alike takes from one budget: each
//! throttle is one GCRA state (the theoretical arrival time, in microseconds of the Redis
//! server's clock) that a server-side script reads and advances atomically. A node's
//! clock plays no part, so skewed nodes still share the rate exactly.
//!
//! Redis unreachable: a shared throttle answers "wait a second" (its callers wait and
//! ask again; nothing goes unthrottled) or, with `fallback_node_count = N`, holds the
//! rate locally at 1/N meanwhile.

use super::redis::Redis;
use super::throttle::{ThrottleSpec, Throttles};
use std::sync::Arc;
use std::time::Duration;

/// The GCRA step: KEYS[1] the state, ARGV interval and tolerance in microseconds;
/// answers the wait in microseconds (0: taken).
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return math.floor(ahead - tolerance) end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return 0
"#;

/// How long a caller waits before asking an unreachable Redis again.
const RETRY: Duration = Duration::from_secs(1);

/// The shared side of [`Throttles`].
pub struct SharedThrottles {
    redis: Arc<Redis>,
    script: redis::Script,
}

/// The spec a node holds alone while Redis is away: 1/`nodes` of the rate and burst.
pub fn divided(spec: ThrottleSpec, nodes: u32) -> ThrottleSpec {
    let n = u64::from(nodes.max(1));
    ThrottleSpec { limit: (spec.limit / n).max(1), max_burst: (spec.max_burst / n).max(1), local: true, ..spec }
}

impl SharedThrottles {
    pub fn new(redis: Arc<Redis>) -> Self {
        SharedThrottles { redis, script: redis::Script::new(GCRA) }
    }

    /// Takes one event from throttle `name` in Redis (`local` holds the fallback).
    pub async fn acquire(&self, local: &Throttles, name: &str, spec: ThrottleSpec) -> Result<(), Duration> {
        let interval = spec.interval().as_micros().max(1) as u64;
        let tolerance = interval * (spec.max_burst.max(1) - 1);
        // the spec is part of the key: a changed spec starts afresh, as in process
        let key = format!("wasmta:throttle:{name}:{spec}");
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(tolerance);
        match self.redis.script::<u64>("throttle", invocation).await {
            Ok(0) => Ok(()),
            Ok(wait) => Err(Duration::from_micros(wait)),
            Err(_) => match self.redis.config.fallback_node_count {
                Some(n) => local.acquire_local(&format!("fallback:{name}"), divided(spec, n)),
                None => Err(RETRY),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_share_never_reaches_zero() {
        let s = ThrottleSpec::parse("50/s,max_burst=10").unwrap();
        let d = divided(s, 2);
        assert_eq!((d.limit, d.max_burst, d.local), (25, 5, true));
        let d = divided(ThrottleSpec::parse("1/min").unwrap(), 4);
        assert_eq!((d.limit, d.max_burst), (1, 1));
    }
}
