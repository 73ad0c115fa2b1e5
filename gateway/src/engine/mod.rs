//! The media engine: one worker's shard of the node's sessions as a sans-IO state machine, in
//! the style of str0m and quinn-proto. Datagrams, commands, messages along tracks and channels,
//! and time go in (`handle_*`); datagrams to send (`transmits`), messages for other tasks
//! (`poll_output`) and the next deadline (`poll_timeout`) come out. No socket, channel, task or
//! clock inside: the worker's tokio shell (`worker`) does the IO, and tests drive the engine in
//! memory with a simulated clock (`gateway/tests/engine_sim.rs`).
//!
//! The engine owns each session's `Rtc` (one owner, no lock on the packet path) and its own copy
//! of every track its sessions push or pull. A packet published here reaches local viewers
//! directly and every other task with subscribers exactly once (an `Arc`, never a copy).
//!
//! One concept per file: `lifecycle` (adopt, close, reap), `events` (driving an `Rtc`),
//! `fan_out`, `pull` (subscriptions, serving a new subscriber), `simulcast`, `repair` (NACKs),
//! `keyframes` (requests), `timers`, `panic_guard`, `negotiation`, `channels` (data channels),
//! `outbox` (what leaves).

mod channels;
mod events;
mod fan_out;
mod keyframes;
mod lifecycle;
mod negotiation;
mod outbox;
mod panic_guard;
mod pull;
mod repair;
mod replication;
mod simulcast;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use str0m::IceCreds;
use str0m::media::Mid;
use str0m::net::Transmit;

pub use crate::replica::SessionReplication;
pub use outbox::EngineOutput;
pub use simulcast::pick_layer;

use crate::channel_link::ChannelMsg;
use crate::config::Config;
use crate::datagram::Datagram;
use crate::ids::{SessionId, TrackId};
use crate::join_metrics::{JoinMetrics, RequestContext};
use crate::negotiation::{Negotiated, Negotiation};
use crate::refusal::Refusal;
use crate::registry::{Registry, TrackInfo};
use crate::session::{Pull, Session, SessionView};
use crate::track::TrackState;
use crate::track_link::{FromOrigin, ToOrigin, TrackMsg};

/// A new session for the engine, negotiated by the control plane.
pub struct Adopt {
    /// The new session's id.
    pub id: SessionId,
    /// Its str0m peer connection, negotiated and ready for ICE.
    pub rtc: str0m::Rtc,
    /// Answer this viewer's NACKs from the cache on its media SSRC (it has no RTX).
    pub same_ssrc_repair: bool,
    /// The tracks it publishes.
    pub pushed: Vec<Arc<TrackInfo>>,
    /// The tracks it receives, one per m-line.
    pub pulls: Vec<Pull>,
    /// The HTTP request that made the session: when it arrived, its trace (`join_metrics`).
    pub requested: RequestContext,
    /// Replicated so that another gateway can resume it; resumed here from a replica.
    pub replication: Option<Box<SessionReplication>>,
}

/// Counters readable from the HTTP side without asking the worker.
#[derive(Default)]
pub struct WorkerStats {
    /// Sessions on this engine.
    pub sessions: AtomicUsize,
    /// Tracks this engine holds a copy of.
    pub tracks: AtomicUsize,
    /// RTP packets received from publishers.
    pub packets_in: AtomicU64,
    /// Packets written to viewers.
    pub packets_out: AtomicU64,
    /// Packets handed to other workers (once per worker with viewers).
    pub cross_worker_packets: AtomicU64,
    /// Viewers started from a cached keyframe run.
    pub keyframe_runs_served: AtomicU64,
    /// Keyframe requests from viewers and joins, before rate limiting.
    pub keyframe_requests_received: AtomicU64,
    /// PLIs sent to publishers.
    pub keyframe_requests_sent: AtomicU64,
    /// Panics caught inside str0m (each cost one session).
    pub panics: AtomicU64,
    /// Data channel messages a subscriber missed (channel not open, or too much unsent).
    pub channel_drops: AtomicU64,
    /// Data channel messages received from publishers.
    pub channel_messages_received: AtomicU64,
    /// Data channel messages written to subscribers.
    pub channel_messages_delivered: AtomicU64,
    /// NACKed packets from viewers without RTX: asked for, resent from the cache, not found.
    pub nacks_received: AtomicU64,
    /// … resent from the packet cache.
    pub nacks_answered: AtomicU64,
    /// … no longer in the packet cache.
    pub nacks_missed: AtomicU64,
    /// NACK messages from viewers with RTX (str0m answers those).
    pub nacks_rtx: AtomicU64,
    /// H264 quirks of published tracks (origin worker only): see `TrackState::inspect_h264`.
    pub h264_bframes: AtomicU64,
    /// IDRs whose SPS/PPS were not sent since the previous one.
    pub h264_idr_without_parameter_sets: AtomicU64,
    /// Simulcast layer switches done for viewers.
    pub layer_switches: AtomicU64,
}

