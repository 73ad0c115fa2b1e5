//! Loss on the last mile is repaired by the gateway: viewers drop every Nth media datagram they
//! receive and must still get every frame whole and in order — through str0m's RTX path for a
//! viewer that negotiated RTX, and through the gateway's own same-SSRC resend from its packet
//! cache for a viewer that did not (some hardware players).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhipPublisher, play,
};

async fn viewer(
    gw: &Gateway,
    catalog: Arc<whip_tests::FrameCatalog>,
    no_rtx: bool,
) -> Result<PlayReport> {
    let opts = PlayOptions {
        duration: Duration::from_secs(4),
        // Repair must come from NACKs alone, not from a fresh keyframe.
        request_keyframes: false,
        no_rtx,
        drop_every: Some(12),
        ..PlayOptions::new(gw.whep_url("lossy"))
    };
    play(catalog, opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_resent_with_and_without_rtx() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("start panicked")??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("lossy"))).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;

    let (with_rtx, without_rtx) = tokio::join!(
        viewer(&gw, catalog.clone(), false),
        viewer(&gw, catalog.clone(), true)
    );
    let (with_rtx, without_rtx) = (with_rtx?, without_rtx?);
    let stats = gw.stats().await?;
    println!("with RTX: {}", serde_json::to_string(&with_rtx)?);
    println!("without RTX: {}", serde_json::to_string(&without_rtx)?);
    println!("gateway: {stats}");

    for (label, r) in [("with RTX", &with_rtx), ("without RTX", &without_rtx)] {
        ensure!(r.error.is_none(), "{label}: {:?}", r.error);
        ensure!(
            r.video_frames >= 60,
            "{label}: only {} frames in 4 s",
            r.video_frames
        );
        ensure!(
            r.whole_in_order && r.sequence.missing == 0 && r.sequence.undecodable == 0,
            "{label}: frames lost despite repair: {:?}",
            r.sequence
        );
    }
    let answered = stats["nacks_answered"].as_u64().unwrap_or(0);
    ensure!(
        answered > 0,
        "the gateway answered no NACK on the media SSRC: {stats}"
    );
    ensure!(
        stats["nacks_missed"].as_u64().unwrap_or(0) <= answered / 10,
        "most NACKs should find their packet in the cache: {stats}"
    );
    // The RTX viewer's NACKs are answered by str0m; they must still show in the stats.
    let rtx_nacks = stats["nacks_rtx"].as_u64().unwrap_or(0);
    ensure!(
        rtx_nacks > 0 && with_rtx.nacks_sent > 0,
        "NACKs of the viewer with RTX are not counted (it sent {}): {stats}",
        with_rtx.nacks_sent
    );
    publisher.stop().await?;
    Ok(())
}
