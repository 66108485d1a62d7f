//! Configuration objects and their parsing, shared by every engine: units, CIDR sets,
//! listener, spool, log and HTTP options, listener domains, and what `init` collects.

pub mod cidr;
pub mod egress;
pub mod listener;
pub mod queue;
pub mod redis;
pub mod storage;
pub mod throttle;
pub mod units;

use serde::de::DeserializeOwned;
use std::time::Duration;

/// Decodes a JSON value into a typed config struct; the error names the path of the
/// offending key (`trace_headers.header_name: invalid type ...`).
pub fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }
    })
}

/// Everything the `init` event configured.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// ESMTP listeners.
    pub listeners: Vec<listener::EsmtpListenerConfig>,
    /// Spools (`data`, `meta`).
    pub spools: Vec<storage::SpoolConfig>,
    /// Local log configuration.
    pub logs: Vec<storage::LocalLogsConfig>,
    /// `configure_log_hook`s.
    pub log_hooks: Vec<storage::LogHookConfig>,
    /// `configure_log_disposition_hook`s.
    pub log_disposition_hooks: Vec<storage::LogDispositionHookConfig>,
    /// URL prefixes a component's `init` allowed its HTTP requests (`config.allow-http`);
    /// per component, never merged.
    pub wasm_http_allow: Vec<String>,
    /// HTTP listeners.
    pub http_listeners: Vec<storage::HttpListenerConfig>,
    /// Wall-clock budget of one policy call.
    pub event_timeout: Duration,
    /// Resolver settings.
    pub dns: DnsConfig,
    /// Policy components loaded with `kumo.wasm.load`.
    pub wasm: Vec<WasmPluginConfig>,
    /// Shaping files every egress path starts from (`config.use-shaping`).
    pub shaping: Vec<String>,
    /// Bounce classification rule files (`kumo.configure_bounce_classifier`).
    pub bounce_classifier: Vec<String>,
    /// `kumo.suspend_delivery_when_spool_unhealthy` (default true).
    pub suspend_delivery_when_spool_unhealthy: bool,
    /// `kumo.configure_redis_throttles`: limits shared by a fleet.
    pub redis_throttles: Option<redis::RedisThrottlesConfig>,
}

/// `kumo.wasm.load{path = ..., budget = ...}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmPluginConfig {
    /// The component (`.wasm`).
    pub path: String,
    /// URL prefixes its `http` requests may go to (none: every request refused).
    #[serde(default, with = "units::string_list")]
    pub http_allow: Vec<String>,
    /// Wall-clock budget of one call (default: the policy timeout).
    #[serde(default, with = "units::opt_duration")]
    pub budget: Option<Duration>,
    /// Instruction budget of one call, for deterministic runs (default: none).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Failures within `circuit_window` that open the circuit (default 5).
    #[serde(default)]
    pub circuit_failures: Option<u32>,
    /// Window for counting failures (default 60 s).
    #[serde(default, with = "units::opt_duration")]
    pub circuit_window: Option<Duration>,
    /// How long an open circuit refuses calls before probing (default 30 s, doubling).
    #[serde(default, with = "units::opt_duration")]
    pub circuit_cooldown: Option<Duration>,
}

/// `kumo.dns.configure_resolver` / `configure_test_resolver`.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// Zone texts that replace DNS entirely (tests).
    pub zones: Vec<String>,
    /// Name servers to query instead of the system's.
    pub name_servers: Vec<std::net::IpAddr>,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            listeners: vec![],
            spools: vec![],
            logs: vec![],
            log_hooks: vec![],
            log_disposition_hooks: vec![],
            wasm_http_allow: vec![],
            http_listeners: vec![],
            event_timeout: Duration::from_secs(10),
            dns: DnsConfig::default(),
            wasm: vec![],
            shaping: vec![],
            bounce_classifier: vec![],
            suspend_delivery_when_spool_unhealthy: true,
            redis_throttles: None,
        }
    }
}
