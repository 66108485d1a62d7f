//! Per-event dispatch cost: the same `smtp_server_message_received` policy in Lua, as the
//! Rust component `plugins/rust/message-policy` and as the Go component
//! `plugins/go/message-policy`, called through the real engines.
//! Prints the median and p99 per call. Run with `cargo bench --bench dispatch`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmta::message::{EnvelopeAddress, Message};
use wasmta::policy::lua::LuaEngine;
use wasmta::policy::wasm::{WasmEngine, WasmOptions};
use wasmta::policy::{ConnMeta, Engine, Policy};

#[path = "../tests/harness/plugins.rs"]
mod plugins;

const CALLS: usize = 20_000;

fn message() -> Message {
    let body = format!("Subject: bench\r\nX-Tenant: acme\r\nFrom: <a@s.example>\r\n\r\n{}", "x".repeat(2000));
    Message::new(
        EnvelopeAddress::parse("a@s.example").unwrap(),
        vec![EnvelopeAddress::parse("r@d.example").unwrap()],
        Default::default(),
        body.into_bytes(),
    )
}

async fn measure(name: &str, policy: &Policy) {
    let conn = ConnMeta::default();
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 1000 {
        let m = message();
        let start = Instant::now();
        policy.message_received(&m, &conn).await.expect("accepted");
        if i >= 1000 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:>6}: median {:.2} µs, p99 {:.2} µs per smtp_server_message_received ({CALLS} calls)",
        us(at(0.5)),
        us(at(0.99))
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.lua");
        std::fs::write(&path, plugins::lua_message_policy()).unwrap();
        let runtime = wasmta::policy::Runtime::new();
        let lua = LuaEngine::load(&path, false, &runtime).await.unwrap().engine;
        measure("lua", &Policy::new(vec![Arc::new(lua) as Arc<dyn Engine>], runtime.clone()).unwrap()).await;
        let budget = WasmOptions::with_budget(Duration::from_secs(5));
        let wasm = WasmEngine::load(&plugins::component("message_policy"), budget, &runtime).await.unwrap();
        measure("rust", &Policy::new(vec![Arc::new(wasm) as Arc<dyn Engine>], runtime.clone()).unwrap()).await;
        let budget = WasmOptions::with_budget(Duration::from_secs(5));
        let go = WasmEngine::load(&plugins::go_component("message-policy"), budget, &runtime).await.unwrap();
        measure("go", &Policy::new(vec![Arc::new(go) as Arc<dyn Engine>], runtime.clone()).unwrap()).await;
    });
}