/// What an engine is given and shares with the rest of the node: configuration, the node's
/// session and track directory, counters. No IO handle.
pub struct EngineCtx {
    /// The node's directory of sessions, streams and tracks.
    pub registry: Arc<Registry>,
    /// The node's configuration.
    pub config: Arc<Config>,
    /// This engine's counters.
    pub stats: Arc<WorkerStats>,
    /// Join timing histograms (`join_metrics`).
    pub join: Arc<JoinMetrics>,
    /// Index of the cluster bridge among the node's mailboxes, when the node is in a cluster.
    pub bridge: Option<usize>,
    /// Build setup spans (`EngineOutput::Span`): only when traces are exported.
    pub spans: bool,
}

const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A simulcast layer switch waits for a keyframe received at most this long ago (not one from a
/// replayed keyframe run, which would step back in time).
const LIVE_KEYFRAME: Duration = Duration::from_millis(100);
/// Datagrams `drive` lets queue before it returns for them to be sent: enough for a few
/// `sendmmsg` calls' worth of GSO messages, few enough that a big frame's first viewers get it
/// ~1 ms after it arrived.
const SEND_EVERY: usize = 256;
/// Timeouts already due that one `drive_session` handles itself before leaving the rest to the
/// timer set (a bound, so a session that keeps asking for "now" cannot hold the engine).
const IMMEDIATE_TIMEOUTS: u32 = 4;

/// One worker's sessions and tracks, as a state machine (module docs).
pub struct Engine {
    /// This engine's index among the node's mailboxes (what a track's `origin_worker` names).
    index: usize,
    ctx: Arc<EngineCtx>,
    stats: Arc<WorkerStats>,
    /// Boxed: a `Session` (its `Rtc` inline) is kilobytes, and a map never shrinks, so inline
    /// values would keep a flood's peak (capacity × size) allocated after the sessions are gone.
    sessions: HashMap<SessionId, Box<Session>>,
    tracks: HashMap<TrackId, TrackState>,
    timers: BTreeSet<(Instant, SessionId)>,
    dirty: Vec<SessionId>,
    pending_keyframes: Vec<TrackId>,
    transmits: Vec<Transmit>,
    outbox: outbox::Outbox,
    /// Pulls (session, mid) working through a paced keyframe run. By mid, not by index: closing
    /// an earlier m-line (`tracks/close`) removes a pull and shifts the ones after it.
    paced: Vec<(SessionId, Mid)>,
    next_housekeeping: Instant,
    /// The session whose `Rtc` is being called, so a panic inside str0m costs that session only.
    touching: Option<SessionId>,
    /// The latest time the engine was given (the panic guard reaps at it).
    latest: Instant,
}

impl Engine {
    /// An engine with no sessions yet, at `index` among the node's mailboxes.
    pub fn new(index: usize, ctx: Arc<EngineCtx>, now: Instant) -> Engine {
        let stats = ctx.stats.clone();
        Engine {
            index,
            ctx,
            stats,
            sessions: HashMap::new(),
            tracks: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            pending_keyframes: Vec::new(),
            transmits: Vec::new(),
            outbox: outbox::Outbox::default(),
            paced: Vec::new(),
            next_housekeeping: now + HOUSEKEEPING,
            touching: None,
            latest: now,
        }
    }

    // --- input ----------------------------------------------------------------------------------

    /// Datagrams from the sockets, each its own guarded step so a panic costs only the session
    /// it was for. Each session's outputs are drained at once (str0m wants that after an input).
    pub fn handle_datagrams(&mut self, batch: Vec<Datagram>) {
        for d in batch {
            self.latest = self.latest.max(d.at);
            self.guarded(|e| e.on_datagram(d));
        }
    }

    /// A message along a track, from the track's origin or one of its subscribers.
    pub fn handle_track(&mut self, m: TrackMsg, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| match m {
            TrackMsg::FromOrigin(FromOrigin::Media { track, packet }) => {
                e.fan_out(track, packet, now)
            }
            TrackMsg::FromOrigin(FromOrigin::Run {
                track,
                packets,
                parameter_sets,
            }) => e.on_run(track, &packets, parameter_sets, now),
            TrackMsg::FromOrigin(FromOrigin::TrackEnded { track }) => e.end_track(track, now),
            TrackMsg::ToOrigin(ToOrigin::Subscribe { track, worker }) => {
                e.on_subscribe(track, worker)
            }
            TrackMsg::ToOrigin(ToOrigin::Replay { track, worker }) => e.send_run(track, worker),
            TrackMsg::ToOrigin(ToOrigin::Unsubscribe { track, worker }) => {
                e.on_unsubscribe(track, worker)
            }
            TrackMsg::ToOrigin(ToOrigin::KeyframeRequest { track }) => {
                e.request_keyframe(track, now)
            }
        });
    }

    /// A message along a data channel.
    pub fn handle_channel(&mut self, m: ChannelMsg, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| match m {
            ChannelMsg::Subscribe {
                publisher,
                name,
                subscriber,
            } => e.add_channel_subscriber(publisher, &name, subscriber),
            ChannelMsg::Unsubscribe {
                publisher,
                name,
                subscriber,
            } => e.remove_channel_subscriber(publisher, &name, subscriber),
            ChannelMsg::Reply {
                publisher,
                name,
                binary,
                data,
            } => e.write_reply(publisher, &name, binary, &data),
            ChannelMsg::Message { to, binary, data } => e.deliver(to, binary, &data, now),
        });
    }

    /// A new session from the control plane.
    pub fn adopt(&mut self, a: Adopt, now: Instant) {
        self.latest = self.latest.max(now);
        let id = a.id;
        self.guarded_for(id, |e| e.adopt_session(a, now));
    }

    /// End a session the way WebRTC says (RTCP BYE, DTLS close_notify), then reap it.
    pub fn close(&mut self, session: SessionId, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded_for(session, |e| e.close_and_reap(session, now));
    }

    /// Drop a session another gateway serves too (`Command::Release`), if `when` says so.
    pub fn release(&mut self, session: SessionId, when: crate::replica::ReleaseWhen, now: Instant) {
        use crate::replica::ReleaseWhen;
        self.latest = self.latest.max(now);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let keep = match when {
            ReleaseWhen::Always => false,
            ReleaseWhen::NotConnected => s.connected,
            ReleaseWhen::Untouched => s.connected || s.last_input > s.created,
        };
        if keep {
            tracing::info!(%session, ?when, "another gateway serves this session too; kept here");
            return;
        }
        tracing::info!(%session, ?when, "another gateway serves this session: released here");
        // Not ended: no tombstone may tell the cluster it is gone.
        s.replication = None;
        self.outbox.released(session);
        self.guarded_for(session, |e| e.reap(session, now));
    }

    /// Trickled candidates for a session.
    pub fn trickle(&mut self, session: SessionId, candidates: Vec<String>) {
        self.guarded_for(session, |e| e.add_candidates(session, candidates));
    }

    /// An ICE restart: the client's new credentials in, ours out (None: no such session).
    pub fn ice_restart(&mut self, session: SessionId, remote: IceCreds) -> Option<IceCreds> {
        self.guarded_for(session, |e| e.restart_ice(session, remote))
            .flatten()
    }

    /// Renegotiate a session (the session/track API).
    pub fn negotiate(
        &mut self,
        session: SessionId,
        n: Negotiation,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        self.latest = self.latest.max(now);
        self.guarded_for(session, |e| e.negotiate_session(session, n, now))
            .unwrap_or_else(|| Err(Refusal::internal("the session failed while renegotiating")))
    }

    /// Pin a viewer's simulcast layer, or let the estimate choose again.
    pub fn select_layer(
        &mut self,
        session: SessionId,
        mid: Option<String>,
        rid: Option<String>,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.latest = self.latest.max(now);
        self.guarded_for(session, |e| e.pin_layers(session, mid, rid, now))
            .unwrap_or_else(|| Err(Refusal::internal("the session failed")))
    }

    /// What a session pushes and pulls.
    pub fn describe(&self, session: SessionId) -> Option<SessionView> {
        self.sessions.get(&session).map(|s| s.view())
    }

    /// A stream has a (new) publisher: viewers following it re-attach.
    pub fn stream_live(&mut self, stream: &str, tracks: &[Arc<TrackInfo>], now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| e.on_stream_live(stream, tracks, now));
    }

    /// Time passed: str0m timeouts due, housekeeping when due, paced keyframe runs.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| e.expire_timers(now));
        if now >= self.next_housekeeping {
            self.guarded(|e| e.housekeeping(now));
        }
        self.guarded(|e| e.pace(now));
    }

    /// After a turn's inputs are driven: keyframe requests gathered in the turn go to the
    /// publishers (at most one per track per interval).
    pub fn end_turn(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| e.flush_keyframe_requests(now));
    }

    /// Close every session (the node is stopping): their goodbyes are in `transmits`.
    pub fn shutdown(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        for id in self.sessions.keys().copied().collect::<Vec<_>>() {
            self.guarded(|e| e.close_and_reap(id, now));
        }
    }

    /// Shutdown in a cluster: replicated sessions are handed off, not ended. Their latest
    /// progress goes out, and they are dropped without RTCP BYE or DTLS close_notify, so their
    /// clients carry on with whichever gateway resumes them. The others are closed as above.
    pub fn hand_off(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        for id in self.sessions.keys().copied().collect::<Vec<_>>() {
            let replicated = self
                .sessions
                .get(&id)
                .is_some_and(|s| s.connected && s.replication.is_some());
            if !replicated {
                self.guarded(|e| e.close_and_reap(id, now));
                continue;
            }
            if let Some(p) = self.progress(id) {
                self.outbox.progress(p);
            }
            self.sessions.remove(&id);
        }
    }

    // --- output ---------------------------------------------------------------------------------

    /// Poll sessions that had input until about `SEND_EVERY` datagrams are queued. Call again
    /// (after sending) while `wants_drive`: a keyframe for hundreds of viewers is tens of
    /// milliseconds of encryption, and the first viewers' copies should not wait for the last.
    pub fn drive(&mut self, now: Instant) {
        self.latest = self.latest.max(now);
        self.guarded(|e| {
            while e.transmits.len() < SEND_EVERY
                && let Some(id) = e.dirty.pop()
            {
                e.drive_session(id, now);
            }
        });
    }

    /// Sessions are waiting to be polled.
    pub fn wants_drive(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Datagrams to send, in order; the caller sends and clears them (the buffer is reused).
    pub fn transmits(&mut self) -> &mut Vec<Transmit> {
        &mut self.transmits
    }

    /// The next message for another task, the demultiplexer or the trace exporter.
    pub fn poll_output(&mut self) -> Option<EngineOutput> {
        self.outbox.pop()
    }

    /// When `handle_timeout` should be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_deadline()
    }

    /// Sessions on this engine.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    // --- shared by the concept files ------------------------------------------------------------

    /// Session `id` has something to say: poll it in the next `drive`.
    fn mark(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    /// This engine's copy of a track: the origin's (its publisher is here) or a subscriber's.
    fn track_state(&self, info: Arc<TrackInfo>, origin: bool) -> TrackState {
        let config = &self.ctx.config;
        TrackState::new(
            info,
            origin,
            config.keyframe_cache_bytes,
            config.keyframe_request_interval,
        )
    }

    fn update_gauges(&self) {
        self.stats
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
        self.stats
            .tracks
            .store(self.tracks.len(), Ordering::Relaxed);
    }
}
