//! Test fixtures for the link protocol: a deterministic PRNG (so a failing garbage test fails the same way on
//! every run and machine) and one sample of every control message.

use super::{
    CloseCode, ControlMessage, Hello, StreamOrigin, StreamTrack, SubscribeOk, TrackKey, TrackKind,
};
use crate::Codec;

/// xorshift64*: tiny, good enough to spray bytes, and seeded explicitly.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        // xorshift must not start at zero.
        Rng(seed | 1)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n`; `0` for `n == 0`.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub(super) fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

pub(super) fn key(name: &str) -> TrackKey {
    TrackKey {
        origin: "gw-east-1".into(),
        session: *b"0123456789abcdef",
        name: name.into(),
    }
}

fn origin() -> StreamOrigin {
    StreamOrigin {
        node: "gw-east-1".into(),
        session: *b"0123456789abcdef",
        tracks: vec![
            StreamTrack {
                name: "audio".into(),
                kind: TrackKind::Audio,
            },
            StreamTrack {
                name: "video".into(),
                kind: TrackKind::Video,
            },
        ],
    }
}

/// Every message type once, with non-trivial field values.
pub(super) fn one_of_each() -> Vec<ControlMessage> {
    vec![
        ControlMessage::Hello(Hello::new("relay-2", 1, "prod")),
        ControlMessage::HelloAck,
        ControlMessage::Close {
            code: CloseCode::Malformed,
            reason: "bad frame".into(),
        },
        ControlMessage::Ping { t: 123_456_789 },
        ControlMessage::Pong { t: 987_654_321 },
        ControlMessage::Subscribe {
            track: key("video"),
        },
        ControlMessage::Unsubscribe {
            track: key("video"),
        },
        ControlMessage::SubscribeOk(SubscribeOk {
            track: key("video"),
            channel: 3,
            first_seq: 1234,
            codec: Codec::H264,
            clock_rate: 90_000,
            pt: 102,
            audio_channels: 0,
            fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
        }),
        ControlMessage::TrackEnded {
            track: key("audio"),
        },
        ControlMessage::Redirect {
            track: key("audio"),
        },
        ControlMessage::KeyframeRequest { channel: 3 },
        ControlMessage::Nack {
            channel: 3,
            seqs: vec![70_000, 70_001, 70_002, 70_010, 70_040, 80_000],
        },
        ControlMessage::StreamAnnounce {
            stream: "concert".into(),
            origin: origin(),
        },
        ControlMessage::StreamWithdraw {
            stream: "concert".into(),
            session: *b"0123456789abcdef",
        },
        ControlMessage::StreamLookup {
            stream: "concert".into(),
        },
        ControlMessage::StreamLocation {
            stream: "concert".into(),
            origin: Some(origin()),
        },
        ControlMessage::StreamLocation {
            stream: "gone".into(),
            origin: None,
        },
    ]
}
