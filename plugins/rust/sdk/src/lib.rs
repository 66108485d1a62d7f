//! The Rust SDK for wasmta policy components.
//!
//! It binds the imports of the `wasmta:policy` WIT package once (the `message` and
//! `conn-meta` resources, the records, `host` and `config`) and adds what every policy
//! wants: [`reject`] / [`disconnect`] (what `kumo.reject` and `kumo.disconnect` mean),
//! [`MessageExt`] for string meta values, and [`egress_path`] / [`queue_config`] builders
//! that start from KumoMTA's defaults (every field absent).
//!
//! A complete plugin (`Cargo.toml`: `crate-type = ["cdylib"]`, dependencies `wit-bindgen`
//! and `wasmta-sdk`; `wasmta wit wit` writes the WIT package the running wasmta hosts into
//! `wit/`; build with `cargo build --target wasm32-wasip2 --release`):
//!
//! ```ignore
//! wit_bindgen::generate!({
//!     path: "wit",
//!     world: "message-policy",
//!     with: {
//!         "wasmta:policy/types@0.1.1": wasmta_sdk::types,
//!         "wasmta:policy/host@0.1.1": wasmta_sdk::host,
//!     },
//! });
//!
//! use exports::wasmta::policy::message_received::Guest;
//! use wasmta_sdk::{ConnMeta, Message, MessageExt, Rejection, reject};
//!
//! struct Policy;
//!
//! impl Guest for Policy {
//!     fn smtp_server_message_received(msg: &Message, _conn: &ConnMeta) -> Result<(), Rejection> {
//!         if msg.header("X-Block").is_some() {
//!             return Err(reject(550, "5.7.1", "blocked"));
//!         }
//!         msg.set_meta_str("tenant", "acme")?;
//!         Ok(())
//!     }
//! }
//!
//! export!(Policy);
//! ```

// the WIT is vendored into the crate (a copy of the repository's wit/, kept equal by
// tests/policy_kit.rs), so the crate builds on its own, published or not
wit_bindgen::generate!({ path: "wit", world: "sdk" });

pub use wasmta::policy::types::{
    ConnMeta, DeliveryProtocol, DisconnectMode, EgressPathConfig, EgressPool, EgressSource, EnvelopeAddress, Header,
    ListenerDomain, Mailbox, Message, MxEntry, NamedLimit, PoolEntry, QueueConfig, QueueNameParts, RefreshStrategy, Rejection,
    TlsMode,
};
pub use wasmta::policy::{config, host, http, types};

/// `kumo.reject(code, "enhanced text")`: `reject(550, "5.7.1", "no")`. An empty enhanced
/// code leaves it out.
pub fn reject(code: u16, enhanced: &str, text: impl Into<String>) -> Rejection {
    Rejection {
        code,
        enhanced_code: (!enhanced.is_empty()).then(|| enhanced.to_string()),
        text: text.into(),
        disconnect: None,
    }
}

/// `kumo.disconnect(code, text, mode)`.
pub fn disconnect(code: u16, enhanced: &str, text: impl Into<String>, mode: DisconnectMode) -> Rejection {
    Rejection { disconnect: Some(mode), ..reject(code, enhanced, text) }
}

/// A 451 4.3.0 for failures inside the policy itself.
pub fn tempfail(text: impl Into<String>) -> Rejection {
    reject(451, "4.3.0", text)
}

/// `s` as a JSON string (meta values are JSON).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Conveniences on the host's message.
pub trait MessageExt {
    /// The first header of that name, unfolded.
    fn header(&self, name: &str) -> Option<String>;
    /// Sets meta `key` to the string `value`; a refusal is a 451.
    fn set_meta_str(&self, key: &str, value: &str) -> Result<(), Rejection>;
}

impl MessageExt for Message {
    fn header(&self, name: &str) -> Option<String> {
        self.get_first_named_header_value(name)
    }

    fn set_meta_str(&self, key: &str, value: &str) -> Result<(), Rejection> {
        self.set_meta(key, &json_string(value)).map_err(tempfail)
    }
}

/// `kumo.make_egress_path {}`: every option at KumoMTA's default. Set fields with struct
/// update syntax: `EgressPathConfig { connection_limit: Some("5".into()), ..egress_path() }`.
pub fn egress_path() -> EgressPathConfig {
    EgressPathConfig {
        connection_limit: None,
        additional_connection_limits: None,
        max_connection_rate: None,
        max_message_rate: None,
        additional_message_rate_throttles: None,
        max_deliveries_per_connection: None,
        max_ready: None,
        consecutive_connection_failures_before_delay: None,
        enable_tls: None,
        enable_pipelining: None,
        enable_rset: None,
        smtp_port: None,
        ehlo_domain: None,
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
        provider_name: None,
        extra: None,
    }
}

/// `kumo.make_queue_config {}`: every option at KumoMTA's default.
pub fn queue_config() -> QueueConfig {
    QueueConfig {
        retry_interval: None,
        max_retry_interval: None,
        max_age: None,
        egress_pool: None,
        max_message_rate: None,
        protocol: None,
        reap_interval: None,
        refresh_interval: None,
        refresh_strategy: None,
        provider_name: None,
    }
}

/// Inside `impl egress::Guest for ...`: `get_egress_pool` and `get_egress_source` that
/// leave pools and sources to wasmta's defaults (`unspecified`), for routing components
/// that only decide egress paths.
#[macro_export]
macro_rules! default_pools_and_sources {
    () => {
        fn get_egress_pool(_name: String) -> Result<Option<$crate::EgressPool>, $crate::Rejection> {
            Ok(None)
        }

        fn get_egress_source(_name: String) -> Result<Option<$crate::EgressSource>, $crate::Rejection> {
            Ok(None)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn reject_leaves_out_an_empty_enhanced_code() {
        assert_eq!(reject(550, "", "no").enhanced_code, None);
        assert_eq!(reject(550, "5.7.1", "no").enhanced_code.as_deref(), Some("5.7.1"));
    }
}
