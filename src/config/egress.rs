//! `kumo.make_egress_source`, `kumo.make_egress_pool` and `kumo.make_egress_path`: every
//! option KumoMTA accepts, with its code defaults.

use super::cidr::CidrList;
use super::queue::RefreshStrategy;
use super::throttle::ThrottleSpec;
use super::units;
use serde::{Deserialize, Deserializer, Serialize, de};
use std::collections::BTreeMap;
use std::time::Duration;

/// `kumo.make_egress_source{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSource {
    /// Source name.
    pub name: String,
    /// Local address to bind.
    #[serde(default)]
    pub source_address: Option<std::net::IpAddr>,
    /// EHLO name.
    #[serde(default)]
    pub ehlo_domain: Option<String>,
    /// Destination port override.
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// HAProxy (accepted).
    #[serde(default)]
    pub ha_proxy_server: Option<String>,
    /// HAProxy source (accepted).
    #[serde(default)]
    pub ha_proxy_source_address: Option<String>,
    /// SOCKS5 (accepted).
    #[serde(default)]
    pub socks5_proxy_server: Option<String>,
    /// SOCKS5 source (accepted).
    #[serde(default)]
    pub socks5_proxy_source_address: Option<String>,
    /// SOCKS5 user (accepted).
    #[serde(default)]
    pub socks5_proxy_username: Option<String>,
    /// SOCKS5 password (accepted).
    #[serde(default)]
    pub socks5_proxy_password: Option<serde_json::Value>,
    /// Suspend when the address is not plumbed (accepted).
    #[serde(default)]
    pub suspend_when_unplumbed: bool,
    /// Suspend when the proxy is unhealthy (accepted).
    #[serde(default)]
    pub suspend_when_proxy_unhealthy: bool,
    /// Cache lifetime.
    #[serde(default = "sixty_seconds", with = "units::duration")]
    pub ttl: Duration,
}

impl EgressSource {
    /// The `unspecified` source: kernel-chosen address, default EHLO name.
    pub fn unspecified() -> Self {
        crate::config::decode(serde_json::json!({"name": "unspecified"})).expect("valid")
    }
}

fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

/// One pool member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    /// Source name.
    pub name: String,
    /// Relative weight.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `kumo.make_egress_pool{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPool {
    /// Pool name.
    pub name: String,
    /// Members.
    #[serde(default)]
    pub entries: Vec<PoolEntry>,
    /// Cache lifetime.
    #[serde(default = "sixty_seconds", with = "units::duration")]
    pub ttl: Duration,
}

impl EgressPool {
    /// The `unspecified` pool: one `unspecified` source.
    pub fn unspecified() -> Self {
        EgressPool {
            name: "unspecified".into(),
            entries: vec![PoolEntry { name: "unspecified".into(), weight: 1 }],
            ttl: sixty_seconds(),
        }
    }

    /// Picks a source by weight (`r` uniform in [0, 1)).
    pub fn choose(&self, r: f64) -> Option<&str> {
        let total: u64 = self.entries.iter().map(|e| e.weight as u64).sum();
        if total == 0 {
            return None;
        }
        let mut point = (r * total as f64) as u64;
        for e in &self.entries {
            if point < e.weight as u64 {
                return Some(&e.name);
            }
            point -= e.weight as u64;
        }
        self.entries.last().map(|e| e.name.as_str())
    }
}

/// `enable_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Tls {
    #[default]
    Opportunistic,
    OpportunisticInsecure,
    Required,
    RequiredInsecure,
    Disabled,
}

impl Tls {
    /// STARTTLS must succeed.
    pub fn required(self) -> bool {
        matches!(self, Tls::Required | Tls::RequiredInsecure)
    }
    /// Certificates are not verified.
    pub fn insecure(self) -> bool {
        matches!(self, Tls::OpportunisticInsecure | Tls::RequiredInsecure)
    }
}

/// `ip_lookup_strategy` (KumoMTA's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum IpLookupStrategy {
    Ipv4AndIpv6,
    Ipv4Only,
    Ipv6Only,
    Ipv6ThenIpv4,
    Ipv4ThenIpv6,
}

/// `reconnect_strategy` (KumoMTA's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ReconnectStrategy {
    ConnectNextHost,
    TerminateSession,
    ReconnectSameHost,
}

/// `maintainer_wakeup_strategy` / `dispatcher_wakeup_strategy` (accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WakeupStrategy {
    Aggressive,
    Relaxed,
}

