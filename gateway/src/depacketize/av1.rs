//! AV1 payloads (the AOM "RTP Payload Format for AV1", §4): an aggregation header (Z: the first
//! element continues an OBU from the previous packet, Y: the last one continues in the next, W:
//! element count, 0 = every element has a length, N: a new coded video sequence starts) and OBU
//! elements. A temporal unit becomes an MP4 sample in the low-overhead bitstream format the
//! ISOBMFF binding asks for: every OBU with `obu_has_size_field` set, temporal delimiters, tile
//! lists and padding dropped. The sequence header OBU is kept for `av1C` (and in the sample).

use super::nal::Fragmented;
use super::{Damage, PayloadFormat};

const Z: u8 = 0x80;
const Y: u8 = 0x40;
const N: u8 = 0x08;
const OBU_HAS_SIZE: u8 = 0x02;
const OBU_HAS_EXTENSION: u8 = 0x04;
const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_FRAME: u8 = 6;
const OBU_TILE_LIST: u8 = 8;
const OBU_PADDING: u8 = 15;

#[derive(Default)]
pub(super) struct Av1 {
    /// The OBU the previous packet's last element began (Y set).
    fragment: Fragmented,
    /// The latest sequence header OBU, with its size field.
    sequence_header: Option<Vec<u8>>,
}

/// An unsigned LEB128 value and its length in bytes (at most 8, the spec's limit).
pub(crate) fn leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

fn write_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One OBU as sent: header, optional extension, payload (its size field, if any, taken off).
struct Obu<'a> {
    header: u8,
    extension: Option<u8>,
    payload: &'a [u8],
}

impl<'a> Obu<'a> {
    fn parse(obu: &'a [u8]) -> Result<Obu<'a>, Damage> {
        let (&header, rest) = obu.split_first().ok_or(Damage::Malformed)?;
        if header & 0x80 != 0 {
            return Err(Damage::Malformed); // forbidden bit
        }
        let (extension, rest) = if header & OBU_HAS_EXTENSION != 0 {
            let (&e, r) = rest.split_first().ok_or(Damage::Malformed)?;
            (Some(e), r)
        } else {
            (None, rest)
        };
        let payload = if header & OBU_HAS_SIZE != 0 {
            let (size, n) = leb128(rest).ok_or(Damage::Malformed)?;
            // The element's length and the OBU's own size must agree.
            if rest.len() - n != size {
                return Err(Damage::Malformed);
            }
            &rest[n..]
        } else {
            rest
        };
        Ok(Obu {
            header,
            extension,
            payload,
        })
    }

    fn kind(&self) -> u8 {
        (self.header >> 3) & 0x0f
    }

    /// The low-overhead form: with a (minimal) size field.
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.header | OBU_HAS_SIZE);
        out.extend(self.extension);
        write_leb128(out, self.payload.len());
        out.extend_from_slice(self.payload);
    }
}

/// Whether a frame (header) OBU payload starts a shown key frame. With a reduced still picture
/// header every frame is one; otherwise `show_existing_frame` f(1), `frame_type` f(2) (0 =
/// KEY_FRAME), `show_frame` f(1) lead the uncompressed header.
fn is_shown_key_frame(reduced_still_picture_header: bool, frame_header: &[u8]) -> bool {
    reduced_still_picture_header || frame_header.first().is_some_and(|b| b >> 4 == 0b0001)
}

