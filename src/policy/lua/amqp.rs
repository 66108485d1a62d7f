//! `kumo.amqp` for Lua: `build_client(uri)` returning a client with `publish{...}` (a
//! confirmation whose `wait()` answers `{ status, reply_code, reply_text }`) and
//! `close()`, and `basic_publish{...}`. The client itself is `policy::amqp`.

use super::convert::{from_lua, to_lua};
use crate::policy::amqp::{self, Publish};
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

fn params(lua: &Lua, what: &str, v: LuaValue) -> mlua::Result<Publish> {
    crate::config::decode(from_lua(lua, v)?).map_err(|e| err(format!("{what}: {e}")))
}

/// Adds `kumo.amqp`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let module = lua.create_table()?;
    module.set(
        "build_client",
        lua.create_async_function(
            |_, uri: String| async move { amqp::build_client(&uri).await.map(Client).map_err(err) },
        )?,
    )?;
    module.set(
        "basic_publish",
        lua.create_async_function(|lua, v: LuaValue| async move {
            let p = params(&lua, "kumo.amqp.basic_publish", v)?;
            let confirm = amqp::basic_publish(&p).await.map_err(err)?;
            to_lua(&lua, &serde_json::to_value(confirm).map_err(err)?)
        })?,
    )?;
    kumo.set("amqp", module)?;
    Ok(())
}

/// `kumo.amqp.build_client(uri)`.
struct Client(amqp::Client);

impl UserData for Client {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method("publish", |lua, this, v: LuaValue| async move {
            let p = params(&lua, "client:publish", v)?;
            if p.connection.is_some() {
                return Err(err("client:publish: connection belongs to kumo.amqp.basic_publish, not to a client"));
            }
            let outcome = this.0.publish(&p, amqp::default_publish_timeout()).await;
            Ok(Confirmation(Some(outcome)))
        });
        m.add_async_method("close", |_, this, ()| async move { this.0.close().await.map_err(err) });
    }
}

/// What `client:publish` returns: already confirmed (the publish waited), read by
/// `wait()`; a publish that failed raises its error there, as KumoMTA's does.
struct Confirmation(Option<Result<amqp::Confirm, String>>);

impl UserData for Confirmation {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("wait", |lua, this, ()| match this.0.take() {
            Some(Ok(c)) => to_lua(lua, &serde_json::to_value(c).map_err(err)?),
            Some(Err(e)) => Err(err(e)),
            None => Err(err("confirm:wait(): already waited for")),
        });
    }
}
