//! Real media for publishers and ground truth for players: an MP4 file's video frames (H264 and
//! H265 as Annex B, AV1 temporal units as stored: what str0m's packetizers take) and Opus
//! packets, with timestamps that keep increasing when the file is looped, plus a catalog that
//! tells a receiver which fixture frame it just got (H264 only: it fingerprints slice data).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mp4::{Mp4Reader, TrackType};

use crate::annexb::{
    annexb_is_keyframe, annexb_nals, avcc_to_annexb, bytes_hash, h265_nal_type, hvcc_to_annexb,
    vcl_hash,
};
use crate::sample_entry::{SampleEntry, hvcc_parameter_sets, sample_entries};

/// RTP clock of H264.
pub const VIDEO_CLOCK: u64 = 90_000;
/// RTP clock of Opus (always 48 kHz on the wire, whatever the input rate).
pub const AUDIO_CLOCK: u64 = 48_000;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Kind {
    /// Video: H264, H265 or AV1 ([`MediaSource::video_codec`]).
    Video,
    /// Opus audio.
    Audio,
}

impl Kind {
    /// The RTP clock rate for this kind.
    pub fn clock(self) -> u64 {
        match self {
            Kind::Video => VIDEO_CLOCK,
            Kind::Audio => AUDIO_CLOCK,
        }
    }
}

/// One frame or packet as stored in the file (one loop, times relative to the file start).
#[derive(Debug, Clone)]
pub struct StoredSample {
    /// Position in its track, from 0.
    pub index: usize,
    /// Decode (= presentation, there are no B-frames) time from the start of the file.
    pub pts: Duration,
    /// How long this sample lasts.
    pub duration: Duration,
    /// An IDR frame (always false for audio).
    pub keyframe: bool,
    /// Annex B for H264/H265 video, with parameter sets in front of keyframes; the temporal unit
    /// for AV1; a raw Opus packet for audio.
    pub data: Arc<[u8]>,
    /// [`vcl_hash`] for H264 video, [`bytes_hash`] for anything else.
    pub hash: u64,
}

/// A sample scheduled on the endless (looped) timeline.
#[derive(Debug, Clone)]
pub struct MediaSample {
    /// Audio or video.
    pub kind: Kind,
    /// Position in its track within the file, from 0.
    pub index: usize,
    /// How many times the file had been played through before this sample.
    pub loop_index: u32,
    /// Presentation time since the start of the first loop.
    pub time: Duration,
    /// `time` in the kind's RTP clock (90 kHz / 48 kHz), never wrapping.
    pub rtp_time: u64,
    /// An IDR frame (always false for audio).
    pub keyframe: bool,
    /// What to hand to `Writer::write`.
    pub data: Arc<[u8]>,
}

/// The codec of a [`MediaSource`]'s video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum VideoCodec {
    /// `avc1`/`avc3`, sent as Annex B with SPS/PPS in front of keyframes.
    H264,
    /// `hvc1`/`hev1`, sent as Annex B with VPS/SPS/PPS in front of keyframes.
    H265,
    /// `av01`, sent as stored: low-overhead OBUs, the sequence header in keyframes.
    Av1,
}

/// How to read an MP4 into a [`MediaSource`]; the default is what a well-behaved WHIP encoder sends.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions {
    /// Accept B-frames (reordered video, as VideoToolbox sends unless told not to). Frames still go
    /// out in decode order, timestamped with their decode time.
    pub allow_b_frames: bool,
    /// Put SPS and PPS in front of every keyframe (x264 `repeat-headers=1`); when false only the
    /// first keyframe of the file carries them, as an encoder that sends them only at start.
    pub parameter_sets_on_every_keyframe: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            allow_b_frames: false,
            parameter_sets_on_every_keyframe: true,
        }
    }
}

/// The decoded contents of an MP4 file: one video track (H264, H265 or AV1) and/or one Opus
/// track.
#[derive(Debug)]
pub struct MediaSource {
    video_codec: VideoCodec,
    video: Vec<StoredSample>,
    audio: Vec<StoredSample>,
    period: Duration,
    catalog: Arc<FrameCatalog>,
}

