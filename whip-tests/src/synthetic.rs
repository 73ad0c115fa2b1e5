//! A synthetic stream at a chosen bitrate, for load runs that need a bitrate no committed fixture
//! has: made once with Debian's ffmpeg and cached in the temp directory, so a run of `whip-load`
//! publishes (and its full viewers check) a real H264 + Opus MP4 like any other fixture.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// Video bitrates accepted (kbit/s): a sanity range for 720p30 (x264 cannot hold CBR far below it,
/// and far above it a file of six seconds would take minutes to encode on a small machine).
pub const KBPS_RANGE: std::ops::RangeInclusive<u32> = 100..=50_000;

/// The path of a 6 s, 720p30, keyframe-every-second H264 (baseline, CBR at `kbps`, no B-frames)
/// + Opus 64 kbit/s MP4 (ffmpeg's `testsrc2` pattern and a sine tone); generated on first use.
pub fn fixture(kbps: u32) -> Result<PathBuf> {
    ensure!(
        KBPS_RANGE.contains(&kbps),
        "synthetic bitrate {kbps} kbit/s is outside {KBPS_RANGE:?}"
    );
    let path = std::env::temp_dir().join(format!("whip-load-synthetic-{kbps}k.mp4"));
    if path.is_file() {
        return Ok(path);
    }
    // Written under another name first: a run killed half-way must not leave a broken cache.
    let partial = path.with_extension(format!("{}.part.mp4", std::process::id()));
    let rate = format!("{kbps}k");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=6",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=6",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "baseline",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
            "-g",
            "30",
            "-keyint_min",
            "30",
        ])
        .args(["-sc_threshold", "0"])
        .args([
            "-x264-params",
            "keyint=30:min-keyint=30:scenecut=0:slices=1:nal-hrd=cbr",
        ])
        .args([
            "-b:v", &rate, "-minrate", &rate, "-maxrate", &rate, "-bufsize", &rate,
        ])
        .args(["-c:a", "libopus", "-ac", "2", "-b:a", "64k", "-ar", "48000"])
        .args(["-map_metadata", "-1", "-movflags", "+faststart"])
        .arg(&partial)
        .stdin(Stdio::null())
        .status()
        .context("running ffmpeg (install Debian's ffmpeg for --synthetic-kbps)")?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("ffmpeg failed ({status}) making the synthetic stream");
    }
    std::fs::rename(&partial, &path).context("caching the synthetic stream")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_outside_the_range_are_refused_before_ffmpeg_runs() {
        assert!(fixture(10).is_err());
        assert!(fixture(1_000_000).is_err());
    }
}
