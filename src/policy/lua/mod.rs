//! The Lua engine: runs an unmodified KumoMTA policy. The policy file is executed afresh
//! in every pooled context (as KumoMTA does), `init` runs once, handlers are called with
//! a wall-clock deadline enforced by an instruction hook, and a context that failed is
//! discarded, never reused.

mod amqp;
mod audit;
mod convert;
mod custom;
mod defined;
mod dkim;
mod dns;
mod extras;
mod files;
mod http;
mod inject;
mod kumo;
mod mail_auth;
mod maps;
pub(crate) mod memoize;
mod nats;
mod serde;
mod shaping;
mod sources;
mod sqlite;
mod text;
mod userdata;

use crate::config::InitConfig;
use crate::policy::events::{Event, is_user_defined_name};
use crate::policy::{Args, Engine, EngineInfo, PolicyError, Rejection};
use convert::from_lua;
use mlua::{Function, HookTriggers, Lua, MultiValue, Table, Value as LuaValue, VmState};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use userdata::{LuaAddress, LuaConnMeta, LuaMessage};

const HANDLERS_KEY: &str = "wasmta.handlers";
const SITES_KEY: &str = "wasmta.handler_sites";
/// Memory cap of one Lua context.
const MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// What a context is doing; some `kumo` calls are only allowed in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Executing the policy file's top level (`kumo.on` allowed).
    Load = 0,
    /// Running `init` (listeners, spools, logs).
    Init = 1,
    /// Running event handlers.
    Runtime = 2,
}

struct ContextData {
    phase: AtomicU8,
}

fn phase(lua: &Lua) -> Phase {
    match lua.app_data_ref::<ContextData>().map(|d| d.phase.load(Ordering::Relaxed)) {
        Some(0) => Phase::Load,
        Some(1) => Phase::Init,
        _ => Phase::Runtime,
    }
}

fn set_phase(lua: &Lua, p: Phase) {
    if let Some(d) = lua.app_data_ref::<ContextData>() {
        d.phase.store(p as u8, Ordering::Relaxed);
    }
}

/// `file:line` of the innermost Lua frame that called into Rust.
fn caller_site(lua: &Lua) -> String {
    for level in 0..8 {
        let site = lua.inspect_stack(level, |d| {
            let src = d.source();
            let file = src.short_src.map(|s| s.to_string()).unwrap_or_default();
            (file, d.current_line())
        });
        match site {
            Some((file, Some(line))) if file != "[C]" => return format!("{file}:{line}"),
            Some(_) => continue,
            None => break,
        }
    }
    "<policy>".into()
}

/// Pool limits (KumoMTA's `set_max_lua_context_*`).
struct PoolLimits {
    max_uses: u32,
    max_age: Duration,
    max_spare: usize,
}

/// State shared by every context of one engine.
pub struct Host {
    policy_path: PathBuf,
    /// The texts this generation runs, whatever is on disk now.
    sources: Arc<sources::Sources>,
    init: Mutex<InitConfig>,
    warned: Mutex<HashSet<String>>,
    /// Stubs called while loading, as notices.
    stub_notes: Mutex<Vec<String>>,
    custom_events: Mutex<HashSet<String>>,
    limits: Mutex<PoolLimits>,
    validation_failures: Mutex<Vec<String>>,
    /// `kumo.define_egress_source` / `define_egress_pool`.
    defined: Mutex<defined::Defined>,
    /// The server's shared state.
    runtime: Arc<crate::policy::Runtime>,
}

struct Context {
    lua: Lua,
    /// The registry's table of handlers by event name (looked up once, not per call).
    handlers: Table,
    deadline: Arc<AtomicU64>,
    created: Instant,
    uses: u32,
}

fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The innermost message of a Lua error, without tracebacks.
pub fn error_text(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => error_text(cause),
        mlua::Error::BadArgument { cause, to, pos, .. } => {
            format!("bad argument #{pos} to {}: {}", to.as_deref().unwrap_or("?"), error_text(cause))
        }
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(m) => format!("memory limit exceeded: {m}"),
        other => other.to_string(),
    }
}

