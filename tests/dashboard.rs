//! The operator assets against the real binary: every metric the Grafana dashboard
//! (`deploy/grafana/wasmta-dashboard.json`) queries is one the server exports at
//! `/metrics`, spelt the same, with `_bucket`/`_sum`/`_count` only on histograms.

mod harness;

use harness::redis::Redis;
use harness::sink::{Sink, relay_to};
use harness::smtp::Client;
use harness::{Server, http_get};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard() -> Value {
    let path = root().join("deploy/grafana/wasmta-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// PromQL words that are not metric names: aggregations, functions, keywords, and the
/// `label_values` of Grafana's variable queries. (An identifier followed by `(` is taken
/// as a function whatever its name.)
const NOT_METRICS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "clamp",
    "clamp_min",
    "clamp_max",
    "abs",
    "ceil",
    "floor",
    "round",
    "sort",
    "sort_desc",
    "label_replace",
    "label_join",
    "vector",
    "scalar",
    "time",
    "absent",
    "changes",
    "resets",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "predict_linear",
    "le",
    "inf",
    "nan",
    "label_values",
    "query_result",
];

/// Words after which a parenthesised list holds label names, not expressions.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The index just past the string literal starting at `i`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The index just past the bracket matching the `open` at `i` (string literals inside are
/// skipped whole).
fn skip_group(b: &[u8], mut i: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The metric names a PromQL expression selects: identifiers outside label matchers
/// (`{...}`), range selectors (`[...]`), grouping lists (`by (...)`), strings and Grafana
/// variables (`$x`, `${x}`), that are neither followed by `(` nor a PromQL word.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'{' => i = skip_group(b, i, b'{', b'}'),
            b'[' => i = skip_group(b, i, b'[', b']'),
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    i = skip_group(b, i, b'{', b'}');
                } else {
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                }
            }
            // numbers, and durations after `offset`
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let call = b.get(j) == Some(&b'(');
                if GROUPING.contains(&word) {
                    if call {
                        i = skip_group(b, j, b'(', b')');
                    }
                } else if !call && !NOT_METRICS.contains(&word) {
                    out.push(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Every string under an `expr` key, at any depth (panels, targets, rows' panels).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The PromQL of the dashboard's query variables: `label_values(EXPR, label)` gives EXPR,
/// `query_result(EXPR)` gives EXPR.
fn variable_exprs(d: &Value) -> Vec<String> {
    let mut out = vec![];
    for var in d["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = match &var["query"] {
            Value::String(s) => s.clone(),
            v => v["query"].as_str().unwrap_or_default().to_string(),
        };
        let q = q.trim();
        if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
            // the last argument is the label; with one argument there is no metric
            if let Some((expr, _label)) = inner.rsplit_once(',') {
                out.push(expr.to_string());
            }
        } else if let Some(inner) = q.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) {
            out.push(inner.to_string());
        } else if !q.is_empty() {
            out.push(q.to_string());
        }
    }
    out
}

/// Every metric name the dashboard queries.
fn dashboard_metrics(d: &Value) -> BTreeSet<String> {
    let mut all = vec![];
    exprs(&d["panels"], &mut all);
    assert!(!all.is_empty(), "the dashboard has no queries");
    all.extend(variable_exprs(d));
    all.iter().flat_map(|e| metric_names(e)).collect()
}

/// A Prometheus text exposition: each family's type (`# TYPE`) and each sample's name.
struct Exposition {
    kinds: HashMap<String, String>,
    samples: HashSet<String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut kinds = HashMap::new();
    let mut samples = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                kinds.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            samples.insert(name.to_string());
        }
    }
    Exposition { kinds, samples }
}

/// Whether `name`, as a dashboard uses it, is in the exposition: a counter or gauge family
/// by its own name (a labelled family with no series yet, like `ready_count` with no
/// queues, is declared by its `# TYPE` line), a histogram only through the `_bucket`,
/// `_sum` and `_count` series the exposition really has.
fn check(name: &str, e: &Exposition) -> Result<(), String> {
    match e.kinds.get(name).map(String::as_str) {
        Some("histogram") => Err(format!("{name} is a histogram: query {name}_bucket, {name}_sum or {name}_count")),
        Some(_) => Ok(()),
        None => {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && e.kinds.get(base).map(String::as_str) == Some("histogram")
                {
                    return match e.samples.contains(name) {
                        true => Ok(()),
                        false => Err(format!("histogram {base} has no {name} series")),
                    };
                }
            }
            Err(format!("{name} is not in /metrics"))
        }
    }
}

