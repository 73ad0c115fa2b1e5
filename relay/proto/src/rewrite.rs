//! The rewriter: per-viewer sequence number and RTP timestamp rewriting, so that whatever happens upstream
//! (joining mid-stream, the publisher reconnecting with a new SSRC and numbering) the viewer sees one clean,
//! continuous stream.

use std::time::{Duration, Instant};

/// Per-viewer rewriting of sequence numbers and RTP timestamps so a viewer joining mid-stream, or a publisher reconnecting under the same name
/// (new SSRC, new seq/timestamp space), looks to the viewer like one clean continuous stream starting at a small sequence number.
///
/// Both numbers are rewritten by a constant offset per source, so gaps stay gaps (the viewer NACKs them and
/// [`Rewriter::source_seq`] maps the NACK back) and timestamp spacing, which the jitter buffer and lip sync
/// depend on, is untouched. Offsets are wrapping, so any source value maps without overflow; viewers only see
/// the low 16/32 bits on the wire.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    initial_seq: u16,
    /// None until the current source's first packet arrives.
    mapping: Option<Mapping>,
    /// Highest out_seq emitted so far, over all sources.
    last_out_seq: Option<u64>,
    /// Latest out_time emitted (by RTP's modular ordering: B-frames may emit earlier times after later ones).
    last_out_time: u64,
    /// Set by switch_source: how far past last_out_time the next source's first packet goes.
    switch_gap: Option<u64>,
    last_sent: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source_start: u64,
    out_start: u64,
    time_offset: u64,
}

impl Rewriter {
    /// `initial_seq` should be random (RFC 3550 section 5.1); the caller owns randomness so this stays deterministic.
    pub fn new(clock_rate: u32, initial_seq: u16) -> Self {
        Rewriter {
            clock_rate,
            initial_seq,
            mapping: None,
            last_out_seq: None,
            last_out_time: 0,
            switch_gap: None,
            last_sent: None,
        }
    }

    /// Maps a source packet to (out_seq, out_time), or None for a packet from before the current source's
    /// first forwarded packet (the viewer never saw anything it could precede).
    ///
    /// The very first source keeps its timestamps unchanged (offset 0): absolute RTP time carries no meaning
    /// for the viewer, and leaving it alone makes captures on both sides easy to correlate.
    pub fn rewrite(&mut self, source_seq: u64, source_time: u64) -> Option<(u64, u64)> {
        let mapping = match self.mapping {
            Some(m) => m,
            None => self.start_source(source_seq, source_time),
        };
        let advance = source_seq.checked_sub(mapping.source_start)?;
        let out_seq = mapping.out_start.checked_add(advance)?;
        let out_time = source_time.wrapping_add(mapping.time_offset);
        let first = self.last_out_seq.is_none();
        if self.last_out_seq.is_none_or(|last| out_seq > last) {
            self.last_out_seq = Some(out_seq);
        }
        if first || is_later(out_time, self.last_out_time) {
            self.last_out_time = out_time;
        }
        Some((out_seq, out_time))
    }

    /// Reverse map for a viewer NACK: out_seq -> source_seq, if that out_seq belongs to the current source
    /// and has been emitted.
    pub fn source_seq(&self, out_seq: u64) -> Option<u64> {
        let mapping = self.mapping?;
        if out_seq > self.last_out_seq? {
            return None;
        }
        let advance = out_seq.checked_sub(mapping.out_start)?;
        mapping.source_start.checked_add(advance)
    }

    /// The publisher changed (reconnect): the next packet rewritten, whatever its numbering, continues at
    /// last_out_seq + 1, and its timestamp lies the elapsed wallclock since the last send (at least one tick)
    /// after the latest timestamp sent, so the viewer's decoder and jitter buffer see continuity.
    pub fn switch_source(&mut self, now: Instant) {
        if self.last_out_seq.is_none() {
            // Nothing forwarded yet: the next packet simply starts the stream.
            self.mapping = None;
            return;
        }
        let elapsed = self
            .last_sent
            .map_or(Duration::ZERO, |sent| now.saturating_duration_since(sent));
        self.switch_gap = Some(self.ticks(elapsed).max(1));
        self.mapping = None;
    }

    /// The latest RTP time emitted (0 before the first packet).
    pub fn last_out_time(&self) -> u64 {
        self.last_out_time
    }

    /// A rewriter that continues a stream another process wrote up to `last_out_seq` and
    /// `last_out_time`, `elapsed` ago: its first packet follows at `last_out_seq + 1` and that
    /// much RTP time later, as after [`Rewriter::switch_source`].
    pub fn resumed(
        clock_rate: u32,
        last_out_seq: u64,
        last_out_time: u64,
        elapsed: Duration,
    ) -> Self {
        let mut r = Rewriter::new(clock_rate, 0);
        r.last_out_seq = Some(last_out_seq);
        r.last_out_time = last_out_time;
        r.switch_gap = Some(r.ticks(elapsed).max(1));
        r
    }

