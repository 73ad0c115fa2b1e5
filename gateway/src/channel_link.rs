//! Messages along one published data channel inside a node, between the worker of the session
//! that publishes it (or the cluster bridge, for a channel published on another gateway) and the
//! workers of its subscribers (`channel_fanout`).

use std::sync::Arc;

use crate::data_channel::Subscriber;
use crate::ids::SessionId;

pub enum ChannelMsg {
    /// To the publisher's side: forward channel `name` to `subscriber`.
    Subscribe {
        publisher: SessionId,
        name: String,
        subscriber: Subscriber,
    },
    /// To the publisher's side: stop forwarding to `subscriber`.
    Unsubscribe {
        publisher: SessionId,
        name: String,
        subscriber: Subscriber,
    },
    /// To the publisher's side: a subscriber's reply on the channel.
    Reply {
        publisher: SessionId,
        name: String,
        binary: bool,
        data: Arc<[u8]>,
    },
    /// To a subscriber's worker: one message of the channel.
    Message {
        to: Subscriber,
        binary: bool,
        data: Arc<[u8]>,
    },
}
