//! Test routing shared by the example routing components (included with `#[path]`):
//! routing domains `<port>.smarthost.test` go to `127.0.0.1:<port>`.

use wasmta_sdk::{DeliveryProtocol, MxEntry, QueueConfig, QueueNameParts, queue_config};

/// The port of a `<port>.smarthost.test` domain.
pub fn port(domain: &str) -> Option<u16> {
    domain.strip_suffix(".smarthost.test")?.parse().ok()
}

/// The queue config of a smarthost domain (retry every second), or none.
pub fn queue(parts: QueueNameParts) -> Option<QueueConfig> {
    let domain = parts.routing_domain.or(parts.domain).unwrap_or_default();
    let port = port(&domain)?;
    Some(QueueConfig {
        retry_interval: Some("1s".into()),
        protocol: Some(DeliveryProtocol::Smtp(vec![MxEntry { name: format!("127.0.0.1:{port}"), addr: None }])),
        ..queue_config()
    })
}
