//! Process metrics: named counters and gauges with labels, registered on first use and
//! rendered as Prometheus text (`GET /metrics`) and as KumoMTA's `/metrics.json`. Callers
//! keep the returned handle, so the hot path is one atomic add. `core` names the metrics
//! every deployment has from its first second.

pub mod core;

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

/// One series: its labels and value.
struct Series {
    labels: Vec<(String, String)>,
    value: Arc<AtomicI64>,
}

struct Family {
    kind: Kind,
    help: &'static str,
    series: BTreeMap<String, Series>,
}

fn registry() -> &'static RwLock<BTreeMap<&'static str, Family>> {
    static R: OnceLock<RwLock<BTreeMap<&'static str, Family>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_key(labels: &[(&str, &str)]) -> String {
    let key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    key.join(",")
}

fn series(name: &'static str, kind: Kind, help: &'static str, labels: &[(&str, &str)]) -> Arc<AtomicI64> {
    let key = label_key(labels);
    if let Some(s) = registry().read().get(name).and_then(|f| f.series.get(&key)) {
        return s.value.clone();
    }
    let mut r = registry().write();
    let family = r.entry(name).or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    family.series.entry(key).or_insert_with(|| Series { labels, value: Arc::default() }).value.clone()
}

/// Registers a family with no series yet (a labelled gauge before its first label value),
/// so it is listed from the start.
pub fn family(name: &'static str, kind: Kind, help: &'static str) {
    registry().write().entry(name).or_insert_with(|| Family { kind, help, series: BTreeMap::new() });
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
    family(name, Kind::Gauge, help);
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

/// A series' labels as (name, value) pairs.
type Labels = Vec<(String, String)>;

struct HistogramFamily {
    help: &'static str,
    series: BTreeMap<String, (Labels, Arc<Histogram>)>,
}

fn histograms() -> &'static RwLock<BTreeMap<&'static str, HistogramFamily>> {
    static H: OnceLock<RwLock<BTreeMap<&'static str, HistogramFamily>>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// A histogram.
pub fn histogram(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Arc<Histogram> {
    let key = label_key(labels);
    if let Some((_, h)) = histograms().read().get(name).and_then(|f| f.series.get(&key)) {
        return h.clone();
    }
    let mut r = histograms().write();
    let family = r.entry(name).or_insert_with(|| HistogramFamily { help, series: BTreeMap::new() });
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let fresh = || Arc::new(Histogram { counts: Default::default(), sum_nanos: std::sync::atomic::AtomicU64::new(0) });
    family.series.entry(key).or_insert_with(|| (labels, fresh())).1.clone()
}

/// The value of one series, if registered (tests and the CLI read them).
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<i64> {
    registry().read().get(name)?.series.get(&label_key(labels)).map(|s| s.value.load(Ordering::Relaxed))
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
        for (labels, s) in &f.series {
            let v = s.value.load(Ordering::Relaxed);
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
    for (name, f) in histograms().read().iter() {
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", f.help);
        for (labels, (_, h)) in &f.series {
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

/// A family's values in KumoMTA's `/metrics.json` shape: a number without labels,
/// `{label: {value: n}}` with one label, `[{l1: v1, l2: v2, "@": n}]` with more, `null`
/// before the first series.
fn json_value<'a>(series: impl Iterator<Item = (&'a [(String, String)], serde_json::Value)>) -> serde_json::Value {
    use serde_json::{Map, Value};
    let series: Vec<_> = series.collect();
    match series.first() {
        None => Value::Null,
        Some(([], v)) => v.clone(),
        Some((labels, _)) if labels.len() == 1 && series.iter().all(|(l, _)| l.len() == 1 && l[0].0 == labels[0].0) => {
            let by_value: Map<String, Value> = series.iter().map(|(l, v)| (l[0].1.clone(), v.clone())).collect();
            let mut outer = Map::new();
            outer.insert(labels[0].0.clone(), Value::Object(by_value));
            Value::Object(outer)
        }
        Some(_) => Value::Array(
            series
                .into_iter()
                .map(|(labels, v)| {
                    let mut m: Map<String, Value> =
                        labels.iter().map(|(k, lv)| (k.clone(), Value::String(lv.clone()))).collect();
                    m.insert("@".into(), v);
                    Value::Object(m)
                })
                .collect(),
        ),
    }
}

/// Every metric as JSON (`/metrics.json`), as KumoMTA writes it:
/// `{name: {"help": ..., "type": "counter"|"gauge"|"histogram", "value": ...}}`.
pub fn render_json() -> serde_json::Value {
    use serde_json::{Value, json};
    let mut out = serde_json::Map::new();
    for (name, f) in registry().read().iter() {
        let kind = if f.kind == Kind::Counter { "counter" } else { "gauge" };
        let value =
            json_value(f.series.values().map(|s| (s.labels.as_slice(), Value::from(s.value.load(Ordering::Relaxed)))));
        out.insert(name.to_string(), json!({ "help": f.help, "type": kind, "value": value }));
    }
    for (name, f) in histograms().read().iter() {
        let rendered: Vec<(Vec<(String, String)>, Value)> = f
            .series
            .values()
            .map(|(labels, h)| {
                let mut cumulative = 0;
                let bucket: Vec<Value> = h
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cumulative += c.load(Ordering::Relaxed);
                        let bound = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                        json!([if bound.is_finite() { json!(bound) } else { json!("+Inf") }, cumulative])
                    })
                    .collect();
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let avg = if cumulative == 0 { 0.0 } else { sum / cumulative as f64 };
                (labels.clone(), json!({ "count": cumulative, "sum": sum, "avg": avg, "bucket": bucket }))
            })
            .collect();
        let value = json_value(rendered.iter().map(|(l, v)| (l.as_slice(), v.clone())));
        out.insert(name.to_string(), json!({ "help": f.help, "type": "histogram", "value": value }));
    }
    Value::Object(out)
}

/// Every series of a counter or gauge in a `/metrics.json` document, with its labels (the
/// CLI reads the server's metrics through this).
pub fn json_lookup(doc: &serde_json::Value, name: &str) -> Vec<(Vec<(String, String)>, i64)> {
    use serde_json::Value;
    match &doc[name]["value"] {
        Value::Number(n) => vec![(vec![], n.as_i64().unwrap_or(0))],
        Value::Object(m) => m
            .iter()
            .flat_map(|(label, by_value)| {
                by_value.as_object().into_iter().flatten().map(|(lv, n)| {
                    (
                        vec![(label.clone(), lv.clone())],
                        n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
                    )
                })
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_object)
            .map(|m| {
                let labels = m
                    .iter()
                    .filter(|(k, _)| *k != "@")
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (labels, m.get("@").and_then(Value::as_i64).unwrap_or(0))
            })
            .collect(),
        _ => vec![],
    }
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
        let json = render_json();
        assert_eq!(json["test_level"]["value"], -2);
        assert_eq!(json["test_level"]["type"], "gauge");
        assert_eq!(json["test_things_total"]["value"], serde_json::json!({"plugin": {"a\"b": 3}}));
        assert_eq!(json_lookup(&json, "test_things_total"), vec![(vec![("plugin".into(), "a\"b".into())], 3)]);
        assert_eq!(json["test_latency_seconds"]["value"]["event"]["x"]["count"], 2);
        counter("test_two_labels_total", "Two.", &[("a", "1"), ("b", "2")]).fetch_add(1, Ordering::Relaxed);
        let json = render_json();
        assert_eq!(json["test_two_labels_total"]["value"], serde_json::json!([{"a": "1", "b": "2", "@": 1}]));
        family("test_empty_family", Kind::Gauge, "Nothing yet.");
        assert!(render_json()["test_empty_family"]["value"].is_null());
        assert!(render_prometheus().contains("# TYPE test_empty_family gauge\n"));
    }
}
