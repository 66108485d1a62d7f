//! `kumo.define_spool`, `kumo.configure_local_logs` and `kumo.start_http_listener`
//! parameters with KumoMTA's names and defaults.

use super::units;
use serde::{Deserialize, Deserializer, Serialize, de};
use std::time::Duration;

/// A free-space threshold: a percentage of the filesystem or an absolute size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum MinFree {
    /// Percent of the total.
    Percent(f64),
    /// Bytes (or inodes).
    Absolute(u64),
}

impl Default for MinFree {
    fn default() -> Self {
        MinFree::Percent(10.0)
    }
}

/// The environment variable that sets `define_spool`'s `min_free_space` for policies
/// that give none (KumoMTA's `"10%"` otherwise): a machine whose disk is mostly taken by
/// other things (a build host, a small VM) can still take mail, guarded by an absolute
/// floor. `wasmta serve` and `wasmta check` refuse to start when it does not parse.
pub const MIN_FREE_SPACE_ENV: &str = "WASMTA_MIN_FREE_SPACE";

impl MinFree {
    /// `min_free_space` for a spool whose definition names none: `WASMTA_MIN_FREE_SPACE`
    /// when set (checked at start by [`MinFree::check_env`]), else 10 %.
    pub fn default_space() -> MinFree {
        MinFree::env_space().ok().flatten().unwrap_or_default()
    }

    /// Ok when `WASMTA_MIN_FREE_SPACE` is unset or parses; the error names the variable.
    pub fn check_env() -> Result<(), String> {
        MinFree::env_space().map(|_| ())
    }

    fn env_space() -> Result<Option<MinFree>, String> {
        match std::env::var(MIN_FREE_SPACE_ENV) {
            Ok(text) => MinFree::parse(&text).map(Some).map_err(|e| format!("{MIN_FREE_SPACE_ENV}={text:?}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{MIN_FREE_SPACE_ENV}: {e}")),
        }
    }

    /// Parses `"10%"`, `"2 GB"` or a number.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(p) = text.trim().strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("invalid percentage {text:?}"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("percentage out of range: {text:?}"));
            }
            return Ok(MinFree::Percent(v));
        }
        units::parse_size(text).map(MinFree::Absolute)
    }

    /// The threshold in units, given the filesystem's total.
    pub fn threshold(&self, total: u64) -> u64 {
        match self {
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
            MinFree::Absolute(n) => *n,
        }
    }
}

impl<'de> Deserialize<'de> for MinFree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => MinFree::parse(&s).map_err(de::Error::custom),
            serde_json::Value::Number(n) => {
                n.as_u64().map(MinFree::Absolute).ok_or_else(|| de::Error::custom("expected a size"))
            }
            other => Err(de::Error::custom(format!("expected \"10%\" or a size, got {other}"))),
        }
    }
}

/// Spool storage kind as KumoMTA names it; both are served by our embedded journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SpoolKind {
    /// KumoMTA's file-per-message store.
    #[default]
    LocalDisk,
    /// KumoMTA's RocksDB store.
    RocksDB,
}

/// `kumo.define_spool{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// `data` or `meta`.
    pub name: String,
    /// Directory.
    pub path: String,
    /// Storage kind.
    #[serde(default)]
    pub kind: SpoolKind,
    /// KumoMTA's fsync switch; wasmta always commits durably (grouped), see the README.
    #[serde(default)]
    pub flush: bool,
    /// RocksDB tuning (accepted, not used).
    #[serde(default)]
    pub rocks_params: Option<serde_json::Value>,
    /// Below this free space, injection is refused with 452.
    #[serde(default = "MinFree::default_space")]
    pub min_free_space: MinFree,
    /// Below this many free inodes, injection is refused with 452.
    #[serde(default)]
    pub min_free_inodes: MinFree,
}

