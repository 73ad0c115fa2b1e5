//! Per-stream recording to fragmented MP4. The recorder is one task per node that looks like one
//! more media worker to the real workers (an index in their peer list, like the cluster bridge):
//! when a recorded stream starts publishing it subscribes to each track on the origin worker and
//! receives every packet once. H264, H265 and AV1 are reassembled into frames (`depacketize`),
//! Opus packets are samples as they are; a fragment (`fmp4`) is cut at every video keyframe and
//! at least every second and handed to a writer thread that appends it and `sync_data`s, so a
//! crash or a kill leaves a file playable up to its last fragment.
//!
//! Files: `<dir>/<stream>/<stream>-<UTC yyyymmdd-hhmmss>.mp4`, a new one every `segment_secs`
//! (at a keyframe), when the parameter sets (SPS/PPS, VPS/SPS/PPS, AV1 sequence header) change,
//! and when the stream is republished. VP8/VP9 video is not recorded, nor is video whose
//! parameter sets do not parse (logged once per stream; the audio still is).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use relay_proto::SharedPacket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::RecordingSettings;
use crate::depacketize::{Assembler, VideoCodec};
use crate::fmp4::{self, AUDIO_TIMESCALE, Sample, TrackConfig, TrackDesc, VIDEO_TIMESCALE};
use crate::ids::{SessionId, TrackId};
use crate::mailbox::Mailbox;
use crate::registry::{Registry, TrackInfo};
use crate::track_link::{FromOrigin, ToOrigin};

/// At least one fragment this often (by arrival time), so a kill loses at most about this much.
const FRAGMENT_EVERY: Duration = Duration::from_secs(1);

/// Requests from the HTTP side.
pub enum RecorderRequest {
    /// A WHIP stream started publishing here (recorded if the config or the API says so).
    Publish {
        /// The stream's name.
        stream: Arc<str>,
        /// The publishing session.
        session: SessionId,
        /// Its tracks.
        tracks: Vec<Arc<TrackInfo>>,
    },
    /// `POST /v1/streams/{name}/recording`: record it from now on. Replies false for a stream
    /// that is not live.
    Start {
        /// The stream's name.
        stream: Arc<str>,
        /// Gets whether the stream is live.
        reply: oneshot::Sender<bool>,
    },
    /// `DELETE …`: stop recording it (until started again). Replies false for a stream that is
    /// neither live nor recording.
    Stop {
        /// The stream's name.
        stream: Arc<str>,
        /// Gets whether it was live or recording.
        reply: oneshot::Sender<bool>,
    },
}

/// What a recorded track is written as: video (its sample entry) or Opus.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RecordedCodec {
    Video(VideoCodec),
    Opus,
}

struct TrackRec {
    info: Arc<TrackInfo>,
    codec: RecordedCodec,
    mp4_id: u32,
    /// Video only.
    asm: Option<Assembler>,
    /// Video whose parameter sets did not parse: left out of the files.
    refused: bool,
    /// The newest sample: its duration is known when the next one arrives.
    pending: Option<(u64, Instant, Sample)>,
    /// Complete samples of the fragment being built, and the decode time of the first.
    ready: Vec<Sample>,
    ready_start: u64,
    /// Decode time of the next complete sample in the current file (None before its first).
    next_dts: Option<u64>,
    last_duration: u32,
    ended: bool,
    wait_keyframe: bool,
}

impl TrackRec {
    fn timescale(&self) -> u32 {
        match self.codec {
            RecordedCodec::Video(_) => VIDEO_TIMESCALE,
            RecordedCodec::Opus => AUDIO_TIMESCALE,
        }
    }