impl Context {
    async fn new(host: &Arc<Host>, timeout: Duration) -> Result<Context, String> {
        let lua = Lua::new();
        lua.set_memory_limit(MEMORY_LIMIT).map_err(|e| e.to_string())?;
        let deadline = Arc::new(AtomicU64::new(0));
        let d = deadline.clone();
        let shutdown = host.runtime.shutdown.clone();
        let hook = Arc::new(move |_: &Lua, _: &mlua::debug::Debug| {
            let limit = d.load(Ordering::Relaxed);
            if limit != 0 && clock_ms() > limit {
                return Err(mlua::Error::runtime("policy call exceeded its deadline"));
            }
            if limit != 0 && shutdown.is_set() {
                return Err(mlua::Error::runtime("policy call cancelled: shutting down"));
            }
            Ok(VmState::Continue)
        });
        let triggers = HookTriggers::new().every_nth_instruction(1000);
        let h = hook.clone();
        lua.set_global_hook(triggers, move |l, dbg| h(l, dbg)).map_err(|e| e.to_string())?;
        lua.set_hook(triggers, move |l, dbg| hook(l, dbg)).map_err(|e| e.to_string())?;
        lua.set_app_data(ContextData { phase: AtomicU8::new(Phase::Load as u8) });
        // for message methods that need the server (the resolver of msg:dkim_verify)
        lua.set_app_data(host.runtime.clone());
        let setup = || -> mlua::Result<()> {
            lua.set_named_registry_value(HANDLERS_KEY, lua.create_table()?)?;
            lua.set_named_registry_value(SITES_KEY, lua.create_table()?)?;
            kumo::install(&lua, host)?;
            extras::install(&lua, &host.policy_path)?;
            host.sources.install(&lua)?;
            Ok(())
        };
        setup().map_err(|e| error_text(&e))?;
        let handlers = lua.named_registry_value(HANDLERS_KEY).map_err(|e| error_text(&e))?;
        let ctx = Context { lua, handlers, deadline, created: Instant::now(), uses: 0 };
        ctx.arm(timeout);
        let policy = &host.sources.policy;
        let chunk = ctx.lua.load(&policy.text[..]).set_name(sources::Sources::chunk_name(&policy.path));
        let loaded = tokio::time::timeout(timeout, chunk.exec_async()).await;
        ctx.disarm();
        match loaded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(error_text(&e)),
            Err(_) => {
                return Err(format!("{}: loading the policy exceeded {timeout:?}", host.policy_path.display()));
            }
        }
        set_phase(&ctx.lua, Phase::Runtime);
        Ok(ctx)
    }

    fn arm(&self, timeout: Duration) {
        self.deadline.store(clock_ms() + timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Names with at least one handler.
    fn registered(&self) -> mlua::Result<Vec<(String, String)>> {
        let handlers: Table = self.lua.named_registry_value(HANDLERS_KEY)?;
        let sites: Table = self.lua.named_registry_value(SITES_KEY)?;
        let mut out = vec![];
        for pair in handlers.pairs::<String, Table>() {
            let (name, _) = pair?;
            let site: String = sites.get(name.as_str())?;
            out.push((name, site));
        }
        Ok(out)
    }

    fn handlers(&self, name: &str) -> mlua::Result<Vec<Function>> {
        match self.handlers.raw_get::<Option<Table>>(name)? {
            Some(list) => list.sequence_values::<Function>().collect(),
            None => Ok(vec![]),
        }
    }

    fn args(&self, args: Args<'_>) -> mlua::Result<MultiValue> {
        let lua = &self.lua;
        let conn = |c: &crate::policy::ConnMeta| lua.create_userdata(LuaConnMeta(c.clone())).map(LuaValue::UserData);
        let text = |s: &str| lua.create_string(s).map(LuaValue::String);
        let values = match args {
            Args::None => vec![],
            Args::DynamicParameters { listener, conn: c } => vec![text(listener)?, conn(c)?],
            Args::Conn(c) => vec![conn(c)?],
            Args::Ehlo { domain, conn: c, extensions } => {
                vec![text(domain)?, conn(c)?, LuaValue::Table(lua.create_sequence_from(extensions.iter().cloned())?)]
            }
            Args::AuthPlain { authz, authc, password, conn: c } => {
                vec![text(authz)?, text(authc)?, text(password)?, conn(c)?]
            }
            Args::Address { address, conn: c } => {
                vec![LuaValue::UserData(lua.create_userdata(LuaAddress(address.clone()))?), conn(c)?]
            }
            Args::ListenerDomain { domain, listener, conn: c } => vec![text(domain)?, text(listener)?, conn(c)?],
            Args::MessageConn { message, conn: c } => {
                vec![LuaValue::UserData(lua.create_userdata(LuaMessage(message.clone()))?), conn(c)?]
            }
            Args::Message(message) => vec![LuaValue::UserData(lua.create_userdata(LuaMessage(message.clone()))?)],
            Args::MessageRecord { message, record } => {
                vec![
                    LuaValue::UserData(lua.create_userdata(LuaMessage(message.clone()))?),
                    convert::to_lua(lua, record)?,
                ]
            }
            Args::MessageName { message, name } => {
                vec![LuaValue::UserData(lua.create_userdata(LuaMessage(message.clone()))?), text(name)?]
            }
            Args::QueueConfig { domain, tenant, campaign, routing_domain } => {
                let opt = |s: Option<&str>| s.map(text).transpose().map(|v| v.unwrap_or(LuaValue::Nil));
                vec![opt(domain)?, opt(tenant)?, opt(campaign)?, opt(routing_domain)?]
            }
            Args::Name(name) => vec![text(name)?],
            Args::DeliveryStatus { response, domain, tenant, campaign, routing_domain } => {
                let opt = |s: Option<&str>| s.map(text).transpose().map(|v| v.unwrap_or(LuaValue::Nil));
                vec![text(response)?, text(domain)?, opt(tenant)?, opt(campaign)?, opt(routing_domain)?]
            }
            Args::Strings(list) => list.iter().map(|s| text(s)).collect::<mlua::Result<Vec<_>>>()?,
            Args::EgressPath { routing_domain, source, site } => {
                vec![text(routing_domain)?, text(source)?, text(site)?]
            }
            Args::Requeue { message, response, context, increment_attempts, delay } => vec![
                LuaValue::UserData(lua.create_userdata(LuaMessage(message.clone()))?),
                text(response)?,
                LuaValue::Table(lua.create_sequence_from(context.iter().cloned())?),
                LuaValue::Boolean(increment_attempts),
                delay.map(LuaValue::Number).unwrap_or(LuaValue::Nil),
            ],
        };
        Ok(MultiValue::from_iter(values))
    }

    /// Runs every handler of `name` (lifecycle events: `pre_init`, `init`, `validate_config`).
    async fn call_all(&self, name: &str) -> mlua::Result<()> {
        for f in self.handlers(name)? {
            f.call_async::<()>(()).await?;
        }
        Ok(())
    }

    /// Runs the handlers of `name`: the first that returns a value ends the chain (for a
    /// Single event there is only one).
    async fn call(&self, name: &str, args: Args<'_>) -> mlua::Result<Option<Value>> {
        let handlers = self.handlers(name)?;
        if handlers.is_empty() {
            return Ok(None);
        }
        let args = self.args(args)?;
        for f in handlers {
            let ret: MultiValue = f.call_async(args.clone()).await?;
            if let Some(first) = ret.into_iter().next() {
                return Ok(Some(from_lua(&self.lua, first)?));
            }
        }
        Ok(None)
    }
}

/// A loaded Lua policy.
pub struct LuaEngine {
    info: EngineInfo,
    /// Events the policy has handlers for (`info.handled` adds those answered from
    /// `kumo.define_egress_*` definitions).
    with_handlers: HashSet<Event>,
    /// Names with handlers that are not catalogue events (`make.webhook` constructors).
    user_events: HashSet<String>,
    host: Arc<Host>,
    pool: Mutex<Vec<Context>>,
    timeout: Duration,
}

/// The result of loading a policy: the engine, what `init` configured, and notes about
/// the policy (unknown event names) for `wasmta check`.
pub struct Loaded {
    /// The engine.
    pub engine: LuaEngine,
    /// What `init` configured.
    pub init: InitConfig,
    /// Problems that `serve` logs and `check` reports as errors.
    pub problems: Vec<String>,
    /// What the policy uses that wasmta accepts without acting on it yet: logged once at
    /// start, listed by `check` (not errors).
    pub notices: Vec<String>,
}

impl LuaEngine {
    /// Loads `path`, runs `pre_init` and `init` (and `validate_config` when `validate`),
    /// and returns the engine with its configuration.
    pub async fn load(path: &Path, validate: bool, runtime: &Arc<crate::policy::Runtime>) -> Result<Loaded, String> {
        if !path.exists() {
            return Err(format!("{}: policy file not found", path.display()));
        }
        let host = Arc::new(Host {
            policy_path: path.to_path_buf(),
            sources: Arc::new(sources::Sources::read(path)?),
            init: Mutex::new(InitConfig::default()),
            warned: Mutex::new(HashSet::new()),
            stub_notes: Mutex::new(Vec::new()),
            custom_events: Mutex::new(HashSet::new()),
            limits: Mutex::new(PoolLimits { max_uses: 1024, max_age: Duration::from_secs(300), max_spare: 8192 }),
            validation_failures: Mutex::new(Vec::new()),
            defined: Mutex::new(defined::Defined::default()),
            runtime: runtime.clone(),
        });
        let load_timeout = Duration::from_secs(30);
        let ctx = Context::new(&host, load_timeout).await?;
        let mut problems = vec![];

        // pre_init, init (and, for `check`, validate_config) run once, in their own context
        set_phase(&ctx.lua, Phase::Init);
        let mut stages = vec![Event::PreInit, Event::Init];
        if validate {
            stages.push(Event::ValidateConfig);
        }
        for event in stages {
            ctx.arm(load_timeout);
            let ran = tokio::time::timeout(load_timeout, ctx.call_all(event.name())).await;
            ctx.disarm();
            match ran {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("{} event failed: {}", event.name(), error_text(&e))),
                Err(_) => return Err(format!("{} event exceeded {load_timeout:?}", event.name())),
            }
        }
        set_phase(&ctx.lua, Phase::Runtime);
        problems.extend(host.validation_failures.lock().iter().cloned());

        let registered = ctx.registered().map_err(|e| error_text(&e))?;
        let custom = host.custom_events.lock().clone();
        let mut handled = HashSet::new();
        let mut notices = vec![];
        for (name, site) in &registered {
            if let Some((_, why)) = audit::NOT_DISPATCHED.iter().find(|(n, _)| n == name) {
                notices.push(format!("{site}: the {name} event is accepted but not called by wasmta yet ({why})"));
            }
            match Event::from_name(name) {
                Some(e) => {
                    handled.insert(e);
                }
                None if is_user_defined_name(name) || custom.contains(name) || name == "message_requeued" => {}
                // KumoMTA registers any name; one close to a real event is most likely a typo
                None => match Event::ALL.iter().find(|e| strsim::damerau_levenshtein(e.name(), name) <= 1) {
                    Some(e) => problems.push(format!(
                        "{site}: unknown event '{name}' (not a wasmta/KumoMTA event; did you mean '{}'?)",
                        e.name()
                    )),
                    None => notices.push(format!(
                        "{site}: '{name}' is not an event KumoMTA or wasmta calls: its handler never runs"
                    )),
                },
            }
        }
        // every kumo.* name in the texts, handlers that have not run included
        let texts: Vec<(PathBuf, Arc<[u8]>)> = host.sources.texts();
        let (unknown, stubs) = audit::audit(&ctx.lua, &texts, &kumo::stubbed()).map_err(|e| error_text(&e))?;
        problems.extend(unknown);
        for note in host.stub_notes.lock().iter().chain(&stubs) {
            if !notices.contains(note) {
                notices.push(note.clone());
            }
        }
        let with_handlers = handled.clone();
        if !host.defined.lock().is_empty() {
            handled.extend([Event::GetEgressSource, Event::GetEgressPool]);
        }
        let init = host.init.lock().clone();
        let timeout = init.event_timeout;
        let user_events = registered.iter().map(|(n, _)| n.clone()).filter(|n| Event::from_name(n).is_none()).collect();
        let engine = LuaEngine {
            info: EngineInfo::new(format!("lua:{}", path.display()), handled),
            with_handlers,
            user_events,
            host,
            pool: Mutex::new(Vec::new()),
            timeout,
        };
        Ok(Loaded { engine, init, problems, notices })
    }

    /// Creates `n` contexts ahead of traffic.
    pub async fn prewarm(&self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            let ctx = Context::new(&self.host, self.timeout.max(Duration::from_secs(5))).await?;
            self.pool.lock().push(ctx);
        }
        Ok(())
    }

    async fn checkout(&self) -> Result<Context, String> {
        if let Some(ctx) = self.pool.lock().pop() {
            return Ok(ctx);
        }
        Context::new(&self.host, self.timeout.max(Duration::from_secs(5))).await
    }

    fn checkin(&self, mut ctx: Context) {
        ctx.uses += 1;
        let limits = self.host.limits.lock();
        if ctx.uses >= limits.max_uses || ctx.created.elapsed() >= limits.max_age {
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < limits.max_spare {
            pool.push(ctx);
        }
    }
}

