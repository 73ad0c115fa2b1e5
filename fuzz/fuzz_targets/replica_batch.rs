#![no_main]
//! Fuzz target `replica_batch`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::replica_batch(data));