/// `*_memory_reduction_policy` and queue `shrink_policy` entries (accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum MemoryReductionPolicy {
    ShrinkDataAndMeta,
    ShrinkData,
    NoShrink,
}

/// A connection limit: a number, `"1,000"`, or `"local:20"` (held by this node alone
/// even when `configure_redis_throttles` shares the others across the fleet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub n: usize,
    pub local: bool,
}

impl Limit {
    /// A limit of `n` shared when limits are.
    pub const fn new(n: usize) -> Self {
        Limit { n, local: false }
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.local {
            true => s.serialize_str(&format!("local:{}", self.n)),
            false => s.serialize_u64(self.n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => {
                n.as_u64().map(|n| Limit::new(n as usize)).ok_or_else(|| de::Error::custom("expected a count"))
            }
            serde_json::Value::String(s) => {
                let local = s.trim().starts_with("local:");
                let t = s.trim().strip_prefix("local:").unwrap_or(s.trim()).replace([',', '_'], "");
                t.trim()
                    .parse()
                    .map(|n| Limit { n, local })
                    .map_err(|_| de::Error::custom(format!("invalid limit {s:?}")))
            }
            other => Err(de::Error::custom(format!("expected a count, got {other}"))),
        }
    }
}

/// `kumo.make_egress_path{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct EgressPathConfig {
    pub connection_limit: Limit,
    pub additional_connection_limits: BTreeMap<String, Limit>,
    pub max_connection_rate: Option<ThrottleSpec>,
    pub max_message_rate: Option<ThrottleSpec>,
    pub additional_message_rate_throttles: BTreeMap<String, ThrottleSpec>,
    pub source_selection_rate: Option<ThrottleSpec>,
    pub additional_source_selection_rates: BTreeMap<String, ThrottleSpec>,
    pub max_deliveries_per_connection: usize,
    pub max_recipients_per_batch: usize,
    pub max_ready: usize,
    pub consecutive_connection_failures_before_delay: usize,
    pub enable_tls: Tls,
    pub enable_mta_sts: bool,
    pub enable_dane: bool,
    pub enable_pipelining: bool,
    pub enable_rset: bool,
    pub tls_prefer_openssl: bool,
    pub tls_certificate: Option<serde_json::Value>,
    pub tls_private_key: Option<serde_json::Value>,
    pub openssl_cipher_list: Option<String>,
    pub openssl_cipher_suites: Option<String>,
    pub openssl_options: Option<String>,
    pub rustls_cipher_suites: Vec<String>,
    #[serde(with = "units::opt_duration")]
    pub remember_broken_tls: Option<Duration>,
    pub opportunistic_tls_reconnect_on_failed_handshake: bool,
    pub smtp_port: u16,
    pub smtp_auth_plain_username: Option<String>,
    pub smtp_auth_plain_password: Option<serde_json::Value>,
    pub allow_smtp_auth_plain_without_tls: bool,
    pub allow_smtp_auth_plain_without_valid_certificate: bool,
    pub ehlo_domain: Option<String>,
    pub prohibited_hosts: CidrList,
    pub skip_hosts: CidrList,
    pub ip_lookup_strategy: Option<IpLookupStrategy>,
    pub reconnect_strategy: Option<ReconnectStrategy>,
    pub try_next_host_on_transport_error: bool,
    pub use_lmtp: bool,
    pub ignore_8bit_checks: bool,
    #[serde(with = "units::duration")]
    pub refresh_interval: Duration,
    pub refresh_strategy: RefreshStrategy,
    pub maintainer_wakeup_strategy: Option<WakeupStrategy>,
    pub dispatcher_wakeup_strategy: Option<WakeupStrategy>,
    pub low_memory_reduction_policy: Option<MemoryReductionPolicy>,
    pub no_memory_reduction_policy: Option<MemoryReductionPolicy>,
    pub readyq_pool_name: Option<String>,
    pub provider_name: Option<String>,
    pub aggressive_connection_opening: bool,
    #[serde(with = "units::opt_duration")]
    pub system_shutdown_timeout: Option<Duration>,
    #[serde(with = "units::opt_duration")]
    pub dispatcher_progress_watchdog_timeout: Option<Duration>,
    #[serde(with = "units::duration")]
    pub connect_timeout: Duration,
    #[serde(with = "units::duration")]
    pub banner_timeout: Duration,
    #[serde(with = "units::duration")]
    pub auth_timeout: Duration,
    #[serde(with = "units::duration")]
    pub ehlo_timeout: Duration,
    #[serde(with = "units::duration")]
    pub mail_from_timeout: Duration,
    #[serde(with = "units::duration")]
    pub rcpt_to_timeout: Duration,
    #[serde(with = "units::duration")]
    pub data_timeout: Duration,
    #[serde(with = "units::duration")]
    pub data_dot_timeout: Duration,
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    #[serde(with = "units::duration")]
    pub rset_timeout: Duration,
    #[serde(with = "units::duration")]
    pub starttls_timeout: Duration,
}

