//! One session inside its worker: the str0m `Rtc`, the tracks it pushes, and the tracks it pulls
//! with each pull's rewriting state.

use std::sync::Arc;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::Pt;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::{RtpWrite, Ssrc};

use relay_proto::{MediaPacket, Rewriter, SharedPacket};

use crate::ids::{SessionId, TrackId};
use crate::registry::TrackInfo;
use crate::run_pacer::RunPacer;
use crate::sender_clock::SwitchAt;

/// Where a pull is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// ICE/DTLS not done: nothing can be sent yet.
    WaitConnect,
    /// Video on a worker that is not the track's origin waits for the origin's `Run` (the one
    /// keyframe cache on this node) to start from.
    WaitRun,
    /// Video waits for a live keyframe so the decoder can start (no cached run to start from).
    WaitKeyframe,
    /// Forwarding.
    Live,
}

/// A track this session receives, on one of its m-lines.
pub struct Pull {
    /// The viewer's m-line this pull writes to.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// None while the followed stream has no publisher.
    pub track: Option<Arc<TrackInfo>>,
    /// WHEP pulls follow a stream name and move to the new publisher when it comes back.
    pub follow: Option<Arc<str>>,
    /// Where the pull is in its life.
    pub state: PullState,
    /// Rewrites the source's SSRC, sequence numbers and timestamps into this viewer's
    /// continuous ones.
    pub rewriter: Rewriter,
    /// Highest sequence number written to this viewer (extends the 16-bit ones in its NACKs).
    last_out: Option<u64>,
    /// Source RTP time of the last packet written, on the current track (a simulcast switch
    /// compares it with the target's keyframe through the layers' sender reports).
    pub last_src_time: Option<u64>,
    /// Publisher payload type → this viewer's, resolved once per payload type.
    pt_map: Vec<(u8, Option<Pt>)>,
    /// Simulcast: every layer of the source's layer group (empty when it has one layer).
    /// `track` is the layer being forwarded now.
    pub layers: Vec<Arc<TrackInfo>>,
    /// Simulcast: the layer to switch to at its next keyframe.
    pub target: Option<TrackId>,
    /// The target's keyframe packets that arrived while the current layer was mid-frame.
    pub switch_buf: Vec<relay_proto::SharedPacket>,
    /// Simulcast: a layer (rid) pinned by the viewer (WHEP layer extension / API); None = automatic.
    pub pinned: Option<String>,
    /// The last packet written ended a frame (marker), so a layer switch can happen now.
    pub at_frame_end: bool,
    /// Layer switches done (for tests and stats).
    pub switches: u64,
    /// While a switch is pending: the current layer's latest frame, held back until the next
    /// one starts, so it can be dropped if the target's keyframe turns out to be the same
    /// picture (`switch_decision`).
    pub held: Vec<relay_proto::SharedPacket>,
    /// str0m's RTX cache for this pull has been bounded (`bound_repair_window`).
    repair_window_bound: bool,
    /// While this viewer works through a keyframe run (the cache's, or one another worker or a
    /// parent node replays): the packets waiting their turn (`run_pacer`). Live packets of the
    /// track queue behind them, so order is kept.
    pub pacer: Option<RunPacer>,
    /// When the first packet was written to this viewer (`join_metrics`).
    pub first_write: Option<Instant>,
    /// Resumed from another gateway (`resume`): the viewer has decoded up to some recent frame,
    /// so it starts again at the next live keyframe, never at a cached run that would take it
    /// back in time.
    pub resumed: bool,
}

/// Before both layers have sent a sender report: frames of two simulcast layers arriving this
/// close together are taken to be one picture.
pub const SAME_PICTURE: std::time::Duration = std::time::Duration::from_millis(12);

/// How far back str0m answers a viewer's NACKs with RTX is `Config::viewer_repair_window`, 1 s by
/// default. str0m's own default (3 s, up to 2,000 packets) keeps every packet header sent in that
/// time per viewer, for repairs that mostly arrive too late to be played: a live player gives up on
/// a packet after a few round trips. One second covers round trips up to ~0.5 s with a retry; the
/// worker's shared cache (2 s) still serves viewers without RTX and new viewers' keyframe runs.
/// The packet bound str0m also wants: this many per second of the window (8 Mbit/s of 1,200-byte
/// packets).
pub const VIEWER_RTX_PACKETS_PER_SEC: usize = 1024;

