//! One track as seen by one worker: the packet cache every worker with viewers keeps (so
//! viewers repair locally), the local viewers, and — on the origin worker only — the track's one
//! keyframe cache on this node, the other tasks it feeds and the keyframe-request aggregation
//! toward the publisher.

use std::sync::Arc;
use std::time::Duration;

use relay_proto::{
    CacheLimits, H264Inspector, KeyframeCache, KeyframeRequests, PacketCache, SharedPacket,
};

use crate::ids::SessionId;
use crate::registry::TrackInfo;

/// One worker's copy of one track.
pub struct TrackState {
    /// The track as the node's registry knows it (shared with every copy).
    pub info: Arc<TrackInfo>,
    /// Its first payload type's codec.
    pub codec: relay_proto::Codec,
    /// True on the worker that owns the publishing session.
    pub origin: bool,
    /// Recent packets, so this worker answers its viewers' NACKs itself.
    pub cache: PacketCache,
    /// Origin only: the node's one keyframe cache for the track. Other workers' viewers start
    /// from the run it gives them (`FromOrigin::Run`), so they keep none.
    pub keyframes: Option<KeyframeCache>,
    /// Not the origin: a `Subscribe` or `Replay` is out and its `Run` not yet here (viewers
    /// starting meanwhile wait for that one run rather than asking again).
    pub run_asked: bool,
    /// Local sessions with a pull of this track (or a simulcast switch to it pending).
    pub subscribers: Vec<SessionId>,
    /// Origin only: workers that receive every packet of this track, once each.
    pub remote_workers: Vec<usize>,
    /// Origin only: viewers' keyframe requests, merged and rate-limited toward the publisher.
    pub keyframe_requests: KeyframeRequests,
    /// Highest sequence number seen (a jump is logged: loss before this node).
    pub highest_seq: Option<u64>,
    /// H264 tracks: parameter sets seen in-band and encoder quirks (B-frames, IDRs without SPS/PPS).
    pub h264: Option<H264Quirks>,
    /// Bitrate measurement window (origin only; the result goes to `TrackInfo::rate_bps`).
    rate_window: Option<(std::time::Instant, u64)>,
}

pub use relay_proto::ParameterSets;

/// Per H264 track: the inspector, and whether each quirk has been warned about (once per track).
#[derive(Default)]
pub struct H264Quirks {
    /// Keeps the latest SPS and PPS and finds B-frames and IDRs without parameter sets.
    pub inspector: H264Inspector,
    warned_b_frames: bool,
    warned_missing_parameter_sets: bool,
}

/// Quirks newly counted by one packet (the caller adds them to the node's counters).
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub struct NewQuirks {
    /// Frames with B slices.
    pub b_frames: u64,
    /// IDRs with no SPS/PPS in their access unit nor since the previous IDR.
    pub idr_without_parameter_sets: u64,
}

impl TrackState {
    /// A worker's new copy of `info`; `origin` when the worker holds its publisher.
    pub fn new(
        info: Arc<TrackInfo>,
        origin: bool,
        keyframe_cache_bytes: usize,
        kf_interval: Duration,
    ) -> TrackState {
        let codec = info
            .params
            .first()
            .map(|p| relay_proto::Codec::from_name(&p.spec().codec.to_string()))
            .unwrap_or(relay_proto::Codec::Other);
        TrackState {
            info,
            codec,
            origin,
            cache: PacketCache::new(CacheLimits::default()),
            keyframes: origin.then(|| KeyframeCache::new(keyframe_cache_bytes)),
            run_asked: false,
            subscribers: Vec::new(),
            remote_workers: Vec::new(),
            keyframe_requests: KeyframeRequests::new(kf_interval),
            highest_seq: None,
            h264: (codec == relay_proto::Codec::H264).then(H264Quirks::default),
            rate_window: None,
        }
    }

