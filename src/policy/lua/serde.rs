//! `kumo.serde` (JSON, TOML, YAML: `*_parse`, `*_load`, `*_encode`, `*_encode_pretty`) and
//! KumoMTA's older top-level names (`kumo.json_load`, `kumo.toml_parse`, ...). As in
//! KumoMTA, JSON may carry comments (`//`, `/* */`, `#`), JSON `null` becomes `nil`, and a
//! pretty JSON encoding sorts object keys. Errors name the file.

use super::convert::{from_lua, to_lua};
use mlua::{Lua, Table, Value as LuaValue};
use serde_json::Value;

/// A format: parse text into a value, and encode a value (compact, pretty).
struct Format {
    name: &'static str,
    parse: fn(&str) -> Result<Value, String>,
    encode: fn(&Value, bool) -> Result<String, String>,
}

fn json_parse(text: &str) -> Result<Value, String> {
    let stripped = json_comments::StripComments::new(text.as_bytes());
    serde_json::from_reader(stripped).map_err(|e| e.to_string())
}

fn json_encode(v: &Value, pretty: bool) -> Result<String, String> {
    if pretty {
        // keys sorted, as KumoMTA's pretty encoder does (serde_json's map is ordered)
        serde_json::to_string_pretty(&sorted(v)).map_err(|e| e.to_string())
    } else {
        serde_json::to_string(v).map_err(|e| e.to_string())
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn toml_parse(text: &str) -> Result<Value, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn toml_encode(v: &Value, pretty: bool) -> Result<String, String> {
    if pretty { toml::to_string_pretty(v) } else { toml::to_string(v) }.map_err(|e| e.to_string())
}

fn yaml_parse(text: &str) -> Result<Value, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

fn yaml_encode(v: &Value, _pretty: bool) -> Result<String, String> {
    serde_yaml_ng::to_string(v).map_err(|e| e.to_string())
}

const FORMATS: [Format; 3] = [
    Format { name: "json", parse: json_parse, encode: json_encode },
    Format { name: "toml", parse: toml_parse, encode: toml_encode },
    Format { name: "yaml", parse: yaml_parse, encode: yaml_encode },
];

/// Installs `kumo.serde` and the older `kumo.json_*` / `kumo.toml_*` names.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let serde = lua.create_table()?;
    for f in FORMATS {
        let name = f.name;
        let parse = lua.create_function(move |lua, text: mlua::LuaString| {
            let value = (f.parse)(&text.to_str()?).map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?;
            to_lua(lua, &value)
        })?;
        let load = lua.create_function(move |lua, path: String| {
            let text = std::fs::read_to_string(&path).map_err(|e| mlua::Error::runtime(format!("{path}: {e}")))?;
            let value = (f.parse)(&text).map_err(|e| mlua::Error::runtime(format!("{path}: {e}")))?;
            to_lua(lua, &value)
        })?;
        let encoder = |pretty: bool| {
            lua.create_function(move |lua, v: LuaValue| {
                (f.encode)(&from_lua(lua, v)?, pretty).map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))
            })
        };
        let (encode, pretty) = (encoder(false)?, encoder(true)?);
        serde.set(format!("{name}_parse"), parse.clone())?;
        serde.set(format!("{name}_load"), load.clone())?;
        serde.set(format!("{name}_encode"), encode.clone())?;
        if name != "yaml" {
            serde.set(format!("{name}_encode_pretty"), pretty.clone())?;
            // KumoMTA's names from before kumo.serde
            kumo.set(format!("{name}_parse"), parse)?;
            kumo.set(format!("{name}_load"), load)?;
            kumo.set(format!("{name}_encode"), encode)?;
            kumo.set(format!("{name}_encode_pretty"), pretty)?;
        }
    }
    kumo.set("serde", serde)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_encode() {
        let v = json_parse("{ // a comment\n \"b\": 1, /* another */ \"a\": null }").unwrap();
        assert_eq!(v["b"], 1);
        assert_eq!(
            json_encode(&serde_json::json!({"b": 1, "a": {"d": 1, "c": 2}}), true).unwrap().find("\"a\""),
            Some(4)
        );
        assert_eq!(toml_parse("x = 1\n[t]\ny = 'z'\n").unwrap()["t"]["y"], "z");
        assert_eq!(yaml_parse("x: [1, 2]\n").unwrap()["x"][1], 2);
        assert!(yaml_encode(&serde_json::json!({"k": "v"}), false).unwrap().contains("k: v"));
        assert!(json_parse("{").is_err());
    }
}