    /// `pending` becomes a complete sample lasting until `next_rtp` (or its predecessor's length).
    fn complete(&mut self, next_rtp: Option<u64>, file_start: Instant) {
        let Some((rtp, received, mut sample)) = self.pending.take() else {
            return;
        };
        let limit = u64::from(self.timescale()) * 10;
        let duration = match next_rtp.map(|n| n.wrapping_sub(rtp)) {
            Some(d) if d > 0 && d < limit => d as u32,
            _ => self.last_duration,
        };
        self.last_duration = duration;
        sample.duration = duration;
        if self.next_dts.is_none() {
            let offset = received.saturating_duration_since(file_start);
            let dts = (offset.as_secs_f64() * f64::from(self.timescale())) as u64;
            self.next_dts = Some(dts);
        }
        if self.ready.is_empty() {
            self.ready_start = self.next_dts.unwrap_or(0);
        }
        self.next_dts = self.next_dts.map(|d| d + u64::from(duration));
        self.ready.push(sample);
    }
}

struct OpenFile {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    started: Instant,
    last_cut: Instant,
    sequence: u32,
    /// The video parameter sets this file's sample entry was made from.
    params: Vec<Vec<u8>>,
}

struct Recording {
    stream: Arc<str>,
    session: SessionId,
    tracks: Vec<TrackRec>,
    file: Option<OpenFile>,
    /// The latest complete video parameter sets.
    params: Option<Vec<Vec<u8>>>,
}

/// Writes live streams to fragmented MP4 files; one per node, a peer of the media workers.
pub struct Recorder {
    index: usize,
    settings: RecordingSettings,
    workers: Vec<Mailbox>,
    registry: Arc<Registry>,
    recordings: HashMap<Arc<str>, Recording>,
    by_track: HashMap<TrackId, Arc<str>>,
    /// Streams started (true) or stopped (false) through the API, overriding the config.
    overrides: HashMap<Arc<str>, bool>,
    warned: HashSet<Arc<str>>,
}

/// `*`, a prefix ending in `*`, or an exact name (as for tokens).
fn matches(pattern: &str, stream: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => pattern == stream,
    }
}

/// `yyyymmdd-hhmmss` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Where a file started now goes: `<dir>/<stream>/<stream>-<stamp>.mp4`.
pub fn file_path(dir: &Path, stream: &str, now: SystemTime) -> PathBuf {
    dir.join(stream)
        .join(format!("{stream}-{}.mp4", utc_stamp(now)))
}

