//! Simulcast switching: which layer a viewer's pull forwards (bandwidth estimate with
//! hysteresis, or pinned by the API), and moving to it at the target layer's next live keyframe.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Engine;
use crate::ids::{SessionId, TrackId};
use crate::refusal::Refusal;
use crate::registry::TrackInfo;

impl Engine {
    /// Simulcast: make pull `i` of session `id` move to layer `target` at that layer's next
    /// keyframe (asked for now; rate-limited upstream). The current layer keeps flowing until then.
    pub(super) fn set_layer_target(
        &mut self,
        id: SessionId,
        i: usize,
        target: TrackId,
        now: Instant,
    ) {
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
    pub(super) fn finish_layer_switch(&mut self, id: SessionId, i: usize, now: Instant) {
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
    pub(super) fn choose_layers(&mut self, id: SessionId, now: Instant) {
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

    pub(super) fn pin_layers(
        &mut self,
        id: SessionId,
        mid: Option<String>,
        rid: Option<String>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
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
}

/// The simulcast layer to forward: layers ranked by measured bitrate (highest = top; offer order
/// until measured). Without an estimate, the top layer; otherwise the highest layer whose bitrate
/// fits in 0.9 × the estimate — 0.75 × for a layer above the current one (hysteresis).
pub fn pick_layer(
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
