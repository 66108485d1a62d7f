//! `kumo.nats` for Lua: `connect{...}` returning a client with `publish{...}` (the
//! stream's acknowledgement as a table, or nil with `await_ack = false`) and `close()`.
//! The client itself is `policy::nats`.

use super::convert::{from_lua, to_lua};
use crate::policy::nats::{self, ConnectOptions, Publish};
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Adds `kumo.nats`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let module = lua.create_table()?;
    module.set(
        "connect",
        lua.create_async_function(|lua, v: LuaValue| async move {
            let o: ConnectOptions =
                crate::config::decode(from_lua(&lua, v)?).map_err(|e| err(format!("kumo.nats.connect: {e}")))?;
            nats::connect(&o).await.map(Client).map_err(err)
        })?,
    )?;
    kumo.set("nats", module)?;
    Ok(())
}

/// `kumo.nats.connect{...}`.
struct Client(nats::Client);

impl UserData for Client {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method("publish", |lua, this, v: LuaValue| async move {
            let p: Publish =
                crate::config::decode(from_lua(&lua, v)?).map_err(|e| err(format!("client:publish: {e}")))?;
            match this.0.publish(p).await.map_err(err)? {
                Some(ack) => to_lua(&lua, &serde_json::to_value(ack).map_err(err)?),
                None => Ok(LuaValue::Nil),
            }
        });
        m.add_async_method("close", |_, this, ()| async move { this.0.close().await.map_err(err) });
    }
}
