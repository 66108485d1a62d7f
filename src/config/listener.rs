//! `kumo.start_esmtp_listener` parameters: every option KumoMTA accepts, its default, and
//! the per-connection merge of `via`, `peer` and dynamic-parameter overrides.

use super::cidr::{CidrSet, parse_net};
use super::units;
use crate::protocol::LineEndings;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::time::Duration;

/// A key or certificate: a file path, inline data, or a Vault reference (accepted, not
/// yet fetched).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeySource {
    /// A file path.
    File(String),
    /// Inline PEM.
    Data {
        /// The PEM text.
        key_data: String,
    },
    /// HashiCorp Vault.
    Vault {
        /// Mount.
        vault_mount: String,
        /// Path.
        vault_path: String,
        /// Key name.
        #[serde(default)]
        vault_key: Option<String>,
        /// Address.
        #[serde(default)]
        vault_address: Option<String>,
        /// Token.
        #[serde(default)]
        vault_token: Option<String>,
    },
}

/// How a multi-recipient transaction becomes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BatchHandling {
    /// One message per recipient.
    #[default]
    BifurcateAlways,
    /// One message per recipient domain.
    BatchByDomain,
}

/// `trace_headers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceHeaders {
    /// Add a `Received:` header.
    pub received_header: bool,
    /// Add the supplemental header.
    pub supplemental_header: bool,
    /// Its name.
    pub header_name: String,
    /// Meta keys copied into it.
    #[serde(with = "units::string_list")]
    pub include_meta_names: Vec<String>,
}

impl Default for TraceHeaders {
    fn default() -> Self {
        TraceHeaders {
            received_header: true,
            supplemental_header: true,
            header_name: "X-KumoRef".into(),
            include_meta_names: vec![],
        }
    }
}

/// Listener options that may vary per connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSettings {
    /// Name in the banner and replies.
    pub hostname: String,
    /// Peers allowed to relay anywhere.
    #[serde(with = "units::string_list")]
    pub relay_hosts: Vec<String>,
    /// Banner text after the hostname.
    pub banner: String,
    /// Offer and accept AUTH on a connection without TLS (credentials in clear text: for
    /// trusted networks only). Default false: AUTH comes after STARTTLS.
    pub allow_auth_without_tls: bool,
    /// Transaction splitting.
    pub batch_handling: BatchHandling,
    /// Server certificate (self-signed when absent).
    pub tls_certificate: Option<KeySource>,
    /// Server key.
    pub tls_private_key: Option<KeySource>,
    /// CA for client certificates.
    pub tls_required_client_ca: Option<KeySource>,
    /// Keep messages in memory until their first transient failure.
    pub deferred_spool: bool,
    /// Skip `smtp_server_message_received`; queue to the deferred-injection queue.
    pub deferred_queue: bool,
    /// Trace headers.
    pub trace_headers: TraceHeaders,
    /// Read timeout.
    #[serde(with = "units::duration")]
    pub client_timeout: Duration,
    /// Longest a session may last, however busy (a trickling client cannot hold a
    /// connection forever); then `421 4.3.2`.
    #[serde(with = "units::duration")]
    pub max_session_duration: Duration,
    /// Time allowed for post-DATA processing.
    #[serde(with = "units::duration")]
    pub data_processing_timeout: Duration,
    /// Messages per connection.
    pub max_messages_per_connection: usize,
    /// Recipients per message.
    pub max_recipients_per_message: usize,
    /// Largest message.
    #[serde(with = "units::size")]
    pub max_message_size: u64,
    /// Most `Received:` header fields a message may carry before it is refused as a
    /// mail loop (`554 5.4.6`).
    pub max_received_headers: usize,
    /// Largest header section (`552 5.3.4` above it).
    #[serde(with = "units::size")]
    pub max_header_size: u64,
    /// Read buffer size.
    #[serde(with = "units::size")]
    pub data_buffer_size: u64,
    /// Bare CR / LF handling.
    pub invalid_line_endings: LineEndings,
    /// Longest command or text line.
    pub line_length_hard_limit: usize,
    /// XCLIENT (accepted, not offered yet).
    pub allow_xclient: bool,
    /// HAProxy PROXY protocol (accepted, not implemented yet).
    pub require_proxy_protocol: bool,
    /// Preset connection metadata.
    pub meta: Map<String, Value>,
}

