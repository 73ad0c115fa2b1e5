//! `hvcC` (ISO/IEC 14496-15 §8.3.3) for an H265 stream, from its parameter sets: profile, tier,
//! level, chroma format, bit depths and picture size come from the SPS (ITU-T H.265 §7.3.2.2).
//! An SPS that does not parse gives no config at all rather than a box with made-up fields.

use super::bits::{Bits, rbsp};
use super::u16b;

/// What `hvc1`/`hvcC` and `tkhd` need to know about an H265 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    vps: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// general_profile_space … general_level_idc: 12 bytes, the same layout in SPS and `hvcC`.
    general_ptl: [u8; 12],
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
    max_sub_layers_minus1: u8,
    temporal_id_nesting: bool,
    /// Picture width after the conformance window, pixels.
    pub width: u16,
    /// Picture height, pixels.
    pub height: u16,
}

impl HevcConfig {
    /// From the VPS, SPS and PPS NAL units (with their two-byte headers).
    pub fn parse(vps: &[u8], sps: &[u8], pps: &[u8]) -> Option<HevcConfig> {
        let rbsp = rbsp(sps.get(2..)?);
        let mut r = Bits::new(&rbsp);
        r.bits(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.bits(3)? as u8;
        if max_sub_layers_minus1 > 6 {
            return None;
        }
        let temporal_id_nesting = r.flag()?;
        let general_ptl: [u8; 12] = rbsp.get(1..13)?.try_into().ok()?;
        r.skip(96)?;
        let subs = usize::from(max_sub_layers_minus1);
        let mut present = [(false, false); 8];
        for p in present.iter_mut().take(subs) {
            *p = (r.flag()?, r.flag()?);
        }
        if subs > 0 {
            r.skip(2 * (8 - subs))?; // reserved_zero_2bits
        }
        for &(profile, level) in present.iter().take(subs) {
            r.skip(if profile { 88 } else { 0 } + if level { 8 } else { 0 })?;
        }
        r.ue()?; // sps_seq_parameter_set_id
        let chroma_format_idc = u8::try_from(r.ue()?).ok().filter(|c| *c <= 3)?;
        let separate_colour_planes = chroma_format_idc == 3 && r.flag()?;
        let coded_width = r.ue()?;
        let coded_height = r.ue()?;
        let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
        if r.flag()? {
            (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        }
        let bit_depth_luma_minus8 = u8::try_from(r.ue()?).ok().filter(|d| *d <= 8)?;
        let bit_depth_chroma_minus8 = u8::try_from(r.ue()?).ok().filter(|d| *d <= 8)?;
        // Conformance window offsets count in chroma samples (Table 6-1).
        let chroma_array_type = if separate_colour_planes {
            0
        } else {
            chroma_format_idc
        };
        let sub_width = if matches!(chroma_array_type, 1 | 2) {
            2
        } else {
            1
        };
        let sub_height = if chroma_array_type == 1 { 2 } else { 1 };
        let width = coded_width.checked_sub(left.checked_add(right)?.checked_mul(sub_width)?)?;
        let height = coded_height.checked_sub(top.checked_add(bottom)?.checked_mul(sub_height)?)?;
        if width == 0 || height == 0 || nal_type(vps) != Some(32) || nal_type(pps) != Some(34) {
            return None;
        }
        Some(HevcConfig {
            vps: vps.to_vec(),
            sps: sps.to_vec(),
            pps: pps.to_vec(),
            general_ptl,
            chroma_format_idc,
            bit_depth_luma_minus8,
            bit_depth_chroma_minus8,
            max_sub_layers_minus1,
            temporal_id_nesting,
            width: u16::try_from(width).ok()?,
            height: u16::try_from(height).ok()?,
        })
    }

    /// The body of `hvcC`: 4-byte NAL lengths, one complete array each of VPS, SPS and PPS
    /// (complete: `hvc1` samples carry no parameter sets, the recorder strips them).
    pub fn write_hvcc(&self, o: &mut Vec<u8>) {
        o.push(1); // configurationVersion
        o.extend_from_slice(&self.general_ptl);
        u16b(o, 0xf000); // min_spatial_segmentation_idc: unknown
        o.push(0xfc); // parallelismType: unknown
        o.push(0xfc | self.chroma_format_idc);
        o.push(0xf8 | self.bit_depth_luma_minus8);
        o.push(0xf8 | self.bit_depth_chroma_minus8);
        u16b(o, 0); // avgFrameRate: unknown
        // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
        o.push(
            ((self.max_sub_layers_minus1 + 1) << 3) | (u8::from(self.temporal_id_nesting) << 2) | 3,
        );
        o.push(3); // numOfArrays
        for (kind, nal) in [(32, &self.vps), (33, &self.sps), (34, &self.pps)] {
            o.push(0x80 | kind); // array_completeness
            u16b(o, 1);
            u16b(o, nal.len() as u16);
            o.extend_from_slice(nal);
        }
    }
}

fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The `hvcC` FFmpeg 5.1 wrote for whip-tests/fixtures/h265.mp4 (x265, Main, 320x240).
    const FFMPEG_HVCC: &str = "0101600000009000000000003cf000fcfdf8f800000f03a00001001840010c01ffff01600000030090000003000003003cba0240a10001002842010101600000030090000003000003003ca00a080f165ba924caf0168080000003008000000f04a2000100074401c172b46240";

    #[test]
    fn x265_parameter_sets_give_ffmpegs_hvcc() {
        let hvcc = hex(FFMPEG_HVCC);
        let (vps, sps, pps) = (&hvcc[28..52], &hvcc[57..97], &hvcc[102..109]);
        let c = HevcConfig::parse(vps, sps, pps).expect("parses");
        assert_eq!((c.width, c.height), (320, 240));
        let mut out = Vec::new();
        c.write_hvcc(&mut out);
        assert_eq!(out, hvcc);
    }

    #[test]
    fn a_cut_sps_gives_no_config() {
        let hvcc = hex(FFMPEG_HVCC);
        let (vps, sps, pps) = (&hvcc[28..52], &hvcc[57..97], &hvcc[102..109]);
        for len in 0..20 {
            assert_eq!(
                HevcConfig::parse(vps, &sps[..len], pps),
                None,
                "{len} bytes"
            );
        }
        assert_eq!(HevcConfig::parse(pps, sps, pps), None, "a PPS is no VPS");
    }
}
