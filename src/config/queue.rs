//! `kumo.make_queue_config` (scheduled queues): retry, expiry, egress pool and delivery
//! protocol, with KumoMTA's names and defaults.

use super::units;
use serde::{Deserialize, Deserializer, Serialize, de};
use std::time::Duration;

/// When a cached config object is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RefreshStrategy {
    /// After `refresh_interval`.
    #[default]
    Ttl,
    /// When the configuration epoch changes.
    Epoch,
}

/// One `mx_list` entry: `"host"`, `"[1.2.3.4]"`, `"host:port"` or `{name, addr}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MxEntry {
    /// Host name or address literal.
    pub name: String,
    /// A fixed address (skips DNS for this host).
    pub addr: Option<String>,
    /// Port override.
    pub port: Option<u16>,
}

impl MxEntry {
    /// Parses the string form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty mx_list entry".into());
        }
        if let Some(rest) = t.strip_prefix('[') {
            let (lit, after) = rest.split_once(']').ok_or_else(|| format!("unterminated address literal {text:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| format!("bad port in {text:?}"))?),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected text after address literal in {text:?}")),
            };
            lit.parse::<std::net::IpAddr>().map_err(|_| format!("bad address literal {text:?}"))?;
            return Ok(MxEntry { name: lit.to_string(), addr: Some(lit.to_string()), port });
        }
        match t.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Ok(MxEntry {
                name: host.to_string(),
                addr: None,
                port: Some(port.parse().map_err(|_| format!("bad port in {text:?}"))?),
            }),
            _ => Ok(MxEntry { name: t.to_string(), addr: None, port: None }),
        }
    }

    /// The canonical text form used in site names.
    pub fn label(&self) -> String {
        let host = match &self.addr {
            Some(a) if a == &self.name => format!("[{a}]"),
            Some(a) => format!("{}/{a}", self.name),
            None => self.name.clone(),
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

impl<'de> Deserialize<'de> for MxEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Named {
            name: String,
            addr: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Named(Named),
        }
        match Form::deserialize(d)? {
            Form::Text(t) => MxEntry::parse(&t).map_err(de::Error::custom),
            Form::Named(n) => {
                n.addr.parse::<std::net::IpAddr>().map_err(|_| {
                    de::Error::custom(format!("mx_list entry {}: addr {:?} is not an IP address", n.name, n.addr))
                })?;
                Ok(MxEntry { name: n.name, addr: Some(n.addr), port: None })
            }
        }
    }
}

/// `protocol.smtp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpProtocol {
    /// Hosts to use instead of the MX records.
    #[serde(default)]
    pub mx_list: Vec<MxEntry>,
    /// Treat `mx_list` as DNSSEC-secure (DANE).
    #[serde(default)]
    pub treat_mx_list_as_secure: bool,
}

/// `protocol`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub enum Protocol {
    #[serde(rename = "smtp")]
    Smtp(SmtpProtocol),
    #[serde(rename = "maildir")]
    Maildir(MaildirProtocol),
    #[serde(rename = "custom_lua")]
    CustomLua(CustomLuaProtocol),
    #[serde(rename = "xfer")]
    Xfer(serde_json::Value),
}

/// `protocol = { custom_lua = { constructor = 'make.webhook', batch_size = 1, ... } }`:
/// delivery by a connection object the policy's constructor event returns (webhooks,
/// message buses, log hooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomLuaProtocol {
    /// The event that makes a connection (`make.webhook`), called with the queue's
    /// domain, tenant and campaign.
    pub constructor: String,
    /// At most this many messages per `send_batch` call (1: `send`, one at a time).
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Wait for at least this many (up to `max_batch_latency`) before sending a batch.
    #[serde(default = "one")]
    pub min_batch_size: usize,
    /// How long a batch waits to reach `min_batch_size`.
    #[serde(default, with = "units::duration")]
    pub max_batch_latency: Duration,
}

fn one() -> usize {
    1
}

/// `protocol = { maildir_path = '...', dir_mode = ..., file_mode = ... }`: delivery into
/// a maildir. The path is a template (`{{ domain }}`, `{{ user }}`, `{{ meta.x }}`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirProtocol {
    /// The maildir (its `tmp`, `new` and `cur` are made as needed).
    pub maildir_path: String,
    /// Mode of directories made (default `0o775`); a number or an octal string (`"0750"`).
    #[serde(default, deserialize_with = "mode")]
    pub dir_mode: Option<u32>,
    /// Mode of message files (default `0o664`).
    #[serde(default, deserialize_with = "mode")]
    pub file_mode: Option<u32>,
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    let m = match &v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
        _ => None,
    };
    match m {
        Some(m) if m <= 0o7777 => Ok(Some(m)),
        _ => Err(de::Error::custom(format!("{v} is not a file mode (a number, or an octal string such as \"0750\")"))),
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::Smtp(SmtpProtocol::default())
    }
}

fn deserialize_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    // KumoMTA writes `protocol = { smtp = {...} }` and `protocol = { maildir_path = '...', dir_mode = ... }`
    let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    if let Some(smtp) = map.remove("smtp") {
        if !map.is_empty() {
            return Err(de::Error::custom(format!(
                "unexpected keys beside smtp: {:?}",
                map.keys().collect::<Vec<_>>()
            )));
        }
        return serde_path_to_error::deserialize(smtp)
            .map(Protocol::Smtp)
            .map_err(|e| de::Error::custom(format!("smtp.{e}")));
    }
    if map.contains_key("maildir_path") {
        return serde_path_to_error::deserialize(serde_json::Value::Object(map))
            .map(Protocol::Maildir)
            .map_err(|e| de::Error::custom(e.to_string()));
    }
    if let Some(v) = map.remove("custom_lua") {
        let custom: CustomLuaProtocol =
            serde_path_to_error::deserialize(v).map_err(|e| de::Error::custom(format!("custom_lua.{e}")))?;
        if custom.batch_size == 0 || custom.min_batch_size == 0 || custom.min_batch_size > custom.batch_size {
            return Err(de::Error::custom(format!(
                "custom_lua: need 1 <= min_batch_size ({}) <= batch_size ({})",
                custom.min_batch_size, custom.batch_size
            )));
        }
        return Ok(Protocol::CustomLua(custom));
    }
    if let Some(v) = map.remove("xfer") {
        return Ok(Protocol::Xfer(v));
    }
    Err(de::Error::custom("protocol must have one of smtp, maildir_path, custom_lua, xfer"))
}

