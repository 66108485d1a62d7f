//! Lua values to and from JSON values (meta, option tables, handler results).

use super::userdata::{ConfigObject, LuaAddress};
use mlua::{Lua, LuaSerdeExt, Value as LuaValue};
use serde_json::Value;

const TO_LUA: mlua::serde::ser::Options =
    mlua::serde::ser::Options::new().serialize_none_to_null(false).serialize_unit_to_null(false);
const FROM_LUA: mlua::serde::de::Options = mlua::serde::de::Options::new().deny_unsupported_types(false);

/// JSON to Lua (`null` becomes `nil`).
pub fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    lua.to_value_with(v, TO_LUA)
}

/// Lua to JSON. Config objects and addresses convert to what they hold; functions are
/// skipped.
pub fn from_lua(lua: &Lua, v: LuaValue) -> mlua::Result<Value> {
    if let LuaValue::UserData(ud) = &v {
        if let Ok(obj) = ud.borrow::<ConfigObject>() {
            return Ok(obj.value.clone());
        }
        if let Ok(addr) = ud.borrow::<LuaAddress>() {
            return Ok(Value::String(addr.0.email()));
        }
    }
    if let LuaValue::Table(t) = &v {
        // tables may hold config objects or addresses (e.g. a list of recipients)
        let mut has_userdata = false;
        for pair in t.pairs::<LuaValue, LuaValue>() {
            if matches!(pair?.1, LuaValue::UserData(_)) {
                has_userdata = true;
                break;
            }
        }
        if has_userdata {
            return table_from_lua(lua, t);
        }
    }
    lua.from_value_with(v, FROM_LUA)
}

fn table_from_lua(lua: &Lua, t: &mlua::Table) -> mlua::Result<Value> {
    let len = t.raw_len();
    if len > 0 {
        let mut out = Vec::with_capacity(len);
        for v in t.sequence_values::<LuaValue>() {
            out.push(from_lua(lua, v?)?);
        }
        return Ok(Value::Array(out));
    }
    let mut out = serde_json::Map::new();
    for pair in t.pairs::<LuaValue, LuaValue>() {
        let (k, v) = pair?;
        let key = match k {
            LuaValue::String(s) => s.to_str()?.to_string(),
            LuaValue::Integer(i) => i.to_string(),
            other => {
                return Err(mlua::Error::runtime(format!("unsupported table key type {}", other.type_name())));
            }
        };
        out.insert(key, from_lua(lua, v)?);
    }
    Ok(Value::Object(out))
}
