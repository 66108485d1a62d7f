//! Loading a whole policy: a Lua file (which may load components with `kumo.wasm.load`)
//! or, for a Wasm-only deployment, one component whose `init` export configures
//! everything through the `config` import. Components loaded from Lua that export `init`
//! run it too, after Lua's. The result is one immutable set of engines and the
//! configuration their `init` produced.

use super::lua::LuaEngine;
use super::wasm::{WasmEngine, WasmOptions};
use super::{Engine, Policy};
use crate::config::InitConfig;
use std::path::Path;
use std::sync::Arc;

/// Deployment settings (`--set name=value`), read by components with `config.setting`.
pub type Settings = std::collections::BTreeMap<String, String>;

/// A loaded policy.
pub struct Loaded {
    /// The dispatcher over every engine.
    pub policy: Policy,
    /// What `init` configured.
    pub init: InitConfig,
    /// Problems `serve` logs and `check` reports as errors.
    pub problems: Vec<String>,
    /// What the policy uses that wasmta does not act on yet (logged once, listed by
    /// `check`, not errors).
    pub notices: Vec<String>,
    /// One line per component: its path and the events it handles.
    pub components: Vec<String>,
}

/// Whether `path` names a component rather than a Lua file.
pub fn is_component(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Loads the policy at `path` for the server whose shared state is `runtime`. `check`
/// runs `validate_config` too and skips warming up.
pub async fn load(
    path: &Path,
    check: bool,
    settings: Settings,
    runtime: &Arc<super::Runtime>,
) -> Result<Loaded, String> {
    let settings = Arc::new(settings);
    let mut engines: Vec<Arc<dyn Engine>> = vec![];
    let mut components = vec![];
    let (mut init, problems, notices) = if is_component(path) {
        let options = WasmOptions::with_budget(InitConfig::default().event_timeout);
        let mut wasm = WasmEngine::load(path, options, runtime).await?;
        wasm.set_settings(settings.clone());
        if !wasm.exports_init() {
            return Err(format!(
                "{}: a Wasm-only deployment needs a component that exports wasmta:policy/init (world `policy`)",
                path.display()
            ));
        }
        let mut init = wasm.run_init().await?;
        wasm.set_http_allow(&std::mem::take(&mut init.wasm_http_allow))?;
        components.push(describe(&wasm));
        engines.push(Arc::new(wasm));
        (init, vec![], vec![])
    } else {
        let loaded = LuaEngine::load(path, check, runtime).await?;
        let engine = Arc::new(loaded.engine);
        if !check {
            let parallelism = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            engine.prewarm(parallelism).await?;
        }
        engines.push(engine);
        (loaded.init, loaded.problems, loaded.notices)
    };
    let plugins = init.wasm.clone();
    for plugin in &plugins {
        let options = WasmOptions::from_config(plugin, init.event_timeout);
        let mut wasm = WasmEngine::load(Path::new(&plugin.path), options, runtime).await?;
        wasm.set_settings(settings.clone());
        let mut allow = plugin.http_allow.clone();
        if wasm.exports_init() {
            let mut more = wasm.run_init().await?;
            allow.append(&mut more.wasm_http_allow);
            init.merge(more);
        }
        wasm.set_http_allow(&allow)?;
        components.push(describe(&wasm));
        engines.push(Arc::new(wasm));
    }
    let policy = Policy::new(engines, runtime.clone())?;
    Ok(Loaded { policy, init, problems, notices, components })
}

fn describe(wasm: &WasmEngine) -> String {
    let mut events: Vec<&str> = wasm.info().handled.iter().map(|e| e.name()).collect();
    events.sort();
    format!("{}: {}", wasm.info().name.trim_start_matches("wasm:"), events.join(", "))
}
