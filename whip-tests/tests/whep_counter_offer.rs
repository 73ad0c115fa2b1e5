//! The WHEP draft's counter-offer, end to end: a player whose offer cannot be served as is (none
//! of the stream's video codecs: it offers VP8 for an H264 stream) gets **406** with an SDP offer
//! of ours (`Location`, `ETag`), answers it with `PATCH` `application/sdp` (204), connects and
//! receives the stream's H264 frames, and keeps receiving them when the publisher is replaced.
//! `PATCH` `application/sdp` elsewhere is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Event, Rtc};
use tokio::sync::watch;
use whip_tests::rtc_loop::{RtcLoop, Woke};
use whip_tests::signaling::http_client;
use whip_tests::{Gateway, MediaSource, PublishOptions, WhipPublisher};

/// A player's offer with VP8 as its only video codec.
fn vp8_only_offer() -> Result<String> {
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(([127, 0, 0, 1], 9).into(), "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().context("no offer")?;
    Ok(offer.to_sdp_string())
}

/// Drives the player until it has `n` H264 frames or 10 s have passed; the frames it got.
async fn h264_frames(lp: &mut RtcLoop, n: usize) -> Result<usize> {
    let (_stop_tx, mut stop) = watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frames = 0;
    let mut events = Vec::new();
    while frames < n && Instant::now() < deadline {
        lp.drain(&mut events).await?;
        for e in events.drain(..) {
            if let Event::MediaData(d) = e
                && d.params.spec().codec == Codec::H264
            {
                frames += 1;
            }
        }
        if lp.wait(Some(deadline), &mut stop).await? == Woke::Stop {
            break;
        }
    }
    Ok(frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_without_the_streams_codec_gets_a_counter_offer_and_plays() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("co"))).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let c = http_client()?;

    let r = c
        .post(gw.whep_url("co"))
        .header("content-type", "application/sdp")
        .body(vp8_only_offer()?)
        .send()
        .await?;
    ensure!(r.status() == 406, "VP8-only WHEP offer: {}", r.status());
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/sdp"));
    let location = header("location").context("406 without Location")?;
    let etag = header("etag").context("406 without ETag")?;
    let offer = r.text().await?;
    assert!(
        offer.contains("H264/90000"),
        "counter-offer without H264:\n{offer}"
    );
    assert!(
        offer.contains("a=sendonly"),
        "counter-offer does not send:\n{offer}"
    );

    // A player that can take H264 answers our offer.
    let rtc = Rtc::builder().build(Instant::now());
    let mut lp = RtcLoop::bind(rtc, ([127, 0, 0, 1], 0).into()).await?;
    let answer = lp
        .rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer)?)
        .context("str0m refused our counter-offer")?;
    let resource = format!("{}{location}", gw.base_url());
    let r = c
        .patch(&resource)
        .header("content-type", "application/sdp")
        .header("if-match", &etag)
        .body(answer.to_sdp_string())
        .send()
        .await?;
    ensure!(
        r.status() == 204,
        "PATCH answer: {} {}",
        r.status(),
        r.text().await?
    );
    let r = c
        .patch(&resource)
        .header("content-type", "application/sdp")
        .body(answer.to_sdp_string())
        .send()
        .await?;
    ensure!(r.status() == 409, "a second answer: {}", r.status());

    // It plays: H264 frames arrive.
    let frames = h264_frames(&mut lp, 20).await?;
    ensure!(
        frames >= 20,
        "only {frames} H264 frames after the counter-offer"
    );

    // The publisher reconnects (a new WHIP session replaces it): this viewer follows the stream
    // like one that made the offer itself.
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let second = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("co"))).await?;
    second.wait_for_frames(5, Duration::from_secs(10)).await?;
    let after = h264_frames(&mut lp, 20).await?;
    ensure!(
        after >= 20,
        "only {after} frames after the publisher was replaced"
    );

    // application/sdp is no PATCH for a WHIP session.
    let r = c
        .patch(second.resource_url().as_str())
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await?;
    ensure!(
        r.status() == 415,
        "PATCH application/sdp on WHIP: {}",
        r.status()
    );

    ensure!(c.delete(&resource).send().await?.status() == 200, "DELETE");
    second.stop().await?;
    drop(publisher);
    Ok(())
}
