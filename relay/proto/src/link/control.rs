//! Control messages: what travels on the link's reliable stream, and their frame encoding
//! `u32 length | u8 type | body` (the table is in the module docs of [`crate::link`]).
//!
//! Encoding validates every limit, because the peer would refuse an oversized message and close the link;
//! better to fail here, where the caller can see which field was wrong. Decoding of a body is strict (exact
//! length, valid enums) except for the frozen `Hello` and `Close`, which ignore appended fields.

use bytes::{BufMut, Bytes, BytesMut};

use super::MAX_CONTROL_MESSAGE_LEN;
use super::error::{DecodeError, EncodeError};
use super::hello::Hello;
use super::nack::{put_nack, read_nack};
use super::track::{StreamOrigin, TrackKey, codec_from_wire, codec_to_wire};
use super::wire::{Reader, put_string};
use crate::Codec;

/// Bytes before the body: the length prefix and the type.
pub(crate) const FRAME_HEADER_LEN: usize = 5;

// Type codes. Grouped by purpose with gaps, so related messages added later stay together.
pub(crate) const HELLO: u8 = 0x01;
pub(crate) const HELLO_ACK: u8 = 0x02;
pub(crate) const CLOSE: u8 = 0x03;
pub(crate) const PING: u8 = 0x04;
pub(crate) const PONG: u8 = 0x05;
pub(crate) const SUBSCRIBE: u8 = 0x10;
pub(crate) const UNSUBSCRIBE: u8 = 0x11;
pub(crate) const SUBSCRIBE_OK: u8 = 0x12;
pub(crate) const TRACK_ENDED: u8 = 0x13;
pub(crate) const KEYFRAME_REQUEST: u8 = 0x14;
pub(crate) const NACK: u8 = 0x15;
pub(crate) const REDIRECT: u8 = 0x16;
pub(crate) const DRAINING: u8 = 0x17;
pub(crate) const STREAM_ANNOUNCE: u8 = 0x20;
pub(crate) const STREAM_WITHDRAW: u8 = 0x21;
pub(crate) const STREAM_LOOKUP: u8 = 0x22;
pub(crate) const STREAM_LOCATION: u8 = 0x23;

/// One message on the control stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// First message in each direction. Frozen layout.
    Hello(Hello),
    /// The peer's Hello was accepted; the link is up.
    HelloAck,
    /// The sender is closing the link, and why (version mismatch, malformed input, shutdown). Frozen layout.
    Close {
        /// Why, as a code the peer can act on.
        code: CloseCode,
        /// Human-readable detail, for the peer's log.
        reason: String,
    },
    /// RTT probe; `t` is the pinger's own opaque timestamp, echoed back unchanged in `Pong`.
    Ping {
        /// The pinger's timestamp, opaque to the peer.
        t: u64,
    },
    /// The answer to `Ping`.
    Pong {
        /// The `t` of the `Ping` answered.
        t: u64,
    },
    /// Child → parent: send me this track.
    Subscribe {
        /// The track wanted.
        track: TrackKey,
    },
    /// Parent → child: this track already has as many children here as the fan-out limit
    /// allows; subscribe at the next rendezvous choice instead.
    Redirect {
        /// The track this parent will not feed the child.
        track: TrackKey,
    },
    /// Child → parent: stop sending this track (last viewer below left).
    Unsubscribe {
        /// The track no longer wanted.
        track: TrackKey,
    },
    /// Parent → child: the track is coming on a channel, with what the child needs to offer it to viewers.
    SubscribeOk(SubscribeOk),
    /// Parent → child: the track is gone (publisher left), or could not be found for a `Subscribe`.
    TrackEnded {
        /// The track that ended.
        track: TrackKey,
    },
    /// Child → parent: a viewer below needs a keyframe.
    KeyframeRequest {
        /// The track's channel on this link (from its `SubscribeOk`).
        channel: u32,
    },
    /// Child → parent: resend these packets. Up to [`MAX_NACK_SEQS`](super::MAX_NACK_SEQS) seqs; decoded
    /// sorted and unique whatever order they were given in.
    Nack {
        /// The track's channel on this link (from its `SubscribeOk`).
        channel: u32,
        /// Extended sequence numbers of the packets wanted.
        seqs: Vec<u64>,
    },
    /// Any node → its peers: I am leaving; move the tracks I feed you to your next rendezvous
    /// parent now (make before break), and choose me for nothing new. Peers of an older build
    /// ignore it (unknown types are skipped) and re-parent when the link closes, as before.
    Draining,
    /// Origin gateway → the stream's home node: this stream is published here.
    StreamAnnounce {
        /// The stream's name.
        stream: String,
        /// Where the stream is published and which tracks it has.
        origin: StreamOrigin,
    },
    /// Origin gateway → home node: the publisher of this stream (this session) left. Naming the session lets
    /// the home node ignore a late withdraw after the stream was republished elsewhere.
    StreamWithdraw {
        /// The stream's name.
        stream: String,
        /// The session that published it (the `session` of its `StreamOrigin`).
        session: [u8; 16],
    },
    /// Edge → home node: where is this stream published?
    StreamLookup {
        /// The stream's name.
        stream: String,
    },
    /// Home node → edge: the answer to `StreamLookup`; `None` when the stream is not live.
    StreamLocation {
        /// The stream asked about.
        stream: String,
        /// Where it is published.
        origin: Option<StreamOrigin>,
    },
}

