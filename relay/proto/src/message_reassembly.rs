//! A data track's fragments back into messages, at the node whose subscribers receive them
//! (sans-IO: packets and time in, messages out).
//!
//! The tree delivers each fragment once, in arrival order: a repaired one comes late. An ordered
//! reliable channel holds back what follows a gap until the repair fills it, and gives a gap up
//! (counted) only after the tree itself has stopped asking for it, or when the held-back bytes
//! outgrow their budget, so a subscriber never waits forever and memory stays bounded. Unordered
//! channels hand each message over as soon as it is whole; ordered unreliable ones drop a
//! message that completes after a later one went out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data_track::{DataTrackParams, FragmentPlace};
use crate::packet::MediaPacket;

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// Sent as binary (else as a string), as the WebRTC message type said.
    pub binary: bool,
    /// The message's bytes.
    pub data: Arc<[u8]>,
}

/// Limits of one reassembly.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// A message still incomplete (or still waiting behind a gap) this long is given up. Longer
    /// than the tree's own repair gives up, so a repair that comes is always waited for.
    pub give_up_after: Duration,
    /// Bytes held back at most; past this the oldest gap is given up at once.
    pub max_bytes: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            give_up_after: Duration::from_millis(3500),
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a reassembly has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Messages handed over whole.
    pub delivered: u64,
    /// Messages never delivered: a fragment never came, or they came after their turn.
    pub lost: u64,
}

#[derive(Debug)]
struct Partial {
    binary: bool,
    fragments: BTreeMap<u16, Arc<[u8]>>,
    last: Option<u16>,
    first_seen: Instant,
    bytes: usize,
}

impl Partial {
    fn complete(&self) -> bool {
        self.last
            .is_some_and(|l| self.fragments.len() == usize::from(l) + 1)
    }

    fn join(self) -> DataMessage {
        let mut data = Vec::with_capacity(self.bytes);
        for f in self.fragments.values() {
            data.extend_from_slice(f);
        }
        DataMessage {
            binary: self.binary,
            data: data.into(),
        }
    }
}

/// Fragments in, messages out, for one data track at one node.
#[derive(Debug)]
pub struct Reassembly {
    params: DataTrackParams,
    limits: ReassemblyLimits,
    partials: BTreeMap<u64, Partial>,
    bytes: usize,
    /// Ordered channels: the next message to hand over (None until the first fragment).
    next: Option<u64>,
    ready: std::collections::VecDeque<DataMessage>,
    stats: ReassemblyStats,
}

impl Reassembly {
    /// A reassembly for a channel delivered as `params` says, within `limits`.
    pub fn new(params: DataTrackParams, limits: ReassemblyLimits) -> Reassembly {
        Reassembly {
            params,
            limits,
            partials: BTreeMap::new(),
            bytes: 0,
            next: None,
            ready: std::collections::VecDeque::new(),
            stats: ReassemblyStats::default(),
        }
    }

    /// What this reassembly has done so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// A fragment as the tree delivered it.
    pub fn push(&mut self, packet: &MediaPacket, now: Instant) {
        let place = FragmentPlace::of(packet);
        // A subscriber that joins mid-message starts with the next one: the tree repairs only
        // from the first fragment it saw, so this message's head would never come.
        let next = *self.next.get_or_insert(if place.index == 0 {
            place.message
        } else {
            place.message + 1
        });
        if self.params.ordered && place.message < next {
            // Its turn has passed (given up, or an ordered unreliable channel moved on).
            return;
        }
        let p = self
            .partials
            .entry(place.message)
            .or_insert_with(|| Partial {
                binary: packet.pt == 1,
                fragments: BTreeMap::new(),
                last: None,
                first_seen: now,
                bytes: 0,
            });
        if place.last {
            p.last = Some(place.index);
        }
        if p.last.is_some_and(|l| place.index > l) || p.fragments.contains_key(&place.index) {
            return;
        }
        p.bytes += packet.payload.len();
        self.bytes += packet.payload.len();
        p.fragments.insert(place.index, packet.payload.clone());
        self.release(now);
    }

