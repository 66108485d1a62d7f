//! Process metrics: named counters and gauges with labels, registered on first use and
//! rendered as Prometheus text (`GET /metrics`). Callers keep the returned handle, so the
//! hot path is one atomic add.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

/// Whether a metric only grows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

struct Family {
    kind: Kind,
    help: &'static str,
    series: BTreeMap<String, Arc<AtomicI64>>,
}

fn registry() -> &'static RwLock<BTreeMap<&'static str, Family>> {
    static R: OnceLock<RwLock<BTreeMap<&'static str, Family>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn series(name: &'static str, kind: Kind, help: &'static str, labels: &[(&str, &str)]) -> Arc<AtomicI64> {
    let key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let key = key.join(",");
    if let Some(s) = registry().read().get(name).and_then(|f| f.series.get(&key)) {
        return s.clone();
    }
    let mut r = registry().write();
    let family = r.entry(name).or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
    family.series.entry(key).or_default().clone()
}

/// A counter.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Arc<AtomicI64> {
    series(name, Kind::Counter, help, labels)
}

/// A gauge.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Arc<AtomicI64> {
    series(name, Kind::Gauge, help, labels)
}

/// The value of one series, if registered (tests and the CLI read them).
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<i64> {
    let key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    registry().read().get(name)?.series.get(&key.join(",")).map(|s| s.load(Ordering::Relaxed))
}

/// Every metric in the Prometheus text exposition format.
pub fn render_prometheus() -> String {
    let mut out = String::new();
    for (name, f) in registry().read().iter() {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", f.help);
        for (labels, v) in &f.series {
            let v = v.load(Ordering::Relaxed);
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = counter("test_things_total", "Things.", &[("plugin", "a\"b")]);
        c.fetch_add(3, Ordering::Relaxed);
        gauge("test_level", "Level.", &[]).store(-2, Ordering::Relaxed);
        let text = render_prometheus();
        assert!(text.contains("# TYPE test_things_total counter\ntest_things_total{plugin=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE test_level gauge\ntest_level -2\n"), "{text}");
        assert_eq!(value("test_things_total", &[("plugin", "a\"b")]), Some(3));
    }
}
