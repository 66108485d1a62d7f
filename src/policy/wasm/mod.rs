//! The Wasm engine: policy components (WIT package `wasmta:policy`, see `wit/`) bound to
//! the same event catalogue as Lua. The host reads which events a component handles from
//! the interfaces it exports. Every call has a wall-clock deadline (epoch interruption), a
//! memory cap (StoreLimits) and an empty WASI context; a trap, timeout or out-of-memory
//! fails closed and temporary, and the instance is thrown away.

mod bindings;
mod cache;
mod calls;
mod host;

use crate::config::InitConfig;
use crate::policy::{Args, DisconnectMode, Engine, EngineInfo, Event, PolicyError, Rejection};
use bindings::wasmta::policy::types;
use host::HostState;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};

/// Memory one instance may use.
const MEMORY_LIMIT: usize = 64 << 20;
/// Epoch tick: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(10);

/// The process's one wasmtime engine, with a ticker that drives epoch deadlines.
fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true).max_wasm_stack(512 * 1024);
        // pooled memories, tables and async stacks: no mmap per instance or per call
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(512)
            .total_memories(512)
            .total_tables(512)
            .total_stacks(256)
            .max_memory_size(MEMORY_LIMIT);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).expect("wasmtime engine");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(e) = ticker.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .expect("epoch thread");
        engine
    })
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
    budget: Duration,
    settings: Arc<crate::policy::loader::Settings>,
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
    pub async fn load(path: &Path, budget: Duration) -> Result<WasmEngine, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = format!("wasm:{}", path.display());
        let started = Instant::now();
        let (component, source) = tokio::task::spawn_blocking(move || cache::component(engine(), &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: not a valid policy component: {e}", path.display()))?;
        let how = match source {
            cache::Source::Cache => "from the compiled-component cache",
            cache::Source::Compiled => "compiled",
        };
        tracing::info!("{}: {how} in {:.1} ms", path.display(), started.elapsed().as_secs_f64() * 1e3);
        let mut linker: Linker<HostState> = Linker::new(engine());
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
        let engine = WasmEngine {
            info: EngineInfo { name, handled },
            pre,
            exports,
            pool: Mutex::new(vec![]),
            budget,
            settings: Default::default(),
        };
        // a smoke-test instance proves it starts before it serves
        let live = engine.instantiate().await?;
        engine.pool.lock().push(live);
        Ok(engine)
    }

    async fn instantiate(&self) -> Result<Live, String> {
        let state = HostState {
            table: wasmtime::component::ResourceTable::new(),
            wasi: wasmtime_wasi::WasiCtxBuilder::new().inherit_stderr().build(),
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).instances(16).tables(64).build(),
            deadline: Instant::now() + self.budget,
            plugin: self.info.name.clone(),
            init: None,
            settings: self.settings.clone(),
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() > ctx.data().deadline {
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

    async fn call(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        let failed = |message: String| PolicyError::Failed { event: event.name(), message };
        let pooled = self.pool.lock().pop();
        let mut live = match pooled {
            Some(l) => l,
            None => self.instantiate().await.map_err(failed)?,
        };
        live.store.data_mut().deadline = Instant::now() + self.budget;
        // re-arm the epoch check relative to now: a stale deadline would make every call
        // of a reused instance stop at its first epoch check and yield to the runtime
        live.store.set_epoch_deadline(1);
        // the epoch stops CPU-bound guests; the timer stops guests parked in host awaits
        let outcome =
            tokio::time::timeout(self.budget + TICK * 5, calls::call(&live.guests, &mut live.store, event, args)).await;
        match outcome {
            Ok(Ok(result)) => {
                self.pool.lock().push(live);
                result
            }
            Ok(Err(trap)) => {
                tracing::error!("{}: {} trapped: {trap:#}", self.info.name, event.name());
                Err(failed(format!("{}: {trap}", self.info.name)))
            }
            Err(_) => {
                tracing::error!("{}: {} exceeded {:?}", self.info.name, event.name(), self.budget);
                Err(failed(format!("{}: deadline of {:?} exceeded", self.info.name, self.budget)))
            }
        }
    }
}
