//! `av1C` (AV1 Codec ISO Media File Format Binding §2.3) from an AV1 sequence header OBU (AV1
//! bitstream spec §5.5): profile, level and tier of operating point 0, bit depth, monochrome,
//! chroma subsampling and the maximum frame size. A header that does not parse gives no config
//! rather than a box with made-up fields.

use super::bits::Bits;
use crate::depacketize::leb128;

const OBU_SEQUENCE_HEADER: u8 = 1;

/// What `av01`/`av1C` and `tkhd` need to know about an AV1 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// The sequence header OBU with its size field: `av1C`'s configOBUs.
    sequence_header: Vec<u8>,
    seq_profile: u8,
    seq_level_idx_0: u8,
    seq_tier_0: bool,
    high_bitdepth: bool,
    twelve_bit: bool,
    mono_chrome: bool,
    subsampling_x: bool,
    subsampling_y: bool,
    chroma_sample_position: u8,
    /// Picture width, pixels (max_frame_width_minus_1 + 1).
    pub width: u16,
    /// Picture height, pixels.
    pub height: u16,
}

/// The payload of a sequence header OBU in the low-overhead format.
fn sequence_header_payload(obu: &[u8]) -> Option<&[u8]> {
    let (&header, rest) = obu.split_first()?;
    if header & 0x80 != 0 || (header >> 3) & 0x0f != OBU_SEQUENCE_HEADER {
        return None;
    }
    let rest = if header & 0x04 != 0 {
        rest.get(1..)?
    } else {
        rest
    };
    if header & 0x02 == 0 {
        return Some(rest);
    }
    let (size, n) = leb128(rest)?;
    rest.get(n..n.checked_add(size)?)
}

impl Av1Config {
    /// From a sequence header OBU as the depacketizer stores it (size field present).
    pub fn parse(obu: &[u8]) -> Option<Av1Config> {
        let mut r = Bits::new(sequence_header_payload(obu)?);
        let seq_profile = r.bits(3)? as u8;
        if seq_profile > 2 {
            return None;
        }
        r.skip(1)?; // still_picture
        let reduced_still_picture_header = r.flag()?;
        let (seq_level_idx_0, seq_tier_0);
        if reduced_still_picture_header {
            seq_level_idx_0 = r.bits(5)? as u8;
            seq_tier_0 = false;
        } else {
            let mut buffer_delay_bits = 0;
            let mut decoder_model_info_present = false;
            if r.flag()? {
                // timing_info: num_units_in_display_tick, time_scale, equal_picture_interval.
                r.skip(64)?;
                if r.flag()? {
                    r.ue()?; // num_ticks_per_picture_minus_1: uvlc, the same code as ue(v)
                }
                decoder_model_info_present = r.flag()?;
                if decoder_model_info_present {
                    buffer_delay_bits = r.bits(5)? as usize + 1;
                    r.skip(32 + 5 + 5)?;
                }
            }
            let initial_display_delay_present = r.flag()?;
            let operating_points = r.bits(5)? + 1;
            let mut first = None;
            for _ in 0..operating_points {
                r.skip(12)?; // operating_point_idc
                let level = r.bits(5)? as u8;
                let tier = level > 7 && r.flag()?;
                first.get_or_insert((level, tier));
                if decoder_model_info_present && r.flag()? {
                    r.skip(2 * buffer_delay_bits + 1)?;
                }
                if initial_display_delay_present && r.flag()? {
                    r.skip(4)?;
                }
            }
            (seq_level_idx_0, seq_tier_0) = first?;
        }
        let width_bits = r.bits(4)? + 1;
        let height_bits = r.bits(4)? + 1;
        let width = r.bits(width_bits)? + 1;
        let height = r.bits(height_bits)? + 1;
        if !reduced_still_picture_header && r.flag()? {
            r.skip(4 + 3)?; // frame id lengths
        }
        r.skip(3)?; // 128x128 superblocks, filter intra, intra edge filter
        if !reduced_still_picture_header {
            r.skip(4)?; // interintra, masked compound, warped motion, dual filter
            let order_hint = r.flag()?;
            if order_hint {
                r.skip(2)?; // jnt_comp, ref_frame_mvs
            }
            let force_screen_content_tools = if r.flag()? { 2 } else { r.bits(1)? };
            if force_screen_content_tools > 0 && !r.flag()? {
                r.skip(1)?; // seq_force_integer_mv
            }
            if order_hint {
                r.skip(3)?; // order_hint_bits_minus_1
            }
        }
        r.skip(3)?; // superres, cdef, loop restoration
        // color_config (§5.5.2)
        let high_bitdepth = r.flag()?;
        let twelve_bit = seq_profile == 2 && high_bitdepth && r.flag()?;
        let mono_chrome = seq_profile != 1 && r.flag()?;
        let (primaries, transfer, matrix) = if r.flag()? {
            (r.bits(8)?, r.bits(8)?, r.bits(8)?)
        } else {
            (2, 2, 2)
        };
        let (mut subsampling_x, mut subsampling_y, mut chroma_sample_position) = (true, true, 0);
        if mono_chrome {
            r.skip(1)?; // color_range
        } else if (primaries, transfer, matrix) == (1, 13, 0) {
            (subsampling_x, subsampling_y) = (false, false); // sRGB: 4:4:4
        } else {
            r.skip(1)?; // color_range
            (subsampling_x, subsampling_y) = match seq_profile {
                0 => (true, true),
                1 => (false, false),
                _ if twelve_bit => {
                    let x = r.flag()?;
                    (x, x && r.flag()?)
                }
                _ => (true, false),
            };
            if subsampling_x && subsampling_y {
                chroma_sample_position = r.bits(2)? as u8;
            }
        }
        Some(Av1Config {
            sequence_header: obu.to_vec(),
            seq_profile,
            seq_level_idx_0,
            seq_tier_0,
            high_bitdepth,
            twelve_bit,
            mono_chrome,
            subsampling_x,
            subsampling_y,
            chroma_sample_position,
            width: u16::try_from(width).ok()?,
            height: u16::try_from(height).ok()?,
        })
    }