    /// Must be fed the send wallclock of each rewritten packet to support switch_source's elapsed computation.
    pub fn note_sent(&mut self, now: Instant) {
        if self.last_sent.is_none_or(|sent| now > sent) {
            self.last_sent = Some(now);
        }
    }

    fn start_source(&mut self, source_seq: u64, source_time: u64) -> Mapping {
        let (out_start, out_time) = match self.last_out_seq {
            None => (u64::from(self.initial_seq), source_time),
            Some(last) => (
                last.saturating_add(1),
                self.last_out_time
                    .wrapping_add(self.switch_gap.take().unwrap_or(1)),
            ),
        };
        let mapping = Mapping {
            source_start: source_seq,
            out_start,
            time_offset: out_time.wrapping_sub(source_time),
        };
        self.mapping = Some(mapping);
        mapping
    }

    fn ticks(&self, elapsed: Duration) -> u64 {
        let ticks = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// RTP ordering of timestamps: `a` is later than `b` if it is ahead by less than half the space.
fn is_later(a: u64, b: u64) -> bool {
    let ahead = a.wrapping_sub(b);
    ahead != 0 && ahead < 1 << 63
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at_ms;

    #[test]
    fn first_packet_starts_at_initial_seq() {
        let mut rw = Rewriter::new(90_000, 1000);
        assert_eq!(rw.rewrite(52_000, 7_000_000), Some((1000, 7_000_000)));
        assert_eq!(rw.rewrite(52_001, 7_003_000), Some((1001, 7_003_000)));
    }

    #[test]
    fn gaps_are_preserved() {
        let mut rw = Rewriter::new(90_000, 10);
        assert_eq!(rw.rewrite(500, 0), Some((10, 0)));
        assert_eq!(rw.rewrite(503, 3000), Some((13, 3000)));
        // The missing ones are still mapped when they arrive late.
        assert_eq!(rw.rewrite(501, 0), Some((11, 0)));
        assert_eq!(rw.rewrite(502, 3000), Some((12, 3000)));
        assert_eq!(rw.rewrite(510, 9000), Some((20, 9000)));
    }

    #[test]
    fn earlier_than_first_forwarded_is_dropped() {
        let mut rw = Rewriter::new(90_000, 10);
        rw.rewrite(500, 0);
        assert_eq!(rw.rewrite(499, 0), None);
        assert_eq!(rw.rewrite(0, 0), None);
    }

    #[test]
    fn source_seq_wrapping_through_u16() {
        // str0m extends 65534, 65535, 0, 1 into 65534..=65537.
        let mut rw = Rewriter::new(90_000, 100);
        let out: Vec<_> = (65_534..=65_537)
            .map(|s| rw.rewrite(s, s * 10).unwrap().0)
            .collect();
        assert_eq!(out, vec![100, 101, 102, 103]);
        assert_eq!(rw.source_seq(102), Some(65_536));
        assert_eq!(
            rw.source_seq(103).map(|s| s as u16),
            Some(1),
            "the u16 the publisher put on the wire"
        );
    }

    #[test]
    fn output_wraps_cleanly_on_the_wire() {
        let mut rw = Rewriter::new(48_000, 65_534);
        let out: Vec<_> = (7..11).map(|s| rw.rewrite(s, s * 960).unwrap().0).collect();
        assert_eq!(out, vec![65_534, 65_535, 65_536, 65_537]);
        let wire: Vec<u16> = out.iter().map(|&s| s as u16).collect();
        assert_eq!(wire, vec![65_534, 65_535, 0, 1]);
    }

    #[test]
    fn timestamps_wrapping_through_u32() {
        let mut rw = Rewriter::new(90_000, 0);
        let t = u64::from(u32::MAX) - 1000;
        assert_eq!(rw.rewrite(1, t), Some((0, t)));
        let (_, out) = rw.rewrite(2, t + 3000).unwrap();
        assert_eq!(out as u32, 1999);
    }

    #[test]
    fn reverse_map_for_nacks() {
        let mut rw = Rewriter::new(90_000, 300);
        assert_eq!(rw.source_seq(300), None, "nothing sent yet");
        rw.rewrite(9000, 0);
        rw.rewrite(9005, 0);
        assert_eq!(rw.source_seq(300), Some(9000));
        assert_eq!(rw.source_seq(303), Some(9003));
        assert_eq!(rw.source_seq(305), Some(9005));
        assert_eq!(rw.source_seq(306), None, "never emitted");
        assert_eq!(rw.source_seq(299), None, "before the stream");
    }

    #[test]
    fn switch_continues_sequence_and_time() {
        let mut rw = Rewriter::new(90_000, 1000);
        for i in 0..5u64 {
            rw.rewrite(40_000 + i, 123_456 + i * 3000);
            rw.note_sent(at_ms(i * 33));
        }
        // Last sent: out seq 1004, out time 135_456 at 132 ms. Reconnect 500 ms later.
        rw.switch_source(at_ms(632));
        // The new publisher numbers from scratch.
        assert_eq!(rw.rewrite(7, 999), Some((1005, 135_456 + 45_000)));
        assert_eq!(rw.rewrite(8, 999 + 3000), Some((1006, 135_456 + 48_000)));
        assert_eq!(
            rw.rewrite(11, 999 + 9000),
            Some((1009, 135_456 + 54_000)),
            "gaps still gaps"
        );
    }

    #[test]
    fn switch_drops_stragglers_and_old_nacks() {
        let mut rw = Rewriter::new(90_000, 1000);
        rw.rewrite(40_000, 0);
        rw.rewrite(40_001, 3000);
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(10));
        assert_eq!(rw.source_seq(1001), None, "no packet of the new source yet");
        rw.rewrite(500, 0);
        assert_eq!(rw.source_seq(1001), None, "belongs to the previous source");
        assert_eq!(rw.source_seq(1002), Some(500));
        // Older than the new source's start.
        assert_eq!(rw.rewrite(499, 0), None);
    }

    #[test]
    fn switch_advances_time_at_least_one_tick() {
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(1, 5000);
        rw.note_sent(at_ms(100));
        rw.switch_source(at_ms(100));
        assert_eq!(rw.rewrite(70_000, 1), Some((1, 5001)));
    }

    #[test]
    fn switch_without_note_sent_still_advances() {
        let mut rw = Rewriter::new(48_000, 0);
        rw.rewrite(1, 5000);
        rw.switch_source(at_ms(100));
        assert_eq!(rw.rewrite(9, 0), Some((1, 5001)));
    }

    #[test]
    fn switch_uses_audio_clock_rate() {
        let mut rw = Rewriter::new(48_000, 0);
        rw.rewrite(1, 960);
        rw.note_sent(at_ms(20));
        rw.switch_source(at_ms(1020));
        assert_eq!(rw.rewrite(1, 0), Some((1, 960 + 48_000)));
    }

    #[test]
    fn switch_measures_from_latest_timestamp_sent() {
        // B-frames: the highest sequence number does not carry the latest timestamp.
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(1, 9000);
        rw.rewrite(2, 3000);
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(0));
        assert_eq!(rw.rewrite(50, 77), Some((2, 9001)));
    }