/// A thread that creates the file (never overwriting: `-1`, `-2`… on a name clash) and appends
/// each buffer it is given, synced, until the sender is dropped.
fn spawn_writer(path: PathBuf) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let spawned = std::thread::Builder::new()
        .name("recorder-writer".into())
        .spawn(move || {
            if let Some(parent) = path.parent()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                tracing::error!(path = %parent.display(), "recording: cannot create directory: {e}");
                return;
            }
            let mut file = None;
            for n in 0..100 {
                let p = if n == 0 {
                    path.clone()
                } else {
                    path.with_file_name(format!(
                        "{}-{n}.mp4",
                        path.file_stem().unwrap_or_default().to_string_lossy()
                    ))
                };
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                {
                    Ok(f) => {
                        tracing::info!(path = %p.display(), "recording to");
                        file = Some((f, p));
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        tracing::error!(path = %p.display(), "recording: cannot create file: {e}");
                        return;
                    }
                }
            }
            let Some((mut f, p)) = file else { return };
            for buf in rx {
                if let Err(e) = f.write_all(&buf).and_then(|_| f.sync_data()) {
                    tracing::error!(path = %p.display(), "recording: write failed: {e}");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("recording: cannot start a writer thread: {e}");
    }
    tx
}

impl Recorder {
    /// A recorder that is peer `index` of the `workers`, writing under `settings.dir`.
    pub fn new(
        index: usize,
        settings: RecordingSettings,
        workers: Vec<Mailbox>,
        registry: Arc<Registry>,
    ) -> Recorder {
        Recorder {
            index,
            settings,
            workers,
            registry,
            recordings: HashMap::new(),
            by_track: HashMap::new(),
            overrides: HashMap::new(),
            warned: HashSet::new(),
        }
    }

    /// Records what the workers send and serves requests until `shutdown`, then closes every file.
    pub async fn run(
        mut self,
        mut from_workers: mpsc::UnboundedReceiver<FromOrigin>,
        mut requests: mpsc::UnboundedReceiver<RecorderRequest>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(msg) = from_workers.recv() => self.on_worker(msg),
                Some(req) = requests.recv() => self.on_request(req),
                else => break,
            }
        }
        let streams: Vec<Arc<str>> = self.recordings.keys().cloned().collect();
        for s in streams {
            self.stop(&s);
        }
    }

    fn wanted(&self, stream: &Arc<str>) -> bool {
        self.overrides
            .get(stream)
            .copied()
            .unwrap_or_else(|| self.settings.streams.iter().any(|p| matches(p, stream)))
    }

    fn on_request(&mut self, req: RecorderRequest) {
        match req {
            RecorderRequest::Publish {
                stream,
                session,
                tracks,
            } => {
                // A republish replaces the recording of the previous publisher.
                self.stop(&stream);
                if self.wanted(&stream) {
                    self.start(stream, session, tracks);
                }
            }
            RecorderRequest::Start { stream, reply } => {
                let live = self.registry.stream(&stream);
                let found = live.is_some();
                if let Some((session, tracks)) = live {
                    self.overrides.insert(stream.clone(), true);
                    if !self.recordings.contains_key(&stream) {
                        self.start(stream, session, tracks);
                    }
                }
                let _ = reply.send(found);
            }
            RecorderRequest::Stop { stream, reply } => {
                let found = self.recordings.contains_key(&stream)
                    || self.registry.stream(&stream).is_some();
                if found {
                    self.overrides.insert(stream.clone(), false);
                }
                self.stop(&stream);
                let _ = reply.send(found);
            }
        }
    }

    fn start(&mut self, stream: Arc<str>, session: SessionId, tracks: Vec<Arc<TrackInfo>>) {
        let mut recs = Vec::new();
        for info in tracks {
            let name = info
                .params
                .first()
                .map(|p| p.spec().codec.to_string())
                .unwrap_or_default();
            let codec = match relay_proto::Codec::from_name(&name) {
                relay_proto::Codec::H264 => RecordedCodec::Video(VideoCodec::H264),
                relay_proto::Codec::H265 => RecordedCodec::Video(VideoCodec::H265),
                relay_proto::Codec::Av1 => RecordedCodec::Video(VideoCodec::Av1),
                relay_proto::Codec::Opus => RecordedCodec::Opus,
                other => {
                    if self.warned.insert(stream.clone()) {
                        tracing::warn!(%stream, codec = ?other, kind = ?info.kind,
                            "recording: codec not supported, this track is not recorded");
                    }
                    continue;
                }
            };
            // One track of each kind: the first.
            if recs.iter().any(|r: &TrackRec| r.info.kind == info.kind) {
                continue;
            }
            recs.push(TrackRec {
                codec,
                mp4_id: recs.len() as u32 + 1,
                asm: match codec {
                    RecordedCodec::Video(c) => Some(Assembler::new(c)),
                    RecordedCodec::Opus => None,
                },
                refused: false,
                pending: None,
                ready: Vec::new(),
                ready_start: 0,
                next_dts: None,
                last_duration: if codec == RecordedCodec::Opus {
                    960
                } else {
                    3000
                },
                ended: false,
                wait_keyframe: true,
                info,
            });
        }
        if recs.is_empty() {
            tracing::warn!(%stream, "recording: no track with a recordable codec");
            return;
        }
        for r in &recs {
            self.by_track.insert(r.info.id, stream.clone());
            if let Some(w) = self.workers.get(r.info.origin_worker) {
                w.track(ToOrigin::Subscribe {
                    track: r.info.clone(),
                    worker: self.index,
                });
            }
        }
        tracing::info!(%stream, tracks = recs.len(), "recording");
        self.recordings.insert(
            stream.clone(),
            Recording {
                stream,
                session,
                tracks: recs,
                file: None,
                params: None,
            },
        );
    }

    /// Finish the stream's file and let go of its tracks.
    fn stop(&mut self, stream: &Arc<str>) {
        let Some(mut rec) = self.recordings.remove(stream) else {
            return;
        };
        rec.close_file();
        for t in &rec.tracks {
            if let Some(asm) = t.asm.as_ref().filter(|a| a.malformed > 0) {
                tracing::warn!(stream = %rec.stream, track = ?t.info.id, malformed = asm.malformed,
                    "recording: malformed video packets were dropped (with their frames)");
            }
            self.by_track.remove(&t.info.id);
            if !t.ended
                && let Some(w) = self.workers.get(t.info.origin_worker)
            {
                w.track(ToOrigin::Unsubscribe {
                    track: t.info.id,
                    worker: self.index,
                });
            }
        }
        tracing::info!(stream = %rec.stream, session = %rec.session, "recording stopped");
    }

    fn on_worker(&mut self, msg: FromOrigin) {
        match msg {
            FromOrigin::Media { track, packet } => self.record(track, &[packet]),
            // The recording starts at the run's keyframe, parameter sets in band in front of it
            // where the run lacks them: that is what the assembler reads.
            FromOrigin::Run { track, packets, .. } => self.record(track, &packets),
            FromOrigin::TrackEnded { track } => {
                let Some(stream) = self.by_track.get(&track).cloned() else {
                    return;
                };
                let all_ended = self.recordings.get_mut(&stream).is_none_or(|rec| {
                    for t in rec.tracks.iter_mut().filter(|t| t.info.id == track) {
                        t.ended = true;
                    }
                    rec.tracks.iter().all(|t| t.ended)
                });
                if all_ended {
                    self.stop(&stream);
                }
            }
        }
    }

    fn record(&mut self, track: TrackId, packets: &[relay_proto::SharedPacket]) {
        let Some(stream) = self.by_track.get(&track) else {
            return;
        };
        let Some(rec) = self.recordings.get_mut(stream) else {
            return;
        };
        let segment = Duration::from_secs(self.settings.segment_secs.max(1));
        for packet in packets {
            rec.on_packet(track, packet, &self.settings.dir, segment);
        }
    }
}

