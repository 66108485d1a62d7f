//! `kumo.dns.lookup_mx`, `lookup_addr`, `lookup_txt`, `lookup_ptr`, `rbl_lookup`,
//! `ptr_host` and `reverse_ip` for Lua, through the server's resolver (`policy::host`).

use super::convert::to_lua;
use crate::policy::host;
use mlua::{Lua, MultiValue, Table, Value as LuaValue};

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Adds the lookups to the `kumo.dns` table.
pub fn install(lua: &Lua, dns: &Table) -> mlua::Result<()> {
    dns.set(
        "lookup_mx",
        lua.create_async_function(|lua, domain: String| async move {
            let info = host::lookup_mx(&*crate::dns::global(), &domain)
                .await
                .map_err(|e| err(format!("kumo.dns.lookup_mx: {e}")))?;
            to_lua(&lua, &serde_json::to_value(info).map_err(err)?)
        })?,
    )?;
    dns.set(
        "lookup_addr",
        lua.create_async_function(|_, name: String| async move {
            let addrs = host::lookup_addr(&*crate::dns::global(), &name)
                .await
                .map_err(|e| err(format!("kumo.dns.lookup_addr: {e}")))?;
            Ok(addrs.into_iter().map(|a| a.to_string()).collect::<Vec<_>>())
        })?,
    )?;
    dns.set(
        "lookup_txt",
        lua.create_async_function(|_, name: String| async move {
            host::lookup_txt(&*crate::dns::global(), &name).await.map_err(|e| err(format!("kumo.dns.lookup_txt: {e}")))
        })?,
    )?;
    dns.set(
        "lookup_ptr",
        lua.create_async_function(|_, ip: String| async move {
            let ip = host::parse_ip(&ip).map_err(|e| err(format!("kumo.dns.lookup_ptr: {e}")))?;
            host::lookup_ptr(&*crate::dns::global(), ip).await.map_err(|e| err(format!("kumo.dns.lookup_ptr: {e}")))
        })?,
    )?;
    dns.set(
        "rbl_lookup",
        lua.create_async_function(|lua, (ip, base): (String, String)| async move {
            let ip = host::parse_ip(&ip).map_err(|e| err(format!("kumo.dns.rbl_lookup: {e}")))?;
            let hit = host::rbl_lookup(&*crate::dns::global(), ip, &base)
                .await
                .map_err(|e| err(format!("kumo.dns.rbl_lookup: {e}")))?;
            let (listed, reason) = match hit {
                Some((a, r)) => (LuaValue::String(lua.create_string(a)?), r),
                None => (LuaValue::Nil, None),
            };
            let reason = match reason {
                Some(r) => LuaValue::String(lua.create_string(r)?),
                None => LuaValue::Nil,
            };
            Ok(MultiValue::from_iter([listed, reason]))
        })?,
    )?;
    dns.set(
        "ptr_host",
        lua.create_function(|_, ip: String| Ok(crate::dns::ptr_name(host::parse_ip(&ip).map_err(err)?)))?,
    )?;
    dns.set(
        "reverse_ip",
        lua.create_function(|_, ip: String| Ok(host::reverse_ip(host::parse_ip(&ip).map_err(err)?)))?,
    )?;
    Ok(())
}
