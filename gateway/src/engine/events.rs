//! Driving one session's `Rtc`: a datagram in, then its outputs polled until it has nothing more
//! to say (transmits queued, timeout noted), then its events acted on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use str0m::media::KeyframeRequest;
use str0m::net::Receive;
use str0m::rtp::RawPacket;
use str0m::rtp::RtpPacket;
use str0m::rtp::rtcp::Rtcp;
use str0m::{Event, IceConnectionState, Input, Output};

use relay_proto::MediaPacket;

use super::{Engine, IMMEDIATE_TIMEOUTS};
use crate::datagram::Datagram;
use crate::ids::SessionId;
use crate::join_metrics::Role;

impl Engine {
    pub(super) fn on_datagram(&mut self, d: Datagram) {
        if !self.sessions.contains_key(&d.session) {
            return;
        }
        self.touching = Some(d.session);
        let Ok(contents) = d.data.as_slice().try_into() else {
            return;
        };
        self.before_input(d.session, &d.data);
        let Some(s) = self.sessions.get_mut(&d.session) else {
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

    /// Poll one session until it has nothing more to say, then act on its events (which may
    /// mark other sessions for `drive`).
    pub(super) fn drive_session(&mut self, id: SessionId, now: Instant) {
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
                Ok(Output::Transmit(t)) => self.transmits.push(t),
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

    pub(super) fn on_event(&mut self, id: SessionId, event: Event, now: Instant) {
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
                self.replication_connected(id, now);
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
            // str0m's events are `#[non_exhaustive]`; the others (media added, stream paused,
            // ingress stats, ICE checking…) change nothing the engine decides.
            _ => {}
        }
    }

    pub(super) fn on_rtp(&mut self, id: SessionId, rtp: RtpPacket) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.packets_in += 1;
        if !s.join.reported(Role::Publisher)
            && let Some(marks) = s
                .join
                .first_media(Role::Publisher, rtp.timestamp, &self.ctx.join)
        {
            super::lifecycle::export_setup(&self.ctx, &mut self.outbox, s, Role::Publisher, marks);
        }
        if s.replication.is_some() {
            self.note_received(id, rtp.header.ssrc, *rtp.seq_no);
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
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
}