/// `kumo.configure_local_logs{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLogsConfig {
    /// Directory for segments.
    pub log_dir: String,
    /// Roll after this many uncompressed bytes.
    #[serde(default = "default_max_file_size", with = "units::size")]
    pub max_file_size: u64,
    /// Roll after this long.
    #[serde(default, with = "units::opt_duration")]
    pub max_segment_duration: Option<Duration>,
    /// zstd level; 0 means the default (3).
    #[serde(default)]
    pub compression_level: i32,
    /// Queue depth before log writers wait.
    #[serde(default = "default_back_pressure")]
    pub back_pressure: usize,
    /// Headers copied into each record.
    #[serde(default, with = "units::string_list")]
    pub headers: Vec<String>,
    /// Meta keys copied into each record.
    #[serde(default, with = "units::string_list")]
    pub meta: Vec<String>,
    /// Per-record-type settings (`enable`, `suffix`, `log_dir`, `template`).
    #[serde(default)]
    pub per_record: serde_json::Map<String, serde_json::Value>,
    /// Event deciding whether a record is logged.
    #[serde(default)]
    pub filter_event: Option<String>,
    /// Free-space guard for the log directory.
    #[serde(default)]
    pub min_free_space: Option<MinFree>,
    /// Free-inode guard for the log directory.
    #[serde(default)]
    pub min_free_inodes: Option<MinFree>,
}

/// `kumo.configure_log_hook{...}`: every log record also becomes a small message (the
/// record as JSON; meta `log_record`) offered to `should_enqueue_log_record`, which
/// queues it for delivery (a `custom_lua` queue: a webhook, a message bus).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogHookConfig {
    /// The hook's name (passed to `should_enqueue_log_record`).
    pub name: String,
    /// Records waiting to be offered before new ones wait.
    #[serde(default = "default_back_pressure")]
    pub back_pressure: usize,
    /// Headers copied into each record.
    #[serde(default, with = "units::string_list")]
    pub headers: Vec<String>,
    /// Meta keys copied into each record.
    #[serde(default, with = "units::string_list")]
    pub meta: Vec<String>,
    /// Per-record-type settings (`enable = false` skips a type).
    #[serde(default)]
    pub per_record: serde_json::Map<String, serde_json::Value>,
    /// Queue the record messages without spooling them first (faster; lost in a crash).
    #[serde(default)]
    pub deferred_spool: bool,
    /// wasmta: queue every record in this queue without calling
    /// `should_enqueue_log_record` (what `policy-extras.log_hooks` sets up: a Lua call per
    /// record was a large part of what a hook cost).
    #[serde(default)]
    pub queue: Option<String>,
    /// wasmta, with `queue`: one message carries up to this many records, its data a JSON
    /// array of them, so the spool, the queue and the delivery work once per batch, not
    /// once per record (`log_hooks:new_json` with `batch_size`). 1: a message per record.
    #[serde(default = "one")]
    pub records_per_message: usize,
    /// wasmta, with `records_per_message`: a message waits for at least this many records
    /// (up to `max_batch_latency`); otherwise it takes what is waiting, so under load
    /// messages fill while the previous one is being spooled.
    #[serde(default = "one")]
    pub min_records_per_message: usize,
    /// wasmta: how long a message waits to reach `min_records_per_message`.
    #[serde(default, with = "units::duration")]
    pub max_batch_latency: Duration,
}

fn one() -> usize {
    1
}

/// `kumo.configure_log_disposition_hook{...}`: each matching record about a message calls
/// the policy's `log_disposition_<name>(message, log_record)` before the code that logged
/// it goes on (a terminal record: while the spool still holds the message).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogDispositionHookConfig {
    /// The hook's name: the event is `log_disposition_<name>`.
    pub name: String,
    /// Headers copied into each record.
    #[serde(default, with = "units::string_list")]
    pub headers: Vec<String>,
    /// Meta keys copied into each record.
    #[serde(default, with = "units::string_list")]
    pub meta: Vec<String>,
    /// Per-record-type settings (`enable = false` skips a type).
    #[serde(default)]
    pub per_record: serde_json::Map<String, serde_json::Value>,
}

fn default_max_file_size() -> u64 {
    1_000_000_000
}

fn default_back_pressure() -> usize {
    128_000
}

