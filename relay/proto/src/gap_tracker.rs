//! Loss detection on one track's link from its parent, and the NACKs that repair it.
//!
//! Every hop of a tree repairs its own link: it notices sequence numbers that did not arrive,
//! waits a little in case they were only reordered, asks its parent for them, asks again spaced
//! by the link's round-trip time, and gives up at a deadline (a packet that late is useless to a
//! live viewer). Because a hop asks once for what it misses, however many children and viewers
//! below it miss the same packet, the parent sees one NACK per hop, not one per viewer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How patient repair is.
#[derive(Debug, Clone, Copy)]
pub struct RepairConfig {
    /// Time a gap is left alone first, since a packet overtaken on the way is not lost.
    pub reorder_delay: Duration,
    /// Retries are spaced by the RTT, but never closer than this.
    pub min_retry_interval: Duration,
    /// NACKs sent for one packet at most.
    pub max_nacks: u32,
    /// A packet missing for longer than this is given up.
    pub give_up_after: Duration,
    /// A jump forward of more than this many sequence numbers is a restart, not loss.
    pub max_gap: u64,
    /// Missing packets tracked at most (older ones are given up first).
    pub max_missing: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            reorder_delay: Duration::from_millis(5),
            min_retry_interval: Duration::from_millis(10),
            max_nacks: 10,
            give_up_after: Duration::from_millis(1000),
            // Seconds of video at high packet rates: a re-parent's outage must still be repaired.
            max_gap: 5000,
            max_missing: 5000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    next_nack: Instant,
    nacks: u32,
}

/// What repair did, for the node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Sequence numbers found missing.
    pub detected: u64,
    /// Missing packets that arrived later (reordered or repaired).
    pub recovered: u64,
    /// Sequence numbers NACKed (each retry counts).
    pub nacks_sent: u64,
    /// Missing packets given up.
    pub lost: u64,
    /// Forward jumps treated as a restart.
    pub restarts: u64,
    /// Packets that arrived twice.
    pub duplicates: u64,
}

/// Gap detection and NACK scheduling for one track on one link.
#[derive(Debug)]
pub struct GapTracker {
    config: RepairConfig,
    highest: Option<u64>,
    /// Where the parent said its first packet would be, before any arrived.
    expected_first: Option<u64>,
    missing: BTreeMap<u64, Missing>,
    stats: RepairStats,
}

/// How a received packet relates to what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// In order or ahead (gaps before it are now being repaired).
    New,
    /// Fills a gap: a repair or a reordered packet.
    Recovered,
    /// Seen before, or too old to matter.
    Duplicate,
}

impl GapTracker {
    /// A tracker that has received nothing yet.
    pub fn new(config: RepairConfig) -> Self {
        GapTracker {
            config,
            highest: None,
            expected_first: None,
            missing: BTreeMap::new(),
            stats: RepairStats::default(),
        }
    }

    /// Note a packet from the parent.
    pub fn on_packet(&mut self, seq: u64, now: Instant) -> Arrival {
        let Some(highest) = self.highest else {
            if let Some(first) = self.expected_first.take() {
                // The stream was announced to start at `first`: what came before `seq` was lost.
                if seq > first && seq - first <= self.config.max_gap {
                    let first_nack = now + self.config.reorder_delay;
                    for s in first..seq {
                        self.missing.insert(
                            s,
                            Missing {
                                since: now,
                                next_nack: first_nack,
                                nacks: 0,
                            },
                        );
                    }
                    self.stats.detected += seq - first;
                }
            }
            self.highest = Some(seq);
            return Arrival::New;
        };
        if seq <= highest {
            return if self.missing.remove(&seq).is_some() {
                self.stats.recovered += 1;
                Arrival::Recovered
            } else {
                self.stats.duplicates += 1;
                Arrival::Duplicate
            };
        }
        let gap = seq - highest - 1;
        if gap > self.config.max_gap {
            // A publisher restart or a long outage: what was missing is gone for good.
            self.stats.restarts += 1;
            self.stats.lost += self.missing.len() as u64;
            self.missing.clear();
        } else {
            let first_nack = now + self.config.reorder_delay;
            for s in highest + 1..seq {
                self.missing.insert(
                    s,
                    Missing {
                        since: now,
                        next_nack: first_nack,
                        nacks: 0,
                    },
                );
            }
            self.stats.detected += gap;
            while self.missing.len() > self.config.max_missing {
                self.missing.pop_first();
                self.stats.lost += 1;
            }
        }
        self.highest = Some(seq);
        Arrival::New
    }

