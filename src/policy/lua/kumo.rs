//! The `kumo` global: registration (`kumo.on`), refusals (`kumo.reject`,
//! `kumo.disconnect`), the `init`-time configuration calls, data helpers, and every other
//! name of KumoMTA's API, accepted with a one-line warning where wasmta has no
//! implementation yet (never an unexplained load failure).

use super::convert::from_lua;
use super::userdata::ConfigObject;
use super::{Host, Phase, caller_site, phase};
use crate::config::{self, storage};
use crate::policy::events::{Multiplicity, multiplicity_of};
use crate::policy::init_calls;
use crate::policy::{DisconnectMode, Rejection};
use mlua::{Function, Lua, Table, Value as LuaValue, Variadic};
use serde_json::Value;
use std::sync::Arc;

/// `kumo.*` names accepted with a warning because wasmta does not implement them yet.
const UNIMPLEMENTED: &[&str] = &[
    "configure_accounting_db_path",
    "apply_supplemental_trace_header",
    "generate_rfc3464_message",
    "invoke_get_queue_config",
    "invoke_get_egress_path_config",
    "invoke_get_egress_source",
    "invoke_get_egress_pool",
    "compute_queue_config_constraints",
    "compute_egress_path_config_constraints",
    "format_queue_config_toml",
    "format_egress_path_config_toml",
    "format_egress_path_config_constraints",
    "spawn_task",
    "set_smtpsrv_threads",
    "set_httpinject_threads",
    "set_httpinject_recipient_rate_limit",
    "set_qmaint_threads",
    "set_ready_qmaint_threads",
    "set_readyq_threads",
    "set_spoolin_threads",
    "set_logging_threads",
    "set_lruttl_cache_capacity",
    "set_memory_hard_limit",
    "set_memory_soft_limit",
    "set_memory_low_thresh",
    "get_memory_hard_limit",
    "get_memory_soft_limit",
    "get_memory_low_thresh",
];

/// Sub-modules and their functions, accepted with a warning for now.
const UNIMPLEMENTED_MODULES: &[(&str, &[&str])] = &[
    ("dkim", &["set_signing_threads"]),
    (
        "dns",
        &[
            "configure_unbound_resolver",
            "define_resolver",
            "load_resolv_conf",
            "set_mta_sts_enabled",
            "set_mx_concurrency_limit",
            "set_mx_negative_cache_ttl",
            "set_mx_timeout",
        ],
    ),
    ("shaping", &[]),
    ("http", &["connect_websocket"]),
    ("secrets", &["load"]),
    (
        "aaa",
        &[
            "configure_acct_log",
            "load_acl_map",
            "make_access_control_list",
            "make_http_url_resource",
            "query_resource_access",
            "set_acl_cache_ttl",
            "set_check_cache_ttl",
            "set_fall_back_to_acl_map",
        ],
    ),
    ("api", &[]),
];

