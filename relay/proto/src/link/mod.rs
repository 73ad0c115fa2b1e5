//! The node-to-node link protocol: how two nodes of the cluster talk over one QUIC connection. This module is
//! only the framing (encode/decode of bytes), sans-IO like the rest of the crate: no sockets, no clocks, no
//! threads. The QUIC shell (quinn) feeds it bytes and sends what it produces.
//!
//! # Transport
//! One QUIC connection per node pair, carrying every track between them:
//! - one **bidirectional stream for control** (reliable, ordered): length-prefixed [`ControlMessage`]s, read
//!   with a [`ControlDecoder`] that accepts the stream's chunks however they are cut;
//! - **QUIC datagrams for media** (unreliable, unordered, no head-of-line blocking between tracks): one RTP
//!   packet per datagram ([`encode_datagram`] / [`decode_datagram`]). Loss is repaired by the link's own
//!   [`ControlMessage::Nack`] from the parent's packet cache, the "NACK shield".
//!
//! All integers are big-endian (network order) and fixed-size. A string is `u8 length | UTF-8 bytes`, so no
//! string can exceed [`MAX_STRING_LEN`] (255) bytes; invalid UTF-8 is malformed. A session id is 16 raw bytes.
//! An `Option<T>` is `u8 0 | nothing` or `u8 1 | T`; any other tag is malformed.
//!
//! # Control frames
//! ```text
//! u32 length | u8 type | body          length = 1 + body length, 1 ..= MAX_CONTROL_MESSAGE_LEN (65536)
//! ```
//! | type | message            | body                                                                       |
//! |------|--------------------|----------------------------------------------------------------------------|
//! | 0x01 | `Hello`            | u16 version, str node_id, u8 tier, str cluster  (frozen, see below)        |
//! | 0x02 | `HelloAck`         | (empty)                                                                    |
//! | 0x03 | `Close`            | u16 code, str reason  (frozen)                                             |
//! | 0x04 | `Ping`             | u64 t                                                                      |
//! | 0x05 | `Pong`             | u64 t                                                                      |
//! | 0x10 | `Subscribe`        | track                                                                      |
//! | 0x11 | `Unsubscribe`      | track                                                                      |
//! | 0x12 | `SubscribeOk`      | track, u32 channel, u64 first_seq, u8 codec, u32 clock_rate, u8 pt, u8 audio_channels, str fmtp |
//! | 0x13 | `TrackEnded`       | track                                                                      |
//! | 0x14 | `KeyframeRequest`  | u32 channel                                                                |
//! | 0x15 | `Nack`             | u32 channel, u16 n, n × (u64 first, u16 mask)                              |
//! | 0x16 | `Redirect`         | track  (the parent is at its fan-out limit for it)                         |
//! | 0x20 | `StreamAnnounce`   | str stream, origin                                                         |
//! | 0x21 | `StreamWithdraw`   | str stream, session                                                        |
//! | 0x22 | `StreamLookup`     | str stream                                                                 |
//! | 0x23 | `StreamLocation`   | str stream, option(origin)                                                 |
//!
//! where `track` = str origin node, 16-byte session, str name ([`TrackKey`]) and `origin` = str node,
//! 16-byte session, u8 count (≤ [`MAX_STREAM_TRACKS`]), count × (str name, u8 kind) ([`StreamOrigin`]).
//!
//! ## Conversation
//! 1. Both sides send [`Hello`] first. Each checks the peer's with [`Hello::accept`] and answers `HelloAck`, or
//!    `Close` with a [`CloseCode`] (version or cluster mismatch, connecting to itself) and closes the link.
//!    Enforcing "Hello first" is the link state machine's job; this module only frames.
//! 2. The child sends `Subscribe { track }`. The parent answers `SubscribeOk`, which assigns a **channel**: a
//!    small number naming that track on this link, so datagrams carry 4 bytes instead of the ~300-byte key. The
//!    sender of media assigns channels, per link; a channel is never reused on a link while datagrams for its
//!    old track may still be in flight. `TrackEnded { track }` tells the child the track is gone (also the
//!    answer to a `Subscribe` for a track the parent cannot reach); `Unsubscribe` prunes the tree.
//! 3. The child repairs loss with `Nack { channel, seqs }` and asks for keyframes with `KeyframeRequest`. A NACK
//!    carries at most [`MAX_NACK_SEQS`] (512) sequence numbers as RTCP-generic-NACK-style blocks (first seq + a
//!    16-bit mask of the next 16), ascending and non-overlapping, so the decoded list is sorted and unique;
//!    [`nack_messages`] splits longer lists.
//! 4. Stream directory: a gateway with a WHIP publisher sends `StreamAnnounce` to the stream's home node
//!    (chosen by rendezvous hashing) and `StreamWithdraw` when it leaves; a gateway with a WHEP viewer asks the
//!    home node with `StreamLookup` and gets `StreamLocation`, whose [`StreamOrigin`] is everything needed to
//!    build [`TrackKey`]s and subscribe. The withdraw names the session so that a late withdraw from an old
//!    publisher cannot remove the announcement of the new one (OBS reconnects to any gateway).
//! 5. `Ping { t }` is echoed as `Pong { t }`; `t` is opaque to the echoing side, so the pinger measures RTT in
//!    whatever clock it likes.
//!
//! ## Limits and errors
//! Anything over a limit is refused, on encode ([`EncodeError`]) and on decode ([`DecodeError`]): strings over
//! 255 bytes, frames over 64 KiB, NACKs over 512 seqs, streams over 64 tracks. The decoder checks a length
//! prefix before buffering the frame, so a hostile prefix costs nothing. Any malformed frame is fatal: the
//! decoder stops, counts it in [`DecodeStats`], and the caller closes the link (a byte stream that has gone
//! wrong once cannot be trusted to be in sync again). Trailing bytes after a known message's fields are
//! malformed too, except in the two frozen messages.
//!
//! ## Versioning and forward compatibility
//! [`PROTOCOL_VERSION`] is a single number with no minor part: both ends must speak exactly the same one. What
//! may change without a version bump:
//! - **New message types.** A decoder skips a well-framed message of a type it does not know and counts it in
//!   [`DecodeStats::unknown_type`], so an older peer tolerates a newer one's optional messages (hints,
//!   statistics). Anything a peer *must* understand needs a new version (or a feature flag appended to Hello).
//! - **New codecs.** An unknown codec byte in `SubscribeOk` decodes as [`Codec::Other`](crate::Codec::Other).
//!
//! Any change to an existing layout bumps the version. `Hello` and `Close` are **frozen**: their type codes and
//! fields never change in any version, and later versions may only append fields, which decoders ignore. So
//! a node can always read a newer peer's `Hello`, see its version, and refuse it with a `Close` the peer can
//! read too, instead of both failing with "malformed".
//!
//! # Media datagrams
//! ```text
//! u8 version(2 bits) | reserved(3) | retransmission | keyframe_start | marker
//! u32 channel | u64 seq | u64 rtp_time | u8 pt | payload
//! ```
//! [`DATAGRAM_HEADER_LEN`] = 22 bytes of overhead per packet (RTP's own header is 12 + extensions; this one is
//! larger because sequence numbers and timestamps travel already extended, so no hop has to reason about
//! 16/32-bit wrap). The datagram version is [`DATAGRAM_VERSION`] (1); a datagram with another version or a
//! reserved bit set is refused, since guessing at a newer media format would forward garbage to viewers.
//! Encoding checks the datagram against the connection's current maximum datagram size (quinn's
//! `Connection::max_datagram_size`): a packet that does not fit is an error the caller counts. WebRTC payloads
//! are at most ~1200 bytes, so links want a path MTU of at least ~1280 (quinn's MTU discovery or
//! `initial_mtu`).