impl MediaSource {
    /// Reads all frames of `path` into memory (the fixtures are small; so is anything sensible to
    /// loop in a test).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Opens one of the files in `whip-tests/fixtures/` by name, e.g. `"short-gop.mp4"`.
    pub fn fixture(name: &str) -> Result<Self> {
        Self::open(fixture_path(name))
    }

    /// Parses an MP4 held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_with(bytes, SourceOptions::default())
    }

    /// Opens a fixture (see [`MediaSource::fixture`]) with non-default reading options.
    pub fn fixture_with(name: &str, opts: SourceOptions) -> Result<Self> {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes_with(&bytes, opts).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses an MP4 held in memory, with reading options.
    pub fn from_bytes_with(bytes: &[u8], opts: SourceOptions) -> Result<Self> {
        let entries = sample_entries(bytes)?;
        let mut reader = Mp4Reader::read_header(Cursor::new(bytes), bytes.len() as u64)
            .map_err(|e| anyhow::anyhow!("mp4 header: {e}"))?;

        let mut tracks: Vec<(u32, TrackType)> = Vec::new();
        for (id, track) in reader.tracks() {
            if let Ok(t) = track.track_type() {
                tracks.push((*id, t));
            }
        }
        tracks.sort_by_key(|(id, _)| *id);

        let mut video = None;
        let mut video_codec = VideoCodec::H264;
        let mut audio = None;
        for (id, ty) in tracks {
            let codec = entries.get(&id).map(|e| e.fourcc_str()).unwrap_or_default();
            match ty {
                TrackType::Video if video.is_none() => {
                    video = Some(match codec.as_str() {
                        "avc1" | "avc3" => read_video(&mut reader, id, opts)?,
                        "hvc1" | "hev1" => {
                            video_codec = VideoCodec::H265;
                            read_h265(&mut reader, id, opts, entries.get(&id))?
                        }
                        "av01" => {
                            video_codec = VideoCodec::Av1;
                            read_track(&mut reader, id, Kind::Video, opts.allow_b_frames)?
                        }
                        _ => bail!(
                            "video track {id} is {codec:?}; H264 (avc1), H265 (hvc1) and AV1 \
                             (av01) are supported"
                        ),
                    });
                }
                TrackType::Audio if audio.is_none() => {
                    // WebRTC audio is Opus; publishing the picture alone beats refusing a file
                    // with AAC sound.
                    if codec == "Opus" {
                        audio = Some(read_track(&mut reader, id, Kind::Audio, false)?);
                    } else {
                        tracing::warn!(
                            "audio track {id} is {codec:?}, not Opus: sending video only"
                        );
                    }
                }
                _ => {}
            }
        }
        let video: (Vec<StoredSample>, Duration) = video.unwrap_or_default();
        let audio: (Vec<StoredSample>, Duration) = audio.unwrap_or_default();
        if video.0.is_empty() && audio.0.is_empty() {
            bail!("no video or Opus samples found");
        }
        if let Some(first) = video.0.first()
            && !first.keyframe
        {
            bail!("the first video frame is not a keyframe");
        }

        // Loop on the video track's length so that the frame interval stays constant across the
        // loop point; audio packets that overhang it are dropped rather than delaying the video.
        let period = if video.0.is_empty() { audio.1 } else { video.1 };
        let (video, audio) = (video.0, audio.0);
        let audio: Vec<StoredSample> = audio.into_iter().filter(|a| a.pts < period).collect();
        if period.is_zero() {
            bail!("media has zero duration");
        }

        let catalog = Arc::new(FrameCatalog::new(&video, &audio));
        Ok(MediaSource {
            video_codec,
            video,
            audio,
            period,
            catalog,
        })
    }

    /// The video's codec.
    pub fn video_codec(&self) -> VideoCodec {
        self.video_codec
    }

    /// Video frames of one pass through the file.
    pub fn video(&self) -> &[StoredSample] {
        &self.video
    }

    /// Opus packets of one pass through the file.
    pub fn audio(&self) -> &[StoredSample] {
        &self.audio
    }

    /// Samples of one kind.
    pub fn track(&self, kind: Kind) -> &[StoredSample] {
        match kind {
            Kind::Video => &self.video,
            Kind::Audio => &self.audio,
        }
    }

    /// Length of one loop.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Indices of the keyframes in [`MediaSource::video`].
    pub fn keyframe_indices(&self) -> Vec<usize> {
        self.video
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.index)
            .collect()
    }

    /// What a player needs to recognise this file's frames.
    pub fn catalog(&self) -> Arc<FrameCatalog> {
        self.catalog.clone()
    }

    /// A cursor over one track, looping `loops` times (forever if `None`).
    pub fn cursor(&self, kind: Kind, loops: Option<u32>) -> TrackCursor<'_> {
        TrackCursor {
            samples: self.track(kind),
            kind,
            period: self.period,
            loops,
            loop_index: 0,
            index: 0,
            shift: Duration::ZERO,
        }
    }

    /// Audio and video interleaved in time order, looping `loops` times (forever if `None`).
    pub fn samples(&self, loops: Option<u32>) -> impl Iterator<Item = MediaSample> + '_ {
        let mut video = self.cursor(Kind::Video, loops);
        let mut audio = self.cursor(Kind::Audio, loops);
        std::iter::from_fn(move || match (video.peek_time(), audio.peek_time()) {
            (Some(v), Some(a)) if a < v => audio.next(),
            (Some(_), _) => video.next(),
            (None, _) => audio.next(),
        })
    }
}

