//! WHIP/WHEP broadcast gateway: HTTP API, WebRTC termination (str0m, RTP mode), the UDP shell and
//! media workers. Everything after a packet leaves an `Rtc` is the `relay` crate's sans-IO code.

pub mod adapters;
pub mod admission;
pub mod auth;
#[warn(missing_docs)]
pub mod bridge_link;
#[warn(missing_docs)]
pub mod channel_link;
pub mod cluster_bridge;
pub mod cluster_channels;
#[warn(missing_docs)]
pub mod command;
pub mod config;
pub mod control;
pub mod data_channel;
#[warn(missing_docs)]
pub mod datagram;
pub mod demux;
pub mod depacketize;
pub mod dtls_cert;
#[warn(missing_docs)]
pub mod engine;
pub mod fmp4;
pub mod front;
pub mod gso;
pub mod heap_trim;
pub mod http_timing;
pub mod ice_tcp;
pub mod ids;
pub mod join_metrics;
#[warn(missing_docs)]
pub mod mailbox;
pub mod metrics;
pub mod negotiation;
pub mod node;
pub mod peer;
pub mod recorder;
#[warn(missing_docs)]
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
#[warn(missing_docs)]
pub mod track_link;
pub mod turn;
pub mod turn_credentials;
pub mod udp;
#[warn(missing_docs)]
pub mod worker;
