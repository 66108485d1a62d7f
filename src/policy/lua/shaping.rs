//! `kumo.shaping.load(paths, opts)` and the object it returns
//! (`get_egress_path_config`, `get_errors`, `get_warnings`, `hash`,
//! `get_referenced_sources`), backed by the server's shaping store (in its runtime):
//! every Lua context shares one load, and a changed file is picked up without a restart.

use super::convert::from_lua;
use super::userdata::ConfigObject;
use crate::shaping::store::{LoadOptions, Loaded};
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};
use std::sync::Arc;

/// Loaded shaping data, and the runtime whose resolver answers its MX lookups.
pub struct LuaShaping(Arc<Loaded>, Arc<crate::policy::Runtime>);

impl UserData for LuaShaping {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method(
            "get_egress_path_config",
            |_, this, (domain, source, site): (String, String, String)| async move {
                let dns = this.1.dns();
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
pub fn install(lua: &Lua, kumo: &Table, runtime: &std::sync::Arc<crate::policy::Runtime>) -> mlua::Result<()> {
    let shaping: Table = kumo.get("shaping")?;
    let rt = runtime.clone();
    shaping.set(
        "load",
        lua.create_async_function(move |lua, (paths, opts): (LuaValue, LuaValue)| {
            let rt = rt.clone();
            async move {
                let paths: Vec<String> = match from_lua(&lua, paths)? {
                    serde_json::Value::Array(a) => {
                        a.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                    }
                    serde_json::Value::String(s) => vec![s],
                    _ => vec![],
                };
                let options: LoadOptions = match from_lua(&lua, opts)? {
                    serde_json::Value::Null => LoadOptions::default(),
                    v => {
                        crate::config::decode(v).map_err(|e| mlua::Error::runtime(format!("kumo.shaping.load: {e}")))?
                    }
                };
                let dns = rt.dns();
                let loaded = rt
                    .shaping
                    .load(&paths, &options, dns.as_ref())
                    .await
                    .map_err(|e| mlua::Error::runtime(format!("kumo.shaping.load: {e}")))?;
                Ok(LuaShaping(loaded, rt.clone()))
            }
        })?,
    )?;
    Ok(())
}
