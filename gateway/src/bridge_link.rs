//! What a worker tells the cluster bridge beyond the track and channel messages every task
//! exchanges: a stream withdrawn, and data channels published into the cluster.

use std::sync::Arc;

use crate::ids::SessionId;

/// What only a worker tells the cluster bridge.
pub enum ToBridge {
    /// A WHIP publisher's session ended: withdraw the stream.
    StreamGone {
        stream: Arc<str>,
        session: SessionId,
    },
    /// Session `publisher` publishes data channel `name`: put it in a tree and the directory.
    ChannelPublished {
        publisher: SessionId,
        name: String,
        params: relay_proto::data_track::DataTrackParams,
    },
    /// The channel is closed, or its session ended.
    ChannelUnpublished { publisher: SessionId, name: String },
    /// One message of a published channel, for its tree.
    ChannelToCluster {
        publisher: SessionId,
        name: String,
        binary: bool,
        data: Arc<[u8]>,
    },
}
