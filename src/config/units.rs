//! Durations and sizes in the forms KumoMTA configs write them (`'1 minute'`, `'20m'`,
//! `'7 days'`, `'20 MB'`, plain numbers), with serde adapters for config structs.

use serde::{Deserialize, Deserializer, Serializer, de};
use std::time::Duration;

/// Parses a duration: a number of seconds, or a humantime string such as `"5 seconds"`,
/// `"20m"`, `"1 week"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return duration_from_secs(secs);
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn duration_from_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("invalid duration {secs}: must be a non-negative number of seconds"))
    }
}

/// Formats a duration the way humantime prints it (`"1m"`, `"7days"`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Formats time left for people to read: whole seconds, rounded up (`"4m 59s"`), never
/// nanoseconds.
pub fn format_remaining(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Parses a size: a number of bytes, or a string like `"20 MB"`, `"128 KB"`, `"1,000"`.
/// Units are binary multiples (KB = 1024), as KumoMTA's defaults are.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let cleaned: String = text.chars().filter(|c| *c != ',' && *c != '_').collect();
    let t = cleaned.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid size {text:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    Ok((value * mult as f64) as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Int(u64),
    Float(f64),
    Text(String),
}

/// serde adapter for `Duration` fields.
pub mod duration {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Int(n) => Ok(Duration::from_secs(n)),
            NumOrText::Float(f) => duration_from_secs(f).map_err(de::Error::custom),
            NumOrText::Text(t) => parse_duration(&t).map_err(de::Error::custom),
        }
    }
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
}

/// serde adapter for `Option<Duration>` fields.
pub mod opt_duration {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<NumOrText>::deserialize(d)?
            .map(|v| match v {
                NumOrText::Int(n) => Ok(Duration::from_secs(n)),
                NumOrText::Float(f) => duration_from_secs(f).map_err(de::Error::custom),
                NumOrText::Text(t) => parse_duration(&t).map_err(de::Error::custom),
            })
            .transpose()
    }
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

/// serde adapter for byte sizes.
pub mod size {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Int(n) => Ok(n),
            NumOrText::Float(f) if f >= 0.0 => Ok(f as u64),
            NumOrText::Float(f) => Err(de::Error::custom(format!("invalid size {f}"))),
            NumOrText::Text(t) => parse_size(&t).map_err(de::Error::custom),
        }
    }
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
}

/// serde adapter for lists of strings that also accepts a single string and an empty
/// table (an empty Lua table arrives as an empty map).
pub mod string_list {
    use super::*;
    use serde::Serialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
        Empty(std::collections::BTreeMap<String, serde_json::Value>),
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Form::deserialize(d) {
            Ok(Form::List(v)) => Ok(v),
            Ok(Form::One(s)) => Ok(vec![s]),
            Ok(Form::Empty(m)) if m.is_empty() => Ok(vec![]),
            _ => Err(de::Error::custom("expected a list of strings")),
        }
    }
    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_kumomta_forms() {
        let cases = [
            ("1 minute", 60),
            ("20m", 1200),
            ("5 seconds", 5),
            ("7 days", 604_800),
            ("1 week", 604_800),
            ("60s", 60),
            ("30", 30),
            ("1h", 3600),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(secs), "{text}");
        }
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn sizes_in_kumomta_forms() {
        assert_eq!(parse_size("20 MB").unwrap(), 20 * 1024 * 1024);
        assert_eq!(parse_size("128 KB").unwrap(), 128 * 1024);
        assert_eq!(parse_size("1,000").unwrap(), 1000);
        assert_eq!(parse_size("1_000").unwrap(), 1000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
    }
}
