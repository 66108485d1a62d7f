//! `wasmta plugin new --lang rust|go NAME [--world W]`: a standalone policy component
//! project outside this repository. Rust: Cargo.toml (wit-bindgen), `src/lib.rs`, the WIT
//! package the binary hosts in `wit/`; it builds with `cargo build --target wasm32-wasip2
//! --release`. Go: go.mod, `main.go`, a native `main_test.go`, and the generated bindings
//! package `wasmta/`; it builds with `wasmta plugin build`. Both get a sample fixture for
//! `wasmta policy test` and a README. `plugin watch` rebuilds on change.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Create a new policy component project in ./NAME.
    New {
        /// The project (and crate) name.
        name: String,
        /// The language.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// The world the component targets (see wit/worlds.wit).
        #[arg(long, default_value = "message-policy")]
        world: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the project in DIR into a component: cargo for Rust; for Go the bindings,
    /// the Go toolchain and wasm-tools. Prints the component's path.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: the project's target/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rebuild the component when its sources change, then have the running server
    /// build a new policy generation (which loads the new component). Runs until stopped.
    Watch {
        /// The project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        endpoint: super::client::Endpoint,
    },
}

/// The sources' state: every file of the project by size and time, but for what builds
/// write (`target/`, the generated Go package `wasmta/`) and `.git/`.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(p: &Path, top: bool, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let skip = top && matches!(e.file_name().to_str(), Some("target" | ".git" | crate::gobind::PACKAGE));
            match e.metadata() {
                Ok(m) if m.is_dir() && !skip => walk(&path, false, out),
                Ok(m) if !m.is_dir() => out.push((path, m.len(), m.modified().ok())),
                _ => {}
            }
        }
    }
    let mut out = vec![];
    walk(dir, true, &mut out);
    out.sort();
    out
}

