//! Paces the keyframe run a joining viewer gets.
//!
//! A viewer starts at the cached keyframe and gets everything since, so it sees a picture at once
//! even from an encoder that ignores keyframe requests. Sent at once, that run is a burst of up to
//! a whole GOP (2.5 MB for 8 s at 2.5 Mbps) at line rate, which overflows the queue of a home
//! link and turns into loss, NACKs and more bursts. So only the keyframe itself leaves at once;
//! the rest of the run, and the live packets that queue behind it, leave at a multiple of the
//! track's bitrate, which lets the viewer catch up with live in a fraction of the run's length.
//! Sans-IO: packets and time in, packets due out; the worker writes them and wakes at `next_due`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use relay_proto::SharedPacket;

/// A run is paced at this multiple of the track's measured bitrate …
pub const RATE_FACTOR: u64 = 4;
/// … but never slower than this (a track's rate is unknown for its first second).
pub const MIN_RATE_BPS: u64 = 4_000_000;

/// One viewer's backlog of a track.
#[derive(Debug)]
pub struct RunPacer {
    queue: VecDeque<SharedPacket>,
    bytes_per_sec: f64,
    /// Bytes that may leave now; negative after the packet that overdrew it.
    credit: f64,
    last: Instant,
    /// Until the first frame (the keyframe, with any parameter sets before it) has left, packets
    /// leave at once: a viewer should see its first picture without waiting for the pacer.
    first_frame: bool,
}

impl RunPacer {
    /// A pacer at `RATE_FACTOR` × the track's rate (at least `MIN_RATE_BPS`) whose first frame
    /// leaves at once.
    pub fn new(track_rate_bps: u64, now: Instant) -> Self {
        let rate = track_rate_bps.saturating_mul(RATE_FACTOR).max(MIN_RATE_BPS);
        RunPacer {
            queue: VecDeque::new(),
            bytes_per_sec: rate as f64 / 8.0,
            credit: 0.0,
            last: now,
            first_frame: true,
        }
    }

    /// Queue a packet behind those already waiting, keeping their order.
    pub fn push(&mut self, packet: SharedPacket) {
        self.queue.push_back(packet);
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next packet that may leave now, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<SharedPacket> {
        self.refill(now);
        if self.first_frame {
            let p = self.queue.pop_front()?;
            self.first_frame = !p.marker;
            return Some(p);
        }
        if self.credit <= 0.0 {
            return None;
        }
        let p = self.queue.pop_front()?;
        self.credit -= p.size() as f64;
        Some(p)
    }

    /// When the next packet may leave (None: nothing waits).
    pub fn next_due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        if self.first_frame || self.credit > 0.0 {
            return Some(self.last);
        }
        let wait = (-self.credit + 1.0) / self.bytes_per_sec;
        Some(self.last + Duration::from_secs_f64(wait))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        // Credit does not pile up beyond one packet while the queue is empty, so live packets
        // that follow a drained run are not released as a new burst.
        let cap = if self.queue.is_empty() {
            1500.0
        } else {
            f64::MAX
        };
        self.credit = (self.credit + elapsed * self.bytes_per_sec).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::MediaPacket;
    use std::sync::Arc;

    fn packet(seq: u64, size: usize, at: Instant) -> SharedPacket {
        frame_packet(seq, size, false, at)
    }

    fn frame_packet(seq: u64, size: usize, marker: bool, at: Instant) -> SharedPacket {
        Arc::new(MediaPacket {
            seq,
            rtp_time: seq * 3000,
            marker,
            pt: 96,
            payload: vec![0u8; size].into(),
            keyframe_start: seq == 0,
            received: at,
        })
    }

    fn drain(p: &mut RunPacer, now: Instant) -> Vec<u64> {
        std::iter::from_fn(|| p.pop_due(now))
            .map(|p| p.seq)
            .collect()
    }

    #[test]
    fn the_first_frame_leaves_at_once_and_the_rest_at_the_rate() {
        let t0 = Instant::now();
        // 8 Mbps = 1 MB/s: one 1000-byte packet per millisecond.
        let mut p = RunPacer::new(2_000_000, t0);
        for seq in 0..10 {
            p.push(frame_packet(seq, 1000, seq == 2, t0));
        }
        assert_eq!(drain(&mut p, t0), vec![0, 1, 2]);
        let due = p.next_due().expect("packets wait");
        assert!(
            due > t0 && due <= t0 + Duration::from_micros(2),
            "{:?}",
            due - t0
        );
        assert_eq!(drain(&mut p, t0 + Duration::from_micros(500)), vec![3]);
        assert!(drain(&mut p, t0 + Duration::from_micros(900)).is_empty());
        assert_eq!(
            drain(&mut p, t0 + Duration::from_micros(3600)),
            vec![4, 5, 6]
        );
        assert_eq!(drain(&mut p, t0 + Duration::from_secs(1)), vec![7, 8, 9]);
        assert!(p.is_empty());
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn live_packets_queue_behind_the_run_in_order() {
        let t0 = Instant::now();
        let mut p = RunPacer::new(0, t0);
        p.push(frame_packet(0, 1000, true, t0));
        p.push(packet(1, 1000, t0));
        assert_eq!(drain(&mut p, t0), vec![0]);
        p.push(packet(2, 1000, t0));
        // MIN_RATE_BPS = 500 kB/s: 2 ms per 1000 bytes.
        assert_eq!(drain(&mut p, t0 + Duration::from_millis(1)), vec![1]);
        assert!(drain(&mut p, t0 + Duration::from_millis(2)).is_empty());
        assert_eq!(drain(&mut p, t0 + Duration::from_millis(4)), vec![2]);
    }

    #[test]
    fn an_idle_pacer_saves_no_burst() {
        let t0 = Instant::now();
        let mut p = RunPacer::new(0, t0);
        p.push(frame_packet(0, 1000, true, t0));
        assert_eq!(drain(&mut p, t0), vec![0]);
        assert!(drain(&mut p, t0 + Duration::from_secs(10)).is_empty());
        for seq in 1..6 {
            p.push(packet(seq, 1000, t0));
        }
        // Ten idle seconds bought one packet's worth, not 5 MB.
        assert_eq!(drain(&mut p, t0 + Duration::from_secs(10)), vec![1, 2]);
    }

    #[test]
    fn the_clock_going_backwards_releases_nothing_extra() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut p = RunPacer::new(0, t0);
        p.push(frame_packet(0, 1000, true, t0));
        p.push(packet(1, 1000, t0));
        assert_eq!(drain(&mut p, t0 - Duration::from_millis(500)), vec![0]);
        assert_eq!(drain(&mut p, t0 + Duration::from_millis(1)), vec![1]);
    }
}
