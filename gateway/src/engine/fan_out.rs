//! Fan-out: one packet of a track enters the engine, is cached once and written to every local
//! viewer's pull, and (origin only) goes to every other task with subscribers, as one `Arc`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use relay_proto::SharedPacket;

use super::{Engine, LIVE_KEYFRAME};
use crate::ids::TrackId;
use crate::sender_clock::SwitchAt;
use crate::session::PullState;
use crate::track_link::FromOrigin;

impl Engine {
    /// One packet of a track enters this worker: cache it once, give it to each local viewer,
    /// and (origin only) to each other worker with viewers.
    pub(super) fn fan_out(&mut self, track: TrackId, pkt: SharedPacket, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.cache.insert(pkt.clone(), now);
        if let Some(k) = t.keyframes.as_mut() {
            k.push(&pkt);
        }
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
        t.measure(pkt.payload.len(), now);
        match t.highest_seq {
            Some(h) if pkt.seq > h + 1 => {
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
        if t.origin {
            t.info.packets.fetch_add(1, Ordering::Relaxed);
            if pkt.keyframe_start && t.keyframes.as_ref().is_some_and(|k| k.has_keyframe()) {
                t.info.keyframes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if t.origin {
            for w in &t.remote_workers {
                let packet = pkt.clone();
                self.outbox.track(*w, FromOrigin::Media { track, packet });
                self.stats
                    .cross_worker_packets
                    .fetch_add(1, Ordering::Relaxed);
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
                    // A run a parent hop replays to this node's new copy of the layer arrives as
                    // a burst of past packets: only a keyframe that is arriving now will do.
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
                    PullState::WaitConnect | PullState::WaitRun => continue,
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
}
