//! Media datagrams: one RTP packet per QUIC datagram, from parent to child. Datagrams are unreliable and
//! unordered, so each is self-describing (channel, extended seq and timestamp) and loss is repaired by the
//! link's NACKs, never by QUIC retransmission, which would add head-of-line blocking across tracks.
//!
//! Layout, 22 bytes of header ([`DATAGRAM_HEADER_LEN`]):
//! ```text
//! byte 0        vv rrr R K M   version (2 bits, = 1), reserved (must be 0), Retransmission, Keyframe start, Marker
//! bytes 1..5    u32 channel    from the track's SubscribeOk
//! bytes 5..13   u64 seq        extended sequence number at the source
//! bytes 13..21  u64 rtp_time   extended RTP timestamp
//! byte 21       u8 pt          the publisher's payload type
//! bytes 22..    payload
//! ```
//! The payload is copied exactly once on each side: into the datagram buffer when encoding, and out of the
//! received datagram into the packet's `Arc<[u8]>` when decoding (the shared form every cache and viewer on the
//! child uses from then on).

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DatagramError;
use crate::MediaPacket;

/// Media datagram format version, in the top two bits of the first byte.
pub const DATAGRAM_VERSION: u8 = 1;

/// Bytes of header before the payload.
pub const DATAGRAM_HEADER_LEN: usize = 22;

const MARKER: u8 = 0b0000_0001;
const KEYFRAME_START: u8 = 0b0000_0010;
const RETRANSMISSION: u8 = 0b0000_0100;
const RESERVED: u8 = 0b0011_1000;
const VERSION_SHIFT: u32 = 6;

/// A decoded media datagram: the packet plus what the link says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDatagram {
    /// The link-local channel (see `SubscribeOk`) naming the packet's track.
    pub channel: u32,
    /// Sent in answer to a NACK, not live: the receiver should not treat it as reordering or as new loss.
    pub retransmission: bool,
    /// The media packet; its `received` is the datagram's arrival.
    pub packet: MediaPacket,
}

/// The largest payload that fits a datagram of `max_size` bytes (0 if not even the header fits).
pub fn max_datagram_payload(max_size: usize) -> usize {
    max_size.saturating_sub(DATAGRAM_HEADER_LEN)
}

/// Appends one datagram to `out`. `max_size` is the connection's current datagram limit (quinn's
/// `max_datagram_size()`); a packet that does not fit is refused with `out` untouched, and the caller counts
/// it, since neither fragmenting nor truncating media would help a viewer.
pub fn encode_datagram_into(
    packet: &MediaPacket,
    channel: u32,
    retransmission: bool,
    max_size: usize,
    out: &mut BytesMut,
) -> Result<(), DatagramError> {
    let size = DATAGRAM_HEADER_LEN + packet.payload.len();
    if size > max_size {
        return Err(DatagramError::TooLarge {
            size,
            max: max_size,
        });
    }
    let mut flags = DATAGRAM_VERSION << VERSION_SHIFT;
    if packet.marker {
        flags |= MARKER;
    }
    if packet.keyframe_start {
        flags |= KEYFRAME_START;
    }
    if retransmission {
        flags |= RETRANSMISSION;
    }
    out.reserve(size);
    out.put_u8(flags);
    out.put_u32(channel);
    out.put_u64(packet.seq);
    out.put_u64(packet.rtp_time);
    out.put_u8(packet.pt);
    out.put_slice(&packet.payload);
    Ok(())
}

/// One datagram in a buffer of exactly its size, ready for `send_datagram`.
pub fn encode_datagram(
    packet: &MediaPacket,
    channel: u32,
    retransmission: bool,
    max_size: usize,
) -> Result<Bytes, DatagramError> {
    let mut out = BytesMut::new();
    encode_datagram_into(packet, channel, retransmission, max_size, &mut out)?;
    Ok(out.freeze())
}