/// The answer to `Subscribe`: which channel the track's datagrams will carry, and its codec parameters as the
/// publisher negotiated them, so the child can offer exactly those to its viewers without transcoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeOk {
    /// The track this answers.
    pub track: TrackKey,
    /// Link-local number of this track in media datagrams, chosen by the parent.
    pub channel: u32,
    /// Sequence number of the first packet the parent sends on this channel (the start of its
    /// keyframe run), or `u64::MAX` when it has none yet. Lets the child repair the very first
    /// packets too: datagrams may arrive before this message, and any of them may be lost.
    pub first_seq: u64,
    /// The track's codec, as the publisher negotiated it.
    pub codec: Codec,
    /// RTP clock rate (90000 for video, 48000 for Opus).
    pub clock_rate: u32,
    /// The publisher's payload type, which the datagrams carry.
    pub pt: u8,
    /// Audio channel count (2 for Opus); 0 for video.
    pub audio_channels: u8,
    /// The publisher's `a=fmtp` parameters (profile-level-id and the like), possibly empty.
    pub fmtp: String,
}

/// Why a link is being closed. Wire: u16; codes this build does not know decode as `Other` so that a newer
/// peer's reason is still shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// Orderly shutdown (node leaving the cluster).
    Shutdown,
    /// The peer speaks another [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
    VersionMismatch,
    /// The peer belongs to another cluster (misconfiguration).
    ClusterMismatch,
    /// The peer is this node (membership lists contain oneself).
    SameNode,
    /// The peer sent bytes that did not decode.
    Malformed,
    /// The peer sent a valid message at the wrong time (anything before Hello, a second Hello).
    ProtocolViolation,
    /// A code this build does not know (from a newer peer), kept as it came.
    Other(u16),
}

impl CloseCode {
    /// The code's number on the wire.
    pub fn to_wire(self) -> u16 {
        match self {
            CloseCode::Shutdown => 0,
            CloseCode::VersionMismatch => 1,
            CloseCode::ClusterMismatch => 2,
            CloseCode::SameNode => 3,
            CloseCode::Malformed => 4,
            CloseCode::ProtocolViolation => 5,
            CloseCode::Other(code) => code,
        }
    }

    /// The code of a number from the wire; numbers this build does not know become [`CloseCode::Other`].
    pub fn from_wire(code: u16) -> CloseCode {
        match code {
            0 => CloseCode::Shutdown,
            1 => CloseCode::VersionMismatch,
            2 => CloseCode::ClusterMismatch,
            3 => CloseCode::SameNode,
            4 => CloseCode::Malformed,
            5 => CloseCode::ProtocolViolation,
            other => CloseCode::Other(other),
        }
    }
}

