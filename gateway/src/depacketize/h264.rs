//! H264 payloads (RFC 6184): single NAL units, STAP-A and FU-A (packetization mode 1, what
//! WebRTC uses). SPS and PPS go to `avcC`, access unit delimiters are dropped, the rest is the
//! sample.

use super::nal::{Fragmented, Role, access_unit, aggregated, complete};
use super::{Damage, PayloadFormat};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;

#[derive(Default)]
pub(super) struct H264 {
    fu: Fragmented,
    /// SPS, PPS.
    params: [Option<Vec<u8>>; 2],
}

fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

impl PayloadFormat for H264 {
    fn push(&mut self, pl: &[u8], units: &mut Vec<Vec<u8>>) -> Result<(), Damage> {
        let t = nal_type(pl).ok_or(Damage::Malformed)?;
        if self.fu.pending() && t != FU_A {
            return Err(Damage::Incomplete); // a fragmented unit never ended
        }
        match t {
            1..=23 => units.push(pl.to_vec()),
            STAP_A => aggregated(&pl[1..], |nal| !nal.is_empty(), units)?,
            FU_A => {
                let (&fu, data) = pl[1..].split_first().ok_or(Damage::Malformed)?;
                // The NAL header: F and NRI from the FU indicator, the type from the FU header.
                let header = || vec![(pl[0] & 0xe0) | (fu & 0x1f)];
                let bits = (fu & 0x80 != 0, fu & 0x40 != 0);
                self.fu.push(bits, header, data, units)?;
            }
            _ => return Err(Damage::Malformed), // 0, STAP-B, MTAP, FU-B: not in mode 1
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), Damage> {
        self.fu.end_frame()
    }

    fn finish(&mut self, units: Vec<Vec<u8>>) -> Result<Option<(Vec<u8>, bool)>, Damage> {
        Ok(access_unit(units, &mut self.params, |nal| {
            match nal_type(nal) {
                Some(SPS) => Role::ParameterSet(0),
                Some(PPS) => Role::ParameterSet(1),
                Some(AUD) => Role::Skip,
                t => Role::Sample {
                    keyframe: t == Some(IDR),
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

    #[test]
    fn stap_a_then_fu_a_make_one_keyframe() {
        let mut a = Assembler::new(VideoCodec::H264);
        // STAP-A: SPS (3 bytes) + PPS (2 bytes).
        let stap = [24, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3];
        assert!(a.push(&pkt(1, 100, false, &stap)).is_empty());
        // FU-A of an IDR slice in three parts.
        assert!(
            a.push(&pkt(2, 100, false, &[0x7c, 0x85, 10, 11]))
                .is_empty()
        );
        assert!(a.push(&pkt(3, 100, false, &[0x7c, 0x05, 12])).is_empty());
        let aus = a.push(&pkt(4, 100, true, &[0x7c, 0x45, 13]));
        assert_eq!(aus.len(), 1);
        let au = &aus[0];
        assert!(au.keyframe);
        assert_eq!(
            a.parameter_sets(),
            Some(vec![vec![0x67, 1, 2], vec![0x68, 3]])
        );
        assert_eq!(au.data, vec![0, 0, 0, 5, 0x65, 10, 11, 12, 13]);
        assert!(!a.lost);
    }

    #[test]
    fn broken_fragments_and_garbage_drop_the_frame() {
        // A middle fragment without its start is dropped, not glued to something else.
        let mut b = Assembler::new(VideoCodec::H264);
        assert!(b.push(&pkt(1, 0, true, &[0x7c, 0x45, 1])).is_empty());
        assert!(b.lost);
        // A start whose end never came.
        let mut c = Assembler::new(VideoCodec::H264);
        assert!(c.push(&pkt(1, 0, true, &[0x7c, 0x85, 1])).is_empty());
        assert!(c.lost);
        // Garbage does not panic and is counted.
        b.push(&pkt(2, 1, true, &[24, 0xff]));
        b.push(&pkt(3, 2, true, &[28]));
        b.push(&pkt(4, 3, true, &[]));
        assert_eq!(b.malformed, 3);
    }
}
