//! Fuzz target: see `wasmta::fuzzing::command`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmta::fuzzing::command(data));
