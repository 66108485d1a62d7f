//! `kumo.shaping.load(paths, opts)` and the object it returns
//! (`get_egress_path_config`, `get_errors`, `get_warnings`, `hash`), backed by
//! `crate::shaping`. The name `wasmta:default-shaping.toml` is wasmta's default shaping
//! file, built into the binary.

use super::convert::from_lua;
use super::userdata::ConfigObject;
use crate::shaping::file::ShapingFile;
use crate::shaping::merge::Shaping;
use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue};
use std::sync::Arc;

/// The path that names the built-in default shaping file.
pub const DEFAULT_SHAPING: &str = "wasmta:default-shaping.toml";
const DEFAULT_SHAPING_TEXT: &str = include_str!("../../../policy/shaping.toml");

/// Loaded shaping data.
pub struct LuaShaping {
    data: Arc<Shaping>,
    hash: String,
}

impl UserData for LuaShaping {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method(
            "get_egress_path_config",
            |_, this, (domain, source, site): (String, String, String)| async move {
                let dns = crate::delivery::dns::global();
                let params = this.data.egress_path_params(&domain, &source, &site, dns.as_ref()).await;
                Ok(ConfigObject { kind: "EgressPathConfig", value: serde_json::Value::Object(params) })
            },
        );
        m.add_method("get_errors", |_, this, ()| Ok(this.data.errors.clone()));
        m.add_method("get_warnings", |_, this, ()| Ok(this.data.warnings.clone()));
        m.add_method("hash", |_, this, ()| Ok(this.hash.clone()));
    }
}

/// Reads and parses the files; every problem is collected, none is fatal here.
pub fn read_files(paths: &[String]) -> (Vec<ShapingFile>, Vec<String>, String) {
    let mut files = vec![];
    let mut errors = vec![];
    let mut hasher = crc32fast::Hasher::new();
    for path in paths {
        let text = if path == DEFAULT_SHAPING {
            Ok(DEFAULT_SHAPING_TEXT.to_string())
        } else if path.starts_with("http://") || path.starts_with("https://") {
            tracing::warn!("shaping: remote file {path} is not loaded (remote_load = Ignore)");
            continue;
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
        };
        match text {
            Ok(text) => {
                hasher.update(text.as_bytes());
                match ShapingFile::parse(path, &text) {
                    Ok(f) => files.push(f),
                    Err(e) => errors.extend(e),
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (files, errors, format!("{:08x}", hasher.finalize()))
}

/// Installs `kumo.shaping.load` into the `kumo.shaping` table.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let shaping: Table = kumo.get("shaping")?;
    shaping.set(
        "load",
        lua.create_async_function(|lua, (paths, _opts): (LuaValue, LuaValue)| async move {
            let paths: Vec<String> = match from_lua(&lua, paths)? {
                serde_json::Value::Array(a) => a.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                serde_json::Value::String(s) => vec![s],
                _ => vec![],
            };
            let (files, errors, hash) = read_files(&paths);
            let dns = crate::delivery::dns::global();
            let mut data = Shaping::build(files, dns.as_ref()).await;
            data.errors.extend(errors);
            if !data.errors.is_empty() {
                return Err(mlua::Error::runtime(format!("kumo.shaping.load: {}", data.errors.join("; "))));
            }
            for w in &data.warnings {
                tracing::warn!("shaping: {w}");
            }
            Ok(LuaShaping { data: Arc::new(data), hash })
        })?,
    )?;
    Ok(())
}