#[async_trait::async_trait]
impl Engine for LuaEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn source_files(&self) -> Vec<PathBuf> {
        self.host.sources.files()
    }

    async fn call_user(&self, label: &'static str, name: &str, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        if !self.user_events.contains(name) {
            return Ok(None);
        }
        self.call_named(label, name, args).await
    }

    fn constructors(&self) -> Option<&dyn crate::policy::custom::CustomConstructors> {
        Some(self)
    }

    async fn call(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        if let (Event::GetEgressSource | Event::GetEgressPool, Args::Name(name)) = (event, args) {
            let defined = self.host.defined.lock().lookup(event, name);
            if !self.with_handlers.contains(&event) {
                return Ok(defined);
            }
            return Ok(self.call_handlers(event, args).await?.or(defined));
        }
        self.call_handlers(event, args).await
    }
}

impl LuaEngine {
    async fn call_handlers(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        self.call_named(event.name(), event.name(), args).await
    }

    /// Runs the handlers of `name` (a catalogue event, or a policy's own name such as
    /// `log_disposition_ndr`); `label` names it in errors.
    async fn call_named(&self, label: &'static str, name: &str, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        let failed = |message: String| PolicyError::Failed { event: label, message };
        let ctx = self
            .checkout()
            .await
            .map_err(|e| failed(format!("{}: cannot create a Lua context: {e}", self.info.name)))?;
        ctx.arm(self.timeout);
        // the hook stops CPU-bound handlers; the timer stops handlers parked in an await
        let outcome = tokio::time::timeout(self.timeout + Duration::from_millis(50), ctx.call(name, args)).await;
        ctx.disarm();
        match outcome {
            Ok(Ok(v)) => {
                self.checkin(ctx);
                Ok(v)
            }
            Ok(Err(e)) => {
                if let Some(r) = e.downcast_ref::<Rejection>() {
                    // a refusal is an answer, not a fault: the context stays healthy
                    let r = r.clone();
                    self.checkin(ctx);
                    return Err(PolicyError::Rejected(r));
                }
                let text = error_text(&e);
                tracing::error!("{}: {} handler failed: {text}", self.info.name, name);
                Err(failed(format!("{}: {text}", self.info.name)))
            }
            Err(_) => {
                tracing::error!("{}: {} handler exceeded {:?}", self.info.name, name, self.timeout);
                Err(failed(format!("{}: deadline of {:?} exceeded", self.info.name, self.timeout)))
            }
        }
    }
}
