//! Throttle specs as KumoMTA writes them (`[local:]N/period[,max_burst=B]`), parsed when
//! a configuration is read so a typo (`"banana"`, `"100/fortnight"`) is an error naming
//! the key, never a path that silently sends unthrottled.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::time::Duration;

/// A parsed throttle spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        let bad = || format!("invalid throttle {text:?}: expected N/period like \"100/s\" (periods s, m, h, d)");
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

    /// Time between events at the steady rate.
    pub fn interval(&self) -> Duration {
        self.period / self.limit.min(u32::MAX as u64) as u32
    }
}

impl std::fmt::Display for ThrottleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}{}/{period}", if self.local { "local:" } else { "" }, self.limit)?;
        if self.max_burst != self.limit {
            write!(f, ",max_burst={}", self.max_burst)?;
        }
        Ok(())
    }
}

impl Serialize for ThrottleSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ThrottleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => ThrottleSpec::parse(&s).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!("expected a throttle like \"100/s\", got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kumomta_specs_and_round_trips() {
        let s = ThrottleSpec::parse("100/s").unwrap();
        assert_eq!((s.limit, s.period, s.max_burst, s.local), (100, Duration::from_secs(1), 100, false));
        let s = ThrottleSpec::parse("local:1,000/hour,max_burst=10").unwrap();
        assert_eq!((s.limit, s.period, s.max_burst, s.local), (1000, Duration::from_secs(3600), 10, true));
        assert_eq!(ThrottleSpec::parse("10/min").unwrap().period, Duration::from_secs(60));
        assert_eq!(ThrottleSpec::parse("5/d").unwrap().period, Duration::from_secs(86400));
        for bad in ["", "100", "x/s", "10/fortnight", "0/s", "banana", "100/fortnight"] {
            assert!(ThrottleSpec::parse(bad).is_err(), "{bad}");
        }
        for text in ["100/s", "local:1000/h,max_burst=10", "5/d", "7/min"] {
            let s = ThrottleSpec::parse(text).unwrap();
            assert_eq!(ThrottleSpec::parse(&s.to_string()).unwrap(), s, "{text}");
        }
        let err = crate::config::decode::<Option<ThrottleSpec>>(serde_json::json!("banana")).unwrap_err();
        assert!(err.contains("banana"), "{err}");
    }
}
