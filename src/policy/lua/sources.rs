//! The Lua texts a generation was built from. KumoMTA re-reads the policy in every new Lua
//! context; if the file on disk was saved broken meanwhile, that generation's new contexts
//! would fail although the reload refusing it said "the old one keeps serving". So a
//! generation owns its texts: the policy file is read once when the generation is built,
//! and every module it `require`s is read once, on its first `require` in any context of
//! the generation (modules required at top level or in `init` are therefore captured while
//! the generation is built), then served to every later context from memory.

use mlua::{Function, Lua, MultiValue, Table, Value};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One captured file.
pub struct Source {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: Arc<[u8]>,
}

/// The texts of one generation.
pub struct Sources {
    /// The policy file.
    pub policy: Source,
    /// Modules by `require` name.
    modules: Mutex<HashMap<String, Arc<Source>>>,
}

impl Sources {
    /// Reads the policy file.
    pub fn read(policy: &Path) -> Result<Sources, String> {
        let text = std::fs::read(policy).map_err(|e| format!("{}: {e}", policy.display()))?;
        Ok(Sources {
            policy: Source { path: policy.to_path_buf(), text: text.into() },
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The chunk name Lua reports in errors (`@path`, shown as `path:line`).
    pub fn chunk_name(path: &Path) -> String {
        format!("@{}", path.display())
    }

    /// Every text captured so far, with its file: the policy and the modules.
    pub fn texts(&self) -> Vec<(PathBuf, Arc<[u8]>)> {
        let mut out = vec![(self.policy.path.clone(), self.policy.text.clone())];
        out.extend(self.modules.lock().values().map(|s| (s.path.clone(), s.text.clone())));
        out
    }

    /// Every file captured so far: the policy and the modules.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.policy.path.clone()];
        out.extend(self.modules.lock().values().map(|s| s.path.clone()));
        out
    }

    /// The module `name`: captured already, or found on `package.path` and captured now.
    fn module(&self, lua: &Lua, name: &str) -> mlua::Result<Result<Arc<Source>, String>> {
        if let Some(s) = self.modules.lock().get(name) {
            return Ok(Ok(s.clone()));
        }
        let package: Table = lua.globals().get("package")?;
        let path: String = package.get("path")?;
        let searchpath: Function = package.get("searchpath")?;
        let (found, why): (Option<String>, Option<String>) = searchpath.call((name, path))?;
        let Some(file) = found else { return Ok(Err(why.unwrap_or_default())) };
        let text = std::fs::read(&file).map_err(|e| mlua::Error::runtime(format!("{file}: {e}")))?;
        let source = Arc::new(Source { path: PathBuf::from(file), text: text.into() });
        // two contexts may race here: the first capture wins, so both run the same text
        Ok(Ok(self.modules.lock().entry(name.to_string()).or_insert(source).clone()))
    }

    /// Puts a searcher in front of Lua's file searcher that serves this generation's texts.
    pub fn install(self: &Arc<Self>, lua: &Lua) -> mlua::Result<()> {
        let me = self.clone();
        let searcher = lua.create_function(move |lua, name: String| -> mlua::Result<MultiValue> {
            match me.module(lua, &name)? {
                Ok(source) => {
                    let loader =
                        lua.load(&source.text[..]).set_name(Sources::chunk_name(&source.path)).into_function()?;
                    let file = lua.create_string(source.path.display().to_string())?;
                    Ok(MultiValue::from_iter([Value::Function(loader), Value::String(file)]))
                }
                Err(why) => Ok(MultiValue::from_iter([Value::String(lua.create_string(why)?)])),
            }
        })?;
        let package: Table = lua.globals().get("package")?;
        let searchers: Table = package.get("searchers")?;
        // [1] is the preload searcher (our embedded helpers); ours goes before Lua's own
        // file searcher, which then only sees what ours did not find
        let rest: Vec<Value> = searchers.clone().sequence_values::<Value>().skip(1).collect::<mlua::Result<_>>()?;
        searchers.raw_set(2, searcher)?;
        for (i, v) in rest.into_iter().enumerate() {
            searchers.raw_set(i + 3, v)?;
        }
        Ok(())
    }
}
