//! Example routing component (world `routing`). Routing domains of the form
//! `<port>.smarthost.test` are sent to `127.0.0.1:<port>` with TLS disabled and at most two
//! connections; every other queue keeps wasmta's defaults. Pools and sources are left to
//! the defaults (`unspecified`).

wit_bindgen::generate!({ path: "../../../wit", world: "routing" });

use exports::wasmta::policy::egress::Guest as Egress;
use exports::wasmta::policy::queue_config::Guest as Queues;
use wasmta::policy::types::{
    DeliveryProtocol, EgressPathConfig, EgressPool, EgressSource, MxEntry, QueueConfig, QueueNameParts, Rejection, TlsMode,
};

struct Router;

fn smarthost_port(domain: &str) -> Option<u16> {
    domain.strip_suffix(".smarthost.test")?.parse().ok()
}

impl Queues for Router {
    fn get_queue_config(parts: QueueNameParts) -> Result<Option<QueueConfig>, Rejection> {
        let Some(port) = parts.routing_domain.as_deref().and_then(smarthost_port) else { return Ok(None) };
        Ok(Some(QueueConfig {
            retry_interval: Some("1s".into()),
            max_retry_interval: None,
            max_age: None,
            egress_pool: None,
            max_message_rate: None,
            protocol: Some(DeliveryProtocol::Smtp(vec![MxEntry { name: format!("127.0.0.1:{port}"), addr: None }])),
            reap_interval: None,
            refresh_interval: None,
            refresh_strategy: None,
            provider_name: None,
        }))
    }
}

impl Egress for Router {
    fn get_egress_pool(_name: String) -> Result<Option<EgressPool>, Rejection> {
        Ok(None)
    }

    fn get_egress_source(_name: String) -> Result<Option<EgressSource>, Rejection> {
        Ok(None)
    }

    fn get_egress_path_config(routing_domain: String, _source: String, _site: String) -> Result<Option<EgressPathConfig>, Rejection> {
        if smarthost_port(&routing_domain).is_none() {
            return Ok(None);
        }
        Ok(Some(EgressPathConfig {
            connection_limit: Some("2".into()),
            additional_connection_limits: None,
            max_connection_rate: None,
            max_message_rate: None,
            additional_message_rate_throttles: None,
            max_deliveries_per_connection: Some(100),
            max_ready: None,
            consecutive_connection_failures_before_delay: None,
            enable_tls: Some(TlsMode::Disabled),
            enable_pipelining: None,
            enable_rset: None,
            smtp_port: None,
            ehlo_domain: Some("router.wasm.test".into()),
            prohibited_hosts: None,
            skip_hosts: None,
            connect_timeout: None,
            banner_timeout: None,
            ehlo_timeout: None,
            mail_from_timeout: None,
            rcpt_to_timeout: None,
            data_timeout: None,
            data_dot_timeout: None,
            idle_timeout: None,
            rset_timeout: None,
            starttls_timeout: None,
            refresh_interval: None,
            refresh_strategy: None,
            provider_name: Some("wasm-router".into()),
            extra: None,
        }))
    }
}

export!(Router);
