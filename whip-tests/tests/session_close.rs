//! Issue 10: clients learn at once when the gateway ends their session — it closes the
//! PeerConnection (RTCP BYE, DTLS close_notify) instead of going silent, which a client would
//! notice only by a consent-freshness timeout (~30 s in str0m, browsers similar). Covered: a
//! publisher replaced by a new one on the same stream, and every client when the gateway gets
//! SIGTERM (which must also exit promptly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use whip_tests::{Gateway, MediaSource, PublishOptions, WhipPublisher};

async fn ended_within(p: &WhipPublisher, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if p.is_finished() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_publishers_and_clients_at_shutdown_see_the_close() -> Result<()> {
    let mut gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let first = WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("s"))).await?;
    first.wait_for_frames(10, Duration::from_secs(10)).await?;

    // A new publisher on the same stream replaces the first (OBS reconnecting): the first is
    // told, not left to time out.
    let second = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("s"))).await?;
    let replaced = ended_within(&first, Duration::from_secs(2)).await;
    println!("replaced publisher ended after {replaced:?}");
    ensure!(
        replaced.is_some(),
        "the replaced publisher did not learn its session ended within 2 s"
    );
    second.wait_for_frames(10, Duration::from_secs(10)).await?;

    // SIGTERM: the connected publisher is told, and the gateway exits.
    let pid = gw.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("kill")?;
    ensure!(status.success(), "kill -TERM {pid}");
    let told = ended_within(&second, Duration::from_secs(2)).await;
    println!("publisher at shutdown ended after {told:?}");
    ensure!(
        told.is_some(),
        "the publisher did not learn of the shutdown within 2 s"
    );
    let t0 = Instant::now();
    while gw.is_running() {
        ensure!(
            t0.elapsed() < Duration::from_secs(8),
            "the gateway did not exit within 8 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "gateway exited {:?} after the publisher was told",
        t0.elapsed()
    );
    Ok(())
}
