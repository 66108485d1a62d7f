//! `kumo.make_message(sender, recipient, body)`, `kumo.inject_message(msg)` and
//! `kumo.api.inject.inject_v1(request)`: policy code making mail and handing it to the
//! server, through [`crate::policy::inject`] (the same durable path as SMTP and HTTP).

use super::caller_site;
use super::convert::{from_lua, to_lua};
use super::userdata::LuaMessage;
use crate::message::{EnvelopeAddress, Message};
use mlua::{Lua, Table, UserDataRef, Value as LuaValue};

fn fail(lua: &Lua, name: &str, e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("{}: kumo.{name}: {e}", caller_site(lua)))
}

/// Installs the three functions.
pub fn install(lua: &Lua, kumo: &Table, runtime: &std::sync::Arc<crate::policy::Runtime>) -> mlua::Result<()> {
    kumo.set(
        "make_message",
        lua.create_function(|lua, (sender, recipient, body): (String, String, mlua::LuaString)| {
            let from =
                EnvelopeAddress::parse(&sender).map_err(|e| fail(lua, "make_message", format!("sender: {}", e.0)))?;
            let to = EnvelopeAddress::parse(&recipient)
                .map_err(|e| fail(lua, "make_message", format!("recipient: {}", e.0)))?;
            let data = crate::message::headers::crlf(&body.as_bytes());
            Ok(LuaMessage(Message::new(from, vec![to], Default::default(), data)))
        })?,
    )?;
    let rt = runtime.clone();
    kumo.set(
        "inject_message",
        lua.create_async_function(move |lua, msg: UserDataRef<LuaMessage>| {
            let message = msg.0.clone();
            let injector = rt.injector();
            async move {
                let injector = injector.map_err(|e| fail(&lua, "inject_message", e))?;
                injector.inject_message(message).await.map_err(|e| fail(&lua, "inject_message", e))
            }
        })?,
    )?;
    let api: Table = kumo.get("api")?;
    let inject = lua.create_table()?;
    let rt = runtime.clone();
    inject.set(
        "inject_v1",
        lua.create_async_function(move |lua, request: LuaValue| {
            let injector = rt.injector();
            async move {
                let request = from_lua(&lua, request)?;
                let injector = injector.map_err(|e| fail(&lua, "api.inject.inject_v1", e))?;
                let answer = injector.inject_v1(request).await.map_err(|e| fail(&lua, "api.inject.inject_v1", e))?;
                to_lua(&lua, &answer)
            }
        })?,
    )?;
    api.set("inject", inject)?;
    Ok(())
}
