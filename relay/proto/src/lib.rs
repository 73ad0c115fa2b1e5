//! The relay tier's protocol and media plane, sans-IO in the style of str0m and quinn-proto:
//! packets, per-track caches, keyframe detection, per-viewer rewriting and keyframe request
//! aggregation, the node-link protocol (`link`), the per-track trees (`tree`) and their placement
//! (`placement`), and the Prometheus exposition format (`metrics`). Nothing here owns a socket, a
//! thread or a clock (no tokio, quinn or axum among its dependencies); time always comes in as an
//! `Instant` argument, so every state machine is driven and tested deterministically by its
//! caller. The IO shell around it is `relay-shell`; the `relay` binary is `relay/src/main.rs`.

#![warn(missing_docs)]

mod codec;
pub mod data_track;
pub mod directory;
mod gap_tracker;
mod h264_stream;
pub mod histogram;
mod keyframe_cache;
mod keyframe_request;
pub mod link;
mod message_reassembly;
pub mod metrics;
mod nack;
mod packet;
mod packet_cache;
pub mod placement;
mod rewrite;
#[cfg(test)]
mod test_support;
pub mod tree;

pub use codec::{
    AggregationUnits, Codec, MalformedAggregate, aggregation_units, h264_parameter_sets,
    is_keyframe_start,
};
pub use gap_tracker::{Arrival, GapTracker, RepairConfig, RepairStats};
pub use h264_stream::{
    H264Inspector, MAX_PARAMETER_SET_BYTES, ParameterSets, h264_parameter_sets_stap_a,
    parameter_sets_packet,
};
pub use keyframe_cache::KeyframeCache;
pub use keyframe_request::KeyframeRequests;
pub use message_reassembly::{DataMessage, Reassembly, ReassemblyLimits, ReassemblyStats};
pub use nack::NackStats;
pub use packet::{MediaPacket, SharedPacket};
pub use packet_cache::{CacheLimits, PacketCache};
pub use rewrite::Rewriter;
