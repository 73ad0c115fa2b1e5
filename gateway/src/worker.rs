//! A media worker: owns a shard of the node's sessions (one owner per `Rtc`, no lock on the
//! packet path), drives them with datagrams and time, and fans published packets out.
//!
//! A packet published on worker A reaches A's own viewers directly and every other worker with
//! viewers of that track exactly once (an `Arc`, never a copy); each of those workers keeps its
//! own packet and keyframe cache of the track, so joins and repairs stay local to the viewer's
//! worker — the same shape a relay tree has between nodes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::RawPacket;
use str0m::rtp::RtpPacket;
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use relay_proto::{MediaPacket, SharedPacket};

use crate::config::Config;
use crate::demux::{DemuxFeed, DemuxUpdate, Route};
use crate::ids::{SessionId, TrackId};
use crate::join_metrics::{JoinClock, JoinMetrics, RequestContext, Role};
use crate::registry::{Registry, TrackInfo};
use crate::sender_clock::SwitchAt;
use crate::session::{Pull, PullState, Session};
use crate::track::TrackState;
use crate::udp::{Datagram, UdpShell};

/// A new session handed over by the HTTP layer.
pub struct Adopt {
    pub id: SessionId,
    pub rtc: str0m::Rtc,
    /// Answer this viewer's NACKs from the cache on its media SSRC (it has no RTX).
    pub same_ssrc_repair: bool,
    pub pushed: Vec<Arc<TrackInfo>>,
    pub pulls: Vec<Pull>,
    /// The HTTP request that made the session: when it arrived, its trace (`join_metrics`).
    pub requested: RequestContext,
}

/// Everything a worker is told.
pub enum WorkerMsg {
    /// What one read from the socket brought for this worker's sessions, in arrival order.
    Datagrams(Vec<Datagram>),
    Adopt(Box<Adopt>),
    Close {
        session: SessionId,
    },
    Trickle {
        session: SessionId,
        candidates: Vec<String>,
    },
    IceRestart {
        session: SessionId,
        remote: IceCreds,
        reply: oneshot::Sender<Option<IceCreds>>,
    },
    /// Origin → worker with viewers: one packet of a track.
    Media {
        track: TrackId,
        packet: SharedPacket,
    },
    /// Worker with viewers → origin: start sending me this track (keyframe run first).
    Subscribe {
        track: Arc<TrackInfo>,
        worker: usize,
    },
    Unsubscribe {
        track: TrackId,
        worker: usize,
    },
    /// Worker with viewers → origin: a viewer asked for a keyframe.
    KeyframeRequest {
        track: TrackId,
    },
    /// Origin → worker with viewers, ahead of the keyframe run: the H264 track's latest SPS and
    /// PPS, for viewers starting at a keyframe sent without them.
    H264ParameterSets {
        track: TrackId,
        sps: Arc<[u8]>,
        pps: Arc<[u8]>,
    },
    /// Origin → worker with viewers: the publisher is gone.
    TrackEnded {
        track: TrackId,
    },
    /// The session/track API renegotiates a session.
    Negotiate {
        session: SessionId,
        negotiation: crate::negotiation::Negotiation,
        reply: oneshot::Sender<Result<crate::negotiation::Negotiated, crate::refusal::Refusal>>,
    },
    /// To the cluster bridge: a WHIP publisher's session ended (withdraw the stream).
    StreamGone {
        stream: Arc<str>,
        session: SessionId,
    },
    /// Simulcast: pin a viewer's m-line (`mid`, or every simulcast pull when None) to the layer
    /// `rid`, or back to automatic choice (None).
    SelectLayer {
        session: SessionId,
        mid: Option<String>,
        rid: Option<String>,
        reply: oneshot::Sender<Result<(), crate::refusal::Refusal>>,
    },
    /// To the worker of a session publishing data channel `name`: forward it to `subscriber`.
    ChannelSubscribe {
        publisher: SessionId,
        name: String,
        subscriber: crate::data_channel::Subscriber,
    },
    /// To the worker of a session publishing data channel `name`: stop forwarding to `subscriber`.
    ChannelUnsubscribe {
        publisher: SessionId,
        name: String,
        subscriber: crate::data_channel::Subscriber,
    },
    /// To the cluster bridge: session `publisher` publishes data channel `name` (put it in the
    /// tree and the directory).
    ChannelPublished {
        publisher: SessionId,
        name: String,
        params: relay_proto::data_track::DataTrackParams,
    },
    /// To the cluster bridge: the channel is closed, or its session ended.
    ChannelUnpublished {
        publisher: SessionId,
        name: String,
    },
    /// To the cluster bridge: one message of a published channel, for the tree.
    ChannelToCluster {
        publisher: SessionId,
        name: String,
        binary: bool,
        data: Arc<[u8]>,
    },
    /// To the worker of a session publishing data channel `name`: a subscriber's reply for it.
    ChannelReply {
        publisher: SessionId,
        name: String,
        binary: bool,
        data: Arc<[u8]>,
    },
    /// From a publishing session's worker: one message for a subscriber's channel here.
    ChannelMessage {
        to: crate::data_channel::Subscriber,
        binary: bool,
        data: Arc<[u8]>,
    },
    /// The session/track API's `GET …/sessions/{id}`: what the session pushes and pulls.
    Describe {
        session: SessionId,
        reply: oneshot::Sender<Option<crate::session::SessionView>>,
    },
    /// A stream has a (new) publisher: viewers following it re-attach.
    StreamLive {
        stream: Arc<str>,
        tracks: Vec<Arc<TrackInfo>>,
    },
}

/// Counters readable from the HTTP side without asking the worker.
#[derive(Default)]
pub struct WorkerStats {
    pub sessions: AtomicUsize,
    pub tracks: AtomicUsize,
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub cross_worker_packets: AtomicU64,
    pub keyframe_runs_served: AtomicU64,
    pub keyframe_requests_received: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    /// Panics caught inside str0m (each cost one session).
    pub panics: AtomicU64,
    /// Data channel messages a subscriber missed (channel not open, or too much unsent).
    pub channel_drops: AtomicU64,
    pub channel_messages_received: AtomicU64,
    pub channel_messages_delivered: AtomicU64,
    /// NACKed packets from viewers without RTX: asked for, resent from the cache, not found.
    pub nacks_received: AtomicU64,
    pub nacks_answered: AtomicU64,
    pub nacks_missed: AtomicU64,
    /// NACK messages from viewers with RTX (str0m answers those).
    pub nacks_rtx: AtomicU64,
    /// H264 quirks of published tracks (origin worker only): see `TrackState::inspect_h264`.
    pub h264_bframes: AtomicU64,
    pub h264_idr_without_parameter_sets: AtomicU64,
    /// Simulcast layer switches done for viewers.
    pub layer_switches: AtomicU64,
}

/// What every worker shares.
pub struct WorkerCtx {
    pub peers: Vec<mpsc::UnboundedSender<WorkerMsg>>,
    pub udp: Arc<UdpShell>,
    pub demux: DemuxFeed,
    /// ICE-TCP connections (TCP transmits go there), when it is on.
    pub ice_tcp: Option<Arc<crate::ice_tcp::IceTcp>>,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Index in `peers` of the cluster bridge, when the node is in a cluster.
    pub bridge: Option<usize>,
    pub join: Arc<JoinMetrics>,
    /// Finished setup spans go here (OTLP), when an endpoint is configured.
    pub spans: relay_shell::otlp_push::SpanSink,
}

