//! Per-message scheduling (`msg:set_scheduling{...}`, `msg:import_scheduling_header`), as
//! KumoMTA documents it: `first_attempt` (RFC 3339: not before), `expires` (RFC 3339:
//! replaces the queue's `max_age`), and a delivery window — `dow` (`"Mon,Wed"` or full
//! names), `tz` (an IANA zone), `start` and `end` (`"HH:MM:SS"` local time) — all four
//! together or none. The queues hold a message outside its window until the next start.

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// A delivery window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Days of the week, as given.
    pub dow: String,
    /// IANA time zone name.
    pub tz: String,
    /// Local start time.
    pub start: String,
    /// Local end time.
    pub end: String,
}

/// A message's scheduling constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduling {
    /// Not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<DateTime<Utc>>,
    /// Expire at this time instead of after the queue's `max_age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// Only inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub window: Option<Window>,
}

/// The parameters of `set_scheduling`, as a handler or header gives them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    first_attempt: Option<String>,
    expires: Option<String>,
    dow: Option<String>,
    tz: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

fn weekday(name: &str) -> Result<Weekday, String> {
    let n = name.trim().to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];
    days.iter()
        .find(|(short, _)| n.len() >= 3 && short.starts_with(&n[..3]) && n.starts_with(short))
        .map(|(_, d)| *d)
        .ok_or_else(|| format!("dow: {name:?} is not a day of the week"))
}

impl Window {
    fn days(&self) -> Result<Vec<Weekday>, String> {
        self.dow.split(',').map(weekday).collect()
    }

    fn zone(&self) -> Result<chrono_tz::Tz, String> {
        self.tz.parse().map_err(|_| format!("tz: {:?} is not an IANA time zone", self.tz))
    }

    fn times(&self) -> Result<(NaiveTime, NaiveTime), String> {
        let t = |s: &str, k: &str| {
            NaiveTime::parse_from_str(s, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
                .map_err(|_| format!("{k}: {s:?} is not a time like \"09:00:00\""))
        };
        Ok((t(&self.start, "start")?, t(&self.end, "end")?))
    }

    /// Checks every field.
    fn validate(&self) -> Result<(), String> {
        self.days()?;
        self.zone()?;
        let (start, end) = self.times()?;
        if start >= end {
            return Err(format!("start {} is not before end {}", self.start, self.end));
        }
        Ok(())
    }

    /// `now` if it is inside the window, else the next time the window opens.
    pub fn next_open(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let (Ok(days), Ok(zone), Ok((start, end))) = (self.days(), self.zone(), self.times()) else { return now };
        let local = now.with_timezone(&zone);
        for offset in 0..8 {
            let date = local.date_naive() + chrono::Duration::days(offset);
            if !days.contains(&date.weekday()) {
                continue;
            }
            let Some(opens) = zone.from_local_datetime(&date.and_time(start)).earliest() else { continue };
            let Some(closes) = zone.from_local_datetime(&date.and_time(end)).latest() else { continue };
            if offset == 0 && local >= opens && local < closes {
                return now;
            }
            if opens > local {
                return opens.with_timezone(&Utc);
            }
        }
        now
    }
}

impl Scheduling {
    /// Parses `set_scheduling`'s table (as JSON); errors name the key.
    pub fn parse(value: serde_json::Value) -> Result<Scheduling, String> {
        let p: Params = serde_path_to_error::deserialize(value).map_err(|e| e.to_string())?;
        let time = |s: Option<String>, k: &str| -> Result<Option<DateTime<Utc>>, String> {
            s.map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|e| format!("{k}: {t:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
        };
        let window = match (p.dow, p.tz, p.start, p.end) {
            (None, None, None, None) => None,
            (Some(dow), Some(tz), Some(start), Some(end)) => {
                let w = Window { dow, tz, start, end };
                w.validate()?;
                Some(w)
            }
            _ => return Err("dow, tz, start and end must be given together".into()),
        };
        Ok(Scheduling {
            first_attempt: time(p.first_attempt, "first_attempt")?,
            expires: time(p.expires, "expires")?,
            window,
        })
    }

    /// The earliest time an attempt may start, from `now`.
    pub fn earliest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let from = self.first_attempt.map_or(now, |f| f.max(now));
        match &self.window {
            Some(w) => w.next_open(from),
            None => from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_open_at_the_next_start_in_their_zone() {
        let s = Scheduling::parse(
            json!({"dow": "Mon,Wed", "tz": "America/Phoenix", "start": "09:00:00", "end": "17:00:00"}),
        )
        .unwrap();
        // Tuesday 2026-12-01 20:00 UTC is 13:00 in Phoenix, a Tuesday: next is Wednesday 09:00 (16:00 UTC)
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 20, 0, 0).unwrap();
        assert_eq!(s.earliest(now), Utc.with_ymd_and_hms(2026, 12, 2, 16, 0, 0).unwrap());
        // Wednesday 18:00 UTC = 11:00 local: open now
        let inside = Utc.with_ymd_and_hms(2026, 12, 2, 18, 0, 0).unwrap();
        assert_eq!(s.earliest(inside), inside);
        let later = Scheduling::parse(json!({"first_attempt": "2030-01-01T00:00:00Z"})).unwrap();
        assert_eq!(later.earliest(now), Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        for bad in [
            json!({"dow": "Mon"}),
            json!({"dow": "Funday", "tz": "UTC", "start": "09:00:00", "end": "10:00:00"}),
            json!({"dow": "Mon", "tz": "Mars/Base", "start": "09:00:00", "end": "10:00:00"}),
            json!({"expires": "tomorrow"}),
            json!({"frist_attempt": "2030-01-01T00:00:00Z"}),
        ] {
            assert!(Scheduling::parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