impl ControlMessage {
    /// The type byte of this message on the wire.
    pub fn msg_type(&self) -> u8 {
        match self {
            ControlMessage::Hello(_) => HELLO,
            ControlMessage::HelloAck => HELLO_ACK,
            ControlMessage::Close { .. } => CLOSE,
            ControlMessage::Ping { .. } => PING,
            ControlMessage::Pong { .. } => PONG,
            ControlMessage::Subscribe { .. } => SUBSCRIBE,
            ControlMessage::Unsubscribe { .. } => UNSUBSCRIBE,
            ControlMessage::SubscribeOk(_) => SUBSCRIBE_OK,
            ControlMessage::TrackEnded { .. } => TRACK_ENDED,
            ControlMessage::Redirect { .. } => REDIRECT,
            ControlMessage::Draining => DRAINING,
            ControlMessage::KeyframeRequest { .. } => KEYFRAME_REQUEST,
            ControlMessage::Nack { .. } => NACK,
            ControlMessage::StreamAnnounce { .. } => STREAM_ANNOUNCE,
            ControlMessage::StreamWithdraw { .. } => STREAM_WITHDRAW,
            ControlMessage::StreamLookup { .. } => STREAM_LOOKUP,
            ControlMessage::StreamLocation { .. } => STREAM_LOCATION,
        }
    }

