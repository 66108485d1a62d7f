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

/// Sets a gauge family keyed by one label to exactly `values`: series for label values no
/// longer present (a reaped queue) are dropped rather than left at their last value.
pub fn set_gauge_family(name: &'static str, help: &'static str, label: &str, values: &[(String, i64)]) {
    let mut keep = std::collections::HashSet::with_capacity(values.len());
    for (v, n) in values {
        gauge(name, help, &[(label, v)]).store(*n, Ordering::Relaxed);
        keep.insert(format!("{label}=\"{}\"", escape(v)));
    }
    if let Some(f) = registry().write().get_mut(name) {
        f.series.retain(|k, _| keep.contains(k));
    }
}

/// Histogram bucket bounds (seconds) for latencies.
const BUCKETS: [f64; 12] = [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0];

/// A latency histogram (seconds) with fixed buckets.
pub struct Histogram {
    counts: [std::sync::atomic::AtomicU64; BUCKETS.len() + 1],
    sum_nanos: std::sync::atomic::AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

struct HistogramFamily {
    help: &'static str,
    series: BTreeMap<String, Arc<Histogram>>,
}

fn histograms() -> &'static RwLock<BTreeMap<&'static str, HistogramFamily>> {
    static H: OnceLock<RwLock<BTreeMap<&'static str, HistogramFamily>>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// A histogram.
pub fn histogram(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Arc<Histogram> {
    let key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    let key = key.join(",");
    if let Some(h) = histograms().read().get(name).and_then(|f| f.series.get(&key)) {
        return h.clone();
    }
    let mut r = histograms().write();
    let family = r.entry(name).or_insert_with(|| HistogramFamily { help, series: BTreeMap::new() });
    family
        .series
        .entry(key)
        .or_insert_with(|| {
            Arc::new(Histogram { counts: Default::default(), sum_nanos: std::sync::atomic::AtomicU64::new(0) })
        })
        .clone()
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
    for (name, f) in histograms().read().iter() {
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", f.help);
        for (labels, h) in &f.series {
            let sep = if labels.is_empty() { "" } else { "," };
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
            }
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {cumulative}");
        }
    }
    out
}

/// Every counter and gauge as JSON (`/metrics.json`): name -> value, or name -> {labels -> value}.
pub fn render_json() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, f) in registry().read().iter() {
        let v = if f.series.len() == 1 && f.series.contains_key("") {
            serde_json::Value::from(f.series[""].load(Ordering::Relaxed))
        } else {
            let m: serde_json::Map<String, serde_json::Value> =
                f.series.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.load(Ordering::Relaxed)))).collect();
            serde_json::Value::Object(m)
        };
        out.insert(name.to_string(), v);
    }
    serde_json::Value::Object(out)
}

/// A counter handle kept for the process (hot paths).
#[macro_export]
macro_rules! static_counter {
    ($name:literal, $help:literal) => {{
        static C: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicI64>> = std::sync::OnceLock::new();
        C.get_or_init(|| $crate::metrics::counter($name, $help, &[]))
    }};
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
        let h = histogram("test_latency_seconds", "Latency.", &[("event", "x")]);
        h.observe(std::time::Duration::from_micros(30));
        h.observe(std::time::Duration::from_millis(3));
        let text = render_prometheus();
        assert!(text.contains("test_latency_seconds_bucket{event=\"x\",le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("test_latency_seconds_bucket{event=\"x\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("test_latency_seconds_count{event=\"x\"} 2\n"), "{text}");
        assert!(render_json()["test_level"] == -2);
    }
}
