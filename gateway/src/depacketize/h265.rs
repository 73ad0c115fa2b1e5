//! H265 payloads (RFC 7798) without DONL (WebRTC never negotiates `sprop-max-don-diff`): single
//! NAL units, aggregation packets (type 48) and fragmentation units (type 49); PACI (50) is
//! ignored. VPS/SPS/PPS (32/33/34) go to `hvcC`, delimiters and filler data are dropped, the rest
//! is the sample. Random access points are found with the relay's keyframe classifier.

use relay_proto::Codec;

use super::nal::{Fragmented, Role, access_unit, aggregated, complete};
use super::{Damage, PayloadFormat};

const AP: u8 = 48;
const FU: u8 = 49;
const PACI: u8 = 50;
const VPS: u8 = 32;
const SPS: u8 = 33;
const PPS: u8 = 34;
const AUD: u8 = 35;
const FILLER: u8 = 38;

#[derive(Default)]
pub(super) struct H265 {
    fu: Fragmented,
    /// VPS, SPS, PPS.
    params: [Option<Vec<u8>>; 3],
}

/// The type of a NAL unit (or payload header), if its two-byte header is whole and legal.
fn nal_type(nal: &[u8]) -> Option<u8> {
    match nal {
        [b0, _, ..] if b0 & 0x80 == 0 => Some((b0 >> 1) & 0x3f),
        _ => None,
    }
}

impl PayloadFormat for H265 {
    fn push(&mut self, pl: &[u8], units: &mut Vec<Vec<u8>>) -> Result<(), Damage> {
        let t = nal_type(pl).ok_or(Damage::Malformed)?;
        if self.fu.pending() && t != FU {
            return Err(Damage::Incomplete); // a fragmented unit never ended
        }
        match t {
            0..=47 => units.push(pl.to_vec()),
            AP => aggregated(&pl[2..], |nal| nal_type(nal).is_some(), units)?,
            FU => {
                let (&fu, data) = pl[2..].split_first().ok_or(Damage::Malformed)?;
                let bits = (fu & 0x80 != 0, fu & 0x40 != 0);
                let fu_type = fu & 0x3f;
                if bits == (true, true) || matches!(fu_type, AP | FU | PACI) {
                    return Err(Damage::Malformed);
                }
                // The NAL header is the payload header with the type from the FU header.
                let header = || vec![(pl[0] & 0x81) | (fu_type << 1), pl[1]];
                self.fu.push(bits, header, data, units)?;
            }
            // PACI carries layering hints only; 51..=63 are reserved and to be ignored.
            _ => {}
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), Damage> {
        self.fu.end_frame()
    }

    fn finish(&mut self, units: Vec<Vec<u8>>) -> Result<Option<(Vec<u8>, bool)>, Damage> {
        Ok(access_unit(units, &mut self.params, |nal| {
            match nal_type(nal) {
                Some(VPS) => Role::ParameterSet(0),
                Some(SPS) => Role::ParameterSet(1),
                Some(PPS) => Role::ParameterSet(2),
                Some(AUD | FILLER) => Role::Skip,
                // Parameter sets are out of the way, so "keyframe start" means an IRAP slice.
                _ => Role::Sample {
                    keyframe: relay_proto::is_keyframe_start(Codec::H265, nal),
                },
            }
        }))
    }

    fn parameter_sets(&self) -> Option<Vec<Vec<u8>>> {
        complete(&self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pkt;
    use super::super::{Assembler, VideoCodec};

    const VPS: [u8; 3] = [0x40, 0x01, 0x0c];
    const SPS: [u8; 3] = [0x42, 0x01, 0x01];
    const PPS: [u8; 3] = [0x44, 0x01, 0xc1];

    #[test]
    fn ap_then_fu_start_middle_end_make_one_keyframe() {
        let mut a = Assembler::new(VideoCodec::H265);
        #[rustfmt::skip]
        let ap = [
            0x60, 0x01, // AP
            0x00, 0x03, 0x40, 0x01, 0x0c,
            0x00, 0x03, 0x42, 0x01, 0x01,
            0x00, 0x03, 0x44, 0x01, 0xc1,
        ];
        assert!(a.push(&pkt(1, 100, false, &ap)).is_empty());
        // FU (type 49 = 0x62 0x01) of an IDR_W_RADL (19) slice: start, middle, end.
        assert!(
            a.push(&pkt(2, 100, false, &[0x62, 0x01, 0x80 | 19, 10, 11]))
                .is_empty()
        );
        assert!(
            a.push(&pkt(3, 100, false, &[0x62, 0x01, 19, 12]))
                .is_empty()
        );
        let aus = a.push(&pkt(4, 100, true, &[0x62, 0x01, 0x40 | 19, 13]));
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        assert_eq!(aus[0].data, vec![0, 0, 0, 6, 19 << 1, 0x01, 10, 11, 12, 13]);
        assert_eq!(
            a.parameter_sets(),
            Some(vec![VPS.to_vec(), SPS.to_vec(), PPS.to_vec()])
        );
        // A TRAIL_R (1) single NAL unit plus a PACI that is ignored: not a keyframe.
        a.push(&pkt(5, 3100, false, &[0x64, 0x01, 0, 0, 0]));
        let aus = a.push(&pkt(6, 3100, true, &[0x02, 0x01, 0xd0]));
        assert_eq!(aus.len(), 1);
        assert!(!aus[0].keyframe);
        assert_eq!(aus[0].data, vec![0, 0, 0, 3, 0x02, 0x01, 0xd0]);
        assert!(!a.lost);
        assert_eq!(a.malformed, 0);
    }

    #[test]
    fn a_lost_fragment_drops_the_frame() {
        let mut a = Assembler::new(VideoCodec::H265);
        a.push(&pkt(1, 100, false, &[0x62, 0x01, 0x80 | 19, 10]));
        // Seq 2 (the middle) is lost; the end arrives.
        assert!(
            a.push(&pkt(3, 100, true, &[0x62, 0x01, 0x40 | 19, 13]))
                .is_empty()
        );
        assert!(a.lost);
        // A middle without a start, or a start without an end, is dropped as well.
        let mut b = Assembler::new(VideoCodec::H265);
        assert!(b.push(&pkt(1, 0, true, &[0x62, 0x01, 19, 1])).is_empty());
        assert!(b.lost);
        let mut c = Assembler::new(VideoCodec::H265);
        assert!(
            c.push(&pkt(1, 0, true, &[0x62, 0x01, 0x80 | 19, 1]))
                .is_empty()
        );
        assert!(c.lost);
        // The next intact frame comes through.
        assert_eq!(c.push(&pkt(2, 1, true, &[0x26, 0x01, 0xaf])).len(), 1);
        assert_eq!(b.malformed + c.malformed, 0);
    }

    #[test]
    fn malformed_packets_are_counted_not_written() {
        let mut a = Assembler::new(VideoCodec::H265);
        for (seq, payload) in [
            &[][..],
            &[0x26][..],                         // half a header
            &[0xa6, 0x01, 0xaf][..],             // forbidden bit
            &[0x60, 0x01, 0x00, 0x09, 0x40][..], // AP unit overruns the packet
            &[0x62, 0x01][..],                   // FU without its header
            &[0x62, 0x01, 0xc0 | 19, 1][..],     // FU start and end at once
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                a.push(&pkt(seq as u64, seq as u64, true, payload))
                    .is_empty()
            );
        }
        assert_eq!(a.malformed, 6);
        assert!(a.lost);
    }
}
