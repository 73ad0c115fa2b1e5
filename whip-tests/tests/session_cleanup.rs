//! Session cleanup in the real gateway process: whatever clients do — leave properly with DELETE,
//! or vanish before or after connecting — the gateway ends up with no sessions, tracks or streams,
//! and without more file descriptors or threads than it started with.
//!
//! Real connections use whip_tests' str0m publisher (`WhipPublisher`, fixture `short-gop.mp4`)
//! and player (`WhepPlayer`); "signalling only" sessions are str0m offers that never connect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::Client;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use whip_tests::signaling::http_client;
use whip_tests::{Gateway, MediaSource, PlayOptions, PublishOptions, WhepPlayer, WhipPublisher};

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn start(toml: Option<&'static str>) -> Result<Gateway> {
    // Starting may run `cargo build`; keep that off the async workers.
    tokio::task::spawn_blocking(move || match toml {
        Some(t) => Gateway::start_with_config(t, &[]),
        None => Gateway::start(),
    })
    .await
    .context("gateway start panicked")?
}

/// A str0m offer that will never connect (its candidate is the discard port).
fn offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let cand =
        Candidate::host("127.0.0.1:9".parse().expect("addr"), "udp").expect("host candidate");
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _pending) = api.apply().expect("str0m made an offer");
    offer.to_sdp_string()
}

/// POSTs an offer, insists on 201, returns the absolute session URL.
async fn post(c: &Client, gw: &Gateway, url: &str, sdp: &str) -> Result<String> {
    let r = c
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await?;
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.text().await.unwrap_or_default();
    ensure!(status == 201, "POST {url}: {status} {body}");
    let loc = loc.context("201 without Location")?;
    Ok(format!("{}{loc}", gw.base_url()))
}

async fn delete(c: &Client, url: &str) -> Result<u16> {
    Ok(c.delete(url).send().await?.status().as_u16())
}

async fn stats(gw: &Gateway) -> Result<Value> {
    gw.stats().await
}

fn counts(v: &Value) -> (u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    (n("sessions"), n("tracks"), n("streams"))
}

/// One publisher (audio + video) and one viewer. `tracks` counts every worker's track states:
/// 2 when the viewer shares the publisher's worker, 4 when its worker holds a mirror of both.
fn playing_counts(v: &Value) -> bool {
    let (sessions, tracks, streams) = counts(v);
    sessions == 2 && (tracks == 2 || tracks == 4) && streams == 1
}