/// A session's setup as spans, when traces are exported.
fn export_setup(ctx: &WorkerCtx, s: &Session, role: Role, marks: [Instant; 5]) {
    if ctx.spans.enabled() {
        let spans = crate::join_metrics::setup_spans(s.join.parent, &s.id.to_string(), role, marks);
        for span in spans {
            ctx.spans.send(span);
        }
    }
}

const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A simulcast layer switch waits for a keyframe received at most this long ago (not one from a
/// replayed keyframe run, which would step back in time).
const LIVE_KEYFRAME: Duration = Duration::from_millis(100);
/// Datagrams a worker encrypts before it sends them: enough for a few `sendmmsg` calls' worth of
/// GSO messages, few enough that a big frame's first viewers get it ~1 ms after it arrived.
const SEND_EVERY: usize = 256;
/// Timeouts already due that one `drive_session` handles itself before leaving the rest to the
/// timer set (a bound, so a session that keeps asking for "now" cannot hold the worker).
const IMMEDIATE_TIMEOUTS: u32 = 4;

pub struct Worker {
    pub(crate) index: usize,
    pub(crate) ctx: Arc<WorkerCtx>,
    pub(crate) stats: Arc<WorkerStats>,
    /// Boxed: a `Session` (its `Rtc` inline) is kilobytes, and a map never shrinks, so inline
    /// values would keep a flood's peak (capacity × size) allocated after the sessions are gone.
    pub(crate) sessions: HashMap<SessionId, Box<Session>>,
    pub(crate) tracks: HashMap<TrackId, TrackState>,
    timers: BTreeSet<(Instant, SessionId)>,
    dirty: Vec<SessionId>,
    pending_keyframes: Vec<TrackId>,
    out: Vec<Transmit>,
    /// Pulls (session, mid) working through a paced keyframe run. By mid, not by index: closing
    /// an earlier m-line (`tracks/close`) removes a pull and shifts the ones after it.
    paced: Vec<(SessionId, Mid)>,
    next_housekeeping: Instant,
    /// The session whose `Rtc` is being called, so a panic inside str0m costs that session only.
    touching: Option<SessionId>,
}

impl Worker {
    pub fn new(index: usize, ctx: Arc<WorkerCtx>) -> Worker {
        let stats = ctx.stats[index].clone();
        Worker {
            index,
            ctx,
            stats,
            sessions: HashMap::new(),
            tracks: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_keyframes: Vec::new(),
            out: Vec::new(),
            paced: Vec::new(),
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            touching: None,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    self.dispatch(msg, now);
                    // Take what else is queued before polling, so a burst costs one poll per session.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(msg) => self.dispatch(msg, now),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.guarded(|w| w.expire_timers(now));
            if now >= self.next_housekeeping {
                self.guarded(|w| w.housekeeping(now));
            }
            self.guarded(|w| w.pace(now));
            self.drive_and_send(now).await;
            self.guarded(|w| w.flush_keyframe_requests(now));
            self.drive_and_send(now).await;
        }
        // Shutdown: every client is told (RTCP BYE, DTLS close_notify) before the node goes.
        let now = Instant::now();
        for id in self.sessions.keys().copied().collect::<Vec<_>>() {
            self.guarded(|w| w.close_and_reap(id, now));
        }
        self.send().await;
    }

    /// End a session the way WebRTC says: str0m's `close` queues RTCP BYE and the DTLS
    /// close_notify, which are polled out (and sent with the next batch) before the session is
    /// reaped, so the client learns at once instead of by a consent timeout.
    fn close_and_reap(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        if s.rtc.close().is_ok() {
            // Bounded: a close is a handful of datagrams.
            for _ in 0..64 {
                match s.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.out.push(t),
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(_)) | Err(_) => break,
                }
                if !s.rtc.is_alive() {
                    break;
                }
            }
        }
        s.rtc.disconnect();
        self.reap(id, now);
    }

    /// Handle one message; each datagram of a batch is its own guarded step, so a panic costs
    /// only the session it was for.
    fn dispatch(&mut self, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Datagrams(batch) => {
                for d in batch {
                    self.guarded(|w| w.on_datagram(d));
                }
            }
            msg => self.guarded(|w| w.handle(msg, now)),
        }
    }

    /// Run one step; if str0m panics inside it (its invariants are its own, but "panic means
    /// bug" must not take a whole worker and every session on it down), drop only the session
    /// that was being driven and carry on.
    fn guarded(&mut self, step: impl FnOnce(&mut Self)) {
        self.touching = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        let Err(panic) = result else { return };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        self.stats.panics.fetch_add(1, Ordering::Relaxed);
        match self.touching.take() {
            Some(id) => {
                tracing::error!(session = %id, panic = %what, "a session panicked; it is closed, the worker goes on");
                self.reap(id, Instant::now());
            }
            None => tracing::error!(panic = %what, "a worker step panicked; the worker goes on"),
        }
        self.dirty.retain(|id| self.sessions.contains_key(id));
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.next_housekeeping;
        if let Some((t, _)) = self.timers.first() {
            d = d.min(*t);
        }
        for (id, mid) in &self.paced {
            if let Some(due) = self
                .sessions
                .get(id)
                .and_then(|s| s.pulls.iter().find(|p| p.mid == *mid))
                .and_then(|p| p.pacer.as_ref())
                .and_then(|p| p.next_due())
            {
                d = d.min(due);
            }
        }
        for t in &self.pending_keyframes {
            if let Some(when) = self
                .tracks
                .get(t)
                .and_then(|t| t.keyframe_requests.poll_timeout())
            {
                d = d.min(when);
            }
        }
        d
    }

    pub(crate) fn mark(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    fn handle(&mut self, msg: WorkerMsg, now: Instant) {
        self.touching = match &msg {
            WorkerMsg::Close { session }
            | WorkerMsg::Trickle { session, .. }
            | WorkerMsg::IceRestart { session, .. }
            | WorkerMsg::Negotiate { session, .. }
            | WorkerMsg::SelectLayer { session, .. } => Some(*session),
            WorkerMsg::Adopt(a) => Some(a.id),
            _ => None,
        };
        match msg {
            WorkerMsg::Datagrams(batch) => {
                for d in batch {
                    self.on_datagram(d);
                }
            }
            WorkerMsg::Adopt(a) => self.adopt(*a, now),
            WorkerMsg::Close { session } => self.close_and_reap(session, now),
            WorkerMsg::Trickle {
                session,
                candidates,
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    for c in candidates {
                        match Candidate::from_sdp_string(&c) {
                            // mDNS names cannot be resolved here and are dropped silently.
                            Ok(c) => s.rtc.add_remote_candidate(c),
                            Err(e) => {
                                tracing::debug!(%session, error = %e, "ignored trickled candidate")
                            }
                        }
                    }
                    self.mark(session);
                }
            }
            WorkerMsg::IceRestart {
                session,
                remote,
                reply,
            } => {
                let local = self.sessions.get_mut(&session).map(|s| {
                    let local = crate::peer::local_ice_creds();
                    let mut api = s.rtc.direct_api();
                    api.set_remote_ice_credentials(remote);
                    api.set_local_ice_credentials(local.clone());
                    local
                });
                if let Some(l) = &local {
                    let route = Route {
                        worker: self.index,
                        session,
                    };
                    self.ctx.demux.send(DemuxUpdate::Ufrag {
                        ufrag: l.ufrag.clone(),
                        pwd: l.pass.clone(),
                        route,
                        failures: None,
                    });
                    self.mark(session);
                }
                let _ = reply.send(local);
            }
            WorkerMsg::Media { track, packet } => self.fan_out(track, packet, now),
            WorkerMsg::Subscribe { track, worker } => self.on_subscribe(track, worker),
            WorkerMsg::Unsubscribe { track, worker } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.remote_workers.retain(|w| *w != worker);
                }
            }
            WorkerMsg::KeyframeRequest { track } => self.request_keyframe(track, now),
            WorkerMsg::H264ParameterSets { track, sps, pps } => {
                if let Some(q) = self.tracks.get_mut(&track).and_then(|t| t.h264.as_mut())
                    && q.inspector.parameter_sets().is_none()
                {
                    q.inspector.learn_parameter_sets(&sps, &pps);
                }
            }
            WorkerMsg::TrackEnded { track } => {
                if let Some(t) = self.tracks.remove(&track) {
                    self.detach_all(&t.subscribers, track, now);
                }
            }
            WorkerMsg::StreamLive { stream, tracks } => self.on_stream_live(&stream, &tracks, now),
            WorkerMsg::StreamGone { .. } => {}
            WorkerMsg::SelectLayer {
                session,
                mid,
                rid,
                reply,
            } => {
                let _ = reply.send(self.select_layer(session, mid, rid, now));
            }
            WorkerMsg::ChannelSubscribe {
                publisher,
                name,
                subscriber,
            } => self.add_channel_subscriber(publisher, &name, subscriber),
            WorkerMsg::ChannelUnsubscribe {
                publisher,
                name,
                subscriber,
            } => self.remove_channel_subscriber(publisher, &name, subscriber),
            WorkerMsg::ChannelMessage { to, binary, data } => {
                self.deliver(to, binary, &data, now);
            }
            WorkerMsg::ChannelReply {
                publisher,
                name,
                binary,
                data,
            } => self.write_reply(publisher, &name, binary, &data),
            // The bridge's own messages; a worker is never sent them.
            WorkerMsg::ChannelPublished { .. }
            | WorkerMsg::ChannelUnpublished { .. }
            | WorkerMsg::ChannelToCluster { .. } => {}
            WorkerMsg::Describe { session, reply } => {
                let _ = reply.send(self.sessions.get(&session).map(|s| s.view()));
            }
            WorkerMsg::Negotiate {
                session,
                negotiation,
                reply,
            } => {
                let _ = reply.send(self.negotiate(session, negotiation, now));
            }
        }
    }

    fn on_datagram(&mut self, d: Datagram) {
        let Some(s) = self.sessions.get_mut(&d.session) else {
            return;
        };
        self.touching = Some(d.session);
        let Ok(contents) = d.data.as_slice().try_into() else {
            return;
        };
        let input = Input::Receive(
            d.at,
            Receive {
                proto: d.proto,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %d.session, error = %e, "input refused");
        }
        s.last_input = d.at;
        // str0m expects its output drained after every input; a second input first would
        // overwrite what the first produced (we lost single packets that way). Only this
        // session, though: the viewers a published packet was written to are polled once for
        // the whole batch (`run`), so each viewer's packets of a frame leave in a row and go
        // out as one GSO send.
        self.drive_session(d.session, d.at);
    }

    fn adopt(&mut self, a: Adopt, now: Instant) {
        let id = a.id;
        for info in &a.pushed {
            let t = TrackState::new(
                info.clone(),
                true,
                self.ctx.config.keyframe_cache_bytes,
                self.ctx.config.keyframe_request_interval,
            );
            self.tracks.insert(info.id, t);
        }
        let attach: Vec<(usize, Arc<TrackInfo>)> = a
            .pulls
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.track.clone()?)))
            .collect();
        let mut session = Session::new(id, a.rtc, a.pushed, a.pulls, now);
        session.join = JoinClock::new(a.requested, now);
        session.same_ssrc_repair = a.same_ssrc_repair;
        tracing::debug!(session = %id, same_ssrc_repair = a.same_ssrc_repair, "adopted");
        self.sessions.insert(id, Box::new(session));
        for (i, track) in attach {
            self.subscribe_local(id, i, track, now);
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.handle_timeout(now);
        }
        self.mark(id);
        self.update_gauges();
    }

    /// Make session `id`'s pull `i` receive `track` through this worker's copy of it.
    pub(crate) fn subscribe_local(
        &mut self,
        id: SessionId,
        i: usize,
        track: Arc<TrackInfo>,
        now: Instant,
    ) {
        if !self.ensure_subscribed(id, track) {
            return;
        }
        let connected = self.sessions.get(&id).is_some_and(|s| s.connected);
        if connected {
            self.start_pull(id, i, now);
        }
    }

    /// Make session `id` a subscriber of this worker's copy of `track` (created and fed by the
    /// origin worker if need be). False when the track is gone.
    fn ensure_subscribed(&mut self, id: SessionId, track: Arc<TrackInfo>) -> bool {
        let track_id = track.id;
        if !self.tracks.contains_key(&track_id) {
            if track.origin_worker == self.index {
                // The publisher is already gone from this worker.
                return false;
            }
            let t = TrackState::new(
                track.clone(),
                false,
                self.ctx.config.keyframe_cache_bytes,
                self.ctx.config.keyframe_request_interval,
            );
            self.tracks.insert(track_id, t);
            if let Some(origin) = self.ctx.peers.get(track.origin_worker) {
                let _ = origin.send(WorkerMsg::Subscribe {
                    track,
                    worker: self.index,
                });
            }
        }
        if let Some(t) = self.tracks.get_mut(&track_id)
            && !t.subscribers.contains(&id)
        {
            t.subscribers.push(id);
        }
        true
    }

    /// Drop session `id` from `track` unless one of its pulls still forwards or targets it.
    fn release_if_unused(&mut self, id: SessionId, track: TrackId) {
        let used = self.sessions.get(&id).is_some_and(|s| {
            s.pulls
                .iter()
                .any(|p| p.track_id() == Some(track) || p.target == Some(track))
        });
        if !used {
            self.unsubscribe_local(id, track);
        }
    }

    /// Simulcast: make pull `i` of session `id` move to layer `target` at that layer's next
    /// keyframe (asked for now; rate-limited upstream). The current layer keeps flowing until then.
    fn set_layer_target(&mut self, id: SessionId, i: usize, target: TrackId, now: Instant) {
        let Some(pull) = self.sessions.get_mut(&id).and_then(|s| s.pulls.get_mut(i)) else {
            return;
        };
        if pull.target == Some(target) {
            return;
        }
        let old_target = pull.target.take();
        pull.switch_buf.clear();
        if !pull.held.is_empty()
            && let Some(s) = self.sessions.get_mut(&id)
        {
            let pull = &mut s.pulls[i];
            pull.flush_held(&mut s.rtc, now);
            self.mark(id);
        }
        let Some(pull) = self.sessions.get_mut(&id).and_then(|s| s.pulls.get_mut(i)) else {
            return;
        };
        let info = if pull.track_id() == Some(target) {
            None
        } else {
            pull.target = Some(target);
            pull.layers.iter().find(|t| t.id == target).cloned()
        };
        tracing::debug!(session = %id, mid = %pull.mid, target = target.0, "simulcast layer target");
        if let Some(o) = old_target {
            self.release_if_unused(id, o);
        }
        let Some(info) = info else {
            return;
        };
        if !self.ensure_subscribed(id, info) {
            if let Some(p) = self.sessions.get_mut(&id).and_then(|s| s.pulls.get_mut(i)) {
                p.target = None;
            }
            return;
        }
        self.request_keyframe(target, now);
    }

    /// The target layer's keyframe is buffered in the pull and the current layer is at a frame
    /// boundary: switch, and write the buffered packets (behind parameter sets if they lack them).
    fn finish_layer_switch(&mut self, id: SessionId, i: usize, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        let Some(pull) = s.pulls.get_mut(i) else {
            return;
        };
        let Some(target) = pull.target else {
            return;
        };
        let buf = std::mem::take(&mut pull.switch_buf);
        if buf.is_empty() {
            return;
        }
        let old = pull.switch_to_target(now);
        let ps = self
            .tracks
            .get(&target)
            .and_then(|t| t.parameter_sets_packet(buf.iter()));
        let mut written = 0;
        for p in ps.iter().chain(buf.iter()) {
            written += u64::from(pull.write(&mut s.rtc, p, now));
        }
        tracing::debug!(session = %id, mid = %pull.mid, from = ?old.map(|o| o.0), to = target.0, "simulcast layer switched");
        self.stats.packets_out.fetch_add(written, Ordering::Relaxed);
        self.stats.layer_switches.fetch_add(1, Ordering::Relaxed);
        self.mark(id);
        if let Some(old) = old {
            self.release_if_unused(id, old);
        }
    }

    /// Automatic layer choice for every simulcast pull of a session that is not pinned.
    fn choose_layers(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if !s.connected {
            return;
        }
        let mut changes = Vec::new();
        for (i, p) in s.pulls.iter().enumerate() {
            if p.layers.len() < 2 || p.track.is_none() {
                continue;
            }
            let want = match &p.pinned {
                Some(rid) => p.layer_by_rid(rid).map(|t| t.id),
                None => pick_layer(&p.layers, p.track_id(), s.bwe_bps),
            };
            let Some(want) = want else { continue };
            if p.target.or(p.track_id()) != Some(want) {
                changes.push((i, want));
            }
        }
        for (i, want) in changes {
            self.set_layer_target(id, i, want, now);
        }
    }

    fn select_layer(
        &mut self,
        id: SessionId,
        mid: Option<String>,
        rid: Option<String>,
        now: Instant,
    ) -> Result<(), crate::refusal::Refusal> {
        use crate::refusal::Refusal;
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or_else(|| Refusal::no_session())?;
        let mut matched = 0;
        for p in s.pulls.iter_mut() {
            if mid.as_deref().is_some_and(|m| m != &*p.mid) {
                continue;
            }
            if p.layers.len() < 2 {
                if mid.is_some() {
                    return Err(Refusal::unprocessable(
                        "this media has a single layer (the publisher does not send simulcast)",
                    ));
                }
                continue;
            }
            if let Some(rid) = &rid
                && p.layer_by_rid(rid).is_none()
            {
                return Err(Refusal::unprocessable(format!(
                    "no layer (encodingId) {rid:?}; the publisher sends {:?}",
                    p.layers
                        .iter()
                        .filter_map(|t| t.rid.clone())
                        .collect::<Vec<_>>()
                )));
            }
            p.pinned = rid.clone();
            matched += 1;
        }
        if matched == 0 {
            return Err(match mid {
                Some(m) => Refusal::unprocessable(format!("no simulcast media with mid {m:?}")),
                None => Refusal::unprocessable(
                    "no media of this session is simulcast (the publisher sends one layer)",
                ),
            });
        }
        self.choose_layers(id, now);
        Ok(())
    }

    /// A connected viewer's pull begins: video from the cached keyframe run when there is one,
    /// otherwise from the next keyframe (and the publisher is asked for one).
    fn start_pull(&mut self, id: SessionId, i: usize, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        let Some(pull) = s.pulls.get_mut(i) else {
            return;
        };
        let Some(track_id) = pull.track_id() else {
            return;
        };
        let Some(t) = self.tracks.get(&track_id) else {
            return;
        };
        if pull.kind == MediaKind::Audio {
            pull.state = PullState::Live;
            return;
        }
        pull.bound_repair_window(&mut s.rtc, self.ctx.config.viewer_repair_window);
        if t.keyframes.has_keyframe() {
            pull.state = PullState::Live;
            // A run without SPS/PPS (encoder sends them only at start) gets the cached ones first.
            let parameter_sets = t.parameter_sets_packet(t.keyframes.run());
            let rate = t.info.rate_bps.load(Ordering::Relaxed);
            let run = parameter_sets.iter().chain(t.keyframes.run());
            if pull.start_run(&mut s.rtc, run, rate, now) {
                self.paced.push((id, pull.mid));
            }
            self.stats
                .keyframe_runs_served
                .fetch_add(1, Ordering::Relaxed);
            self.mark(id);
        } else {
            pull.state = PullState::WaitKeyframe;
            self.request_keyframe(track_id, now);
        }
    }

    fn on_subscribe(&mut self, track: Arc<TrackInfo>, worker: usize) {
        let Some(peer) = self.ctx.peers.get(worker) else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&track.id) else {
            let _ = peer.send(WorkerMsg::TrackEnded { track: track.id });
            return;
        };
        if !t.remote_workers.contains(&worker) {
            t.remote_workers.push(worker);
        }
        // The run goes first, in order, on the same channel the live packets follow (behind the
        // parameter sets it lacks, so the other worker's run and inspector have them too).
        if let Some((sps, pps)) = t.parameter_sets() {
            let _ = peer.send(WorkerMsg::H264ParameterSets {
                track: track.id,
                sps,
                pps,
            });
        }
        let parameter_sets = t.parameter_sets_packet(t.keyframes.run());
        for p in parameter_sets.iter().chain(t.keyframes.run()) {
            let _ = peer.send(WorkerMsg::Media {
                track: track.id,
                packet: p.clone(),
            });
        }
    }

    fn on_stream_live(&mut self, stream: &str, tracks: &[Arc<TrackInfo>], now: Instant) {
        let mut moves = Vec::new();
        for (id, s) in &self.sessions {
            for (i, pull) in s.pulls.iter().enumerate() {
                if pull.follow.as_deref() != Some(stream) {
                    continue;
                }
                let Some(new) = tracks
                    .iter()
                    .find(|t| t.kind == pull.kind && t.is_primary())
                else {
                    continue;
                };
                if pull.track_id() != Some(new.id) {
                    moves.push((*id, i, pull.track_id(), new.clone()));
                }
            }
        }
        for (id, i, old, mut new) in moves {
            if let Some(old) = old {
                self.unsubscribe_local(id, old);
            }
            if let Some(s) = self.sessions.get_mut(&id) {
                let connected = s.connected;
                if let Some(p) = s.pulls.get_mut(i) {
                    p.retarget(Some(new.clone()), connected, now);
                    p.set_layers_from(tracks);
                    // A pinned layer is taken from the start when the new publisher has it.
                    if let Some(l) = p.pinned.as_deref().and_then(|r| p.layer_by_rid(r)) {
                        p.retarget(Some(l), connected, now);
                    }
                }
                new = s.pulls[i].track.clone().unwrap_or(new);
            }
            self.subscribe_local(id, i, new, now);
        }
    }

    pub(crate) fn unsubscribe_local(&mut self, id: SessionId, track: TrackId) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.subscribers.retain(|s| *s != id);
        if t.subscribers.is_empty() && !t.origin {
            let origin = t.info.origin_worker;
            self.tracks.remove(&track);
            if let Some(o) = self.ctx.peers.get(origin) {
                let _ = o.send(WorkerMsg::Unsubscribe {
                    track,
                    worker: self.index,
                });
            }
        }
    }

    /// The source track is gone: its viewers wait (WHEP viewers resume on republish).
    fn detach_all(&mut self, subscribers: &[SessionId], track: TrackId, now: Instant) {
        for id in subscribers {
            if let Some(s) = self.sessions.get_mut(id) {
                let connected = s.connected;
                for p in s.pulls.iter_mut() {
                    if p.track_id() == Some(track) {
                        p.retarget(None, connected, now);
                    } else if p.target == Some(track) {
                        p.target = None;
                        p.switch_buf.clear();
                    }
                }
            }
        }
    }

    fn request_keyframe(&mut self, track: TrackId, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if !t.origin {
            if let Some(o) = self.ctx.peers.get(t.info.origin_worker) {
                let _ = o.send(WorkerMsg::KeyframeRequest { track });
            }
            return;
        }
        self.stats
            .keyframe_requests_received
            .fetch_add(1, Ordering::Relaxed);
        t.keyframe_requests.request(now);
        if !self.pending_keyframes.contains(&track) {
            self.pending_keyframes.push(track);
        }
    }

    fn flush_keyframe_requests(&mut self, now: Instant) {
        let mut still = Vec::new();
        for track in std::mem::take(&mut self.pending_keyframes) {
            let Some(t) = self.tracks.get_mut(&track) else {
                continue;
            };
            if t.keyframe_requests.poll(now)
                && let Some(s) = self.sessions.get_mut(&t.info.session)
            {
                self.touching = Some(t.info.session);
                let rid = t.info.rid.as_deref().map(str0m::media::Rid::from);
                if let Some(rx) = s.rtc.direct_api().stream_rx_by_mid(t.info.mid, rid) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                    self.stats
                        .keyframe_requests_sent
                        .fetch_add(1, Ordering::Relaxed);
                }
                let id = s.id;
                self.mark(id);
            }
            if self
                .tracks
                .get(&track)
                .is_some_and(|t| t.keyframe_requests.poll_timeout().is_some())
            {
                still.push(track);
            }
        }
        self.pending_keyframes = still;
    }

    /// One packet of a track enters this worker: cache it once, give it to each local viewer,
    /// and (origin only) to each other worker with viewers.
    fn fan_out(&mut self, track: TrackId, pkt: SharedPacket, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.cache.insert(pkt.clone(), now);
        t.keyframes.push(&pkt);
        let quirks = t.inspect_h264(&pkt);
        if quirks.b_frames > 0 {
            self.stats
                .h264_bframes
                .fetch_add(quirks.b_frames, Ordering::Relaxed);
        }
        if quirks.idr_without_parameter_sets > 0 {
            self.stats
                .h264_idr_without_parameter_sets
                .fetch_add(quirks.idr_without_parameter_sets, Ordering::Relaxed);
        }
        t.packets += 1;
        t.bytes += pkt.payload.len() as u64;
        t.measure(pkt.payload.len(), now);
        match t.highest_seq {
            Some(h) if pkt.seq > h + 1 => {
                t.seq_gaps += pkt.seq - h - 1;
                tracing::debug!(
                    track = t.info.id.0,
                    from = h,
                    to = pkt.seq,
                    origin = t.origin,
                    "sequence gap"
                );
            }
            _ => {}
        }
        if t.highest_seq.is_none_or(|h| pkt.seq > h) {
            t.highest_seq = Some(pkt.seq);
        }
        if pkt.keyframe_start {
            t.keyframes_seen += 1;
        }
        if t.origin {
            t.info.packets.fetch_add(1, Ordering::Relaxed);
            if pkt.keyframe_start && t.keyframes.has_keyframe() {
                t.info.keyframes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if t.origin {
            for w in &t.remote_workers {
                if let Some(peer) = self.ctx.peers.get(*w) {
                    let _ = peer.send(WorkerMsg::Media {
                        track,
                        packet: pkt.clone(),
                    });
                    self.stats
                        .cross_worker_packets
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let mut written = 0u64;
        let rate = t.info.rate_bps.load(Ordering::Relaxed);
        let mut paced = Vec::new();
        // Parameter sets for viewers starting live at a keyframe that lacks them (built on demand).
        let mut parameter_sets: Option<Option<SharedPacket>> = None;
        // Simulcast pulls ready to switch to their target layer.
        let mut switches = Vec::new();
        // A pull skipped a target keyframe older than what it has sent: ask for a fresh one.
        let mut rerequest = false;
        for id in &t.subscribers {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            self.touching = Some(*id);
            let mut wrote = false;
            for (i, pull) in s.pulls.iter_mut().enumerate() {
                if pull.target == Some(track) {
                    if pull.pacer.is_some() {
                        // Catching up with a replayed run: switch once live.
                        continue;
                    }
                    // The layer this pull moves to: from its next keyframe on, kept until the
                    // current layer's frame is complete.
                    // A keyframe run replayed by the origin (this worker's copy of the layer is
                    // new) is in the past: only a keyframe that is arriving now will do.
                    if pull.state == PullState::WaitConnect
                        || (pull.switch_buf.is_empty()
                            && (!pkt.keyframe_start
                                || now.saturating_duration_since(pkt.received) > LIVE_KEYFRAME))
                    {
                        continue;
                    }
                    if pull.switch_buf.len() >= 4096 {
                        pull.switch_buf.clear();
                        continue;
                    }
                    if pull.switch_buf.is_empty() {
                        let decision = pull.switch_decision(&t.info, &pkt);
                        tracing::debug!(
                            session = %id,
                            mid = %pull.mid,
                            ?decision,
                            reported = t.info.sender_clock.capture_time(pkt.rtp_time).is_some(),
                            "simulcast switch point"
                        );
                        match decision {
                            SwitchAt::Skip => {
                                rerequest = true;
                                continue;
                            }
                            SwitchAt::DropHeld => pull.held.clear(),
                            SwitchAt::FlushHeld => wrote |= pull.flush_held(&mut s.rtc, now),
                        }
                    }
                    pull.switch_buf.push(pkt.clone());
                    if pull.at_frame_end || pull.state != PullState::Live {
                        switches.push((*id, i));
                    }
                    continue;
                }
                if pull.track_id() != Some(track) {
                    continue;
                }
                match pull.state {
                    PullState::WaitConnect => continue,
                    PullState::WaitKeyframe if !pkt.keyframe_start => continue,
                    PullState::WaitKeyframe => {
                        pull.state = PullState::Live;
                        let ps =
                            parameter_sets.get_or_insert_with(|| t.parameter_sets_packet([&pkt]));
                        // This keyframe may start a run another worker or a parent node replays
                        // in one burst: pace it like our own. A live one passes straight through
                        // (its first frame is free, and the pacer is gone once it has drained).
                        if pull.start_run(&mut s.rtc, ps.iter().chain([&pkt]), rate, now) {
                            paced.push((*id, pull.mid));
                        }
                        wrote = true;
                        continue;
                    }
                    PullState::Live => {}
                }
                if let Some(pacer) = pull.pacer.as_mut() {
                    pacer.push(pkt.clone());
                    continue;
                }
                if pull.target.is_some() && pull.switch_buf.is_empty() {
                    // A switch is pending: hold this layer's latest frame back by one frame.
                    if pull
                        .held
                        .first()
                        .is_some_and(|h| h.rtp_time != pkt.rtp_time)
                    {
                        wrote |= pull.flush_held(&mut s.rtc, now);
                    }
                    pull.held.push(pkt.clone());
                    continue;
                }
                wrote |= pull.write(&mut s.rtc, &pkt, now);
                if pull.at_frame_end && !pull.switch_buf.is_empty() {
                    switches.push((*id, i));
                }
            }
            if wrote {
                written += 1;
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(*id);
                }
            }
        }
        self.stats.packets_out.fetch_add(written, Ordering::Relaxed);
        self.paced.extend(paced);
        for (id, i) in switches {
            self.finish_layer_switch(id, i, now);
        }
        if rerequest {
            self.request_keyframe(track, now);
        }
    }

    fn on_rtp(&mut self, id: SessionId, rtp: RtpPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.packets_in += 1;
        if !s.join.reported(Role::Publisher)
            && let Some(marks) = s
                .join
                .first_media(Role::Publisher, rtp.timestamp, &self.ctx.join)
        {
            export_setup(&self.ctx, s, Role::Publisher, marks);
        }
        let Some(track) = s.track_for_ssrc(rtp.header.ssrc) else {
            return;
        };
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let pt = *rtp.header.payload_type;
        let codec = t.codec_of(pt);
        let packet = Arc::new(MediaPacket {
            seq: *rtp.seq_no,
            rtp_time: rtp.time.numer(),
            marker: rtp.header.marker,
            keyframe_start: relay_proto::is_keyframe_start(codec, &rtp.payload),
            payload: rtp.payload,
            pt,
            received: rtp.timestamp,
        });
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.fan_out(track, packet, rtp.timestamp);
    }

    fn on_event(&mut self, id: SessionId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(p) => self.on_rtp(id, p),
            Event::MediaEgressStats(st) => {
                // Viewers with RTX are repaired by str0m from its own send buffer; this is the
                // only place their NACKs show. Same-SSRC repair counts its own (`on_nack`).
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                if s.same_ssrc_repair {
                    return;
                }
                let i = match s.egress_nacks.iter().position(|(m, _)| *m == st.mid) {
                    Some(i) => i,
                    None => {
                        s.egress_nacks.push((st.mid, 0));
                        s.egress_nacks.len() - 1
                    }
                };
                let seen = &mut s.egress_nacks[i].1;
                let new = st.nacks.saturating_sub(*seen);
                *seen = (*seen).max(st.nacks);
                self.stats.nacks_rtx.fetch_add(new, Ordering::Relaxed);
            }
            Event::EgressBitrateEstimate(kind) => {
                let bps = match kind {
                    str0m::bwe::BweKind::Twcc { estimate, .. } => estimate.as_u64(),
                    str0m::bwe::BweKind::Remb { estimate, .. } => estimate.as_u64(),
                    _ => return,
                };
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.bwe_bps = Some(bps);
                }
                self.choose_layers(id, now);
            }
            Event::Connected => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                s.connected = true;
                s.join.dtls_connected(now);
                tracing::info!(session = %id, after_ms = now.duration_since(s.created).as_millis() as u64, "connected");
                self.ctx.registry.connected(id);
                let n = s.pulls.len();
                for i in 0..n {
                    self.start_pull(id, i, now);
                }
                self.choose_layers(id, now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Connected) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.join.ice_connected(now);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // ICE-lite: consent from the client stopped. The client reconnects with a new POST.
                if let Some(s) = self.sessions.get_mut(&id) {
                    tracing::info!(session = %id, "ICE disconnected");
                    s.rtc.disconnect();
                }
            }
            Event::RawPacket(raw) => {
                tracing::trace!(session = %id, ?raw, "raw packet");
                if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                    self.on_viewer_nack(id, &nack, now);
                }
            }
            Event::SenderFeedback(fb) => {
                // A publisher's sender report: the track's RTP time ↔ capture wallclock.
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let info = fb.sender_info;
                let Some(track) = s.track_for_ssrc(info.ssrc) else {
                    return;
                };
                if let Some(t) = s.pushed.iter().find(|t| t.id == track) {
                    // str0m gives the clock rate of the last packet received; none yet, no use.
                    let rate = info.rtp_time.frequency().get();
                    if rate >= 1000 {
                        t.sender_clock
                            .update(info.rtp_time.numer() as u32, info.ntp_time, rate);
                    }
                }
            }
            Event::ChannelData(d) => self.on_channel_data(id, d, now),
            Event::ChannelOpen(channel, label) => self.on_channel_open(id, channel, label),
            Event::ChannelClose(channel) => self.on_channel_close(id, channel),
            Event::KeyframeRequest(KeyframeRequest { mid, .. }) => {
                let track = self
                    .sessions
                    .get(&id)
                    .and_then(|s| s.pulls.iter().find(|p| p.mid == mid))
                    .and_then(|p| p.track_id());
                if let Some(track) = track {
                    self.request_keyframe(track, now);
                }
            }
            _ => {}
        }
    }

    /// A viewer without RTX lost packets: resend them from this worker's cache on the media SSRC,
    /// with the same rewritten sequence numbers (the repair goes no further upstream here).
    fn on_viewer_nack(&mut self, id: SessionId, nack: &Nack, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        if !s.same_ssrc_repair {
            return;
        }
        let Some(i) = s.pulls.iter().position(|p| {
            let mut api = s.rtc.direct_api();
            api.stream_tx_by_mid(p.mid, None)
                .is_some_and(|tx| tx.ssrc() == nack.ssrc)
        }) else {
            return;
        };
        let pull = &mut s.pulls[i];
        let Some(t) = pull.track_id().and_then(|t| self.tracks.get(&t)) else {
            return;
        };
        let Some(last) = pull.last_out_seq() else {
            return;
        };
        let mut stats = relay_proto::NackStats::default();
        let mut resend = Vec::new();
        for entry in nack.reports.iter() {
            for seq in entry.into_iter(last.into()) {
                if let Some(p) = stats.answer(&t.cache, &pull.rewriter, *seq) {
                    resend.push(p.clone());
                }
            }
        }
        for p in &resend {
            pull.write(&mut s.rtc, p, now);
        }
        let r = Ordering::Relaxed;
        self.stats.nacks_received.fetch_add(stats.received, r);
        self.stats.nacks_answered.fetch_add(stats.answered, r);
        self.stats.nacks_missed.fetch_add(stats.missed, r);
        self.mark(id);
    }

    /// Write what each paced keyframe run lets go now (`run_pacer`).
    fn pace(&mut self, now: Instant) {
        let mut still: Vec<(SessionId, Mid)> = Vec::new();
        let mut written = 0;
        for (id, mid) in std::mem::take(&mut self.paced) {
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            self.touching = Some(id);
            let Some(pull) = s.pulls.iter_mut().find(|p| p.mid == mid) else {
                continue;
            };
            let n = pull.pace(&mut s.rtc, now);
            if pull.pacer.is_some() {
                still.push((id, mid));
            }
            if n > 0 {
                written += n;
                self.mark(id);
            }
        }
        // A pull whose run was restarted was listed twice; sorting keeps this O(n log n) when
        // a join storm has hundreds of runs in flight.
        still.sort_unstable();
        still.dedup();
        self.paced = still;
        self.stats.packets_out.fetch_add(written, Ordering::Relaxed);
    }

    /// Poll every session that had input until it has nothing more to say, sending as it goes:
    /// a keyframe for hundreds of viewers is tens of milliseconds of encryption, and the first
    /// viewers' copies should not wait for the last one's. Each viewer's packets of the batch
    /// still leave together (one GSO message), as every write happened before the polling.
    async fn drive_and_send(&mut self, now: Instant) {
        loop {
            self.guarded(|w| w.drive(now));
            self.send().await;
            if self.dirty.is_empty() {
                return;
            }
        }
    }

    /// Poll dirty sessions until about `SEND_EVERY` datagrams are waiting to be sent.
    fn drive(&mut self, now: Instant) {
        while self.out.len() < SEND_EVERY
            && let Some(id) = self.dirty.pop()
        {
            self.drive_session(id, now);
        }
    }

    /// Poll one session until it has nothing more to say, then act on its events (which may
    /// mark other sessions for `drive`).
    fn drive_session(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        s.dirty = false;
        let mut events = Vec::new();
        let mut due_now = 0;
        let alive = loop {
            if !s.rtc.is_alive() {
                break false;
            }
            match s.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.out.push(t),
                Ok(Output::Timeout(t)) if t <= now && due_now < IMMEDIATE_TIMEOUTS => {
                    // str0m sends a written packet only after a timeout has stamped it (its
                    // send queue asks for one "already happened"): handle it here rather than
                    // through the timer set and another loop turn and poll round per viewer.
                    due_now += 1;
                    s.handle_timeout(now);
                }
                Ok(Output::Timeout(t)) => {
                    if s.timeout != Some(t) {
                        if let Some(old) = s.timeout.take() {
                            self.timers.remove(&(old, id));
                        }
                        self.timers.insert((t, id));
                        s.timeout = Some(t);
                    }
                    break true;
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    tracing::info!(session = %id, error = %e, "session failed");
                    s.rtc.disconnect();
                    break false;
                }
            }
        };
        for e in events {
            self.on_event(id, e, now);
        }
        if !alive {
            self.reap(id, now);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some((t, id)) = self.timers.first().copied() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(s) = self.sessions.get_mut(&id) {
                self.touching = Some(id);
                s.timeout = None;
                s.handle_timeout(now);
            }
            self.mark(id);
        }
    }

    /// Reap sessions whose client vanished: never connected, or silent past the idle timeout.
    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        let config = &self.ctx.config;
        let mut dead = Vec::new();
        for (id, s) in &mut self.sessions {
            let stale = if s.connected {
                now.duration_since(s.last_input) > config.idle_timeout
            } else {
                now.duration_since(s.created) > config.connect_timeout
            };
            if stale {
                tracing::info!(session = %id, connected = s.connected, "reaping silent session");
                dead.push(*id);
            }
            // A viewer's first media packet is noted as it is written; reported from here, so
            // the packet path only stores an instant.
            if s.connected
                && !s.join.reported(Role::Viewer)
                && let Some(first) = s.pulls.iter().filter_map(|p| p.first_write).min()
                && let Some(marks) = s.join.first_media(Role::Viewer, first, &self.ctx.join)
            {
                export_setup(&self.ctx, s, Role::Viewer, marks);
            }
        }
        for id in dead {
            self.close_and_reap(id, now);
        }
        // WHEP viewers' channels whose publisher channel was not open yet.
        let waiting: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.channels.wanted.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.match_wanted(id);
        }
        // Layer bitrates change: re-evaluate the automatic simulcast choice.
        let layered: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.pulls.iter().any(|p| p.layers.len() > 1))
            .map(|(id, _)| *id)
            .collect();
        for id in layered {
            self.choose_layers(id, now);
        }
    }

    /// Remove a session and everything that hangs off it.
    fn reap(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(t) = s.timeout {
            self.timers.remove(&(t, id));
        }
        // A session still registered here ends without a DELETE (after one, control::close has
        // already removed it): the registry remembers it for the client's DELETE that may follow.
        let entry = self.ctx.registry.end_session(id);
        if let (Some(b), Some(e)) = (self.ctx.bridge, entry)
            && let (crate::registry::Role::Whip, Some(stream)) = (e.role, e.stream)
            && let Some(bridge) = self.ctx.peers.get(b)
        {
            let _ = bridge.send(WorkerMsg::StreamGone {
                stream,
                session: id,
            });
        }
        self.ctx.demux.send(DemuxUpdate::Remove { session: id });
        for info in &s.pushed {
            self.end_track(info.id, now);
        }
        self.end_channels(id, &s.channels);
        for pull in &s.pulls {
            for track in pull.track_id().into_iter().chain(pull.target) {
                self.unsubscribe_local(id, track);
            }
        }
        crate::heap_trim::shrink_map(&mut self.sessions);
        crate::heap_trim::shrink_map(&mut self.tracks);
        tracing::info!(session = %id, packets_in = s.packets_in, "session closed");
        self.update_gauges();
    }

    /// A pushed track ends: other workers drop their copies, local viewers wait.
    pub(crate) fn end_track(&mut self, track: TrackId, now: Instant) {
        if let Some(t) = self.tracks.remove(&track) {
            for w in &t.remote_workers {
                if let Some(peer) = self.ctx.peers.get(*w) {
                    let _ = peer.send(WorkerMsg::TrackEnded { track });
                }
            }
            self.detach_all(&t.subscribers, track, now);
        }
    }

    pub(crate) fn update_gauges(&self) {
        self.stats
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
        self.stats
            .tracks
            .store(self.tracks.len(), Ordering::Relaxed);
    }

    async fn send(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        // ICE-TCP sessions are few: one scan finds none in the common case.
        if out.iter().any(|t| t.proto != Protocol::Udp) {
            if let Some(tcp) = &self.ctx.ice_tcp {
                tcp.send(out.iter());
            }
            out.retain(|t| t.proto == Protocol::Udp);
        }
        self.ctx.udp.send_batch(&out).await;
        self.out = out;
        self.out.clear();
    }
}

