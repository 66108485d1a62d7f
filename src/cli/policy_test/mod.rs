//! `wasmta policy test`: runs policy events against fixtures offline, the same for a Lua
//! policy and a component, with the real engines and no network (the policy's own test
//! zone, the fixture file's `zone`, or an empty one: unknown names are NXDOMAIN).
//!
//! A fixture file is TOML with `[[case]]` tables: `name`, `event`, the event's inputs and
//! `[case.expect]`. Message events (`smtp_server_message_received`,
//! `smtp_server_message_deferred_inject`, `http_message_generated`) take `sender`,
//! `recipients`, `data` or `message` (an `.eml` path next to the fixture), `meta` and
//! `conn_meta`; `smtp_server_mail_from` / `smtp_server_rcpt_to` take `address` and
//! `conn_meta`; `get_queue_config` takes `domain`, `tenant`, `campaign`,
//! `routing_domain`; `get_egress_path_config` takes `routing_domain`, `egress_source`,
//! `site_name`. Expectations: `accept = true` or `reject = { code, enhanced_code,
//! contains }`, `meta` and `headers` (present with these values), `queue_config` /
//! `egress_path` (these fields). `--record` writes what was observed as each case's
//! `expect`.

mod expect;

use crate::message::{EnvelopeAddress, Message};
use crate::policy::{ConnMeta, Policy, PolicyError};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PolicyTestArgs {
    /// The policy: a Lua file, or a component (`.wasm`) handling some events.
    #[arg(long)]
    policy: PathBuf,
    /// Settings a component reads with `config.setting`, as for `serve`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::parse_setting)]
    settings: Vec<(String, String)>,
    /// Write each case's observed outcome into its fixture as `expect` (rewrites the files).
    #[arg(long)]
    record: bool,
    /// Fixture files (TOML).
    #[arg(required = true)]
    fixtures: Vec<PathBuf>,
}

/// What one case did.
fn observe(result: Result<(), PolicyError>) -> Map<String, Value> {
    let mut out = Map::new();
    match result {
        Ok(()) => {
            out.insert("accept".into(), Value::Bool(true));
        }
        Err(PolicyError::Rejected(r)) => {
            let reply = r.reply();
            out.insert(
                "reject".into(),
                json!({ "code": reply.code, "enhanced_code": reply.enhanced.map(|e| e.to_string()), "contains": reply.text }),
            );
        }
        Err(e) => {
            out.insert("error".into(), Value::String(e.to_string()));
        }
    }
    out
}

fn text_field<'a>(case: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    case.get(key).and_then(Value::as_str)
}

fn object(case: &Map<String, Value>, key: &str) -> Map<String, Value> {
    case.get(key).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn address(text: &str, what: &str) -> Result<EnvelopeAddress, String> {
    EnvelopeAddress::parse(text).map_err(|e| format!("{what} {text:?}: {e:?}"))
}

/// The message a case describes.
fn message(case: &Map<String, Value>, dir: &Path) -> Result<Message, String> {
    let sender = address(text_field(case, "sender").unwrap_or("sender@example.com"), "sender")?;
    let recipients = match case.get("recipients") {
        Some(Value::Array(list)) => {
            list.iter().map(|r| address(r.as_str().unwrap_or_default(), "recipient")).collect::<Result<Vec<_>, _>>()?
        }
        Some(other) => return Err(format!("recipients: expected a list of addresses, got {other}")),
        None => vec![address("recipient@example.net", "recipient")?],
    };
    let data = match (text_field(case, "data"), text_field(case, "message")) {
        (Some(d), None) => d.to_string(),
        (None, Some(path)) => {
            std::fs::read_to_string(dir.join(path)).map_err(|e| format!("message {}: {e}", dir.join(path).display()))?
        }
        (None, None) => "Subject: test\r\n\r\ntest\r\n".to_string(),
        (Some(_), Some(_)) => return Err("give data or message, not both".into()),
    };
    let data = data.replace("\r\n", "\n").replace('\n', "\r\n");
    Ok(Message::new(sender, recipients, object(case, "meta"), data.into_bytes()))
}

/// What a routing event observed: accepted with its configuration, or rejected.
fn configured(result: Result<(&str, serde_json::Result<Value>), PolicyError>) -> Result<Map<String, Value>, String> {
    match result {
        Ok((key, config)) => {
            let mut out = observe(Ok(()));
            out.insert(key.into(), config.map_err(|e| e.to_string())?);
            Ok(out)
        }
        Err(e) => Ok(observe(Err(e))),
    }
}

/// The input keys of each event (besides `name`, `event` and `expect`).
fn input_keys(event: &str) -> Option<&'static [&'static str]> {
    Some(match event {
        "smtp_server_message_received" | "smtp_server_message_deferred_inject" | "http_message_generated" => {
            &["sender", "recipients", "data", "message", "meta", "conn_meta"]
        }
        "smtp_server_mail_from" | "smtp_server_rcpt_to" => &["address", "conn_meta"],
        "get_queue_config" => &["domain", "tenant", "campaign", "routing_domain"],
        "get_egress_path_config" => &["routing_domain", "egress_source", "site_name"],
        _ => return None,
    })
}

