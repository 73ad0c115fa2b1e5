//! Renegotiating a live session (the session/track API): a client offer that pushes more
//! tracks, a server offer that adds pulled tracks, the client's answer to it, closing tracks,
//! repointing a pull. In the engine because only the engine may touch the session's `Rtc`; the
//! requests and answers themselves are `crate::negotiation`'s.

use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};

use super::Engine;
use crate::ids::{SessionId, TrackId};
use crate::negotiation::{CloseHow, Negotiated, Negotiation, PendingOffer};
use crate::peer::{self, negotiated_params};
use crate::refusal::Refusal;
use crate::registry::TrackInfo;
use crate::session::Pull;

/// One offer of ours at a time: str0m invalidates a pending offer when another is made.
pub(super) fn no_pending_offer(s: &crate::session::Session) -> Result<(), Refusal> {
    if s.pending.is_some() {
        return Err(Refusal::conflict(
            "an offer is already waiting for its answer (PUT renegotiate)",
        ));
    }
    Ok(())
}

impl Engine {
    pub(super) fn negotiate_session(
        &mut self,
        id: SessionId,
        n: Negotiation,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        let result = match n {
            Negotiation::Offer { sdp, names } => self.accept_client_offer(id, &sdp, &names),
            Negotiation::Pull { tracks } => self.offer_pulls(id, tracks),
            Negotiation::Receive { tracks } => self.offer_receives(id, tracks),
            Negotiation::Answer { sdp } => self.accept_client_answer(id, &sdp, now),
            Negotiation::Close { mids, how } => self.close_mids(id, &mids, how, now),
            Negotiation::Update { mid, track } => self.repoint_pull(id, &mid, track, now),
            Negotiation::EstablishChannels { name, offer } => {
                self.establish_channels(id, name, offer)
            }
            Negotiation::CloseChannels { stream_ids } => self.close_channels(id, &stream_ids),
            Negotiation::UpdateChannel {
                publisher,
                name,
                can_reply,
            } => self.set_can_reply(id, publisher, &name, can_reply),
            Negotiation::PublishChannel { name, options } => {
                self.publish_channel(id, name, options)
            }
            Negotiation::SubscribeChannel(sub) => self.subscribe_channel(id, sub, now),
        };
        self.mark(id);
        result
    }

    pub(super) fn accept_client_offer(
        &mut self,
        id: SessionId,
        sdp: &str,
        names: &[(String, String)],
    ) -> Result<Negotiated, Refusal> {
        let offer = peer::parse_offer(sdp)?;
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        // An offer from the client supersedes one of ours still waiting for its answer.
        s.pending = None;
        let (answer, media) = peer::answer_offer(&mut s.rtc, offer)?;
        let known = |mid: &Mid| {
            s.pushed.iter().any(|t| t.mid == *mid) || s.pulls.iter().any(|p| p.mid == *mid)
        };
        let new: Vec<(Mid, MediaKind)> = media.into_iter().filter(|(m, _)| !known(m)).collect();
        let pushed = self.push_tracks(id, new, names)?;
        Ok(Negotiated::Answer {
            sdp: answer,
            pushed,
        })
    }

