//! The example policy components in `plugins/`, built once per process: the Rust ones with
//! cargo (`wasm32-wasip2`), the Go ones with `plugins/go/build.sh` (`wasmta plugin build` with
//! Go and wasm-tools from a venv).
//! Shared by tests/wasm.rs and benches/dispatch.rs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example policy every component implements (`plugins/example-policy.lua`).
pub fn example_lua() -> String {
    std::fs::read_to_string(root().join("plugins/example-policy.lua")).expect("read plugins/example-policy.lua")
}

/// The Lua equivalent of `plugins/rust/message-policy`: part (c) of the example policy.
pub fn lua_message_policy() -> String {
    let all = example_lua();
    let start = all.find("-- (c)").expect("part (c)");
    let end = all.find("-- (a)").expect("part (a)");
    all[start..end].to_string()
}

/// Builds the Rust plugins workspace (once) and returns the path of component `name`
/// (`message_policy`, `deferred_router`, `router`, `hostile`).
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // a fresh machine may lack the target: add it (a no-op when present)
        let _ = std::process::Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).output();
        // its own target directory, whatever CARGO_TARGET_DIR the tests run with
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root().join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(root().join("plugins/target"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo for the plugins");
        assert!(status.success(), "building plugins/ failed (is the wasm32-wasip2 target installed?)");
        root().join("plugins/target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Builds the Go plugin `plugins/go/<name>` (once per process) and returns its component.
pub fn go_component(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out = root().join(format!("plugins/go/target/{name}.wasm"));
    let status = std::process::Command::new(root().join("plugins/go/build.sh"))
        .arg(root().join("plugins/go").join(name))
        .arg(&out)
        .env("CARGO", env!("CARGO"))
        .env("WASMTA", env!("CARGO_BIN_EXE_wasmta"))
        .status()
        .expect("run plugins/go/build.sh");
    assert!(status.success(), "plugins/go/build.sh {name} failed");
    built.insert(name.to_string(), out.clone());
    out
}

/// The Go toolchain and wasm-tools `plugins/go/build.sh` installs (into plugins/go/.venv),
/// for tests that build Go plugins outside this repository.
pub fn go_tools() -> (PathBuf, PathBuf) {
    // building one in-repo plugin installs them, under go_component's lock
    go_component("message-policy");
    let venv = root().join("plugins/go/.venv/bin");
    (venv.join("go"), venv.join("wasm-tools"))
}
