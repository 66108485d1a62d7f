//! The Wasm engine: policy components (WIT package `wasmta:policy`, see `wit/`) bound to
//! the same event catalogue as Lua. The host reads which events a component handles from
//! the interfaces it exports. Every call has a wall-clock deadline (epoch interruption), a
//! memory cap (StoreLimits), a stack cap, optionally a fuel budget, and an empty WASI
//! context whose stdout/stderr go to the log; a trap, timeout, out-of-fuel or
//! out-of-memory fails closed and temporary, the instance is thrown away, a metric counts
//! it, and repeated failures open the plugin's circuit breaker.

mod bindings;
mod breaker;
mod cache;
mod calls;
mod custom;
mod engine;
mod host;
mod http;
mod records;
mod stderr;

pub use breaker::BreakerConfig;
use breaker::{Admit, Breaker};
use engine::{MEMORY_LIMIT, TICK, engine};

use crate::config::InitConfig;
use crate::policy::{Args, DisconnectMode, Engine, EngineInfo, Event, PolicyError, Rejection};
use bindings::wasmta::policy::types;
use host::HostState;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};

/// How a plugin runs (`kumo.wasm.load` options).
#[derive(Debug, Clone, Copy)]
pub struct WasmOptions {
    /// Wall-clock budget of one call.
    pub budget: Duration,
    /// Instruction budget of one call (deterministic); none by default.
    pub fuel: Option<u64>,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
}

impl WasmOptions {
    /// Defaults with this call budget.
    pub fn with_budget(budget: Duration) -> WasmOptions {
        WasmOptions { budget, fuel: None, breaker: BreakerConfig::default() }
    }

    /// The options of a `kumo.wasm.load` table; `budget` defaults to the policy timeout.
    pub fn from_config(c: &crate::config::WasmPluginConfig, default_budget: Duration) -> WasmOptions {
        let d = BreakerConfig::default();
        WasmOptions {
            budget: c.budget.unwrap_or(default_budget),
            fuel: c.fuel,
            breaker: BreakerConfig {
                failures: c.circuit_failures.unwrap_or(d.failures).max(1),
                window: c.circuit_window.unwrap_or(d.window),
                cooldown: c.circuit_cooldown.unwrap_or(d.cooldown),
            },
        }
    }
}

/// The metrics of one plugin.
struct Metrics {
    traps: Arc<AtomicI64>,
    timeouts: Arc<AtomicI64>,
    refused: Arc<AtomicI64>,
    circuit_open: Arc<AtomicI64>,
    fuel: Arc<AtomicI64>,
}

impl Metrics {
    fn new(plugin: &str) -> Metrics {
        const FAILURES: &str = "Policy component calls that failed, by reason.";
        let failures = |reason| {
            crate::metrics::counter("wasm_plugin_failures_total", FAILURES, &[("plugin", plugin), ("reason", reason)])
        };
        Metrics {
            traps: failures("trap"),
            timeouts: failures("timeout"),
            refused: failures("circuit_open"),
            circuit_open: crate::metrics::gauge(
                "wasm_plugin_circuit_open",
                "1 while a policy component's circuit breaker is open.",
                &[("plugin", plugin)],
            ),
            fuel: crate::metrics::counter(
                "wasm_plugin_fuel_consumed_total",
                "Fuel consumed by policy component calls (plugins with a fuel budget).",
                &[("plugin", plugin)],
            ),
        }
    }
}

struct Live {
    store: Store<HostState>,
    guests: calls::Guests,
}

/// A loaded policy component.
pub struct WasmEngine {
    info: EngineInfo,
    pre: InstancePre<HostState>,
    exports: calls::Exports,
    pool: Mutex<Vec<Live>>,
    options: WasmOptions,
    settings: Arc<crate::policy::loader::Settings>,
    runtime: Arc<crate::policy::Runtime>,
    breaker: Breaker,
    metrics: Metrics,
    /// Where its `http` requests may go.
    http: Arc<http::Access>,
}