/// The machine's host name.
pub fn machine_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length and gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            hostname: machine_hostname(),
            relay_hosts: vec!["127.0.0.1".into(), "::1".into()],
            banner: "KumoMTA".into(),
            allow_auth_without_tls: false,
            batch_handling: BatchHandling::default(),
            tls_certificate: None,
            tls_private_key: None,
            tls_required_client_ca: None,
            deferred_spool: false,
            deferred_queue: false,
            trace_headers: TraceHeaders::default(),
            client_timeout: Duration::from_secs(60),
            max_session_duration: Duration::from_secs(3600),
            data_processing_timeout: Duration::from_secs(300),
            max_messages_per_connection: 10_000,
            max_recipients_per_message: 1024,
            max_message_size: 20 * 1024 * 1024,
            max_received_headers: 50,
            max_header_size: 100 * 1024,
            data_buffer_size: 128 * 1024,
            invalid_line_endings: LineEndings::Deny,
            line_length_hard_limit: 998,
            allow_xclient: false,
            require_proxy_protocol: false,
            meta: Map::new(),
        }
    }
}

impl ListenerSettings {
    /// These settings with `overrides` (a table of the same keys) laid over them.
    pub fn merged(&self, overrides: &Map<String, Value>) -> Result<ListenerSettings, String> {
        let mut base = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => return Err("listener settings did not serialize".into()),
        };
        for (k, v) in overrides {
            base.insert(k.clone(), v.clone());
        }
        let merged: ListenerSettings = super::decode(Value::Object(base))?;
        merged.validate()?;
        Ok(merged)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        CidrSet::parse(&self.relay_hosts).map_err(|e| format!("relay_hosts: {e}"))?;
        if self.line_length_hard_limit < 78 {
            return Err("line_length_hard_limit: must be at least 78".into());
        }
        Ok(())
    }

    /// `relay_hosts` as a set (validated at load time).
    pub fn relay_set(&self) -> CidrSet {
        CidrSet::parse(&self.relay_hosts).unwrap_or_default()
    }
}

/// Checks a `listen` address: `ip:port` or `host:port` with a port in range, so a
/// typo fails `wasmta check` rather than `serve`.
pub fn check_listen(text: &str) -> Result<(), String> {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("listen: {text:?} is not an address like \"0.0.0.0:25\" or \"[::]:25\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| format!("listen: port {port:?} of {text:?} is not a port number (0-65535)"))?;
    if host.is_empty() || host.contains(['[', ']', ' ', '/']) {
        return Err(bad());
    }
    Ok(())
}

/// Option overrides keyed by network (`via`, `peer`).
pub type Overrides = Vec<(IpNet, Map<String, Value>)>;

/// One `start_esmtp_listener` call.
#[derive(Debug, Clone)]
pub struct EsmtpListenerConfig {
    /// Address to bind.
    pub listen: String,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Settings for every connection before overrides.
    pub settings: ListenerSettings,
    /// Overrides keyed by local address (`via`).
    pub via: Overrides,
    /// Overrides keyed by peer address (`peer`).
    pub peer: Overrides,
}

impl EsmtpListenerConfig {
    /// Builds from the option table given to `kumo.start_esmtp_listener`.
    pub fn from_table(mut table: Map<String, Value>) -> Result<Self, String> {
        let listen = match table.remove("listen") {
            None => "127.0.0.1:2025".to_string(),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(format!("listen: expected a string like \"0.0.0.0:25\", got {other}"));
            }
        };
        check_listen(&listen)?;
        let max_connections = match table.remove("max_connections") {
            None => 32 * 1024,
            Some(v) => v.as_u64().ok_or_else(|| format!("max_connections: expected a number, got {v}"))? as usize,
        };
        let via = cidr_blocks(table.remove("via"), "via")?;
        let peer = cidr_blocks(table.remove("peer"), "peer")?;
        let settings: ListenerSettings = super::decode(Value::Object(table))?;
        settings.validate()?;
        for (net, o) in via.iter().chain(peer.iter()) {
            settings.merged(o).map_err(|e| format!("override for {net}: {e}"))?;
        }
        Ok(EsmtpListenerConfig { listen, max_connections, settings, via, peer })
    }

    /// The settings for one connection: base, then matching `via` blocks, then matching
    /// `peer` blocks.
    pub fn settings_for(&self, local: IpAddr, peer: IpAddr) -> ListenerSettings {
        let mut overrides = Map::new();
        let (local, peer) = (local.to_canonical(), peer.to_canonical());
        for (net, o) in self.via.iter().filter(|(n, _)| n.contains(&local)) {
            let _ = net;
            overrides.extend(o.clone());
        }
        for (_, o) in self.peer.iter().filter(|(n, _)| n.contains(&peer)) {
            overrides.extend(o.clone());
        }
        if overrides.is_empty() {
            return self.settings.clone();
        }
        self.settings.merged(&overrides).unwrap_or_else(|_| self.settings.clone())
    }
}

