//! The one sample entry of each track's `stsd`: `avc1` + `avcC`, `hvc1` + `hvcC`, `av01` +
//! `av1C` and `Opus` + `dOps`. Parameter sets live only here (the recorder strips them from H264
//! and H265 samples, which is what `avc1`/`hvc1`, unlike `avc3`/`hev1`, promise).

use super::{AUDIO_TIMESCALE, TrackConfig, bx, u16b, u32b};

/// A VisualSampleEntry (ISO/IEC 14496-12 §12.1.3) of type `kind` with its codec box.
fn visual(
    o: &mut Vec<u8>,
    kind: &[u8; 4],
    width: u16,
    height: u16,
    config: impl FnOnce(&mut Vec<u8>),
) {
    bx(o, kind, |o| {
        o.extend_from_slice(&[0; 6]);
        u16b(o, 1); // data reference index
        o.extend_from_slice(&[0; 16]);
        u16b(o, width);
        u16b(o, height);
        u32b(o, 0x0048_0000); // 72 dpi
        u32b(o, 0x0048_0000);
        u32b(o, 0);
        u16b(o, 1); // frame count
        o.extend_from_slice(&[0; 32]); // compressor name
        u16b(o, 0x0018); // depth
        u16b(o, 0xffff); // no colour table
        config(o);
    });
}

pub(super) fn sample_entry(o: &mut Vec<u8>, kind: &TrackConfig) {
    match kind {
        TrackConfig::H264 {
            sps,
            pps,
            width,
            height,
        } => visual(o, b"avc1", *width, *height, |o| {
            bx(o, b"avcC", |o| {
                o.push(1);
                o.extend_from_slice(sps.get(1..4).unwrap_or(&[66, 0, 31]));
                o.push(0xff); // 4-byte lengths
                o.push(0xe1); // one SPS
                u16b(o, sps.len() as u16);
                o.extend_from_slice(sps);
                o.push(1);
                u16b(o, pps.len() as u16);
                o.extend_from_slice(pps);
            });
        }),
        TrackConfig::H265(c) => visual(o, b"hvc1", c.width, c.height, |o| {
            bx(o, b"hvcC", |o| c.write_hvcc(o));
        }),
        TrackConfig::Av1(c) => visual(o, b"av01", c.width, c.height, |o| {
            bx(o, b"av1C", |o| c.write_av1c(o));
        }),
        TrackConfig::Opus { channels } => bx(o, b"Opus", |o| {
            o.extend_from_slice(&[0; 6]);
            u16b(o, 1);
            o.extend_from_slice(&[0; 8]);
            u16b(o, *channels);
            u16b(o, 16);
            u32b(o, 0);
            u32b(o, AUDIO_TIMESCALE << 16);
            bx(o, b"dOps", |o| {
                o.push(0);
                o.push(*channels as u8);
                u16b(o, 0); // pre-skip: the stream's, unknown; 0 keeps every sample
                u32b(o, AUDIO_TIMESCALE);
                u16b(o, 0); // output gain
                o.push(0); // mapping family
            });
        }),
    }
}
