//! Fuzz target: see `wasmta::fuzzing::data_chunking`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmta::fuzzing::data_chunking(data));
