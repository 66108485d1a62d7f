//! `wasmta check`: loads the policy (a Lua file, or a component for a Wasm-only
//! deployment), runs `init` with every configuration call validated, compiles and links
//! every policy component it loads, reports problems naming file, line and key, and binds
//! nothing. `--show` prints the effective configuration `init` made (postconf -n);
//! `--domain` runs the routing events for a domain and prints the queue configuration,
//! pool, sources, site and egress path it would get. Secrets are never printed.

use crate::config::InitConfig;
use crate::config::queue::{Protocol, SmtpProtocol};
use crate::message::queue_name::QueueNameParts;
use crate::policy::Policy;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `check` prints beyond its verdict.
#[derive(clap::Args, Default)]
pub struct CheckShow {
    /// Print the effective listener, spool, log, HTTP, DNS and shaping configuration.
    #[arg(long)]
    show: bool,
    /// Run the routing events for mail to this domain and print what it would get.
    #[arg(long)]
    domain: Option<String>,
    /// With --domain: the tenant meta.
    #[arg(long, requires = "domain")]
    tenant: Option<String>,
    /// With --domain: the campaign meta.
    #[arg(long, requires = "domain")]
    campaign: Option<String>,
    /// With --domain: the routing_domain meta.
    #[arg(long, requires = "domain")]
    routing_domain: Option<String>,
}

/// Replaces every value whose key names a secret.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if (k.contains("password") || k.contains("secret") || k.contains("key_data")) && !x.is_null() {
                    *x = Value::String("(hidden)".into());
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(redact),
        _ => {}
    }
}

fn pretty(mut v: Value) -> String {
    redact(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn show_init(init: &InitConfig) -> Value {
    let listeners: Vec<Value> = init
        .listeners
        .iter()
        .map(|l| {
            let overrides = |o: &crate::config::listener::Overrides| -> Vec<Value> {
                o.iter().map(|(net, m)| json!({ "network": net.to_string(), "options": m })).collect()
            };
            json!({
                "listen": l.listen, "max_connections": l.max_connections, "settings": l.settings,
                "via": overrides(&l.via), "peer": overrides(&l.peer),
            })
        })
        .collect();
    json!({
        "esmtp_listeners": listeners,
        "http_listeners": init.http_listeners,
        "spools": init.spools,
        "local_logs": init.logs,
        "log_hooks": init.log_hooks,
        "dns": format!("{:?}", init.dns),
        "shaping": init.shaping,
        "bounce_classifier": init.bounce_classifier,
        "policy_timeout": format!("{:?}", init.event_timeout),
        "wasm": init.wasm,
        "redis_throttles": init.redis_throttles.as_ref().map(|r| format!("{:?}", r.node.urls())),
    })
}

/// The routing events for one domain, as the queue manager runs them.
async fn route(policy: &Policy, init: &InitConfig, show: &CheckShow, domain: &str) -> Result<Value, String> {
    let dns = crate::dns::from_config(&init.dns)?;
    policy.runtime().set_dns(dns.clone());
    if let Some(files) = policy.runtime().core_shaping() {
        policy.runtime().shaping.load(&files, &Default::default(), dns.as_ref()).await?;
    }
    let parts = QueueNameParts {
        campaign: show.campaign.clone(),
        tenant: show.tenant.clone(),
        domain: domain.to_ascii_lowercase(),
        routing_domain: show.routing_domain.clone(),
    };
    let config = policy.queue_config(&parts).await.map_err(|e| format!("get_queue_config: {e}"))?;
    let pool_name = config.egress_pool.clone().unwrap_or_else(|| "unspecified".into());
    let pool = policy.egress_pool(&pool_name).await.map_err(|e| format!("get_egress_pool: {e}"))?;
    let routing = parts.routing_domain.clone().unwrap_or_else(|| parts.domain.clone());
    let (site, hosts, from_dns) = match &config.protocol {
        Protocol::Smtp(smtp) => site(dns.as_ref(), &routing, smtp).await,
        other => (format!("({} delivery: no MX)", protocol_name(other)), vec![], false),
    };
    let mut sources = vec![];
    let names: Vec<String> = match pool.entries.is_empty() {
        true => vec!["unspecified".into()],
        false => pool.entries.iter().map(|e| e.name.clone()).collect(),
    };
    for name in names {
        let source = policy.egress_source(&name).await.map_err(|e| format!("get_egress_source: {e}"))?;
        let path = policy
            .egress_path_config(&routing, &name, &site)
            .await
            .map_err(|e| format!("get_egress_path_config: {e}"))?;
        sources.push(json!({ "source": source, "egress_path": path }));
    }
    Ok(json!({
        "queue": parts.format(),
        "queue_config": config,
        "egress_pool": pool,
        "site": site,
        "hosts": hosts,
        // prohibited_hosts and skip_hosts apply to hosts found in DNS, not to an mx_list
        "hosts_from_dns": from_dns,
        "sources": sources,
    }))
}

fn protocol_name(p: &Protocol) -> &'static str {
    match p {
        Protocol::Smtp(_) => "smtp",
        Protocol::Maildir(_) => "maildir",
        Protocol::CustomLua(_) => "custom_lua",
        Protocol::Xfer(_) => "xfer",
    }
}

/// The site name, its hosts (with the port when the mx_list gives one), and whether
/// they came from DNS; or what resolving it says.
async fn site(dns: &dyn crate::dns::Dns, domain: &str, smtp: &SmtpProtocol) -> (String, Vec<String>, bool) {
    match crate::dns::mx::resolve_site(dns, domain, smtp).await {
        Ok(site) => {
            let hosts = site
                .hosts
                .iter()
                .map(|h| match h.port {
                    Some(p) => format!("{}:{p}", h.name),
                    None => h.name.clone(),
                })
                .collect();
            (site.name.clone(), hosts, site.from_dns)
        }
        Err(e) => (format!("(unresolved: {e:?})"), vec![], false),
    }
}

/// Runs the check.
pub async fn run(policy: PathBuf, settings: crate::policy::loader::Settings, show: CheckShow) -> ExitCode {
    if let Err(e) = crate::config::storage::MinFree::check_env() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
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
            if show.show {
                println!("{}", pretty(show_init(i)));
            }
            if let Some(domain) = show.domain.clone() {
                match route(&loaded.policy, i, &show, &domain).await {
                    Ok(v) => println!("{}", pretty(v)),
                    Err(e) => {
                        eprintln!("error: routing {domain}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}