    /// New pushed tracks on these m-lines, where we receive: named from `names` (mid → name),
    /// else `audio-<mid>` / `video-<mid>`.
    pub(super) fn push_tracks(
        &mut self,
        id: SessionId,
        new: Vec<(Mid, MediaKind)>,
        names: &[(String, String)],
    ) -> Result<Vec<Arc<TrackInfo>>, Refusal> {
        let index = self.index;
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let mut pushed = Vec::new();
        for (mid, kind) in new {
            let receiving = s.rtc.media(mid).is_some_and(|m| {
                m.direction() == Direction::RecvOnly || m.direction() == Direction::SendRecv
            });
            if !receiving {
                continue;
            }
            let name = names
                .iter()
                .find(|(m, _)| m.as_str() == &*mid)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| {
                    let kind = if kind == MediaKind::Audio {
                        "audio"
                    } else {
                        "video"
                    };
                    format!("{kind}-{mid}")
                });
            if s.pushed.iter().any(|t| t.name == name) {
                return Err(Refusal::unprocessable(format!(
                    "track name {name:?} is already used in this session"
                ))
                .code("repeated_local_track_error"));
            }
            let info = Arc::new(TrackInfo::new(
                self.ctx.registry.next_track_id(),
                id,
                name,
                kind,
                mid,
                negotiated_params(&s.rtc, mid),
                index,
            ));
            s.pushed.push(info.clone());
            pushed.push(info);
        }
        for info in &pushed {
            let t = self.track_state(info.clone(), true);
            self.tracks.insert(info.id, t);
        }
        self.ctx.registry.add_pushed(id, &pushed);
        self.update_gauges();
        Ok(pushed)
    }

    pub(super) fn offer_pulls(
        &mut self,
        id: SessionId,
        tracks: Vec<Arc<TrackInfo>>,
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        no_pending_offer(s)?;
        let mut api = s.rtc.sdp_api();
        let mut pulls = Vec::new();
        for t in tracks {
            let mid = api.add_media(
                t.kind,
                Direction::SendOnly,
                Some(t.session.to_string()),
                Some(t.name.clone()),
                None,
            );
            pulls.push((mid, t));
        }
        let Some(sdp) = PendingOffer::keep(&mut s.pending, api.apply(), pulls.clone(), vec![])
        else {
            return Err(Refusal::unprocessable("nothing to negotiate"));
        };
        Ok(Negotiated::Offer {
            sdp,
            pulls,
            ended: vec![],
        })
    }

    pub(super) fn offer_receives(
        &mut self,
        id: SessionId,
        tracks: Vec<(String, MediaKind)>,
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        no_pending_offer(s)?;
        for (name, _) in &tracks {
            if s.pushed.iter().any(|t| t.name == *name) {
                return Err(Refusal::unprocessable(format!(
                    "track name {name:?} is already used in this session"
                ))
                .code("repeated_local_track_error"));
            }
        }
        let mut api = s.rtc.sdp_api();
        let pushes: Vec<(Mid, String, MediaKind)> = tracks
            .into_iter()
            .map(|(name, kind)| {
                let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                (mid, name, kind)
            })
            .collect();
        let Some(sdp) = PendingOffer::keep(&mut s.pending, api.apply(), vec![], pushes.clone())
        else {
            return Err(Refusal::unprocessable("nothing to negotiate"));
        };
        Ok(Negotiated::Receiving { sdp, pushes })
    }

    pub(super) fn accept_client_answer(
        &mut self,
        id: SessionId,
        sdp: &str,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        let answer = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| Refusal::malformed(format!("malformed SDP answer: {e}")))?;
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let Some(pending) = s.pending.take() else {
            return Err(Refusal::conflict(
                "no offer of ours is waiting for an answer",
            ));
        };
        s.rtc
            .sdp_api()
            .accept_answer(pending.offer, answer)
            .map_err(|e| Refusal::malformed(format!("answer refused: {e}")))?;
        let accepted = peer::accepted_media(sdp);
        // A WHEP viewer answering our counter-offer follows its stream across republishes, as
        // one that made the offer does (`control::pull_stream`).
        let followed = self
            .ctx
            .registry
            .session(id)
            .filter(|e| e.role == crate::registry::Role::Whep)
            .and_then(|e| e.stream);
        let stream_tracks = followed
            .as_deref()
            .and_then(|name| self.ctx.registry.stream(name))
            .map(|(_, tracks)| tracks);
        let mut start = Vec::new();
        for (mid, track) in pending.pulls {
            if !accepted.iter().any(|(m, _)| *m == mid) {
                continue;
            }
            let mut pull = Pull::new(mid, track.kind, Some(track.clone()), followed.clone());
            match &stream_tracks {
                Some(all) => pull.set_layers_from(all),
                None => pull.set_layers_for_api(&self.ctx.registry),
            }
            s.pulls.push(pull);
            start.push((s.pulls.len() - 1, track));
        }
        for (i, track) in start {
            self.subscribe_local(id, i, track, now);
        }
        let names: Vec<(String, String)> = pending
            .pushes
            .iter()
            .filter(|(mid, _, _)| accepted.iter().any(|(m, _)| m == mid))
            .map(|(mid, name, _)| (mid.to_string(), name.clone()))
            .collect();
        let kinds: Vec<(Mid, MediaKind)> =
            pending.pushes.iter().map(|(m, _, k)| (*m, *k)).collect();
        if !names.is_empty() {
            self.push_tracks(id, kinds, &names)?;
        }
        Ok(Negotiated::Done { ended: vec![] })
    }

    pub(super) fn close_mids(
        &mut self,
        id: SessionId,
        mids: &[String],
        how: CloseHow,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        if matches!(how, CloseHow::ServerOffer) {
            no_pending_offer(s)?;
        }
        // A mid named twice is closed once; one that names no track is reported per item (Calls'
        // `close_track_error`) while the others close.
        let mut unique: Vec<Mid> = Vec::with_capacity(mids.len());
        let mut unknown = Vec::new();
        for name in mids {
            let mid = Mid::from(name.as_str());
            if !s.pushed.iter().any(|t| t.mid == mid) && !s.pulls.iter().any(|p| p.mid == mid) {
                unknown.push(name.clone());
            } else if !unique.contains(&mid) {
                unique.push(mid);
            }
        }
        let mut ended_pushes = Vec::new();
        let mut ended_pulls = Vec::new();
        for mid in &unique {
            if let Some(i) = s.pushed.iter().position(|t| t.mid == *mid) {
                ended_pushes.push(s.pushed.remove(i));
            } else if let Some(i) = s.pulls.iter().position(|p| p.mid == *mid) {
                ended_pulls.push(s.pulls.remove(i));
            }
        }
        let offer = match how {
            CloseHow::ServerOffer if !unique.is_empty() => {
                let mut api = s.rtc.sdp_api();
                for mid in unique {
                    api.stop_media(mid);
                }
                PendingOffer::keep(&mut s.pending, api.apply(), vec![], vec![])
            }
            _ => None,
        };
        for pull in ended_pulls {
            if let Some(track) = pull.track_id() {
                self.unsubscribe_local(id, track);
            }
        }
        for info in &ended_pushes {
            self.end_track(info.id, now);
        }
        self.ctx.registry.remove_pushed(id, &ended_pushes);
        self.update_gauges();
        let answer = match how {
            CloseHow::ClientOffer(sdp) => match self.accept_client_offer(id, &sdp, &[])? {
                Negotiated::Answer { sdp, .. } => Some(sdp),
                _ => None,
            },
            _ => None,
        };
        Ok(Negotiated::Closed {
            offer,
            answer,
            unknown,
        })
    }
}

