//! Messages along one track inside a node, between its origin (the worker of its publisher, the
//! cluster bridge for a track from another node, an ingest adapter) and what subscribes to it (a
//! worker with viewers, the bridge feeding the track's tree, the recorder, an egress adapter).
//! The same shape as a relay tree's link, one level down: subscribe upstream, packets downstream.

use std::sync::Arc;

use relay_proto::SharedPacket;

use crate::ids::TrackId;
use crate::registry::TrackInfo;

/// Subscriber → origin.
pub enum ToOrigin {
    /// Start sending me this track: its cached keyframe run first, then live packets.
    Subscribe {
        /// The track (its node-local id).
        track: Arc<TrackInfo>,
        /// The subscriber's index among the node's mailboxes.
        worker: usize,
    },
    /// Stop sending it.
    Unsubscribe {
        /// The track (its node-local id).
        track: TrackId,
        /// The subscriber's index among the node's mailboxes.
        worker: usize,
    },
    /// A viewer asked for a keyframe.
    KeyframeRequest {
        /// The track (its node-local id).
        track: TrackId,
    },
}

/// Origin → subscriber.
pub enum FromOrigin {
    /// One packet of the track (an `Arc`, never a copy).
    Media {
        /// The track (its node-local id).
        track: TrackId,
        /// The packet, shared.
        packet: SharedPacket,
    },
    /// Ahead of a keyframe run: the H264 track's latest SPS and PPS, for viewers starting at a
    /// keyframe sent without them.
    H264ParameterSets {
        /// The track (its node-local id).
        track: TrackId,
        /// The sequence parameter set NAL unit.
        sps: Arc<[u8]>,
        /// The picture parameter set NAL unit.
        pps: Arc<[u8]>,
    },
    /// The publisher is gone.
    TrackEnded {
        /// The track (its node-local id).
        track: TrackId,
    },
}

/// Either direction, for a task that is both an origin and a subscriber.
pub enum TrackMsg {
    /// Toward the track's origin.
    ToOrigin(ToOrigin),
    /// From the track's origin.
    FromOrigin(FromOrigin),
}

impl From<ToOrigin> for TrackMsg {
    fn from(m: ToOrigin) -> TrackMsg {
        TrackMsg::ToOrigin(m)
    }
}

impl From<FromOrigin> for TrackMsg {
    fn from(m: FromOrigin) -> TrackMsg {
        TrackMsg::FromOrigin(m)
    }
}
