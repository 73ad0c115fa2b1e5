//! Judges a received video stream against the fixture it was cut from: did the viewer get every
//! frame, whole, in order, starting at a keyframe, and could a decoder have shown each one?
//!
//! The publisher loops the file, so "in order" means each frame index is the previous one plus
//! one, modulo the number of frames in the file.

use serde::Serialize;

use crate::media_source::FrameCatalog;

/// Tally of what a viewer received, frame by frame.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SequenceStats {
    /// Video frames received (known or not).
    pub frames: u64,
    /// Fixture index of the first frame, if it was recognised.
    pub first_index: Option<usize>,
    /// The first frame received was a recognised keyframe.
    pub first_is_keyframe: bool,
    /// Frames whose slice data matches no fixture frame: damaged, partial, or foreign.
    pub unknown: u64,
    /// Frames skipped over by forward jumps in the sequence.
    pub missing: u64,
    /// Number of forward jumps (each may skip several frames).
    pub gaps: u64,
    /// Frames that arrived after a later one (they had been counted missing).
    pub out_of_order: u64,
    /// The same frame twice in a row.
    pub duplicates: u64,
    /// Backward jumps that are not a late frame: the source started again (e.g. republished).
    pub restarts: u64,
    /// Restarts or gaps after which the next frame was not a keyframe.
    pub resumed_without_keyframe: u64,
    /// Frames a decoder could show: a keyframe, or the next frame after a decodable one.
    pub decodable: u64,
    /// Frames a decoder could not show (unknown, or the reference chain was broken).
    pub undecodable: u64,
    /// Times the sequence passed the end of the file and started from frame 0 again.
    pub wraps: u64,
}

impl SequenceStats {
    /// Whole, in order, nothing missing, starting with a keyframe.
    pub fn is_perfect(&self) -> bool {
        self.frames > 0
            && self.first_is_keyframe
            && self.unknown == 0
            && self.missing == 0
            && self.out_of_order == 0
            && self.duplicates == 0
            && self.restarts == 0
            && self.undecodable == 0
    }
}

/// Feeds on received frames one at a time.
#[derive(Debug)]
pub struct SequenceChecker {
    len: usize,
    last: Option<usize>,
    /// Whether the last frame could be decoded, i.e. the reference chain is intact.
    chain_ok: bool,
    /// Indices counted missing recently, so that a late arrival can be told from a restart.
    recently_missing: Vec<usize>,
    stats: SequenceStats,
}

/// How far back a late frame may be and still count as late rather than as a restart.
const LATE_WINDOW: usize = 64;

impl SequenceChecker {
    /// For a file of `len` video frames.
    pub fn new(len: usize) -> Self {
        SequenceChecker {
            len: len.max(1),
            last: None,
            chain_ok: false,
            recently_missing: Vec::new(),
            stats: SequenceStats::default(),
        }
    }

    /// Records one frame: `index` is its fixture index, `None` if the catalog did not know it.
    pub fn push(&mut self, index: Option<usize>, catalog: &FrameCatalog) {
        self.stats.frames += 1;
        let first = self.stats.frames == 1;
        let Some(i) = index else {
            self.stats.unknown += 1;
            self.stats.undecodable += 1;
            // A frame we cannot recognise breaks the chain: whatever follows until a keyframe
            // references something the decoder does not have.
            self.chain_ok = false;
            return;
        };
        let key = catalog.is_keyframe(i);
        if first {
            self.stats.first_index = Some(i);
            self.stats.first_is_keyframe = key;
            self.accept(i, key);
            return;
        }
        let Some(last) = self.last else {
            // Only unknown frames so far.
            self.accept(i, key);
            return;
        };
        let expected = (last + 1) % self.len;
        let ahead = (i + self.len - expected) % self.len;
        if i == expected {
            if i == 0 {
                self.stats.wraps += 1;
            }
            self.accept(i, key);
        } else if i == last {
            self.stats.duplicates += 1;
        } else if let Some(pos) = self.recently_missing.iter().position(|m| *m == i) {
            self.recently_missing.swap_remove(pos);
            self.stats.missing -= 1;
            self.stats.out_of_order += 1;
            // Too late for the decoder, which has moved on.
            self.stats.undecodable += 1;
        } else if ahead <= self.len / 2 && i != 0 {
            // A jump to frame 0 is read as the source starting over rather than as a loss that
            // happened to end exactly at the loop point.
            self.stats.gaps += 1;
            self.stats.missing += ahead as u64;
            for k in 0..ahead.min(LATE_WINDOW) {
                self.recently_missing.push((expected + k) % self.len);
            }
            if self.recently_missing.len() > LATE_WINDOW {
                let excess = self.recently_missing.len() - LATE_WINDOW;
                self.recently_missing.drain(..excess);
            }
            if i < last {
                self.stats.wraps += 1;
            }
            self.chain_ok = false;
            if !key {
                self.stats.resumed_without_keyframe += 1;
            }
            self.accept(i, key);
        } else {
            self.stats.restarts += 1;
            self.recently_missing.clear();
            self.chain_ok = false;
            if !key {
                self.stats.resumed_without_keyframe += 1;
            }
            self.accept(i, key);
        }
    }

