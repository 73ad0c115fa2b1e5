//! Fixtures shared by the unit tests: a time origin and a packet builder.
//!
//! `Instant` has no constructor other than reading the clock, so the tests read it exactly once here and
//! express every other moment as an offset from it; the code under test never reads the clock.

use crate::packet::{MediaPacket, SharedPacket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub(crate) fn t0() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

pub(crate) fn at_ms(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

pub(crate) fn packet(
    seq: u64,
    rtp_time: u64,
    len: usize,
    keyframe_start: bool,
    received: Instant,
) -> SharedPacket {
    Arc::new(MediaPacket {
        seq,
        rtp_time,
        marker: false,
        pt: 96,
        payload: vec![0u8; len].into(),
        keyframe_start,
        received,
    })
}
