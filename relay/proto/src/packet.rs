//! The unit the media plane moves around: one received RTP packet, reference-counted so that every cache and
//! every viewer on the node shares the same allocation.

use std::sync::Arc;
use std::time::Instant;

/// One RTP packet as received from a publisher, shared (Arc) by every cache and viewer on the node; never copied per viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// Extended sequence number at the source (str0m gives this), so ordering never has to reason about u16 wrap.
    pub seq: u64,
    /// Extended RTP timestamp, in the codec clock rate.
    pub rtp_time: u64,
    /// The RTP marker bit (for video, the last packet of a frame).
    pub marker: bool,
    /// RTP payload type as the publisher sent it (each viewer maps it to its own).
    pub pt: u8,
    /// RTP payload without the header (shared with str0m's `RtpPacket.payload`).
    pub payload: Arc<[u8]>,
    /// Set by the producer using [`crate::is_keyframe_start`], so payload parsing happens once per packet, not per cache.
    pub keyframe_start: bool,
    /// When this node received the packet (from the publisher, or in a link datagram); the packet cache ages
    /// packets by it.
    pub received: Instant,
}

/// The form in which a packet is handed to caches and viewers.
pub type SharedPacket = Arc<MediaPacket>;

impl MediaPacket {
    /// Payload bytes this packet pins in memory; caches budget with this.
    pub fn size(&self) -> usize {
        self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{packet, t0};

    #[test]
    fn size_is_payload_length() {
        assert_eq!(packet(1, 0, 1200, false, t0()).size(), 1200);
        assert_eq!(packet(1, 0, 0, false, t0()).size(), 0);
    }

    #[test]
    fn sharing_does_not_copy_payload() {
        let p = packet(7, 90, 500, true, t0());
        let viewer_copy: SharedPacket = Arc::clone(&p);
        assert!(Arc::ptr_eq(&p.payload, &viewer_copy.payload));
        assert_eq!(Arc::strong_count(&p), 2);
    }
}
