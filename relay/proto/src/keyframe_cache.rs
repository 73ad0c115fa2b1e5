//! The keyframe cache: one track's packets from its latest keyframe on, so a new viewer starts at once even
//! when the publisher ignores PLI (OBS does) and has a long GOP.

use crate::packet::SharedPacket;

/// The packets from the track's latest keyframe on, so a new viewer starts at once even when the publisher ignores PLI and has an 8 s GOP.
#[derive(Debug)]
pub struct KeyframeCache {
    max_bytes: usize,
    /// Sorted by seq, starting at the first packet seen of the keyframe's frame. Empty while waiting for one.
    run: Vec<SharedPacket>,
    run_bytes: usize,
    /// While waiting: the packets seen so far of the newest frame. Parameter sets, AUDs or SEI often travel in
    /// packets before the one that reveals the keyframe, and a decoder needs them too.
    pending: Vec<SharedPacket>,
    pending_bytes: usize,
    /// (seq, rtp_time) of the highest-numbered packet seen: its frame is the current one.
    newest: Option<(u64, u64)>,
    dropped_runs: u64,
}

impl KeyframeCache {
    /// `max_bytes` bounds the run's payload bytes; a GOP that outgrows it is dropped whole (a partial GOP
    /// without its keyframe is useless) and the cache waits for the next keyframe.
    pub fn new(max_bytes: usize) -> Self {
        KeyframeCache {
            max_bytes,
            run: Vec::new(),
            run_bytes: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            newest: None,
            dropped_runs: 0,
        }
    }

    /// Feed every packet of the track in arrival order.
    pub fn push(&mut self, pkt: &SharedPacket) {
        if self.newest.is_none_or(|(seq, _)| pkt.seq > seq) {
            self.newest = Some((pkt.seq, pkt.rtp_time));
        }
        if self.run.is_empty() {
            self.push_waiting(pkt);
        } else {
            self.push_in_run(pkt);
        }
    }

    /// The current run in seq order (empty if no keyframe seen yet or the run was dropped).
    pub fn run(&self) -> impl Iterator<Item = &SharedPacket> {
        self.run.iter()
    }

    /// What a new subscriber starts from: the run, behind a STAP-A of `parameter_sets` (the
    /// track's latest H264 SPS and PPS) when its first frame carries no SPS. The one place a
    /// start is built, at a tree hop and at a gateway's origin alike. Empty without a keyframe.
    pub fn start_run(&self, parameter_sets: Option<(&[u8], &[u8])>) -> Vec<SharedPacket> {
        let mut run = Vec::with_capacity(self.run.len() + 1);
        if let Some((sps, pps)) = parameter_sets
            && let Some(sets) = crate::parameter_sets_packet(&self.run, sps, pps)
        {
            run.push(sets);
        }
        run.extend(self.run.iter().cloned());
        run
    }

    /// True while the cache holds a run that starts at a keyframe, so a new viewer can start from it.
    pub fn has_keyframe(&self) -> bool {
        !self.run.is_empty()
    }

    /// Payload bytes held: the run, plus while waiting the few packets of the current frame.
    pub fn bytes(&self) -> usize {
        self.run_bytes + self.pending_bytes
    }

    /// Runs abandoned because a GOP outgrew `max_bytes`; a steadily rising count means the budget is too small
    /// for this publisher's GOP and viewers fall back to waiting for a keyframe.
    pub fn dropped_runs(&self) -> u64 {
        self.dropped_runs
    }

    /// The publisher left: its packets must not be shown to the next publisher's viewers.
    pub fn clear(&mut self) {
        self.run.clear();
        self.run_bytes = 0;
        self.clear_pending();
        self.newest = None;
    }

