//! Example delivery component (world `delivery`): every log record of the hook named
//! `webhook` goes to the queue `webhook`, whose connections (`custom_lua` constructor
//! `make.webhook`) POST the records as JSON to the URL in the `webhook_url` setting
//! (`wasmta serve --set webhook_url=...`), one object per request or an array per batch.
//! A receiver that is down or answers 5xx, 408 or 429 is retried later; another answer
//! is permanent. The same hook as `log_hooks:new_json` in Lua.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "delivery",
    with: {
        "wasmta:policy/types@0.1.1": wasmta_sdk::types,
        "wasmta:policy/host@0.1.1": wasmta_sdk::host,
        "wasmta:policy/config@0.1.1": wasmta_sdk::config,
        "wasmta:policy/http@0.1.1": wasmta_sdk::http,
    },
});

use exports::wasmta::policy::{custom_delivery, log_hooks};
use wasmta_sdk::http::{Request, send};
use wasmta_sdk::{Message, MessageExt, QueueNameParts, Rejection, reject};

const HOOK: &str = "webhook";
const QUEUE: &str = "webhook";
const CONSTRUCTOR: &str = "make.webhook";

struct Webhook;

impl log_hooks::Guest for Webhook {
    fn should_enqueue_log_record(msg: &Message, hook_name: String) -> Result<Option<bool>, Rejection> {
        if hook_name != HOOK {
            return Ok(None);
        }
        // a record about delivering one of our records is not sent again
        let record = msg.get_meta("log_record").unwrap_or_default();
        if record.contains(r#""queue":"webhook""#) {
            return Ok(Some(false));
        }
        msg.set_meta_str("queue", QUEUE)?;
        Ok(Some(true))
    }
}

impl custom_delivery::Guest for Webhook {
    fn open(name: String, _parts: QueueNameParts) -> Result<Option<u64>, Rejection> {
        Ok((name == CONSTRUCTOR).then_some(1))
    }

    fn send(_connection: u64, msgs: Vec<Message>) -> Result<String, Rejection> {
        let url = wasmta_sdk::config::setting("webhook_url").ok_or_else(|| {
            reject(451, "4.3.5", "webhook: no webhook_url setting (wasmta serve --set webhook_url=...)")
        })?;
        let body = match msgs.as_slice() {
            [one] => one.get_data(),
            many => {
                let mut out = b"[".to_vec();
                for (i, m) in many.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(m.get_data());
                }
                out.push(b']');
                out
            }
        };
        let request = Request {
            method: "POST".into(),
            url,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
            timeout_ms: Some(10_000),
        };
        let response = send(&request).map_err(|e| reject(451, "4.4.1", format!("webhook: {e}")))?;
        let text = format!("{} {}", response.status, String::from_utf8_lossy(&response.body));
        match response.status {
            200..=299 => Ok(text),
            408 | 429 | 500..=599 => Err(reject(451, "4.4.1", text)),
            _ => Err(reject(550, "5.0.0", text)),
        }
    }

    fn close(_connection: u64) {}
}

export!(Webhook);
