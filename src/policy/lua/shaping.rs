//! `kumo.shaping.load(paths, opts)` and the object it returns
//! (`get_egress_path_config`, `get_errors`, `get_warnings`, `hash`,
//! `get_referenced_sources`), backed by the
//! process-wide `crate::shaping::store`: every Lua context shares one load, and a changed
//! file is picked up without a restart.

use super::convert::from_lua;
use super::userdata::ConfigObject;
use crate::shaping::store::{self, LoadOptions, Loaded};
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};
use std::sync::Arc;

/// Loaded shaping data.
pub struct LuaShaping(Arc<Loaded>);

impl UserData for LuaShaping {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method(
            "get_egress_path_config",
            |_, this, (domain, source, site): (String, String, String)| async move {
                let dns = crate::dns::global();
                let params = this.0.shaping.egress_path_params(&domain, &source, &site, dns.as_ref()).await;
                Ok(ConfigObject { kind: "EgressPathConfig", value: serde_json::Value::Object(params) })
            },
        );
        m.add_method("get_errors", |_, this, ()| Ok(this.0.errors.clone()));
        m.add_method("get_warnings", |_, this, ()| Ok(this.0.warnings.clone()));
        m.add_method("hash", |_, this, ()| Ok(this.0.hash.clone()));
        m.add_method("get_referenced_sources", |_, this, ()| Ok(this.0.shaping.referenced_sources()));
    }
}

/// Installs `kumo.shaping.load` into the `kumo.shaping` table.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let shaping: Table = kumo.get("shaping")?;
    shaping.set(
        "load",
        lua.create_async_function(|lua, (paths, opts): (LuaValue, LuaValue)| async move {
            let paths: Vec<String> = match from_lua(&lua, paths)? {
                serde_json::Value::Array(a) => a.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                serde_json::Value::String(s) => vec![s],
                _ => vec![],
            };
            let options: LoadOptions = match from_lua(&lua, opts)? {
                serde_json::Value::Null => LoadOptions::default(),
                v => crate::config::decode(v).map_err(|e| mlua::Error::runtime(format!("kumo.shaping.load: {e}")))?,
            };
            let loaded = store::load(&paths, &options)
                .await
                .map_err(|e| mlua::Error::runtime(format!("kumo.shaping.load: {e}")))?;
            Ok(LuaShaping(loaded))
        })?,
    )?;
    Ok(())
}