fn cidr_blocks(value: Option<Value>, key: &str) -> Result<Overrides, String> {
    let Some(value) = value else {
        return Ok(vec![]);
    };
    let Value::Object(map) = value else {
        return Err(format!("{key}: expected a table keyed by CIDR"));
    };
    let mut out = Vec::new();
    for (cidr, block) in map {
        let net = parse_net(&cidr).map_err(|e| format!("{key}: {e}"))?;
        let Value::Object(block) = block else {
            return Err(format!("{key}.{cidr}: expected a table"));
        };
        out.push((net, block));
    }
    // more specific networks apply last, so they win
    out.sort_by_key(|(n, _)| n.prefix_len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_match_kumomta() {
        let c = EsmtpListenerConfig::from_table(Map::new()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2025");
        assert_eq!(c.max_connections, 32768);
        let s = &c.settings;
        assert_eq!(s.max_message_size, 20 * 1024 * 1024);
        assert_eq!(s.max_recipients_per_message, 1024);
        assert_eq!(s.max_messages_per_connection, 10_000);
        assert_eq!(s.line_length_hard_limit, 998);
        assert_eq!(s.client_timeout, Duration::from_secs(60));
        assert_eq!(s.data_processing_timeout, Duration::from_secs(300));
        assert_eq!(s.banner, "KumoMTA");
        assert_eq!(s.trace_headers.header_name, "X-KumoRef");
        assert_eq!(s.invalid_line_endings, LineEndings::Deny);
    }

    #[test]
    fn parses_kumomta_forms_and_names_bad_keys() {
        let c = EsmtpListenerConfig::from_table(table(json!({
            "listen": "0.0.0.0:25", "hostname": "mx.example", "max_message_size": "10 MB",
            "client_timeout": "5 seconds", "relay_hosts": ["10.0.0.0/8"], "invalid_line_endings": "Fix",
            "trace_headers": {"supplemental_header": false}, "meta": {"a": 1},
        })))
        .unwrap();
        assert_eq!(c.settings.max_message_size, 10 * 1024 * 1024);
        assert_eq!(c.settings.client_timeout, Duration::from_secs(5));
        assert!(!c.settings.trace_headers.supplemental_header);
        assert!(c.settings.trace_headers.received_header);
        let err = EsmtpListenerConfig::from_table(table(json!({"hostnme": "x"}))).unwrap_err();
        assert!(err.contains("hostnme"), "{err}");
        let err = EsmtpListenerConfig::from_table(table(json!({"max_recipients_per_message": "lots"}))).unwrap_err();
        assert!(err.contains("max_recipients_per_message"), "{err}");
        let err = EsmtpListenerConfig::from_table(table(json!({"trace_headers": {"bogus": 1}}))).unwrap_err();
        assert!(err.contains("trace_headers") && err.contains("bogus"), "{err}");
        let err = EsmtpListenerConfig::from_table(table(json!({"relay_hosts": ["not-an-ip"]}))).unwrap_err();
        assert!(err.contains("relay_hosts"), "{err}");
        for bad in ["127.0.0.1:99999", "127.0.0.1", "nonsense", ":25", "127.0.0.1:-1"] {
            let err = EsmtpListenerConfig::from_table(table(json!({"listen": bad}))).unwrap_err();
            assert!(err.starts_with("listen: "), "{bad}: {err}");
        }
        for good in ["0.0.0.0:25", "[::]:2525", "localhost:2525"] {
            EsmtpListenerConfig::from_table(table(json!({"listen": good}))).unwrap();
        }
    }

    #[test]
    fn peer_and_via_overrides_apply_by_address() {
        let c = EsmtpListenerConfig::from_table(table(json!({
            "max_recipients_per_message": 10,
            "via": {"127.0.0.0/8": {"banner": "via"}},
            "peer": {"10.0.0.0/8": {"max_recipients_per_message": 5}, "10.1.0.0/16": {"max_recipients_per_message": 2}},
        })))
        .unwrap();
        let s = c.settings_for("127.0.0.1".parse().unwrap(), "10.1.2.3".parse().unwrap());
        assert_eq!(s.banner, "via");
        assert_eq!(s.max_recipients_per_message, 2);
        let s = c.settings_for("192.0.2.1".parse().unwrap(), "10.9.2.3".parse().unwrap());
        assert_eq!(s.banner, "KumoMTA");
        assert_eq!(s.max_recipients_per_message, 5);
        assert!(EsmtpListenerConfig::from_table(table(json!({"peer": {"10.0.0.0/8": {"nope": 1}}}))).is_err());
    }
}