/// `kumo.start_http_listener{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenerConfig {
    /// Address to bind.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Name for TLS.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Serve HTTPS.
    #[serde(default)]
    pub use_tls: bool,
    /// Certificate.
    #[serde(default)]
    pub tls_certificate: Option<super::listener::KeySource>,
    /// Key.
    #[serde(default)]
    pub tls_private_key: Option<super::listener::KeySource>,
    /// Peers that bypass authentication.
    #[serde(default = "default_trusted", with = "units::string_list")]
    pub trusted_hosts: Vec<String>,
    /// Largest request body.
    #[serde(default = "default_body_limit", with = "units::size")]
    pub request_body_limit: u64,
    /// wasmta: time allowed for a request's header, for its body, and between requests
    /// on a kept-alive connection (named as the ESMTP listener's option).
    #[serde(default = "default_http_client_timeout", with = "units::duration")]
    pub client_timeout: Duration,
    /// wasmta: connections at once; more are answered `503` and closed.
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
}

fn default_http_client_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_http_max_connections() -> usize {
    1024
}

fn default_http_listen() -> String {
    "127.0.0.1:8000".into()
}

fn default_trusted() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into()]
}

fn default_body_limit() -> u64 {
    2 * 1024 * 1024
}

/// `kumo.make_listener_domain{...}`: what a domain may do on an inbound listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerDomain {
    /// Accept mail to this domain for relay.
    pub relay_to: bool,
    /// Peers allowed to relay mail from this domain.
    pub relay_from: super::cidr::CidrList,
    /// Out-of-band bounce handling.
    pub log_oob: LogDisposition,
    /// ARF feedback handling.
    pub log_arf: LogDisposition,
    /// Authenticated identities allowed to relay from this domain.
    #[serde(with = "units::string_list")]
    pub relay_from_authz: Vec<String>,
}

/// `log_oob` / `log_arf` (legacy booleans accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum LogDisposition {
    /// Neither log nor accept.
    #[default]
    Ignore,
    /// Log, then relay.
    LogThenRelay,
    /// Log, then drop.
    LogThenDrop,
}

impl<'de> Deserialize<'de> for LogDisposition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(LogDisposition::LogThenRelay),
            serde_json::Value::Bool(false) => Ok(LogDisposition::Ignore),
            serde_json::Value::String(s) => match s.as_str() {
                "Ignore" => Ok(LogDisposition::Ignore),
                "LogThenRelay" => Ok(LogDisposition::LogThenRelay),
                "LogThenDrop" => Ok(LogDisposition::LogThenDrop),
                _ => Err(de::Error::custom(format!("expected Ignore, LogThenRelay or LogThenDrop, got {s:?}"))),
            },
            other => Err(de::Error::custom(format!("expected a string or boolean, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spool_and_logs_defaults() {
        let s: SpoolConfig = super::super::decode(json!({"name": "data", "path": "/x", "kind": "RocksDB"})).unwrap();
        assert_eq!(s.kind, SpoolKind::RocksDB);
        // KumoMTA's 10 %, unless WASMTA_MIN_FREE_SPACE (cargo test sets it) says otherwise
        assert_eq!(MinFree::default(), MinFree::Percent(10.0));
        assert_eq!(s.min_free_space, MinFree::default_space());
        assert_eq!(s.min_free_inodes, MinFree::Percent(10.0));
        let l: LocalLogsConfig =
            super::super::decode(json!({"log_dir": "/l", "max_segment_duration": "1 minute"})).unwrap();
        assert_eq!(l.max_segment_duration, Some(Duration::from_secs(60)));
        assert_eq!(l.max_file_size, 1_000_000_000);
        let err =
            super::super::decode::<SpoolConfig>(json!({"name": "data", "path": "/x", "kind": "Floppy"})).unwrap_err();
        assert!(err.contains("kind"), "{err}");
        assert_eq!(MinFree::parse("2 GB").unwrap(), MinFree::Absolute(2 << 30));
        assert_eq!(MinFree::Percent(10.0).threshold(1000), 100);
    }

    #[test]
    fn listener_domain_accepts_legacy_bools() {
        let d: ListenerDomain =
            super::super::decode(json!({"relay_to": true, "log_oob": true, "log_arf": "LogThenDrop"})).unwrap();
        assert!(d.relay_to);
        assert_eq!(d.log_oob, LogDisposition::LogThenRelay);
        assert_eq!(d.log_arf, LogDisposition::LogThenDrop);
        assert!(super::super::decode::<ListenerDomain>(json!({"relay_too": true})).is_err());
        let err = super::super::decode::<ListenerDomain>(json!({"relay_from": ["10.0.0.300"]})).unwrap_err();
        assert!(err.contains("relay_from"), "{err}");
    }
}
