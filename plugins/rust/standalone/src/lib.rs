//! A whole wasmta deployment in one component (world `standalone`), with no Lua at all:
//! `wasmta serve --policy standalone.wasm [--set listen=ADDR] [--set data=DIR]`.
//!
//! * `init` starts an ESMTP listener (setting `listen`, default 127.0.0.1:2525), a spool
//!   and logs under the setting `data` (default `data`), and, with `--set test-dns=1`,
//!   the test resolver (no real DNS); with `--set redis=redis://HOST:PORT`, throttles and
//!   connection limits shared through that Redis (`config.configure-redis-throttles`);
//!   with `--set dkim-key=PATH --set dkim-domain=DOMAIN`, received messages DKIM-signed
//!   (rsa-sha256, selector s2048) by the host's `dkim-sign`.
//! * `smtp_server_message_received`: part (c) of `plugins/example-policy.lua`.
//! * routing: part (b) — `<port>.smarthost.test` goes to 127.0.0.1:<port>. With
//!   `--set shaping=FILE` the deployment uses that shaping file (`config.use-shaping`) and
//!   the component only overrides what it must: it reads the shaped options
//!   (`shaped-egress-path-config`) and prefixes their `ehlo_domain` with `wasm-over-`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "standalone",
    with: {
        "wasmta:policy/types@0.1.1": wasmta_sdk::types,
        "wasmta:policy/host@0.1.1": wasmta_sdk::host,
        "wasmta:policy/config@0.1.1": wasmta_sdk::config,
    },
});

#[path = "../../common/smarthost.rs"]
mod smarthost;

use exports::wasmta::policy::egress::Guest as Egress;
use exports::wasmta::policy::init::Guest as Init;
use exports::wasmta::policy::message_received::Guest as Received;
use exports::wasmta::policy::queue_config::Guest as Queues;
use wasmta_sdk::{
    ConnMeta, EgressPathConfig, Message, MessageExt, QueueConfig, QueueNameParts, Rejection, TlsMode, config,
    egress_path, json_string, reject, tempfail,
};

struct Deployment;

fn setting(name: &str, default: &str) -> String {
    config::setting(name).unwrap_or_else(|| default.to_string())
}

impl Init for Deployment {
    fn init() -> Result<(), Rejection> {
        let data = setting("data", "data");
        config::define_spool(&format!(r#"{{"name": "data", "path": {}}}"#, json_string(&format!("{data}/spool"))))
            .map_err(tempfail)?;
        config::configure_local_logs(&format!(r#"{{"log_dir": {}}}"#, json_string(&format!("{data}/logs"))))
            .map_err(tempfail)?;
        if let Some(file) = config::setting("shaping") {
            config::use_shaping(&[file]).map_err(tempfail)?;
        }
        if let Some(node) = config::setting("redis") {
            // throttles and connection limits shared with every node on this Redis
            config::configure_redis_throttles(&format!(r#"{{"node": {}}}"#, json_string(&node))).map_err(tempfail)?;
        }
        if config::setting("test-dns").is_some() {
            config::configure_test_resolver("").map_err(tempfail)?;
        }
        let listen = setting("listen", "127.0.0.1:2525");
        config::start_esmtp_listener(&format!(r#"{{"listen": {}, "hostname": "mx.test"}}"#, json_string(&listen)))
            .map_err(tempfail)?;
        Ok(())
    }
}

impl Received for Deployment {
    fn smtp_server_message_received(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
        if let Some(reason) = msg.header("X-Block") {
            return Err(reject(550, "5.7.1", format!("blocked by wasm policy: {reason}")));
        }
        if msg.data_size() > 65536 {
            return Err(reject(552, "5.3.4", "message exceeds the policy size limit"));
        }
        if let Some(tenant) = msg.header("X-Tenant") {
            msg.set_meta_str("tenant", &tenant)?;
        }
        msg.prepend_header("X-Wasm-Policy", "checked");
        // with `--set dkim-key=PATH --set dkim-domain=D`: signed last, by the host (the key
        // stays on the host's side; the component names its path)
        if let (Some(key), Some(domain)) = (config::setting("dkim-key"), config::setting("dkim-domain")) {
            let params = format!(
                r#"{{"domain": {}, "selector": "s2048", "headers": ["From", "To", "Subject", "X-Wasm-Policy"], "key": {}}}"#,
                json_string(&domain),
                json_string(&key)
            );
            wasmta_sdk::host::dkim_sign(msg, "rsa-sha256", &params).map_err(tempfail)?;
        }
        Ok(())
    }
}

impl Queues for Deployment {
    fn get_queue_config(parts: QueueNameParts) -> Result<Option<QueueConfig>, Rejection> {
        Ok(smarthost::queue(parts))
    }
}

impl Egress for Deployment {
    wasmta_sdk::default_pools_and_sources!();

    fn get_egress_path_config(
        routing_domain: String,
        source: String,
        site: String,
    ) -> Result<Option<EgressPathConfig>, Rejection> {
        if let Some(shaped) = wasmta_sdk::host::shaped_egress_path_config(&routing_domain, &source, &site) {
            // start from the shaped options: override one field, keep the rest
            let shaped: serde_json::Value = serde_json::from_str(&shaped).map_err(|e| tempfail(e.to_string()))?;
            let ehlo = shaped["ehlo_domain"].as_str().unwrap_or("none");
            return Ok(Some(EgressPathConfig { ehlo_domain: Some(format!("wasm-over-{ehlo}")), ..egress_path() }));
        }
        Ok(smarthost::port(&routing_domain).map(|_| EgressPathConfig {
            enable_tls: Some(TlsMode::Disabled),
            ehlo_domain: Some("standalone.wasm.test".into()),
            ..egress_path()
        }))
    }
}

export!(Deployment);