impl PayloadFormat for Av1 {
    fn push(&mut self, pl: &[u8], units: &mut Vec<Vec<u8>>) -> Result<(), Damage> {
        let (&agg, mut rest) = pl.split_first().ok_or(Damage::Malformed)?;
        let (z, y, w, n) = (
            agg & Z != 0,
            agg & Y != 0,
            usize::from((agg >> 4) & 3),
            agg & N != 0,
        );
        if (n && z) || rest.is_empty() {
            return Err(Damage::Malformed);
        }
        let mut continued = self.fragment.take();
        if z != continued.is_some() {
            // A continuation without its start, or a start whose continuation never came.
            return Err(Damage::Incomplete);
        }
        let mut count = 0;
        while !rest.is_empty() {
            count += 1;
            let element = if w != 0 && count == w {
                std::mem::take(&mut rest)
            } else {
                let (len, n) = leb128(rest).ok_or(Damage::Malformed)?;
                let element = rest.get(n..n + len).ok_or(Damage::Malformed)?;
                rest = &rest[n + len..];
                element
            };
            if element.is_empty() {
                return Err(Damage::Malformed);
            }
            let obu = match continued.take() {
                Some(mut head) => {
                    head.extend_from_slice(element);
                    head
                }
                None => element.to_vec(),
            };
            if rest.is_empty() && y {
                self.fragment.hold(obu);
            } else {
                units.push(obu);
            }
        }
        if w != 0 && count != w {
            return Err(Damage::Malformed);
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), Damage> {
        self.fragment.end_frame()
    }

    fn finish(&mut self, units: Vec<Vec<u8>>) -> Result<Option<(Vec<u8>, bool)>, Damage> {
        let mut data = Vec::new();
        let mut sequence_header = None;
        let mut key_frame = None;
        for unit in &units {
            let obu = Obu::parse(unit)?;
            match obu.kind() {
                OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING => continue,
                OBU_SEQUENCE_HEADER => {
                    let mut bytes = Vec::new();
                    obu.write(&mut bytes);
                    sequence_header = Some(bytes);
                }
                OBU_FRAME_HEADER | OBU_FRAME if key_frame.is_none() => {
                    // seq_profile f(3), still_picture f(1), reduced_still_picture_header f(1).
                    let reduced = sequence_header
                        .as_deref()
                        .or(self.sequence_header.as_deref())
                        .and_then(|s| Obu::parse(s).ok())
                        .and_then(|s| s.payload.first().map(|b| b & 0x08 != 0))
                        .unwrap_or(false);
                    key_frame = Some(is_shown_key_frame(reduced, obu.payload));
                }
                _ => {}
            }
            obu.write(&mut data);
        }
        if data.is_empty() {
            return Ok(None);
        }
        if sequence_header.is_some() {
            self.sequence_header = sequence_header.clone();
        }
        let mut keyframe = key_frame == Some(true);
        // A sync sample must carry the sequence header; an encoder that sends it only once
        // still gets its later key frames marked, with the kept one put in front.
        if keyframe && sequence_header.is_none() {
            match &self.sequence_header {
                Some(s) => data.splice(0..0, s.iter().copied()).for_each(drop),
                None => keyframe = false,
            }
        }
        Ok(Some((data, keyframe)))
    }

    fn parameter_sets(&self) -> Option<Vec<Vec<u8>>> {
        Some(vec![self.sequence_header.clone()?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pkt;
    use super::super::{Assembler, VideoCodec};

    /// Sequence header OBU without size field: type 1 (0x08), payload 3 bytes.
    const SEQ: [u8; 4] = [0x08, 0x00, 0x00, 0x04];
    /// The same with its size field, as stored.
    const SEQ_STORED: [u8; 5] = [0x0a, 3, 0x00, 0x00, 0x04];

    #[test]
    fn fragments_with_w_z_y_make_one_temporal_unit() {
        let mut a = Assembler::new(VideoCodec::Av1);
        // N=1, W=0: every element has a length. TD (dropped), sequence header, then the first
        // part of a frame OBU (type 6 = 0x30; payload starts 0x10: shown key frame), Y=1.
        #[rustfmt::skip]
        let first = [
            0x48,
            1, 0x10,                       // temporal delimiter
            4, SEQ[0], SEQ[1], SEQ[2], SEQ[3],
            3, 0x30, 0x10, 0xaa,           // frame OBU, first part
        ];
        assert!(a.push(&pkt(1, 100, false, &first)).is_empty());
        // Z=1, Y=1, W=1: the middle of the frame OBU, no length.
        assert!(a.push(&pkt(2, 100, false, &[0xd0, 0xbb, 0xcc])).is_empty());
        // Z=1, W=1: its end.
        let aus = a.push(&pkt(3, 100, true, &[0x90, 0xdd]));
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        let mut want = SEQ_STORED.to_vec();
        want.extend_from_slice(&[0x32, 5, 0x10, 0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(aus[0].data, want);
        assert_eq!(a.parameter_sets(), Some(vec![SEQ_STORED.to_vec()]));
        // W=2: a length-prefixed OBU then the last without length; an inter frame (0x30 0x30).
        let aus = a.push(&pkt(
            4,
            3100,
            true,
            &[0x20, 2, 0x30, 0x30, 0x30, 0x30, 0x01],
        ));
        assert_eq!(aus.len(), 1);
        assert!(!aus[0].keyframe);
        assert_eq!(aus[0].data, vec![0x32, 1, 0x30, 0x32, 2, 0x30, 0x01]);
        assert!(!a.lost);
        assert_eq!(a.malformed, 0);
    }

    #[test]
    fn a_key_frame_without_sequence_header_gets_the_kept_one() {
        let mut a = Assembler::new(VideoCodec::Av1);
        let aus = a.push(&pkt(1, 0, true, &[0x18, SEQ[0], SEQ[1], SEQ[2], SEQ[3]]));
        assert!(!aus[0].keyframe, "a sequence header alone is no key frame");
        let aus = a.push(&pkt(2, 1, true, &[0x10, 0x30, 0x10, 0xee]));
        assert!(aus[0].keyframe);
        assert_eq!(&aus[0].data[..5], &SEQ_STORED);
    }

    #[test]
    fn a_lost_fragment_drops_the_temporal_unit() {
        let mut a = Assembler::new(VideoCodec::Av1);
        a.push(&pkt(1, 100, false, &[0x58, 0x30, 0x10, 0xaa]));
        // Seq 2 (Z=1, Y=1) lost; the end arrives.
        assert!(a.push(&pkt(3, 100, true, &[0x90, 0xdd])).is_empty());
        assert!(a.lost);
        // A continuation that arrives without a gap but without its start either (Z on the
        // first packet of a frame), and a Y whose continuation never comes.
        let mut b = Assembler::new(VideoCodec::Av1);
        assert!(b.push(&pkt(1, 0, true, &[0x90, 0xdd])).is_empty());
        assert!(b.lost);
        let mut c = Assembler::new(VideoCodec::Av1);
        assert!(c.push(&pkt(1, 0, true, &[0x50, 0x30, 0x10])).is_empty());
        assert!(c.lost);
        assert_eq!(a.malformed + b.malformed + c.malformed, 0);
    }

    #[test]
    fn malformed_packets_are_counted_not_written() {
        let mut a = Assembler::new(VideoCodec::Av1);
        for (seq, payload) in [
            &[][..],
            &[0x10][..],                // no element
            &[0x88, 0x30][..],          // N with Z
            &[0x00, 5, 0x30][..],       // length overruns
            &[0x00, 0x80][..],          // unterminated LEB128
            &[0x30, 1, 0x30][..],       // W=3 but one element
            &[0x10, 0xb0, 0x00][..],    // forbidden bit
            &[0x10, 0x32, 5, 0x00][..], // OBU size field disagrees with the element
            &[0x00, 0, 1, 0x30][..],    // empty element
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                a.push(&pkt(seq as u64, seq as u64, true, payload))
                    .is_empty(),
                "{payload:?}"
            );
        }
        assert_eq!(a.malformed, 9);
        assert!(a.lost);
    }
}
