//! One session inside its worker: the str0m `Rtc`, the tracks it pushes, and the tracks it pulls
//! with each pull's rewriting state.

use std::sync::Arc;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::Pt;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::{RtpWrite, Ssrc};

use relay::{Rewriter, SharedPacket};

use crate::ids::{SessionId, TrackId};
use crate::registry::TrackInfo;

/// Where a pull is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// ICE/DTLS not done: nothing can be sent yet.
    WaitConnect,
    /// Video waits for a keyframe (from the cache, or live) so the decoder can start.
    WaitKeyframe,
    Live,
}

/// A track this session receives, on one of its m-lines.
pub struct Pull {
    pub mid: Mid,
    pub kind: MediaKind,
    /// None while the followed stream has no publisher.
    pub track: Option<Arc<TrackInfo>>,
    /// WHEP pulls follow a stream name and move to the new publisher when it comes back.
    pub follow: Option<Arc<str>>,
    pub state: PullState,
    pub rewriter: Rewriter,
    /// Highest sequence number written to this viewer (extends the 16-bit ones in its NACKs).
    last_out: Option<u64>,
    /// Publisher payload type → this viewer's, resolved once per payload type.
    pt_map: Vec<(u8, Option<Pt>)>,
}

impl Pull {
    pub fn new(
        mid: Mid,
        kind: MediaKind,
        track: Option<Arc<TrackInfo>>,
        follow: Option<Arc<str>>,
    ) -> Pull {
        let clock = if kind == MediaKind::Audio {
            48_000
        } else {
            90_000
        };
        Pull {
            mid,
            kind,
            track,
            follow,
            state: PullState::WaitConnect,
            rewriter: Rewriter::new(clock, rand::random::<u16>() & 0x7fff),
            last_out: None,
            pt_map: Vec::new(),
        }
    }

    pub fn last_out_seq(&self) -> Option<u64> {
        self.last_out
    }

    pub fn track_id(&self) -> Option<TrackId> {
        self.track.as_ref().map(|t| t.id)
    }

    /// Point this pull at another source track (a republished stream).
    pub fn retarget(&mut self, track: Option<Arc<TrackInfo>>, connected: bool, now: Instant) {
        self.track = track;
        self.pt_map.clear();
        self.rewriter.switch_source(now);
        self.state = if connected {
            PullState::WaitKeyframe
        } else {
            PullState::WaitConnect
        };
    }

    fn out_pt(&mut self, rtc: &Rtc, pt: u8) -> Option<Pt> {
        if let Some((_, out)) = self.pt_map.iter().find(|(p, _)| *p == pt) {
            return *out;
        }
        let params = self.track.as_ref()?.params.iter().find(|p| *p.pt() == pt)?;
        let remote = rtc
            .media(self.mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let out = rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| remote.contains(&p.pt()))
            .filter(|p| p.spec().codec == params.spec().codec)
            .max_by_key(|p| {
                p.spec().format.profile_level_id == params.spec().format.profile_level_id
            })
            .map(|p| p.pt());
        if out.is_none() {
            tracing::warn!(mid = %self.mid, pt, "viewer has no payload type for this codec; packets dropped");
        }
        self.pt_map.push((pt, out));
        out
    }

    /// Rewrite one packet for this viewer and hand it to str0m. False if nothing was written.
    pub fn write(&mut self, rtc: &mut Rtc, pkt: &SharedPacket, now: Instant) -> bool {
        let Some(pt) = self.out_pt(rtc, pkt.pt) else {
            return false;
        };
        let Some((seq, time)) = self.rewriter.rewrite(pkt.seq, pkt.rtp_time) else {
            return false;
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
            return false;
        };
        // The publisher's arrival time as wallclock keeps RTP time ↔ NTP time consistent in
        // our sender reports even for cached packets replayed seconds later.
        let write = RtpWrite::new(
            pt,
            seq.into(),
            time as u32,
            pkt.received,
            pkt.payload.clone(),
        )
        .marker(pkt.marker)
        .nackable(self.kind == MediaKind::Video);
        tx.write_rtp(write);
        self.rewriter.note_sent(now);
        self.last_out = Some(self.last_out.map_or(seq, |l| l.max(seq)));
        true
    }
}

/// A session owned by a worker.
pub struct Session {
    pub id: SessionId,
    pub rtc: Rtc,
    pub created: Instant,
    pub last_input: Instant,
    pub connected: bool,
    /// Key of this session in the worker's timer set.
    pub timeout: Option<Instant>,
    pub dirty: bool,
    pub pushed: Vec<Arc<TrackInfo>>,
    /// Incoming SSRC → pushed track, learned from the first packet of each SSRC.
    pub ssrcs: Vec<(Ssrc, Option<TrackId>)>,
    pub pulls: Vec<Pull>,
    pub packets_in: u64,
    /// This viewer has no RTX; the worker answers its NACKs (see `Worker::on_viewer_nack`).
    pub same_ssrc_repair: bool,
    /// Our offer waiting for the client's answer (session/track API).
    pub pending: Option<crate::negotiation::PendingOffer>,
}

impl Session {
    pub fn new(
        id: SessionId,
        rtc: Rtc,
        pushed: Vec<Arc<TrackInfo>>,
        pulls: Vec<Pull>,
        now: Instant,
    ) -> Session {
        Session {
            id,
            rtc,
            created: now,
            last_input: now,
            connected: false,
            timeout: None,
            dirty: false,
            pushed,
            ssrcs: Vec::new(),
            pulls,
            packets_in: 0,
            pending: None,
            same_ssrc_repair: false,
        }
    }

    /// The pushed track an incoming SSRC belongs to. Only the first simulcast layer (rid) of an
    /// m-line is taken until layer selection exists, so layers never interleave in one track.
    pub fn track_for_ssrc(&mut self, ssrc: Ssrc) -> Option<TrackId> {
        if let Some((_, t)) = self.ssrcs.iter().find(|(s, _)| *s == ssrc) {
            return *t;
        }
        let (mid, rid) = {
            let mut api = self.rtc.direct_api();
            let rx = api.stream_rx(&ssrc)?;
            // str0m sends NACKs only where RTX was negotiated; OBS has no RTX but re-sends
            // NACKed packets on the media SSRC, so ask it anyway.
            rx.suppress_nack(false);
            (rx.mid(), rx.rid())
        };
        let taken = rid.is_some()
            && self
                .ssrcs
                .iter()
                .filter_map(|(_, t)| *t)
                .any(|t| self.pushed.iter().any(|p| p.id == t && p.mid == mid));
        let track = if taken {
            None
        } else {
            self.pushed.iter().find(|t| t.mid == mid).map(|t| t.id)
        };
        if self.ssrcs.len() < 64 {
            self.ssrcs.push((ssrc, track));
        }
        track
    }
}