    /// Sequence numbers to NACK now; `rtt` is the link's current round-trip time.
    pub fn poll_nacks(&mut self, now: Instant, rtt: Duration) -> Vec<u64> {
        let give_up = self.config.give_up_after;
        let before = self.missing.len();
        self.missing
            .retain(|_, m| now.saturating_duration_since(m.since) < give_up);
        let mut out = Vec::new();
        let spacing = rtt.max(self.config.min_retry_interval);
        let max_nacks = self.config.max_nacks;
        self.missing.retain(|seq, m| {
            if m.next_nack > now {
                return true;
            }
            if m.nacks >= max_nacks {
                return false;
            }
            m.nacks += 1;
            m.next_nack = now + spacing;
            out.push(*seq);
            true
        });
        self.stats.lost += (before - self.missing.len()) as u64;
        self.stats.nacks_sent += out.len() as u64;
        out
    }

    /// When `poll_nacks` has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let give_up = self.config.give_up_after;
        self.missing
            .values()
            .map(|m| m.next_nack.min(m.since + give_up))
            .min()
    }

    /// The sender announced that its first packet is `seq`: before anything has arrived, this
    /// lets the loss of the very first packets be noticed and repaired too.
    pub fn expect_from(&mut self, seq: u64, _now: Instant) {
        if self.highest.is_none() {
            self.expected_first = Some(seq);
        }
    }

    /// Is this sequence number known to be missing (a repair is under way)?
    pub fn is_missing(&self, seq: u64) -> bool {
        self.missing.contains_key(&seq)
    }

    /// Sequence numbers currently missing and being repaired.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// The highest sequence number received so far; `None` before the first packet.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// What repair has done so far.
    pub fn stats(&self) -> RepairStats {
        self.stats
    }

    /// The parent changed (re-parenting): its sequence space is the same track's, so keep
    /// tracking, but retry what is missing right away against the new parent.
    pub fn parent_changed(&mut self, now: Instant) {
        for m in self.missing.values_mut() {
            m.next_nack = now;
            m.nacks = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at_ms, t0};

    fn tracker() -> GapTracker {
        GapTracker::new(RepairConfig::default())
    }

    #[test]
    fn in_order_packets_need_no_repair() {
        let mut g = tracker();
        for s in 100..200 {
            assert_eq!(g.on_packet(s, t0()), Arrival::New);
        }
        assert!(
            g.poll_nacks(at_ms(100), Duration::from_millis(20))
                .is_empty()
        );
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.stats(), RepairStats::default());
    }

    #[test]
    fn a_reordered_packet_is_not_nacked() {
        let mut g = tracker();
        g.on_packet(1, t0());
        g.on_packet(3, t0());
        assert!(
            g.poll_nacks(at_ms(1), Duration::from_millis(20)).is_empty(),
            "inside the reorder delay"
        );
        assert_eq!(g.on_packet(2, at_ms(2)), Arrival::Recovered);
        assert!(
            g.poll_nacks(at_ms(10), Duration::from_millis(20))
                .is_empty()
        );
        assert_eq!(g.stats().recovered, 1);
        assert_eq!(g.stats().nacks_sent, 0);
    }

    #[test]
    fn a_loss_is_nacked_after_the_reorder_delay_then_retried_by_rtt() {
        let mut g = tracker();
        g.on_packet(1, t0());
        g.on_packet(4, t0());
        assert_eq!(g.poll_timeout(), Some(at_ms(5)));
        assert_eq!(
            g.poll_nacks(at_ms(5), Duration::from_millis(30)),
            vec![2, 3]
        );
        assert!(
            g.poll_nacks(at_ms(20), Duration::from_millis(30))
                .is_empty(),
            "not before one RTT"
        );
        assert_eq!(g.poll_timeout(), Some(at_ms(35)));
        g.on_packet(2, at_ms(30));
        assert_eq!(g.poll_nacks(at_ms(35), Duration::from_millis(30)), vec![3]);
        assert_eq!(g.stats().nacks_sent, 3);
        assert_eq!(g.stats().recovered, 1);
        assert!(g.is_missing(3) && !g.is_missing(2));
    }

    #[test]
    fn retries_are_bounded_and_old_losses_given_up() {
        let config = RepairConfig {
            max_nacks: 3,
            ..RepairConfig::default()
        };
        let mut g = GapTracker::new(config);
        g.on_packet(1, t0());
        g.on_packet(3, t0());
        let mut sent = 0;
        for ms in (5..500).step_by(10) {
            sent += g.poll_nacks(at_ms(ms), Duration::from_millis(10)).len();
        }
        assert_eq!(sent, 3);
        assert_eq!(g.missing(), 0);
        assert_eq!(g.stats().lost, 1);

        let mut g = tracker();
        g.on_packet(1, t0());
        g.on_packet(3, t0());
        g.poll_nacks(at_ms(1500), Duration::from_millis(10));
        assert_eq!(g.stats().lost, 1, "past give_up_after nothing is asked");
        assert_eq!(g.stats().nacks_sent, 0);
    }

    #[test]
    fn a_huge_jump_is_a_restart_and_memory_is_bounded() {
        let mut g = tracker();
        g.on_packet(1, t0());
        g.on_packet(5, t0());
        g.on_packet(1_000_000, t0());
        assert_eq!(g.stats().restarts, 1);
        assert_eq!(g.missing(), 0);
        let config = RepairConfig {
            max_missing: 10,
            ..RepairConfig::default()
        };
        let mut g = GapTracker::new(config);
        g.on_packet(0, t0());
        g.on_packet(500, t0());
        assert_eq!(g.missing(), 10);
        assert!(
            g.is_missing(499) && !g.is_missing(1),
            "the newest gaps are kept"
        );
    }

    #[test]
    fn duplicates_and_old_packets_are_told_apart() {
        let mut g = tracker();
        g.on_packet(10, t0());
        assert_eq!(g.on_packet(10, t0()), Arrival::Duplicate);
        assert_eq!(g.on_packet(3, t0()), Arrival::Duplicate);
        assert_eq!(g.stats().duplicates, 2);
    }

    #[test]
    fn a_lost_first_packet_is_repaired_when_the_start_was_announced() {
        let mut g = tracker();
        g.expect_from(100, t0());
        g.on_packet(102, t0());
        assert!(g.is_missing(100) && g.is_missing(101));
        assert_eq!(
            g.poll_nacks(at_ms(5), Duration::from_millis(20)),
            vec![100, 101]
        );
        assert_eq!(g.on_packet(100, at_ms(6)), Arrival::Recovered);
        let mut g = tracker();
        g.expect_from(100, t0());
        g.on_packet(100, t0());
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_new_parent_is_asked_at_once() {
        let mut g = tracker();
        g.on_packet(1, t0());
        g.on_packet(3, t0());
        assert_eq!(g.poll_nacks(at_ms(5), Duration::from_millis(100)), vec![2]);
        g.parent_changed(at_ms(6));
        assert_eq!(g.poll_nacks(at_ms(6), Duration::from_millis(100)), vec![2]);
    }
}
