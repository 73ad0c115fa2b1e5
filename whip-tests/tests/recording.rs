//! Recording: a stream published with `--record-dir D --record "*"` ends up in
//! `D/<stream>/<stream>-<UTC stamp>.mp4` as fragmented MP4, which is read back here box by box
//! (the `mp4` crate skips `Opus` sample entries): one H264 and one Opus track, about as many
//! video samples as frames were sent, a sync sample first, durations summing to the published
//! time, the fixture's SPS in `avcC`. H265 and AV1 (`h265.mp4`, `av1.mp4`) record as `hvc1` and
//! `av01` with the same `hvcC`/`av1C` FFmpeg wrote into the fixture, and every recorded frame is
//! the fixture's: same size, sync samples exactly at its keyframes. A SIGKILLed gateway leaves a
//! file that parses up to its last complete fragment. `ffprobe` must accept the file too (and
//! count the same frames) and `ffmpeg` decode it cleanly (`scripts/setup-media-tools.sh`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use whip_tests::annexb::{annexb_nals, h265_nal_type, nal_type};
use whip_tests::media_source::{VideoCodec, fixture_path};
use whip_tests::sample_entry::sample_entries;
use whip_tests::{Gateway, MediaSource, PublishOptions, PublishStats, WhipPublisher};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Default)]
struct Track {
    id: u32,
    handler: String,
    entry: String,
    timescale: u32,
    sps: Option<Vec<u8>>,
    /// Body of the video entry's codec box (`avcC`, `hvcC`, `av1C`), and the entry's size.
    config: Option<Vec<u8>>,
    size: (u16, u16),
    /// (duration, size, sync) of every sample in complete fragments.
    samples: Vec<(u32, u32, bool)>,
    first_dts: Option<u64>,
}

#[derive(Debug, Default)]
struct Parsed {
    tracks: Vec<Track>,
    fragments: usize,
    /// Bytes after the last complete fragment (a fragment cut by a kill).
    trailing: usize,
}

impl Track {
    /// Sum of the sample durations.
    fn secs(&self) -> f64 {
        self.samples.iter().map(|s| f64::from(s.0)).sum::<f64>() / f64::from(self.timescale)
    }
}

/// Every track lasts as long as the stream was published, give or take half a second.
fn ensure_lasts(p: &Parsed, published: f64) -> Result<()> {
    for t in &p.tracks {
        let secs = t.secs();
        ensure!(
            (secs - published).abs() <= 0.5,
            "{} lasts {secs:.3} s, published {published:.3} s",
            t.handler
        );
    }
    Ok(())
}

impl Parsed {
    /// The track with this handler (`vide`, `soun`).
    fn track(&self, handler: &str) -> Result<&Track> {
        self.tracks
            .iter()
            .find(|t| t.handler == handler)
            .with_context(|| format!("no {handler} track"))
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(
        b.get(at..at + 4).context("short box")?.try_into()?,
    ))
}

/// (type, body) of each complete box in `data`; stops at a truncated one.
fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8], usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if size < 8 || at + size > data.len() {
            break;
        }
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap();
        out.push((kind, &data[at + 8..at + size], at));
        at += size;
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).into_iter().find(|b| &b.0 == kind).map(|b| b.1)
}

