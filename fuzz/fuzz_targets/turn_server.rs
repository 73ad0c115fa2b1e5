#![no_main]
//! Fuzz target `turn_server`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::turn_server(data));
