//! Messages along one track inside a node, between its origin (the worker of its publisher, the
//! cluster bridge for a track from another node, an ingest adapter) and what subscribes to it (a
//! worker with viewers, the bridge feeding the track's tree, the recorder, an egress adapter).
//! The same shape as a relay tree's link, one level down: subscribe upstream, packets downstream.

use std::sync::Arc;

use relay_proto::SharedPacket;

use crate::ids::TrackId;
use crate::registry::TrackInfo;
use crate::track::ParameterSets;

/// Subscriber → origin.
pub enum ToOrigin {
    /// Start sending me this track: one `FromOrigin::Run`, then its live packets.
    Subscribe {
        /// The track (its node-local id).
        track: Arc<TrackInfo>,
        /// The subscriber's index among the node's mailboxes.
        worker: usize,
    },
    /// A subscriber's new viewer starts: send one `FromOrigin::Run` on the same ordered path as
    /// the live packets, so the two neither overlap nor leave a gap.
    Replay {
        /// The track (its node-local id).
        track: TrackId,
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
    /// The answer to each `Subscribe` and `Replay`: what a new viewer starts from, built by the
    /// origin's one keyframe cache (`KeyframeCache::start_run`): the run from the latest
    /// keyframe, behind the H264 parameter sets when it lacks them. Empty when the origin has no
    /// keyframe yet: the viewer waits for a live one. Subscribers keep no keyframe cache.
    Run {
        /// The track (its node-local id).
        track: TrackId,
        /// The run, shared by every subscriber it is sent to.
        packets: Arc<[SharedPacket]>,
        /// The H264 track's latest SPS and PPS when the origin knows them: a viewer that must
        /// start at a later live keyframe sent without them gets them from here.
        parameter_sets: Option<ParameterSets>,
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
