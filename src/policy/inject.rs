//! What policy code may ask the running MTA to do with mail it makes:
//! `kumo.inject_message(msg)` and `kumo.api.inject.inject_v1{...}`. The trait is defined
//! here and implemented by the layer that owns the spool and the queues (`http::inject`),
//! which `serve` installs in the [`super::Runtime`], so the policy layer needs no arrow up
//! to them. Outside `serve` (in `wasmta check`) there is none, and the calls say so.

use crate::message::Message;
use serde_json::Value;

/// Takes messages from policy code on the same durable path as SMTP and HTTP injection.
#[async_trait::async_trait]
pub trait Injector: Send + Sync {
    /// Stores, logs (Reception) and queues a message the policy made.
    async fn inject_message(&self, message: Message) -> Result<(), String>;
    /// Runs a request of the HTTP injection API's shape; its response body.
    async fn inject_v1(&self, request: Value) -> Result<Value, String>;
}
