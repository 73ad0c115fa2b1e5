#![no_main]
//! Fuzz target `parameter_sets`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::parameter_sets(data));
