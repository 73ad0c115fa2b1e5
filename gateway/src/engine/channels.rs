//! The engine's side of data channels (`data_channel`): opening negotiated channels on its
//! sessions' `Rtc`s, and forwarding each message of a published channel to its subscribers —
//! written straight into a subscriber's `Rtc` on this worker, sent as one shared message to
//! another worker. A subscriber that cannot take more (its channel not open yet, or more than
//! `MAX_BUFFERED_BYTES` unsent) misses that message, counted; the others do not wait for it.
//! In a cluster every published channel's messages also go to the bridge, which carries them
//! through the channel's tree to subscribers on other gateways; a subscription to a channel
//! published elsewhere is held by the bridge as if it were the publisher's worker.

use std::sync::Arc;
use std::time::Instant;

use str0m::channel::{ChannelConfig, ChannelData, ChannelId};

use super::Engine;
use super::negotiation::no_pending_offer;
use crate::bridge_link::ToBridge;
use crate::channel_link::ChannelMsg;
use crate::data_channel::{
    AckGate, ChannelOptions, Gate, MAX_BUFFERED_BYTES, SessionChannels, Subscribed, Subscriber,
    Subscription,
};
use crate::ids::SessionId;
use crate::negotiation::{Negotiated, PendingOffer};
use crate::refusal::Refusal;
use crate::registry::Role;

/// A new negotiated channel `name` for the session: its SCTP stream id and str0m's config.
fn negotiated(
    channels: &mut SessionChannels,
    name: String,
    options: ChannelOptions,
) -> Result<(u16, ChannelConfig), Refusal> {
    let stream_id = channels.next_stream_id().ok_or_else(|| {
        Refusal::unprocessable("this session has as many data channels as it may")
    })?;
    Ok((stream_id, options.config(name, stream_id)))
}