impl Recording {
    fn has_video(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| matches!(t.codec, RecordedCodec::Video(_)) && !t.refused)
    }

    fn on_packet(&mut self, track: TrackId, p: &SharedPacket, dir: &Path, segment: Duration) {
        let Some(i) = self
            .tracks
            .iter()
            .position(|t| t.info.id == track && !t.refused)
        else {
            return;
        };
        match self.tracks[i].codec {
            RecordedCodec::Opus => {
                if p.payload.is_empty() {
                    return;
                }
                let sample = Sample {
                    data: p.payload.to_vec(),
                    duration: 0,
                    sync: true,
                };
                self.on_sample(i, p.rtp_time, p.received, sample, false, dir, segment);
            }
            RecordedCodec::Video(_) => {
                let Some(asm) = self.tracks[i].asm.as_mut() else {
                    return;
                };
                let aus = asm.push(p);
                let lost = std::mem::take(&mut asm.lost);
                let params = asm.parameter_sets();
                for au in aus {
                    let t = &mut self.tracks[i];
                    if lost {
                        t.wait_keyframe = true;
                    }
                    if t.wait_keyframe && !au.keyframe {
                        continue;
                    }
                    t.wait_keyframe = false;
                    if params.is_some() {
                        self.params = params.clone();
                    }
                    let sample = Sample {
                        data: au.data,
                        duration: 0,
                        sync: au.keyframe,
                    };
                    self.on_sample(
                        i,
                        au.rtp_time,
                        au.received,
                        sample,
                        au.keyframe,
                        dir,
                        segment,
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sample(
        &mut self,
        i: usize,
        rtp_time: u64,
        received: Instant,
        sample: Sample,
        keyframe: bool,
        dir: &Path,
        segment: Duration,
    ) {
        let video = matches!(self.tracks[i].codec, RecordedCodec::Video(_));
        // The first sample of a file: a video keyframe with its parameter sets, or audio when
        // there is no video.
        let opens = if self.has_video() {
            keyframe && self.params.is_some()
        } else {
            true
        };
        if let Some(f) = &self.file {
            let start = f.started;
            self.tracks[i].complete(Some(rtp_time), start);
            let new_params = keyframe && self.params.as_ref() != Some(&f.params);
            let rotate =
                opens && (received.saturating_duration_since(f.started) >= segment || new_params);
            if rotate {
                self.close_file();
            } else if (video && keyframe)
                || received.saturating_duration_since(f.last_cut) >= FRAGMENT_EVERY
            {
                self.cut();
                if let Some(f) = self.file.as_mut() {
                    f.last_cut = received;
                }
            }
        }
        if self.file.is_none() {
            if !opens {
                return; // nothing to attach this sample to yet
            }
            self.open_file(dir, received);
            if self.tracks[i].refused {
                return;
            }
        }
        self.tracks[i].pending = Some((rtp_time, received, sample));
    }

    fn open_file(&mut self, dir: &Path, started: Instant) {
        let mut descs = Vec::new();
        let params = self.params.clone().unwrap_or_default();
        for t in &mut self.tracks {
            t.next_dts = None;
            t.ready.clear();
            let kind = match t.codec {
                _ if t.refused => continue,
                RecordedCodec::Video(codec) => match TrackConfig::video(codec, &params) {
                    Ok(kind) => kind,
                    Err(why) => {
                        tracing::error!(stream = %self.stream, codec = ?codec,
                            "recording: {why}; this stream's video is not recorded");
                        t.refused = true;
                        t.pending = None;
                        continue;
                    }
                },
                RecordedCodec::Opus => TrackConfig::Opus {
                    channels: t
                        .info
                        .params
                        .first()
                        .and_then(|p| p.spec().channels)
                        .unwrap_or(2)
                        .into(),
                },
            };
            descs.push(TrackDesc {
                id: t.mp4_id,
                timescale: t.timescale(),
                kind,
            });
        }
        let tx = spawn_writer(file_path(dir, &self.stream, SystemTime::now()));
        let _ = tx.send(fmp4::init_segment(&descs));
        self.file = Some(OpenFile {
            tx,
            started,
            last_cut: started,
            sequence: 0,
            params,
        });
    }

    /// Write the complete samples of every track as one fragment.
    fn cut(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        if self.tracks.iter().all(|t| t.ready.is_empty()) {
            return;
        }
        f.sequence += 1;
        let runs: Vec<fmp4::TrackRun<'_>> = self
            .tracks
            .iter()
            .map(|t| fmp4::TrackRun {
                track_id: t.mp4_id,
                base_time: t.ready_start,
                samples: &t.ready,
            })
            .collect();
        let bytes = fmp4::fragment(f.sequence, &runs);
        let _ = f.tx.send(bytes);
        for t in &mut self.tracks {
            t.ready.clear();
        }
    }

    /// Write everything still held (the newest samples get their predecessor's duration).
    fn close_file(&mut self) {
        let Some(start) = self.file.as_ref().map(|f| f.started) else {
            return;
        };
        for t in &mut self.tracks {
            t.complete(None, start);
        }
        self.cut();
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_and_per_stream() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_217_000); // 2024-02-29 14:30:00
        assert_eq!(utc_stamp(t), "20240229-143000");
        assert_eq!(
            file_path(Path::new("/rec"), "cam", t),
            PathBuf::from("/rec/cam/cam-20240229-143000.mp4")
        );
        assert!(matches("*", "x") && matches("cam-*", "cam-1") && !matches("cam", "cam2"));
    }
}