impl Pull {
    /// A pull on `mid`, waiting for the session to connect; `follow` for a WHEP pull of a stream.
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
            last_src_time: None,
            pt_map: Vec::new(),
            layers: Vec::new(),
            target: None,
            switch_buf: Vec::new(),
            pinned: None,
            at_frame_end: true,
            switches: 0,
            held: Vec::new(),
            repair_window_bound: false,
            pacer: None,
            first_write: None,
            resumed: false,
        }
    }

    /// Start this viewer at a keyframe with what follows it: the first frame is written now, the
    /// rest as the pacer allows (`pace`). True if packets are left for `pace`.
    pub fn start_run<'a>(
        &mut self,
        rtc: &mut Rtc,
        run: impl IntoIterator<Item = &'a SharedPacket>,
        track_rate_bps: u64,
        now: Instant,
    ) -> bool {
        let mut pacer = RunPacer::new(track_rate_bps, now);
        for p in run {
            pacer.push(p.clone());
        }
        self.pacer = Some(pacer);
        self.pace(rtc, now);
        self.pacer.is_some()
    }

    /// Write what the pacer lets go now; the pacer is dropped once empty, so live packets go
    /// straight out again. Returns how many packets were written.
    pub fn pace(&mut self, rtc: &mut Rtc, now: Instant) -> u64 {
        let Some(mut pacer) = self.pacer.take() else {
            return 0;
        };
        let mut written = 0;
        while let Some(p) = pacer.pop_due(now) {
            written += u64::from(self.write(rtc, &p, now));
        }
        if !pacer.is_empty() {
            self.pacer = Some(pacer);
        }
        written
    }

    /// The first packet of the target layer's keyframe has come while a switch is pending: whether
    /// to switch at it, and what becomes of the frame held back on the current layer. By the
    /// layers' sender reports when both have sent one; by arrival time until then.
    pub fn switch_decision(&self, target: &TrackInfo, keyframe: &MediaPacket) -> SwitchAt {
        let current = self.track.as_deref();
        let capture = |t: Option<&TrackInfo>, rtp: Option<u64>| {
            t.zip(rtp)
                .and_then(|(t, rtp)| t.sender_clock.capture_time(rtp))
        };
        let by_clock = crate::sender_clock::switch_at(
            target.sender_clock.capture_time(keyframe.rtp_time),
            capture(current, self.last_src_time),
            capture(current, self.held.first().map(|h| h.rtp_time)),
        );
        if let Some(decision) = by_clock {
            return decision;
        }
        match self.held.first() {
            Some(first)
                if keyframe.received.max(first.received)
                    - keyframe.received.min(first.received)
                    <= SAME_PICTURE =>
            {
                SwitchAt::DropHeld
            }
            _ => SwitchAt::FlushHeld,
        }
    }

    /// Write the held-back frame (a pending switch was cancelled or the frame is not the target's
    /// picture). Returns whether anything was written.
    pub fn flush_held(&mut self, rtc: &mut Rtc, now: Instant) -> bool {
        let mut wrote = false;
        for p in std::mem::take(&mut self.held) {
            wrote |= self.write(rtc, &p, now);
        }
        wrote
    }

    /// Set the simulcast layers of the current source from the tracks of its stream/session.
    pub fn set_layers_from(&mut self, all: &[Arc<TrackInfo>]) {
        self.layers = match self.track.as_ref().and_then(|t| t.layer_group) {
            Some(g) => all
                .iter()
                .filter(|t| t.layer_group == Some(g))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        self.target = None;
        self.switch_buf.clear();
        self.held.clear();
    }

    /// Session/track API pulls: the layers of the pulled track's group, from its publisher's
    /// tracks. A pull of a layer other than the top one (`simulcast.preferredRid`) is pinned to it.
    pub fn set_layers_for_api(&mut self, registry: &crate::registry::Registry) {
        let Some(track) = self.track.clone() else {
            return;
        };
        if track.layer_group.is_none() {
            return;
        }
        if let Some(e) = registry.session(track.session) {
            self.set_layers_from(&e.pushed);
        }
        if !track.is_primary() {
            self.pinned = track.rid.clone();
        }
    }

    /// The layer with this rid, if the source is simulcast.
    pub fn layer_by_rid(&self, rid: &str) -> Option<Arc<TrackInfo>> {
        self.layers
            .iter()
            .find(|t| t.rid.as_deref() == Some(rid))
            .cloned()
    }

    /// Switch to the target layer now (at its keyframe): the rewriter continues sequence numbers
    /// and timestamps from the current layer.
    pub fn switch_to_target(&mut self, now: Instant) -> Option<TrackId> {
        let target = self.target.take()?;
        let info = self.layers.iter().find(|t| t.id == target)?.clone();
        let old = self.track_id();
        self.track = Some(info);
        self.pt_map.clear();
        self.last_src_time = None;
        self.rewriter.switch_source(now);
        self.state = PullState::Live;
        self.switches += 1;
        self.pacer = None;
        old
    }

    /// Highest (extended) sequence number written to this viewer so far.
    pub fn last_out_seq(&self) -> Option<u64> {
        self.last_out
    }

    /// The id of the source track being forwarded now, if any.
    pub fn track_id(&self) -> Option<TrackId> {
        self.track.as_ref().map(|t| t.id)
    }

    /// Point this pull at another source track (a republished stream).
    pub fn retarget(&mut self, track: Option<Arc<TrackInfo>>, connected: bool, now: Instant) {
        self.track = track;
        self.pt_map.clear();
        self.last_src_time = None;
        self.target = None;
        self.switch_buf.clear();
        self.held.clear();
        self.pacer = None;
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

    /// Bound str0m's RTX cache for this pull's stream to `window`, once: str0m empties the cache
    /// when it is set, and a pull starts again whenever its stream's publisher comes back, when
    /// NACKs for the packets just sent should still be answered.
    pub fn bound_repair_window(&mut self, rtc: &mut Rtc, window: std::time::Duration) {
        if self.repair_window_bound {
            return;
        }
        self.repair_window_bound = true;
        let packets = (window.as_secs_f64() * VIEWER_RTX_PACKETS_PER_SEC as f64).ceil() as usize;
        if let Some(tx) = rtc.direct_api().stream_tx_by_mid(self.mid, None) {
            // 0.15: str0m's own cap on resends as a share of what is sent.
            tx.set_rtx_cache(packets.max(1), window, Some(0.15));
        }
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
        self.first_write.get_or_insert(now);
        self.rewriter.note_sent(now);
        self.at_frame_end = pkt.marker;
        self.last_src_time = Some(pkt.rtp_time);
        self.last_out = Some(self.last_out.map_or(seq, |l| l.max(seq)));
        true
    }
}

/// What the session/track API shows of a session (`GET …/sessions/{id}`, Calls' track list).
#[derive(Debug)]
pub struct SessionView {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Pushed tracks: mid, track name.
    pub pushed: Vec<(Mid, String)>,
    /// Pulled m-lines and what they forward.
    pub pulls: Vec<PullView>,
    /// Data channels: the publisher (None: this session's own), name, SCTP stream id.
    pub channels: Vec<(Option<SessionId>, String, u16)>,
}

/// One pulled m-line: the track it forwards (publisher session, track name), if any now.
#[derive(Debug)]
pub struct PullView {
    /// The pulled m-line.
    pub mid: Mid,
    /// (publisher session, track name) it forwards now, if any.
    pub source: Option<(SessionId, String)>,
}

/// A session owned by a worker.
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// str0m's WebRTC state for the session (ICE, DTLS, SRTP, RTP).
    pub rtc: Rtc,
    /// When the session was created (for the connect timeout).
    pub created: Instant,
    /// When a datagram last came from the client (for the idle timeout).
    pub last_input: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Key of this session in the worker's timer set.
    pub timeout: Option<Instant>,
    /// Packets were written to it since it was last polled: queued for `drive`.
    pub dirty: bool,
    /// Tracks it publishes.
    pub pushed: Vec<Arc<TrackInfo>>,
    /// Incoming SSRC → pushed track, learned from the first packet of each SSRC.
    pub ssrcs: Vec<(Ssrc, Option<TrackId>)>,
    /// Tracks it receives, one per pulled m-line.
    pub pulls: Vec<Pull>,
    /// RTP packets received from the client.
    pub packets_in: u64,
    /// This viewer has no RTX; the worker answers its NACKs (see `Worker::on_viewer_nack`).
    pub same_ssrc_repair: bool,
    /// Our offer waiting for the client's answer (session/track API).
    pub pending: Option<crate::negotiation::PendingOffer>,
    /// Data channels it publishes and subscribes to (`data_channel`).
    pub channels: crate::data_channel::SessionChannels,
    /// Latest egress bandwidth estimate (bits/s), for automatic simulcast layer choice.
    pub bwe_bps: Option<u64>,
    /// NACK messages str0m has counted per outgoing mid so far (its stats are running totals).
    pub egress_nacks: Vec<(Mid, u64)>,
    /// Times the client's join (`join_metrics`).
    pub join: crate::join_metrics::JoinClock,
    /// Replicated to the cluster's other gateways, so that one can resume it (`replica`).
    pub replication: Option<Box<crate::replica::SessionReplication>>,
}

