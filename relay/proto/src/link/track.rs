//! How tracks and streams are named between nodes: the global [`TrackKey`] a child subscribes with, and the
//! [`StreamOrigin`] the stream directory hands out (where a stream is published and which tracks it has).
//! Also the wire numbers of [`Codec`] and [`TrackKind`], fixed here once so that no enum reordering in the
//! crate can change the protocol.

use bytes::BufMut;

use super::MAX_STREAM_TRACKS;
use super::error::{DecodeError, EncodeError};
use super::wire::{Reader, put_string};
use crate::Codec;

/// A track's global name: the node it is published on (the root of its tree), the publishing session's
/// 128-bit id, and the track's name within the session. Wire: `str origin | 16 bytes session | str name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// Node id of the origin gateway (as in its `Hello`).
    pub origin: String,
    /// The publishing session's id, raw bytes (the gateway's `SessionId`).
    pub session: [u8; 16],
    /// The track's name within its session (a data channel's is made by
    /// [`data_key_name`](crate::data_track::data_key_name)).
    pub name: String,
}

impl TrackKey {
    pub(crate) fn put(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        put_string(out, &self.origin, "track origin")?;
        out.put_slice(&self.session);
        put_string(out, &self.name, "track name")
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<TrackKey, DecodeError> {
        Ok(TrackKey {
            origin: r.string("track origin")?,
            session: r.session("track session")?,
            name: r.string("track name")?,
        })
    }
}

/// What a track carries. Wire: u8, `0` audio, `1` video, `2` data; anything else is malformed (a kind this
/// build does not know cannot be offered to a viewer anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
    /// A data channel (see [`crate::data_track`]).
    Data,
}

impl TrackKind {
    fn to_wire(self) -> u8 {
        match self {
            TrackKind::Audio => 0,
            TrackKind::Video => 1,
            TrackKind::Data => 2,
        }
    }

    fn from_wire(b: u8) -> Option<TrackKind> {
        match b {
            0 => Some(TrackKind::Audio),
            1 => Some(TrackKind::Video),
            2 => Some(TrackKind::Data),
            _ => None,
        }
    }
}

/// One track of an announced stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamTrack {
    /// The track's name, as in its [`TrackKey::name`].
    pub name: String,
    /// What the track carries.
    pub kind: TrackKind,
}

/// Where a stream is published: enough for any node to build the [`TrackKey`] of each of its tracks.
/// Wire: `str node | 16 bytes session | u8 count | count × (str name | u8 kind)`, count ≤
/// [`MAX_STREAM_TRACKS`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamOrigin {
    /// Node id of the gateway the publisher is connected to.
    pub node: String,
    /// The publishing session's id, as in [`TrackKey::session`].
    pub session: [u8; 16],
    /// The stream's tracks.
    pub tracks: Vec<StreamTrack>,
}

impl StreamOrigin {
    /// The global key of one of this stream's tracks.
    pub fn track_key(&self, name: &str) -> TrackKey {
        TrackKey {
            origin: self.node.clone(),
            session: self.session,
            name: name.to_owned(),
        }
    }

    pub(crate) fn put(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        let count = self.tracks.len();
        if count > MAX_STREAM_TRACKS {
            return Err(EncodeError::TooMany {
                what: "stream tracks",
                count,
                max: MAX_STREAM_TRACKS,
            });
        }
        put_string(out, &self.node, "origin node")?;
        out.put_slice(&self.session);
        // Fits: MAX_STREAM_TRACKS < 256.
        out.put_u8(count as u8);
        for track in &self.tracks {
            put_string(out, &track.name, "stream track name")?;
            out.put_u8(track.kind.to_wire());
        }
        Ok(())
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<StreamOrigin, DecodeError> {
        let node = r.string("origin node")?;
        let session = r.session("origin session")?;
        let count = usize::from(r.u8("stream track count")?);
        // Bound checked before allocating, so the count cannot size an allocation beyond the limit.
        if count > MAX_STREAM_TRACKS {
            return Err(r.too_many("stream tracks", count, MAX_STREAM_TRACKS));
        }
        let mut tracks = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.string("stream track name")?;
            let kind = TrackKind::from_wire(r.u8("stream track kind")?)
                .ok_or_else(|| r.malformed("stream track kind"))?;
            tracks.push(StreamTrack { name, kind });
        }
        Ok(StreamOrigin {
            node,
            session,
            tracks,
        })
    }
}

