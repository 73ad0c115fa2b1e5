//! One datagram for a session, as a socket (UDP, or an ICE-TCP frame) delivered it: what a
//! worker's engine takes as input (`engine::Engine::handle_datagrams`).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::Protocol;

use crate::ids::SessionId;

/// A datagram on its way to the worker that owns its session.
#[derive(Debug)]
pub struct Datagram {
    pub session: SessionId,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
    pub at: Instant,
    /// UDP, or TCP for a frame off an ICE-TCP connection (`ice_tcp`).
    pub proto: Protocol,
}
