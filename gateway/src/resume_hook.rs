//! What the UDP receive loop needs to ask for a session to be resumed or adopted here
//! (`resume` does it): the replica store, where to send the request, and our DTLS fingerprint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::replica::{ReplicaStore, Stored};

/// A request from the receive loop.
pub struct ResumeRequest {
    /// The replica, as stored when the request was made.
    pub stored: Stored,
    /// The client.
    pub client: SocketAddr,
    /// Our address it sent to.
    pub destination: SocketAddr,
    /// The datagram that asked (a STUN check): the new session answers it.
    pub first: Vec<u8>,
}

/// What the receive loop needs to ask for resumes.
pub struct ResumeHook {
    /// Replicas of the other gateways' sessions.
    pub replicas: Arc<Mutex<ReplicaStore>>,
    /// Where requests go.
    pub requests: mpsc::UnboundedSender<ResumeRequest>,
    /// This gateway's DTLS fingerprint: sessions answered with the same one can be adopted
    /// before their handshake.
    pub fingerprint: String,
}
