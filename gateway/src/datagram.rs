//! One datagram for a session, as a socket (UDP, or an ICE-TCP frame) delivered it: what a
//! worker's engine takes as input (`engine::Engine::handle_datagrams`).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::Protocol;

use crate::ids::SessionId;

/// A datagram on its way to the worker that owns its session.
#[derive(Debug)]
pub struct Datagram {
    /// The session the demultiplexer routed it to.
    pub session: SessionId,
    /// The client's address.
    pub source: SocketAddr,
    /// Our address it was sent to.
    pub destination: SocketAddr,
    /// The datagram as received.
    pub data: Vec<u8>,
    /// When it was read (the engine's time for it).
    pub at: Instant,
    /// UDP, or TCP for a frame off an ICE-TCP connection (`ice_tcp`).
    pub proto: Protocol,
}
