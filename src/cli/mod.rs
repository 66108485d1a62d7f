//! The command line (clap): `serve`, `check`, `load`, `sink`, `shaping`, `reload`, `top`,
//! and the kcli-style admin commands (`queue-summary`, `bounce`, `suspend`, ...).

mod admin;
mod check;
mod client;
mod load;
mod logs;
mod messages;
mod plugin;
mod plugin_build;
mod policy_test;
mod serve;
mod shaping;
mod sink;
mod top;
mod trace;
mod webhook_sink;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `wasmta --version`: the binary's version and the WIT package it hosts.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (policy WIT wasmta:policy@0.1.1)");

#[derive(Parser)]
#[command(name = "wasmta", version = VERSION, about = "A mail transfer agent with Lua and WebAssembly policy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MTA.
    Serve {
        /// Policy: a Lua file, or a component (`.wasm`) for a Wasm-only deployment.
        #[arg(long, default_value = "policy/init.lua")]
        policy: PathBuf,
        /// Spool directory used when the policy defines none.
        #[arg(long, default_value = "data/spool")]
        spool_dir: PathBuf,
        /// A setting components read with `config.setting` (repeatable): `--set listen=0.0.0.0:25`.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Load and validate a policy without binding any port.
    Check {
        /// Policy: a Lua file, or a component (`.wasm`).
        #[arg(long, default_value = "policy/init.lua")]
        policy: PathBuf,
        /// Settings, as for `serve`.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        #[command(flatten)]
        show: check::CheckShow,
    },
    /// Generate SMTP load and report throughput and latency.
    Load(load::LoadArgs),
    /// An SMTP sink that accepts (and optionally stores) what it is sent.
    Sink(sink::SinkArgs),
    /// An HTTP receiver for log hook webhooks: counts the records POSTed to it by type.
    WebhookSink(webhook_sink::WebhookSinkArgs),
    /// Build a new policy generation in the running server now, and show how it went.
    Reload(client::Endpoint),
    /// Watch the running server: message rates, connections, the largest queues.
    Top(top::TopArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    #[command(flatten)]
    Messages(messages::MessageCommand),
    /// Read the log records in a log directory, the segment being written included.
    Logs(logs::LogsArgs),
    /// Policy development: run events against fixtures offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Policy components: a new project from a template.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Write the WIT package policy components are built against (wasmta:policy) into DIR.
    Wit {
        /// The directory to write the .wit files into (created if missing).
        #[arg(default_value = "wit")]
        dir: PathBuf,
    },
    /// Watch the running server's inbound SMTP sessions live.
    TraceSmtpServer(trace::TraceArgs),
    /// Watch the running server's delivery connections live.
    TraceSmtpClient(trace::TraceArgs),
    /// Change the running server's diagnostic log filter ("info,wasmta::smtp=debug").
    SetLogFilter {
        #[command(flatten)]
        endpoint: client::Endpoint,
        /// The new filter, in RUST_LOG's syntax.
        filter: String,
    },
    /// Check shaping files, or show what a domain gets from them.
    #[command(subcommand)]
    Shaping(shaping::ShapingCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run policy events against TOML fixtures offline (Lua or a component); a line per
    /// case, a diff per failure, exit 1 on any failure.
    Test(policy_test::PolicyTestArgs),
}

/// The WIT package, as compiled into this binary.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../wit/types.wit")),
    ("host.wit", include_str!("../../wit/host.wit")),
    ("events.wit", include_str!("../../wit/events.wit")),
    ("worlds.wit", include_str!("../../wit/worlds.wit")),
];

/// Writes the WIT files into `dir`.
fn write_wit_files(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in WIT {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// `wasmta wit DIR`.
fn write_wit(dir: &std::path::Path) -> ExitCode {
    if let Err(e) = write_wit_files(dir) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} (package {}) to {}",
        WIT.iter().map(|w| w.0).collect::<Vec<_>>().join(", "),
        wit_package(),
        dir.display()
    );
    ExitCode::SUCCESS
}

/// `wasmta:policy@X.Y.Z`, from the WIT's package line.
pub fn wit_package() -> &'static str {
    WIT[0]
        .1
        .lines()
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.trim_end_matches(';'))
        .unwrap_or("wasmta:policy")
}

/// Entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Sink(_) | Command::WebhookSink(_) | Command::Load(_)) {
        // a report piped into `head` ends quietly when the reader goes, like any Unix tool
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    crate::log_filter::init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { policy, spool_dir, settings } => {
            rt.block_on(serve::run(policy, spool_dir, settings.into_iter().collect()))
        }
        Command::Check { policy, settings, show } => {
            rt.block_on(check::run(policy, settings.into_iter().collect(), show))
        }
        Command::Load(args) => rt.block_on(load::run(args)),
        Command::Sink(args) => rt.block_on(sink::run(args)),
        Command::WebhookSink(args) => rt.block_on(webhook_sink::run(args)),
        Command::Shaping(command) => rt.block_on(shaping::run(command)),
        Command::Reload(endpoint) => rt.block_on(reload(endpoint)),
        Command::Top(args) => rt.block_on(top::run(args)),
        Command::Admin(command) => rt.block_on(admin::run(command)),
        Command::Messages(command) => rt.block_on(messages::run(command)),
        Command::Logs(args) => rt.block_on(logs::run(args)),
        Command::Policy(PolicyCommand::Test(args)) => rt.block_on(policy_test::run(args)),
        Command::Wit { dir } => write_wit(&dir),
        Command::Plugin(command) => rt.block_on(plugin::run(command)),
        Command::TraceSmtpServer(args) => rt.block_on(trace::run("server", args)),
        Command::TraceSmtpClient(args) => rt.block_on(trace::run("client", args)),
        Command::SetLogFilter { endpoint, filter } => rt.block_on(set_log_filter(endpoint, filter)),
    }
}

/// `name=value`.
fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// `wasmta set-log-filter`.
async fn set_log_filter(endpoint: client::Endpoint, filter: String) -> ExitCode {
    let body = serde_json::json!({ "filter": filter });
    match client::json_call(&endpoint, "POST", "/api/admin/set_diagnostic_log_filter/v1", Some(&body)).await {
        Ok(_) => {
            println!("diagnostic log filter is now {filter:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wasmta reload`.
async fn reload(endpoint: client::Endpoint) -> ExitCode {
    match client::call(&endpoint, "POST", "/api/admin/reload/v1", None).await {
        Ok((status, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            let generation = &v["generation"];
            if status == 200 {
                println!("policy generation {generation} serving");
                if let Some(list) = v["restart_needed"].as_array().filter(|l| !l.is_empty()) {
                    let names: Vec<&str> = list.iter().filter_map(|x| x.as_str()).collect();
                    println!(
                        "changed in the start-up configuration (init, pre_init), applies after a restart: {}",
                        names.join(", ")
                    );
                }
                ExitCode::SUCCESS
            } else {
                eprintln!("reload refused, generation {generation} keeps serving:");
                eprintln!("{}", v["error"].as_str().unwrap_or(&v.to_string()));
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "wasmta", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }
}