/// Decodes a received datagram. `received` is the caller's clock reading for the datagram's arrival (this
/// crate never reads the clock); it becomes the packet's `received`.
pub fn decode_datagram(datagram: &[u8], received: Instant) -> Result<MediaDatagram, DatagramError> {
    let Some((header, payload)) = datagram.split_first_chunk::<DATAGRAM_HEADER_LEN>() else {
        return Err(DatagramError::Truncated {
            len: datagram.len(),
        });
    };
    let flags = header[0];
    let version = flags >> VERSION_SHIFT;
    if version != DATAGRAM_VERSION {
        return Err(DatagramError::UnsupportedVersion { version });
    }
    if flags & RESERVED != 0 {
        return Err(DatagramError::ReservedFlags { flags });
    }
    let channel = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let mut seq = [0; 8];
    seq.copy_from_slice(&header[5..13]);
    let mut rtp_time = [0; 8];
    rtp_time.copy_from_slice(&header[13..21]);
    Ok(MediaDatagram {
        channel,
        retransmission: flags & RETRANSMISSION != 0,
        packet: MediaPacket {
            seq: u64::from_be_bytes(seq),
            rtp_time: u64::from_be_bytes(rtp_time),
            marker: flags & MARKER != 0,
            pt: header[21],
            payload: Arc::from(payload),
            keyframe_start: flags & KEYFRAME_START != 0,
            received,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testkit::Rng;
    use crate::test_support::{at_ms, t0};

    fn packet(payload: Vec<u8>, marker: bool, keyframe_start: bool) -> MediaPacket {
        MediaPacket {
            seq: 0x0102_0304_0506_0708,
            rtp_time: 0x1112_1314_1516_1718,
            marker,
            pt: 96,
            payload: payload.into(),
            keyframe_start,
            received: t0(),
        }
    }

    #[test]
    fn golden_datagram() {
        let bytes = encode_datagram(
            &packet(vec![0xaa, 0xbb], true, true),
            0x0a0b_0c0d,
            true,
            1200,
        )
        .unwrap();
        assert_eq!(
            bytes.as_ref(),
            &[
                0b0100_0111, // version 1, retransmission, keyframe start, marker
                0x0a,
                0x0b,
                0x0c,
                0x0d, // channel
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8, // seq
                0x11,
                0x12,
                0x13,
                0x14,
                0x15,
                0x16,
                0x17,
                0x18, // rtp_time
                96,   // pt
                0xaa,
                0xbb, // payload
            ]
        );
        assert_eq!(bytes.len(), DATAGRAM_HEADER_LEN + 2);
    }

    #[test]
    fn round_trip_every_flag_combination() {
        for bits in 0..8u8 {
            let (marker, keyframe, retransmission) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let p = packet(vec![1, 2, 3], marker, keyframe);
            let bytes = encode_datagram(&p, 9, retransmission, 1200).unwrap();
            let d = decode_datagram(&bytes, at_ms(5)).unwrap();
            assert_eq!(d.channel, 9);
            assert_eq!(d.retransmission, retransmission);
            assert_eq!(
                d.packet,
                MediaPacket {
                    received: at_ms(5),
                    ..p
                }
            );
        }
    }

    #[test]
    fn empty_payload_and_extreme_values_round_trip() {
        let p = MediaPacket {
            seq: u64::MAX,
            rtp_time: u64::MAX,
            marker: true,
            pt: u8::MAX,
            payload: Arc::from(&[][..]),
            keyframe_start: false,
            received: t0(),
        };
        let bytes = encode_datagram(&p, u32::MAX, false, DATAGRAM_HEADER_LEN).unwrap();
        assert_eq!(bytes.len(), DATAGRAM_HEADER_LEN);
        let d = decode_datagram(&bytes, t0()).unwrap();
        assert_eq!(d.packet, p);
        assert_eq!(d.channel, u32::MAX);
    }

    #[test]
    fn largest_payload_that_fits_round_trips_and_one_more_byte_is_refused() {
        let max = 1200;
        let fits = packet(vec![7; max_datagram_payload(max)], false, false);
        let bytes = encode_datagram(&fits, 1, false, max).unwrap();
        assert_eq!(bytes.len(), max);
        assert_eq!(decode_datagram(&bytes, t0()).unwrap().packet, fits);

        let too_big = packet(vec![7; max_datagram_payload(max) + 1], false, false);
        let mut out = BytesMut::from(&b"earlier datagram"[..]);
        assert_eq!(
            encode_datagram_into(&too_big, 1, false, max, &mut out),
            Err(DatagramError::TooLarge {
                size: 1201,
                max: 1200
            })
        );
        assert_eq!(&out[..], b"earlier datagram", "refusal writes nothing");
        assert_eq!(max_datagram_payload(10), 0);
        assert!(encode_datagram(&packet(vec![], false, false), 1, false, 21).is_err());
    }

    #[test]
    fn short_datagrams_are_truncated_at_every_length() {
        let bytes = encode_datagram(&packet(vec![], true, true), 1, true, 1200).unwrap();
        for cut in 0..DATAGRAM_HEADER_LEN {
            assert_eq!(
                decode_datagram(&bytes[..cut], t0()),
                Err(DatagramError::Truncated { len: cut })
            );
        }
    }

    #[test]
    fn other_versions_and_reserved_bits_are_refused() {
        let good = encode_datagram(&packet(vec![1], false, false), 1, false, 1200).unwrap();
        for version in [0u8, 2, 3] {
            let mut bad = good.to_vec();
            bad[0] = (bad[0] & 0x3f) | (version << 6);
            assert_eq!(
                decode_datagram(&bad, t0()),
                Err(DatagramError::UnsupportedVersion { version })
            );
        }
        for bit in [3, 4, 5] {
            let mut bad = good.to_vec();
            bad[0] |= 1 << bit;
            assert!(matches!(
                decode_datagram(&bad, t0()),
                Err(DatagramError::ReservedFlags { .. })
            ));
        }
    }

    #[test]
    fn random_datagrams_never_panic_and_valid_ones_round_trip() {
        let mut rng = Rng::new(7);
        let mut decoded = 0;
        for _ in 0..10_000 {
            let len = rng.below(80) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if let Some(first) = bytes.first_mut() {
                // Half the time a plausible first byte, so the body decoding is exercised too.
                if rng.below(2) == 0 {
                    *first = (*first & 0b0000_0111) | 0b0100_0000;
                }
            }
            if let Ok(d) = decode_datagram(&bytes, t0()) {
                decoded += 1;
                let again =
                    encode_datagram(&d.packet, d.channel, d.retransmission, usize::MAX).unwrap();
                assert_eq!(again.as_ref(), bytes.as_slice());
            }
        }
        assert!(decoded > 1000, "only {decoded} decoded");
    }
}
