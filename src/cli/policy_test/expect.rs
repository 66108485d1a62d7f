//! A case's `[case.expect]`: its keys checked, compared with what was observed (every
//! stated field must hold; text under `contains` is a substring), and, for `--record`,
//! the observed outcome written back with only what differs from the defaults.

use serde_json::{Map, Value};

/// The keys an expectation may have, and those of `reject`.
const EXPECT_KEYS: &[&str] = &["accept", "reject", "error", "meta", "headers", "queue_config", "egress_path"];
const REJECT_KEYS: &[&str] = &["code", "enhanced_code", "contains"];

/// An unknown key in `expect` (or its `reject`) is a mistake to name, not a silent pass.
pub fn check_keys(expect: &Map<String, Value>) -> Result<(), String> {
    if let Some(k) = expect.keys().find(|k| !EXPECT_KEYS.contains(&k.as_str())) {
        return Err(format!("expect.{k}: unknown key; the keys are {}", EXPECT_KEYS.join(", ")));
    }
    if let Some(Value::Object(r)) = expect.get("reject")
        && let Some(k) = r.keys().find(|k| !REJECT_KEYS.contains(&k.as_str()))
    {
        return Err(format!("expect.reject.{k}: unknown key; the keys are {}", REJECT_KEYS.join(", ")));
    }
    Ok(())
}

/// Where `observed` differs from `expected`.
fn differences(path: &str, expected: &Value, observed: &Value, out: &mut Vec<String>) {
    match (expected, observed) {
        (Value::Object(e), Value::Object(o)) => {
            for (k, ev) in e {
                let ov = o.get(k).unwrap_or(&Value::Null);
                if k == "contains" {
                    let (Some(want), Some(got)) = (ev.as_str(), ov.as_str()) else {
                        out.push(format!("{path}.contains: expected {ev}, got {ov}"));
                        continue;
                    };
                    if !got.contains(want) {
                        out.push(format!("{path}: expected text containing {want:?}, got {got:?}"));
                    }
                    continue;
                }
                differences(&format!("{path}.{k}"), ev, ov, out);
            }
        }
        (Value::Array(e), Value::Array(o)) if e.len() == o.len() => {
            for (i, (ev, ov)) in e.iter().zip(o).enumerate() {
                differences(&format!("{path}[{i}]"), ev, ov, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (e, o) if e == o => {}
        (e, o) => out.push(format!("{path}: expected {e}, got {o}")),
    }
}

/// The outcome in words: `accept`, `reject 550 5.7.1 "text"`, or the handler's error.
fn outcome(observed: &Map<String, Value>) -> String {
    if let Some(r) = observed.get("reject") {
        let part = |k: &str| r.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()));
        let mut s = format!("reject {}", part("code").unwrap_or_default());
        if let Some(e) = part("enhanced_code").filter(|e| e != "null") {
            s.push(' ');
            s.push_str(&e);
        }
        return format!("{s} {:?}", part("contains").unwrap_or_default());
    }
    if let Some(e) = observed.get("error") {
        return format!("the handler failed: {}", e.as_str().unwrap_or_default());
    }
    "accept".into()
}

/// The differences between the case's expectation and what was observed.
pub fn check(expect: &Map<String, Value>, observed: &Map<String, Value>) -> Vec<String> {
    if expect.is_empty() {
        return vec!["no [case.expect]: nothing to check (run with --record to write one)".into()];
    }
    let wanted = ["reject", "error", "accept"].into_iter().find(|k| expect.contains_key(*k));
    let got = ["reject", "error", "accept"].into_iter().find(|k| observed.contains_key(*k));
    // a handler that failed fails every case that did not expect exactly that
    if got == Some("error") && wanted != Some("error") {
        return vec![outcome(observed)];
    }
    if let Some(w) = wanted
        && Some(w) != got
    {
        return vec![format!("expected {w}, got {}", outcome(observed))];
    }
    let mut out = vec![];
    differences("expect", &Value::Object(expect.clone()), &Value::Object(observed.clone()), &mut out);
    out
}

/// The value without nulls (TOML has none: an absent field means the same).
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k, without_nulls(x))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().filter(|x| !x.is_null()).map(without_nulls).collect()),
        other => other,
    }
}

/// Only the fields of `config` that differ from `default`.
fn changed(config: &Value, default: &Value) -> Value {
    match (config, default) {
        (Value::Object(c), Value::Object(d)) => Value::Object(
            c.iter().filter(|(k, v)| d.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        _ => config.clone(),
    }
}

/// What `--record` writes as a case's `expect`: the outcome first, then what changed (meta
/// and headers when any; configuration fields that differ from the defaults).
pub fn recorded(observed: &Map<String, Value>) -> Value {
    let defaults = [
        ("queue_config", serde_json::to_value(crate::config::queue::QueueConfig::default()).unwrap_or_default()),
        ("egress_path", serde_json::to_value(crate::config::egress::EgressPathConfig::default()).unwrap_or_default()),
    ];
    const OUTCOMES: [&str; 3] = ["accept", "reject", "error"];
    let mut out = Map::new();
    for key in OUTCOMES {
        if let Some(v) = observed.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for (key, v) in observed.iter().filter(|(k, _)| !OUTCOMES.contains(&k.as_str())) {
        let v = match defaults.iter().find(|(k, _)| k == key) {
            Some((_, default)) => changed(v, default),
            None => v.clone(),
        };
        if v.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        out.insert(key.clone(), v);
    }
    without_nulls(Value::Object(out))
}
