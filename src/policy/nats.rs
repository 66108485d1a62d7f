//! NATS for policy code (`kumo.nats.connect` in Lua): a client on `async-nats` (the NATS
//! project's own Rust client) with KumoMTA's option names, publishing either to JetStream
//! and waiting for the stream's acknowledgement (the default: a record is only "sent" once
//! a stream holds it) or as a core publish flushed to the server.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A credential in KumoMTA's keysource forms: a string is the path of a file holding it,
/// `{ key_data = '...' }` the value itself, `{ key_path = '/file' }` a file again.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeySource {
    /// A file holding the value.
    Path(PathBuf),
    /// `{ key_data = ... }` or `{ key_path = ... }`.
    Table(KeyTable),
}

/// The table form of a [`KeySource`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTable {
    /// The value itself.
    #[serde(default)]
    pub key_data: Option<String>,
    /// A file holding the value (trailing newline removed).
    #[serde(default)]
    pub key_path: Option<PathBuf>,
}

impl KeySource {
    /// The credential's text.
    pub fn resolve(&self, what: &str) -> Result<String, String> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(|e| {
                format!(
                    "{what}: cannot read {} (a string is a file path; inline text is {{ key_data = ... }}): {e}",
                    p.display()
                )
            })
        };
        match self {
            KeySource::Path(p) => read(p),
            KeySource::Table(KeyTable { key_data: Some(d), key_path: None }) => Ok(d.clone()),
            KeySource::Table(KeyTable { key_data: None, key_path: Some(p) }) => read(p),
            KeySource::Table(_) => Err(format!("{what}: give exactly one of key_data and key_path")),
        }
    }
}

/// `auth = { username, password }` or `auth = { token }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub username: Option<KeySource>,
    #[serde(default)]
    pub password: Option<KeySource>,
    #[serde(default)]
    pub token: Option<KeySource>,
}

/// `kumo.nats.connect{...}` options (KumoMTA's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectOptions {
    /// Server addresses (`nats://host:port` or `host:port`).
    pub servers: Vec<String>,
    /// The client's name, shown by the server.
    pub name: String,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub no_echo: bool,
    /// Reconnect attempts before giving up; 0 (the default) for no limit.
    #[serde(default)]
    pub max_reconnects: usize,
    /// TCP connect timeout (default 5 s).
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub connection_timeout: Option<Duration>,
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub tls_first: bool,
    /// Root certificates (PEM file) to trust.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub ping_interval: Option<Duration>,
    /// Capacity of the client's command channel (default 128).
    #[serde(default)]
    pub sender_capacity: Option<usize>,
    #[serde(default)]
    pub inbox_prefix: Option<String>,
    /// How long a JetStream publish waits for its acknowledgement (default 10 s).
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub request_timeout: Option<Duration>,
}

/// `client:publish{...}` parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub subject: String,
    pub payload: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Publish to JetStream and wait for a stream to acknowledge (default true).
    #[serde(default = "yes")]
    pub await_ack: bool,
}

fn yes() -> bool {
    true
}

/// What a stream answered to a JetStream publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ack {
    pub stream: String,
    pub sequence: u64,
    pub domain: String,
    pub duplicate: bool,
    pub value: Option<String>,
}

/// A connected client.
#[derive(Clone)]
pub struct Client {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    super::http::chain(e)
}