mod control;
mod datagram;
mod decoder;
mod error;
mod hello;
mod nack;
#[cfg(test)]
mod testkit;
mod track;
mod wire;

pub use control::{CloseCode, ControlMessage, SubscribeOk};
pub use datagram::{
    DATAGRAM_HEADER_LEN, DATAGRAM_VERSION, MediaDatagram, decode_datagram, encode_datagram,
    encode_datagram_into, max_datagram_payload,
};
pub use decoder::{ControlDecoder, DecodeStats};
pub use error::{DatagramError, DecodeError, EncodeError};
pub use hello::{HandshakeError, Hello};
pub use nack::nack_messages;
pub use track::{StreamOrigin, StreamTrack, TrackKey, TrackKind};

/// The link protocol version spoken by this build. Peers must match exactly (see the module docs).
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest string on the wire, in bytes: strings carry a one-byte length.
pub const MAX_STRING_LEN: usize = 255;

/// Largest control frame, counting the type byte and the body (the value of the length prefix). Far above any
/// valid message (the largest, a full `StreamAnnounce`, is ~17 KiB), so it only ever stops garbage.
pub const MAX_CONTROL_MESSAGE_LEN: usize = 64 * 1024;

/// Most sequence numbers in one `Nack`: about two seconds of 2.5 Mbit/s video, the span a packet cache holds;
/// a longer gap is better repaired with a keyframe than with retransmissions.
pub const MAX_NACK_SEQS: usize = 512;

/// Most tracks one stream may announce (WHIP sends two; simulcast and extra tracks stay far below this).
pub const MAX_STREAM_TRACKS: usize = 64;