    /// Appends one complete frame (length prefix, type, body) to `out`. On error `out` is left exactly as it
    /// was, so a caller batching several messages into one buffer never sends half a frame.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u32(0); // patched below, once the body's length is known
        out.put_u8(self.msg_type());
        let result = self.put_body(out).and_then(|()| {
            let len = out.len() - start - 4;
            if len > MAX_CONTROL_MESSAGE_LEN {
                return Err(EncodeError::MessageTooLarge {
                    len,
                    max: MAX_CONTROL_MESSAGE_LEN,
                });
            }
            // Fits: MAX_CONTROL_MESSAGE_LEN < 2^32.
            out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// One frame in its own buffer, ready for the QUIC stream.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    fn put_body(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            ControlMessage::Hello(hello) => hello.put(out)?,
            ControlMessage::HelloAck | ControlMessage::Draining => {}
            ControlMessage::Close { code, reason } => {
                out.put_u16(code.to_wire());
                put_string(out, reason, "close reason")?;
            }
            ControlMessage::Ping { t } | ControlMessage::Pong { t } => out.put_u64(*t),
            ControlMessage::Subscribe { track }
            | ControlMessage::Unsubscribe { track }
            | ControlMessage::TrackEnded { track }
            | ControlMessage::Redirect { track } => track.put(out)?,
            ControlMessage::SubscribeOk(ok) => {
                ok.track.put(out)?;
                out.put_u32(ok.channel);
                out.put_u64(ok.first_seq);
                out.put_u8(codec_to_wire(ok.codec));
                out.put_u32(ok.clock_rate);
                out.put_u8(ok.pt);
                out.put_u8(ok.audio_channels);
                put_string(out, &ok.fmtp, "fmtp")?;
            }
            ControlMessage::KeyframeRequest { channel } => out.put_u32(*channel),
            ControlMessage::Nack { channel, seqs } => {
                out.put_u32(*channel);
                put_nack(out, seqs)?;
            }
            ControlMessage::StreamAnnounce { stream, origin } => {
                put_string(out, stream, "stream")?;
                origin.put(out)?;
            }
            ControlMessage::StreamWithdraw { stream, session } => {
                put_string(out, stream, "stream")?;
                out.put_slice(session);
            }
            ControlMessage::StreamLookup { stream } => put_string(out, stream, "stream")?,
            ControlMessage::StreamLocation { stream, origin } => {
                put_string(out, stream, "stream")?;
                match origin {
                    None => out.put_u8(0),
                    Some(origin) => {
                        out.put_u8(1);
                        origin.put(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes one body. `Ok(None)` for a type this build does not know (the caller skips it); errors for a
    /// known type whose body does not parse.
    pub(crate) fn decode_body(
        msg_type: u8,
        body: &[u8],
    ) -> Result<Option<ControlMessage>, DecodeError> {
        let mut r = Reader::new(body, msg_type);
        let msg = match msg_type {
            // Frozen messages: later versions may append fields, so what follows ours is ignored and
            // `r.finish()` is deliberately not called.
            HELLO => return Hello::read(&mut r).map(|h| Some(ControlMessage::Hello(h))),
            CLOSE => {
                return Ok(Some(ControlMessage::Close {
                    code: CloseCode::from_wire(r.u16("close code")?),
                    reason: r.string("close reason")?,
                }));
            }
            HELLO_ACK => ControlMessage::HelloAck,
            DRAINING => ControlMessage::Draining,
            PING => ControlMessage::Ping {
                t: r.u64("ping t")?,
            },
            PONG => ControlMessage::Pong {
                t: r.u64("pong t")?,
            },
            SUBSCRIBE => ControlMessage::Subscribe {
                track: TrackKey::read(&mut r)?,
            },
            UNSUBSCRIBE => ControlMessage::Unsubscribe {
                track: TrackKey::read(&mut r)?,
            },
            TRACK_ENDED => ControlMessage::TrackEnded {
                track: TrackKey::read(&mut r)?,
            },
            REDIRECT => ControlMessage::Redirect {
                track: TrackKey::read(&mut r)?,
            },
            SUBSCRIBE_OK => ControlMessage::SubscribeOk(SubscribeOk {
                track: TrackKey::read(&mut r)?,
                channel: r.u32("channel")?,
                first_seq: r.u64("first seq")?,
                codec: codec_from_wire(r.u8("codec")?),
                clock_rate: r.u32("clock rate")?,
                pt: r.u8("payload type")?,
                audio_channels: r.u8("audio channels")?,
                fmtp: r.string("fmtp")?,
            }),
            KEYFRAME_REQUEST => ControlMessage::KeyframeRequest {
                channel: r.u32("channel")?,
            },
            NACK => ControlMessage::Nack {
                channel: r.u32("channel")?,
                seqs: read_nack(&mut r)?,
            },
            STREAM_ANNOUNCE => ControlMessage::StreamAnnounce {
                stream: r.string("stream")?,
                origin: StreamOrigin::read(&mut r)?,
            },
            STREAM_WITHDRAW => ControlMessage::StreamWithdraw {
                stream: r.string("stream")?,
                session: r.session("session")?,
            },
            STREAM_LOOKUP => ControlMessage::StreamLookup {
                stream: r.string("stream")?,
            },
            STREAM_LOCATION => {
                let stream = r.string("stream")?;
                let origin = if r.present("stream origin")? {
                    Some(StreamOrigin::read(&mut r)?)
                } else {
                    None
                };
                ControlMessage::StreamLocation { stream, origin }
            }
            _ => return Ok(None),
        };
        r.finish()?;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testkit::{key, one_of_each};
    use crate::link::{MAX_NACK_SEQS, MAX_STREAM_TRACKS, StreamTrack, TrackKind};

    /// Encodes, checks the frame header, decodes the body.
    fn round_trip(msg: &ControlMessage) -> ControlMessage {
        let frame = msg.to_bytes().unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix counts type + body");
        assert_eq!(frame[4], msg.msg_type());
        ControlMessage::decode_body(frame[4], &frame[FRAME_HEADER_LEN..])
            .unwrap()
            .expect("known type")
    }

    #[test]
    fn every_message_round_trips() {
        let all = one_of_each();
        let mut types: Vec<u8> = all.iter().map(ControlMessage::msg_type).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), 16, "one_of_each covers every message type");
        for msg in &all {
            assert_eq!(&round_trip(msg), msg);
        }
    }

    #[test]
    fn max_size_fields_round_trip() {
        let long = "é".repeat(127) + "x"; // 255 bytes, multi-byte UTF-8
        assert_eq!(long.len(), 255);
        let track = TrackKey {
            origin: long.clone(),
            session: [0xff; 16],
            name: long.clone(),
        };
        let origin = StreamOrigin {
            node: long.clone(),
            session: [0xab; 16],
            tracks: vec![
                StreamTrack {
                    name: long.clone(),
                    kind: TrackKind::Data,
                };
                MAX_STREAM_TRACKS
            ],
        };
        let msgs = [
            ControlMessage::Hello(Hello {
                version: u16::MAX,
                node_id: long.clone(),
                tier: u8::MAX,
                cluster: long.clone(),
            }),
            ControlMessage::Close {
                code: CloseCode::Other(u16::MAX),
                reason: long.clone(),
            },
            ControlMessage::Ping { t: u64::MAX },
            ControlMessage::SubscribeOk(SubscribeOk {
                track: track.clone(),
                channel: u32::MAX,
                first_seq: u64::MAX,
                codec: Codec::Av1,
                clock_rate: u32::MAX,
                pt: u8::MAX,
                audio_channels: u8::MAX,
                fmtp: long.clone(),
            }),
            ControlMessage::Nack {
                channel: u32::MAX,
                seqs: (0..MAX_NACK_SEQS as u64)
                    .map(|i| u64::MAX - 2 * i)
                    .rev()
                    .collect(),
            },
            ControlMessage::StreamAnnounce {
                stream: long.clone(),
                origin: origin.clone(),
            },
            ControlMessage::StreamLocation {
                stream: long.clone(),
                origin: Some(origin),
            },
        ];
        for msg in &msgs {
            assert_eq!(&round_trip(msg), msg);
        }
        // The largest message the limits allow is far below the frame limit.
        let biggest = msgs[5].to_bytes().unwrap().len();
        assert!(biggest < MAX_CONTROL_MESSAGE_LEN / 3, "{biggest}");
    }

    #[test]
    fn empty_strings_round_trip() {
        let msg = ControlMessage::Subscribe {
            track: TrackKey {
                origin: String::new(),
                session: [0; 16],
                name: String::new(),
            },
        };
        assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn golden_subscribe() {
        let msg = ControlMessage::Subscribe {
            track: TrackKey {
                origin: "gw1".into(),
                session: [0x11; 16],
                name: "video".into(),
            },
        };
        let mut expected = vec![
            0, 0, 0, 27,   // length: type + 26 body bytes
            0x10, // Subscribe
            3, b'g', b'w', b'1',
        ];
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(&[5, b'v', b'i', b'd', b'e', b'o']);
        assert_eq!(msg.to_bytes().unwrap().as_ref(), expected.as_slice());
    }

    #[test]
    fn golden_nack() {
        let msg = ControlMessage::Nack {
            channel: 7,
            seqs: vec![0x0100, 0x0101, 0x0103, 0x0200],
        };
        let expected: &[u8] = &[
            0,
            0,
            0,
            27,   // length
            0x15, // Nack
            0,
            0,
            0,
            7, // channel
            0,
            2, // two blocks
            0,
            0,
            0,
            0,
            0,
            0,
            0x01,
            0x00,
            0b0000_0000,
            0b0000_0101, // 0x100 + {0x101, 0x103}
            0,
            0,
            0,
            0,
            0,
            0,
            0x02,
            0x00,
            0,
            0, // 0x200
        ];
        assert_eq!(msg.to_bytes().unwrap().as_ref(), expected);
    }

    #[test]
    fn golden_subscribe_ok() {
        let msg = ControlMessage::SubscribeOk(SubscribeOk {
            track: TrackKey {
                origin: "o".into(),
                session: [0; 16],
                name: "a".into(),
            },
            channel: 0x0102_0304,
            first_seq: 5,
            codec: Codec::Opus,
            clock_rate: 48000,
            pt: 111,
            audio_channels: 2,
            fmtp: "x".into(),
        });
        let mut expected = vec![0, 0, 0, 42, 0x12, 1, b'o'];
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&[1, b'a']);
        expected.extend_from_slice(&[1, 2, 3, 4]); // channel
        expected.extend_from_slice(&5u64.to_be_bytes()); // first seq
        expected.push(1); // Opus
        expected.extend_from_slice(&48000u32.to_be_bytes());
        expected.extend_from_slice(&[111, 2, 1, b'x']);
        assert_eq!(msg.to_bytes().unwrap().as_ref(), expected.as_slice());
    }

    #[test]
    fn golden_hello_ack_and_ping() {
        assert_eq!(
            ControlMessage::HelloAck.to_bytes().unwrap().as_ref(),
            &[0, 0, 0, 1, 0x02]
        );
        assert_eq!(
            ControlMessage::Ping {
                t: 0x0102_0304_0506_0708
            }
            .to_bytes()
            .unwrap()
            .as_ref(),
            &[0, 0, 0, 9, 0x04, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn encode_error_leaves_buffer_untouched() {
        let mut out = BytesMut::new();
        ControlMessage::HelloAck.encode(&mut out).unwrap();
        let before = out.clone();
        let bad = ControlMessage::Subscribe {
            track: TrackKey {
                origin: "ok".into(),
                session: [0; 16],
                name: "n".repeat(256),
            },
        };
        assert_eq!(
            bad.encode(&mut out),
            Err(EncodeError::StringTooLong {
                field: "track name",
                len: 256
            })
        );
        assert_eq!(out, before);
    }

    #[test]
    fn strict_bodies_refuse_trailing_bytes_frozen_ones_ignore_them() {
        let mut ping = ControlMessage::Ping { t: 1 }.to_bytes().unwrap().to_vec();
        ping.push(0);
        assert!(matches!(
            ControlMessage::decode_body(PING, &ping[FRAME_HEADER_LEN..]),
            Err(DecodeError::Malformed {
                what: "trailing bytes",
                ..
            })
        ));

        let close = ControlMessage::Close {
            code: CloseCode::Shutdown,
            reason: "bye".into(),
        };
        let mut bytes = close.to_bytes().unwrap().to_vec();
        bytes.extend_from_slice(b"future field");
        assert_eq!(
            ControlMessage::decode_body(CLOSE, &bytes[FRAME_HEADER_LEN..]),
            Ok(Some(close))
        );
    }

    #[test]
    fn truncated_body_never_decodes() {
        for msg in one_of_each() {
            let frame = msg.to_bytes().unwrap();
            let body = &frame[FRAME_HEADER_LEN..];
            for cut in 0..body.len() {
                assert!(
                    ControlMessage::decode_body(msg.msg_type(), &body[..cut]).is_err(),
                    "{msg:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn unknown_types_are_not_errors() {
        assert_eq!(ControlMessage::decode_body(0x00, &[1, 2, 3]), Ok(None));
        assert_eq!(ControlMessage::decode_body(0x7f, &[]), Ok(None));
    }

    #[test]
    fn unknown_codec_and_close_code_decode_leniently() {
        let msg = ControlMessage::SubscribeOk(SubscribeOk {
            track: key("v"),
            channel: 1,
            first_seq: 0,
            codec: Codec::H264,
            clock_rate: 90000,
            pt: 96,
            audio_channels: 0,
            fmtp: String::new(),
        });
        let mut frame = msg.to_bytes().unwrap().to_vec();
        let codec_at = frame.len() - 1 - 1 - 1 - 4 - 1; // back over fmtp length, channels, pt, clock rate, codec
        assert_eq!(frame[codec_at], 2);
        frame[codec_at] = 99;
        let Ok(Some(ControlMessage::SubscribeOk(ok))) =
            ControlMessage::decode_body(SUBSCRIBE_OK, &frame[FRAME_HEADER_LEN..])
        else {
            panic!("should decode")
        };
        assert_eq!(ok.codec, Codec::Other);

        for code in 0..=6u16 {
            assert_eq!(CloseCode::from_wire(code).to_wire(), code);
        }
        assert_eq!(CloseCode::from_wire(6), CloseCode::Other(6));
    }
}
