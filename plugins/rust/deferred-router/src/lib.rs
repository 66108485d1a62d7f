//! Example deferred-queue router (world `deferred-router`), part (a) of
//! `plugins/example-policy.lua`: refuse blocklisted senders with 550 5.7.1, then set the
//! `tenant`, `campaign` and `queue` meta from the `X-Tenant`, `X-Campaign` and `X-Queue`
//! headers.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "deferred-router",
    with: {
        "wasmta:policy/types@0.1.1": wasmta_sdk::types,
        "wasmta:policy/host@0.1.1": wasmta_sdk::host,
    },
});

use exports::wasmta::policy::deferred_inject::Guest;
use wasmta_sdk::{ConnMeta, Message, MessageExt, Rejection, reject};

const BLOCKED_SENDERS: &[&str] = &["spammer@bulk.example"];
const BLOCKED_DOMAINS: &[&str] = &["blocked.example"];
const ROUTING_HEADERS: &[(&str, &str)] = &[("X-Tenant", "tenant"), ("X-Campaign", "campaign"), ("X-Queue", "queue")];

struct Router;

impl Guest for Router {
    fn smtp_server_message_deferred_inject(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
        let sender = msg.sender();
        if BLOCKED_SENDERS.contains(&sender.email.as_str()) || BLOCKED_DOMAINS.contains(&sender.domain.as_str()) {
            return Err(reject(550, "5.7.1", format!("sender {} is blocklisted", sender.email)));
        }
        for (header, meta) in ROUTING_HEADERS {
            if let Some(value) = msg.header(header) {
                msg.set_meta_str(meta, &value)?;
            }
        }
        Ok(())
    }
}

export!(Router);