/// `strategy` (KumoMTA's values; wasmta has one implementation and accepts them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum QueueStrategy {
    SingletonTimerWheel,
    SingletonTimerWheelV2,
    TimerWheel,
    SkipList,
}

/// `kumo.make_queue_config{...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Base of the exponential backoff.
    #[serde(with = "units::duration")]
    pub retry_interval: Duration,
    /// Cap on the computed delay.
    #[serde(with = "units::opt_duration")]
    pub max_retry_interval: Option<Duration>,
    /// Expiry.
    #[serde(with = "units::duration")]
    pub max_age: Duration,
    /// Egress pool name.
    pub egress_pool: Option<String>,
    /// Throttle scheduled → ready for this queue.
    pub max_message_rate: Option<super::throttle::ThrottleSpec>,
    /// Delivery protocol.
    #[serde(deserialize_with = "deserialize_protocol")]
    pub protocol: Protocol,
    /// Idle time before the queue is dropped from memory.
    #[serde(with = "units::duration")]
    pub reap_interval: Duration,
    /// Ttl refresh interval.
    #[serde(with = "units::duration")]
    pub refresh_interval: Duration,
    /// Refresh strategy.
    pub refresh_strategy: RefreshStrategy,
    /// Queue implementation (accepted; wasmta has one).
    pub strategy: Option<QueueStrategy>,
    /// Timer wheel tick (accepted).
    #[serde(with = "units::opt_duration")]
    pub timerwheel_tick_interval: Option<Duration>,
    /// Provider name for metrics.
    pub provider_name: Option<String>,
    /// Memory shrinking policy (accepted).
    pub shrink_policy: Option<serde_json::Value>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_interval: Duration::from_secs(20 * 60),
            max_retry_interval: None,
            max_age: Duration::from_secs(7 * 86400),
            egress_pool: None,
            max_message_rate: None,
            protocol: Protocol::default(),
            reap_interval: Duration::from_secs(600),
            refresh_interval: Duration::from_secs(60),
            refresh_strategy: RefreshStrategy::Ttl,
            strategy: None,
            timerwheel_tick_interval: None,
            provider_name: None,
            shrink_policy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_mx_list_forms() {
        let q: QueueConfig = crate::config::decode(json!({})).unwrap();
        assert_eq!(q.retry_interval, Duration::from_secs(1200));
        assert_eq!(q.max_age, Duration::from_secs(604_800));
        assert!(q.max_retry_interval.is_none());
        let q: QueueConfig = crate::config::decode(json!({
            "retry_interval": "1m", "max_retry_interval": "10m",
            "protocol": {"smtp": {"mx_list": ["mx.example", "[10.0.0.1]", "localhost:2525", {"name": "a.example", "addr": "10.0.0.2"}]}},
        }))
        .unwrap();
        let Protocol::Smtp(smtp) = q.protocol else { panic!() };
        let labels: Vec<String> = smtp.mx_list.iter().map(MxEntry::label).collect();
        assert_eq!(labels, ["mx.example", "[10.0.0.1]", "localhost:2525", "a.example/10.0.0.2"]);
        let err = crate::config::decode::<QueueConfig>(json!({"retry_intervl": "1m"})).unwrap_err();
        assert!(err.contains("retry_intervl"), "{err}");
        let err = crate::config::decode::<QueueConfig>(json!({"protocol": {"smtp": {"mx_lst": []}}})).unwrap_err();
        assert!(err.contains("mx_lst"), "{err}");
    }

    #[test]
    fn custom_lua_takes_kumomtas_batch_options_and_names_mistakes() {
        let q: QueueConfig =
            crate::config::decode(json!({"protocol": {"custom_lua": {"constructor": "make.webhook"}}})).unwrap();
        let Protocol::CustomLua(c) = q.protocol else { panic!() };
        assert_eq!((c.constructor.as_str(), c.batch_size, c.min_batch_size), ("make.webhook", 1, 1));
        assert_eq!(c.max_batch_latency, Duration::ZERO);
        let q: QueueConfig = crate::config::decode(json!({"protocol": {"custom_lua": {
            "constructor": "make.webhook", "batch_size": 100, "min_batch_size": 10, "max_batch_latency": "5s"}}}))
        .unwrap();
        let Protocol::CustomLua(c) = q.protocol else { panic!() };
        assert_eq!((c.batch_size, c.min_batch_size, c.max_batch_latency), (100, 10, Duration::from_secs(5)));
        let bad = |v: serde_json::Value| {
            crate::config::decode::<QueueConfig>(json!({"protocol": {"custom_lua": v}})).unwrap_err()
        };
        assert!(bad(json!({})).contains("constructor"), "{}", bad(json!({})));
        assert!(bad(json!({"constructor": "m", "batchsize": 5})).contains("batchsize"));
        assert!(
            bad(json!({"constructor": "m", "batch_size": 5, "min_batch_size": 6}))
                .contains("min_batch_size (6) <= batch_size (5)")
        );
        assert!(bad(json!({"constructor": "m", "batch_size": 0})).contains("batch_size"));
    }
}
