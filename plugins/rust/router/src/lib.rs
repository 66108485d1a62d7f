//! Example routing component (world `routing`), part (b) of `plugins/example-policy.lua`.
//! Domains of the form `<port>.smarthost.test` are sent to `127.0.0.1:<port>` with TLS
//! disabled and at most two connections; `get_egress_path_config` answers other domains
//! from an embedded table; everything else keeps wasmta's defaults (`None`: not mine).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "routing",
    with: {
        "wasmta:policy/types@0.1.1": wasmta_sdk::types,
        "wasmta:policy/host@0.1.1": wasmta_sdk::host,
    },
});

#[path = "../../common/smarthost.rs"]
mod smarthost;

use exports::wasmta::policy::egress::Guest as Egress;
use exports::wasmta::policy::queue_config::Guest as Queues;
use wasmta_sdk::{EgressPathConfig, QueueConfig, QueueNameParts, Rejection, TlsMode, egress_path};

/// routing domain -> (connection_limit, max_message_rate, max_deliveries_per_connection)
const EGRESS: &[(&str, &str, Option<&str>, Option<u32>)] =
    &[("gmail.com", "5", Some("50/s"), None), ("yahoo.com", "3", None, Some(20))];

struct Router;

impl Queues for Router {
    fn get_queue_config(parts: QueueNameParts) -> Result<Option<QueueConfig>, Rejection> {
        Ok(smarthost::queue(parts))
    }
}

impl Egress for Router {
    wasmta_sdk::default_pools_and_sources!();

    fn get_egress_path_config(
        routing_domain: String,
        _source: String,
        _site: String,
    ) -> Result<Option<EgressPathConfig>, Rejection> {
        if smarthost::port(&routing_domain).is_some() {
            return Ok(Some(EgressPathConfig {
                connection_limit: Some("2".into()),
                enable_tls: Some(TlsMode::Disabled),
                max_deliveries_per_connection: Some(100),
                ehlo_domain: Some("router.wasm.test".into()),
                provider_name: Some("wasm-router".into()),
                ..egress_path()
            }));
        }
        Ok(EGRESS.iter().find(|e| e.0 == routing_domain).map(|&(_, limit, rate, per_conn)| EgressPathConfig {
            connection_limit: Some(limit.into()),
            max_message_rate: rate.map(Into::into),
            max_deliveries_per_connection: per_conn,
            ..egress_path()
        }))
    }
}

export!(Router);
