//! `wasmta check`: loads the policy (a Lua file, or a component for a Wasm-only
//! deployment), runs `init` with every configuration call validated, compiles and links
//! every policy component it loads, reports problems naming file, line and key, and binds
//! nothing.

use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the check.
pub async fn run(policy: PathBuf, settings: crate::policy::loader::Settings) -> ExitCode {
    match crate::policy::loader::load(&policy, true, settings, &crate::policy::Runtime::new()).await {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Ok(loaded) if !loaded.problems.is_empty() => {
            for p in &loaded.problems {
                eprintln!("error: {p}");
            }
            for n in &loaded.notices {
                eprintln!("note: {n}");
            }
            ExitCode::FAILURE
        }
        Ok(loaded) => {
            for n in &loaded.notices {
                println!("note: {n}");
            }
            for c in &loaded.components {
                println!("component OK: {c}");
            }
            let i = &loaded.init;
            println!(
                "{}: OK ({} esmtp listener(s), {} spool(s), {} log destination(s), {} http listener(s))",
                policy.display(),
                i.listeners.len(),
                i.spools.len(),
                i.logs.len(),
                i.http_listeners.len()
            );
            ExitCode::SUCCESS
        }
    }
}