/// Absolute path of a file in `whip-tests/fixtures/`.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Walks one track on the looped timeline.
///
/// Video can jump ahead to the next keyframe (what answering a PLI from a file means): the frames
/// in between are skipped, but the timeline does not jump, so the next keyframe goes out when the
/// skipped frame would have, with that frame's timestamp.
#[derive(Debug, Clone)]
pub struct TrackCursor<'a> {
    samples: &'a [StoredSample],
    kind: Kind,
    period: Duration,
    loops: Option<u32>,
    loop_index: u32,
    index: usize,
    /// How far ahead in file time we are compared to the timeline, after keyframe jumps.
    shift: Duration,
}

impl TrackCursor<'_> {
    /// When the next sample is due on the timeline, or `None` at the end.
    pub fn peek_time(&self) -> Option<Duration> {
        if self.finished() {
            return None;
        }
        let s = self.samples.get(self.index)?;
        Some(
            self.file_time(self.loop_index, s.pts)
                .saturating_sub(self.shift),
        )
    }

    /// Skips to the next keyframe after the current position (wrapping into the next loop).
    /// Returns how many frames were skipped, or `None` if there is no keyframe to go to.
    pub fn skip_to_next_keyframe(&mut self) -> Option<usize> {
        let cur = self.samples.get(self.index)?;
        if cur.keyframe || self.finished() {
            return Some(0);
        }
        let len = self.samples.len();
        let (mut loop_index, mut index) = (self.loop_index, self.index);
        for skipped in 1..=len {
            index += 1;
            if index == len {
                index = 0;
                loop_index += 1;
            }
            if self.loops.is_some_and(|l| loop_index >= l) {
                return None;
            }
            if self.samples[index].keyframe {
                let from = self.file_time(self.loop_index, cur.pts);
                let to = self.file_time(loop_index, self.samples[index].pts);
                self.shift += to.saturating_sub(from);
                self.loop_index = loop_index;
                self.index = index;
                return Some(skipped);
            }
        }
        None
    }

    fn finished(&self) -> bool {
        self.samples.is_empty() || self.loops.is_some_and(|l| self.loop_index >= l)
    }

    fn file_time(&self, loop_index: u32, pts: Duration) -> Duration {
        self.period * loop_index + pts
    }
}

impl Iterator for TrackCursor<'_> {
    type Item = MediaSample;

    fn next(&mut self) -> Option<MediaSample> {
        let time = self.peek_time()?;
        let s = self.samples.get(self.index)?;
        let out = MediaSample {
            kind: self.kind,
            index: s.index,
            loop_index: self.loop_index,
            time,
            rtp_time: to_ticks(time, self.kind.clock()),
            keyframe: s.keyframe,
            data: s.data.clone(),
        };
        self.index += 1;
        if self.index == self.samples.len() {
            self.index = 0;
            self.loop_index += 1;
        }
        Some(out)
    }
}

