//! `kumo.dns.lookup_mx`, `lookup_addr`, `lookup_txt`, `lookup_ptr`, `rbl_lookup`,
//! `ptr_host` and `reverse_ip` for Lua, through the server's resolver (`policy::host`).

use super::convert::to_lua;
use crate::policy::{Runtime, host};
use mlua::{Lua, MultiValue, Table, Value as LuaValue};
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Adds the lookups to the `kumo.dns` table.
pub fn install(lua: &Lua, dns: &Table, runtime: &Arc<Runtime>) -> mlua::Result<()> {
    let rt = runtime.clone();
    dns.set(
        "lookup_mx",
        lua.create_async_function(move |lua, domain: String| {
            let resolver = rt.dns();
            async move {
                let info =
                    host::lookup_mx(&*resolver, &domain).await.map_err(|e| err(format!("kumo.dns.lookup_mx: {e}")))?;
                to_lua(&lua, &serde_json::to_value(info).map_err(err)?)
            }
        })?,
    )?;
    let rt = runtime.clone();
    dns.set(
        "lookup_addr",
        lua.create_async_function(move |_, name: String| {
            let resolver = rt.dns();
            async move {
                let addrs = host::lookup_addr(&*resolver, &name)
                    .await
                    .map_err(|e| err(format!("kumo.dns.lookup_addr: {e}")))?;
                Ok(addrs.into_iter().map(|a| a.to_string()).collect::<Vec<_>>())
            }
        })?,
    )?;
    let rt = runtime.clone();
    dns.set(
        "lookup_txt",
        lua.create_async_function(move |_, name: String| {
            let resolver = rt.dns();
            async move { host::lookup_txt(&*resolver, &name).await.map_err(|e| err(format!("kumo.dns.lookup_txt: {e}"))) }
        })?,
    )?;
    let rt = runtime.clone();
    dns.set(
        "lookup_ptr",
        lua.create_async_function(move |_, ip: String| {
            let resolver = rt.dns();
            async move {
                let ip = host::parse_ip(&ip).map_err(|e| err(format!("kumo.dns.lookup_ptr: {e}")))?;
                host::lookup_ptr(&*resolver, ip).await.map_err(|e| err(format!("kumo.dns.lookup_ptr: {e}")))
            }
        })?,
    )?;
    let rt = runtime.clone();
    dns.set(
        "rbl_lookup",
        lua.create_async_function(move |lua, (ip, base): (String, String)| {
            let resolver = rt.dns();
            async move {
                let ip = host::parse_ip(&ip).map_err(|e| err(format!("kumo.dns.rbl_lookup: {e}")))?;
                let hit = host::rbl_lookup(&*resolver, ip, &base)
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
            }
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