impl Default for EgressPathConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        EgressPathConfig {
            connection_limit: Limit::new(32),
            additional_connection_limits: BTreeMap::new(),
            max_connection_rate: None,
            max_message_rate: None,
            additional_message_rate_throttles: BTreeMap::new(),
            source_selection_rate: None,
            additional_source_selection_rates: BTreeMap::new(),
            max_deliveries_per_connection: 1024,
            max_recipients_per_batch: 100,
            max_ready: 1024,
            consecutive_connection_failures_before_delay: 100,
            enable_tls: Tls::Opportunistic,
            enable_mta_sts: true,
            enable_dane: false,
            enable_pipelining: true,
            enable_rset: true,
            tls_prefer_openssl: false,
            tls_certificate: None,
            tls_private_key: None,
            openssl_cipher_list: None,
            openssl_cipher_suites: None,
            openssl_options: None,
            rustls_cipher_suites: vec![],
            remember_broken_tls: None,
            opportunistic_tls_reconnect_on_failed_handshake: false,
            smtp_port: 25,
            smtp_auth_plain_username: None,
            smtp_auth_plain_password: None,
            allow_smtp_auth_plain_without_tls: false,
            allow_smtp_auth_plain_without_valid_certificate: false,
            ehlo_domain: None,
            prohibited_hosts: CidrList::of(&["127.0.0.0/8", "::1", "0.0.0.0", "::"]),
            skip_hosts: CidrList::default(),
            ip_lookup_strategy: None,
            reconnect_strategy: None,
            try_next_host_on_transport_error: false,
            use_lmtp: false,
            ignore_8bit_checks: false,
            refresh_interval: s(60),
            refresh_strategy: RefreshStrategy::Ttl,
            maintainer_wakeup_strategy: None,
            dispatcher_wakeup_strategy: None,
            low_memory_reduction_policy: None,
            no_memory_reduction_policy: None,
            readyq_pool_name: None,
            provider_name: None,
            aggressive_connection_opening: false,
            system_shutdown_timeout: None,
            dispatcher_progress_watchdog_timeout: None,
            connect_timeout: s(60),
            banner_timeout: s(60),
            auth_timeout: s(60),
            ehlo_timeout: s(300),
            mail_from_timeout: s(300),
            rcpt_to_timeout: s(300),
            data_timeout: s(300),
            data_dot_timeout: s(300),
            idle_timeout: s(5),
            rset_timeout: s(5),
            starttls_timeout: s(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn egress_path_defaults_and_forms() {
        let p: EgressPathConfig = crate::config::decode(json!({})).unwrap();
        assert_eq!(p.connection_limit, Limit::new(32));
        assert_eq!(p.max_ready, 1024);
        assert_eq!(p.idle_timeout, Duration::from_secs(5));
        assert_eq!(p.enable_tls, Tls::Opportunistic);
        let p: EgressPathConfig = crate::config::decode(json!({
            "connection_limit": "local:1,000", "enable_tls": "RequiredInsecure", "idle_timeout": "60s",
            "additional_connection_limits": {"shared": 5},
        }))
        .unwrap();
        assert_eq!(p.connection_limit, Limit { n: 1000, local: true });
        assert!(p.enable_tls.required() && p.enable_tls.insecure());
        let err = crate::config::decode::<EgressPathConfig>(json!({"conection_limit": 1})).unwrap_err();
        assert!(err.contains("conection_limit"), "{err}");
    }

    #[test]
    fn pools_choose_by_weight() {
        let pool: EgressPool = crate::config::decode(
            json!({"name": "p", "entries": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]}),
        )
        .unwrap();
        assert_eq!(pool.choose(0.0), Some("a"));
        assert_eq!(pool.choose(0.24), Some("a"));
        assert_eq!(pool.choose(0.26), Some("b"));
        assert_eq!(pool.choose(0.999), Some("b"));
        assert_eq!(EgressPool::unspecified().choose(0.5), Some("unspecified"));
    }
}
