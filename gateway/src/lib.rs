//! WHIP/WHEP broadcast gateway: HTTP API, WebRTC termination (str0m, RTP mode), the UDP shell and
//! media workers. Everything after a packet leaves an `Rtc` is the `relay` crate's sans-IO code.

pub mod adapters;
pub mod admission;
pub mod auth;
pub mod channel_fanout;
pub mod cluster_bridge;
pub mod cluster_channels;
pub mod config;
pub mod data_channel;
pub mod demux;
pub mod depacketize;
pub mod fmp4;
pub mod gso;
pub mod heap_trim;
pub mod http;
pub mod ids;
pub mod join_metrics;
pub mod metrics;
pub mod negotiation;
pub mod node;
pub mod peer;
pub mod recorder;
pub mod registry;
pub mod run_pacer;
pub mod sdp_info;
pub mod sender_clock;
#[cfg(target_os = "linux")]
pub mod sendmmsg;
pub mod server;
pub mod session;
pub mod sessions;
pub mod token_bucket;
pub mod track;
pub mod udp;
pub mod worker;
