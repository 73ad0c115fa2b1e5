//! The packet cache: the last second or two of one track's packets at this node, so that a NACK is answered
//! by the nearest hop that still holds the packet instead of travelling back to the publisher.

use crate::packet::SharedPacket;
use std::time::{Duration, Instant};

/// Bounds on one track's [`PacketCache`]: past any of them the oldest packets are evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Packets held at most.
    pub max_packets: usize,
    /// Payload bytes; a packet's header and bookkeeping are small and constant, so they are not budgeted.
    pub max_bytes: usize,
    /// Packets received longer ago than this are evicted.
    pub max_age: Duration,
}

/// Slots a new ring starts with.
const INITIAL_SLOTS: usize = 64;

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_packets: 4096,
            max_bytes: 8 * 1024 * 1024,
            max_age: Duration::from_secs(2),
        }
    }
}

/// Recent packets of one track, indexed by extended sequence number, bounded by count, bytes and age. Answers NACKs.
///
/// A ring of slots indexed by `seq % capacity`. Every stored packet lies within one window of `capacity`
/// consecutive sequence numbers ending at the highest one, so no two stored packets share a slot and the
/// packet count bound holds by construction.
///
/// The ring starts at `INITIAL_SLOTS` and doubles (up to `max_packets`) only when the packets the limits
/// allow no longer fit: an audio track settles at a few hundred slots, and a session that never sends —
/// a half-open WHIP POST, thousands of them in a flood — holds a few hundred bytes, not `max_packets`.
#[derive(Debug)]
pub struct PacketCache {
    limits: CacheLimits,
    slots: Box<[Option<SharedPacket>]>,
    /// Highest sequence number accepted since the last reset, even if it has since been evicted.
    head: Option<u64>,
    /// No stored packet is below this; lets eviction find the oldest packet without scanning the whole ring.
    tail: u64,
    /// Packets below this were evicted on purpose; a late retransmission must not bring them back.
    floor: u64,
    len: usize,
    bytes: usize,
}

impl PacketCache {
    /// An empty cache with these limits (its ring starts small and grows as needed).
    pub fn new(limits: CacheLimits) -> Self {
        let capacity = limits.max_packets.clamp(1, INITIAL_SLOTS);
        PacketCache {
            limits,
            slots: vec![None; capacity].into_boxed_slice(),
            head: None,
            tail: 0,
            floor: 0,
            len: 0,
            bytes: 0,
        }
    }

    /// Stores a packet. Duplicates and packets older than the window are ignored; a jump of at least a whole
    /// window ahead (a source restart or a long outage) empties the ring rather than evicting slot by slot.
    pub fn insert(&mut self, pkt: SharedPacket, now: Instant) {
        let seq = pkt.seq;
        self.grow_for(seq);
        let capacity = self.capacity();
        match self.head {
            Some(head) if seq > head => {
                if seq - head >= capacity {
                    self.clear();
                } else {
                    self.evict_below((seq + 1).saturating_sub(capacity));
                }
                self.head = Some(seq);
            }
            Some(head) => {
                if head - seq >= capacity || seq < self.floor || self.get(seq).is_some() {
                    return;
                }
            }
            None => self.head = Some(seq),
        }
        self.place(pkt);
        self.evict_to_limits(now);
    }

    /// The packet with this extended sequence number, if still held.
    pub fn get(&self, seq: u64) -> Option<&SharedPacket> {
        let slot = self.slots[self.slot_of(seq)].as_ref()?;
        (slot.seq == seq).then_some(slot)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no packet is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The highest sequence number accepted since the cache was created or reset (even if since evicted by
    /// age or bytes), so gap detection keeps working across an idle period.
    pub fn highest_seq(&self) -> Option<u64> {
        self.head
    }

    /// Applies the age limit without inserting; for a track that has gone quiet, so its packets do not
    /// linger and answer NACKs long after they are useful.
    pub fn expire(&mut self, now: Instant) {
        self.evict_to_limits(now);
    }

    /// Forgets everything, e.g. when the publisher is replaced and a new sequence space begins.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.head = None;
        self.tail = 0;
        self.floor = 0;
        self.len = 0;
        self.bytes = 0;
    }

    /// Doubles the ring (up to `max_packets`) until the window from the lowest packet held (or `seq`) to
    /// the highest sequence number (or `seq`) fits, so that a small ring keeps exactly what a full-size one
    /// would.
    fn grow_for(&mut self, seq: u64) {
        let max = self.limits.max_packets.max(1) as u64;
        let Some(head) = self.head else {
            return;
        };
        let low = if self.len > 0 {
            self.tail.min(seq)
        } else {
            seq.min(head)
        };
        let span = head.max(seq) - low;
        let mut capacity = self.capacity();
        while span >= capacity && capacity < max {
            capacity = (capacity * 2).min(max);
        }
        if capacity == self.capacity() {
            return;
        }
        let mut slots = vec![None; capacity as usize].into_boxed_slice();
        for p in self.slots.iter_mut().filter_map(Option::take) {
            let slot = (p.seq % capacity) as usize;
            slots[slot] = Some(p);
        }
        self.slots = slots;
    }

    /// Slots the ring has now (grows toward `max_packets`).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    fn slot_of(&self, seq: u64) -> usize {
        (seq % self.capacity()) as usize
    }

