//! `wasmta shaping check FILE...` (like KumoMTA's validate-shaping: every error and
//! warning, non-zero exit on errors) and `wasmta shaping resolve DOMAIN FILE...` (the
//! merged egress path options a domain gets, for debugging shaping).

use crate::dns::{Dns, HickoryDns, TestZones};
use crate::shaping::store::{self, LoadOptions};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Shaping file tools.
#[derive(Subcommand)]
pub enum ShapingCommand {
    /// Check shaping files: print every error and warning; exit 1 on errors.
    Check(CheckArgs),
    /// Print the egress path options DOMAIN gets from shaping files.
    Resolve(ResolveArgs),
}

/// Options both commands share.
#[derive(Args)]
pub struct Common {
    /// Load options as JSON, e.g. '{"dns_fail": "Error"}' (KumoMTA's names).
    #[arg(long, value_name = "JSON")]
    options: Option<String>,
    /// Answer DNS from this zone file instead of the system resolver (offline checks).
    #[arg(long, value_name = "FILE")]
    dns_zone: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    common: Common,
    /// Files in merge order; `wasmta:default-shaping.toml` names the built-in file.
    #[arg(required = true)]
    files: Vec<String>,
}

#[derive(Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    common: Common,
    /// The routing domain.
    domain: String,
    /// Egress source.
    #[arg(long, default_value = "unspecified")]
    source: String,
    /// Site name (default: from the domain's MX records).
    #[arg(long)]
    site: Option<String>,
    /// Files in merge order.
    #[arg(required = true)]
    files: Vec<String>,
}

fn setup(common: &Common) -> Result<(LoadOptions, Arc<dyn Dns>), String> {
    let dns: Arc<dyn Dns> = match &common.dns_zone {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Arc::new(TestZones::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => Arc::new(HickoryDns::system()?),
    };
    let options = match &common.options {
        None => LoadOptions::default(),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("--options: {e}"))?;
            crate::config::decode(v).map_err(|e| format!("--options: {e}"))?
        }
    };
    Ok((options, dns))
}

/// Runs a shaping command.
pub async fn run(command: ShapingCommand) -> ExitCode {
    let result = match command {
        ShapingCommand::Check(args) => check(args).await,
        ShapingCommand::Resolve(args) => resolve(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check(args: CheckArgs) -> Result<ExitCode, String> {
    let (options, dns) = setup(&args.common)?;
    let loaded = store::load_uncached(&args.files, &options, dns.as_ref()).await;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    for e in &loaded.errors {
        println!("error: {e}");
    }
    let (domains, providers) = loaded.shaping.counts();
    println!(
        "{}: {} error(s), {} warning(s); {domains} domain/site entries, {providers} provider(s); hash {}",
        args.files.join(", "),
        loaded.errors.len(),
        loaded.warnings.len(),
        loaded.hash
    );
    Ok(if loaded.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn resolve(args: ResolveArgs) -> Result<ExitCode, String> {
    let (options, dns) = setup(&args.common)?;
    let loaded = store::load_uncached(&args.files, &options, dns.as_ref()).await;
    if !loaded.errors.is_empty() {
        return Err(loaded.errors.join("\n"));
    }
    let site = match args.site {
        Some(s) => s,
        None => {
            let protocol = crate::config::queue::SmtpProtocol::default();
            match crate::dns::mx::resolve_site(dns.as_ref(), &args.domain, &protocol).await {
                Ok(site) => site.name,
                Err(e) => {
                    eprintln!("warning: {}: no site from DNS ({e:?}); using the domain", args.domain);
                    args.domain.to_ascii_lowercase()
                }
            }
        }
    };
    let params = loaded.shaping.resolve_params(&args.domain, &args.source, &site, dns.as_ref()).await;
    // check the result is a valid egress path, then show it
    crate::shaping::file::validate_params(&params).map_err(|e| format!("the merged options are invalid: {e}"))?;
    println!("# domain {} source {} site {site}", args.domain, args.source);
    println!("{}", serde_json::to_string_pretty(&params).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
