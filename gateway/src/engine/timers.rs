//! Time in the engine: the earliest deadline, sessions' str0m timeouts, paced keyframe runs, and
//! the half-second housekeeping (silent sessions reaped, layer choice re-evaluated).

use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::media::Mid;

use super::{Engine, HOUSEKEEPING};
use crate::ids::SessionId;
use crate::join_metrics::Role;

impl Engine {
    pub(super) fn next_deadline(&self) -> Instant {
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

    pub(super) fn expire_timers(&mut self, now: Instant) {
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
    pub(super) fn housekeeping(&mut self, now: Instant) {
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
                super::lifecycle::export_setup(&self.ctx, &mut self.outbox, s, Role::Viewer, marks);
            }
        }
        for id in dead {
            self.close_and_reap(id, now);
        }
        self.report_progress(now);
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

    /// Write what each paced keyframe run lets go now (`run_pacer`).
    pub(super) fn pace(&mut self, now: Instant) {
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
}