/// The family a dashboard name belongs to if it is a histogram series (`x_bucket` → `x`).
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Every `.rs` file under `dir`, read.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// Registered only when a policy component is loaded (`src/policy/wasm/mod.rs`,
/// `Metrics::new`), and a component is only had by building `plugins/` with cargo for
/// `wasm32-wasip2` (see harness::plugins): too much for this test. tests/sandbox.rs reads
/// all three from a running server's /metrics.
const WASM_ONLY: &[&str] =
    &["wasm_plugin_failures_total", "wasm_plugin_circuit_open", "wasm_plugin_fuel_consumed_total"];

/// Registered only by `kumo.configure_redis_throttles` (`src/shaping/redis.rs`,
/// `src/shaping/shared_limits.rs`); this test configures it when `redis-server` is
/// installed, and only then are these required.
const REDIS_ONLY: &[&str] = &["redis_latency_seconds", "redis_errors_total", "redis_connection_leases_held"];

#[test]
fn the_metric_name_scanner_finds_metrics_and_nothing_else() {
    let e = r#"histogram_quantile(0.99, sum by (le, event) (rate(policy_event_latency_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))"#;
    assert_eq!(metric_names(e), ["policy_event_latency_seconds_bucket"]);
    let e = r#"sum(increase(total_messages_fail{job=~"$job"}[1h])) / clamp_min(sum(increase(total_messages_delivered[1h])) + sum(increase(total_messages_fail[1h])), 1)"#;
    assert_eq!(metric_names(e), ["total_messages_fail", "total_messages_delivered", "total_messages_fail"]);
    assert_eq!(metric_names("topk(10, sum by (queue) (ready_count{queue!~\"a{b}\"}))"), ["ready_count"]);
    assert_eq!(metric_names("sum(rate(a_total[5m])) by (instance) / on (instance) b offset 5m"), ["a_total", "b"]);
    assert_eq!(metric_names("max without (plugin) (wasm_plugin_circuit_open)"), ["wasm_plugin_circuit_open"]);
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["schemaVersion"], 39);
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the datasource is the DS_PROMETHEUS input: {inputs:?}"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = HashSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_i64().expect("panel id")), "duplicate id in {title}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title} has no targets"));
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title}: a target without expr");
        }
    }
    // the allow-lists name metrics the server really registers somewhere
    let mut src = String::new();
    sources(&root().join("src"), &mut src);
    for name in WASM_ONLY.iter().chain(REDIS_ONLY) {
        assert!(src.contains(&format!("\"{name}\"")), "{name} is allowed to be absent but src/ never registers it");
    }
}

#[test]
fn every_metric_on_the_dashboard_is_exported_by_the_server() {
    let wanted = dashboard_metrics(&dashboard());
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    // with a Redis the fleet metrics are registered and must be there; without one they
    // may be absent (the harness says SKIPPED for it)
    let redis = Redis::start(d.path());
    let fleet = match &redis {
        Some(r) => format!("kumo.configure_redis_throttles {{ node = '{}' }}", r.url()),
        None => String::new(),
    };
    let text = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test', relay_hosts = {{ '127.0.0.1' }} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  {fleet}
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  msg:set_meta('tenant', 'dashboard')
end)
{relay}
"#,
        relay = relay_to(&sink.addr, "", "")
    );
    let policy = harness::write_policy_text(d.path(), &text);
    let server = Server::start(d.path(), &policy);

    // one message, delivered, so the counters move and the event histograms exist
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["r@dest.example"], "Subject: dashboard\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)), "delivered: {}", server.stderr_text());
    // the server counts the delivery once it has read the sink's reply: moments later
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let (code, body) = http_get(&server.http[0], "/metrics");
        if body.lines().any(|l| l == "total_messages_delivered 1") || Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200, "{body}");
    assert!(body.lines().any(|l| l == "total_messages_delivered 1"), "{body}");
    let exposition = parse_exposition(&body);

    let mut allowed: Vec<&str> = WASM_ONLY.to_vec();
    if redis.is_none() {
        allowed.extend(REDIS_ONLY);
    }
    let mut missing = vec![];
    for name in &wanted {
        if let Err(why) = check(name, &exposition) {
            let optional = allowed.contains(&name.as_str()) || allowed.contains(&base_name(name));
            if !optional || exposition.kinds.contains_key(base_name(name)) {
                missing.push(why);
            }
        }
    }
    assert!(missing.is_empty(), "the dashboard queries what /metrics lacks:\n{}\n\n{body}", missing.join("\n"));
    eprintln!("dashboard metrics checked against /metrics: {wanted:?} (allowed absent: {allowed:?})");
    drop(server);
}