fn parse(file: &[u8]) -> Result<Parsed> {
    let top = boxes(file);
    ensure!(top.first().map(|b| &b.0) == Some(b"ftyp"), "no ftyp first");
    let moov = child(file, b"moov").context("no moov")?;
    let mut p = Parsed::default();
    for (kind, trak, _) in boxes(moov) {
        if &kind != b"trak" {
            continue;
        }
        let tkhd = child(trak, b"tkhd").context("tkhd")?;
        let mdia = child(trak, b"mdia").context("mdia")?;
        let mdhd = child(mdia, b"mdhd").context("mdhd")?;
        let hdlr = child(mdia, b"hdlr").context("hdlr")?;
        let stbl = child(child(mdia, b"minf").context("minf")?, b"stbl").context("stbl")?;
        let stsd = child(stbl, b"stsd").context("stsd")?;
        let entries = boxes(&stsd[8..]);
        let (entry_kind, entry, _) = entries.first().context("empty stsd")?;
        let mut t = Track {
            id: be32(tkhd, 12)?,
            handler: String::from_utf8_lossy(&hdlr[8..12]).into_owned(),
            entry: String::from_utf8_lossy(entry_kind).into_owned(),
            timescale: be32(mdhd, 12)?,
            ..Track::default()
        };
        if &t.handler == "vide" {
            let be16 = |at: usize| {
                entry
                    .get(at..at + 2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
            };
            t.size = (be16(24).context("entry")?, be16(26).context("entry")?);
            t.config = entry
                .get(78..)
                .and_then(|b| boxes(b).first().map(|c| c.1.to_vec()));
        }
        if entry_kind == b"avc1" {
            let avcc = child(&entry[78..], b"avcC").context("no avcC")?;
            let len = u16::from_be_bytes([avcc[6], avcc[7]]) as usize;
            t.sps = Some(avcc[8..8 + len].to_vec());
        }
        p.tracks.push(t);
    }
    // Fragments: a moof counts only with its whole mdat after it.
    let mut end_of_complete = top
        .iter()
        .find(|b| &b.0 == b"moov")
        .map_or(0, |b| b.2 + b.1.len() + 8);
    for pair in top.windows(2) {
        let ((k1, moof, _), (k2, mdat, mdat_at)) = (&pair[0], &pair[1]);
        if k1 != b"moof" || k2 != b"mdat" {
            continue;
        }
        p.fragments += 1;
        end_of_complete = mdat_at + 8 + mdat.len();
        for (kind, traf, _) in boxes(moof) {
            if &kind != b"traf" {
                continue;
            }
            let id = be32(child(traf, b"tfhd").context("tfhd")?, 4)?;
            let tfdt = child(traf, b"tfdt").context("tfdt")?;
            let dts = u64::from_be_bytes(tfdt[4..12].try_into()?);
            let trun = child(traf, b"trun").context("trun")?;
            let flags = be32(trun, 0)? & 0xffffff;
            ensure!(flags == 0x701, "unexpected trun flags {flags:x}");
            let count = be32(trun, 4)? as usize;
            let t = p
                .tracks
                .iter_mut()
                .find(|t| t.id == id)
                .context("traf of unknown track")?;
            t.first_dts.get_or_insert(dts);
            for i in 0..count {
                let at = 12 + i * 12;
                let sync = be32(trun, at + 8)? & 0x0001_0000 == 0;
                t.samples.push((be32(trun, at)?, be32(trun, at + 4)?, sync));
            }
        }
    }
    p.trailing = file.len() - end_of_complete;
    Ok(p)
}

fn recorded_files(dir: &Path, stream: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(stream))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The file once it has stopped growing for a second.
async fn settled(path: &Path) -> Result<Vec<u8>> {
    let mut last = u64::MAX;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let len = std::fs::metadata(path)?.len();
        if len == last {
            return Ok(std::fs::read(path)?);
        }
        last = len;
    }
    bail!("{} keeps growing", path.display())
}

fn fixture_sps(media: &MediaSource) -> Option<Vec<u8>> {
    let first = media.video().first()?;
    annexb_nals(&first.data)
        .find(|n| nal_type(n) == Some(7))
        .map(|n| n.to_vec())
}

