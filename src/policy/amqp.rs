//! AMQP 0-9-1 (RabbitMQ) for policy code: `kumo.amqp.build_client(uri)` with
//! `client:publish{...}` and `confirm:wait()`, and `kumo.amqp.basic_publish{...}` over a
//! kept connection per connection table. Built on `lapin` (rustls on ring).
//!
//! wasmta does better than KumoMTA here in two ways, both so a record is never lost
//! without a word: every channel is in publisher-confirm mode (the broker says Ack only
//! once it has taken the message; KumoMTA's client answers `NotRequested`), and every
//! publish is `mandatory` unless the policy says otherwise, so a message no queue is bound
//! to comes back and its publish fails (KumoMTA's broker acks and drops it).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// `publish{...}` parameters (both forms).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The queue (with the default exchange) or binding key.
    pub routing_key: String,
    pub payload: String,
    /// The exchange (default `""`, the default exchange).
    #[serde(default)]
    pub exchange: String,
    /// Return an unroutable message instead of dropping it (default true; see the module
    /// doc).
    #[serde(default = "yes")]
    pub mandatory: bool,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Store the message to disk at the broker (`delivery_mode = 2`; default true).
    #[serde(default = "yes")]
    pub persistent: bool,
    /// `basic_publish` only: where to publish.
    #[serde(default)]
    pub connection: Option<ConnectionInfo>,
}

fn yes() -> bool {
    true
}

/// `basic_publish`'s `connection = {...}` (KumoMTA's names).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInfo {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub vhost: Option<String>,
    #[serde(default)]
    pub connection_name: Option<String>,
    /// Heartbeat interval in seconds.
    #[serde(default)]
    pub heartbeat: Option<u16>,
    #[serde(default)]
    pub enable_tls: bool,
    /// A PEM file of CA certificates to trust (with `enable_tls`).
    #[serde(default)]
    pub root_ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_private_key: Option<PathBuf>,
    /// At most this many publishes in flight on the kept connection (default CPUs × 4).
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// How long a publish may wait for room when `pool_size` are in flight.
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub wait_timeout: Option<Duration>,
    /// Accepted for KumoMTA configs; wasmta checks a kept connection's state without
    /// a round trip, so there is nothing for it to bound.
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub recycle_timeout: Option<Duration>,
    /// How long a publish waits for the broker's confirmation (default 60 s).
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub publish_timeout: Option<Duration>,
}

/// The broker's answer to a publish (`confirm:wait()`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Confirm {
    /// `Ack` or `Nack`.
    pub status: &'static str,
    pub reply_code: Option<u16>,
    pub reply_text: Option<String>,
}

fn chain(e: &dyn std::error::Error) -> String {
    super::http::chain(e)
}

/// A connection and its confirm-mode channel.
#[derive(Clone)]
pub struct Client {
    connection: Arc<Connection>,
    channel: Channel,
    what: String,
}

const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

async fn open(uri: AMQPUri, props: ConnectionProperties, tls: Option<String>, what: String) -> Result<Client, String> {
    let runtime = lapin::runtime::default_runtime().map_err(|e| format!("{what}: {}", chain(&e)))?;
    let config = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: tls };
    let connection = Connection::connect_uri_with_config(uri, props, config, runtime)
        .await
        .map_err(|e| format!("{what}: cannot connect: {}", chain(&e)))?;
    let channel =
        connection.create_channel().await.map_err(|e| format!("{what}: cannot open a channel: {}", chain(&e)))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("{what}: cannot turn on publisher confirms: {}", chain(&e)))?;
    Ok(Client { connection: Arc::new(connection), channel, what })
}

/// `kumo.amqp.build_client(uri)`: connects now.
pub async fn build_client(uri: &str) -> Result<Client, String> {
    let parsed: AMQPUri =
        uri.parse().map_err(|e| format!("kumo.amqp.build_client: {uri:?} is not an AMQP URI: {e}"))?;
    let what = format!("amqp {}:{}", parsed.authority.host, parsed.authority.port);
    open(parsed, ConnectionProperties::default(), None, what).await
}

impl Client {
    /// True while the connection is up.
    pub fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes and waits for the broker's confirmation (at most `timeout`).
    pub async fn publish(&self, p: &Publish, timeout: Duration) -> Result<Confirm, String> {
        let what = format!("{}: publish to exchange {:?} routing_key {:?}", self.what, p.exchange, p.routing_key);
        let mut props = BasicProperties::default().with_delivery_mode(if p.persistent { 2 } else { 1 });
        if let Some(a) = &p.app_id {
            props = props.with_app_id(a.as_str().into());
        }
        if let Some(n) = p.priority {
            props = props.with_priority(n);
        }
        if let Some(c) = &p.content_type {
            props = props.with_content_type(c.as_str().into());
        }
        let options = BasicPublishOptions { mandatory: p.mandatory, ..Default::default() };
        let confirmed = tokio::time::timeout(timeout, async {
            let pending = self
                .channel
                .basic_publish(
                    p.exchange.as_str().into(),
                    p.routing_key.as_str().into(),
                    options,
                    p.payload.as_bytes(),
                    props,
                )
                .await
                .map_err(|e| format!("{what}: {}", chain(&e)))?;
            pending.await.map_err(|e| format!("{what}: no confirmation: {}", chain(&e)))
        })
        .await
        .map_err(|_| format!("{what}: no confirmation within {timeout:?}"))??;
        match confirmed {
            Confirmation::Ack(None) | Confirmation::NotRequested => {
                Ok(Confirm { status: "Ack", reply_code: None, reply_text: None })
            }
            Confirmation::Ack(Some(returned)) => Err(format!(
                "{what}: the broker could not route it and returned it ({} {}): nothing is bound to that routing key",
                returned.reply_code, returned.reply_text
            )),
            Confirmation::Nack(returned) => Ok(Confirm {
                status: "Nack",
                reply_code: returned.as_ref().map(|r| r.reply_code),
                reply_text: returned.map(|r| r.reply_text.to_string()),
            }),
        }
    }