/// `d` in a clock of `hz`, rounded to nearest so that looping never drifts by a tick.
pub fn to_ticks(d: Duration, hz: u64) -> u64 {
    ((d.as_nanos() * u128::from(hz) + 500_000_000) / 1_000_000_000) as u64
}

fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1))) as u64)
}

/// Reads the H264 track, converted to Annex B; also returns the track's end time.
fn read_video(
    reader: &mut Mp4Reader<Cursor<&[u8]>>,
    id: u32,
    opts: SourceOptions,
) -> Result<(Vec<StoredSample>, Duration)> {
    let track = reader.tracks().get(&id).context("video track vanished")?;
    let avc1 = track
        .trak
        .mdia
        .minf
        .stbl
        .stsd
        .avc1
        .as_ref()
        .context("H264 track without an avcC the mp4 crate understands")?;
    let length_size = usize::from(avc1.avcc.length_size_minus_one & 3) + 1;
    let param_sets: Vec<Vec<u8>> = avc1
        .avcc
        .sequence_parameter_sets
        .iter()
        .chain(avc1.avcc.picture_parameter_sets.iter())
        .map(|n| n.bytes.clone())
        .collect();
    let prefix: Vec<&[u8]> = param_sets.iter().map(|p| p.as_slice()).collect();

    let (mut raw, end) = read_track(reader, id, Kind::Video, opts.allow_b_frames)?;
    for s in &mut raw {
        let with_parameter_sets =
            s.keyframe && (opts.parameter_sets_on_every_keyframe || s.index == 0);
        let annexb = avcc_to_annexb(
            &s.data,
            length_size,
            if with_parameter_sets { &prefix } else { &[] },
        )
        .with_context(|| format!("video frame {}", s.index))?;
        if s.keyframe != annexb_is_keyframe(&annexb) {
            bail!(
                "video frame {}: sync-sample table says keyframe={}, the NAL units disagree",
                s.index,
                s.keyframe
            );
        }
        s.hash =
            vcl_hash(&annexb).with_context(|| format!("video frame {} has no slice", s.index))?;
        s.data = annexb.into();
    }
    Ok((raw, end))
}

/// Reads an `hvc1`/`hev1` track, converted to Annex B with the `hvcC` parameter sets in front
/// of keyframes (as for H264); also returns the track's end time.
fn read_h265(
    reader: &mut Mp4Reader<Cursor<&[u8]>>,
    id: u32,
    opts: SourceOptions,
    entry: Option<&SampleEntry>,
) -> Result<(Vec<StoredSample>, Duration)> {
    let hvcc = entry
        .and_then(|e| e.video_config.as_deref())
        .context("H265 track without hvcC")?;
    let (length_size, param_sets) = hvcc_parameter_sets(hvcc)?;
    let prefix: Vec<&[u8]> = param_sets.iter().map(|p| p.as_slice()).collect();
    let (mut raw, end) = read_track(reader, id, Kind::Video, opts.allow_b_frames)?;
    for s in &mut raw {
        let with_parameter_sets =
            s.keyframe && (opts.parameter_sets_on_every_keyframe || s.index == 0);
        let annexb = hvcc_to_annexb(
            &s.data,
            length_size,
            if with_parameter_sets { &prefix } else { &[] },
        )
        .with_context(|| format!("video frame {}", s.index))?;
        // IRAP pictures (BLA, IDR, CRA) are the sync samples.
        let irap = annexb_nals(&annexb).any(|n| matches!(h265_nal_type(n), Some(16..=21)));
        if s.keyframe != irap {
            bail!(
                "video frame {}: sync-sample table says keyframe={}, the NAL units disagree",
                s.index,
                s.keyframe
            );
        }
        s.data = annexb.into();
    }
    Ok((raw, end))
}

