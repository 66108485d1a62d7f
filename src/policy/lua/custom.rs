//! `custom_lua` connections made by Lua constructor events (`kumo.on('make.webhook',
//! function(domain, tenant, campaign) ... return connection end)`): the object lives in
//! one Lua context, held by the connection for its life and dropped with it.

use super::userdata::LuaMessage;
use super::{Context, LuaEngine, error_text};
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::policy::custom::{CustomConstructors, CustomSender, EVENT};
use crate::policy::{PolicyError, Rejection};
use mlua::{Function, MultiValue, RegistryKey, Table, Value as LuaValue};
use std::time::Duration;

fn failed(message: String) -> PolicyError {
    PolicyError::Failed { event: EVENT, message }
}

/// A Lua error as the policy's answer: `kumo.reject` is a refusal, anything else a fault.
fn answer(e: mlua::Error, what: &str) -> PolicyError {
    match e.downcast_ref::<Rejection>() {
        Some(r) => PolicyError::Rejected(r.clone()),
        None => failed(format!("{what}: {}", error_text(&e))),
    }
}

#[async_trait::async_trait]
impl CustomConstructors for LuaEngine {
    async fn construct(
        &self,
        name: &str,
        parts: &QueueNameParts,
    ) -> Result<Option<Box<dyn CustomSender>>, PolicyError> {
        if !self.user_events.contains(name) {
            return Ok(None);
        }
        let ctx = self.checkout().await.map_err(|e| failed(format!("{name}: cannot create a Lua context: {e}")))?;
        let what = format!("{}: {name}", self.info.name);
        ctx.arm(self.timeout);
        let made = tokio::time::timeout(self.timeout + Duration::from_millis(50), async {
            let Some(f) = ctx.handlers(name)?.into_iter().next() else {
                return Err(mlua::Error::runtime("no handler is registered"));
            };
            let args = (parts.domain.clone(), parts.tenant.clone(), parts.campaign.clone());
            match f.call_async::<LuaValue>(args).await? {
                LuaValue::Table(t) => {
                    let singles = t.get::<Option<Function>>("send")?.is_some();
                    let batches = t.get::<Option<Function>>("send_batch")?.is_some();
                    if !singles && !batches {
                        return Err(mlua::Error::runtime("the connection object has neither send nor send_batch"));
                    }
                    Ok((ctx.lua.create_registry_value(t)?, batches, singles))
                }
                other => Err(mlua::Error::runtime(format!(
                    "returned {}, expected a connection object (a table with send)",
                    other.type_name()
                ))),
            }
        })
        .await;
        ctx.disarm();
        let (object, batches, singles) = match made {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(answer(e, &what)),
            Err(_) => return Err(failed(format!("{what}: deadline of {:?} exceeded", self.timeout))),
        };
        Ok(Some(Box::new(LuaConnection { ctx: Some(ctx), object, timeout: self.timeout, what, batches, singles })))
    }
}

/// A connection object and the context it lives in.
struct LuaConnection {
    /// `None` once a call overran its deadline (the context is then discarded).
    ctx: Option<Context>,
    object: RegistryKey,
    timeout: Duration,
    what: String,
    batches: bool,
    singles: bool,
}

impl LuaConnection {
    /// Calls `method(object, arg)`; its result as the disposition text.
    async fn call(
        &mut self,
        method: &str,
        arg: impl FnOnce(&mlua::Lua) -> mlua::Result<LuaValue>,
    ) -> Result<String, PolicyError> {
        let what = format!("{} {method}", self.what);
        let Some(ctx) = self.ctx.as_ref() else {
            return Err(failed(format!("{what}: the connection was discarded after an earlier fault")));
        };
        ctx.arm(self.timeout);
        let called = tokio::time::timeout(self.timeout + Duration::from_millis(50), async {
            let object: Table = ctx.lua.registry_value(&self.object)?;
            let f: Function = object.get(method)?;
            let arg = arg(&ctx.lua)?;
            let ret: MultiValue = f.call_async((object, arg)).await?;
            Ok::<_, mlua::Error>(match ret.into_iter().next() {
                None | Some(LuaValue::Nil) => "ok".to_string(),
                Some(LuaValue::String(s)) => s.to_string_lossy(),
                Some(other) => other.to_string()?,
            })
        })
        .await;
        ctx.disarm();
        match called {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(e)) => Err(answer(e, &what)),
            Err(_) => {
                self.ctx = None;
                Err(failed(format!("{what}: deadline of {:?} exceeded", self.timeout)))
            }
        }
    }
}

#[async_trait::async_trait]
impl CustomSender for LuaConnection {
    async fn send(&mut self, message: &Message) -> Result<String, PolicyError> {
        if !self.singles {
            return self.send_batch(std::slice::from_ref(message)).await;
        }
        let m = message.clone();
        self.call("send", move |lua| Ok(LuaValue::UserData(lua.create_userdata(LuaMessage(m))?))).await
    }

    async fn send_batch(&mut self, messages: &[Message]) -> Result<String, PolicyError> {
        let list = messages.to_vec();
        self.call("send_batch", move |lua| {
            let t = lua.create_table()?;
            for m in list {
                t.push(lua.create_userdata(LuaMessage(m))?)?;
            }
            Ok(LuaValue::Table(t))
        })
        .await
    }

    fn batches(&self) -> bool {
        self.batches
    }

    fn usable(&self) -> bool {
        self.ctx.is_some()
    }

    async fn close(mut self: Box<Self>) {
        let has_close = match self.ctx.as_ref() {
            Some(ctx) => ctx
                .lua
                .registry_value::<Table>(&self.object)
                .and_then(|t| t.get::<Option<Function>>("close"))
                .is_ok_and(|f| f.is_some()),
            None => false,
        };
        if has_close && let Err(e) = self.call("close", |_| Ok(LuaValue::Nil)).await {
            tracing::warn!("{e}");
        }
    }
}
