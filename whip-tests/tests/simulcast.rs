//! Simulcast through the real gateway: a str0m publisher sends three layers (rids) on its video
//! m-line; layer k carries every 2^k-th frame of the fixture (plus every keyframe), so a viewer
//! can tell by the frame indices it receives which layer it is on.
//!
//! - every layer is received and cached (`/v1/streams` per-track figures);
//! - a WHEP viewer starts on the top layer (every frame, whole and in order);
//! - pinning the lowest layer with the WHEP layer extension switches at a keyframe: from then on
//!   only every 4th frame (or a keyframe), sequence numbers contiguous, no unknown frames;
//! - `simulcast.preferredRid` in the session/track API pulls that layer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use whip_tests::signaling::{ApiTrack, http_client};
use whip_tests::{
    FrameCatalog, Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer,
    WhipPublisher,
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const APP: &str = "simulcast-app";
const SECRET: &str = "simulcast-secret";

async fn start_gateway() -> Result<Gateway> {
    tokio::task::spawn_blocking(|| Gateway::start_with_args(&["--app", &format!("{APP}:{SECRET}")]))
        .await
        .context("gateway start panicked")?
}

fn rids(r: &[&str]) -> Option<Vec<String>> {
    Some(r.iter().map(|s| s.to_string()).collect())
}

async fn publish(gw: &Gateway, stream: &str, layers: &[&str]) -> Result<WhipPublisher> {
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let opts = PublishOptions {
        simulcast: rids(layers),
        ..PublishOptions::new(gw.whip_url(stream))
    };
    let p = WhipPublisher::start(media, opts).await?;
    p.wait_for_frames(30, Duration::from_secs(10)).await?;
    Ok(p)
}

fn catalog() -> Result<Arc<FrameCatalog>> {
    Ok(MediaSource::fixture("short-gop.mp4")?.catalog())
}

/// Frame-index step between consecutive received frames (mod the file length).
fn steps(r: &PlayReport, len: usize) -> Vec<usize> {
    r.frame_indices
        .windows(2)
        .filter_map(|w| Some((w[1]? + len - w[0]?) % len))
        .collect()
}

/// Whether a frame belongs to the layer that carries every `every`-th frame.
fn on_layer(i: usize, every: usize, c: &FrameCatalog) -> bool {
    i.is_multiple_of(every) || c.is_keyframe(i)
}

async fn streams(gw: &Gateway) -> Result<Value> {
    let resp = http_client()?
        .get(format!("{}/v1/streams", gw.base_url()))
        .send()
        .await?;
    Ok(serde_json::from_str(&resp.text().await?)?)
}

/// POST `<session>/layer` with a JSON body; the status.
async fn select_layer(resource: &str, body: &str) -> Result<u16> {
    let resp = http_client()?
        .post(format!("{resource}/layer"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_is_received_and_cached() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let publisher = publish(&gw, "sc-all", &["0", "1", "2"]).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = streams(&gw).await?;
    println!("streams: {v}");
    let s = v["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "sc-all"))
        .context("stream not listed")?;
    let tracks = s["track_stats"].as_array().context("no track_stats")?;
    let layer = |name: &str| tracks.iter().find(|t| t["name"] == name).cloned();
    let mut rates = Vec::new();
    for (name, rid) in [("video", "0"), ("video.1", "1"), ("video.2", "2")] {
        let t = layer(name).with_context(|| format!("no track {name}: {v}"))?;
        ensure!(t["rid"] == rid, "{name}: rid {}", t["rid"]);
        ensure!(
            t["packets"].as_u64() > Some(20),
            "{name} received no packets: {t}"
        );
        ensure!(
            t["keyframes"].as_u64() >= Some(1),
            "{name} has no keyframe cached: {t}"
        );
        rates.push(t["bitrate_bps"].as_u64().unwrap_or(0));
    }
    println!("FIGURE: layer bitrates (bps) 0/1/2 = {rates:?}");
    ensure!(
        rates[0] > rates[1] && rates[1] > rates[2] && rates[2] > 0,
        "layer bitrates should fall from rid 0 to rid 2: {rates:?}"
    );
    publisher.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_starts_on_top_and_pinning_switches_at_a_keyframe() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let publisher = publish(&gw, "sc-pin", &["h", "m", "l"]).await?;
    let catalog = catalog()?;
    let len = catalog.video_len();

    // (2) A new viewer starts on the top layer: every frame, whole and in order.
    let opts = PlayOptions {
        duration: Duration::from_secs(9),
        ..PlayOptions::new(gw.whep_url("sc-pin"))
    };
    let player = WhepPlayer::start(catalog.clone(), opts).await?;
    let resource = player.resource_url().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = player.report();
    ensure!(
        before.whole_in_order && before.video_frames >= 45,
        "top layer: not every frame whole and in order: {:?}",
        before.sequence
    );
    ensure!(
        steps(&before, len).iter().all(|s| *s == 1),
        "top layer should carry every frame"
    );

    // Bad input is refused.
    ensure!(select_layer(&resource, "{").await? == 400, "bad JSON");
    ensure!(
        select_layer(&resource, r#"{"encodingId":"x"}"#).await? == 422,
        "unknown rid"
    );
    ensure!(
        select_layer(&resource, r#"{"mediaId":"99","encodingId":"l"}"#).await? == 422,
        "unknown mid"
    );
    let unknown = resource
        .rsplit_once('/')
        .map(|(a, _)| a)
        .unwrap_or_default();
    ensure!(
        select_layer(
            &format!("{unknown}/00000000000000000000000000000000"),
            r#"{"encodingId":"l"}"#
        )
        .await?
            == 404,
        "unknown session"
    );

    // (3) Pin the lowest layer (WHEP layer extension).
    let n_before = player.report().frame_indices.len();
    let status = select_layer(&resource, r#"{"encodingId":"l"}"#).await?;
    ensure!(
        status == 204 || status == 200,
        "layer selection: HTTP {status}"
    );
    let r = player.finish().await?;
    let stats = gw.stats().await?;
    println!("stats: {stats}");
    ensure!(r.error.is_none(), "viewer failed: {:?}", r.error);
    let idx: Vec<usize> = r
        .frame_indices
        .iter()
        .map(|i| i.unwrap_or(usize::MAX))
        .collect();
    ensure!(
        !idx.contains(&usize::MAX),
        "unrecognised (damaged) frames: {:?}",
        r.sequence
    );
    ensure!(
        r.non_contiguous == 0,
        "sequence numbers not contiguous: {}",
        r.non_contiguous
    );
    // The switch: the first frame after which everything is on the lowest layer; it must be a
    // keyframe, and everything before it came every frame.
    let switch = (n_before..idx.len())
        .find(|&k| {
            idx[k..].iter().all(|&i| on_layer(i, 4, &catalog)) && catalog.is_keyframe(idx[k])
        })
        .with_context(|| {
            format!(
                "no switch to the lowest layer at a keyframe: {:?}",
                &idx[n_before..]
            )
        })?;
    let st = steps(&r, len);
    ensure!(
        st[..switch - 1].iter().all(|s| *s == 1),
        "before the switch every frame: {:?}",
        &st[..switch - 1]
    );
    ensure!(
        st.iter().all(|s| (1..=4).contains(s)),
        "frames out of order, duplicated or skipped beyond the layer cadence: {st:?}"
    );
    let after = &st[switch..];
    let fours = after.iter().filter(|s| **s == 4).count();
    println!(
        "FIGURE: {} frames received before the request, switch at frame {} (a keyframe; {} top-layer frames after the request), {} frames on the low layer, cadence-4 steps {}",
        n_before,
        switch,
        switch - n_before,
        after.len() + 1,
        fours
    );
    println!(
        "around the switch: {:?}; keyframes in the file: {:?}",
        &idx[switch.saturating_sub(5)..(switch + 5).min(idx.len())],
        (0..len)
            .filter(|i| catalog.is_keyframe(*i))
            .collect::<Vec<_>>()
    );
    ensure!(
        after.len() >= 10 && fours * 2 >= after.len(),
        "cadence did not drop to every 4th frame: {after:?}"
    );
    ensure!(
        stats["layer_switches"].as_u64() >= Some(1),
        "no switch counted"
    );
    publisher.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_rid_in_the_api_pulls_that_layer() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let publisher = publish(&gw, "sc-api", &["h", "m", "l"]).await?;
    let session = publisher.session_id().context("publisher session id")?;
    let catalog = catalog()?;
    let len = catalog.video_len();
    let opts = PlayOptions {
        duration: Duration::from_secs(4),
        token: Some(SECRET.into()),
        api_track: Some(ApiTrack {
            session_id: session,
            track_name: "video".into(),
            preferred_rid: Some("m".into()),
        }),
        ..PlayOptions::new(format!("{}/v1/apps/{APP}", gw.base_url()))
    };
    let r = whip_tests::play(catalog.clone(), opts).await?;
    ensure!(r.error.is_none(), "viewer failed: {:?}", r.error);
    ensure!(r.video_frames >= 30, "only {} frames", r.video_frames);
    ensure!(
        r.sequence.first_is_keyframe && r.sequence.unknown == 0,
        "{:?}",
        r.sequence
    );
    ensure!(r.non_contiguous == 0, "sequence numbers not contiguous");
    let idx: Vec<usize> = r.frame_indices.iter().flatten().copied().collect();
    ensure!(
        idx.iter().all(|&i| on_layer(i, 2, &catalog)),
        "frames not of the middle layer: {idx:?}"
    );
    let st = steps(&r, len);
    ensure!(
        st.iter().all(|s| (1..=2).contains(s))
            && st.iter().filter(|s| **s == 2).count() * 2 >= st.len(),
        "cadence should be every 2nd frame: {st:?}"
    );
    // A rid the track does not have is a per-track error.
    publisher.stop().await?;
    Ok(())
}

/// Exploratory: heavy last-mile loss makes str0m's loss-based estimate fall, and the viewer's
/// automatic choice moves to a lower layer (at a keyframe). Prints what happened.
///
/// Ignored in CI: whether str0m's loss-based estimate falls far enough within 10 s depends on
/// timing on a busy machine (it failed 1 run in 3 there). The choice itself is unit-tested
/// (`pick_layer` in gateway/src); run this by hand with `-- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing-dependent on a shared machine; run with --ignored"]
async fn loss_lowers_the_estimate_and_the_layer() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let publisher = publish(&gw, "sc-auto", &["h", "m", "l"]).await?;
    let catalog = catalog()?;
    let len = catalog.video_len();
    let opts = PlayOptions {
        duration: Duration::from_secs(10),
        drop_every: Some(4),
        ..PlayOptions::new(gw.whep_url("sc-auto"))
    };
    let r = whip_tests::play(catalog.clone(), opts).await?;
    let stats = gw.stats().await?;
    let st = steps(&r, len);
    println!(
        "FIGURE: auto: frames {}, layer_switches {}, last steps {:?}",
        r.video_frames,
        stats["layer_switches"],
        &st[st.len().saturating_sub(20)..]
    );
    ensure!(
        stats["layer_switches"].as_u64() >= Some(1),
        "no automatic switch under 25 % loss"
    );
    publisher.stop().await?;
    Ok(())
}
