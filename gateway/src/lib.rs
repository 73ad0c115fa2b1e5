//! WHIP/WHEP broadcast gateway: HTTP API, WebRTC termination (str0m, RTP mode), the UDP shell and
//! media workers. Everything after a packet leaves an `Rtc` is the `relay` crate's sans-IO code.

#![warn(missing_docs)]

pub mod adapters;
pub mod admission;
pub mod auth;
pub mod bridge_link;
pub mod channel_link;
pub mod cluster_bridge;
pub mod cluster_channels;
pub mod command;
pub mod config;
pub mod control;
pub mod data_channel;
pub mod datagram;
pub mod demux;
pub mod depacketize;
pub mod dtls_cert;
pub mod engine;
pub mod fmp4;
pub mod forwarding;
pub mod front;
pub mod gso;
pub mod heap_trim;
pub mod http_timing;
pub mod ice_tcp;
pub mod ids;
pub mod join_metrics;
pub mod mailbox;
pub mod metrics;
pub mod negotiation;
pub mod node;
pub mod owner_tag;
pub mod peer;
pub mod peer_tunnel;
pub mod recorder;
pub mod refusal;
pub mod registry;
pub mod remote_streams;
pub mod run_pacer;
pub mod sdp_info;
pub mod sender_clock;
#[cfg(target_os = "linux")]
pub mod sendmmsg;
pub mod server;
pub mod session;
pub mod subscribe_trace;
pub mod tls;
pub mod token_bucket;
pub mod trace_context;
pub mod track;
pub mod track_link;
pub mod turn;
pub mod turn_credentials;
pub mod udp;
pub mod worker;
