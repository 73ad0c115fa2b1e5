//! Fragmented MP4 (ISO BMFF) boxes, written by hand: an init segment (`ftyp` + `moov` with empty
//! sample tables and `mvex`) and then self-contained fragments (`moof` + `mdat`). A file cut after
//! any complete fragment is playable, which is what makes recordings survive a crash or a kill.
//! Sample entries (`sample_entry`): `avc1` + `avcC` (H264), `hvc1` + `hvcC` (H265, from the SPS:
//! `h265_sps`), `av01` + `av1C` (AV1, from the sequence header: `av1_sequence`), `Opus` + `dOps`.

mod av1_sequence;
mod bits;
mod h264_sps;
mod h265_sps;
mod sample_entry;

pub use av1_sequence::Av1Config;
pub use h264_sps::sps_dimensions;
pub use h265_sps::HevcConfig;

use crate::depacketize::VideoCodec;

/// What the init segment says about one track.
#[derive(Debug, Clone)]
pub enum TrackConfig {
    /// H264 with the parameter sets the stream carried.
    H264 {
        /// The sequence parameter set NAL unit.
        sps: Vec<u8>,
        /// The picture parameter set NAL unit.
        pps: Vec<u8>,
        /// Picture width from the SPS, pixels (0 when it did not parse).
        width: u16,
        /// Picture height from the SPS, pixels (0 when it did not parse).
        height: u16,
    },
    /// H265, described from its VPS/SPS/PPS.
    H265(HevcConfig),
    /// AV1, described from its sequence header.
    Av1(Av1Config),
    /// Opus audio.
    Opus {
        /// Audio channels.
        channels: u16,
    },
}

impl TrackConfig {
    /// A video track's description from the parameter sets its depacketizer kept (H264: SPS,
    /// PPS; H265: VPS, SPS, PPS; AV1: the sequence header OBU). Err says what did not parse: a
    /// track is better not recorded than described wrongly.
    pub fn video(codec: VideoCodec, params: &[Vec<u8>]) -> Result<TrackConfig, &'static str> {
        match (codec, params) {
            (VideoCodec::H264, [sps, pps]) => {
                // Players cope with a zero size; H264 recording has always been lenient here.
                let (width, height) = sps_dimensions(sps).unwrap_or((0, 0));
                Ok(TrackConfig::H264 {
                    sps: sps.clone(),
                    pps: pps.clone(),
                    width,
                    height,
                })
            }
            (VideoCodec::H265, [vps, sps, pps]) => HevcConfig::parse(vps, sps, pps)
                .map(TrackConfig::H265)
                .ok_or("the H265 SPS does not parse (profile/tier/level, chroma, size)"),
            (VideoCodec::Av1, [sequence_header]) => Av1Config::parse(sequence_header)
                .map(TrackConfig::Av1)
                .ok_or("the AV1 sequence header does not parse"),
            _ => Err("parameter sets missing"),
        }
    }

    /// Picture size of a video track.
    fn dimensions(&self) -> Option<(u16, u16)> {
        match self {
            TrackConfig::H264 { width, height, .. } => Some((*width, *height)),
            TrackConfig::H265(c) => Some((c.width, c.height)),
            TrackConfig::Av1(c) => Some((c.width, c.height)),
            TrackConfig::Opus { .. } => None,
        }
    }
}

/// A track of the init segment.
#[derive(Debug, Clone)]
pub struct TrackDesc {
    /// 1-based track id.
    pub id: u32,
    /// Ticks per second of its sample times.
    pub timescale: u32,
    /// Codec and its configuration.
    pub kind: TrackConfig,
}

/// One sample of a fragment: its bytes (AVCC length-prefixed NAL units for H264, one packet for
/// Opus), its duration in the track's timescale and whether it is a sync sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's bytes.
    pub data: Vec<u8>,
    /// Duration, in the track's timescale.
    pub duration: u32,
    /// A sync sample (for video: a keyframe).
    pub sync: bool,
}

/// One track's part of a fragment.
pub struct TrackRun<'a> {
    /// The track's 1-based id.
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_time: u64,
    /// The samples, in decode order.
    pub samples: &'a [Sample],
}

