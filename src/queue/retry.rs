//! Retry arithmetic (pure functions): KumoMTA's exponential backoff
//! `retry_interval × 2^attempts` capped by `max_retry_interval`, its jitter, and the
//! expiry rule.

use std::time::Duration;

/// The delay before the next attempt, after `attempts` earlier attempts.
pub fn delay_for_attempt(retry_interval: Duration, max_retry_interval: Option<Duration>, attempts: u32) -> Duration {
    let base = retry_interval.as_millis();
    let factor = 1u128.checked_shl(attempts.min(100)).unwrap_or(u128::MAX);
    let ms = base.saturating_mul(factor).min(u64::MAX as u128) as u64;
    let delay = Duration::from_millis(ms);
    match max_retry_interval {
        Some(cap) => delay.min(cap),
        None => delay,
    }
}

/// Half the jitter window: ½·min(retry_interval/20, 60 s).
pub fn jitter_half_width(retry_interval: Duration) -> Duration {
    (retry_interval / 20).min(Duration::from_secs(60)) / 2
}

/// `delay` moved by `r` (uniform in [-1, 1]) times the jitter half-width, never negative.
pub fn with_jitter(delay: Duration, retry_interval: Duration, r: f64) -> Duration {
    let w = jitter_half_width(retry_interval).as_secs_f64() * r.clamp(-1.0, 1.0);
    Duration::from_secs_f64((delay.as_secs_f64() + w).max(0.0))
}

/// True when the next attempt would come later than `max_age` after creation.
pub fn would_expire(age: Duration, delay: Duration, max_age: Duration) -> bool {
    age.saturating_add(delay) > max_age
}

/// The Expiration response text.
pub fn expiration_text(age_at_next: Duration, max_age: Duration) -> String {
    format!(
        "Next delivery time would be {} after creation, which exceeds max_age={}",
        humantime::format_duration(Duration::from_secs(age_at_next.as_secs())),
        humantime::format_duration(max_age)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn exponential_backoff_table() {
        let cases: &[(Duration, Option<Duration>, u32, Duration)] = &[
            (20 * MIN, None, 0, 20 * MIN),
            (20 * MIN, None, 1, 40 * MIN),
            (20 * MIN, None, 2, 80 * MIN),
            (20 * MIN, None, 3, 160 * MIN),
            (MIN, None, 0, MIN),
            (MIN, None, 4, 16 * MIN),
            (MIN, Some(10 * MIN), 4, 10 * MIN),
            (MIN, Some(MIN), 7, MIN),
            (20 * MIN, Some(20 * MIN), 3, 20 * MIN),
        ];
        for &(base, cap, attempts, want) in cases {
            assert_eq!(delay_for_attempt(base, cap, attempts), want, "{base:?} {cap:?} {attempts}");
        }
    }

    #[test]
    fn no_overflow_at_large_attempt_counts() {
        let d = delay_for_attempt(20 * MIN, None, 10_000);
        assert!(d > Duration::from_secs(1 << 40));
        assert_eq!(delay_for_attempt(20 * MIN, Some(MIN), u32::MAX), MIN);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        assert_eq!(jitter_half_width(20 * MIN), Duration::from_secs(30));
        assert_eq!(jitter_half_width(Duration::from_secs(20)), Duration::from_millis(500));
        for r in [-1.0, -0.5, 0.0, 0.5, 1.0, 7.0] {
            let d = with_jitter(20 * MIN, 20 * MIN, r);
            assert!(d >= 20 * MIN - Duration::from_secs(30) && d <= 20 * MIN + Duration::from_secs(30), "{d:?}");
        }
        assert_eq!(with_jitter(Duration::ZERO, MIN, -1.0), Duration::ZERO);
    }

    #[test]
    fn expiry_at_max_age() {
        let week = Duration::from_secs(7 * 86400);
        assert!(!would_expire(Duration::from_secs(86400), 20 * MIN, week));
        assert!(would_expire(week - MIN, 20 * MIN, week));
        assert_eq!(
            expiration_text(Duration::from_secs(90), MIN),
            "Next delivery time would be 1m 30s after creation, which exceeds max_age=1m"
        );
    }
}