    fn push_waiting(&mut self, pkt: &SharedPacket) {
        // A straggler from a frame we have moved past can neither start a run nor belong to the pending frame.
        if self.newest.is_some_and(|(_, time)| time != pkt.rtp_time) {
            return;
        }
        if self
            .pending
            .first()
            .is_some_and(|p| p.rtp_time != pkt.rtp_time)
        {
            self.clear_pending();
        }
        if insert_sorted(&mut self.pending, pkt).is_none() {
            return;
        }
        self.pending_bytes += pkt.size();
        if pkt.keyframe_start {
            self.run = std::mem::take(&mut self.pending);
            self.run_bytes = std::mem::take(&mut self.pending_bytes);
            self.enforce_limit();
        } else if self.pending_bytes > self.max_bytes {
            self.clear_pending();
        }
    }

    fn push_in_run(&mut self, pkt: &SharedPacket) {
        let start = &self.run[0];
        // Older than the run is stale, unless it is a reordered packet of the keyframe's own frame (e.g. the
        // SPS overtaken by the IDR), which the decoder needs.
        if pkt.seq < start.seq && pkt.rtp_time != start.rtp_time {
            return;
        }
        let Some(at) = insert_sorted(&mut self.run, pkt) else {
            return;
        };
        self.run_bytes += pkt.size();
        if pkt.keyframe_start && pkt.rtp_time != self.run[0].rtp_time {
            // A newer keyframe: restart at the first packet of its frame, which may already have been held.
            let cut = self.run[..at]
                .iter()
                .rposition(|p| p.rtp_time != pkt.rtp_time)
                .map_or(0, |i| i + 1);
            let released: usize = self.run.drain(..cut).map(|p| p.size()).sum();
            self.run_bytes -= released;
        }
        self.enforce_limit();
    }