/// Reads every sample of a track as stored; also returns the track's end time, computed in
/// ticks so that summing rounded durations cannot make a 6 s file 5.999999999 s long.
fn read_track(
    reader: &mut Mp4Reader<Cursor<&[u8]>>,
    id: u32,
    kind: Kind,
    allow_b_frames: bool,
) -> Result<(Vec<StoredSample>, Duration)> {
    let track = reader.tracks().get(&id).context("track vanished")?;
    let timescale = track.timescale();
    let count = track.sample_count();
    let mut out = Vec::with_capacity(count as usize);
    let mut rendering_offset = None;
    let mut end_ticks = 0u64;
    for sample_id in 1..=count {
        let sample = reader
            .read_sample(id, sample_id)
            .map_err(|e| anyhow::anyhow!("track {id} sample {sample_id}: {e}"))?
            .with_context(|| format!("track {id} sample {sample_id} missing"))?;
        // A composition offset that varies means frames are reordered (B-frames), which WebRTC
        // senders must not do; FFmpeg's WHIP muxer refuses such input too.
        if kind == Kind::Video
            && !allow_b_frames
            && *rendering_offset.get_or_insert(sample.rendering_offset) != sample.rendering_offset
        {
            bail!("the video has B-frames (varying composition offsets); re-encode with -bf 0");
        }
        end_ticks = sample.start_time + u64::from(sample.duration);
        let data: Arc<[u8]> = sample.bytes.to_vec().into();
        out.push(StoredSample {
            index: out.len(),
            pts: ticks_to_duration(sample.start_time, timescale),
            duration: ticks_to_duration(u64::from(sample.duration), timescale),
            keyframe: kind == Kind::Video && sample.is_sync,
            hash: bytes_hash(&data),
            data,
        });
    }
    Ok((out, ticks_to_duration(end_ticks, timescale)))
}

/// Ground truth for a player: which fixture frame (or audio packet) a received payload is.
#[derive(Debug, Default)]
pub struct FrameCatalog {
    video_by_hash: HashMap<u64, usize>,
    keyframes: Vec<bool>,
    audio_hashes: std::collections::HashSet<u64>,
}

impl FrameCatalog {
    fn new(video: &[StoredSample], audio: &[StoredSample]) -> Self {
        let mut video_by_hash = HashMap::with_capacity(video.len());
        for f in video {
            // Should two frames ever be identical, the first wins; `duplicate_hashes` reports it
            // so that tests relying on unique identification can refuse such a file.
            video_by_hash.entry(f.hash).or_insert(f.index);
        }
        FrameCatalog {
            video_by_hash,
            keyframes: video.iter().map(|f| f.keyframe).collect(),
            audio_hashes: audio.iter().map(|a| a.hash).collect(),
        }
    }

    /// Which fixture frame a received Annex B frame is, by its slice data.
    pub fn identify(&self, annexb: &[u8]) -> Option<usize> {
        vcl_hash(annexb).and_then(|h| self.video_by_hash.get(&h).copied())
    }

    /// Which fixture frame has this [`vcl_hash`].
    pub fn index_of_hash(&self, hash: u64) -> Option<usize> {
        self.video_by_hash.get(&hash).copied()
    }

    /// Whether an Opus packet is one of the file's.
    pub fn knows_audio(&self, packet: &[u8]) -> bool {
        self.audio_hashes.contains(&bytes_hash(packet))
    }

    /// Number of video frames in one loop.
    pub fn video_len(&self) -> usize {
        self.keyframes.len()
    }

    /// Whether fixture frame `index` is a keyframe.
    pub fn is_keyframe(&self, index: usize) -> bool {
        self.keyframes.get(index).copied().unwrap_or(false)
    }

    /// How many frames share their hash with an earlier one (0 for a usable fixture).
    pub fn duplicate_hashes(&self) -> usize {
        self.keyframes.len() - self.video_by_hash.len()
    }
}