    /// Closes the connection (closing one already closed or lost does nothing).
    pub async fn close(&self) -> Result<(), String> {
        if !self.connection.status().connected() {
            return Ok(());
        }
        self.connection
            .close(200, "closed by the policy".into())
            .await
            .map_err(|e| format!("{}: close: {}", self.what, chain(&e)))
    }
}

/// Kept connections of `basic_publish`, one per connection table, with the permits that
/// bound publishes in flight on it.
type Kept = Mutex<HashMap<ConnectionInfo, (Option<Client>, Arc<Semaphore>)>>;
static KEPT: LazyLock<Kept> = LazyLock::new(Default::default);

fn uri_of(c: &ConnectionInfo) -> AMQPUri {
    let scheme = if c.enable_tls { AMQPScheme::AMQPS } else { AMQPScheme::AMQP };
    let default_port = if c.enable_tls { 5671 } else { 5672 };
    AMQPUri {
        scheme,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: c.username.clone().unwrap_or_else(|| "guest".into()),
                password: c.password.clone().unwrap_or_else(|| "guest".into()),
            },
            host: c.host.clone(),
            port: c.port.unwrap_or(default_port),
        },
        vhost: c.vhost.clone().unwrap_or_else(|| "/".into()),
        query: AMQPQueryString {
            heartbeat: c.heartbeat,
            connection_timeout: c.connect_timeout.map(|d| d.as_millis() as u64),
            ..Default::default()
        },
    }
}

/// `kumo.amqp.basic_publish{...}`: publishes over the kept connection for its
/// `connection` table (made, or made again after a failure, on demand).
pub async fn basic_publish(p: &Publish) -> Result<Confirm, String> {
    let Some(info) = &p.connection else {
        return Err("kumo.amqp.basic_publish: connection = { host = ... } is required".into());
    };
    if info.client_cert.is_some() || info.client_private_key.is_some() {
        return Err(
            "kumo.amqp.basic_publish: client_cert/client_private_key: client certificates are not supported yet".into(),
        );
    }
    let permits = {
        let mut kept = KEPT.lock();
        let size = info.pool_size.unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(1, |n| n.get()));
        kept.entry(info.clone()).or_insert_with(|| (None, Arc::new(Semaphore::new(size.max(1))))).1.clone()
    };
    let wait = info.wait_timeout.unwrap_or(Duration::from_secs(60));
    let _permit = tokio::time::timeout(wait, permits.acquire_owned())
        .await
        .map_err(|_| format!("kumo.amqp.basic_publish: no room within {wait:?} (pool_size publishes in flight)"))?
        .map_err(|e| e.to_string())?;
    let kept = KEPT.lock().get(info).and_then(|(c, _)| c.clone()).filter(Client::usable);
    let client = match kept {
        Some(c) => c,
        None => {
            let tls = match &info.root_ca_cert {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    format!("kumo.amqp.basic_publish: root_ca_cert: cannot read {}: {e}", path.display())
                })?),
                None => None,
            };
            let mut props = ConnectionProperties::default();
            if let Some(name) = &info.connection_name {
                props = props.with_connection_name(name.as_str().into());
            }
            let what = format!("amqp {}:{}", info.host, uri_of(info).authority.port);
            let connect = open(uri_of(info), props, tls, what);
            let c = match info.connect_timeout {
                Some(t) => tokio::time::timeout(t, connect)
                    .await
                    .map_err(|_| format!("kumo.amqp.basic_publish: cannot connect to {} within {t:?}", info.host))??,
                None => connect.await?,
            };
            if let Some(entry) = KEPT.lock().get_mut(info) {
                entry.0 = Some(c.clone());
            }
            c
        }
    };
    let confirm = client.publish(p, info.publish_timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT)).await?;
    if confirm.status != "Ack" {
        return Err(format!(
            "kumo.amqp.basic_publish: the broker refused the message ({} {} {})",
            confirm.status,
            confirm.reply_code.map(|c| c.to_string()).unwrap_or_default(),
            confirm.reply_text.as_deref().unwrap_or_default()
        ));
    }
    Ok(confirm)
}

/// The publish timeout of a `build_client` client.
pub fn default_publish_timeout() -> Duration {
    DEFAULT_PUBLISH_TIMEOUT
}