impl Engine {
    /// A pulled m-line forwards `track` from now on (at its next keyframe, as a new viewer
    /// would start): the old track is let go, the new one subscribed.
    pub(super) fn repoint_pull(
        &mut self,
        id: SessionId,
        mid: &str,
        track: Arc<TrackInfo>,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let mid = Mid::from(mid);
        let Some(i) = s.pulls.iter().position(|p| p.mid == mid) else {
            return Err(Refusal::not_found(format!("no pulled track on mid {mid}")));
        };
        let pull = &s.pulls[i];
        if pull.kind != track.kind {
            return Err(Refusal::unprocessable(format!(
                "mid {mid} carries {:?}, the track is {:?}",
                pull.kind, track.kind
            )));
        }
        let old: Vec<TrackId> = pull.track_id().into_iter().chain(pull.target).collect();
        if old.contains(&track.id) {
            return Ok(Negotiated::Done { ended: vec![] });
        }
        let connected = s.connected;
        let pull = &mut s.pulls[i];
        pull.retarget(Some(track.clone()), connected, now);
        pull.set_layers_for_api(&self.ctx.registry);
        for t in old {
            self.unsubscribe_local(id, t);
        }
        self.subscribe_local(id, i, track, now);
        Ok(Negotiated::Done { ended: vec![] })
    }
}