/// Installs the `kumo` global into a context.
pub fn install(lua: &Lua, host: &Arc<Host>) -> mlua::Result<()> {
    let kumo = lua.create_table()?;
    kumo.set("on", lua.create_function(on)?)?;
    kumo.set(
        "reject",
        lua.create_function(|_, (code, text): (u16, String)| -> mlua::Result<()> {
            let r = Rejection::new(code, &text, DisconnectMode::If421).map_err(mlua::Error::runtime)?;
            Err(mlua::Error::external(r))
        })?,
    )?;
    kumo.set(
        "disconnect",
        lua.create_function(|_, (code, text, mode): (u16, String, Option<String>)| -> mlua::Result<()> {
            let mode = match mode.as_deref() {
                None => DisconnectMode::ForceDisconnect,
                Some(m) => DisconnectMode::parse(m).ok_or_else(|| {
                    mlua::Error::runtime(format!(
                        "kumo.disconnect: unknown mode {m:?} (ForceDisconnect, FollowWith421, If421)"
                    ))
                })?,
            };
            let r = Rejection::new(code, &text, mode).map_err(mlua::Error::runtime)?;
            Err(mlua::Error::external(r))
        })?,
    )?;

    kumo.set(
        "set_diagnostic_log_filter",
        lua.create_function(|_, filter: String| {
            crate::log_filter::set(&filter)
                .map_err(|e| mlua::Error::runtime(format!("kumo.set_diagnostic_log_filter: {e}")))
        })?,
    )?;
    install_stubs(lua, &kumo, host)?;
    super::shaping::install(lua, &kumo, &host.runtime)?;
    super::serde::install(lua, &kumo)?;
    super::text::install(lua, &kumo)?;
    super::maps::install(lua, &kumo)?;
    super::files::install(lua, &kumo)?;
    super::sqlite::install(lua)?;
    install_init_calls(lua, &kumo, host)?;
    super::defined::install(lua, &kumo, host)?;
    super::inject::install(lua, &kumo, &host.runtime)?;
    super::http::install(lua, &kumo)?;
    super::amqp::install(lua, &kumo)?;
    super::nats::install(lua, &kumo)?;
    super::dkim::install(lua, &kumo)?;
    super::mail_auth::install(lua, &kumo)?;
    install_constructors(lua, &kumo)?;
    install_helpers(lua, &kumo, host)?;
    // KumoMTA policies begin `local kumo = require 'kumo'`
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("kumo", &kumo)?;
    // and its sub-modules by their dotted names (`require 'kumo.dns'`)
    for pair in kumo.pairs::<String, LuaValue>() {
        if let (name, LuaValue::Table(t)) = pair? {
            loaded.set(format!("kumo.{name}"), t)?;
        }
    }
    lua.globals().set("kumo", kumo)?;
    Ok(())
}

/// `kumo.on(name, fn)`.
fn on(lua: &Lua, (name, func): (String, LuaValue)) -> mlua::Result<()> {
    let LuaValue::Function(func) = func else {
        // e.g. `kumo.on('x', helper.field_that_does_not_exist)`
        return Err(mlua::Error::runtime(format!(
            "{}: kumo.on('{name}', ...): the handler is {}, not a function",
            caller_site(lua),
            func.type_name()
        )));
    };
    if phase(lua) != Phase::Load {
        return Err(mlua::Error::runtime(format!(
            "kumo.on('{name}') may only be called while the policy is being loaded, not from inside an event handler"
        )));
    }
    let site = caller_site(lua);
    let handlers: Table = lua.named_registry_value(super::HANDLERS_KEY)?;
    let sites: Table = lua.named_registry_value(super::SITES_KEY)?;
    let list: Table = match handlers.get::<Option<Table>>(name.as_str())? {
        Some(list) => {
            if multiplicity_of(&name) == Multiplicity::Single {
                let first: String = sites.get(name.as_str())?;
                return Err(mlua::Error::runtime(format!(
                    "{site}: {name} event already has a handler defined at {first}"
                )));
            }
            list
        }
        None => {
            let list = lua.create_table()?;
            handlers.set(name.as_str(), &list)?;
            sites.set(name.as_str(), site)?;
            list
        }
    };
    list.raw_push(func)?;
    Ok(())
}

/// Wraps an `init`-only configuration call: checks the phase, converts the option table
/// and reports errors as `file:line: kumo.name: key: problem`.
fn init_call(
    lua: &Lua,
    host: &Arc<Host>,
    name: &'static str,
    apply: impl Fn(&Host, Value) -> Result<(), String> + Send + Sync + 'static,
) -> mlua::Result<Function> {
    let host = host.clone();
    lua.create_function(move |lua, arg: LuaValue| {
        let site = caller_site(lua);
        if phase(lua) != Phase::Init {
            return Err(mlua::Error::runtime(format!("{site}: kumo.{name} may only be called from the init event")));
        }
        let value = from_lua(lua, arg)?;
        apply(&host, value).map_err(|e| mlua::Error::runtime(format!("{site}: kumo.{name}: {e}")))
    })
}

