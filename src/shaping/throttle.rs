//! Throttles: KumoMTA's spec grammar (`[local:]N/period[,max_burst=B]`) and a GCRA
//! limiter on tokio time (so tests can pause the clock).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// A parsed throttle spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleSpec {
    /// Events per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// Events allowed at once (defaults to `limit`).
    pub max_burst: u64,
    /// `local:` prefix: never shared across nodes.
    pub local: bool,
}

impl ThrottleSpec {
    /// Parses `"100/s"`, `"10/min"`, `"1,000/hour"`, `"local:5/s,max_burst=1"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid throttle {text:?}: expected N/period like \"100/s\"");
        let (local, rest) = match text.trim().strip_prefix("local:") {
            Some(r) => (true, r),
            None => (false, text.trim()),
        };
        let (rate, burst) = match rest.split_once(",max_burst=") {
            Some((r, b)) => (r, Some(b.replace(['_', ','], "").trim().parse::<u64>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let (qty, period) = rate.split_once('/').ok_or_else(bad)?;
        let limit: u64 = qty.replace(['_', ','], "").trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hr" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            _ => return Err(bad()),
        };
        if limit == 0 {
            return Err(format!("invalid throttle {text:?}: the limit must be positive"));
        }
        Ok(ThrottleSpec { limit, period, max_burst: burst.unwrap_or(limit).max(1), local })
    }

    fn interval(&self) -> Duration {
        self.period / self.limit.min(u32::MAX as u64) as u32
    }
}

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

/// The named throttles policy code uses (`kumo.make_throttle`, the Wasm `throttle`
/// import), shared by every engine of the process.
pub fn policy_throttles() -> &'static Throttles {
    static T: std::sync::OnceLock<Throttles> = std::sync::OnceLock::new();
    T.get_or_init(Throttles::default)
}

/// Named throttles shared by every ready queue of this process.
#[derive(Default)]
pub struct Throttles {
    map: Mutex<HashMap<String, Gcra>>,
}

impl Throttles {
    /// Takes one event from the throttle `name` with `spec` (created on first use; a
    /// changed spec resets it).
    pub fn acquire(&self, name: &str, spec: ThrottleSpec) -> Result<(), Duration> {
        let mut map = self.map.lock();
        let g = map.entry(name.to_string()).or_insert_with(|| Gcra::new(spec));
        if g.spec != spec {
            *g = Gcra::new(spec);
        }
        g.acquire(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kumomta_specs() {
        let s = ThrottleSpec::parse("100/s").unwrap();
        assert_eq!((s.limit, s.period, s.max_burst, s.local), (100, Duration::from_secs(1), 100, false));
        let s = ThrottleSpec::parse("local:1,000/hour,max_burst=10").unwrap();
        assert_eq!((s.limit, s.period, s.max_burst, s.local), (1000, Duration::from_secs(3600), 10, true));
        assert_eq!(ThrottleSpec::parse("10/min").unwrap().period, Duration::from_secs(60));
        assert_eq!(ThrottleSpec::parse("5/d").unwrap().period, Duration::from_secs(86400));
        for bad in ["", "100", "x/s", "10/fortnight", "0/s"] {
            assert!(ThrottleSpec::parse(bad).is_err(), "{bad}");
        }
    }

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
                match throttles.acquire("t", spec_parsed) {
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