/// `plugin watch`: build, reload, and again on every change.
async fn watch(dir: &Path, endpoint: &super::client::Endpoint) -> ExitCode {
    if !dir.join("Cargo.toml").exists() && !dir.join("go.mod").exists() {
        eprintln!("error: {} has neither a Cargo.toml nor a go.mod: give the project with --dir", dir.display());
        return ExitCode::FAILURE;
    }
    let mut last = None;
    loop {
        let now = fingerprint(dir);
        if last.as_ref() != Some(&now) {
            // an edit made while it builds is seen next time round (a first build that
            // writes Cargo.lock costs one more, quick, build)
            last = Some(now);
            let started = std::time::Instant::now();
            let project = dir.to_path_buf();
            let built = tokio::task::spawn_blocking(move || super::plugin_build::build(&project, None)).await;
            match built {
                Ok(Ok(_)) => {
                    let took = started.elapsed();
                    match super::client::json_call(endpoint, "POST", "/api/admin/reload/v1", None).await {
                        Ok(v) => {
                            println!("built in {took:.1?}; the server serves policy generation {}", v["generation"])
                        }
                        Err(e) => println!("built in {took:.1?}; the server did not reload: {e}"),
                    }
                }
                Ok(Err(e)) => println!("the build failed: {e}; waiting for the next change"),
                Err(e) => {
                    eprintln!("error: the build task: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The worlds the WIT package declares.
pub(super) fn worlds() -> Vec<String> {
    super::WIT
        .iter()
        .flat_map(|(_, text)| text.lines())
        .filter_map(|l| l.trim().strip_prefix("world ").and_then(|w| w.split_whitespace().next()).map(str::to_string))
        .collect()
}

/// The worlds a template is written for.
const TEMPLATED: &[&str] = &["message-policy", "deferred-router", "routing"];

/// A world's sources: Rust `src/lib.rs`, Go `main.go` and `main_test.go`, the fixture.
fn world_files(world: &str) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    Some(match world {
        "message-policy" => (
            include_str!("template/rust/message-policy.rs.in"),
            include_str!("template/go/message-policy.go.in"),
            include_str!("template/go/message-policy_test.go.in"),
            include_str!("template/fixtures/message-policy.toml.in"),
        ),
        "deferred-router" => (
            include_str!("template/rust/deferred-router.rs.in"),
            include_str!("template/go/deferred-router.go.in"),
            include_str!("template/go/deferred-router_test.go.in"),
            include_str!("template/fixtures/deferred-router.toml.in"),
        ),
        "routing" => (
            include_str!("template/rust/routing.rs.in"),
            include_str!("template/go/routing.go.in"),
            include_str!("template/go/routing_test.go.in"),
            include_str!("template/fixtures/routing.toml.in"),
        ),
        _ => return None,
    })
}

/// Where the built component lands, as the README and fixture say it.
fn wasm_path(name: &str, go: bool) -> String {
    match go {
        true => format!("target/{name}.wasm"),
        false => format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
    }
}

fn fill(template: &str, name: &str, world: &str, go: bool) -> String {
    template
        .replace("{name}", name)
        .replace("{file}", &name.replace('-', "_"))
        .replace("{world}", world)
        .replace("{wasm}", &wasm_path(name, go))
}

fn create(dir: &Path, name: &str, world: &str, go: bool) -> Result<(), String> {
    let (rust_lib, go_main, go_test, fixture) = world_files(world).ok_or_else(|| format!("no template for {world}"))?;
    let files: Vec<(&str, &str)> = if go {
        vec![
            ("go.mod", include_str!("template/go/go.mod.in")),
            ("main.go", go_main),
            ("main_test.go", go_test),
            ("tests/sample.toml", fixture),
            ("README.md", include_str!("template/go/README.md.in")),
            (".gitignore", include_str!("template/gitignore.in")),
        ]
    } else {
        vec![
            ("Cargo.toml", include_str!("template/rust/Cargo.toml.in")),
            ("src/lib.rs", rust_lib),
            ("tests/sample.toml", fixture),
            ("README.md", include_str!("template/rust/README.md.in")),
            (".gitignore", include_str!("template/gitignore.in")),
        ]
    };
    for (path, template) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, fill(template, name, world, go)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if go {
        // the bindings now, so that `go test ./...` runs before the first build
        let wit = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        super::write_wit_files(wit.path())?;
        return crate::gobind::write_package(wit.path(), world, &dir.join(crate::gobind::PACKAGE))
            .map_err(|e| format!("generating the Go bindings: {e:#}"));
    }
    super::write_wit_files(&dir.join("wit"))
}

/// Runs a plugin command.
pub async fn run(command: PluginCommand) -> ExitCode {
    let (name, lang, world, dir) = match command {
        PluginCommand::Watch { dir, endpoint } => return watch(&dir, &endpoint).await,
        PluginCommand::Build { dir, out } => {
            return match super::plugin_build::build(&dir, out) {
                Ok(path) => {
                    println!("{}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        PluginCommand::New { name, lang, world, dir } => (name, lang, world, dir),
    };
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let go = match lang.as_str() {
        "rust" => false,
        "go" => true,
        other => return fail(format!("--lang {other}: the templates are rust and go")),
    };
    let known = worlds();
    if !known.contains(&world) {
        return fail(format!("--world {world}: no such world; the WIT declares {}", known.join(", ")));
    }
    if !TEMPLATED.contains(&world.as_str()) {
        let change = match go {
            true => "the `// wasmta:world` line in main.go, then add the methods `go build` says are missing",
            false => "the `world:` line in src/lib.rs, then implement the Guest traits the compiler asks for",
        };
        return fail(format!(
            "--world {world}: templates are written for {}; start from one of them and change {change} \
             (`wasmta wit` writes the WIT; worlds.wit lists what each world exports)",
            TEMPLATED.join(", ")
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return fail(format!("{name:?}: a plugin name starts with a letter and has letters, digits, - and _"));
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    if dir.exists() {
        return fail(format!("{} exists already: choose another name or --dir", dir.display()));
    }
    if let Err(e) = create(&dir, &name, &world, go) {
        return fail(e);
    }
    println!("created {} (world {world}); next:", dir.display());
    if go {
        println!("  cd {} && go test ./... && wasmta plugin build", dir.display());
        println!("  wasmta policy test --policy {} tests/sample.toml", wasm_path(&name, true));
        return ExitCode::SUCCESS;
    }
    println!("  cd {} && cargo build --target wasm32-wasip2 --release", dir.display());
    println!("  wasmta policy test --policy {} tests/sample.toml", wasm_path(&name, false));
    ExitCode::SUCCESS
}