fn install_init_calls(lua: &Lua, kumo: &Table, host: &Arc<Host>) -> mlua::Result<()> {
    kumo.set(
        "start_esmtp_listener",
        init_call(lua, host, "start_esmtp_listener", |host, v| {
            init_calls::start_esmtp_listener(&mut host.init.lock(), v)
        })?,
    )?;
    kumo.set(
        "define_spool",
        init_call(lua, host, "define_spool", |host, v| init_calls::define_spool(&mut host.init.lock(), v))?,
    )?;
    kumo.set(
        "configure_local_logs",
        init_call(lua, host, "configure_local_logs", |host, v| {
            if let Some(ev) = init_calls::configure_local_logs(&mut host.init.lock(), v)? {
                host.custom_events.lock().insert(ev);
            }
            Ok(())
        })?,
    )?;
    kumo.set(
        "configure_log_hook",
        init_call(lua, host, "configure_log_hook", |host, v| init_calls::configure_log_hook(&mut host.init.lock(), v))?,
    )?;
    kumo.set(
        "configure_log_disposition_hook",
        init_call(lua, host, "configure_log_disposition_hook", |host, v| {
            init_calls::configure_log_disposition_hook(&mut host.init.lock(), v)
        })?,
    )?;
    kumo.set(
        "start_http_listener",
        init_call(lua, host, "start_http_listener", |host, v| {
            init_calls::start_http_listener(&mut host.init.lock(), v)
        })?,
    )?;
    let wasm = lua.create_table()?;
    wasm.set(
        "load",
        init_call(lua, host, "wasm.load", |host, v| {
            let plugin: config::WasmPluginConfig = config::decode(v)?;
            if !std::path::Path::new(&plugin.path).exists() {
                return Err(format!("path: {} does not exist", plugin.path));
            }
            host.init.lock().wasm.push(plugin);
            Ok(())
        })?,
    )?;
    kumo.set("wasm", wasm)?;
    let dns: Table = kumo.get("dns")?;
    super::dns::install(lua, &dns, &host.runtime)?;
    dns.set(
        "configure_test_resolver",
        init_call(lua, host, "dns.configure_test_resolver", |host, v| {
            let text = v.as_str().ok_or("expected zone text")?;
            init_calls::configure_test_resolver(&mut host.init.lock(), text)
        })?,
    )?;
    dns.set(
        "configure_resolver",
        init_call(lua, host, "dns.configure_resolver", |host, v| {
            let servers =
                v.get("name_servers").and_then(|s| s.as_array()).ok_or("expected name_servers = { 'ip:port', ... }")?;
            let mut ips = vec![];
            for s in servers {
                let text = s
                    .as_str()
                    .or_else(|| s.get("socket_addr").and_then(|a| a.as_str()))
                    .ok_or("name_servers entries must be strings")?;
                let ip = text
                    .parse::<std::net::SocketAddr>()
                    .map(|a| a.ip())
                    .or_else(|_| text.parse::<std::net::IpAddr>())
                    .map_err(|_| format!("name_servers: invalid address {text:?}"))?;
                ips.push(ip);
            }
            host.init.lock().dns.name_servers = ips;
            Ok(())
        })?,
    )?;
    kumo.set(
        "configure_redis_throttles",
        init_call(lua, host, "configure_redis_throttles", |host, v| {
            init_calls::configure_redis_throttles(&mut host.init.lock(), v)
        })?,
    )?;
    kumo.set(
        "configure_bounce_classifier",
        init_call(lua, host, "configure_bounce_classifier", |host, v| {
            init_calls::configure_bounce_classifier(&mut host.init.lock(), v)
        })?,
    )?;
    kumo.set(
        "suspend_delivery_when_spool_unhealthy",
        init_call(lua, host, "suspend_delivery_when_spool_unhealthy", |host, v| {
            let on = v.as_bool().ok_or_else(|| format!("expected true or false, got {v}"))?;
            host.init.lock().suspend_delivery_when_spool_unhealthy = on;
            Ok(())
        })?,
    )?;
    kumo.set(
        "set_policy_timeout",
        init_call(lua, host, "set_policy_timeout", |host, v| {
            let d = match v {
                Value::String(s) => config::units::parse_duration(&s)?,
                Value::Number(n) => std::time::Duration::from_secs_f64(n.as_f64().unwrap_or(0.0)),
                other => return Err(format!("expected a duration, got {other}")),
            };
            host.init.lock().event_timeout = d;
            Ok(())
        })?,
    )?;
    Ok(())
}