/// Wire number of a codec. `0` is [`Codec::Other`]; the numbers are the protocol's, not the enum's order.
pub(crate) fn codec_to_wire(codec: Codec) -> u8 {
    match codec {
        Codec::Other => 0,
        Codec::Opus => 1,
        Codec::H264 => 2,
        Codec::H265 => 3,
        Codec::Vp8 => 4,
        Codec::Vp9 => 5,
        Codec::Av1 => 6,
    }
}

/// Unknown numbers decode as [`Codec::Other`] rather than failing: a newer peer may forward a codec this build
/// has no keyframe detection for, and forwarding it opaquely is still better than refusing the subscription.
pub(crate) fn codec_from_wire(b: u8) -> Codec {
    match b {
        1 => Codec::Opus,
        2 => Codec::H264,
        3 => Codec::H265,
        4 => Codec::Vp8,
        5 => Codec::Vp9,
        6 => Codec::Av1,
        _ => Codec::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_wire_numbers_round_trip_and_unknown_is_other() {
        for codec in [
            Codec::Other,
            Codec::Opus,
            Codec::H264,
            Codec::H265,
            Codec::Vp8,
            Codec::Vp9,
            Codec::Av1,
        ] {
            assert_eq!(codec_from_wire(codec_to_wire(codec)), codec);
        }
        assert_eq!(codec_from_wire(200), Codec::Other);
    }

    #[test]
    fn track_kind_wire_numbers_are_fixed() {
        assert_eq!(TrackKind::Audio.to_wire(), 0);
        assert_eq!(TrackKind::Video.to_wire(), 1);
        assert_eq!(TrackKind::Data.to_wire(), 2);
        assert_eq!(TrackKind::from_wire(3), None);
    }

    #[test]
    fn stream_origin_over_track_limit_is_refused_both_ways() {
        let origin = StreamOrigin {
            node: "n".into(),
            session: [0; 16],
            tracks: vec![
                StreamTrack {
                    name: "t".into(),
                    kind: TrackKind::Audio
                };
                MAX_STREAM_TRACKS + 1
            ],
        };
        let mut out = Vec::new();
        assert!(matches!(
            origin.put(&mut out),
            Err(EncodeError::TooMany { count: 65, .. })
        ));
        // Hand-made body claiming 65 tracks: refused from the count alone.
        let mut body = vec![1, b'n'];
        body.extend_from_slice(&[0; 16]);
        body.push(65);
        assert!(matches!(
            StreamOrigin::read(&mut Reader::new(&body, 0x20)),
            Err(DecodeError::TooMany { count: 65, .. })
        ));
    }

    #[test]
    fn unknown_track_kind_is_malformed() {
        let mut body = vec![1, b'n'];
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&[1, 1, b'v', 9]);
        assert!(matches!(
            StreamOrigin::read(&mut Reader::new(&body, 0x20)),
            Err(DecodeError::Malformed {
                what: "stream track kind",
                ..
            })
        ));
    }

    #[test]
    fn track_key_of_stream_origin() {
        let origin = StreamOrigin {
            node: "gw-1".into(),
            session: [7; 16],
            tracks: vec![],
        };
        assert_eq!(
            origin.track_key("video"),
            TrackKey {
                origin: "gw-1".into(),
                session: [7; 16],
                name: "video".into()
            }
        );
    }
}
