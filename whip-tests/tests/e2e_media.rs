//! End-to-end media through the real gateway process: a str0m WHIP publisher sends a fixture
//! file, str0m WHEP players receive it and identify every frame by its slice data.
//!
//! What is being proven: viewers get every frame whole and in order from a keyframe, late
//! viewers start quickly even when the publisher (like OBS) ignores keyframe requests and its
//! GOP is 8 s long, and a viewer survives its publisher leaving and coming back.
//!
//! The gateway binary is built on first use (see `whip_tests::harness::gateway_binary`);
//! `GATEWAY_BIN` points at a prebuilt one. Its stderr is printed when a test fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer, WhipPublisher,
    http_status, play,
};

/// The tests are timing-sensitive and the machine may have two cores: under `cargo test` (one
/// process, many threads) they take turns; under nextest each has its own process anyway.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_gateway() -> Result<Gateway> {
    // Starting may run `cargo build`; keep that off the async workers.
    tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")?
}

fn print_report(label: &str, r: &PlayReport) {
    match serde_json::to_string(r) {
        Ok(json) => println!("{label}: {json}"),
        Err(e) => println!("{label}: unprintable report: {e}"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_viewers_get_every_frame_in_order() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();

    // WHEP before anyone publishes: the gateway says 409 (documented in INTEROP.md).
    let early = play(catalog.clone(), PlayOptions::new(gw.whep_url("three"))).await;
    let err = early
        .err()
        .context("WHEP before any publisher was accepted")?;
    assert_eq!(
        http_status(&err),
        Some(409),
        "WHEP before publisher: {err:#}"
    );

    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("three"))).await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;

    let mut viewers = Vec::new();
    for _ in 0..3 {
        let opts = PlayOptions {
            duration: Duration::from_secs(4),
            ..PlayOptions::new(gw.whep_url("three"))
        };
        viewers.push(tokio::spawn(play(catalog.clone(), opts)));
    }
    let mut reports = Vec::new();
    for v in viewers {
        reports.push(v.await.context("viewer panicked")??);
    }
    let sent = publisher.stop().await?;
    println!("publisher: {}", serde_json::to_string(&sent)?);

    for (i, r) in reports.iter().enumerate() {
        print_report(&format!("viewer {i}"), r);
        assert!(r.error.is_none(), "viewer {i} failed: {:?}", r.error);
        assert!(
            r.delete_error.is_none(),
            "viewer {i} DELETE: {:?}",
            r.delete_error
        );
        assert!(
            r.sequence.first_is_keyframe,
            "viewer {i} did not start at a keyframe: {r:?}"
        );
        assert!(
            r.whole_in_order,
            "viewer {i} did not get every frame whole and in order: {r:?}"
        );
        // 4 s at 30 fps, less the join: anything under 2 s of video means frames stopped.
        assert!(
            r.video_frames >= 60,
            "viewer {i} got only {} frames",
            r.video_frames
        );
        // 20 ms Opus packets: 4 s is 200; half of that proves audio flows.
        assert!(
            r.audio_packets >= 100,
            "viewer {i} got only {} audio packets",
            r.audio_packets
        );
        assert_eq!(
            r.audio_unknown, 0,
            "viewer {i} got audio that is not the fixture's"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_start_fast_despite_long_gop_and_deaf_publisher() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let media = Arc::new(MediaSource::fixture("long-gop.mp4")?);
    let catalog = media.catalog();
    let opts = PublishOptions {
        ignore_keyframe_requests: true,
        ..PublishOptions::new(gw.whip_url("longgop"))
    };
    let publisher = WhipPublisher::start(media.clone(), opts).await?;
    // 2 s in: the only keyframe so far is frame 0, the next one is 6 s away.
    publisher
        .wait_for_frames(60, Duration::from_secs(10))
        .await?;

    const JOINS: usize = 20;
    // Each join watches 1.5 s of video: enough to see whether what follows the cached keyframe
    // is the rest of the GOP in order (a decoder needs every frame since the keyframe).
    const WATCH_FRAMES: u64 = 45;
    let mut first_frame = Vec::with_capacity(JOINS);
    let mut first_key = Vec::with_capacity(JOINS);
    let mut failures = Vec::new();
    let began = Instant::now();
    for i in 0..JOINS {
        // Spread the joins over the GOP (frames 60..212 of 240) so the cached run they start
        // from grows from 2 s to 7 s of video.
        publisher
            .wait_for_frames(60 + 8 * i as u64, Duration::from_secs(10))
            .await?;
        let at_frame = publisher.stats().video_frames_sent;
        let opts = PlayOptions {
            duration: Duration::from_secs(10),
            stop_after_frames: Some(WATCH_FRAMES),
            ..PlayOptions::new(gw.whep_url("longgop"))
        };
        let r = play(catalog.clone(), opts).await?;
        print_report(&format!("join {i} at publisher frame {at_frame}"), &r);
        match (r.first_frame_ms, r.first_keyframe_ms) {
            (Some(f), Some(k)) => {
                first_frame.push(f);
                first_key.push(k);
                if k >= 2000.0 || !r.sequence.first_is_keyframe {
                    failures.push(format!(
                        "join {i}: first frame {f:.0} ms, first keyframe {k:.0} ms, started at \
                         fixture frame {:?} (keyframe: {})",
                        r.sequence.first_index, r.sequence.first_is_keyframe
                    ));
                } else if !r.whole_in_order || r.video_frames < WATCH_FRAMES {
                    failures.push(format!(
                        "join {i}: fast start but then {} frames, sequence {:?}",
                        r.video_frames, r.sequence
                    ));
                }
            }
            _ => failures.push(format!("join {i}: no keyframe within 10 s ({:?})", r.error)),
        }
    }
    let stats = publisher.stop().await?;
    println!("publisher: {}", serde_json::to_string(&stats)?);
    println!(
        "{JOINS} joins in {:.1} s, publisher at frame ~{}",
        began.elapsed().as_secs_f64(),
        stats.video_frames_sent
    );

    first_frame.sort_by(f64::total_cmp);
    first_key.sort_by(f64::total_cmp);
    println!(
        "POST -> first frame: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        percentile(&first_frame, 50.0),
        percentile(&first_frame, 95.0),
        first_frame.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "POST -> first keyframe: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        percentile(&first_key, 50.0),
        percentile(&first_key, 95.0),
        first_key.last().copied().unwrap_or(f64::NAN)
    );
    // The publisher ignored every PLI, so only the gateway's keyframe cache can explain a fast
    // start; without one a join waits for the next natural keyframe, up to 8 s.
    ensure!(
        failures.is_empty(),
        "slow or broken joins:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_survives_publisher_leaving_and_coming_back() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let whip = gw.whip_url("comeback");

    let first = WhipPublisher::start(media.clone(), PublishOptions::new(&whip)).await?;
    first.wait_for_frames(15, Duration::from_secs(10)).await?;

    let viewer = WhepPlayer::start(
        catalog.clone(),
        PlayOptions {
            duration: Duration::from_secs(30),
            ..PlayOptions::new(gw.whep_url("comeback"))
        },
    )
    .await?;
    wait_for_viewer_frames(&viewer, 30, Duration::from_secs(10)).await?;

    let gone = first.stop().await?;
    println!("first publisher: {}", serde_json::to_string(&gone)?);
    // Long enough for anything buffered to drain, short enough that a viewer would not give up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = viewer.report();
    print_report("viewer before republish", &before);

    let second = WhipPublisher::start(media.clone(), PublishOptions::new(&whip)).await?;
    second.wait_for_frames(15, Duration::from_secs(10)).await?;
    let resumed =
        wait_for_viewer_frames(&viewer, before.video_frames + 60, Duration::from_secs(8)).await;
    let after = viewer.stop().await?;
    let back = second.stop().await?;
    println!("second publisher: {}", serde_json::to_string(&back)?);
    print_report("viewer after republish", &after);

    resumed.context("the open viewer got no (or too few) frames after the republish")?;
    assert!(after.error.is_none(), "viewer failed: {:?}", after.error);
    assert!(
        before.sequence.is_perfect(),
        "before the republish: {:?}",
        before.sequence
    );
    assert_eq!(
        after.sequence.unknown, 0,
        "damaged frames: {:?}",
        after.sequence
    );
    assert_eq!(
        after.sequence.resumed_without_keyframe, 0,
        "after the republish the viewer got frames before a keyframe: {:?}",
        after.sequence
    );
    Ok(())
}

async fn wait_for_viewer_frames(viewer: &WhepPlayer, frames: u64, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        let r = viewer.report();
        if r.video_frames >= frames {
            return Ok(());
        }
        ensure!(r.error.is_none(), "viewer failed: {:?}", r.error);
        ensure!(
            Instant::now() < until,
            "viewer has {} of {frames} frames after {timeout:?}",
            r.video_frames
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
