//! The handshake: each side's first message is a [`Hello`], and each checks the other's with [`Hello::accept`]
//! before anything else is believed. The Hello layout is frozen across versions (only appending is allowed),
//! so a node can always read a peer's version and refuse it with a clear reason instead of a parse error.

use std::fmt;

use bytes::BufMut;

use super::PROTOCOL_VERSION;
use super::control::{CloseCode, ControlMessage};
use super::error::{DecodeError, EncodeError};
use super::wire::{Reader, put_string};

/// Who is on the other end of a link. Wire: `u16 version | str node_id | u8 tier | str cluster`, then
/// possibly fields appended by later versions, which this version ignores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's node id, as it appears in the membership list and in [`TrackKey::origin`](super::TrackKey).
    pub node_id: String,
    /// The sender's tier in the relay hierarchy (0 = gateway/origin; higher = further from the edge), so the
    /// peer can sanity-check tree placement and log it.
    pub tier: u8,
    /// Cluster name: nodes of different clusters (staging and production sharing a network) refuse each
    /// other.
    pub cluster: String,
}

/// Why a peer's Hello was refused. Turn it into the `Close` to send with [`HandshakeError::close_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Our [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
        ours: u16,
        /// The version in the peer's Hello.
        theirs: u16,
    },
    /// The peer belongs to another cluster.
    ClusterMismatch {
        /// Our cluster name.
        ours: String,
        /// The cluster name in the peer's Hello.
        theirs: String,
    },
    /// The peer claims our own node id: a node dialled itself (or two nodes share an id, which is as bad).
    SameNode {
        /// The node id the peer claimed, which is ours.
        node_id: String,
    },
}

impl Hello {
    /// Our Hello, at this build's [`PROTOCOL_VERSION`].
    pub fn new(node_id: impl Into<String>, tier: u8, cluster: impl Into<String>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node_id: node_id.into(),
            tier,
            cluster: cluster.into(),
        }
    }

    /// Checks the peer's Hello against ours (`self`). Versions must be equal: there is no minor version, and
    /// compatible additions never need a bump (see the module docs).
    pub fn accept(&self, peer: &Hello) -> Result<(), HandshakeError> {
        if peer.version != self.version {
            return Err(HandshakeError::VersionMismatch {
                ours: self.version,
                theirs: peer.version,
            });
        }
        if peer.cluster != self.cluster {
            return Err(HandshakeError::ClusterMismatch {
                ours: self.cluster.clone(),
                theirs: peer.cluster.clone(),
            });
        }
        if peer.node_id == self.node_id {
            return Err(HandshakeError::SameNode {
                node_id: peer.node_id.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn put(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        out.put_u16(self.version);
        put_string(out, &self.node_id, "node id")?;
        out.put_u8(self.tier);
        put_string(out, &self.cluster, "cluster")
    }

    /// Reads the frozen fields and ignores anything appended after them.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
        Ok(Hello {
            version: r.u16("hello version")?,
            node_id: r.string("node id")?,
            tier: r.u8("tier")?,
            cluster: r.string("cluster")?,
        })
    }
}

impl HandshakeError {
    /// The close code that says why.
    pub fn code(&self) -> CloseCode {
        match self {
            HandshakeError::VersionMismatch { .. } => CloseCode::VersionMismatch,
            HandshakeError::ClusterMismatch { .. } => CloseCode::ClusterMismatch,
            HandshakeError::SameNode { .. } => CloseCode::SameNode,
        }
    }

    /// The `Close` that tells the peer why, before the link is closed. The reason is cut to the wire's string
    /// limit (at a character boundary) since it quotes peer-supplied names.
    pub fn close_message(&self) -> ControlMessage {
        let mut reason = self.to_string();
        if reason.len() > super::MAX_STRING_LEN {
            let mut end = super::MAX_STRING_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        ControlMessage::Close {
            code: self.code(),
            reason,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::VersionMismatch { ours, theirs } => write!(
                f,
                "link protocol version {theirs} not supported: this node speaks version {ours}"
            ),
            HandshakeError::ClusterMismatch { ours, theirs } => write!(
                f,
                "peer belongs to cluster {theirs:?}, this node to {ours:?}"
            ),
            HandshakeError::SameNode { node_id } => {
                write!(f, "peer has this node's own id {node_id:?}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ControlDecoder;

    fn ours() -> Hello {
        Hello::new("relay-a", 1, "prod")
    }

    #[test]
    fn same_version_and_cluster_is_accepted() {
        assert_eq!(ours().accept(&Hello::new("relay-b", 0, "prod")), Ok(()));
    }

    #[test]
    fn other_version_is_refused_with_a_clear_close() {
        let peer = Hello {
            version: PROTOCOL_VERSION + 1,
            ..Hello::new("relay-b", 0, "prod")
        };
        let err = ours().accept(&peer).unwrap_err();
        assert_eq!(err, HandshakeError::VersionMismatch { ours: 1, theirs: 2 });
        assert_eq!(
            err.close_message(),
            ControlMessage::Close {
                code: CloseCode::VersionMismatch,
                reason: "link protocol version 2 not supported: this node speaks version 1".into()
            }
        );
        assert!(ours().accept(&Hello { version: 0, ..peer }).is_err());
    }

    #[test]
    fn other_cluster_and_self_are_refused() {
        assert_eq!(
            ours()
                .accept(&Hello::new("relay-b", 0, "staging"))
                .map_err(|e| e.code()),
            Err(CloseCode::ClusterMismatch)
        );
        assert_eq!(
            ours()
                .accept(&Hello::new("relay-a", 1, "prod"))
                .map_err(|e| e.code()),
            Err(CloseCode::SameNode)
        );
    }

    #[test]
    fn close_reason_quoting_long_names_still_encodes() {
        let err = HandshakeError::ClusterMismatch {
            ours: "é".repeat(127),
            theirs: "ü".repeat(127),
        };
        let close = err.close_message();
        let ControlMessage::Close { reason, .. } = &close else {
            unreachable!()
        };
        assert!(reason.len() <= 255);
        assert!(close.to_bytes().is_ok());
    }

    #[test]
    fn golden_hello() {
        let bytes = ControlMessage::Hello(Hello::new("n1", 2, "c"))
            .to_bytes()
            .unwrap();
        assert_eq!(
            bytes.as_ref(),
            &[0, 0, 0, 9, 0x01, 0, 1, 2, b'n', b'1', 2, 1, b'c']
        );
    }

    #[test]
    fn a_future_hello_with_appended_fields_is_read_and_refused_by_version() {
        // Version 9 appended a feature bitmap; we must still read its version and node id.
        let future: &[u8] = &[
            0, 0, 0, 14, 0x01, 0, 9, 2, b'n', b'2', 0, 1, b'c', 0xde, 0xad, 0xbe, 0xef, 0x42,
        ];
        let mut decoder = ControlDecoder::new();
        decoder.push(future);
        let Ok(Some(ControlMessage::Hello(peer))) = decoder.next_message() else {
            panic!("future hello must decode")
        };
        assert_eq!(peer.node_id, "n2");
        assert_eq!(
            Hello::new("n1", 0, "c").accept(&peer),
            Err(HandshakeError::VersionMismatch { ours: 1, theirs: 9 })
        );
    }
}