/// Checks the file with `ffprobe` (and that `ffmpeg` decodes every frame); returns ffprobe's
/// `-show_streams` output. Both are required: `scripts/setup-media-tools.sh` installs them.
fn ffprobe(path: &Path) -> String {
    let shown = match std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-count_packets"])
        .arg(path)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let interesting: Vec<&str> = text
                .lines()
                .filter(|l| {
                    [
                        "codec_name=",
                        "width=",
                        "height=",
                        "nb_read_packets=",
                        "duration=",
                    ]
                    .iter()
                    .any(|k| l.starts_with(k))
                })
                .collect();
            println!("ffprobe: {}", interesting.join(" "));
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "ffprobe rejects {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            text
        }
        Err(e) => panic!("ffprobe not runnable ({e}): run scripts/setup-media-tools.sh"),
    };
    // And every frame decodes.
    match std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
    {
        Err(e) => panic!("ffmpeg not runnable ({e}): run scripts/setup-media-tools.sh"),
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg cannot decode {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    shown
}

/// `key=value` of the first `ffprobe -show_streams` stream whose `codec_type` is `kind`.
fn probed<'a>(shown: &'a str, kind: &str, key: &str) -> Option<&'a str> {
    let stream = shown
        .split("[STREAM]")
        .find(|s| s.lines().any(|l| l == format!("codec_type={kind}")))?;
    stream
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// (size, sync) of each fixture frame as the recorder stores it: AV1 temporal units as they are,
/// H265 access units without VPS/SPS/PPS (they go to `hvcC`), 4-byte NAL lengths.
fn expected_samples(media: &MediaSource) -> Vec<(u32, bool)> {
    media
        .video()
        .iter()
        .map(|f| {
            let size = match media.video_codec() {
                VideoCodec::Av1 => f.data.len(),
                _ => annexb_nals(&f.data)
                    .filter(|n| !matches!(h265_nal_type(n), Some(32..=35)))
                    .map(|n| 4 + n.len())
                    .sum(),
            };
            (size as u32, f.keyframe)
        })
        .collect()
}

/// Publishes `media` to `stream` for `secs` once the first frame went out, then leaves; returns
/// what was sent and for how long.
async fn publish_for(
    gw: &Gateway,
    stream: &str,
    media: Arc<MediaSource>,
    secs: u64,
) -> Result<(PublishStats, Duration)> {
    let publisher = WhipPublisher::start(media, PublishOptions::new(gw.whip_url(stream))).await?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let stats = publisher.stop().await?;
    Ok((stats, t0.elapsed()))
}

