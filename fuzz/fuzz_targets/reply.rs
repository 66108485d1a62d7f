//! Fuzz target: see `wasmta::fuzzing::reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmta::fuzzing::reply(data));
