//! `wasmta check`: loads the policy, runs `init` with every configuration call
//! validated, compiles and links every policy component it loads, reports problems
//! naming file, line and key, and binds nothing.

use crate::policy::lua::LuaEngine;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the check.
pub async fn run(policy: PathBuf) -> ExitCode {
    match LuaEngine::load(&policy, true).await {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Ok(loaded) if !loaded.problems.is_empty() => {
            for p in &loaded.problems {
                eprintln!("error: {p}");
            }
            ExitCode::FAILURE
        }
        Ok(loaded) => {
            let i = &loaded.init;
            let mut failed = false;
            for plugin in &i.wasm {
                let budget = plugin.budget.unwrap_or(i.event_timeout);
                match crate::policy::wasm::WasmEngine::load(std::path::Path::new(&plugin.path), budget).await {
                    Ok(_) => println!("{}: component OK", plugin.path),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return ExitCode::FAILURE;
            }
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
