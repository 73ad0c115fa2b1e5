//! H264 encoder quirks the gateway must notice and, where it can, repair:
//!
//! - SPS/PPS only at the start of the stream (x264 `repeat-headers=0`): a viewer joining at a
//!   later keyframe would have nothing to decode it with. The gateway keeps the parameter sets it
//!   saw and sends them (one STAP-A) ahead of the keyframe the viewer starts at, from the keyframe
//!   cache or live.
//! - B-frames (VideoToolbox by default): counted and warned about.
//!
//! Each quirk is counted in `/v1/stats` and warned about exactly once per track in the log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use whip_tests::annexb::{NAL_IDR, NAL_PPS, NAL_SPS, annexb_nals, nal_type};
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, SourceOptions, WhipPublisher,
    play,
};

const MISSING_WARNING: &str = "arrived without SPS/PPS";
const B_FRAMES_WARNING: &str = "the publisher sends B-frames";

fn nal_types(frame: &[u8]) -> Vec<u8> {
    annexb_nals(frame).filter_map(nal_type).collect()
}

/// SPS and PPS come before the first IDR slice of the frame.
fn decodable_start(types: &[u8]) -> bool {
    let idr = types.iter().position(|&t| t == NAL_IDR);
    let sps = types.iter().position(|&t| t == NAL_SPS);
    let pps = types.iter().position(|&t| t == NAL_PPS);
    matches!((sps, pps, idr), (Some(s), Some(p), Some(i)) if s < i && p < i)
}

fn warnings(gw: &Gateway, needle: &str) -> Result<usize> {
    let log = std::fs::read_to_string(gw.log_path())
        .with_context(|| format!("reading {}", gw.log_path().display()))?;
    Ok(log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(needle))
        .count())
}

fn check_late_viewer(report: &PlayReport, what: &str) -> Result<()> {
    println!("{what}: {}", serde_json::to_string(report)?);
    ensure!(
        report.video_frames > 10,
        "{what}: only {} frames",
        report.video_frames
    );
    ensure!(
        report.first_keyframe_ms.is_some() && report.first_keyframe_ms == report.first_frame_ms,
        "{what}: the first frame is not a keyframe: {report:?}"
    );
    ensure!(
        decodable_start(&report.first_frame_nal_types),
        "{what}: the first frame lacks SPS/PPS before its IDR: NAL types {:?}",
        report.first_frame_nal_types
    );
    ensure!(
        report.sequence.undecodable == 0,
        "{what}: undecodable frames: {:?}",
        report.sequence
    );
    Ok(())
}

/// Parameter sets only on the file's first keyframe: viewers joining later (from the keyframe
/// cache, and — with the cache too small to hold a GOP — live at the next keyframe) still get
/// SPS and PPS ahead of their first IDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_sets_only_at_start_are_resent_to_late_viewers() -> Result<()> {
    let media = Arc::new(MediaSource::fixture_with(
        "short-gop.mp4",
        SourceOptions {
            parameter_sets_on_every_keyframe: false,
            ..SourceOptions::default()
        },
    )?);
    // The fixture is what the test thinks it is.
    let keyframes = media.keyframe_indices();
    ensure!(keyframes.len() >= 3, "keyframes {keyframes:?}");
    ensure!(decodable_start(&nal_types(&media.video()[0].data)));
    for &k in &keyframes[1..] {
        let types = nal_types(&media.video()[k].data);
        ensure!(
            !types.contains(&NAL_SPS) && !types.contains(&NAL_PPS),
            "frame {k}: {types:?}"
        );
    }

    // Two gateways: the default keyframe cache (a late viewer starts from the cached run), and one
    // too small for a GOP (a late viewer waits for the next keyframe and starts live).
    for (what, toml) in [
        ("viewer from the keyframe cache", ""),
        ("viewer starting live", "keyframe_cache_bytes = 2000\n"),
    ] {
        let toml = toml.to_owned();
        let gw = tokio::task::spawn_blocking(move || {
            if toml.is_empty() {
                Gateway::start()
            } else {
                Gateway::start_with_config(&toml, &[])
            }
        })
        .await
        .context("start panicked")??;
        let publisher =
            WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("quirk"))).await?;
        // Past the second keyframe (frame 30), which has no parameter sets.
        publisher
            .wait_for_frames(45, Duration::from_secs(10))
            .await?;

        let mut reports = Vec::new();
        for _ in 0..2 {
            reports.push(
                play(
                    media.catalog(),
                    PlayOptions {
                        duration: Duration::from_secs(3),
                        ..PlayOptions::new(gw.whep_url("quirk"))
                    },
                )
                .await?,
            );
        }
        for r in &reports {
            check_late_viewer(r, what)?;
        }

        let stats = gw.stats().await?;
        println!("{what}: gateway {stats}");
        ensure!(
            stats["h264_idr_without_parameter_sets"]
                .as_u64()
                .unwrap_or(0)
                >= 2,
            "{what}: IDRs without parameter sets not counted: {stats}"
        );
        ensure!(
            stats["h264_bframes"].as_u64() == Some(0),
            "{what}: B-frames in a baseline stream: {stats}"
        );
        ensure!(
            warnings(&gw, MISSING_WARNING)? == 1,
            "{what}: want exactly one warning, log:\n{}",
            gw.log_tail(4000)
        );
        ensure!(warnings(&gw, B_FRAMES_WARNING)? == 0);
        publisher.stop().await?;
    }
    Ok(())
}

/// A well-behaved stream (parameter sets on every keyframe) raises no quirk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_stream_has_no_quirks() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("start panicked")??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("clean"))).await?;
    publisher
        .wait_for_frames(75, Duration::from_secs(10))
        .await?;
    let report = play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(2),
            ..PlayOptions::new(gw.whep_url("clean"))
        },
    )
    .await?;
    check_late_viewer(&report, "clean viewer")?;
    let stats = gw.stats().await?;
    ensure!(
        stats["h264_idr_without_parameter_sets"].as_u64() == Some(0),
        "{stats}"
    );
    ensure!(stats["h264_bframes"].as_u64() == Some(0), "{stats}");
    ensure!(warnings(&gw, MISSING_WARNING)? + warnings(&gw, B_FRAMES_WARNING)? == 0);
    publisher.stop().await?;
    Ok(())
}

/// B-frames (main profile, two between references) are counted and warned about once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_are_counted_and_warned_once() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("start panicked")??;
    let media = Arc::new(MediaSource::fixture_with(
        "b-frames.mp4",
        SourceOptions {
            allow_b_frames: true,
            ..SourceOptions::default()
        },
    )?);
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("vt"))).await?;
    publisher
        .wait_for_frames(60, Duration::from_secs(10))
        .await?;
    // Give the gateway's counters a moment to see the last frames.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = gw.stats().await?;
    println!("gateway {stats}");
    let b = stats["h264_bframes"].as_u64().unwrap_or(0);
    // 2 of every 3 frames are B: at least a third of 60 even allowing for the frames in flight.
    ensure!(b >= 20, "B-frames not counted: {stats}");
    ensure!(
        stats["h264_idr_without_parameter_sets"].as_u64() == Some(0),
        "{stats}"
    );
    ensure!(
        warnings(&gw, B_FRAMES_WARNING)? == 1,
        "want exactly one B-frame warning, log:\n{}",
        gw.log_tail(4000)
    );
    ensure!(warnings(&gw, MISSING_WARNING)? == 0);
    publisher.stop().await?;
    Ok(())
}
