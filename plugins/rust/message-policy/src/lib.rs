//! Example policy component (world `message-policy`): on every received message it adds
//! `X-Wasm-Policy: checked`, sets the `tenant` meta from an `X-Tenant` header, and rejects
//! messages that carry `X-Block` with `550 5.7.1`.

wit_bindgen::generate!({ path: "../../../wit", world: "message-policy" });

use exports::wasmta::policy::message_received::Guest;
use wasmta::policy::host::{Level, log};
use wasmta::policy::types::{ConnMeta, Message, Rejection};

struct Policy;

impl Guest for Policy {
    fn smtp_server_message_received(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
        if let Some(reason) = msg.get_first_named_header_value("X-Block") {
            return Err(Rejection {
                code: 550,
                enhanced_code: Some("5.7.1".into()),
                text: format!("blocked by wasm policy: {reason}"),
                disconnect: None,
            });
        }
        if let Some(tenant) = msg.get_first_named_header_value("X-Tenant") {
            let json = format!("\"{}\"", tenant.replace('\\', "\\\\").replace('"', "\\\""));
            msg.set_meta("tenant", &json).map_err(|e| Rejection {
                code: 451,
                enhanced_code: Some("4.3.0".into()),
                text: e,
                disconnect: None,
            })?;
        }
        msg.prepend_header("X-Wasm-Policy", "checked");
        log(Level::Debug, &format!("message {} checked", msg.id()));
        Ok(())
    }
}

export!(Policy);