/// Polls `/v1/stats` until sessions, tracks and streams are all zero; returns the time it took.
async fn wait_empty(gw: &Gateway, within: Duration) -> Result<(Duration, Value)> {
    let t0 = Instant::now();
    loop {
        let v = stats(gw).await?;
        let workers_idle = v["worker_sessions"]
            .as_array()
            .is_some_and(|w| w.iter().all(|n| n.as_u64() == Some(0)));
        if counts(&v) == (0, 0, 0) && workers_idle {
            return Ok((t0.elapsed(), v));
        }
        if t0.elapsed() > within {
            bail!("sessions/tracks/streams not all 0 within {within:?}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (open file descriptors, threads) of a process.
fn resources(pid: u32) -> Result<(usize, usize)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads: in status")?;
    Ok((fds, threads))
}

/// (fds, threads) once the process has settled: the smallest counts seen over at least 1 s of
/// samples (connections the clients just closed linger for a moment and are not leaks), sampling
/// for up to 10 s until both are within ±2 of `base`. A real leak stays in every sample.
async fn settled_resources(pid: u32, base: (usize, usize)) -> Result<(usize, usize)> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut best = (usize::MAX, usize::MAX);
    let mut samples = 0;
    loop {
        let (f, t) = resources(pid)?;
        best = (best.0.min(f), best.1.min(t));
        samples += 1;
        let close = best.0.abs_diff(base.0) <= 2 && best.1.abs_diff(base.1) <= 2;
        if (samples >= 10 && close) || Instant::now() > until {
            return Ok(best);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------

/// (a) + (c): 20 signalling-only cycles and 20 cycles with a real publisher and player, each
/// ended with DELETE; afterwards no session, track or stream is left, and the process has the
/// same number of file descriptors and threads (±2) as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cycles_leave_nothing_behind() -> Result<()> {
    const N: usize = 20;
    let began = Instant::now();
    let mut gw = start(None).await?;
    let pid = gw.pid();
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let c = http_client()?;

    // Baseline once the HTTP side has served a request (the listener is already accepting).
    stats(&gw).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fds0, threads0) = resources(pid)?;
    println!("gateway pid {pid}: {fds0} fds, {threads0} threads before");

    // --- Signalling only: WHIP + WHEP POST, DELETE both, in alternating order.
    for i in 0..N {
        let stream = format!("sig{i}");
        let p = post(&c, &gw, &gw.whip_url(&stream), &offer(Direction::SendOnly)).await?;
        let v = post(&c, &gw, &gw.whep_url(&stream), &offer(Direction::RecvOnly)).await?;
        let s = stats(&gw).await?;
        assert_eq!(counts(&s).0, 2, "cycle {i}: sessions while both exist: {s}");
        let order = if i % 2 == 0 { [&v, &p] } else { [&p, &v] };
        for url in order {
            assert_eq!(delete(&c, url).await?, 200, "cycle {i}: DELETE {url}");
        }
        for url in [&p, &v] {
            assert_eq!(
                delete(&c, url).await?,
                404,
                "cycle {i}: second DELETE {url}"
            );
        }
    }
    let (t, s) = wait_empty(&gw, Duration::from_secs(5)).await?;
    println!("signalling cycles: empty {t:?} after the last DELETE: {s}");

    // --- Real connections: publisher sends media, player receives it, both DELETE.
    let real_start = Instant::now();
    let packets_out_before = stats(&gw).await?["packets_out"].as_u64().unwrap_or(0);
    for i in 0..N {
        let stream = format!("real{i}");
        let publisher =
            WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url(&stream))).await?;
        publisher
            .wait_for_frames(1, Duration::from_secs(10))
            .await
            .with_context(|| format!("cycle {i}: publisher did not connect"))?;
        let opts = PlayOptions {
            duration: Duration::from_secs(30),
            ..PlayOptions::new(gw.whep_url(&stream))
        };
        let player = WhepPlayer::start(catalog.clone(), opts).await?;
        let until = Instant::now() + Duration::from_secs(10);
        while player.report().video_frames == 0 {
            ensure!(
                Instant::now() < until,
                "cycle {i}: player got no video within 10 s: {:?}",
                player.report()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = stats(&gw).await?;
        assert!(
            playing_counts(&s),
            "cycle {i}: sessions/tracks/streams while playing: {s}"
        );
        if i % 2 == 0 {
            let r = player.stop().await?;
            assert!(
                r.error.is_none() && r.delete_error.is_none(),
                "cycle {i}: player: {r:?}"
            );
            publisher
                .stop()
                .await
                .with_context(|| format!("cycle {i}: publisher stop/DELETE"))?;
        } else {
            // The publisher leaves first; its viewer's session stays until it DELETEs too.
            publisher
                .stop()
                .await
                .with_context(|| format!("cycle {i}: publisher stop/DELETE"))?;
            let s = stats(&gw).await?;
            assert_eq!(
                s["sessions"].as_u64(),
                Some(1),
                "cycle {i}: viewer session after publisher left: {s}"
            );
            assert_eq!(
                s["streams"].as_u64(),
                Some(0),
                "cycle {i}: stream still listed after its publisher left: {s}"
            );
            let r = player.stop().await?;
            assert!(r.delete_error.is_none(), "cycle {i}: player DELETE: {r:?}");
        }
    }
    let (t, s) = wait_empty(&gw, Duration::from_secs(5)).await?;
    println!(
        "{N} real cycles in {:.1} s; empty {t:?} after the last DELETE: {s}",
        real_start.elapsed().as_secs_f64()
    );
    assert!(
        s["packets_out"].as_u64().unwrap_or(0) > packets_out_before,
        "no packets forwarded during the real cycles: {s}"
    );
    let r = c
        .get(format!("{}/v1/streams", gw.base_url()))
        .send()
        .await?
        .text()
        .await?;
    let v: Value = serde_json::from_str(&r)?;
    assert_eq!(
        v["streams"].as_array().map(Vec::len),
        Some(0),
        "streams left: {v}"
    );

    // --- No leaked descriptors or threads (closed connections may take a moment to go).
    drop(c);
    let (fds1, threads1) = settled_resources(pid, (fds0, threads0)).await?;
    println!(
        "gateway pid {pid}: {fds1} fds, {threads1} threads after (before: {fds0}, {threads0})"
    );
    assert!(
        fds1.abs_diff(fds0) <= 2,
        "file descriptors {fds0} before, {fds1} after {N}+{N} cycles"
    );
    assert!(
        threads1.abs_diff(threads0) <= 2,
        "threads {threads0} before, {threads1} after {N}+{N} cycles"
    );
    assert!(gw.is_running(), "gateway exited");
    println!(
        "delete_cycles_leave_nothing_behind: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

const SHORT_TIMEOUTS: &str = "connect_timeout = 2\nidle_timeout = 3\n";

/// (b) Clients that never connect: their sessions stay for `connect_timeout` (2 s), then go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_never_connect_are_reaped() -> Result<()> {
    let began = Instant::now();
    let mut gw = start(Some(SHORT_TIMEOUTS)).await?;
    let c = http_client()?;
    let t0 = Instant::now();
    let mut urls = Vec::new();
    for i in 0..3 {
        urls.push(
            post(
                &c,
                &gw,
                &gw.whip_url(&format!("ghost{i}")),
                &offer(Direction::SendOnly),
            )
            .await?,
        );
    }
    for _ in 0..3 {
        urls.push(post(&c, &gw, &gw.whep_url("ghost0"), &offer(Direction::RecvOnly)).await?);
    }
    let s = stats(&gw).await?;
    assert_eq!(counts(&s).0, 6, "sessions right after the POSTs: {s}");
    assert_eq!(counts(&s).2, 3, "streams right after the POSTs: {s}");

    // Not reaped early: a client gets its connect_timeout to do ICE.
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        t0 + Duration::from_millis(1200),
    ))
    .await;
    let s = stats(&gw).await?;
    if t0.elapsed() < Duration::from_millis(1800) {
        assert_eq!(
            counts(&s).0,
            6,
            "sessions reaped before connect_timeout (2 s), at {:?}: {s}",
            t0.elapsed()
        );
    }

    let (_, s) = wait_empty(&gw, Duration::from_secs(7)).await?;
    let took = t0.elapsed();
    println!("never-connected sessions reaped {took:?} after the POSTs: {s}");
    assert!(
        took >= Duration::from_millis(1900),
        "reaped after only {took:?} (connect_timeout is 2 s)"
    );
    // The node remembers for 10 s the sessions it ended itself, so that a client's own DELETE
    // right after still gets 200 (`Registry::take_ended`); once, then 404 like any gone resource.
    for url in &urls {
        assert_eq!(
            delete(&c, url).await?,
            200,
            "first DELETE of a reaped session {url}"
        );
        assert_eq!(
            delete(&c, url).await?,
            404,
            "second DELETE of a reaped session {url}"
        );
    }
    // The stream name is free again for a new publisher.
    let p = post(&c, &gw, &gw.whip_url("ghost0"), &offer(Direction::SendOnly)).await?;
    assert_eq!(delete(&c, &p).await?, 200);
    assert!(gw.is_running(), "gateway exited");
    println!(
        "sessions_that_never_connect_are_reaped: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// (b) A real publisher and player that connect, stay past both timeouts while alive (and must
/// not be reaped), then vanish without DELETE: reaped within `idle_timeout` (3 s) + slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_clients_that_vanish_are_reaped() -> Result<()> {
    let began = Instant::now();
    let mut gw = start(Some(SHORT_TIMEOUTS)).await?;
    let pid = gw.pid();
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let (fds0, threads0) = resources(pid)?;

    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("vanish"))).await?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;
    let opts = PlayOptions {
        duration: Duration::from_secs(30),
        ..PlayOptions::new(gw.whep_url("vanish"))
    };
    let player = WhepPlayer::start(media.catalog(), opts).await?;
    let until = Instant::now() + Duration::from_secs(10);
    while player.report().video_frames == 0 {
        ensure!(
            Instant::now() < until,
            "player got no video within 10 s: {:?}",
            player.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Alive for 4.5 s — past connect_timeout (2 s) and idle_timeout (3 s) — and never reaped.
    let alive_until = Instant::now() + Duration::from_millis(4500);
    let frames_then = player.report().video_frames;
    while Instant::now() < alive_until {
        let s = stats(&gw).await?;
        assert!(
            playing_counts(&s),
            "a live publisher/player pair was reaped: {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let frames_now = player.report().video_frames;
    assert!(
        frames_now > frames_then + 30,
        "player stalled while alive: {frames_then} -> {frames_now} frames"
    );
    assert!(
        !publisher.is_finished(),
        "publisher stopped on its own: {:?}",
        publisher.stats()
    );

    // Vanish: drop both without DELETE (their tasks stop and close their sockets).
    let resource_urls = [
        publisher.resource_url().to_string(),
        player.resource_url().to_string(),
    ];
    drop(player);
    drop(publisher);
    let (took, s) = wait_empty(&gw, Duration::from_secs(3 + 4)).await?;
    println!("vanished connected clients reaped {took:?} after dropping them: {s}");
    let c = http_client()?;
    for url in &resource_urls {
        assert_eq!(
            delete(&c, url).await?,
            200,
            "first DELETE of a reaped session {url} (remembered for 10 s)"
        );
        assert_eq!(
            delete(&c, url).await?,
            404,
            "second DELETE of a reaped session {url}"
        );
    }
    drop(c);

    let (fds1, threads1) = settled_resources(pid, (fds0, threads0)).await?;
    assert!(
        fds1.abs_diff(fds0) <= 2,
        "file descriptors {fds0} before, {fds1} after"
    );
    assert!(
        threads1.abs_diff(threads0) <= 2,
        "threads {threads0} before, {threads1} after"
    );
    assert!(gw.is_running(), "gateway exited");
    println!(
        "connected_clients_that_vanish_are_reaped: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
