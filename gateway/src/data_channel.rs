//! DataChannels on the track model, as Calls does them (`datachannels/new`): a session publishes
//! named channels (`location: local`) and subscribes to other sessions' channels (`location:
//! remote`, by session id and channel name). Both ends are negotiated out of band (the client
//! opens `createDataChannel(name, {negotiated: true, id})` with the id we answer), so no DCEP.
//! A message on a published channel goes to every subscriber, on this worker directly and to
//! other workers as a message; never back to its sender. This file is the per-session
//! bookkeeping and the limits; the worker does the writing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_proto::data_track::DataTrackParams;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};

use crate::ids::SessionId;
use crate::token_bucket::TokenBucket;

/// Largest message forwarded; larger ones are dropped and counted (Chromium's own limit for a
/// message to an SCTP peer that does not say otherwise is 64 KiB; 16 KiB always interoperates).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Messages per second a published channel may send, with this burst.
pub const MESSAGES_PER_SECOND: f64 = 200.0;
/// Burst of messages a published channel may send above [`MESSAGES_PER_SECOND`].
pub const BURST: f64 = 400.0;
/// A subscriber whose channel holds more than this unsent is skipped (its message counted as
/// dropped) rather than let grow: a slow subscriber never holds up the others.
pub const MAX_BUFFERED_BYTES: usize = 1024 * 1024;
/// Channels one session may have open (published and subscribed together): each costs an SCTP
/// stream on its association and a slot in the fan-out.
pub const MAX_CHANNELS_PER_SESSION: usize = 256;
/// The first SCTP stream id we hand out; below it, the ids clients' in-band (DCEP) channels take.
const FIRST_STREAM_ID: u16 = 100;

/// How a channel delivers, as `datachannels/new` asks (WebRTC's `RTCDataChannelInit`): ordered
/// and reliable unless told otherwise. Applies to the client's channel to us and, for a published
/// channel, to its messages across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Delivered in order (`ordered`).
    pub ordered: bool,
    /// Retransmissions at most before a message is given up (`maxRetransmits`).
    pub max_retransmits: Option<u16>,
    /// How long a message is retransmitted at most, ms (`maxPacketLifeTime`).
    pub max_packet_life_time: Option<u16>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            ordered: true,
            max_retransmits: None,
            max_packet_life_time: None,
        }
    }
}

impl ChannelOptions {
    /// WebRTC refuses both limits at once; so do we.
    pub fn valid(&self) -> bool {
        self.max_retransmits.is_none() || self.max_packet_life_time.is_none()
    }

    /// str0m's config of the negotiated channel `label` with SCTP stream `stream_id`.
    pub fn config(&self, label: String, stream_id: u16) -> ChannelConfig {
        let reliability = match (self.max_retransmits, self.max_packet_life_time) {
            (Some(retransmits), _) => Reliability::MaxRetransmits { retransmits },
            (None, Some(lifetime)) => Reliability::MaxPacketLifetime { lifetime },
            (None, None) => Reliability::Reliable,
        };
        ChannelConfig {
            label,
            ordered: self.ordered,
            reliability,
            negotiated: Some(stream_id),
            ..ChannelConfig::default()
        }
    }

    /// The options a client opened an in-band (DCEP) channel with.
    pub fn of(config: &ChannelConfig) -> ChannelOptions {
        let (max_retransmits, max_packet_life_time) = match config.reliability {
            Reliability::Reliable => (None, None),
            Reliability::MaxRetransmits { retransmits } => (Some(retransmits), None),
            Reliability::MaxPacketLifetime { lifetime } => (None, Some(lifetime)),
        };
        ChannelOptions {
            ordered: config.ordered,
            max_retransmits,
            max_packet_life_time,
        }
    }

    /// How the channel's messages travel the cluster's trees.
    pub fn track_params(&self) -> DataTrackParams {
        DataTrackParams {
            ordered: self.ordered,
            reliable: self.max_retransmits.is_none() && self.max_packet_life_time.is_none(),
        }
    }
}

/// Where a published channel's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: SessionId,
    /// The worker that session runs on.
    pub worker: usize,
    /// The subscriber's channel on its own session.
    pub channel: ChannelId,
}

