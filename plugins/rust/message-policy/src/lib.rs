//! Example policy component (world `message-policy`), part (c) of `plugins/example-policy.lua`:
//! on every received message, reject with 550 5.7.1 when it carries `X-Block`, with
//! 552 5.3.4 when it is larger than 64 KiB, set the `tenant` meta from `X-Tenant`, and add
//! `X-Wasm-Policy: checked`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "message-policy",
    with: {
        "wasmta:policy/types@0.1.1": wasmta_sdk::types,
        "wasmta:policy/host@0.1.1": wasmta_sdk::host,
    },
});

use exports::wasmta::policy::message_received::Guest;
use wasmta_sdk::host::{Level, log};
use wasmta_sdk::{ConnMeta, Message, MessageExt, Rejection, reject};

const POLICY_SIZE_LIMIT: u64 = 65536;

struct Policy;

impl Guest for Policy {
    fn smtp_server_message_received(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
        if let Some(reason) = msg.header("X-Block") {
            return Err(reject(550, "5.7.1", format!("blocked by wasm policy: {reason}")));
        }
        if msg.data_size() > POLICY_SIZE_LIMIT {
            return Err(reject(552, "5.3.4", "message exceeds the policy size limit"));
        }
        if let Some(tenant) = msg.header("X-Tenant") {
            msg.set_meta_str("tenant", &tenant)?;
        }
        msg.prepend_header("X-Wasm-Policy", "checked");
        log(Level::Debug, &format!("message {} checked", msg.id()));
        Ok(())
    }
}

export!(Policy);