impl Session {
    /// What the session/track API shows of it.
    pub fn view(&self) -> SessionView {
        SessionView {
            connected: self.connected,
            pushed: self.pushed.iter().fold(Vec::new(), |mut v, t| {
                // Simulcast pushes one track per layer on one mid: listed once.
                if !v.iter().any(|(m, _)| *m == t.mid) {
                    v.push((t.mid, t.name.clone()));
                }
                v
            }),
            pulls: self
                .pulls
                .iter()
                .map(|p| PullView {
                    mid: p.mid,
                    source: p.track.as_ref().map(|t| (t.session, t.name.clone())),
                })
                .collect(),
            channels: self
                .channels
                .published
                .iter()
                .map(|c| (None, c.name.clone(), c.stream_id))
                .chain(
                    self.channels
                        .subscribed
                        .iter()
                        .map(|c| (Some(c.publisher), c.name.clone(), c.stream_id)),
                )
                .collect(),
        }
    }
    /// Let str0m act on a timeout that has come (timers, and packets written but not yet
    /// stamped for sending). A refusal is logged; the session goes on.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(str0m::Input::Timeout(now)) {
            tracing::debug!(session = %self.id, error = %e, "timeout refused");
        }
    }

    /// A session just created from its offer, not connected yet.
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
            channels: Default::default(),
            same_ssrc_repair: false,
            bwe_bps: None,
            egress_nacks: Vec::new(),
            join: crate::join_metrics::JoinClock::new(
                crate::join_metrics::RequestContext {
                    started: now,
                    parent: None,
                },
                now,
            ),
            replication: None,
        }
    }

    /// The pushed track an incoming SSRC belongs to: by mid, and by rid for simulcast layers
    /// (each layer is its own track, so layers never interleave in one track).
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
        let rid = rid.map(|r| r.to_string());
        let of_mid = || self.pushed.iter().filter(|t| t.mid == mid);
        let track = if of_mid().any(|t| t.rid.is_some()) {
            of_mid().find(|t| t.rid.is_some() && t.rid == rid)
        } else {
            // Not simulcast as negotiated: only the first rid seen, so layers never interleave.
            let taken = rid.is_some()
                && self
                    .ssrcs
                    .iter()
                    .filter_map(|(_, t)| *t)
                    .any(|t| self.pushed.iter().any(|p| p.id == t && p.mid == mid));
            if taken { None } else { of_mid().next() }
        }
        .map(|t| t.id);
        if self.ssrcs.len() < 64 {
            self.ssrcs.push((ssrc, track));
        }
        track
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn layer(id: u64, rid: &str) -> Arc<TrackInfo> {
        Arc::new(
            TrackInfo::new(
                TrackId(id),
                SessionId::from_bytes([7; 16]),
                format!("video.{rid}"),
                MediaKind::Video,
                Mid::from("0"),
                vec![],
                0,
            )
            .layer(rid.into(), TrackId(1)),
        )
    }

    fn frame(rtp_time: u64, received: Instant) -> SharedPacket {
        Arc::new(MediaPacket {
            seq: rtp_time,
            rtp_time,
            marker: false,
            pt: 96,
            payload: [0u8; 4].into(),
            keyframe_start: true,
            received,
        })
    }

    /// Top layer "h" and target "l" with unrelated RTP offsets; picture n is captured at n × 33 ms
    /// and sent on h at H + 3000 n, on l at L + 3000 n. Both layers have sent a report.
    struct Layers {
        h: Arc<TrackInfo>,
        l: Arc<TrackInfo>,
        t0: Instant,
    }
    const H: u64 = 4_000_000_000;
    const L: u64 = 12_345;

    fn layers() -> Layers {
        let (h, l) = (layer(1, "h"), layer(3, "l"));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        h.sender_clock.update(H as u32, wall, 90_000);
        l.sender_clock.update(L as u32, wall, 90_000);
        Layers {
            h,
            l,
            t0: Instant::now(),
        }
    }

    fn pull_on(h: &Arc<TrackInfo>, l: &Arc<TrackInfo>) -> Pull {
        let mut p = Pull::new(Mid::from("0"), MediaKind::Video, Some(h.clone()), None);
        p.layers = vec![h.clone(), l.clone()];
        p.target = Some(l.id);
        p
    }

    #[test]
    fn a_late_copy_of_the_held_picture_replaces_it() {
        let x = layers();
        let mut p = pull_on(&x.h, &x.l);
        p.last_src_time = Some(H + 3000 * 9);
        p.held = vec![frame(H + 3000 * 10, x.t0)];
        // The low layer's copy of picture 10 arrives 50 ms after the high layer's: far outside the
        // arrival window, yet the same picture by the reports.
        let kf = frame(L + 3000 * 10, x.t0 + Duration::from_millis(50));
        assert_eq!(p.switch_decision(&x.l, &kf), SwitchAt::DropHeld);
    }

    #[test]
    fn a_keyframe_the_viewer_already_has_is_skipped() {
        let x = layers();
        let mut p = pull_on(&x.h, &x.l);
        // Picture 10 went out on h (held frame flushed when picture 11 began), 11 is held.
        p.last_src_time = Some(H + 3000 * 10);
        p.held = vec![frame(H + 3000 * 11, x.t0 + Duration::from_millis(33))];
        let kf = frame(L + 3000 * 10, x.t0 + Duration::from_millis(40));
        assert_eq!(p.switch_decision(&x.l, &kf), SwitchAt::Skip);
        // The next picture's keyframe is newer than what was sent and is the held picture.
        let kf = frame(L + 3000 * 11, x.t0 + Duration::from_millis(70));
        assert_eq!(p.switch_decision(&x.l, &kf), SwitchAt::DropHeld);
    }

    #[test]
    fn a_newer_keyframe_lets_the_held_frame_out_first() {
        let x = layers();
        let mut p = pull_on(&x.h, &x.l);
        p.last_src_time = Some(H + 3000 * 9);
        p.held = vec![frame(H + 3000 * 10, x.t0)];
        let kf = frame(L + 3000 * 11, x.t0 + Duration::from_millis(5));
        assert_eq!(p.switch_decision(&x.l, &kf), SwitchAt::FlushHeld);
    }

    #[test]
    fn without_reports_arrival_time_decides() {
        let (h, l) = (layer(1, "h"), layer(3, "l"));
        let t0 = Instant::now();
        let mut p = pull_on(&h, &l);
        p.last_src_time = Some(H);
        p.held = vec![frame(H + 3000, t0)];
        let near = frame(L + 3000, t0 + SAME_PICTURE / 2);
        assert_eq!(p.switch_decision(&l, &near), SwitchAt::DropHeld);
        let far = frame(L + 3000, t0 + SAME_PICTURE * 3);
        assert_eq!(p.switch_decision(&l, &far), SwitchAt::FlushHeld);
        // Only one layer has reported: still arrival time.
        h.sender_clock
            .update(H as u32, SystemTime::UNIX_EPOCH, 90_000);
        assert_eq!(p.switch_decision(&l, &far), SwitchAt::FlushHeld);
    }
}