/// A channel the session publishes.
#[derive(Debug)]
pub struct Published {
    /// The channel's label.
    pub name: String,
    /// Its SCTP stream id on the publisher's association.
    pub stream_id: u16,
    /// str0m's id of the channel.
    pub channel: ChannelId,
    /// Sessions on this gateway that receive its messages.
    pub subscribers: Vec<Subscriber>,
    /// Its messages also go to the cluster bridge, for subscribers on other gateways.
    pub to_cluster: bool,
    rate: TokenBucket,
    /// Messages refused (too large or over the rate), for stats.
    pub dropped: u64,
}

/// How long a `waitForAck` subscriber has to send its acknowledgment (Calls: 15 s); what was
/// held for it is dropped after that, and nothing more is held.
pub const ACK_WAIT: Duration = Duration::from_secs(15);
/// Bytes held at most for a subscriber that has not acknowledged yet.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// Calls' `waitForAck`: delivery to a subscriber waits until it sends its first message (the
/// acknowledgment, consumed here), so that it loses nothing it sent before it was listening.
#[derive(Debug, Default)]
pub enum AckGate {
    /// Delivering as messages come.
    #[default]
    Open,
    /// Holding messages until the subscriber's first message.
    Waiting {
        /// When the subscription began: the `ACK_WAIT` deadline runs from here.
        since: Instant,
        /// The held messages, (binary, payload), in order.
        held: VecDeque<(bool, Arc<[u8]>)>,
        /// Their total size, bytes.
        bytes: usize,
    },
}

/// What the gate does with a message for the subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Write it now.
    Pass,
    /// Kept until the subscriber acknowledges.
    Held,
    /// Dropped: the acknowledgment is overdue or too much is held.
    Dropped,
}

impl AckGate {
    /// A gate holding messages from `now` until the subscriber acknowledges.
    pub fn waiting(now: Instant) -> AckGate {
        AckGate::Waiting {
            since: now,
            held: VecDeque::new(),
            bytes: 0,
        }
    }

    /// What to do with a message (`binary` or text) for the subscriber: pass it, hold it, or drop
    /// it.
    pub fn offer(&mut self, binary: bool, data: &Arc<[u8]>, now: Instant) -> Gate {
        let AckGate::Waiting { since, held, bytes } = self else {
            return Gate::Pass;
        };
        if now.saturating_duration_since(*since) >= ACK_WAIT || *bytes + data.len() > MAX_HELD_BYTES
        {
            if !held.is_empty() {
                held.clear();
                *bytes = 0;
            }
            return Gate::Dropped;
        }
        *bytes += data.len();
        held.push_back((binary, data.clone()));
        Gate::Held
    }

    /// A message from the subscriber: the acknowledgment if the gate was waiting (it opens and
    /// hands back what it held, in order); None when it was open already.
    pub fn ack(&mut self) -> Option<VecDeque<(bool, Arc<[u8]>)>> {
        match std::mem::take(self) {
            AckGate::Open => None,
            AckGate::Waiting { held, .. } => Some(held),
        }
    }
}

/// What a session asks to receive (`datachannels/new`, `location: remote`).
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The publishing session.
    pub publisher: SessionId,
    /// The published channel's label.
    pub name: String,
    /// The peer that serves it: the publisher's worker, or the cluster bridge.
    pub publisher_worker: usize,
    /// Ordered/reliable delivery settings for the subscriber's channel.
    pub options: ChannelOptions,
    /// Calls' `waitForAck`: nothing is delivered until the subscriber's first message.
    pub wait_for_ack: bool,
}

/// A channel the session receives from another session's published one.
#[derive(Debug)]
pub struct Subscribed {
    /// The publishing session.
    pub publisher: SessionId,
    /// The published channel's label.
    pub name: String,
    /// Its SCTP stream id on the subscriber's association.
    pub stream_id: u16,
    /// str0m's id of the subscriber's channel.
    pub channel: ChannelId,
    /// Where the publisher's messages come from: its worker, or the cluster bridge.
    pub publisher_worker: usize,
    /// Calls' `canReply`: what the subscriber writes goes back to the publisher (only to it),
    /// within the same size and rate limits as a published channel.
    pub can_reply: bool,
    reply_rate: TokenBucket,
    /// Holds messages until the subscriber acknowledges (`waitForAck`).
    pub gate: AckGate,
}

