//! Keyframe requests: viewers' PLIs and joins ask the track's origin; the origin asks its
//! publisher at most once per interval (`track::KeyframeRequests`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::media::KeyframeRequestKind;

use super::Engine;
use crate::ids::TrackId;
use crate::track_link::ToOrigin;

impl Engine {
    pub(super) fn request_keyframe(&mut self, track: TrackId, now: Instant) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        if !t.origin {
            let origin = t.info.origin_worker;
            self.outbox
                .track(origin, ToOrigin::KeyframeRequest { track });
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

    pub(super) fn flush_keyframe_requests(&mut self, now: Instant) {
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
}