    /// Count a packet's bytes into the track's measured bitrate (origin only).
    pub fn measure(&mut self, bytes: usize, now: std::time::Instant) {
        if !self.origin {
            return;
        }
        let (start, sum) = self.rate_window.get_or_insert((now, 0));
        *sum += bytes as u64;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed >= Duration::from_secs(1) {
            let bps = *sum * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            self.info
                .rate_bps
                .store(bps, std::sync::atomic::Ordering::Relaxed);
            self.rate_window = Some((now, 0));
        } else if self
            .info
            .rate_bps
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
            && elapsed >= Duration::from_millis(250)
        {
            // A first figure early, so layers can be ordered soon after publishing starts.
            let bps = *sum * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            self.info
                .rate_bps
                .store(bps, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Feed an H264 packet to the inspector. Only the origin counts and warns (other workers hold
    /// copies of the same packets), but every worker keeps the parameter sets for its own viewers.
    pub fn inspect_h264(&mut self, pkt: &SharedPacket) -> NewQuirks {
        let codec = self.codec_of(pkt.pt);
        let Some(q) = self.h264.as_mut() else {
            return NewQuirks::default();
        };
        if codec != relay_proto::Codec::H264 {
            return NewQuirks::default();
        }
        let (b, idr) = (
            q.inspector.b_frames(),
            q.inspector.idr_without_parameter_sets(),
        );
        q.inspector.push(pkt.rtp_time, &pkt.payload);
        if !self.origin {
            return NewQuirks::default();
        }
        let new = NewQuirks {
            b_frames: q.inspector.b_frames() - b,
            idr_without_parameter_sets: q.inspector.idr_without_parameter_sets() - idr,
        };
        if new.b_frames > 0 && !q.warned_b_frames {
            q.warned_b_frames = true;
            tracing::warn!(
                session = %self.info.session,
                track = self.info.id.0,
                "H264 quirk: the publisher sends B-frames, which WebRTC players show as stutter. \
                 VideoToolbox sends B-frames: set 'B-frames 0' in the encoder settings / use the \
                 obs-profiles/WHIP-1080p30-AppleVT profile"
            );
        }
        if new.idr_without_parameter_sets > 0 && !q.warned_missing_parameter_sets {
            q.warned_missing_parameter_sets = true;
            tracing::warn!(
                session = %self.info.session,
                track = self.info.id.0,
                have_parameter_sets = q.inspector.parameter_sets().is_some(),
                "H264 quirk: a keyframe (IDR) arrived without SPS/PPS; the gateway resends the last \
                 ones it saw to new viewers. The encoder sends SPS/PPS only at start: enable \
                 'repeat headers' (x264 `repeat-headers=1`)"
            );
        }
        new
    }

    /// A viewer is about to start at the frame whose packets (so far) are `frame`, first one first. When
    /// that frame carries no SPS but the track sent parameter sets before, the packet to write ahead of
    /// it: a STAP-A of the latest SPS and PPS with the frame's timestamp and the source sequence number
    /// just before it, so the viewer's rewriter maps it right in front of the frame.
    pub fn parameter_sets_packet<'a>(
        &self,
        frame: impl IntoIterator<Item = &'a SharedPacket>,
    ) -> Option<SharedPacket> {
        let mut frame = frame.into_iter().peekable();
        if self.codec_of(frame.peek()?.pt) != relay_proto::Codec::H264 {
            return None;
        }
        let (sps, pps) = self.h264.as_ref()?.inspector.parameter_sets()?;
        relay_proto::parameter_sets_packet(frame, sps, pps)
    }

    /// Origin only: what a new viewer, here or on another worker, starts from (empty without a
    /// keyframe). Built by `KeyframeCache::start_run`, as a tree hop builds its own.
    pub fn start_run(&self) -> Vec<SharedPacket> {
        let Some(keyframes) = &self.keyframes else {
            return Vec::new();
        };
        let h264 = keyframes
            .run()
            .next()
            .is_some_and(|p| self.codec_of(p.pt) == relay_proto::Codec::H264);
        let sets = self
            .h264
            .as_ref()
            .and_then(|q| q.inspector.parameter_sets());
        keyframes.start_run(sets.filter(|_| h264))
    }

    /// The latest SPS and PPS, for another worker's copy of the track: its viewers may have to
    /// start at a later keyframe sent without them.
    pub fn parameter_sets(&self) -> Option<ParameterSets> {
        let (sps, pps) = self.h264.as_ref()?.inspector.parameter_sets()?;
        Some((sps.into(), pps.into()))
    }

    /// The latest in-band SPS and PPS as one STAP-A payload, when the track is H264 and has sent them.
    pub fn parameter_sets_stap_a(&self) -> Option<Vec<u8>> {
        let (sps, pps) = self.h264.as_ref()?.inspector.parameter_sets()?;
        relay_proto::h264_parameter_sets_stap_a(sps, pps)
    }

    /// The codec of a packet's payload type (a publisher may negotiate several).
    pub fn codec_of(&self, pt: u8) -> relay_proto::Codec {
        match self.info.params.iter().find(|p| *p.pt() == pt) {
            Some(p) if p.pt() != self.info.params[0].pt() => {
                relay_proto::Codec::from_name(&p.spec().codec.to_string())
            }
            _ => self.codec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SessionId, TrackId};
    use std::time::Instant;
    use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
    use str0m::media::{Frequency, MediaKind, Mid};

    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
    const IDR: [u8; 3] = [0x65, 0x88, 0x84];
    const P: [u8; 3] = [0x41, 0x9a, 0x02];
    const B: [u8; 3] = [0x01, 0x9e, 0x02];

    fn track(origin: bool) -> TrackState {
        let spec = CodecSpec {
            codec: Codec::H264,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::parse_line("packetization-mode=1;profile-level-id=42e01f"),
        };
        let info = Arc::new(TrackInfo::new(
            TrackId(1),
            SessionId::from_bytes([7; 16]),
            "video".into(),
            MediaKind::Video,
            Mid::from("1"),
            vec![PayloadParams::new(96.into(), None, spec)],
            0,
        ));
        TrackState::new(info, origin, 1 << 20, Duration::from_millis(500))
    }

    fn pkt(seq: u64, time: u64, payload: &[u8]) -> SharedPacket {
        Arc::new(relay_proto::MediaPacket {
            seq,
            rtp_time: time,
            marker: false,
            pt: 96,
            payload: payload.into(),
            keyframe_start: relay_proto::is_keyframe_start(relay_proto::Codec::H264, payload),
            received: Instant::now(),
        })
    }

    #[test]
    fn quirks_counted_on_the_origin_only() {
        let stream = [
            pkt(10, 0, &SPS),
            pkt(11, 0, &PPS),
            pkt(12, 0, &IDR),
            pkt(13, 3000, &P),
            pkt(14, 1500, &B),
            pkt(15, 6000, &IDR),
            pkt(16, 9000, &P),
        ];
        for origin in [true, false] {
            let mut t = track(origin);
            let mut total = NewQuirks::default();
            for p in &stream {
                let q = t.inspect_h264(p);
                total.b_frames += q.b_frames;
                total.idr_without_parameter_sets += q.idr_without_parameter_sets;
            }
            let want = if origin { (1, 1) } else { (0, 0) };
            assert_eq!(
                (total.b_frames, total.idr_without_parameter_sets),
                want,
                "origin {origin}"
            );
            // Either way the parameter sets are kept for viewers.
            assert_eq!(t.parameter_sets(), Some((SPS[..].into(), PPS[..].into())));
        }
    }

    #[test]
    fn parameter_sets_go_in_front_of_a_frame_without_them() {
        let mut t = track(true);
        // Nothing known yet: nothing to send.
        assert!(t.parameter_sets_packet([&pkt(5, 0, &IDR)]).is_none());
        t.inspect_h264(&pkt(10, 0, &SPS));
        t.inspect_h264(&pkt(11, 0, &PPS));
        t.inspect_h264(&pkt(12, 0, &IDR));
        // A frame carrying its own SPS needs nothing.
        let own = [
            pkt(20, 9000, &SPS),
            pkt(21, 9000, &PPS),
            pkt(22, 9000, &IDR),
        ];
        assert!(t.parameter_sets_packet(own.iter()).is_none());
        // One without: a STAP-A just before it, same timestamp.
        let bare = [pkt(30, 12_000, &IDR), pkt(31, 15_000, &SPS)];
        let ps = t
            .parameter_sets_packet(bare.iter())
            .expect("parameter sets");
        assert_eq!((ps.seq, ps.rtp_time, ps.pt), (29, 12_000, 96));
        assert!(ps.keyframe_start && !ps.marker);
        assert_eq!(relay_proto::h264_parameter_sets(&ps.payload), (true, true));
        // Sequence number 0 has no predecessor.
        assert!(t.parameter_sets_packet([&pkt(0, 0, &IDR)]).is_none());
        // The cached STAP-A is also what a rewriter maps right in front of the frame.
        let mut rw = relay_proto::Rewriter::new(90_000, 100);
        assert_eq!(rw.rewrite(ps.seq, ps.rtp_time), Some((100, 12_000)));
        assert_eq!(rw.rewrite(30, 12_000), Some((101, 12_000)));
    }
}