impl Subscribed {
    /// A subscription whose replies are off until `canReply` turns them on.
    pub fn new(
        publisher: SessionId,
        name: String,
        stream_id: u16,
        channel: ChannelId,
        publisher_worker: usize,
        gate: AckGate,
    ) -> Subscribed {
        Subscribed {
            publisher,
            name,
            stream_id,
            channel,
            publisher_worker,
            can_reply: false,
            reply_rate: TokenBucket::new(MESSAGES_PER_SECOND, BURST),
            gate,
        }
    }

    /// Whether a reply of `len` bytes at `now` goes to the publisher.
    pub fn admit_reply(&mut self, len: usize, now: Instant) -> bool {
        self.can_reply && len <= MAX_MESSAGE_BYTES && self.reply_rate.take(now).is_ok()
    }
}

/// A session's channels.
#[derive(Debug, Default)]
pub struct SessionChannels {
    /// Channels the session publishes.
    pub published: Vec<Published>,
    /// Channels the session subscribes to.
    pub subscribed: Vec<Subscribed>,
    /// A WHEP viewer's in-band channels whose label the stream's publisher has not opened yet
    /// (label, channel): matched on the worker's housekeeping tick.
    pub wanted: Vec<(String, ChannelId)>,
    next_stream_id: u16,
}

impl SessionChannels {
    /// Whether the session may have one more channel.
    pub fn has_room(&self) -> bool {
        self.published.len() + self.subscribed.len() + self.wanted.len() < MAX_CHANNELS_PER_SESSION
    }

    /// Whether `channel` is one of the session's channels already (one `datachannels/*`
    /// opened: str0m reports those open too).
    pub fn knows(&self, channel: ChannelId) -> bool {
        self.published.iter().any(|p| p.channel == channel)
            || self.subscribed.iter().any(|s| s.channel == channel)
            || self.wanted.iter().any(|(_, c)| *c == channel)
    }

    /// A stream id not used by this session yet; None once the session has its
    /// `MAX_CHANNELS_PER_SESSION` (or ran out of ids).
    pub fn next_stream_id(&mut self) -> Option<u16> {
        if !self.has_room() {
            return None;
        }
        let id = self.next_stream_id.max(FIRST_STREAM_ID);
        // SCTP stream ids are below 65535; a session that opened 65k channels is done.
        let next = id.checked_add(1)?;
        self.next_stream_id = next;
        Some(id)
    }

    /// Starts publishing channel `name` (`to_cluster`: also to the cluster bridge), with no
    /// subscribers yet.
    pub fn publish(&mut self, name: String, stream_id: u16, channel: ChannelId, to_cluster: bool) {
        self.published.push(Published {
            name,
            stream_id,
            channel,
            subscribers: Vec::new(),
            to_cluster,
            rate: TokenBucket::new(MESSAGES_PER_SECOND, BURST),
            dropped: 0,
        });
    }

    /// The published channel labelled `name`.
    pub fn published_mut(&mut self, name: &str) -> Option<&mut Published> {
        self.published.iter_mut().find(|p| p.name == name)
    }

    /// The published channel with str0m id `channel`.
    pub fn by_channel(&mut self, channel: ChannelId) -> Option<&mut Published> {
        self.published.iter_mut().find(|p| p.channel == channel)
    }
}

impl Published {
    /// Whether a message of `len` bytes arriving at `now` may be forwarded: within the size
    /// limit and the channel's token bucket. A refused one is counted.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if len > MAX_MESSAGE_BYTES || self.rate.take(now).is_err() {
            self.dropped += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Published {
        Published {
            name: "chat".into(),
            stream_id: 100,
            channel: a_channel_id(),
            subscribers: Vec::new(),
            to_cluster: false,
            rate: TokenBucket::new(MESSAGES_PER_SECOND, BURST),
            dropped: 0,
        }
    }