/// Every input has its type: `recipients` a list of addresses, `meta` and `conn_meta`
/// tables, the rest strings (a number where an address belongs is a mistake to name, not
/// a reason to use the default).
fn check_types(case: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in case.iter().filter(|(k, _)| k.as_str() != "expect") {
        let (ok, want) = match key.as_str() {
            "recipients" => (value.as_array().is_some_and(|l| l.iter().all(Value::is_string)), "a list of addresses"),
            "meta" | "conn_meta" => (value.is_object(), "a table"),
            _ => (value.is_string(), "a string"),
        };
        if !ok {
            return Err(format!("{key}: expected {want}, got {value}"));
        }
    }
    Ok(())
}

/// Runs one case; returns what was observed.
async fn run_case(policy: &Policy, case: &Map<String, Value>, dir: &Path) -> Result<Map<String, Value>, String> {
    let event = text_field(case, "event").ok_or("event: missing")?;
    if let Some(keys) = input_keys(event)
        && let Some(k) =
            case.keys().find(|k| !["name", "event", "expect"].contains(&k.as_str()) && !keys.contains(&k.as_str()))
    {
        return Err(format!("{k}: not an input of {event}; its inputs are {}", keys.join(", ")));
    }
    check_types(case)?;
    // a case for an event the policy has no handler for tests nothing of the policy (the
    // egress path may still come from shaping files, so that event is exempt)
    if let Some(e) = crate::policy::Event::from_name(event)
        && event != "get_egress_path_config"
        && !policy.handles(e)
    {
        return Err(format!(
            "the policy does not handle {event} (no kumo.on handler; a component that does not export it)"
        ));
    }
    let conn = ConnMeta::new(object(case, "conn_meta"));
    match event {
        "smtp_server_message_received" | "smtp_server_message_deferred_inject" | "http_message_generated" => {
            let msg = message(case, dir)?;
            let before = msg.all_headers().map_err(|e| e.to_string())?;
            let result = match event {
                "smtp_server_message_received" => policy.message_received(&msg, &conn).await,
                "smtp_server_message_deferred_inject" => policy.deferred_inject(&msg, &conn).await,
                _ => policy.http_message_generated(&msg).await,
            };
            let mut out = observe(result);
            out.insert("meta".into(), Value::Object(msg.meta()));
            let after = msg.all_headers().map_err(|e| e.to_string())?;
            let mut added = Map::new();
            for (name, value) in after.iter().filter(|h| !before.contains(h)) {
                added.insert(name.clone(), Value::String(value.trim().to_string()));
            }
            out.insert("headers".into(), Value::Object(added));
            Ok(out)
        }
        "smtp_server_mail_from" | "smtp_server_rcpt_to" => {
            let a = address(text_field(case, "address").ok_or("address: missing")?, "address")?;
            let result = match event {
                "smtp_server_mail_from" => policy.mail_from(&a, &conn).await,
                _ => policy.rcpt_to(&a, &conn).await,
            };
            Ok(observe(result))
        }
        "get_queue_config" => {
            let parts = crate::message::queue_name::QueueNameParts {
                domain: text_field(case, "domain").ok_or("domain: missing")?.to_string(),
                tenant: text_field(case, "tenant").map(str::to_string),
                campaign: text_field(case, "campaign").map(str::to_string),
                routing_domain: text_field(case, "routing_domain").map(str::to_string),
            };
            let result = policy.queue_config(&parts).await;
            configured(result.map(|c| ("queue_config", serde_json::to_value(c))))
        }
        "get_egress_path_config" => {
            let routing = text_field(case, "routing_domain").ok_or("routing_domain: missing")?;
            let source = text_field(case, "egress_source").unwrap_or("unspecified");
            let site = text_field(case, "site_name").unwrap_or(routing);
            let result = policy.egress_path_config(routing, source, site).await;
            configured(result.map(|c| ("egress_path", serde_json::to_value(c))))
        }
        other => Err(format!(
            "event {other:?}: policy test runs smtp_server_message_received, smtp_server_message_deferred_inject, \
             http_message_generated, smtp_server_mail_from, smtp_server_rcpt_to, get_queue_config, \
             get_egress_path_config"
        )),
    }
}