async fn start(dir: &Path) -> Result<Gateway> {
    let dir = dir.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        Gateway::start_with_args(&["--record-dir", &dir, "--record", "*"])
    })
    .await
    .context("gateway start panicked")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_stream_reads_back_with_its_frames_and_duration() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let gw = start(dir.path()).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let keyframes = media.keyframe_indices();
    let gop = keyframes.get(1).copied().unwrap_or(media.video().len());
    let (stats, published) = publish_for(&gw, "rec", media.clone(), 4).await?;

    let files = recorded_files(dir.path(), "rec");
    ensure!(files.len() == 1, "expected one file, found {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    ensure!(
        name.len() == "rec-yyyymmdd-hhmmss.mp4".len() && name.starts_with("rec-2"),
        "file name {name}"
    );
    let bytes = settled(&files[0]).await?;
    let p = parse(&bytes)?;
    ensure!(p.tracks.len() == 2, "tracks: {:?}", p.tracks);
    let video = p.track("vide")?;
    let audio = p.track("soun")?;
    ensure!(video.entry == "avc1" && audio.entry == "Opus");
    ensure!(video.timescale == 90_000 && audio.timescale == 48_000);

    let frames = video.samples.len() as i64;
    let sent = stats.video_frames_sent as i64;
    let (video_secs, audio_secs) = (video.secs(), audio.secs());
    println!(
        "recorded {} bytes in {} fragments: {frames} video samples (sent {sent}, GOP {gop}), \
         {} audio samples (sent {}), video {video_secs:.3} s, audio {audio_secs:.3} s, \
         published {:.3} s, first audio dts {:?}",
        bytes.len(),
        p.fragments,
        audio.samples.len(),
        stats.audio_packets_sent,
        published.as_secs_f64(),
        audio.first_dts,
    );
    ensure!(
        (frames - sent).abs() <= gop as i64,
        "video samples {frames} vs frames sent {sent}"
    );
    ensure!(
        video.samples[0].2,
        "the first video sample is not a sync sample"
    );
    ensure!(
        video.first_dts == Some(0),
        "video starts at {:?}",
        video.first_dts
    );
    ensure_lasts(&p, published.as_secs_f64())?;
    let syncs = video.samples.iter().filter(|s| s.2).count();
    ensure!(syncs >= 2, "only {syncs} sync samples in {frames}");
    ensure!(
        video.sps.as_deref() == fixture_sps(&media).as_deref(),
        "avcC SPS differs from the fixture's"
    );
    ensure!(
        p.trailing == 0,
        "{} bytes after the last fragment",
        p.trailing
    );
    ffprobe(&files[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_a_file_playable_to_its_last_fragment() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let gw = start(dir.path()).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("killed"))).await?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let status = std::process::Command::new("kill")
        .args(["-KILL", &gw.pid().to_string()])
        .status()?;
    ensure!(status.success(), "kill failed");
    drop(publisher);

    let files = recorded_files(dir.path(), "killed");
    ensure!(files.len() == 1, "expected one file, found {files:?}");
    let bytes = std::fs::read(&files[0])?;
    let p = parse(&bytes)?;
    let video = p.track("vide")?;
    let secs = video.secs();
    println!(
        "after SIGKILL: {} bytes, {} complete fragments, {} video samples ({secs:.3} s), {} trailing bytes",
        bytes.len(),
        p.fragments,
        video.samples.len(),
        p.trailing
    );
    ensure!(p.fragments >= 2, "only {} fragments", p.fragments);
    ensure!(secs >= 2.0, "only {secs:.3} s of video survived");
    ensure!(
        video.samples[0].2,
        "the first video sample is not a sync sample"
    );

    // A fragment cut in the middle (as a kill during a write would leave it) is ignored.
    let cut = &bytes[..bytes.len() - 10];
    let q = parse(cut)?;
    ensure!(q.fragments == p.fragments - 1 && q.trailing > 0);
    ffprobe(&files[0]);
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, cut)?;
    if let Ok(out) = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams"])
        .arg(&truncated)
        .output()
    {
        ensure!(
            out.status.success(),
            "ffprobe rejects a truncated recording"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_starts_and_stops_recording_and_files_rotate() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_string_lossy().into_owned();
    let gw = tokio::task::spawn_blocking(move || {
        Gateway::start_with_args(&["--record-dir", &d, "--record-segment-secs", "2"])
    })
    .await??;
    let http = whip_tests::signaling::http_client()?;
    let url = |s: &str| format!("{}/v1/streams/{s}/recording", gw.base_url());
    let r = http.post(url("nobody")).send().await?;
    ensure!(r.status() == 404, "unknown stream: {}", r.status());
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("api"))).await?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        recorded_files(dir.path(), "api").is_empty(),
        "recorded without being asked"
    );
    let r = http.post(url("api")).send().await?;
    ensure!(r.status() == 200, "start: {}", r.status());
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let r = http.delete(url("api")).send().await?;
    ensure!(r.status() == 200, "stop: {}", r.status());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let files = recorded_files(dir.path(), "api");
    let mut total = 0.0;
    for f in &files {
        let bytes = settled(f).await?;
        let p = parse(&bytes)?;
        let video = p.track("vide")?;
        ensure!(
            video.samples.first().is_some_and(|s| s.2),
            "{} starts without a sync sample",
            f.display()
        );
        let secs = video.secs();
        println!(
            "{}: {} video samples, {secs:.3} s",
            f.display(),
            video.samples.len()
        );
        total += secs;
        ffprobe(f);
    }
    ensure!(files.len() >= 2, "no rotation: {files:?}");
    ensure!((total - 5.5).abs() <= 1.1, "recorded {total:.3} s in all");
    // Stopped means stopped: nothing grows after the DELETE.
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    ensure!(sizes == again && recorded_files(dir.path(), "api").len() == files.len());
    publisher.stop().await?;
    Ok(())
}

