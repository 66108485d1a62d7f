//! Throttles: a GCRA limiter on tokio time (so tests can pause the clock) for the specs
//! `config::throttle` parses; with `configure_redis_throttles`, every spec without
//! `local:` is one GCRA state in Redis instead (see [`super::shared_throttle`]).

use super::redis::Redis;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

pub use crate::config::throttle::ThrottleSpec;

/// Generic cell rate algorithm state for one throttle.
#[derive(Debug)]
pub struct Gcra {
    spec: ThrottleSpec,
    tat: Option<Instant>,
}

impl Gcra {
    /// A fresh limiter.
    pub fn new(spec: ThrottleSpec) -> Self {
        Gcra { spec, tat: None }
    }

    /// Takes one event at `now`; `Err(wait)` when it must wait that long first.
    pub fn acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let t = self.spec.interval();
        let tolerance = t * (self.spec.max_burst.min(u32::MAX as u64) as u32 - 1);
        let tat = self.tat.map_or(now, |tat| tat.max(now));
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        self.tat = Some(tat + t);
        Ok(())
    }
}

/// What [`Throttler::acquire`] returns.
pub type Acquire<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Duration>> + Send + 'a>>;

/// Rate limits by name, shared by everything one server runs (ready queues, scheduled
/// queues, `kumo.make_throttle`, the Wasm `throttle` import). [`Throttles`] keeps them in
/// this process, or in Redis once [`Throttler::share`] is given one.
pub trait Throttler: Send + Sync {
    /// Takes one event from the throttle `name` with `spec`; `Err(wait)` when it must
    /// wait that long first (also while a shared throttle's Redis does not answer).
    fn acquire<'a>(&'a self, name: &'a str, spec: ThrottleSpec) -> Acquire<'a>;
    /// From now on, specs without `local:` are held in `redis` (for the whole fleet).
    fn share(&self, redis: Arc<Redis>);
}

/// Throttles kept in this process (GCRA on tokio time), or in Redis when shared.
#[derive(Default)]
pub struct Throttles {
    map: Mutex<HashMap<String, Gcra>>,
    shared: OnceLock<super::shared_throttle::SharedThrottles>,
}

impl Throttles {
    /// Takes one event from the in-process throttle `name` with `spec` (created on first
    /// use; a changed spec resets it).
    pub fn acquire_local(&self, name: &str, spec: ThrottleSpec) -> Result<(), Duration> {
        let mut map = self.map.lock();
        let g = map.entry(name.to_string()).or_insert_with(|| Gcra::new(spec));
        if g.spec != spec {
            *g = Gcra::new(spec);
        }
        g.acquire(Instant::now())
    }
}

impl Throttler for Throttles {
    fn acquire<'a>(&'a self, name: &'a str, spec: ThrottleSpec) -> Acquire<'a> {
        match self.shared.get().filter(|_| !spec.local) {
            Some(shared) => Box::pin(shared.acquire(self, name, spec)),
            None => Box::pin(std::future::ready(self.acquire_local(name, spec))),
        }
    }

    fn share(&self, redis: Arc<Redis>) {
        if self.shared.set(super::shared_throttle::SharedThrottles::new(redis)).is_err() {
            tracing::warn!("throttles: already shared through Redis");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_the_burst_then_the_rate() {
        let mut g = Gcra::new(ThrottleSpec::parse("10/s,max_burst=2").unwrap());
        assert!(g.acquire(Instant::now()).is_ok());
        assert!(g.acquire(Instant::now()).is_ok());
        let wait = g.acquire(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // over 10 simulated seconds the rate holds at 10/s
        let start = Instant::now();
        let mut granted = 0;
        while Instant::now() - start < Duration::from_secs(10) {
            match g.acquire(Instant::now()) {
                Ok(()) => granted += 1,
                Err(w) => tokio::time::advance(w).await,
            }
        }
        assert!((99..=102).contains(&granted), "{granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_spec_holds_within_five_percent_over_ten_seconds() {
        // (spec, events expected in 10 s: the burst plus the rate)
        let table = [
            ("100/s", 100 + 1000),
            ("6000/min", 6000 + 1000),
            ("local:50/s,max_burst=5", 5 + 500),
            ("360/min,max_burst=10", 10 + 60),
            ("36000/h", 36000 + 100),
            ("1/s", 10),
        ];
        for (spec, expected) in table {
            let throttles = Throttles::default();
            let spec_parsed = ThrottleSpec::parse(spec).unwrap();
            let start = Instant::now();
            let mut granted = 0u32;
            while Instant::now() - start < Duration::from_secs(10) {
                match throttles.acquire("t", spec_parsed).await {
                    Ok(()) => granted += 1,
                    Err(w) => tokio::time::advance(w).await,
                }
            }
            let expected = expected as f64;
            let error = (granted as f64 - expected).abs() / expected;
            assert!(error <= 0.05, "{spec}: {granted} events in 10 s, expected about {expected}");
        }
    }
}