/// The comment lines a file opens with, and the blank line after them.
fn leading_comments(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: String =
        text.lines().take_while(|l| l.trim_start().starts_with('#')).map(|l| format!("{l}\n")).collect();
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn read_fixture(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn load(args: &PolicyTestArgs, zone: Option<&str>) -> Result<Policy, String> {
    let runtime = crate::policy::Runtime::new();
    let settings = args.settings.iter().cloned().collect();
    // a component that is not a whole deployment is loaded the way a Lua policy loads it
    let policy_path = if crate::policy::loader::is_component(&args.policy) {
        let dir = std::env::temp_dir().join(format!("wasmta-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let abs = std::fs::canonicalize(&args.policy).map_err(|e| format!("{}: {e}", args.policy.display()))?;
        let wrapper = dir.join("init.lua");
        let text = format!(
            "kumo.on('init', function()\n  kumo.wasm.load {{ path = {:?} }}\nend)\n",
            abs.display().to_string()
        );
        std::fs::write(&wrapper, text).map_err(|e| e.to_string())?;
        wrapper
    } else {
        args.policy.clone()
    };
    let loaded = crate::policy::loader::load(&policy_path, true, settings, &runtime).await?;
    if !loaded.problems.is_empty() {
        return Err(loaded.problems.join("\n"));
    }
    // no network: the policy's own zone, the fixture's, or none
    let mut dns = loaded.init.dns.clone();
    if dns.zones.is_empty() {
        dns.zones.push(zone.unwrap_or_default().to_string());
        dns.name_servers.clear();
    }
    runtime.set_dns(crate::dns::from_config(&dns)?);
    Ok(loaded.policy)
}

/// Runs every fixture; prints a line per case, a diff per failure.
pub async fn run(args: PolicyTestArgs) -> ExitCode {
    let (mut passed, mut failed) = (0, 0);
    for path in &args.fixtures {
        let mut fixture = match read_fixture(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let zone = match fixture.get("zone") {
            None => None,
            Some(toml::Value::String(z)) => Some(z.clone()),
            Some(other) => {
                eprintln!("error: {}: zone: expected a string (a zone file's text), got {other}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let policy = match load(&args, zone.as_deref()).await {
            Ok(p) => p,
            Err(e) => {
                // the loader's errors usually name the file already
                match e.contains(&args.policy.display().to_string()) {
                    true => eprintln!("error: {e}"),
                    false => eprintln!("error: {}: {e}", args.policy.display()),
                }
                return ExitCode::FAILURE;
            }
        };
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let cases: Vec<toml::Value> = fixture.get("case").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        if cases.is_empty() {
            eprintln!("error: {}: no [[case]]", path.display());
            return ExitCode::FAILURE;
        }
        let mut recorded = vec![];
        for (i, case) in cases.iter().enumerate() {
            let case_json = match serde_json::to_value(case) {
                Ok(Value::Object(m)) => m,
                _ => {
                    eprintln!("error: {}: case {} is not a table", path.display(), i + 1);
                    return ExitCode::FAILURE;
                }
            };
            let name = text_field(&case_json, "name").map(str::to_string).unwrap_or_else(|| format!("case {}", i + 1));
            let observed = match run_case(&policy, &case_json, &dir).await {
                Ok(o) => o,
                Err(e) => {
                    println!("FAIL {}: {name}\n  {e}", path.display());
                    failed += 1;
                    recorded.push(case.clone());
                    continue;
                }
            };
            if args.record {
                let mut c = case.as_table().cloned().unwrap_or_default();
                c.remove("expect");
                match serde_json::from_value::<toml::Value>(expect::recorded(&observed)) {
                    Ok(v) => {
                        c.insert("expect".into(), v);
                        recorded.push(toml::Value::Table(c));
                    }
                    Err(e) => {
                        eprintln!("error: {}: {name}: the outcome cannot be written as TOML: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
                println!("RECORDED {}: {name}", path.display());
                continue;
            }
            let diff = match expect::check_keys(&object(&case_json, "expect")) {
                Ok(()) => expect::check(&object(&case_json, "expect"), &observed),
                Err(e) => vec![e],
            };
            if diff.is_empty() {
                println!("PASS {}: {name}", path.display());
                passed += 1;
            } else {
                println!("FAIL {}: {name}", path.display());
                for d in diff {
                    println!("  {d}");
                }
                failed += 1;
            }
        }
        if args.record {
            fixture.insert("case".into(), toml::Value::Array(recorded));
            let text = match toml::to_string_pretty(&fixture) {
                // the file's opening comments stay (they usually say how to run it)
                Ok(t) => leading_comments(path) + &t,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if !args.record {
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
