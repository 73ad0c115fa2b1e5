//! What a worker tells the cluster bridge beyond the track and channel messages every task
//! exchanges: a stream withdrawn, and data channels published into the cluster.

use std::sync::Arc;

use crate::ids::SessionId;

/// What only a worker tells the cluster bridge.
pub enum ToBridge {
    /// A WHIP publisher's session ended: withdraw the stream.
    StreamGone {
        /// The WHIP stream name.
        stream: Arc<str>,
        /// The publisher's session.
        session: SessionId,
    },
    /// Session `publisher` publishes data channel `name`: put it in a tree and the directory.
    ChannelPublished {
        /// The session that publishes the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// The channel's options, described to the data track's subscribers.
        params: relay_proto::data_track::DataTrackParams,
    },
    /// The channel is closed, or its session ended.
    ChannelUnpublished {
        /// The session that published the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
    },
    /// One message of a published channel, for its tree.
    ChannelToCluster {
        /// The session that publishes the channel.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// Binary, or text, as the message was sent.
        binary: bool,
        /// The message (shared, never copied per subscriber).
        data: Arc<[u8]>,
    },
}