pub(crate) fn rejection(r: types::Rejection) -> PolicyError {
    let text = match &r.enhanced_code {
        Some(e) => format!("{e} {}", r.text),
        None => r.text.clone(),
    };
    let mode = match r.disconnect {
        None | Some(types::DisconnectMode::If421) => DisconnectMode::If421,
        Some(types::DisconnectMode::ForceDisconnect) => DisconnectMode::ForceDisconnect,
        Some(types::DisconnectMode::FollowWith421) => DisconnectMode::FollowWith421,
    };
    match Rejection::new(r.code, &text, mode) {
        Ok(rej) => PolicyError::Rejected(rej),
        Err(e) => {
            PolicyError::Failed { event: "wasm", message: format!("component returned an invalid rejection: {e}") }
        }
    }
}

impl WasmEngine {
    /// Compiles (off the async workers) and links the component at `path`.
    pub async fn load(
        path: &Path,
        options: WasmOptions,
        runtime: &Arc<crate::policy::Runtime>,
    ) -> Result<WasmEngine, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = format!("wasm:{}", path.display());
        let started = Instant::now();
        let fuel = options.fuel.is_some();
        let kind = match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                " (it is a core WebAssembly module, not a component: build for wasm32-wasip2, or make one with \
                 `wasm-tools component new`; `wasmta plugin build` does either)"
            }
            Some([0, b'a', b's', b'm', ..]) => "",
            _ => " (it is not WebAssembly at all)",
        };
        let (component, source) = tokio::task::spawn_blocking(move || cache::component(engine(fuel), &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: not a valid policy component{kind}: {e}", path.display()))?;
        let how = match source {
            cache::Source::Cache => "from the compiled-component cache",
            cache::Source::Compiled => "compiled",
        };
        tracing::info!("{}: {how} in {:.1} ms", path.display(), started.elapsed().as_secs_f64() * 1e3);
        let mut linker: Linker<HostState> = Linker::new(engine(fuel));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
        bindings::Policy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{}: does not match the wasmta:policy world: {e}", path.display()))?;
        let exports = calls::Exports::find(&pre);
        // `init` is not dispatched: the loader runs it once (`run_init`)
        let handled: HashSet<Event> = exports.events().into_iter().filter(|e| *e != Event::Init).collect();
        if handled.is_empty() && exports.init.is_none() {
            return Err(format!("{}: exports no event interface wasmta can call yet", path.display()));
        }
        let label = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let engine = WasmEngine {
            info: EngineInfo::new(name, handled),
            pre,
            exports,
            pool: Mutex::new(vec![]),
            options,
            settings: Default::default(),
            runtime: runtime.clone(),
            breaker: Breaker::new(options.breaker),
            metrics: Metrics::new(&label),
            http: Default::default(),
        };
        // a smoke-test instance proves it starts before it serves
        let live = engine.instantiate().await?;
        engine.pool.lock().push(live);
        Ok(engine)
    }

    async fn instantiate(&self) -> Result<Live, String> {
        let state = HostState {
            table: wasmtime::component::ResourceTable::new(),
            wasi: {
                let log = stderr::GuestLog::new(&self.info.name);
                wasmtime_wasi::WasiCtxBuilder::new().stdout(log.clone()).stderr(log).build()
            },
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).instances(16).tables(64).build(),
            deadline: Instant::now() + self.options.budget,
            plugin: self.info.name.clone(),
            init: None,
            settings: self.settings.clone(),
            runtime: self.runtime.clone(),
            http: self.http.clone(),
        };
        let mut store = Store::new(engine(self.options.fuel.is_some()), state);
        store.limiter(|s| s.limiter());
        if let Some(fuel) = self.options.fuel {
            store.set_fuel(fuel).map_err(|e| e.to_string())?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            // a shutdown cancels calls in flight (T-54)
            if Instant::now() > ctx.data().deadline || ctx.data().runtime.shutdown.is_set() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("{}: instantiation failed: {e}", self.info.name))?;
        let guests = self.exports.load(&mut store, &instance).map_err(|e| format!("{}: {e}", self.info.name))?;
        Ok(Live { store, guests })
    }
}

impl WasmEngine {
    /// The settings `config.setting` answers from.
    pub fn set_settings(&mut self, settings: Arc<crate::policy::loader::Settings>) {
        self.settings = settings;
        self.pool.lock().clear();
    }

    /// The URL prefixes its `http` requests may go to.
    pub fn set_http_allow(&mut self, prefixes: &[String]) -> Result<(), String> {
        self.http = Arc::new(http::Access::new(prefixes).map_err(|e| format!("{}: http_allow: {e}", self.info.name))?);
        self.pool.lock().clear();
        Ok(())
    }

