//! Data channel messages as a track of the per-track trees, so that a channel published on one
//! gateway reaches subscribers on any other through the same tree, caches and repair as media.
//!
//! A message is cut into fragments that fit a link datagram. Each fragment is a [`MediaPacket`]:
//! its own sequence number (so the tree's gap tracker and NACK shield repair it like RTP), the
//! message number and fragment index packed into `rtp_time` (so a receiver knows where every
//! fragment belongs even when the one before it is lost), `marker` on the last fragment, and the
//! WebRTC message type in `pt` (1 binary, 0 string). `keyframe_start` is never set: a channel
//! has no keyframes, so no hop replays old messages to a subscriber that joins late.
//!
//! How the channel is delivered travels in the track description ([`SubscribeOk`]): codec
//! `Other` with an fmtp of `webrtc-datachannel;ordered=1;reliable=1`. Reliable channels are
//! repaired hop by hop; unreliable ones (`maxRetransmits`/`maxPacketLifeTime` set by the
//! publisher) are plain datagrams that no hop asks for again.

use std::sync::Arc;
use std::time::Instant;

use crate::Codec;
use crate::link::{SubscribeOk, TrackKey};
use crate::packet::MediaPacket;

/// What a data track's fmtp starts with.
const FMTP_TAG: &str = "webrtc-datachannel";
/// A message's fragments at most: `rtp_time` carries the index in its low 16 bits.
pub const MAX_FRAGMENTS: usize = 1 << 16;
/// Prefix of a data track's name in its [`TrackKey`], keeping data channels and media tracks of
/// one session apart (the API refuses control characters in track names).
const KEY_PREFIX: char = '\u{1}';

/// How a channel's messages are delivered, end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataTrackParams {
    /// Messages reach subscribers in the order they were sent.
    pub ordered: bool,
    /// Lost fragments are repaired (hop by hop); otherwise a lost fragment loses its message.
    pub reliable: bool,
}

impl Default for DataTrackParams {
    fn default() -> Self {
        DataTrackParams {
            ordered: true,
            reliable: true,
        }
    }
}

impl DataTrackParams {
    /// The fmtp a data track is described with, `webrtc-datachannel;ordered=…;reliable=…`; read back by
    /// [`DataTrackParams::from_fmtp`].
    pub fn fmtp(&self) -> String {
        format!(
            "{FMTP_TAG};ordered={};reliable={}",
            u8::from(self.ordered),
            u8::from(self.reliable)
        )
    }

    /// The parameters of a data track's fmtp; None for anything else (a media track).
    pub fn from_fmtp(fmtp: &str) -> Option<DataTrackParams> {
        let mut parts = fmtp.split(';').map(str::trim);
        if parts.next()? != FMTP_TAG {
            return None;
        }
        let mut params = DataTrackParams::default();
        for part in parts {
            match part.split_once('=') {
                Some(("ordered", v)) => params.ordered = v != "0",
                Some(("reliable", v)) => params.reliable = v != "0",
                _ => {}
            }
        }
        Some(params)
    }

    /// The description a data track is published with.
    pub fn describe(&self, track: TrackKey) -> SubscribeOk {
        SubscribeOk {
            track,
            channel: 0,
            first_seq: u64::MAX,
            codec: Codec::Other,
            clock_rate: 1000,
            pt: 0,
            audio_channels: 0,
            fmtp: self.fmtp(),
        }
    }
}

/// The name in a [`TrackKey`] of the data channel `channel`.
pub fn data_key_name(channel: &str) -> String {
    let mut name = String::with_capacity(channel.len() + 1);
    name.push(KEY_PREFIX);
    name.push_str(channel);
    name
}

/// The channel name of a data track's key name; None for a media track.
pub fn channel_of_key_name(name: &str) -> Option<&str> {
    name.strip_prefix(KEY_PREFIX)
}

