//! A plugin's circuit breaker (reliability-tests T-50). After `failures` traps, timeouts
//! or out-of-fuel stops within `window`, the circuit opens: the plugin's events tempfail
//! at once, without entering the guest, for a cooldown. Then one call probes it
//! (half-open): success closes the circuit, failure opens it again for twice as long
//! (at most 10 minutes). Loading the plugin again starts a fresh breaker.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Breaker settings (`kumo.wasm.load` options `circuit_failures`, `circuit_window`,
/// `circuit_cooldown`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: 5, window: Duration::from_secs(60), cooldown: Duration::from_secs(30) }
    }
}

const MAX_COOLDOWN: Duration = Duration::from_secs(600);

#[derive(Default)]
struct State {
    recent: VecDeque<Instant>,
    open_until: Option<Instant>,
    trips: u32,
    probing: bool,
}

/// What the breaker says about a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Open: refuse without calling, for about this long still.
    No(Duration),
}

/// The breaker of one loaded plugin.
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker { config, state: Mutex::new(State::default()) }
    }

    /// Whether a call may enter the plugin now.
    pub fn admit(&self, now: Instant) -> Admit {
        let mut s = self.state.lock();
        match s.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No(until - now),
            Some(_) if s.probing => Admit::No(Duration::ZERO),
            Some(_) => {
                s.probing = true;
                Admit::Yes
            }
        }
    }

    /// The call succeeded.
    pub fn success(&self) {
        let mut s = self.state.lock();
        if s.open_until.is_some() {
            *s = State::default();
        }
    }

    /// The call failed; returns the cooldown when this failure opened the circuit.
    pub fn failure(&self, now: Instant) -> Option<Duration> {
        let mut s = self.state.lock();
        let window = self.config.window;
        s.recent.push_back(now);
        while s.recent.front().is_some_and(|t| now.duration_since(*t) > window) {
            s.recent.pop_front();
        }
        let trip = s.probing || (s.open_until.is_none() && s.recent.len() >= self.config.failures as usize);
        if !trip {
            return None;
        }
        let cooldown = self.config.cooldown.saturating_mul(1 << s.trips.min(10)).min(MAX_COOLDOWN);
        s.trips += 1;
        s.probing = false;
        s.recent.clear();
        s.open_until = Some(now + cooldown);
        Some(cooldown)
    }

    /// Whether the circuit is open (or half-open).
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.state.lock().open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failures: 3, window: Duration::from_secs(10), cooldown: Duration::from_secs(5) })
    }

    #[test]
    fn opens_after_n_failures_in_the_window() {
        let b = breaker();
        let t = Instant::now();
        assert_eq!(b.failure(t), None);
        assert_eq!(b.failure(t + Duration::from_secs(1)), None);
        assert_eq!(b.failure(t + Duration::from_secs(2)), Some(Duration::from_secs(5)));
        assert!(matches!(b.admit(t + Duration::from_secs(3)), Admit::No(_)));
        assert!(b.is_open());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let b = breaker();
        let t = Instant::now();
        b.failure(t);
        b.failure(t + Duration::from_secs(1));
        assert_eq!(b.failure(t + Duration::from_secs(30)), None);
        assert_eq!(b.admit(t + Duration::from_secs(30)), Admit::Yes);
    }

    #[test]
    fn half_open_probe_closes_or_doubles_the_cooldown() {
        let b = breaker();
        let t = Instant::now();
        for i in 0..3 {
            b.failure(t + Duration::from_millis(i));
        }
        let later = t + Duration::from_secs(6);
        assert_eq!(b.admit(later), Admit::Yes, "one probe after the cooldown");
        assert_eq!(b.admit(later), Admit::No(Duration::ZERO), "only one probe at a time");
        assert_eq!(b.failure(later), Some(Duration::from_secs(10)), "a failed probe reopens for twice as long");
        let later = later + Duration::from_secs(11);
        assert_eq!(b.admit(later), Admit::Yes);
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.admit(later), Admit::Yes);
    }
}