    /// Gives up what has waited too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release(now);
    }

    /// When `handle_timeout` should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partials
            .values()
            .map(|p| p.first_seen + self.limits.give_up_after)
            .min()
    }

    /// The next whole message to hand to subscribers, if any.
    pub fn poll_message(&mut self) -> Option<DataMessage> {
        self.ready.pop_front()
    }

    fn take(&mut self, message: u64) -> Option<Partial> {
        let p = self.partials.remove(&message)?;
        self.bytes -= p.bytes;
        Some(p)
    }

    fn release(&mut self, now: Instant) {
        let expired = |p: &Partial, limits: &ReassemblyLimits| {
            now.saturating_duration_since(p.first_seen) >= limits.give_up_after
        };
        if !self.params.ordered {
            let done: Vec<u64> = self
                .partials
                .iter()
                .filter(|(_, p)| p.complete() || expired(p, &self.limits))
                .map(|(m, _)| *m)
                .collect();
            for m in done {
                self.hand_over_or_lose(m);
            }
            self.shed_over_budget();
            return;
        }
        loop {
            let Some(next) = self.next else {
                return;
            };
            let Some((&head, p)) = self.partials.iter().next() else {
                return;
            };
            if head == next && p.complete() {
                self.hand_over_or_lose(head);
                self.next = Some(next + 1);
                continue;
            }
            // Waiting: on a missing message (head > next), or on the head's missing fragments.
            let give_up = (!self.params.reliable && self.partials.values().any(Partial::complete))
                || expired(p, &self.limits)
                || self.bytes > self.limits.max_bytes;
            if !give_up {
                return;
            }
            if head == next {
                self.take(head);
                self.stats.lost += 1;
                self.next = Some(next + 1);
            } else {
                self.stats.lost += head - next;
                self.next = Some(head);
            }
        }
    }

    fn hand_over_or_lose(&mut self, message: u64) {
        let Some(p) = self.take(message) else {
            return;
        };
        if p.complete() {
            self.stats.delivered += 1;
            self.ready.push_back(p.join());
        } else {
            self.stats.lost += 1;
        }
    }

    /// Unordered channels over budget: the oldest incomplete messages go first.
    fn shed_over_budget(&mut self) {
        while self.bytes > self.limits.max_bytes {
            let Some(&oldest) = self.partials.keys().next() else {
                return;
            };
            self.take(oldest);
            self.stats.lost += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_track::Fragmenter;
    use crate::test_support::{at_ms, t0};

    const ORDERED: DataTrackParams = DataTrackParams {
        ordered: true,
        reliable: true,
    };

    fn messages(r: &mut Reassembly) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.poll_message())
            .map(|m| m.data.to_vec())
            .collect()
    }

    /// Messages "m0".."m{n-1}" (each `len` bytes, cut at 4 bytes) as fragments in send order.
    fn sent(n: usize, len: usize) -> (Vec<Vec<u8>>, Vec<MediaPacket>) {
        let mut f = Fragmenter::new();
        let mut bodies = Vec::new();
        let mut packets = Vec::new();
        for i in 0..n {
            let mut body = format!("m{i}").into_bytes();
            body.resize(len.max(body.len()), b'.');
            packets.extend(f.fragment(false, &body, 4, t0()).expect("fits"));
            bodies.push(body);
        }
        (bodies, packets)
    }

    #[test]
    fn in_order_fragments_give_whole_messages() {
        let (bodies, packets) = sent(5, 10);
        let mut r = Reassembly::new(ORDERED, ReassemblyLimits::default());
        for p in &packets {
            r.push(p, t0());
        }
        assert_eq!(messages(&mut r), bodies);
        assert_eq!(r.stats().delivered, 5);
        assert_eq!(r.poll_timeout(), None, "nothing held");
    }

    #[test]
    fn ordered_reliable_waits_for_the_repair_then_releases_in_order() {
        let (bodies, mut packets) = sent(4, 10);
        // A fragment of message 1 is lost and comes back (repaired) after everything else.
        let lost = packets.remove(4);
        let mut r = Reassembly::new(ORDERED, ReassemblyLimits::default());
        for p in &packets {
            r.push(p, at_ms(1));
        }
        assert_eq!(messages(&mut r), vec![bodies[0].clone()]);
        r.push(&lost, at_ms(40));
        assert_eq!(messages(&mut r), bodies[1..].to_vec());
        assert_eq!(r.stats().lost, 0);
    }

    #[test]
    fn a_gap_never_repaired_is_given_up_after_the_limit() {
        let (bodies, packets) = sent(3, 10);
        let mut r = Reassembly::new(ORDERED, ReassemblyLimits::default());
        // Every fragment of message 1 lost.
        for p in packets.iter().filter(|p| FragmentPlace::of(p).message != 1) {
            r.push(p, at_ms(1));
        }
        assert_eq!(messages(&mut r), vec![bodies[0].clone()]);
        let deadline = r.poll_timeout().expect("waiting on a gap");
        r.handle_timeout(deadline - Duration::from_millis(1));
        assert!(messages(&mut r).is_empty(), "still within the repair time");
        r.handle_timeout(deadline);
        assert_eq!(messages(&mut r), vec![bodies[2].clone()]);
        assert_eq!(r.stats().lost, 1);
        // A straggler of the given-up message is not delivered out of order.
        r.push(&packets[3], at_ms(5000));
        assert!(messages(&mut r).is_empty());
    }

    #[test]
    fn held_back_bytes_are_bounded() {
        let (_, packets) = sent(50, 10);
        let limits = ReassemblyLimits {
            give_up_after: Duration::from_secs(60),
            max_bytes: 64,
        };
        let mut r = Reassembly::new(ORDERED, limits);
        for p in packets.iter().filter(|p| FragmentPlace::of(p).message == 0) {
            r.push(p, t0());
        }
        // DataMessage 1 entirely lost; the rest pile up behind it until the budget gives it up.
        for p in packets.iter().filter(|p| FragmentPlace::of(p).message >= 2) {
            r.push(p, t0());
            assert!(r.bytes <= limits.max_bytes + 4);
        }
        assert_eq!(r.stats().lost, 1);
        assert_eq!(r.stats().delivered, 49);
    }

    #[test]
    fn unordered_hands_over_each_message_when_whole() {
        let (bodies, packets) = sent(3, 10);
        let mut r = Reassembly::new(
            DataTrackParams {
                ordered: false,
                reliable: true,
            },
            ReassemblyLimits::default(),
        );
        // DataMessage 2 arrives first, then 0, then 1.
        let of = |m: u64| {
            packets
                .iter()
                .filter(move |p| FragmentPlace::of(p).message == m)
        };
        for p in of(2).chain(of(0)).chain(of(1)) {
            r.push(p, t0());
        }
        assert_eq!(
            messages(&mut r),
            vec![bodies[2].clone(), bodies[0].clone(), bodies[1].clone()]
        );
    }

    #[test]
    fn ordered_unreliable_moves_on_and_drops_the_late() {
        let (bodies, packets) = sent(3, 10);
        let mut r = Reassembly::new(
            DataTrackParams {
                ordered: true,
                reliable: false,
            },
            ReassemblyLimits::default(),
        );
        let of = |m: u64| {
            packets
                .iter()
                .filter(move |p| FragmentPlace::of(p).message == m)
        };
        for p in of(0).chain(of(2)) {
            r.push(p, t0());
        }
        assert_eq!(messages(&mut r), vec![bodies[0].clone(), bodies[2].clone()]);
        for p in of(1) {
            r.push(p, t0());
        }
        assert!(
            messages(&mut r).is_empty(),
            "message 1 came after 2 went out"
        );
        assert_eq!(r.stats().lost, 1);
    }

    #[test]
    fn a_subscriber_joining_mid_message_starts_at_the_next() {
        let (bodies, packets) = sent(3, 10);
        let mut r = Reassembly::new(ORDERED, ReassemblyLimits::default());
        for p in packets.iter().skip(1) {
            r.push(p, t0());
        }
        assert_eq!(
            messages(&mut r),
            bodies[1..].to_vec(),
            "no wait on message 0"
        );
    }

    #[test]
    fn duplicates_and_fragments_past_the_last_are_ignored() {
        let (bodies, packets) = sent(1, 10);
        let mut r = Reassembly::new(ORDERED, ReassemblyLimits::default());
        for p in packets.iter().chain(packets.iter()) {
            r.push(p, t0());
        }
        assert_eq!(messages(&mut r), bodies);
        let mut bogus = packets[0].clone();
        bogus.rtp_time = (1 << 16) | 9;
        r.push(&bogus, t0());
        let mut last = packets[0].clone();
        last.rtp_time = 1 << 16;
        last.marker = true;
        r.push(&last, t0());
        assert_eq!(
            messages(&mut r).len(),
            0,
            "index 9 past the last fragment 0"
        );
    }
}
