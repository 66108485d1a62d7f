//! Components as `custom_lua` constructors (the `custom-delivery` interface): a
//! connection keeps its own instance for its life, so the component may keep per-
//! connection state; a trap or an overrun discards it and the queue reconnects.

use super::engine::TICK;
use super::host::HostState;
use super::{Live, WasmEngine, rejection};
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::policy::PolicyError;
use crate::policy::custom::{CustomConstructors, CustomSender, EVENT};
use std::time::{Duration, Instant};
use wasmtime::Store;

fn failed(message: String) -> PolicyError {
    PolicyError::Failed { event: EVENT, message }
}

/// Arms the store for one call of at most `budget`.
fn arm(store: &mut Store<HostState>, budget: Duration, fuel: Option<u64>) -> Result<(), PolicyError> {
    store.data_mut().deadline = Instant::now() + budget;
    store.set_epoch_deadline(1);
    if let Some(f) = fuel {
        store.set_fuel(f).map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl CustomConstructors for WasmEngine {
    async fn construct(
        &self,
        name: &str,
        parts: &QueueNameParts,
    ) -> Result<Option<Box<dyn CustomSender>>, PolicyError> {
        if self.exports.custom_delivery.is_none() {
            return Ok(None);
        }
        let what = format!("{}: {name}", self.info.name);
        let mut live = self.instantiate().await.map_err(failed)?;
        let budget = self.options.budget;
        arm(&mut live.store, budget, self.options.fuel)?;
        let parts = super::bindings::wasmta::policy::types::QueueNameParts {
            domain: Some(parts.domain.clone()),
            tenant: parts.tenant.clone(),
            campaign: parts.campaign.clone(),
            routing_domain: parts.routing_domain.clone(),
        };
        let guest = live.guests.custom_delivery.as_ref().expect("checked above");
        let opened = tokio::time::timeout(budget + TICK * 5, guest.call_open(&mut live.store, name, &parts)).await;
        match opened {
            Ok(Ok(Ok(Some(id)))) => {
                Ok(Some(Box::new(WasmConnection { live, id, budget, fuel: self.options.fuel, what, broken: false })))
            }
            Ok(Ok(Ok(None))) => Ok(None),
            Ok(Ok(Err(r))) => Err(rejection(r)),
            Ok(Err(trap)) => Err(failed(format!("{what}: open trapped: {trap}"))),
            Err(_) => Err(failed(format!("{what}: open exceeded {budget:?}"))),
        }
    }
}

/// A connection: the component's id for it, in its own instance.
struct WasmConnection {
    live: Live,
    id: u64,
    budget: Duration,
    fuel: Option<u64>,
    what: String,
    broken: bool,
}

#[async_trait::async_trait]
impl CustomSender for WasmConnection {
    async fn send(&mut self, message: &Message) -> Result<String, PolicyError> {
        self.send_batch(std::slice::from_ref(message)).await
    }

    async fn send_batch(&mut self, messages: &[Message]) -> Result<String, PolicyError> {
        if self.broken {
            return Err(failed(format!("{}: the connection was discarded after an earlier fault", self.what)));
        }
        arm(&mut self.live.store, self.budget, self.fuel)?;
        // owned handles: the guest drops each one (the host's `drop` deletes it)
        let mut owned = Vec::with_capacity(messages.len());
        for m in messages {
            owned.push(self.live.store.data_mut().table.push(m.clone()).map_err(|e| failed(e.to_string()))?);
        }
        let guest = self.live.guests.custom_delivery.as_ref().expect("opened through it");
        let sent =
            tokio::time::timeout(self.budget + TICK * 5, guest.call_send(&mut self.live.store, self.id, &owned)).await;
        match sent {
            Ok(Ok(Ok(text))) => Ok(text),
            Ok(Ok(Err(r))) => Err(rejection(r)),
            Ok(Err(trap)) => {
                self.broken = true;
                Err(failed(format!("{} send trapped: {trap}", self.what)))
            }
            Err(_) => {
                self.broken = true;
                Err(failed(format!("{} send exceeded {:?}", self.what, self.budget)))
            }
        }
    }

    fn batches(&self) -> bool {
        true
    }

    fn usable(&self) -> bool {
        !self.broken
    }

    async fn close(mut self: Box<Self>) {
        if self.broken || arm(&mut self.live.store, self.budget, self.fuel).is_err() {
            return;
        }
        let guest = self.live.guests.custom_delivery.as_ref().expect("opened through it");
        let closed =
            tokio::time::timeout(self.budget + TICK * 5, guest.call_close(&mut self.live.store, self.id)).await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::warn!("{}: close failed or overran", self.what);
        }
    }
}