/// Reads just the file's size and track summary, for CLIs that want to print what they publish.
pub fn describe(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let reader = Mp4Reader::read_header(BufReader::new(file), size)
        .map_err(|e| anyhow::anyhow!("mp4 header: {e}"))?;
    Ok(format!(
        "{} ({} bytes, {:.1} s, {} tracks)",
        path.display(),
        size,
        reader.duration().as_secs_f64(),
        reader.tracks().len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annexb::{NAL_PPS, NAL_SPS, annexb_nals, nal_type};

    #[test]
    fn short_gop_has_a_keyframe_every_second() -> Result<()> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        assert_eq!(m.video().len(), 180);
        assert_eq!(m.keyframe_indices(), vec![0, 30, 60, 90, 120, 150]);
        assert_eq!(m.period(), Duration::from_secs(6));
        // 20 ms Opus packets over ~6 s.
        assert!(
            (295..=302).contains(&m.audio().len()),
            "{} audio packets",
            m.audio().len()
        );
        Ok(())
    }

    #[test]
    fn h265_and_av1_fixtures_read_with_their_keyframes() -> Result<()> {
        for (name, codec) in [("h265.mp4", VideoCodec::H265), ("av1.mp4", VideoCodec::Av1)] {
            let m = MediaSource::fixture(name)?;
            assert_eq!(m.video_codec(), codec, "{name}");
            assert_eq!(m.video().len(), 120, "{name}");
            assert_eq!(m.keyframe_indices(), vec![0, 30, 60, 90], "{name}");
            assert_eq!(m.period(), Duration::from_secs(4), "{name}");
            assert!(
                m.audio().len() >= 195,
                "{name}: {} audio packets",
                m.audio().len()
            );
        }
        // H265 keyframes go out with VPS, SPS and PPS in front, other frames without.
        let m = MediaSource::fixture("h265.mp4")?;
        for f in m.video() {
            let types: Vec<u8> = annexb_nals(&f.data).filter_map(h265_nal_type).collect();
            if f.keyframe {
                assert_eq!(types[..3], [32, 33, 34], "frame {}", f.index);
            } else {
                assert!(!types.contains(&33), "frame {}: {types:?}", f.index);
            }
        }
        // AV1 temporal units as stored: a keyframe starts with the sequence header OBU.
        let m = MediaSource::fixture("av1.mp4")?;
        for f in m.video() {
            assert_eq!(
                f.keyframe,
                f.data.first() == Some(&0x0a),
                "frame {}",
                f.index
            );
        }
        Ok(())
    }

    #[test]
    fn long_gop_has_a_keyframe_every_eight_seconds() -> Result<()> {
        let m = MediaSource::fixture("long-gop.mp4")?;
        assert_eq!(m.video().len(), 600);
        assert_eq!(m.keyframe_indices(), vec![0, 240, 480]);
        assert_eq!(m.period(), Duration::from_secs(20));
        Ok(())
    }

    #[test]
    fn fixture_tracks_are_h264_and_opus() -> Result<()> {
        let bytes = std::fs::read(fixture_path("short-gop.mp4"))?;
        let mut codecs: Vec<String> = sample_entries(&bytes)?
            .values()
            .map(|e| e.fourcc_str())
            .collect();
        codecs.sort();
        assert_eq!(codecs, vec!["Opus", "avc1"]);
        let opus = sample_entries(&bytes)?
            .into_values()
            .find(|e| &e.fourcc == b"Opus")
            .context("no Opus entry")?;
        assert_eq!(opus.opus_channels, Some(2));
        assert!(opus.opus_pre_skip.is_some());
        Ok(())
    }

    #[test]
    fn keyframes_carry_parameter_sets_and_others_do_not() -> Result<()> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        for f in m.video() {
            let types: Vec<u8> = annexb_nals(&f.data).filter_map(nal_type).collect();
            assert_eq!(
                f.data.get(..4),
                Some(&[0u8, 0, 0, 1][..]),
                "frame {} not Annex B",
                f.index
            );
            if f.keyframe {
                assert_eq!(
                    types.first(),
                    Some(&NAL_SPS),
                    "frame {}: {types:?}",
                    f.index
                );
                assert_eq!(types.get(1), Some(&NAL_PPS), "frame {}: {types:?}", f.index);
                assert!(types.contains(&5), "frame {}: {types:?}", f.index);
            } else {
                assert!(
                    !types.contains(&NAL_SPS) && !types.contains(&5),
                    "frame {}: {types:?}",
                    f.index
                );
                assert!(types.contains(&1), "frame {}: {types:?}", f.index);
            }
        }
        Ok(())
    }

    #[test]
    fn every_frame_is_identified_by_its_hash() -> Result<()> {
        for name in ["short-gop.mp4", "long-gop.mp4"] {
            let m = MediaSource::fixture(name)?;
            let catalog = m.catalog();
            assert_eq!(catalog.duplicate_hashes(), 0, "{name}");
            assert_eq!(catalog.video_len(), m.video().len());
            for f in m.video() {
                assert_eq!(
                    catalog.identify(&f.data),
                    Some(f.index),
                    "{name} frame {}",
                    f.index
                );
                assert_eq!(catalog.is_keyframe(f.index), f.keyframe);
            }
            for a in m.audio() {
                assert!(catalog.knows_audio(&a.data));
            }
        }
        Ok(())
    }

    #[test]
    fn identification_survives_reframing() -> Result<()> {
        // What a depacketizer hands back: parameter sets possibly gone, 3-byte start codes.
        let m = MediaSource::fixture("short-gop.mp4")?;
        let key = &m.video()[30];
        let reframed: Vec<u8> = annexb_nals(&key.data)
            .filter(|n| nal_type(n) == Some(5))
            .flat_map(|n| [&[0u8, 0, 1][..], n].concat())
            .collect();
        assert_eq!(m.catalog().identify(&reframed), Some(30));
        let mut damaged = key.data.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x55;
        assert_eq!(m.catalog().identify(&damaged), None);
        Ok(())
    }

    #[test]
    fn looping_keeps_timestamps_increasing() -> Result<()> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        let video: Vec<MediaSample> = m.cursor(Kind::Video, Some(3)).collect();
        assert_eq!(video.len(), 3 * 180);
        for w in video.windows(2) {
            assert_eq!(w[1].rtp_time - w[0].rtp_time, 3000, "at {:?}", w[1].time);
            assert!(w[1].time > w[0].time);
        }
        assert_eq!(video[180].index, 0);
        assert_eq!(video[180].loop_index, 1);
        assert_eq!(video[180].time, Duration::from_secs(6));
        assert_eq!(video[180].rtp_time, 6 * VIDEO_CLOCK);
        assert!(video[180].keyframe);

        let audio: Vec<MediaSample> = m.cursor(Kind::Audio, Some(2)).collect();
        assert_eq!(audio.len(), 2 * m.audio().len());
        for w in audio.windows(2) {
            assert!(
                w[1].rtp_time > w[0].rtp_time,
                "audio time went back at {:?}",
                w[1].time
            );
        }
        let second = &audio[m.audio().len()];
        assert_eq!(second.loop_index, 1);
        assert_eq!(
            second.rtp_time,
            6 * AUDIO_CLOCK + to_ticks(m.audio()[0].pts, AUDIO_CLOCK)
        );
        Ok(())
    }

    #[test]
    fn interleaved_samples_are_in_time_order() -> Result<()> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        let all: Vec<MediaSample> = m.samples(Some(2)).collect();
        assert_eq!(all.len(), 2 * (m.video().len() + m.audio().len()));
        for w in all.windows(2) {
            assert!(w[1].time >= w[0].time);
        }
        Ok(())
    }

    #[test]
    fn skipping_to_keyframe_keeps_the_timeline() -> Result<()> {
        let m = MediaSource::fixture("short-gop.mp4")?;
        let mut c = m.cursor(Kind::Video, None);
        for _ in 0..175 {
            c.next();
        }
        let due = c.peek_time();
        assert_eq!(c.skip_to_next_keyframe(), Some(5));
        assert_eq!(c.peek_time(), due);
        let next = c.next().context("cursor ended")?;
        assert!(next.keyframe);
        assert_eq!((next.index, next.loop_index), (0, 1));
        assert_eq!(next.rtp_time, 175 * 3000);
        let after = c.next().context("cursor ended")?;
        assert_eq!((after.index, after.rtp_time), (1, 176 * 3000));
        Ok(())
    }
}
