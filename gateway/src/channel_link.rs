//! Messages along one published data channel inside a node, between the worker of the session
//! that publishes it (or the cluster bridge, for a channel published on another gateway) and the
//! workers of its subscribers (`channel_fanout`).

use std::sync::Arc;

use crate::data_channel::Subscriber;
use crate::ids::SessionId;

/// A message along a data channel.
pub enum ChannelMsg {
    /// To the publisher's side: forward channel `name` to `subscriber`.
    Subscribe {
        /// The session that publishes the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// The subscriber: its session, worker and channel.
        subscriber: Subscriber,
    },
    /// To the publisher's side: stop forwarding to `subscriber`.
    Unsubscribe {
        /// The session that publishes the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// The subscriber: its session, worker and channel.
        subscriber: Subscriber,
    },
    /// To the publisher's side: a subscriber's reply on the channel.
    Reply {
        /// The session that publishes the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// Binary, or text, as the message was sent.
        binary: bool,
        /// The message (shared, never copied per subscriber).
        data: Arc<[u8]>,
    },
    /// To a subscriber's worker: one message of the channel.
    Message {
        /// The subscriber it is for.
        to: Subscriber,
        /// Binary, or text, as the message was sent.
        binary: bool,
        /// The message (shared, never copied per subscriber).
        data: Arc<[u8]>,
    },
}