impl Engine {
    /// Opens a negotiated channel `name` on the session; its SCTP stream id.
    pub(super) fn open_channel(
        &mut self,
        id: SessionId,
        name: &str,
        options: ChannelOptions,
    ) -> Result<(u16, str0m::channel::ChannelId), Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let (stream_id, config) = negotiated(&mut s.channels, name.to_string(), options)?;
        let channel = s.rtc.direct_api().create_data_channel(config);
        self.mark(id);
        Ok((stream_id, channel))
    }

    /// Calls' `datachannels/establish`: with the client's offer (its application m-line), our
    /// answer and the channel opened on the association it brings; without, our offer.
    pub(super) fn establish_channels(
        &mut self,
        id: SessionId,
        name: String,
        client_offer: Option<String>,
    ) -> Result<Negotiated, Refusal> {
        if let Some(sdp) = client_offer {
            let Negotiated::Answer { sdp: answer, .. } = self.accept_client_offer(id, &sdp, &[])?
            else {
                return Err(Refusal::internal("expected an answer"));
            };
            let (stream_id, _) = self.open_channel(id, &name, ChannelOptions::default())?;
            return Ok(Negotiated::Channel {
                stream_id,
                offer: None,
                answer: Some(answer),
            });
        }
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        no_pending_offer(s)?;
        let (stream_id, config) = negotiated(&mut s.channels, name, ChannelOptions::default())?;
        let mut api = s.rtc.sdp_api();
        // Adds the application m-line when the session has none yet; then an offer is due.
        api.add_channel_with_config(config);
        let offer = PendingOffer::keep(&mut s.pending, api.apply(), vec![], vec![]);
        self.mark(id);
        Ok(Negotiated::Channel {
            stream_id,
            offer,
            answer: None,
        })
    }

    pub(super) fn publish_channel(
        &mut self,
        id: SessionId,
        name: String,
        options: ChannelOptions,
    ) -> Result<Negotiated, Refusal> {
        if !self.ctx.registry.publish_channel(id, &name) {
            return Err(Refusal::unprocessable(format!(
                "this session already publishes a data channel {name:?}"
            )));
        }
        let (stream_id, channel) = match self.open_channel(id, &name, options) {
            Ok(opened) => opened,
            Err(p) => {
                // Not published after all: the name stays free and nobody subscribes to it.
                self.ctx.registry.unpublish_channel(id, &name);
                return Err(p);
            }
        };
        let clustered = self.ctx.bridge.is_some();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.channels
                .publish(name.clone(), stream_id, channel, clustered);
        }
        if clustered {
            self.outbox.bridge(ToBridge::ChannelPublished {
                publisher: id,
                name,
                params: options.track_params(),
            });
        }
        Ok(Negotiated::Channel {
            stream_id,
            offer: None,
            answer: None,
        })
    }

    pub(super) fn subscribe_channel(
        &mut self,
        id: SessionId,
        sub: Subscription,
        now: Instant,
    ) -> Result<Negotiated, Refusal> {
        let (stream_id, channel) = self.open_channel(id, &sub.name, sub.options)?;
        let gate = if sub.wait_for_ack {
            AckGate::waiting(now)
        } else {
            AckGate::Open
        };
        self.attach_subscriber(
            id,
            Subscribed::new(
                sub.publisher,
                sub.name,
                stream_id,
                channel,
                sub.publisher_worker,
                gate,
            ),
        );
        Ok(Negotiated::Channel {
            stream_id,
            offer: None,
            answer: None,
        })
    }

    /// Session `id` receives on `sub.channel` the publisher's channel, served by peer
    /// `sub.publisher_worker` (a worker, or the cluster bridge).
    pub(super) fn attach_subscriber(&mut self, id: SessionId, sub: Subscribed) {
        let (publisher, name, channel, publisher_worker) = (
            sub.publisher,
            sub.name.clone(),
            sub.channel,
            sub.publisher_worker,
        );
        if let Some(s) = self.sessions.get_mut(&id) {
            s.channels.subscribed.push(sub);
        }
        let subscriber = Subscriber {
            session: id,
            worker: self.index,
            channel,
        };
        if publisher_worker == self.index {
            self.add_channel_subscriber(publisher, &name, subscriber);
        } else {
            let m = ChannelMsg::Subscribe {
                publisher,
                name,
                subscriber,
            };
            self.outbox.channel(publisher_worker, m);
        }
    }

    /// A channel the client opened in band (DCEP) is open. On a WHIP session it is the
    /// publisher's: published under its label, for the stream's viewers. On a WHEP session it
    /// is the viewer's: it receives the publisher's channel with the same label, now or once
    /// the publisher opens it. Channels `datachannels/*` opened (str0m reports those open too)
    /// and API sessions' own in-band channels are left alone.
    pub(super) fn on_channel_open(&mut self, id: SessionId, channel: ChannelId, label: String) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.channels.knows(channel) {
            return;
        }
        if !s.channels.has_room() {
            tracing::warn!(session = %id, %label, "too many data channels; this one is not forwarded");
            return;
        }
        let Some(entry) = self.ctx.registry.session(id) else {
            return;
        };
        match entry.role {
            Role::Whip => {
                if !self.ctx.registry.publish_channel(id, &label) {
                    tracing::warn!(session = %id, %label, "a second channel with this label is not forwarded");
                    return;
                }
                let options = s
                    .rtc
                    .channel(channel)
                    .and_then(|c| c.config().map(ChannelOptions::of))
                    .unwrap_or_default();
                let clustered = self.ctx.bridge.is_some();
                // In-band channels have no id the API hands out: 0 is never a negotiated one.
                s.channels.publish(label.clone(), 0, channel, clustered);
                tracing::info!(session = %id, %label, "publisher opened a data channel");
                if clustered {
                    self.outbox.bridge(ToBridge::ChannelPublished {
                        publisher: id,
                        name: label,
                        params: options.track_params(),
                    });
                }
            }
            Role::Whep => {
                s.channels.wanted.push((label, channel));
                self.match_wanted(id);
            }
            Role::Api => {}
        }
    }

    /// A WHEP viewer's channels waiting for the publisher's: attached to those that exist.
    /// A publisher on another gateway is asked through the bridge, which subscribes to the
    /// channel's tree (a channel the publisher has not opened there yet stays silent).
    pub(super) fn match_wanted(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.channels.wanted.is_empty() {
            return;
        }
        let Some(publisher) = s
            .pulls
            .iter()
            .find_map(|p| p.track.as_ref())
            .map(|t| t.session)
        else {
            return;
        };
        let publisher_elsewhere = self.ctx.registry.session(publisher).is_none();
        let wanted = std::mem::take(&mut s.channels.wanted);
        let mut still = Vec::new();
        for (label, channel) in wanted {
            let source = self
                .ctx
                .registry
                .channel_worker(publisher, &label)
                .or(self.ctx.bridge.filter(|_| publisher_elsewhere));
            match source {
                Some(worker) => self.attach_subscriber(
                    id,
                    Subscribed::new(publisher, label, 0, channel, worker, AckGate::Open),
                ),
                None => still.push((label, channel)),
            }
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.channels.wanted = still;
        }
    }

    /// The client closed an in-band channel.
    pub(super) fn on_channel_close(&mut self, id: SessionId, channel: ChannelId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut closed = SessionChannels::default();
        if let Some(i) = s
            .channels
            .published
            .iter()
            .position(|c| c.channel == channel)
        {
            closed.published.push(s.channels.published.remove(i));
        } else if let Some(i) = s
            .channels
            .subscribed
            .iter()
            .position(|c| c.channel == channel)
        {
            closed.subscribed.push(s.channels.subscribed.remove(i));
        }
        s.channels.wanted.retain(|(_, c)| *c != channel);
        self.end_channels(id, &closed);
    }

    /// Closes the session's channels with these stream ids: a published one stops reaching its
    /// subscribers (their channels stay, silent), a subscribed one is dropped by its publisher.
    pub(super) fn close_channels(
        &mut self,
        id: SessionId,
        stream_ids: &[u16],
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let mut closed = SessionChannels::default();
        for &sid in stream_ids {
            if let Some(i) = s.channels.published.iter().position(|c| c.stream_id == sid) {
                let c = s.channels.published.remove(i);
                s.rtc.direct_api().close_data_channel(c.channel);
                closed.published.push(c);
            } else if let Some(i) = s
                .channels
                .subscribed
                .iter()
                .position(|c| c.stream_id == sid)
            {
                let c = s.channels.subscribed.remove(i);
                s.rtc.direct_api().close_data_channel(c.channel);
                closed.subscribed.push(c);
            }
        }
        let ids = closed
            .published
            .iter()
            .map(|c| c.stream_id)
            .chain(closed.subscribed.iter().map(|c| c.stream_id))
            .collect();
        self.end_channels(id, &closed);
        self.mark(id);
        Ok(Negotiated::ChannelsClosed { closed: ids })
    }

    /// Channels of session `id` that are gone (closed, or the session ended): published ones
    /// leave the registry and the cluster, subscribed ones their publisher's fan-out.
    pub(super) fn end_channels(&mut self, id: SessionId, channels: &SessionChannels) {
        for c in &channels.published {
            self.ctx.registry.unpublish_channel(id, &c.name);
            if c.to_cluster && self.ctx.bridge.is_some() {
                self.outbox.bridge(ToBridge::ChannelUnpublished {
                    publisher: id,
                    name: c.name.clone(),
                });
            }
        }
        for c in &channels.subscribed {
            let gone = Subscriber {
                session: id,
                worker: self.index,
                channel: c.channel,
            };
            if c.publisher_worker == self.index {
                self.remove_channel_subscriber(c.publisher, &c.name, gone);
            } else {
                let m = ChannelMsg::Unsubscribe {
                    publisher: c.publisher,
                    name: c.name.clone(),
                    subscriber: gone,
                };
                self.outbox.channel(c.publisher_worker, m);
            }
        }
    }

    pub(super) fn remove_channel_subscriber(
        &mut self,
        publisher: SessionId,
        name: &str,
        gone: Subscriber,
    ) {
        if let Some(p) = self
            .sessions
            .get_mut(&publisher)
            .and_then(|s| s.channels.published_mut(name))
        {
            p.subscribers.retain(|s| *s != gone);
        }
    }

    pub(super) fn add_channel_subscriber(
        &mut self,
        publisher: SessionId,
        name: &str,
        subscriber: Subscriber,
    ) {
        if let Some(p) = self
            .sessions
            .get_mut(&publisher)
            .and_then(|s| s.channels.published_mut(name))
            && !p.subscribers.contains(&subscriber)
        {
            p.subscribers.push(subscriber);
        }
    }

    /// Calls' `datachannels/update`: whether session `id`'s subscription to `publisher`'s
    /// channel `name` may reply. Its SCTP stream id.
    pub(super) fn set_can_reply(
        &mut self,
        id: SessionId,
        publisher: SessionId,
        name: &str,
        can_reply: bool,
    ) -> Result<Negotiated, Refusal> {
        let s = self.sessions.get_mut(&id).ok_or_else(Refusal::no_session)?;
        let bridge = self.ctx.bridge;
        let c = s
            .channels
            .subscribed
            .iter_mut()
            .find(|c| c.publisher == publisher && c.name == name)
            .ok_or_else(|| {
                Refusal::not_found(format!(
                    "this session does not receive {publisher}'s data channel {name:?}"
                ))
            })?;
        if can_reply && Some(c.publisher_worker) == bridge {
            return Err(Refusal::unprocessable(
                "canReply reaches a publisher on this gateway only; this one is on another",
            ));
        }
        c.can_reply = can_reply;
        Ok(Negotiated::Channel {
            stream_id: c.stream_id,
            offer: None,
            answer: None,
        })
    }

    /// A subscriber's write on a channel it may reply on: to the publisher, on its worker.
    pub(super) fn on_reply(&mut self, id: SessionId, d: ChannelData, now: Instant) {
        let Some(c) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.channels.subscribed.iter_mut().find(|c| c.channel == d.id))
        else {
            return;
        };
        // The first message of a `waitForAck` subscriber is its acknowledgment, not a reply.
        if let Some(held) = c.gate.ack() {
            let to = Subscriber {
                session: id,
                worker: self.index,
                channel: d.id,
            };
            for (binary, data) in held {
                self.write_channel(to, binary, &data);
            }
            return;
        }
        if !c.admit_reply(d.data.len(), now) {
            return;
        }
        let (publisher, name, worker) = (c.publisher, c.name.clone(), c.publisher_worker);
        if worker == self.index {
            self.write_reply(publisher, &name, d.binary, &d.data);
        } else {
            let m = ChannelMsg::Reply {
                publisher,
                name,
                binary: d.binary,
                data: d.data.into(),
            };
            self.outbox.channel(worker, m);
        }
    }

    /// A subscriber's reply, into the publisher's own channel.
    pub(super) fn write_reply(
        &mut self,
        publisher: SessionId,
        name: &str,
        binary: bool,
        data: &[u8],
    ) {
        let Some(channel) = self
            .sessions
            .get_mut(&publisher)
            .and_then(|s| s.channels.published_mut(name))
            .map(|p| p.channel)
        else {
            return;
        };
        let to = Subscriber {
            session: publisher,
            worker: self.index,
            channel,
        };
        self.write_channel(to, binary, data);
    }

    /// A message from session `id`: forwarded if it came on a channel the session publishes,
    /// or replied to its publisher on a subscription that may reply.
    pub(super) fn on_channel_data(&mut self, id: SessionId, d: ChannelData, now: Instant) {
        let Some(p) = self
            .sessions
            .get_mut(&id)
            .and_then(|s| s.channels.by_channel(d.id))
        else {
            self.on_reply(id, d, now);
            return;
        };
        if !p.admit(d.data.len(), now) {
            return;
        }
        self.stats
            .channel_messages_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subscribers = p.subscribers.clone();
        let data: Arc<[u8]> = d.data.into();
        if p.to_cluster && self.ctx.bridge.is_some() {
            self.outbox.bridge(ToBridge::ChannelToCluster {
                publisher: id,
                name: p.name.clone(),
                binary: d.binary,
                data: data.clone(),
            });
        }
        for to in subscribers {
            if to.worker == self.index {
                self.deliver(to, d.binary, &data, now);
            } else {
                let m = ChannelMsg::Message {
                    to,
                    binary: d.binary,
                    data: data.clone(),
                };
                self.outbox.channel(to.worker, m);
            }
        }
    }

    /// A published channel's message for a subscriber here: written, unless the subscriber's
    /// `waitForAck` gate holds it.
    pub(super) fn deliver(&mut self, to: Subscriber, binary: bool, data: &Arc<[u8]>, now: Instant) {
        let gate = self
            .sessions
            .get_mut(&to.session)
            .and_then(|s| {
                s.channels
                    .subscribed
                    .iter_mut()
                    .find(|c| c.channel == to.channel)
            })
            .map(|c| c.gate.offer(binary, data, now));
        match gate {
            Some(Gate::Held) => {}
            Some(Gate::Dropped) => {
                self.stats
                    .channel_drops
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(Gate::Pass) | None => self.write_channel(to, binary, data),
        }
    }

    pub(super) fn write_channel(&mut self, to: Subscriber, binary: bool, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&to.session) else {
            return;
        };
        let written = match s.rtc.channel(to.channel) {
            Some(mut c) => {
                c.buffered_amount() <= MAX_BUFFERED_BYTES && c.write(binary, data).unwrap_or(false)
            }
            None => false,
        };
        let counter = if written {
            &self.stats.channel_messages_delivered
        } else {
            &self.stats.channel_drops
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.mark(to.session);
    }
}