    fn accept(&mut self, i: usize, key: bool) {
        self.chain_ok = key || self.chain_ok;
        if self.chain_ok {
            self.stats.decodable += 1;
        } else {
            self.stats.undecodable += 1;
        }
        self.last = Some(i);
    }

    /// The tally so far.
    pub fn stats(&self) -> &SequenceStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_source::MediaSource;

    fn run(indices: &[Option<usize>]) -> anyhow::Result<SequenceStats> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        let catalog = m.catalog();
        let mut c = SequenceChecker::new(catalog.video_len());
        for i in indices {
            c.push(*i, &catalog);
        }
        Ok(c.stats().clone())
    }

    fn range(r: std::ops::Range<usize>) -> Vec<Option<usize>> {
        r.map(Some).collect()
    }

    #[test]
    fn consecutive_from_keyframe_across_the_loop_is_perfect() -> anyhow::Result<()> {
        let mut seq = range(150..180);
        seq.extend(range(0..40));
        let s = run(&seq)?;
        assert!(s.is_perfect(), "{s:?}");
        assert_eq!((s.frames, s.wraps, s.decodable), (70, 1, 70));
        Ok(())
    }

    #[test]
    fn starting_mid_gop_is_not_perfect() -> anyhow::Result<()> {
        let s = run(&range(35..65))?;
        assert!(!s.is_perfect());
        assert!(!s.first_is_keyframe);
        assert_eq!(s.undecodable, 25, "frames 35..60 wait for keyframe 60");
        Ok(())
    }

    #[test]
    fn a_gap_counts_missing_and_breaks_the_chain() -> anyhow::Result<()> {
        let mut seq = range(30..40);
        seq.extend(range(43..50));
        let s = run(&seq)?;
        assert!(!s.is_perfect());
        assert_eq!((s.missing, s.gaps, s.resumed_without_keyframe), (3, 1, 1));
        assert_eq!(s.undecodable, 7);
        Ok(())
    }

    #[test]
    fn a_late_frame_is_out_of_order_not_missing() -> anyhow::Result<()> {
        let s = run(&[Some(0), Some(1), Some(3), Some(2), Some(4)])?;
        assert_eq!((s.missing, s.out_of_order, s.restarts), (0, 1, 0));
        assert!(!s.is_perfect());
        Ok(())
    }

    #[test]
    fn unknown_and_duplicate_frames_are_counted() -> anyhow::Result<()> {
        let s = run(&[Some(0), Some(1), Some(1), None, Some(2)])?;
        assert_eq!((s.unknown, s.duplicates), (1, 1));
        assert!(!s.is_perfect());
        Ok(())
    }

    #[test]
    fn a_restart_at_a_keyframe_is_a_restart() -> anyhow::Result<()> {
        let mut seq = range(0..100);
        seq.extend(range(0..10));
        let s = run(&seq)?;
        assert_eq!(
            (s.restarts, s.resumed_without_keyframe, s.undecodable),
            (1, 0, 0)
        );
        Ok(())
    }
}
