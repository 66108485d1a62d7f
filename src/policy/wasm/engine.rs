//! The process's wasmtime engines: one with epoch interruption only, and one that also
//! meters fuel (created only when a plugin asks for a fuel budget), each with the pooling
//! allocator and a ticker thread that drives epoch deadlines.

use std::sync::OnceLock;
use std::time::Duration;

/// Memory one instance may use.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Epoch tick: the granularity of deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// The engine for plugins without (`fuel = false`) or with a fuel budget.
pub fn engine(fuel: bool) -> &'static wasmtime::Engine {
    static PLAIN: OnceLock<wasmtime::Engine> = OnceLock::new();
    static FUELLED: OnceLock<wasmtime::Engine> = OnceLock::new();
    let cell = if fuel { &FUELLED } else { &PLAIN };
    cell.get_or_init(|| build(fuel))
}

fn build(fuel: bool) -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).epoch_interruption(true).consume_fuel(fuel).max_wasm_stack(512 * 1024);
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
}
