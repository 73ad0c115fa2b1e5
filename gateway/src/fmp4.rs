//! Fragmented MP4 (ISO BMFF) boxes, written by hand: an init segment (`ftyp` + `moov` with empty
//! sample tables and `mvex`) and then self-contained fragments (`moof` + `mdat`). A file cut after
//! any complete fragment is playable, which is what makes recordings survive a crash or a kill.
//! Sample entries: `avc1` + `avcC` (H264) and `Opus` + `dOps`.

/// What the init segment says about one track.
#[derive(Debug, Clone)]
pub enum TrackKind {
    /// H264 with the parameter sets the stream carried.
    H264 {
        sps: Vec<u8>,
        pps: Vec<u8>,
        width: u16,
        height: u16,
    },
    Opus {
        channels: u16,
    },
}

#[derive(Debug, Clone)]
pub struct TrackDesc {
    /// 1-based track id.
    pub id: u32,
    pub timescale: u32,
    pub kind: TrackKind,
}

/// One sample of a fragment: its bytes (AVCC length-prefixed NAL units for H264, one packet for
/// Opus), its duration in the track's timescale and whether it is a sync sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub data: Vec<u8>,
    pub duration: u32,
    pub sync: bool,
}

/// One track's part of a fragment.
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_time: u64,
    pub samples: &'a [Sample],
}

pub const VIDEO_TIMESCALE: u32 = 90_000;
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
    let (video, width, height) = match &t.kind {
        TrackKind::H264 { width, height, .. } => (true, *width, *height),
        TrackKind::Opus { .. } => (false, 0, 0),
    };
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
                        sample_entry(o, &t.kind);
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

fn sample_entry(o: &mut Vec<u8>, kind: &TrackKind) {
    match kind {
        TrackKind::H264 {
            sps,
            pps,
            width,
            height,
        } => bx(o, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]);
            u16b(o, 1); // data reference index
            o.extend_from_slice(&[0; 16]);
            u16b(o, *width);
            u16b(o, *height);
            u32b(o, 0x0048_0000);
            u32b(o, 0x0048_0000);
            u32b(o, 0);
            u16b(o, 1); // frame count
            o.extend_from_slice(&[0; 32]); // compressor name
            u16b(o, 0x0018);
            u16b(o, 0xffff);
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
        TrackKind::Opus { channels } => bx(o, b"Opus", |o| {
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

/// Exp-Golomb bit reader over an RBSP (emulation prevention removed).
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn bit(&mut self) -> Option<u32> {
        let b = self.data.get(self.pos / 8)?;
        let v = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

/// Picture width and height from an H264 SPS NAL unit (with its header byte).
pub fn sps_dimensions(sps: &[u8]) -> Option<(u16, u16)> {
    let mut rbsp = Vec::with_capacity(sps.len());
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: rbsp, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraints, level
    r.ue()?; // sps id
    let mut chroma = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = r.ue()?;
        if chroma == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(256) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max refs
    r.bit()?;
    let w_mbs = r.ue()? + 1;
    let h_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut l, mut rt, mut t, mut b) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        (l, rt, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (sub_w, sub_h) = match chroma {
        0 => (1, 1),
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_x = sub_w;
    let crop_y = sub_h * (2 - frame_mbs_only);
    let width = (w_mbs * 16).checked_sub((l + rt) * crop_x)?;
    let height = ((2 - frame_mbs_only) * h_units * 16).checked_sub((t + b) * crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
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
    fn sps_of_a_1280x720_stream() {
        // x264 baseline 1280x720 (cropping none: 80x45 macroblocks).
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03,
            0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc6, 0x0c, 0xa8,
        ];
        assert_eq!(sps_dimensions(&sps), Some((1280, 720)));
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
            kind: TrackKind::Opus { channels: 2 },
        }]);
        let top = boxes(&init);
        assert_eq!(&top[0].0, b"ftyp");
        assert_eq!(&top[1].0, b"moov");
    }
}