    fn place(&mut self, pkt: SharedPacket) {
        if self.len == 0 || pkt.seq < self.tail {
            self.tail = pkt.seq;
        }
        self.len += 1;
        self.bytes += pkt.size();
        let slot = self.slot_of(pkt.seq);
        self.slots[slot] = Some(pkt);
    }

    fn evict_below(&mut self, min_seq: u64) {
        while self.len > 0 && self.tail < min_seq {
            let slot = self.slot_of(self.tail);
            if self.slots[slot]
                .as_ref()
                .is_some_and(|p| p.seq == self.tail)
            {
                self.remove(slot);
            }
            self.tail += 1;
        }
        self.floor = self.floor.max(min_seq);
    }

    fn evict_to_limits(&mut self, now: Instant) {
        while let Some((seq, received)) = self.oldest() {
            let too_old = now.saturating_duration_since(received) > self.limits.max_age;
            if !too_old && self.bytes <= self.limits.max_bytes {
                break;
            }
            self.remove(self.slot_of(seq));
            self.tail = seq + 1;
            self.floor = self.floor.max(self.tail);
        }
    }

    /// The lowest-numbered packet held. Age is judged on it alone: packets mostly arrive in order, and a late
    /// retransmission can delay age eviction by at most one max_age while count and bytes still bound memory.
    fn oldest(&mut self) -> Option<(u64, Instant)> {
        if self.len == 0 {
            return None;
        }
        // Terminates: a stored packet exists within tail..=head.
        loop {
            let slot = self.slot_of(self.tail);
            if let Some(p) = self.slots[slot].as_ref().filter(|p| p.seq == self.tail) {
                return Some((p.seq, p.received));
            }
            self.tail += 1;
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(p) = self.slots[slot].take() {
            self.len -= 1;
            self.bytes -= p.size();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at_ms, packet, t0};

    fn limits(max_packets: usize, max_bytes: usize, max_age_ms: u64) -> CacheLimits {
        CacheLimits {
            max_packets,
            max_bytes,
            max_age: Duration::from_millis(max_age_ms),
        }
    }

    fn roomy(max_packets: usize) -> PacketCache {
        PacketCache::new(limits(max_packets, usize::MAX, 60_000))
    }

    fn held(cache: &PacketCache, seqs: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        seqs.filter(|&s| cache.get(s).is_some()).collect()
    }

    #[test]
    fn the_ring_starts_small_and_grows_to_what_the_limits_allow() {
        let mut cache = roomy(4096);
        assert_eq!(
            cache.slots(),
            INITIAL_SLOTS,
            "a track that never sends holds a small ring"
        );
        for seq in 0..1000 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        assert_eq!(cache.slots(), 1024);
        assert_eq!(cache.len(), 1000, "nothing lost while growing");
        assert_eq!(held(&cache, 0..=999).len(), 1000);
        for seq in 1000..10_000 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        assert_eq!(cache.slots(), 4096, "never past max_packets");
        assert_eq!(
            held(&cache, 0..=9_999),
            (10_000 - 4096..10_000).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_small_ring_keeps_what_a_full_one_would() {
        // A late packet 3000 behind the head still fits a 4096 window.
        let mut small = roomy(4096);
        small.insert(packet(5000, 0, 10, false, t0()), t0());
        small.insert(packet(2000, 0, 10, false, t0()), t0());
        assert_eq!(held(&small, 0..=6000), vec![2000, 5000]);
        // An age-limited audio track stays small.
        let mut audio = PacketCache::new(limits(4096, usize::MAX, 2_000));
        for seq in 0..1_000u64 {
            audio.insert(packet(seq, 0, 10, false, at_ms(seq * 20)), at_ms(seq * 20));
        }
        assert!(
            audio.slots() <= 128,
            "50 packets/s for 2 s: {} slots",
            audio.slots()
        );
    }

    #[test]
    fn default_limits() {
        let d = CacheLimits::default();
        assert_eq!(d.max_packets, 4096);
        assert_eq!(d.max_bytes, 8 << 20);
        assert_eq!(d.max_age, Duration::from_secs(2));
    }

    #[test]
    fn insert_and_get() {
        let mut cache = roomy(16);
        assert!(cache.is_empty());
        assert_eq!(cache.highest_seq(), None);
        for seq in 100..110 {
            cache.insert(packet(seq, seq * 3000, 100, false, t0()), t0());
        }
        assert_eq!(cache.len(), 10);
        assert_eq!(cache.bytes(), 1000);
        assert_eq!(cache.highest_seq(), Some(109));
        assert_eq!(cache.get(105).map(|p| p.rtp_time), Some(315_000));
        assert!(cache.get(99).is_none());
        assert!(cache.get(110).is_none());
        // Same slot as 105 (105 + 16) but a different sequence number.
        assert!(cache.get(121).is_none());
    }

    #[test]
    fn get_returns_the_shared_packet() {
        let mut cache = roomy(16);
        let p = packet(5, 0, 10, false, t0());
        cache.insert(p.clone(), t0());
        assert!(std::sync::Arc::ptr_eq(cache.get(5).unwrap(), &p));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut cache = roomy(16);
        let first = packet(7, 1, 100, false, t0());
        cache.insert(first.clone(), t0());
        cache.insert(packet(7, 2, 300, false, t0()), t0());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 100);
        assert!(std::sync::Arc::ptr_eq(cache.get(7).unwrap(), &first));
    }

    #[test]
    fn evicts_by_count() {
        let mut cache = roomy(8);
        for seq in 0..20 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        assert_eq!(cache.len(), 8);
        assert_eq!(cache.bytes(), 80);
        assert_eq!(held(&cache, 0..=19), (12..=19).collect::<Vec<_>>());
    }

    #[test]
    fn count_window_is_by_sequence_not_arrivals() {
        let mut cache = roomy(8);
        for seq in [0, 2, 4, 6] {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        // 9 pushes the window to 2..=9: only 0 falls out.
        cache.insert(packet(9, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=9), vec![2, 4, 6, 9]);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn evicts_by_bytes_oldest_first() {
        let mut cache = PacketCache::new(limits(100, 1000, 60_000));
        for seq in 0..10 {
            cache.insert(packet(seq, 0, 300, false, t0()), t0());
        }
        assert_eq!(cache.bytes(), 900);
        assert_eq!(held(&cache, 0..=9), vec![7, 8, 9]);
        // A big packet pushes out as many as needed.
        cache.insert(packet(10, 0, 800, false, t0()), t0());
        assert_eq!(held(&cache, 0..=10), vec![10]);
        assert_eq!(cache.bytes(), 800);
    }

    #[test]
    fn packet_larger_than_budget_is_not_kept() {
        let mut cache = PacketCache::new(limits(100, 500, 60_000));
        cache.insert(packet(1, 0, 501, false, t0()), t0());
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.highest_seq(), Some(1));
        cache.insert(packet(2, 0, 500, false, t0()), t0());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn evicts_by_age_on_insert() {
        let mut cache = PacketCache::new(limits(100, usize::MAX, 1000));
        for seq in 0..10 {
            cache.insert(
                packet(seq, 0, 10, false, at_ms(seq * 100)),
                at_ms(seq * 100),
            );
        }
        assert_eq!(cache.len(), 10);
        // At 1450 ms, packets received at or before 400 ms are older than 1 s.
        cache.insert(packet(10, 0, 10, false, at_ms(1450)), at_ms(1450));
        assert_eq!(held(&cache, 0..=10), (5..=10).collect::<Vec<_>>());
    }

    #[test]
    fn age_limit_is_inclusive() {
        let mut cache = PacketCache::new(limits(100, usize::MAX, 1000));
        cache.insert(packet(0, 0, 10, false, at_ms(0)), at_ms(0));
        cache.insert(packet(1, 0, 10, false, at_ms(1000)), at_ms(1000));
        assert!(cache.get(0).is_some(), "exactly max_age old is still kept");
        cache.insert(packet(2, 0, 10, false, at_ms(1001)), at_ms(1001));
        assert!(cache.get(0).is_none());
    }

    #[test]
    fn expire_without_inserting() {
        let mut cache = PacketCache::new(limits(100, usize::MAX, 1000));
        for seq in 0..5 {
            cache.insert(
                packet(seq, 0, 10, false, at_ms(seq * 100)),
                at_ms(seq * 100),
            );
        }
        cache.expire(at_ms(1250));
        assert_eq!(held(&cache, 0..=4), vec![3, 4]);
        cache.expire(at_ms(10_000));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.highest_seq(), Some(4));
        // The track resumes where it left off.
        cache.insert(packet(5, 0, 10, false, at_ms(10_000)), at_ms(10_000));
        assert_eq!(held(&cache, 0..=5), vec![5]);
    }

    #[test]
    fn clock_going_backwards_does_not_evict_or_panic() {
        let mut cache = PacketCache::new(limits(100, usize::MAX, 1000));
        cache.insert(packet(0, 0, 10, false, at_ms(5000)), at_ms(5000));
        cache.insert(packet(1, 0, 10, false, at_ms(0)), at_ms(0));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn late_packet_fills_hole() {
        let mut cache = roomy(16);
        for seq in [10, 11, 13, 14] {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        cache.insert(packet(12, 0, 10, false, t0()), t0());
        // Arrived before the first packet seen, but still within the window.
        cache.insert(packet(5, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=20), vec![5, 10, 11, 12, 13, 14]);
        assert_eq!(cache.highest_seq(), Some(14));
    }

    #[test]
    fn packet_older_than_window_is_ignored() {
        let mut cache = roomy(16);
        cache.insert(packet(100, 0, 10, false, t0()), t0());
        cache.insert(packet(84, 0, 10, false, t0()), t0()); // exactly one window back: same slot as 100
        cache.insert(packet(3, 0, 10, false, t0()), t0());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(100).is_some());
        cache.insert(packet(85, 0, 10, false, t0()), t0()); // just inside
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn evicted_packets_do_not_come_back() {
        let mut cache = PacketCache::new(limits(100, 250, 60_000));
        for seq in 0..5 {
            cache.insert(packet(seq, 0, 100, false, t0()), t0());
        }
        assert_eq!(held(&cache, 0..=4), vec![3, 4]);
        // A late retransmission of an evicted packet would just push out newer ones.
        cache.insert(packet(1, 0, 100, false, t0()), t0());
        assert_eq!(held(&cache, 0..=4), vec![3, 4]);
    }

    #[test]
    fn big_jump_resets_the_ring() {
        let mut cache = roomy(16);
        for seq in 0..10 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        cache.insert(packet(1_000_000, 0, 10, false, t0()), t0());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 10);
        assert_eq!(cache.highest_seq(), Some(1_000_000));
        assert!(cache.get(0).is_none());
        // Packets after the jump that fill in below it are fine.
        cache.insert(packet(999_999, 0, 10, false, t0()), t0());
        cache.insert(packet(1_000_001, 0, 10, false, t0()), t0());
        assert_eq!(
            held(&cache, 999_990..=1_000_010),
            vec![999_999, 1_000_000, 1_000_001]
        );
        // Stragglers from before the jump are far too old.
        cache.insert(packet(10, 0, 10, false, t0()), t0());
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn jump_of_exactly_one_window() {
        let mut cache = roomy(8);
        for seq in 0..8 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        cache.insert(packet(15, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=15), vec![8 + 7]);
        assert_eq!(cache.len(), 1);
        cache.insert(packet(16, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=16), vec![15, 16]);
    }

    #[test]
    fn sequence_numbers_across_u16_wrap() {
        let mut cache = roomy(64);
        // Extended sequence numbers continue past 65535, so the ring treats the wrap as ordinary.
        for seq in 65_530..65_546 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        assert_eq!(cache.len(), 16);
        assert_eq!(cache.get(65_535).map(|p| p.seq), Some(65_535));
        assert_eq!(cache.get(65_536).map(|p| p.seq), Some(65_536));
        assert!(cache.get(0).is_none());
    }

    #[test]
    fn zero_capacity_is_treated_as_one() {
        let mut cache = PacketCache::new(limits(0, usize::MAX, 60_000));
        cache.insert(packet(1, 0, 10, false, t0()), t0());
        cache.insert(packet(2, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=3), vec![2]);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut cache = roomy(16);
        for seq in 50..60 {
            cache.insert(packet(seq, 0, 10, false, t0()), t0());
        }
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.highest_seq(), None);
        // A new publisher's lower sequence space is accepted.
        cache.insert(packet(3, 0, 10, false, t0()), t0());
        assert_eq!(held(&cache, 0..=60), vec![3]);
    }

    #[test]
    fn bookkeeping_stays_consistent_under_mixed_load() {
        let mut cache = PacketCache::new(limits(32, 2000, 500));
        let mut state = 12345u64;
        let mut seq = 1000u64;
        for step in 0..5000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let r = state >> 33;
            // Mostly forward, some reordering, some repeats.
            let s = match r % 10 {
                0 => seq.saturating_sub(r % 40),
                1 => seq,
                _ => {
                    seq += 1 + r % 3;
                    seq
                }
            };
            let now = at_ms(step * 7);
            cache.insert(packet(s, 0, (r % 200) as usize, false, now), now);
            let stored: Vec<_> = (seq.saturating_sub(40)..=seq)
                .filter_map(|s| cache.get(s))
                .collect();
            assert_eq!(stored.len(), cache.len());
            assert_eq!(
                stored.iter().map(|p| p.size()).sum::<usize>(),
                cache.bytes()
            );
            assert!(cache.len() <= 32);
            assert!(cache.bytes() <= 2000);
        }
    }
}