/// The simulcast layer to forward: layers ranked by measured bitrate (highest = top; offer order
/// until measured). Without an estimate, the top layer; otherwise the highest layer whose bitrate
/// fits in 0.9 × the estimate — 0.75 × for a layer above the current one (hysteresis).
pub(crate) fn pick_layer(
    layers: &[Arc<TrackInfo>],
    current: Option<TrackId>,
    estimate_bps: Option<u64>,
) -> Option<TrackId> {
    let rate = |t: &TrackInfo| t.rate_bps.load(Ordering::Relaxed);
    let mut ranked: Vec<(usize, &Arc<TrackInfo>)> = layers.iter().enumerate().collect();
    ranked.sort_by(|(ia, a), (ib, b)| rate(b).cmp(&rate(a)).then(ia.cmp(ib)));
    let top = ranked.first()?.1.id;
    let Some(est) = estimate_bps else {
        return Some(top);
    };
    if ranked.iter().any(|(_, t)| rate(t) == 0) {
        // Not all layers measured yet (or one is not sent): stay, or start on the top.
        return Some(current.unwrap_or(top));
    }
    let current_rate = layers
        .iter()
        .find(|t| Some(t.id) == current)
        .map_or(0, |t| rate(t));
    for (_, t) in &ranked {
        let margin = if rate(t) > current_rate { 0.75 } else { 0.9 };
        if rate(t) as f64 <= margin * est as f64 {
            return Some(t.id);
        }
    }
    ranked.last().map(|(_, t)| t.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};
    use crate::peer::PeerFactory;

    fn worker() -> (Worker, PeerFactory) {
        let mut config = Config::load(Cli::default()).expect("defaults");
        config.udp_listen = "127.0.0.1:0".parse().expect("addr");
        let udp = UdpShell::bind(config.udp_listen, Default::default()).expect("bind");
        let peers = PeerFactory::new(&config, udp.local_addr()).expect("peers");
        let (tx, _rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(WorkerCtx {
            peers: vec![tx],
            udp,
            demux: DemuxFeed::default(),
            ice_tcp: None,
            registry: Arc::new(Registry::default()),
            config: Arc::new(config),
            stats: vec![Arc::default()],
            bridge: None,
            join: Arc::default(),
            spans: relay_shell::otlp_push::SpanSink::disabled(),
        });
        (Worker::new(0, ctx), peers)
    }

    /// Session `id` on `w`, a fresh `Rtc` with `pulls`.
    fn adopt(w: &mut Worker, peers: &PeerFactory, id: SessionId, pulls: Vec<Pull>, now: Instant) {
        let (rtc, _) = peers.empty(now);
        w.adopt(
            Adopt {
                id,
                rtc,
                same_ssrc_repair: false,
                pushed: vec![],
                pulls,
                requested: RequestContext::now(),
            },
            now,
        );
    }

    fn layer(id: u64, rid: &str, bps: u64) -> Arc<TrackInfo> {
        let info = TrackInfo::new(
            TrackId(id),
            SessionId::from_bytes([1; 16]),
            format!("video.{rid}"),
            MediaKind::Video,
            str0m::media::Mid::from("1"),
            vec![],
            0,
        )
        .layer(rid.into(), TrackId(1));
        info.rate_bps.store(bps, Ordering::Relaxed);
        Arc::new(info)
    }

    #[test]
    fn layer_choice_follows_the_estimate_with_hysteresis() {
        // Offered low first (some browsers): the order comes from the measured bitrates.
        let layers = vec![
            layer(3, "l", 300_000),
            layer(2, "m", 1_000_000),
            layer(1, "h", 3_000_000),
        ];
        let pick =
            |cur: u64, est: Option<u64>| pick_layer(&layers, Some(TrackId(cur)), est).map(|t| t.0);
        // No estimate (loopback, no TWCC yet): the top layer.
        assert_eq!(pick(3, None), Some(1));
        // Plenty: top. Just enough for h at 0.9 but not at 0.75: stay on h, do not go up to it.
        assert_eq!(pick(2, Some(10_000_000)), Some(1));
        assert_eq!(pick(1, Some(3_500_000)), Some(1));
        assert_eq!(pick(2, Some(3_500_000)), Some(2));
        // Too little for the current layer: down.
        assert_eq!(pick(1, Some(1_200_000)), Some(2));
        assert_eq!(pick(1, Some(100_000)), Some(3));
        // A layer not measured yet (not sent): keep the current one.
        let unmeasured = vec![layer(1, "h", 3_000_000), layer(2, "m", 0)];
        assert_eq!(
            pick_layer(&unmeasured, Some(TrackId(2)), Some(1)).map(|t| t.0),
            Some(2)
        );
    }

    /// Issue 10: a paced keyframe run must survive an earlier m-line of its session closing
    /// (`tracks/close` removes that pull and shifts the later ones).
    #[tokio::test]
    async fn a_paced_run_survives_an_earlier_pull_closing() {
        let (mut w, peers) = worker();
        let now = Instant::now();
        let id = SessionId::random();
        let pull = |mid: &str| Pull::new(Mid::from(mid), MediaKind::Video, None, None);
        adopt(&mut w, &peers, id, vec![pull("0"), pull("1")], now);
        let mut pacer = crate::run_pacer::RunPacer::new(1_000_000, now);
        for seq in 0..3 {
            pacer.push(Arc::new(MediaPacket {
                seq,
                rtp_time: 0,
                marker: seq == 2,
                pt: 96,
                payload: vec![0u8; 1000].into(),
                keyframe_start: seq == 0,
                received: now,
            }));
        }
        let s = w.sessions.get_mut(&id).expect("adopted");
        s.pulls[1].pacer = Some(pacer);
        w.paced.push((id, Mid::from("1")));
        // The API closes mid 0: the run of mid 1 moves to index 0.
        s.pulls.remove(0);
        w.pace(now + Duration::from_secs(1));
        let s = w.sessions.get(&id).expect("session");
        assert!(
            s.pulls[0].pacer.is_none(),
            "the run of mid 1 was not worked through: its queue would only grow"
        );
    }

    #[tokio::test]
    async fn a_panic_inside_a_session_closes_that_session_only() {
        let (mut w, peers) = worker();
        let now = Instant::now();
        let (a, b) = (SessionId::random(), SessionId::random());
        for id in [a, b] {
            w.guarded(|w| adopt(w, &peers, id, vec![], now));
        }
        assert_eq!(w.sessions.len(), 2);
        w.guarded(|w| {
            w.touching = Some(a);
            panic!("a bug inside str0m");
        });
        assert!(
            !w.sessions.contains_key(&a),
            "the panicking session is gone"
        );
        assert!(w.sessions.contains_key(&b), "the other session lives on");
        assert_eq!(w.stats.panics.load(Ordering::Relaxed), 1);
        w.guarded(|w| w.drive(now));
        assert!(
            w.sessions.contains_key(&b),
            "and the worker keeps driving it"
        );
    }
}