/// Publishes `fixture` (H265 or AV1 + Opus) for 4 s and reads the recording back.
async fn record_and_read_back(fixture: &str, entry: &str, ffprobe_codec: &str) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let gw = start(dir.path()).await?;
    let media = Arc::new(MediaSource::fixture(fixture)?);
    let stream = fixture.trim_end_matches(".mp4");
    let (stats, published) = publish_for(&gw, stream, media.clone(), 4).await?;
    let published = published.as_secs_f64();

    let files = recorded_files(dir.path(), stream);
    ensure!(files.len() == 1, "expected one file, found {files:?}");
    let bytes = settled(&files[0]).await?;
    let p = parse(&bytes)?;
    let video = p.track("vide")?;
    let audio = p.track("soun")?;
    ensure!(video.entry == entry && audio.entry == "Opus", "{p:?}");
    ensure!(
        video.size == (320, 240),
        "sample entry size {:?}",
        video.size
    );
    let fixture_entries = sample_entries(&std::fs::read(fixture_path(fixture))?)?;
    let fixture_config = fixture_entries
        .values()
        .find_map(|e| e.video_config.clone())
        .context("fixture has no codec box")?;
    ensure!(
        video.config.as_ref() == Some(&fixture_config),
        "codec box differs from the fixture's: {:02x?} vs {fixture_config:02x?}",
        video.config
    );

    // Every recorded frame is a fixture frame, in order from some keyframe on: same size, and
    // sync exactly where the fixture has its keyframes.
    let expected = expected_samples(&media);
    let n = expected.len();
    let matches_from = |k: usize| {
        video
            .samples
            .iter()
            .enumerate()
            .all(|(i, s)| (s.1, s.2) == expected[(k + i) % n])
    };
    let first = (0..n)
        .find(|&k| expected[k].1 && matches_from(k))
        .with_context(|| {
            format!(
                "recorded (size, sync) {:?} are no run of the fixture's {expected:?}",
                video.samples.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>()
            )
        })?;
    let frames = video.samples.len();
    let sent = stats.video_frames_sent as usize;
    let syncs = video.samples.iter().filter(|s| s.2).count();
    let (video_secs, audio_secs) = (video.secs(), audio.secs());
    println!(
        "{fixture}: {} bytes, {} fragments, {frames} video samples from fixture frame {first} \
         (sent {sent}), {syncs} sync, {} audio samples, video {video_secs:.3} s, audio \
         {audio_secs:.3} s, published {published:.3} s",
        bytes.len(),
        p.fragments,
        audio.samples.len()
    );
    ensure!(
        frames + 30 >= sent && frames <= sent,
        "{frames} samples for {sent} frames sent"
    );
    ensure!(syncs >= 3, "only {syncs} sync samples");
    ensure!(
        video.samples.iter().all(|s| s.0 == 3000),
        "30 fps frames must last 3000 ticks"
    );
    ensure_lasts(&p, published)?;
    ensure!(
        p.trailing == 0,
        "{} bytes after the last fragment",
        p.trailing
    );

    let shown = ffprobe(&files[0]);
    if !shown.is_empty() {
        ensure!(
            probed(&shown, "video", "codec_name") == Some(ffprobe_codec),
            "{shown}"
        );
        ensure!(probed(&shown, "video", "width") == Some("320"), "{shown}");
        ensure!(probed(&shown, "video", "height") == Some("240"), "{shown}");
        let counted = probed(&shown, "video", "nb_read_packets");
        ensure!(
            counted == Some(frames.to_string().as_str()),
            "ffprobe counts {counted:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_records_as_hvc1_with_the_fixtures_frames() -> Result<()> {
    record_and_read_back("h265.mp4", "hvc1", "hevc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn av1_records_as_av01_with_the_fixtures_frames() -> Result<()> {
    record_and_read_back("av1.mp4", "av01", "av1").await
}