fn install_constructors(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    kumo.set(
        "make_listener_domain",
        lua.create_function(|lua, arg: LuaValue| {
            let value = from_lua(lua, arg)?;
            config::decode::<storage::ListenerDomain>(value.clone())
                .map_err(|e| mlua::Error::runtime(format!("{}: kumo.make_listener_domain: {e}", caller_site(lua))))?;
            Ok(ConfigObject { kind: "ListenerDomain", value })
        })?,
    )?;
    validated::<config::queue::QueueConfig>(lua, kumo, "make_queue_config", "QueueConfig")?;
    validated::<config::egress::EgressPathConfig>(lua, kumo, "make_egress_path", "EgressPathConfig")?;
    validated::<config::egress::EgressSource>(lua, kumo, "make_egress_source", "EgressSource")?;
    validated::<config::egress::EgressPool>(lua, kumo, "make_egress_pool", "EgressPool")?;
    Ok(())
}

/// Installs `kumo.<name>{...}` that validates its table as a `T` and returns it as an
/// object; errors name file, line and key.
fn validated<T: serde::de::DeserializeOwned>(
    lua: &Lua,
    kumo: &Table,
    name: &'static str,
    kind: &'static str,
) -> mlua::Result<()> {
    let f = lua.create_function(move |lua, arg: LuaValue| {
        let value = from_lua(lua, arg)?;
        config::decode::<T>(value.clone())
            .map_err(|e| mlua::Error::runtime(format!("{}: kumo.{name}: {e}", caller_site(lua))))?;
        Ok(ConfigObject { kind, value })
    })?;
    kumo.set(name, f)
}

fn log_line(lua: &Lua, args: Variadic<LuaValue>) -> mlua::Result<String> {
    let mut parts = Vec::with_capacity(args.len());
    for v in args.iter() {
        parts.push(match v {
            LuaValue::String(s) => s.to_string_lossy(),
            other => lua.globals().get::<Function>("tostring")?.call::<String>(other.clone())?,
        });
    }
    Ok(parts.join(" "))
}

