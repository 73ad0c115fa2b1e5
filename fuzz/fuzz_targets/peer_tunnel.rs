#![no_main]
//! Fuzz target `peer_tunnel`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::peer_tunnel(data));
