//! Fuzz target: see `wasmta::fuzzing::shaping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmta::fuzzing::shaping(data));