    fn enforce_limit(&mut self) {
        if self.run_bytes > self.max_bytes {
            self.run.clear();
            self.run_bytes = 0;
            self.dropped_runs += 1;
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

/// Inserts in seq order and returns the index, or None for a duplicate. Arrival is nearly always in order,
/// so appending is checked first.
fn insert_sorted(packets: &mut Vec<SharedPacket>, pkt: &SharedPacket) -> Option<usize> {
    if packets.last().is_none_or(|last| last.seq < pkt.seq) {
        packets.push(pkt.clone());
        return Some(packets.len() - 1);
    }
    let at = packets.binary_search_by_key(&pkt.seq, |p| p.seq).err()?;
    packets.insert(at, pkt.clone());
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, is_keyframe_start};
    use crate::packet::MediaPacket;
    use crate::test_support::{packet, t0};
    use std::sync::Arc;

    const MIB: usize = 1 << 20;

    fn seqs(cache: &KeyframeCache) -> Vec<u64> {
        cache.run().map(|p| p.seq).collect()
    }

    fn p(seq: u64, time: u64, keyframe: bool) -> SharedPacket {
        packet(seq, time, 100, keyframe, t0())
    }

    /// An H264 packet classified the way the gateway's producer does it.
    fn h264(seq: u64, time: u64, payload: &[u8]) -> SharedPacket {
        Arc::new(MediaPacket {
            seq,
            rtp_time: time,
            marker: false,
            pt: 96,
            payload: payload.into(),
            keyframe_start: is_keyframe_start(Codec::H264, payload),
            received: t0(),
        })
    }

    #[test]
    fn nothing_before_the_first_keyframe() {
        let mut cache = KeyframeCache::new(MIB);
        for seq in 0..10 {
            cache.push(&p(seq, seq / 3 * 3000, false));
        }
        assert!(!cache.has_keyframe());
        assert_eq!(cache.run().count(), 0);
    }

    #[test]
    fn run_starts_at_keyframe_and_follows_it() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, false));
        cache.push(&p(2, 3000, true));
        cache.push(&p(3, 3000, false));
        cache.push(&p(4, 6000, false));
        assert!(cache.has_keyframe());
        assert_eq!(seqs(&cache), vec![2, 3, 4]);
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn starts_at_sps_packet_before_idr() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&h264(100, 0, &[0x41, 0x9a])); // P slice of the previous GOP
        cache.push(&h264(101, 3000, &[0x67, 0x42, 0xc0, 0x1f])); // SPS
        cache.push(&h264(102, 3000, &[0x68, 0xce, 0x3c, 0x80])); // PPS
        cache.push(&h264(103, 3000, &[0x7c, 0x85, 0x88])); // IDR FU-A start: same frame, no restart
        cache.push(&h264(104, 3000, &[0x7c, 0x05, 0x11]));
        cache.push(&h264(105, 3000, &[0x7c, 0x45, 0x22]));
        cache.push(&h264(106, 6000, &[0x41, 0x9b]));
        assert_eq!(seqs(&cache), vec![101, 102, 103, 104, 105, 106]);
    }

    #[test]
    fn starts_at_first_packet_of_the_keyframe_frame() {
        // AUD and SEI are not keyframe starts, but they open the frame the IDR belongs to.
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&h264(10, 0, &[0x41, 0x9a]));
        cache.push(&h264(11, 3000, &[0x09, 0xf0])); // AUD
        cache.push(&h264(12, 3000, &[0x06, 0x05, 0x01])); // SEI
        cache.push(&h264(13, 3000, &[0x65, 0x88])); // IDR
        assert_eq!(seqs(&cache), vec![11, 12, 13]);
    }

    #[test]
    fn pending_forgets_earlier_frames() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, false));
        cache.push(&p(2, 0, false));
        cache.push(&p(3, 3000, false));
        cache.push(&p(4, 3000, true));
        assert_eq!(seqs(&cache), vec![3, 4]);
        assert_eq!(cache.bytes(), 200);
    }

    #[test]
    fn reordered_fragments_while_waiting() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(5, 3000, false)); // IDR middle fragment overtook the start
        cache.push(&p(4, 3000, true));
        cache.push(&p(6, 3000, false));
        assert_eq!(seqs(&cache), vec![4, 5, 6]);
    }

    #[test]
    fn late_keyframe_of_an_old_frame_does_not_start_a_run() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(10, 6000, false));
        cache.push(&p(5, 3000, true)); // a retransmission from a GOP we never held
        assert!(!cache.has_keyframe());
        cache.push(&p(11, 6000, false));
        assert!(!cache.has_keyframe());
        assert_eq!(cache.bytes(), 200);
    }

    #[test]
    fn newer_keyframe_replaces_the_run() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, true));
        for seq in 2..10 {
            cache.push(&p(seq, seq * 3000, false));
        }
        cache.push(&p(10, 30_000, true));
        cache.push(&p(11, 30_000, false));
        cache.push(&p(12, 33_000, false));
        assert_eq!(seqs(&cache), vec![10, 11, 12]);
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn newer_keyframe_keeps_its_leading_packets() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, true));
        cache.push(&p(2, 3000, false));
        cache.push(&p(3, 6000, false)); // SEI of the next keyframe's frame
        cache.push(&p(4, 6000, false)); // PPS
        cache.push(&p(5, 6000, true)); // IDR
        assert_eq!(seqs(&cache), vec![3, 4, 5]);
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn keyframe_start_repaired_by_retransmission() {
        // The IDR's first packet was lost; its other fragments and a later frame arrived before the repair.
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, true));
        cache.push(&p(2, 3000, false));
        cache.push(&p(3, 3000, false));
        cache.push(&p(5, 6000, false));
        cache.push(&p(6, 6000, false));
        cache.push(&p(7, 9000, false));
        cache.push(&p(4, 6000, true));
        assert_eq!(seqs(&cache), vec![4, 5, 6, 7]);
        assert_eq!(cache.bytes(), 400);
    }

    #[test]
    fn retransmission_fills_hole_in_place() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(20, 0, true));
        cache.push(&p(21, 0, false));
        cache.push(&p(23, 3000, false));
        cache.push(&p(24, 6000, false));
        cache.push(&p(22, 3000, false));
        assert_eq!(seqs(&cache), vec![20, 21, 22, 23, 24]);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(1, 0, true));
        cache.push(&p(2, 0, false));
        cache.push(&p(2, 0, false));
        cache.push(&p(1, 0, true));
        assert_eq!(seqs(&cache), vec![1, 2]);
        assert_eq!(cache.bytes(), 200);
    }

    #[test]
    fn late_packets_before_the_run_are_ignored() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(10, 3000, true));
        cache.push(&p(11, 6000, false));
        cache.push(&p(9, 0, false));
        cache.push(&p(8, 0, true));
        assert_eq!(seqs(&cache), vec![10, 11]);
    }

    #[test]
    fn reordered_packet_of_the_keyframe_frame_is_kept() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(10, 3000, true)); // IDR overtook its SPS
        cache.push(&p(11, 3000, false));
        cache.push(&p(9, 3000, true)); // SPS
        assert_eq!(seqs(&cache), vec![9, 10, 11]);
    }

    #[test]
    fn gop_over_budget_is_dropped_until_next_keyframe() {
        let mut cache = KeyframeCache::new(1000);
        cache.push(&p(1, 0, true));
        for seq in 2..=10 {
            cache.push(&p(seq, seq * 3000, false));
        }
        assert_eq!(cache.bytes(), 1000, "exactly at the budget is kept");
        assert_eq!(cache.dropped_runs(), 0);
        cache.push(&p(11, 33_000, false));
        assert!(!cache.has_keyframe());
        assert_eq!(cache.run().count(), 0);
        assert_eq!(cache.dropped_runs(), 1);
        // The rest of the GOP is not collected.
        cache.push(&p(12, 36_000, false));
        assert!(!cache.has_keyframe());
        cache.push(&p(13, 39_000, true));
        cache.push(&p(14, 42_000, false));
        assert_eq!(seqs(&cache), vec![13, 14]);
        assert_eq!(cache.dropped_runs(), 1);
    }

    #[test]
    fn keyframe_larger_than_budget_counts_each_time() {
        let mut cache = KeyframeCache::new(150);
        cache.push(&p(1, 0, true));
        cache.push(&p(2, 0, false));
        assert_eq!(cache.dropped_runs(), 1);
        cache.push(&p(3, 3000, true));
        cache.push(&p(4, 3000, false));
        assert_eq!(cache.dropped_runs(), 2);
        assert!(!cache.has_keyframe());
        assert!(cache.bytes() <= 150);
    }

    #[test]
    fn pending_frame_is_bounded_too() {
        let mut cache = KeyframeCache::new(250);
        for seq in 0..5 {
            cache.push(&p(seq, 3000, false));
        }
        assert!(cache.bytes() <= 250);
    }

    #[test]
    fn clear_forgets_the_publisher_but_keeps_counting() {
        let mut cache = KeyframeCache::new(150);
        cache.push(&p(1, 0, true));
        cache.push(&p(2, 0, false));
        cache.push(&p(3, 3000, true));
        assert_eq!(cache.dropped_runs(), 1);
        cache.clear();
        assert!(!cache.has_keyframe());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.dropped_runs(), 1);
        // A new publisher's lower sequence space starts a run normally.
        cache.push(&p(0, 90, true));
        assert_eq!(seqs(&cache), vec![0]);
    }

    #[test]
    fn extended_sequence_numbers_across_u16_wrap() {
        let mut cache = KeyframeCache::new(MIB);
        cache.push(&p(65_534, 0, true));
        cache.push(&p(65_535, 0, false));
        cache.push(&p(65_537, 3000, false));
        cache.push(&p(65_536, 3000, false));
        assert_eq!(seqs(&cache), vec![65_534, 65_535, 65_536, 65_537]);
    }

    #[test]
    fn run_shares_packets_rather_than_copying() {
        let mut cache = KeyframeCache::new(MIB);
        let k = p(1, 0, true);
        cache.push(&k);
        assert!(Arc::ptr_eq(cache.run().next().unwrap(), &k));
    }
}
