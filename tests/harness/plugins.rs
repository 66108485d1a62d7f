//! The example policy components in `plugins/`, built once per process, and the Lua
//! policy that `message-policy` mirrors. Shared by tests/wasm.rs and benches/dispatch.rs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// The Lua equivalent of `plugins/rust/message-policy`.
pub const LUA_EQUIVALENT: &str = r#"
kumo.on('smtp_server_message_received', function(msg)
  local reason = msg:get_first_named_header_value('X-Block')
  if reason then kumo.reject(550, '5.7.1 blocked by wasm policy: ' .. reason) end
  local tenant = msg:get_first_named_header_value('X-Tenant')
  if tenant then msg:set_meta('tenant', tenant) end
  msg:prepend_header('X-Wasm-Policy', 'checked')
end)
"#;

/// Builds the plugins workspace (once) and returns the path of component `name`.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("plugins/Cargo.toml"))
            .status()
            .expect("run cargo for the plugins");
        assert!(status.success(), "building plugins/ failed (is the wasm32-wasip2 target installed?)");
        root.join("plugins/target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}
