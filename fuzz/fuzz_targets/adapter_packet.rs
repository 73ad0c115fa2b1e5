#![no_main]
//! Fuzz target `adapter_packet`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::adapter_packet(data));
