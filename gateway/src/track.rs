//! One track as seen by one worker: the packet cache and keyframe cache every worker with viewers
//! keeps (so viewers start and repair locally), the local viewers, and — on the origin worker
//! only — the other workers it feeds and the keyframe-request aggregation toward the publisher.

use std::sync::Arc;
use std::time::Duration;

use relay::{CacheLimits, KeyframeCache, KeyframeRequests, PacketCache};

use crate::ids::SessionId;
use crate::registry::TrackInfo;

pub struct TrackState {
    pub info: Arc<TrackInfo>,
    pub codec: relay::Codec,
    /// True on the worker that owns the publishing session.
    pub origin: bool,
    pub cache: PacketCache,
    pub keyframes: KeyframeCache,
    pub subscribers: Vec<SessionId>,
    /// Origin only: workers that receive every packet of this track, once each.
    pub remote_workers: Vec<usize>,
    pub keyframe_requests: KeyframeRequests,
    pub packets: u64,
    pub bytes: u64,
    pub keyframes_seen: u64,
    /// Highest sequence number seen and how many numbers were skipped (loss before this node).
    pub highest_seq: Option<u64>,
    pub seq_gaps: u64,
}

impl TrackState {
    pub fn new(
        info: Arc<TrackInfo>,
        origin: bool,
        keyframe_cache_bytes: usize,
        kf_interval: Duration,
    ) -> TrackState {
        let codec = info
            .params
            .first()
            .map(|p| relay::Codec::from_name(&p.spec().codec.to_string()))
            .unwrap_or(relay::Codec::Other);
        TrackState {
            info,
            codec,
            origin,
            cache: PacketCache::new(CacheLimits::default()),
            keyframes: KeyframeCache::new(keyframe_cache_bytes),
            subscribers: Vec::new(),
            remote_workers: Vec::new(),
            keyframe_requests: KeyframeRequests::new(kf_interval),
            packets: 0,
            bytes: 0,
            keyframes_seen: 0,
            highest_seq: None,
            seq_gaps: 0,
        }
    }

    /// The codec of a packet's payload type (a publisher may negotiate several).
    pub fn codec_of(&self, pt: u8) -> relay::Codec {
        match self.info.params.iter().find(|p| *p.pt() == pt) {
            Some(p) if p.pt() != self.info.params[0].pt() => {
                relay::Codec::from_name(&p.spec().codec.to_string())
            }
            _ => self.codec,
        }
    }
}
