//! A session's life in the engine: adopted from the control plane, closed the way WebRTC says
//! (RTCP BYE, DTLS close_notify), reaped with everything that hangs off it.

use std::sync::Arc;
use std::time::Instant;

use str0m::{Candidate, IceCreds, Output};

use super::outbox::Outbox;
use super::{Engine, EngineCtx};
use crate::bridge_link::ToBridge;
use crate::demux::{DemuxUpdate, Route};
use crate::engine::Adopt;
use crate::ids::SessionId;
use crate::join_metrics::{JoinClock, Role};
use crate::registry::TrackInfo;
use crate::session::Session;

impl Engine {
    pub(super) fn adopt_session(&mut self, a: Adopt, now: Instant) {
        let id = a.id;
        for info in &a.pushed {
            let t = self.track_state(info.clone(), true);
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
        session.replication = a.replication;
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

    /// End a session the way WebRTC says: str0m's `close` queues RTCP BYE and the DTLS
    /// close_notify, which are polled out (and sent with the next batch) before the session is
    /// reaped, so the client learns at once instead of by a consent timeout.
    pub(super) fn close_and_reap(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.touching = Some(id);
        if s.rtc.close().is_ok() {
            // Bounded: a close is a handful of datagrams.
            for _ in 0..64 {
                match s.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.transmits.push(t),
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

    /// Remove a session and everything that hangs off it.
    pub(super) fn reap(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(t) = s.timeout {
            self.timers.remove(&(t, id));
        }
        // A session still registered here ends without a DELETE (after one, control::close has
        // already removed it): the registry remembers it for the client's DELETE that may follow.
        let entry = self.ctx.registry.end_session(id);
        if s.replication.is_some() {
            self.outbox.ended(id);
        }
        if let (Some(_), Some(e)) = (self.ctx.bridge, entry)
            && let (crate::registry::Role::Whip, Some(stream)) = (e.role, e.stream)
        {
            self.outbox.bridge(ToBridge::StreamGone {
                stream,
                session: id,
            });
        }
        self.outbox.demux(DemuxUpdate::Remove { session: id });
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

    /// Trickled candidates (`a=candidate` lines) for a session.
    pub(super) fn add_candidates(&mut self, session: SessionId, candidates: Vec<String>) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        for c in candidates {
            match Candidate::from_sdp_string(&c) {
                // mDNS names cannot be resolved here and are dropped silently.
                Ok(c) => s.rtc.add_remote_candidate(c),
                Err(e) => tracing::debug!(%session, error = %e, "ignored trickled candidate"),
            }
        }
        self.mark(session);
    }

    /// An ICE restart: new credentials on both sides, and the demultiplexers told our new ufrag.
    pub(super) fn restart_ice(&mut self, session: SessionId, remote: IceCreds) -> Option<IceCreds> {
        let s = self.sessions.get_mut(&session)?;
        let local = crate::peer::local_ice_creds();
        let mut api = s.rtc.direct_api();
        api.set_remote_ice_credentials(remote);
        api.set_local_ice_credentials(local.clone());
        self.outbox.demux(DemuxUpdate::Ufrag {
            ufrag: local.ufrag.clone(),
            pwd: local.pass.clone(),
            route: Route {
                worker: self.index,
                session,
            },
            failures: None,
        });
        self.mark(session);
        Some(local)
    }
}

/// A session's setup as spans, when traces are exported.
pub(super) fn export_setup(
    ctx: &EngineCtx,
    outbox: &mut Outbox,
    s: &Session,
    role: Role,
    marks: [Instant; 5],
) {
    if ctx.spans {
        let spans = crate::join_metrics::setup_spans(s.join.parent, &s.id.to_string(), role, marks);
        for span in spans {
            outbox.span(span);
        }
    }
}
