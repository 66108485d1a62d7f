//! KumoMTA's older egress API: `kumo.define_egress_source{...}` and
//! `kumo.define_egress_pool{...}`, called in `init`, register sources and pools by name.
//! A `get_egress_source` / `get_egress_pool` handler, where the policy has one, is asked
//! first; a name it does not answer falls back to the registered definition.

use super::convert::from_lua;
use super::{Host, Phase, caller_site, phase};
use crate::config::{self, egress};
use crate::policy::events::Event;
use mlua::{Lua, Table, Value as LuaValue};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The sources and pools `init` defined.
#[derive(Default)]
pub struct Defined {
    sources: HashMap<String, Value>,
    pools: HashMap<String, Value>,
}

impl Defined {
    /// True when nothing was defined.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.pools.is_empty()
    }

    /// The definition `event` (`get_egress_source` or `get_egress_pool`) asks for.
    pub fn lookup(&self, event: Event, name: &str) -> Option<Value> {
        match event {
            Event::GetEgressSource => self.sources.get(name).cloned(),
            Event::GetEgressPool => self.pools.get(name).cloned(),
            _ => None,
        }
    }

    fn define_source(&mut self, value: Value) -> Result<(), String> {
        let source: egress::EgressSource = config::decode(value.clone())?;
        // as in KumoMTA, defining a name again replaces it
        self.sources.insert(source.name, value);
        Ok(())
    }

    fn define_pool(&mut self, value: Value) -> Result<(), String> {
        let pool: egress::EgressPool = config::decode(value.clone())?;
        for entry in &pool.entries {
            if entry.name != "unspecified" && !self.sources.contains_key(&entry.name) {
                return Err(format!(
                    "pool {:?} names source {:?}, which no kumo.define_egress_source defined (define it first)",
                    pool.name, entry.name
                ));
            }
        }
        self.pools.insert(pool.name, value);
        Ok(())
    }
}

/// Installs `kumo.define_egress_source` and `kumo.define_egress_pool`.
pub fn install(lua: &Lua, kumo: &Table, host: &Arc<Host>) -> mlua::Result<()> {
    for (name, pool) in [("define_egress_source", false), ("define_egress_pool", true)] {
        let host = host.clone();
        let f = lua.create_function(move |lua, arg: LuaValue| {
            let site = caller_site(lua);
            if phase(lua) != Phase::Init {
                return Err(mlua::Error::runtime(format!(
                    "{site}: kumo.{name} may only be called from the init event"
                )));
            }
            let value = from_lua(lua, arg)?;
            let mut defined = host.defined.lock();
            let done = if pool { defined.define_pool(value) } else { defined.define_source(value) };
            done.map_err(|e| mlua::Error::runtime(format!("{site}: kumo.{name}: {e}")))
        })?;
        kumo.set(name, f)?;
    }
    Ok(())
}