    #[test]
    fn an_ack_gate_holds_until_the_ack_then_for_fifteen_seconds_at_most() {
        let t0 = Instant::now();
        let msg = |s: &str| -> Arc<[u8]> { s.as_bytes().into() };
        let mut open = AckGate::default();
        assert_eq!(open.offer(false, &msg("a"), t0), Gate::Pass);
        assert!(open.ack().is_none(), "an open gate takes no ack");
        let mut g = AckGate::waiting(t0);
        assert_eq!(g.offer(false, &msg("a"), t0), Gate::Held);
        assert_eq!(g.offer(true, &msg("b"), t0), Gate::Held);
        let held = g.ack().expect("was waiting");
        assert_eq!(held.len(), 2);
        assert_eq!(&*held[1].1, b"b");
        assert_eq!(g.offer(false, &msg("c"), t0), Gate::Pass);
        let mut late = AckGate::waiting(t0);
        assert_eq!(late.offer(false, &msg("a"), t0), Gate::Held);
        assert_eq!(late.offer(false, &msg("b"), t0 + ACK_WAIT), Gate::Dropped);
        assert_eq!(
            late.ack().map(|h| h.len()),
            Some(0),
            "what was held is gone"
        );
        let mut full = AckGate::waiting(t0);
        let big: Arc<[u8]> = vec![0u8; MAX_HELD_BYTES].into();
        assert_eq!(full.offer(false, &big, t0), Gate::Held);
        assert_eq!(full.offer(false, &msg("x"), t0), Gate::Dropped);
    }

    #[test]
    fn options_map_to_str0m_and_the_tree() {
        let default = ChannelOptions::default();
        assert!(default.valid());
        let c = default.config("chat".into(), 100);
        assert!(c.ordered && c.reliability == Reliability::Reliable);
        assert_eq!(c.negotiated, Some(100));
        assert_eq!(default.track_params(), DataTrackParams::default());
        let lossy = ChannelOptions {
            ordered: false,
            max_retransmits: Some(0),
            max_packet_life_time: None,
        };
        let c = lossy.config("game".into(), 101);
        assert!(!c.ordered);
        assert_eq!(
            c.reliability,
            Reliability::MaxRetransmits { retransmits: 0 }
        );
        assert!(!lossy.track_params().reliable && !lossy.track_params().ordered);
        let both = ChannelOptions {
            max_packet_life_time: Some(100),
            ..lossy
        };
        assert!(!both.valid());
    }

    /// str0m hands out ChannelIds only from an Rtc.
    fn a_channel_id() -> ChannelId {
        let mut rtc = str0m::Rtc::new(Instant::now());
        rtc.direct_api()
            .create_data_channel(str0m::channel::ChannelConfig {
                label: "x".into(),
                negotiated: Some(1),
                ..Default::default()
            })
    }

    #[test]
    fn a_burst_then_the_rate_and_no_oversized_message() {
        let mut c = channel();
        let t0 = Instant::now();
        let admitted = (0..1000).filter(|_| c.admit(10, t0)).count();
        assert_eq!(admitted, BURST as usize);
        assert_eq!(c.dropped, 1000 - BURST as u64);
        let later = t0 + Duration::from_millis(100);
        let admitted = (0..100).filter(|_| c.admit(10, later)).count();
        assert_eq!(admitted, 20, "200/s for 100 ms");
        let much_later = t0 + Duration::from_secs(60);
        assert!(!c.admit(MAX_MESSAGE_BYTES + 1, much_later));
        assert!(c.admit(MAX_MESSAGE_BYTES, much_later));
    }

    #[test]
    fn stream_ids_are_unique_and_above_the_in_band_ones() {
        let mut s = SessionChannels::default();
        let a = s.next_stream_id();
        let b = s.next_stream_id();
        assert_eq!(a, Some(FIRST_STREAM_ID));
        assert_eq!(b, Some(FIRST_STREAM_ID + 1));
        for i in 0..MAX_CHANNELS_PER_SESSION {
            let id = s.next_stream_id().expect("an id");
            s.publish(format!("c{i}"), id, a_channel_id(), false);
        }
        assert_eq!(s.next_stream_id(), None, "a session's channels are bounded");
    }
}
