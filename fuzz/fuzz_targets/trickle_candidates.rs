#![no_main]
//! Fuzz target `trickle_candidates`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::trickle_candidates(data));
