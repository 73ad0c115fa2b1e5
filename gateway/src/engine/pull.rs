//! Pulls and subscriptions: a viewer's m-line attached to this engine's copy of a track, the
//! copy fed by the track's origin, and starting a viewer from the origin's keyframe run.
//!
//! One owner serves a new subscriber: the track's origin on this node (the engine of its
//! publisher, or the cluster bridge, whose tree hop holds the run). It answers each
//! `Subscribe` and `Replay` with one `Run`, on the ordered path the live packets take, so a
//! viewer's start neither overlaps nor misses a live packet. The origin's own viewers start
//! from the same `start_run`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use relay_proto::SharedPacket;
use str0m::media::MediaKind;

use super::Engine;
use crate::ids::{SessionId, TrackId};
use crate::registry::TrackInfo;
use crate::session::PullState;
use crate::track::ParameterSets;
use crate::track_link::{FromOrigin, ToOrigin};

impl Engine {
    /// Make session `id`'s pull `i` receive `track` through this worker's copy of it.
    pub(super) fn subscribe_local(
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
    pub(super) fn ensure_subscribed(&mut self, id: SessionId, track: Arc<TrackInfo>) -> bool {
        let track_id = track.id;
        if !self.tracks.contains_key(&track_id) {
            if track.origin_worker == self.index {
                // The publisher is already gone from this worker.
                return false;
            }
            let t = self.track_state(track.clone(), false);
            self.tracks.insert(track_id, t);
            let origin = track.origin_worker;
            self.outbox.track(
                origin,
                ToOrigin::Subscribe {
                    track,
                    worker: self.index,
                },
            );
            if let Some(t) = self.tracks.get_mut(&track_id) {
                t.run_asked = true;
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
    pub(super) fn release_if_unused(&mut self, id: SessionId, track: TrackId) {
        let used = self.sessions.get(&id).is_some_and(|s| {
            s.pulls
                .iter()
                .any(|p| p.track_id() == Some(track) || p.target == Some(track))
        });
        if !used {
            self.unsubscribe_local(id, track);
        }
    }

    /// A connected viewer's pull begins. Video starts from the origin's keyframe run: at once
    /// on the origin, after the origin's `Run` elsewhere (asked for once however many viewers
    /// wait for it).
    pub(super) fn start_pull(&mut self, id: SessionId, i: usize, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        let Some(pull) = s.pulls.get_mut(i) else {
            return;
        };
        let Some(track) = pull.track_id() else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if pull.kind == MediaKind::Audio {
            pull.state = PullState::Live;
            return;
        }
        pull.bound_repair_window(&mut s.rtc, self.ctx.config.viewer_repair_window);
        if pull.resumed {
            self.serve_run(id, i, track, &[], now);
            return;
        }
        if t.origin {
            let run = t.start_run();
            self.serve_run(id, i, track, &run, now);
            return;
        }
        pull.state = PullState::WaitRun;
        if !t.run_asked {
            t.run_asked = true;
            let origin = t.info.origin_worker;
            let worker = self.index;
            self.outbox
                .track(origin, ToOrigin::Replay { track, worker });
        }
    }

    /// Start session `id`'s pull `i` from `run`, or, when it is empty, from the next keyframe
    /// (and ask the publisher for one).
    fn serve_run(
        &mut self,
        id: SessionId,
        i: usize,
        track: TrackId,
        run: &[SharedPacket],
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(pull) = s.pulls.get_mut(i) else {
            return;
        };
        if run.is_empty() {
            pull.state = PullState::WaitKeyframe;
            self.request_keyframe(track, now);
            return;
        }
        pull.state = PullState::Live;
        let rate = self
            .tracks
            .get(&track)
            .map_or(0, |t| t.info.rate_bps.load(Ordering::Relaxed));
        if pull.start_run(&mut s.rtc, run.iter(), rate, now) {
            self.paced.push((id, pull.mid));
        }
        self.stats
            .keyframe_runs_served
            .fetch_add(1, Ordering::Relaxed);
        self.mark(id);
    }

    /// The origin's answer to our `Subscribe` or `Replay`: every local viewer of the track
    /// waiting for it starts from it. Its packets go into this copy's packet cache, for NACKs.
    pub(super) fn on_run(
        &mut self,
        track: TrackId,
        run: &[SharedPacket],
        parameter_sets: Option<ParameterSets>,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.run_asked = false;
        if let Some((sps, pps)) = parameter_sets
            && let Some(q) = t.h264.as_mut()
            && q.inspector.parameter_sets().is_none()
        {
            q.inspector.learn_parameter_sets(&sps, &pps);
        }
        for p in run {
            t.cache.insert(p.clone(), now);
            t.inspect_h264(p);
        }
        let mut waiting = Vec::new();
        for id in &t.subscribers {
            if let Some(s) = self.sessions.get(id) {
                for (i, p) in s.pulls.iter().enumerate() {
                    if p.track_id() == Some(track) && p.state == PullState::WaitRun {
                        waiting.push((*id, i));
                    }
                }
            }
        }
        for (id, i) in waiting {
            self.touching = Some(id);
            self.serve_run(id, i, track, run, now);
        }
    }

    /// Another task subscribes to a track this engine is the origin of: it gets the run, then
    /// every live packet.
    pub(super) fn on_subscribe(&mut self, track: Arc<TrackInfo>, worker: usize) {
        if let Some(t) = self.tracks.get_mut(&track.id)
            && !t.remote_workers.contains(&worker)
        {
            t.remote_workers.push(worker);
        }
        self.send_run(track.id, worker);
    }

    /// The one place another task's new viewer is served: one `Run`, or `TrackEnded` when the
    /// track is gone from here.
    pub(super) fn send_run(&mut self, track: TrackId, worker: usize) {
        let msg = match self.tracks.get(&track) {
            Some(t) => FromOrigin::Run {
                track,
                packets: t.start_run().into(),
                parameter_sets: t.parameter_sets(),
            },
            None => FromOrigin::TrackEnded { track },
        };
        self.outbox.track(worker, msg);
    }

    /// Another task no longer subscribes to a track of ours.
    pub(super) fn on_unsubscribe(&mut self, track: TrackId, worker: usize) {
        if let Some(t) = self.tracks.get_mut(&track) {
            t.remote_workers.retain(|w| *w != worker);
        }
    }

    pub(super) fn on_stream_live(&mut self, stream: &str, tracks: &[Arc<TrackInfo>], now: Instant) {
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

    pub(super) fn unsubscribe_local(&mut self, id: SessionId, track: TrackId) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.subscribers.retain(|s| *s != id);
        if t.subscribers.is_empty() && !t.origin {
            let origin = t.info.origin_worker;
            self.tracks.remove(&track);
            self.outbox.track(
                origin,
                ToOrigin::Unsubscribe {
                    track,
                    worker: self.index,
                },
            );
        }
    }

    /// The source track is gone: its viewers wait (WHEP viewers resume on republish).
    pub(super) fn detach_all(&mut self, subscribers: &[SessionId], track: TrackId, now: Instant) {
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

    /// A track ends here: its publisher on this engine left, or its origin said so. Tasks this
    /// copy feeds (only an origin's copy feeds any) drop theirs; local viewers wait.
    pub(super) fn end_track(&mut self, track: TrackId, now: Instant) {
        if let Some(t) = self.tracks.remove(&track) {
            for w in &t.remote_workers {
                self.outbox.track(*w, FromOrigin::TrackEnded { track });
            }
            self.detach_all(&t.subscribers, track, now);
        }
    }
}