/// Connects (the first connection must succeed; later losses are reconnected).
pub async fn connect(o: &ConnectOptions) -> Result<Client, String> {
    if o.servers.is_empty() {
        return Err("kumo.nats.connect: servers: give at least one address".into());
    }
    let mut addrs = vec![];
    for s in &o.servers {
        addrs.push(
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("kumo.nats.connect: servers: {s:?} is not a NATS address: {}", chain(&e)))?,
        );
    }
    let mut b = async_nats::ConnectOptions::new()
        .name(&o.name)
        .max_reconnects((o.max_reconnects > 0).then_some(o.max_reconnects))
        .connection_timeout(o.connection_timeout.unwrap_or(Duration::from_secs(5)))
        .require_tls(o.tls_required);
    if let Some(auth) = &o.auth {
        let text = |k: &Option<KeySource>, what: &str| k.as_ref().map(|k| k.resolve(what)).transpose();
        let user = text(&auth.username, "kumo.nats.connect: auth.username")?;
        let pass = text(&auth.password, "kumo.nats.connect: auth.password")?;
        let token = text(&auth.token, "kumo.nats.connect: auth.token")?;
        b = match (user, pass, token) {
            (Some(u), Some(p), None) => b.user_and_password(u, p),
            (None, None, Some(t)) => b.token(t),
            _ => return Err("kumo.nats.connect: auth: give username and password, or token".into()),
        };
    }
    if o.no_echo {
        b = b.no_echo();
    }
    if o.tls_first {
        b = b.tls_first();
    }
    if let Some(p) = &o.certificate {
        b = b.add_root_certificates(p.clone());
    }
    match (&o.client_cert, &o.client_key) {
        (Some(c), Some(k)) => b = b.add_client_certificate(c.clone(), k.clone()),
        (None, None) => {}
        _ => return Err("kumo.nats.connect: client_cert and client_key go together".into()),
    }
    if let Some(i) = o.ping_interval {
        b = b.ping_interval(i);
    }
    if let Some(c) = o.sender_capacity {
        b = b.client_capacity(c);
    }
    if let Some(p) = &o.inbox_prefix {
        b = b.custom_inbox_prefix(p);
    }
    b = b.request_timeout(Some(o.request_timeout.unwrap_or(Duration::from_secs(10))));
    let client = b
        .connect(addrs)
        .await
        .map_err(|e| format!("kumo.nats.connect: cannot connect to {}: {}", o.servers.join(", "), chain(&e)))?;
    let jetstream = async_nats::jetstream::new(client.clone());
    Ok(Client { client, jetstream })
}

impl Client {
    /// Publishes; with `await_ack`, returns the stream's acknowledgement.
    pub async fn publish(&self, p: Publish) -> Result<Option<Ack>, String> {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &p.headers {
            headers.insert(k.as_str(), v.as_str());
        }
        let what = format!("nats publish to {:?}", p.subject);
        if !p.await_ack {
            self.client
                .publish_with_headers(p.subject, headers, p.payload.into())
                .await
                .map_err(|e| format!("{what}: {}", chain(&e)))?;
            // on the wire before the caller calls it sent
            self.client.flush().await.map_err(|e| format!("{what}: {}", chain(&e)))?;
            return Ok(None);
        }
        let ack = self
            .jetstream
            .publish_with_headers(p.subject, headers, p.payload.into())
            .await
            .map_err(|e| format!("{what}: {}", chain(&e)))?
            .await
            .map_err(|e| format!("{what}: no stream acknowledged it: {}", chain(&e)))?;
        Ok(Some(Ack {
            stream: ack.stream,
            sequence: ack.sequence,
            domain: ack.domain,
            duplicate: ack.duplicate,
            value: ack.value,
        }))
    }

    /// Flushes what is buffered and disconnects.
    pub async fn close(&self) -> Result<(), String> {
        self.client.drain().await.map_err(|e| format!("nats close: {}", chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: serde_json::Value) -> Result<String, String> {
        crate::config::decode::<KeySource>(v)?.resolve("auth.password")
    }

    #[test]
    fn credentials_take_kumomta_keysource_forms() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(key(json!(file.to_str().unwrap())).unwrap(), "s3cret", "a string is a file path");
        assert_eq!(key(json!({ "key_path": file })).unwrap(), "s3cret");
        assert_eq!(key(json!({ "key_data": "inline" })).unwrap(), "inline");
        let e = key(json!("s3cret")).unwrap_err();
        assert!(e.contains("cannot read s3cret") && e.contains("key_data"), "{e}");
        let e = key(json!({ "key_data": "a", "key_path": "/x" })).unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn options_are_checked_by_name() {
        let e = crate::config::decode::<ConnectOptions>(json!({ "server": ["x"], "name": "n" })).unwrap_err();
        assert!(e.contains("server"), "{e}");
        let o: ConnectOptions = crate::config::decode(json!({ "servers": ["127.0.0.1:4222"], "name": "n" })).unwrap();
        assert_eq!(o.max_reconnects, 0);
        let p: Publish = crate::config::decode(json!({ "subject": "s", "payload": "p" })).unwrap();
        assert!(p.await_ack, "a stream's acknowledgement is awaited unless the policy says otherwise");
    }
}