    /// The body of `av1C`: version 1, the fields above, no initial presentation delay, then the
    /// sequence header as its one config OBU.
    pub fn write_av1c(&self, o: &mut Vec<u8>) {
        o.push(0x81); // marker, version 1
        o.push((self.seq_profile << 5) | self.seq_level_idx_0);
        o.push(
            (u8::from(self.seq_tier_0) << 7)
                | (u8::from(self.high_bitdepth) << 6)
                | (u8::from(self.twelve_bit) << 5)
                | (u8::from(self.mono_chrome) << 4)
                | (u8::from(self.subsampling_x) << 3)
                | (u8::from(self.subsampling_y) << 2)
                | self.chroma_sample_position,
        );
        o.push(0);
        o.extend_from_slice(&self.sequence_header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `av1C` FFmpeg 5.1 wrote for whip-tests/fixtures/av1.mp4 (libaom, 320x240, 4:2:0).
    const FFMPEG_AV1C: [u8; 17] = [
        0x81, 0x00, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xda, 0xf9,
        0x00, 0x40,
    ];

    #[test]
    fn libaom_sequence_header_gives_ffmpegs_av1c() {
        let c = Av1Config::parse(&FFMPEG_AV1C[4..]).expect("parses");
        assert_eq!((c.width, c.height), (320, 240));
        let mut out = Vec::new();
        c.write_av1c(&mut out);
        assert_eq!(out, FFMPEG_AV1C);
    }

    #[test]
    fn anything_else_gives_no_config() {
        let seq = &FFMPEG_AV1C[4..];
        for len in 0..seq.len() - 1 {
            assert_eq!(Av1Config::parse(&seq[..len]), None, "{len} bytes");
        }
        let mut frame = seq.to_vec();
        frame[0] = 0x32; // a frame OBU
        assert_eq!(Av1Config::parse(&frame), None);
    }
}