    #[test]
    fn switch_before_anything_was_sent_is_a_fresh_start() {
        let mut rw = Rewriter::new(90_000, 42);
        rw.switch_source(at_ms(5));
        assert_eq!(rw.rewrite(9, 900), Some((42, 900)));
    }

    #[test]
    fn repeated_switches_without_packets() {
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(1, 0);
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(100));
        rw.switch_source(at_ms(1000));
        assert_eq!(rw.rewrite(5, 0), Some((1, 90_000)));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(1, 0);
        rw.note_sent(at_ms(1000));
        rw.note_sent(at_ms(500));
        rw.switch_source(at_ms(200));
        assert_eq!(rw.rewrite(5, 0), Some((1, 1)));
    }

    #[test]
    fn two_switches_chain_continuously() {
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(100, 0);
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(1000));
        assert_eq!(rw.rewrite(5, 70), Some((1, 90_000)));
        rw.rewrite(6, 3070);
        rw.note_sent(at_ms(1033));
        rw.switch_source(at_ms(1133));
        assert_eq!(rw.rewrite(60_000, 1), Some((3, 93_000 + 9000)));
    }

    #[test]
    fn extreme_source_values_do_not_panic() {
        let mut rw = Rewriter::new(u32::MAX, u16::MAX);
        assert_eq!(rw.rewrite(u64::MAX, u64::MAX), Some((65_535, u64::MAX)));
        assert_eq!(rw.rewrite(0, 0), None);
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(0));
        assert_eq!(
            rw.rewrite(0, 0),
            Some((65_536, 0)),
            "time continues past u64::MAX by wrapping"
        );
        rw.note_sent(at_ms(0));
        rw.switch_source(at_ms(u64::from(u32::MAX)));
        assert!(rw.rewrite(0, 0).is_some());
        let mut rw = Rewriter::new(90_000, 0);
        rw.rewrite(0, 0);
        assert_eq!(rw.rewrite(u64::MAX, 5).map(|(s, _)| s), Some(u64::MAX));
    }
}