fn install_helpers(lua: &Lua, kumo: &Table, host: &Arc<Host>) -> mlua::Result<()> {
    for (name, level) in [("log_debug", 0u8), ("log_info", 1), ("log_warn", 2), ("log_error", 3)] {
        let f = lua.create_function(move |lua, args: Variadic<LuaValue>| {
            let line = log_line(lua, args)?;
            match level {
                0 => tracing::debug!(target: "lua", "{line}"),
                1 => tracing::info!(target: "lua", "{line}"),
                2 => tracing::warn!(target: "lua", "{line}"),
                _ => tracing::error!(target: "lua", "{line}"),
            }
            Ok(())
        })?;
        kumo.set(name, f)?;
    }
    kumo.set(
        "available_parallelism",
        lua.create_function(|_, ()| Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)))?,
    )?;
    kumo.set("version", lua.create_function(|_, ()| Ok(format!("wasmta {}", env!("CARGO_PKG_VERSION"))))?)?;
    let rt = host.runtime.clone();
    kumo.set(
        "bump_config_epoch",
        lua.create_function(move |_, ()| {
            // as in KumoMTA: handler code is loaded afresh (a new generation), and Epoch
            // objects refresh
            rt.request_reload("kumo.bump_config_epoch()");
            rt.epoch.bump();
            Ok(())
        })?,
    )?;
    let rt = host.runtime.clone();
    kumo.set(
        "make_throttle",
        lua.create_function(move |_, (name, spec): (String, String)| {
            let spec = crate::shaping::throttle::ThrottleSpec::parse(&spec)
                .map_err(|e| mlua::Error::runtime(format!("kumo.make_throttle: {e}")))?;
            Ok(super::userdata::LuaThrottle { name, spec, throttles: rt.throttles.clone() })
        })?,
    )?;
    let time: Table = kumo.get("time")?;
    kumo.set("sleep", time.get::<Function>("sleep")?)?;
    let rt = host.runtime.clone();
    kumo.set("memoize", lua.create_function(move |lua, args| super::memoize::memoize(lua, &rt, args))?)?;
    let rt = host.runtime.clone();
    kumo.set(
        "set_config_monitor_globs",
        lua.create_function(move |lua, globs: Vec<String>| {
            crate::policy::monitor::set_globs(&rt, globs)
                .map_err(|e| mlua::Error::runtime(format!("{}: kumo.set_config_monitor_globs: {e}", caller_site(lua))))
        })?,
    )?;
    let rt = host.runtime.clone();
    kumo.set(
        "eval_config_monitor_globs",
        lua.create_function(move |_, ()| {
            let files =
                crate::policy::monitor::matched(&crate::policy::monitor::globs(&rt)).map_err(mlua::Error::runtime)?;
            Ok(files.into_iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>())
        })?,
    )?;

    let flag = host.clone();
    kumo.set(
        "validation_failed",
        lua.create_function(move |lua, why: Option<String>| {
            // wasmta: an optional text says what failed (KumoMTA's takes none)
            let site = caller_site(lua);
            flag.validation_failures.lock().push(match why {
                // an error caught with pcall carries its traceback: the message is enough
                Some(why) => format!("{site}: {}", why.split("\nstack traceback:").next().unwrap_or(&why).trim_end()),
                None => format!("{site}: kumo.validation_failed() was called"),
            });
            Ok(())
        })?,
    )?;
    let pool = host.clone();
    kumo.set(
        "set_max_lua_context_use_count",
        lua.create_function(move |_, n: u32| {
            pool.limits.lock().max_uses = n.max(1);
            Ok(())
        })?,
    )?;
    let pool = host.clone();
    kumo.set(
        "set_max_lua_context_age",
        lua.create_function(move |_, secs: f64| {
            pool.limits.lock().max_age = std::time::Duration::from_secs_f64(secs.max(0.0));
            Ok(())
        })?,
    )?;
    let pool = host.clone();
    kumo.set(
        "set_max_spare_lua_contexts",
        lua.create_function(move |_, n: usize| {
            pool.limits.lock().max_spare = n;
            Ok(())
        })?,
    )?;
    Ok(())
}

/// The qualified names installed as warning stubs.
pub fn stubbed() -> std::collections::HashSet<String> {
    let mut out: std::collections::HashSet<String> = UNIMPLEMENTED.iter().map(|n| format!("kumo.{n}")).collect();
    for (module, names) in UNIMPLEMENTED_MODULES {
        out.extend(names.iter().map(|n| format!("kumo.{module}.{n}")));
    }
    out
}

fn stub(lua: &Lua, host: &Arc<Host>, qualified: String) -> mlua::Result<Function> {
    let host = host.clone();
    lua.create_function(move |lua, _: mlua::MultiValue| {
        if host.warned.lock().insert(qualified.clone()) {
            let note = format!("{}: {qualified} is accepted but has no effect in wasmta yet", caller_site(lua));
            // while loading, it joins the notices the start-up log and `check` list once;
            // later (a name the text scan could not see) it is logged here
            if phase(lua) == Phase::Runtime {
                tracing::warn!("{note}");
            } else {
                host.stub_notes.lock().push(note);
            }
        }
        Ok(LuaValue::Nil)
    })
}

fn install_stubs(lua: &Lua, kumo: &Table, host: &Arc<Host>) -> mlua::Result<()> {
    for name in UNIMPLEMENTED {
        kumo.set(*name, stub(lua, host, format!("kumo.{name}"))?)?;
    }
    for (module, names) in UNIMPLEMENTED_MODULES {
        let t = lua.create_table()?;
        for name in *names {
            t.set(*name, stub(lua, host, format!("kumo.{module}.{name}"))?)?;
        }
        kumo.set(*module, t)?;
    }
    Ok(())
}
