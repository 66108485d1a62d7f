//! `require` support: files relative to the policy's directory, and the
//! `policy-extras.*` helper modules wasmta ships (our own code, KumoMTA's API).

use mlua::{Lua, Table};
use std::path::Path;

/// Helper modules embedded in the binary.
const MODULES: &[(&str, &str)] = &[
    ("policy-extras.policy_utils", include_str!("extras/policy_utils.lua")),
    ("policy-extras.shaping", include_str!("extras/shaping.lua")),
    ("policy-extras.queue", include_str!("extras/queue.lua")),
    ("policy-extras.sources", include_str!("extras/sources.lua")),
    ("policy-extras.listener_domains", include_str!("extras/listener_domains.lua")),
    ("policy-extras.rollup", include_str!("extras/rollup.lua")),
    ("policy-extras.log_hooks", include_str!("extras/log_hooks.lua")),
    ("policy-extras.dkim_sign", include_str!("extras/dkim_sign.lua")),
    ("policy-extras.docker_utils", include_str!("extras/docker_utils.lua")),
];

/// Sets `package.path` and registers the embedded modules.
pub fn install(lua: &Lua, policy_path: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let dir = policy_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = dir.display();
    let old: String = package.get("path")?;
    package.set("path", format!("{dir}/?.lua;{dir}/?/init.lua;{old}"))?;
    let preload: Table = package.get("preload")?;
    for (name, source) in MODULES {
        let chunk_name = format!("@{name}.lua");
        let loader = lua.load(*source).set_name(chunk_name).into_function()?;
        preload.set(*name, loader)?;
    }
    // written in Rust: it calls mail-auth directly
    preload.set(
        "policy-extras.mail_auth",
        lua.create_function(|lua, _: mlua::MultiValue| super::mail_auth::module(lua))?,
    )?;
    Ok(())
}