    /// Whether the component exports `wasmta:policy/init`.
    pub fn exports_init(&self) -> bool {
        self.exports.init.is_some()
    }

    /// Runs the component's `init` export on a fresh instance; returns what its `config`
    /// calls configured.
    pub async fn run_init(&self) -> Result<InitConfig, String> {
        let mut live = self.instantiate().await?;
        let Some(init) = live.guests.init.as_ref() else { return Ok(InitConfig::default()) };
        live.store.data_mut().init = Some(InitConfig::default());
        live.store.data_mut().deadline = Instant::now() + INIT_BUDGET;
        live.store.set_epoch_deadline(1);
        if live.store.get_fuel().is_ok() {
            live.store.set_fuel(u64::MAX).map_err(|e| e.to_string())?;
        }
        let ran = tokio::time::timeout(INIT_BUDGET + TICK * 5, init.call_init(&mut live.store)).await;
        let name = &self.info.name;
        match ran {
            Ok(Ok(Ok(()))) => Ok(live.store.data_mut().init.take().unwrap_or_default()),
            Ok(Ok(Err(r))) => Err(format!("{name}: init failed: {} {}", r.code, r.text)),
            Ok(Err(trap)) => Err(format!("{name}: init trapped: {trap}")),
            Err(_) => Err(format!("{name}: init exceeded {INIT_BUDGET:?}")),
        }
    }
}

/// Wall-clock budget of a component's `init`.
const INIT_BUDGET: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl Engine for WasmEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn constructors(&self) -> Option<&dyn crate::policy::custom::CustomConstructors> {
        Some(self)
    }

    async fn call(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        let failed = |message: String| PolicyError::Failed { event: event.name(), message };
        let name = &self.info.name;
        if let Admit::No(left) = self.breaker.admit(Instant::now()) {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return Err(failed(format!("{name}: circuit open after repeated failures (retry in {left:.0?})")));
        }
        let pooled = self.pool.lock().pop();
        let mut live = match pooled {
            Some(l) => l,
            None => match self.instantiate().await {
                Ok(l) => l,
                Err(e) => {
                    self.failure(event, &e);
                    return Err(failed(e));
                }
            },
        };
        let budget = self.options.budget;
        live.store.data_mut().deadline = Instant::now() + budget;
        // re-arm the epoch check relative to now: a stale deadline would make every call
        // of a reused instance stop at its first epoch check and yield to the runtime
        live.store.set_epoch_deadline(1);
        if let Some(fuel) = self.options.fuel {
            live.store.set_fuel(fuel).map_err(|e| failed(e.to_string()))?;
        }
        // the epoch stops CPU-bound guests; the timer stops guests parked in host awaits
        let outcome =
            tokio::time::timeout(budget + TICK * 5, calls::call(&live.guests, &mut live.store, event, args)).await;
        if let Some(fuel) = self.options.fuel {
            let used = fuel.saturating_sub(live.store.get_fuel().unwrap_or(0));
            self.metrics.fuel.fetch_add(used as i64, Ordering::Relaxed);
        }
        match outcome {
            Ok(Ok(result)) => {
                self.pool.lock().push(live);
                self.breaker.success();
                self.metrics.circuit_open.store(0, Ordering::Relaxed);
                result
            }
            Ok(Err(trap)) => {
                self.metrics.traps.fetch_add(1, Ordering::Relaxed);
                let why = format!("{name}: {} trapped: {trap:#}", event.name());
                self.failure(event, &why);
                Err(failed(format!("{name}: {trap}")))
            }
            Err(_) => {
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                self.failure(event, &format!("{name}: {} exceeded {budget:?}", event.name()));
                Err(failed(format!("{name}: deadline of {budget:?} exceeded")))
            }
        }
    }
}

impl WasmEngine {
    /// Logs a failed call and feeds the breaker.
    fn failure(&self, event: Event, why: &str) {
        tracing::error!("{why}");
        if let Some(cooldown) = self.breaker.failure(Instant::now()) {
            self.metrics.circuit_open.store(1, Ordering::Relaxed);
            tracing::error!(
                "{}: circuit opened after repeated failures; its events tempfail for {cooldown:?} (last: {})",
                self.info.name,
                event.name()
            );
        }
    }
}