/// Where a fragment belongs: its message's number, its index, and whether it is the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentPlace {
    /// The message's number, counted by the origin's [`Fragmenter`] (`rtp_time` above its low 16 bits).
    pub message: u64,
    /// The fragment's index within its message (the low 16 bits of `rtp_time`).
    pub index: u16,
    /// The message's last fragment (the packet's `marker`).
    pub last: bool,
}

impl FragmentPlace {
    /// Where a fragment of a data track belongs, read from its packet.
    pub fn of(packet: &MediaPacket) -> FragmentPlace {
        FragmentPlace {
            message: packet.rtp_time >> 16,
            index: (packet.rtp_time & 0xffff) as u16,
            last: packet.marker,
        }
    }
}

/// Numbers the publisher's messages and cuts them into fragments (the origin's side).
#[derive(Debug, Default)]
pub struct Fragmenter {
    next_seq: u64,
    next_message: u64,
}

impl Fragmenter {
    /// A fragmenter whose first message and first sequence number are 0.
    pub fn new() -> Fragmenter {
        Fragmenter::default()
    }

    /// The fragments of one message, each carrying at most `max_payload` bytes (an empty message
    /// is one empty fragment). None if it would need more than [`MAX_FRAGMENTS`].
    pub fn fragment(
        &mut self,
        binary: bool,
        data: &[u8],
        max_payload: usize,
        now: Instant,
    ) -> Option<Vec<MediaPacket>> {
        let max_payload = max_payload.max(1);
        let count = data.len().div_ceil(max_payload).max(1);
        if count > MAX_FRAGMENTS {
            return None;
        }
        let message = self.next_message;
        self.next_message += 1;
        let mut out = Vec::with_capacity(count);
        for index in 0..count {
            let start = index * max_payload;
            let end = (start + max_payload).min(data.len());
            out.push(MediaPacket {
                seq: self.next_seq,
                rtp_time: (message << 16) | index as u64,
                marker: index + 1 == count,
                pt: u8::from(binary),
                payload: Arc::from(&data[start.min(end)..end]),
                keyframe_start: false,
                received: now,
            });
            self.next_seq += 1;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::t0;

    #[test]
    fn fmtp_round_trips_and_media_is_not_data() {
        for ordered in [false, true] {
            for reliable in [false, true] {
                let p = DataTrackParams { ordered, reliable };
                assert_eq!(DataTrackParams::from_fmtp(&p.fmtp()), Some(p));
            }
        }
        assert_eq!(DataTrackParams::from_fmtp("profile-level-id=42e01f"), None);
        assert_eq!(DataTrackParams::from_fmtp(""), None);
    }

    #[test]
    fn key_names_keep_channels_apart_from_tracks() {
        let name = data_key_name("chat");
        assert_ne!(name, "chat");
        assert_eq!(channel_of_key_name(&name), Some("chat"));
        assert_eq!(channel_of_key_name("chat"), None);
    }

    #[test]
    fn fragments_tile_the_message_and_say_where_they_belong() {
        let mut f = Fragmenter::new();
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let first = f.fragment(true, b"hi", 1000, t0()).expect("fits");
        assert_eq!(first.len(), 1);
        assert!(first[0].marker);
        let parts = f.fragment(true, &data, 1000, t0()).expect("fits");
        assert_eq!(parts.len(), 3);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.payload.to_vec()).collect();
        assert_eq!(joined, data);
        let places: Vec<FragmentPlace> = parts.iter().map(FragmentPlace::of).collect();
        assert!(places.iter().all(|p| p.message == 1));
        assert_eq!(
            places.iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            places.iter().map(|p| p.last).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(
            parts.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(parts.iter().all(|p| p.pt == 1 && !p.keyframe_start));
        let empty = f.fragment(false, b"", 1000, t0()).expect("fits");
        assert_eq!(empty.len(), 1);
        assert!(empty[0].payload.is_empty() && empty[0].marker && empty[0].pt == 0);
    }
}
