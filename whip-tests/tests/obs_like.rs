//! A publisher shaped like OBS 30.2+: no candidates in its offer (the ICE-lite gateway learns its
//! address peer-reflexively from the first connectivity check), H264 without RTX, and it never
//! answers keyframe requests. Viewers must still get every frame whole and in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use whip_tests::{Gateway, MediaSource, PlayOptions, PublishOptions, WhipPublisher, play};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_without_candidates_reaches_viewers() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("start panicked")??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let opts = PublishOptions {
        strip_candidates: true,
        ..PublishOptions::new(gw.whip_url("obs"))
    };
    let publisher = WhipPublisher::start(media.clone(), opts).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    ensure!(
        publisher.stats().connect_ms.is_some(),
        "publisher never connected: {:?}",
        publisher.stats()
    );

    let report = play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(3),
            ..PlayOptions::new(gw.whep_url("obs"))
        },
    )
    .await?;
    println!("viewer: {}", serde_json::to_string(&report)?);
    ensure!(
        report.video_frames >= 45,
        "only {} frames",
        report.video_frames
    );
    ensure!(report.whole_in_order, "frames lost: {:?}", report.sequence);
    ensure!(
        report.audio_packets > 50,
        "audio missing: {}",
        report.audio_packets
    );
    publisher.stop().await?;
    Ok(())
}
