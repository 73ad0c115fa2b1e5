//! NACK accounting: turns viewer NACKs into packet cache hits and misses for stats. Used by the gateway for
//! viewers without RTX, where str0m cannot answer from its own send buffer.

use crate::packet::SharedPacket;
use crate::packet_cache::PacketCache;
use crate::rewrite::Rewriter;

/// Turns viewer NACKs into cache hits/misses for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NackStats {
    /// NACKed sequence numbers handled.
    pub received: u64,
    /// Of those, the ones answered (the packet was found).
    pub answered: u64,
    /// Of those, the ones that could not be answered.
    pub missed: u64,
}

impl NackStats {
    /// Looks up one NACKed source sequence number in the cache, counting the outcome.
    pub fn lookup<'a>(
        &mut self,
        cache: &'a PacketCache,
        source_seq: u64,
    ) -> Option<&'a SharedPacket> {
        let found = cache.get(source_seq);
        self.record(found.is_some());
        found
    }

    /// The whole viewer path: maps the viewer's sequence number back through its rewriter, then looks it up.
    /// A NACK for something the viewer never got from the current source counts as missed.
    pub fn answer<'a>(
        &mut self,
        cache: &'a PacketCache,
        rewriter: &Rewriter,
        out_seq: u64,
    ) -> Option<&'a SharedPacket> {
        match rewriter.source_seq(out_seq) {
            Some(source_seq) => self.lookup(cache, source_seq),
            None => {
                self.record(false);
                None
            }
        }
    }

    /// For NACKs answered or missed elsewhere (e.g. forwarded up the tree).
    pub fn record(&mut self, answered: bool) {
        self.received += 1;
        if answered {
            self.answered += 1;
        } else {
            self.missed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet_cache::CacheLimits;
    use crate::test_support::{packet, t0};

    fn cache_with(seqs: &[u64]) -> PacketCache {
        let mut cache = PacketCache::new(CacheLimits::default());
        for &s in seqs {
            cache.insert(packet(s, 0, 10, false, t0()), t0());
        }
        cache
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = cache_with(&[10, 11, 13]);
        let mut stats = NackStats::default();
        assert_eq!(stats.lookup(&cache, 11).map(|p| p.seq), Some(11));
        assert!(stats.lookup(&cache, 12).is_none());
        assert!(stats.lookup(&cache, 13).is_some());
        assert_eq!(
            stats,
            NackStats {
                received: 3,
                answered: 2,
                missed: 1
            }
        );
    }

    #[test]
    fn answers_through_the_viewers_rewriter() {
        let cache = cache_with(&[5000, 5001, 5003]);
        let mut rw = Rewriter::new(90_000, 100);
        for s in [5000, 5001, 5003] {
            rw.rewrite(s, 0);
        }
        let mut stats = NackStats::default();
        assert_eq!(stats.answer(&cache, &rw, 101).map(|p| p.seq), Some(5001));
        assert!(
            stats.answer(&cache, &rw, 102).is_none(),
            "lost upstream too"
        );
        assert!(
            stats.answer(&cache, &rw, 99).is_none(),
            "before the viewer's stream"
        );
        assert!(stats.answer(&cache, &rw, 500).is_none(), "never sent");
        assert_eq!(
            stats,
            NackStats {
                received: 4,
                answered: 1,
                missed: 3
            }
        );
    }

    #[test]
    fn record_for_answers_elsewhere() {
        let mut stats = NackStats::default();
        stats.record(true);
        stats.record(false);
        stats.record(false);
        assert_eq!(
            stats,
            NackStats {
                received: 3,
                answered: 1,
                missed: 2
            }
        );
    }
}