/// Timescale of video tracks: RTP's 90 kHz clock.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Timescale of audio tracks: Opus's 48 kHz RTP clock.
pub const AUDIO_TIMESCALE: u32 = 48_000;
const MOVIE_TIMESCALE: u32 = 1000;
const SYNC_FLAGS: u32 = 0x0200_0000; // depends on no other sample
const NON_SYNC_FLAGS: u32 = 0x0101_0000; // depends on others, is a non-sync sample
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn u16b(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32b(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u64b(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A box: size, type, then whatever `body` writes.
fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with version and flags.
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    bx(out, kind, |o| {
        u32b(o, (u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(o);
    });
}

/// `ftyp` + `moov`: everything a player needs before the first fragment.
pub fn init_segment(tracks: &[TrackDesc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    bx(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        u32b(o, 0x200);
        for brand in [b"isom", b"iso6", b"iso2", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
        // The AV1 binding requires its brand among the compatible ones.
        if tracks.iter().any(|t| matches!(t.kind, TrackConfig::Av1(_))) {
            o.extend_from_slice(b"av01");
        }
    });
    bx(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            u32b(o, 0); // creation
            u32b(o, 0); // modification
            u32b(o, MOVIE_TIMESCALE);
            u32b(o, 0); // duration: unknown, fragments follow
            u32b(o, 0x0001_0000); // rate
            u16b(o, 0x0100); // volume
            o.extend_from_slice(&[0; 10]);
            MATRIX.iter().for_each(|m| u32b(o, *m));
            o.extend_from_slice(&[0; 24]);
            u32b(o, tracks.iter().map(|t| t.id).max().unwrap_or(0) + 1);
        });
        for t in tracks {
            trak(o, t);
        }
        bx(o, b"mvex", |o| {
            for t in tracks {
                full(o, b"trex", 0, 0, |o| {
                    u32b(o, t.id);
                    u32b(o, 1); // sample description index
                    u32b(o, 0);
                    u32b(o, 0);
                    u32b(o, 0);
                });
            }
        });
    });
    out
}

fn trak(o: &mut Vec<u8>, t: &TrackDesc) {
    let dimensions = t.kind.dimensions();
    let video = dimensions.is_some();
    let (width, height) = dimensions.unwrap_or((0, 0));
    bx(o, b"trak", |o| {
        full(o, b"tkhd", 0, 3, |o| {
            u32b(o, 0);
            u32b(o, 0);
            u32b(o, t.id);
            u32b(o, 0);
            u32b(o, 0); // duration
            o.extend_from_slice(&[0; 8]);
            u16b(o, 0); // layer
            u16b(o, 0); // alternate group
            u16b(o, if video { 0 } else { 0x0100 });
            u16b(o, 0);
            MATRIX.iter().for_each(|m| u32b(o, *m));
            u32b(o, u32::from(width) << 16);
            u32b(o, u32::from(height) << 16);
        });
        bx(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                u32b(o, 0);
                u32b(o, 0);
                u32b(o, t.timescale);
                u32b(o, 0);
                u16b(o, 0x55c4); // "und"
                u16b(o, 0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                u32b(o, 0);
                o.extend_from_slice(if video { b"vide" } else { b"soun" });
                o.extend_from_slice(&[0; 12]);
                o.extend_from_slice(if video {
                    b"VideoHandler\0".as_slice()
                } else {
                    b"SoundHandler\0".as_slice()
                });
            });
            bx(o, b"minf", |o| {
                if video {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                } else {
                    full(o, b"smhd", 0, 0, |o| u32b(o, 0));
                }
                bx(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        u32b(o, 1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                bx(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        u32b(o, 1);
                        sample_entry::sample_entry(o, &t.kind);
                    });
                    full(o, b"stts", 0, 0, |o| u32b(o, 0));
                    full(o, b"stsc", 0, 0, |o| u32b(o, 0));
                    full(o, b"stsz", 0, 0, |o| {
                        u32b(o, 0);
                        u32b(o, 0);
                    });
                    full(o, b"stco", 0, 0, |o| u32b(o, 0));
                });
            });
        });
    });
}

/// One `moof` + `mdat` holding `runs` (tracks without samples are left out).
pub fn fragment(sequence: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    bx(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| u32b(o, sequence));
        for r in &runs {
            bx(o, b"traf", |o| {
                full(o, b"tfhd", 0, 0x02_0000, |o| u32b(o, r.track_id));
                full(o, b"tfdt", 1, 0, |o| u64b(o, r.base_time));
                full(o, b"trun", 0, 0x000701, |o| {
                    u32b(o, r.samples.len() as u32);
                    offsets.push(o.len());
                    u32b(o, 0); // data offset, patched below
                    for s in r.samples {
                        u32b(o, s.duration);
                        u32b(o, s.data.len() as u32);
                        u32b(o, if s.sync { SYNC_FLAGS } else { NON_SYNC_FLAGS });
                    }
                });
            });
        }
    });
    let moof_len = out.len();
    let mut data_at = moof_len + 8;
    for (r, at) in runs.iter().zip(offsets) {
        out[at..at + 4].copy_from_slice(&(data_at as u32).to_be_bytes());
        data_at += r.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    bx(&mut out, b"mdat", |o| {
        for r in &runs {
            for s in r.samples {
                o.extend_from_slice(&s.data);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap();
            out.push((kind, &data[at + 8..at + size]));
            at += size;
        }
        out
    }

    #[test]
    fn fragment_offsets_point_into_mdat() {
        let a = [Sample {
            data: vec![1, 2, 3],
            duration: 3000,
            sync: true,
        }];
        let b = [
            Sample {
                data: vec![9; 5],
                duration: 960,
                sync: true,
            },
            Sample {
                data: vec![8; 2],
                duration: 960,
                sync: true,
            },
        ];
        let f = fragment(
            7,
            &[
                TrackRun {
                    track_id: 1,
                    base_time: 0,
                    samples: &a,
                },
                TrackRun {
                    track_id: 2,
                    base_time: 480,
                    samples: &b,
                },
            ],
        );
        let top = boxes(&f);
        assert_eq!(&top[0].0, b"moof");
        assert_eq!(&top[1].0, b"mdat");
        let moof_len = top[0].1.len() + 8;
        let trafs: Vec<_> = boxes(top[0].1)
            .into_iter()
            .filter(|(k, _)| k == b"traf")
            .collect();
        assert_eq!(trafs.len(), 2);
        let offset = |traf: &[u8]| {
            let trun = boxes(traf)
                .into_iter()
                .find(|(k, _)| k == b"trun")
                .unwrap()
                .1;
            u32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize
        };
        assert_eq!(offset(trafs[0].1), moof_len + 8);
        assert_eq!(&f[offset(trafs[1].1)..offset(trafs[1].1) + 5], &[9; 5]);
        let init = init_segment(&[TrackDesc {
            id: 1,
            timescale: AUDIO_TIMESCALE,
            kind: TrackConfig::Opus { channels: 2 },
        }]);
        let top = boxes(&init);
        assert_eq!(&top[0].0, b"ftyp");
        assert_eq!(&top[1].0, b"moov");
    }
}
