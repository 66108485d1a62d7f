//! Fuzz target: see `wasmta::fuzzing::spool_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmta::fuzzing::spool_record(data));
