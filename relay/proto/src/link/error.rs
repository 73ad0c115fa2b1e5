//! Errors of the link framing. Decoding errors are typed (not strings) so that the caller can count them by
//! kind and so tests can tell "malformed" from "too big"; each carries the message type it happened in, since
//! that is what an operator needs to find the peer's bug.

use std::fmt;

/// Why a message could not be encoded. Encoding never sends half a frame: on error the output buffer is left as
/// it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A string field is longer than [`MAX_STRING_LEN`](super::MAX_STRING_LEN) bytes.
    StringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A list has more entries than the protocol allows (NACK seqs, stream tracks).
    TooMany {
        /// What the list holds.
        what: &'static str,
        /// Entries in the list.
        count: usize,
        /// The most the protocol allows.
        max: usize,
    },
    /// The frame would exceed [`MAX_CONTROL_MESSAGE_LEN`](super::MAX_CONTROL_MESSAGE_LEN).
    MessageTooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The protocol's limit.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::StringTooLong { field, len } => {
                write!(f, "{field} is {len} bytes, the link allows 255")
            }
            EncodeError::TooMany { what, count, max } => {
                write!(f, "{count} {what}, the link allows {max}")
            }
            EncodeError::MessageTooLarge { len, max } => {
                write!(f, "control message of {len} bytes exceeds {max}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why the control stream could not be decoded. Every variant is fatal for the link: the caller closes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A length prefix above [`MAX_CONTROL_MESSAGE_LEN`](super::MAX_CONTROL_MESSAGE_LEN); refused before
    /// anything of that size is buffered.
    Oversized {
        /// The length prefix received.
        len: u32,
        /// The protocol's limit.
        max: u32,
    },
    /// A count field above the protocol's bound (NACK seqs, stream tracks).
    TooMany {
        /// The message's type byte.
        msg_type: u8,
        /// What was counted.
        what: &'static str,
        /// The count received.
        count: usize,
        /// The most the protocol allows.
        max: usize,
    },
    /// A length prefix of zero: every frame has at least its type byte.
    EmptyFrame,
    /// The body of a known message does not parse: too short, trailing bytes, bad UTF-8, an out-of-range enum
    /// or flag, NACK blocks out of order.
    Malformed {
        /// The message's type byte.
        msg_type: u8,
        /// Which part did not parse.
        what: &'static str,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the unfinished frame held when the stream ended.
        buffered: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Oversized { len, max } => {
                write!(f, "control frame length {len} exceeds {max}")
            }
            DecodeError::TooMany {
                msg_type,
                what,
                count,
                max,
            } => write!(
                f,
                "control message type {msg_type:#04x}: {count} {what}, at most {max} allowed"
            ),
            DecodeError::EmptyFrame => write!(f, "control frame of length 0"),
            DecodeError::Malformed { msg_type, what } => {
                write!(f, "malformed control message type {msg_type:#04x}: {what}")
            }
            DecodeError::Truncated { buffered } => {
                write!(
                    f,
                    "control stream ended inside a frame ({buffered} bytes buffered)"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a media datagram could not be encoded or decoded. Not fatal for the link: datagrams are independent,
/// the caller counts and drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatagramError {
    /// Encoding: header plus payload exceed the datagram size the connection allows.
    TooLarge {
        /// Header plus payload, in bytes.
        size: usize,
        /// The largest datagram allowed.
        max: usize,
    },
    /// Decoding: shorter than the fixed header.
    Truncated {
        /// The datagram's length in bytes.
        len: usize,
    },
    /// Decoding: a datagram format this build does not speak.
    UnsupportedVersion {
        /// The format version the datagram carries.
        version: u8,
    },
    /// Decoding: reserved flag bits set, which means a format this build does not understand.
    ReservedFlags {
        /// The datagram's whole flags byte.
        flags: u8,
    },
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramError::TooLarge { size, max } => {
                write!(f, "media datagram of {size} bytes exceeds {max}")
            }
            DatagramError::Truncated { len } => {
                write!(
                    f,
                    "media datagram of {len} bytes is shorter than its header"
                )
            }
            DatagramError::UnsupportedVersion { version } => {
                write!(f, "media datagram version {version} not supported")
            }
            DatagramError::ReservedFlags { flags } => {
                write!(f, "media datagram has reserved flags set ({flags:#04x})")
            }
        }
    }
}

impl std::error::Error for DatagramError {}
