//! Issues 16 and 10, end to end: forged STUN must not move a live publisher off its address.
//!
//! A publisher's STUN USERNAME (`<gateway ufrag>:<client ufrag>`) travels in the clear, so an
//! attacker can copy it; only the ICE password, which it cannot know, makes MESSAGE-INTEGRITY.
//! While a str0m publisher streams and a str0m viewer watches, these tests send binding requests
//! naming the publisher with a wrong or missing MESSAGE-INTEGRITY from 1, 8 and 1,000 new source
//! ports, once and sustained (every 50 ms), and spoof datagrams from the publisher's own address
//! (STUN with a bad integrity, DTLS records, SRTP-looking garbage). What they prove: the viewer
//! keeps getting every frame whole and in order at the normal rate with no gap of a second, the
//! publisher's packets are never unrouted (`udp_unrouted` on `/v1/stats` rises only by the
//! attack's own unroutable datagrams), every forged request with an integrity is counted
//! (`stun_integrity_failures`), and the publisher is still live and leaves with a 200. Before the
//! demux verified integrity, 8 forged ports evicted the publisher's real address (8 addresses per
//! session, oldest out), so the 8- and 1,000-port cases failed there.
//!
//! And the legitimate change still works: a publisher whose NAT gives it a new port is followed
//! after its next verified check. (ICE restart credentials reach the demux as a new ufrag and
//! password: its unit tests; restart signalling: `http_conformance`.)

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use str0m::ice::{StunMessage, TransId};
use tokio::net::UdpSocket;
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer, WhipPublisher, play,
};

/// Timing-sensitive tests on a machine that may have two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The fixture's frame rate.
const FPS: f64 = 30.0;
/// The viewer must get at least this share of the frames due while the attack runs.
const FRAME_FLOOR: f64 = 0.75;
/// Longest the viewer may go without a new frame (a debug build on two busy cores jitters by a
/// few hundred ms; an evicted publisher stalls until its next consent check, seconds).
const MAX_GAP: Duration = Duration::from_millis(1000);
/// `udp_unrouted` may rise by this much beyond the attack's own unroutable datagrams.
const UNROUTED_SLACK: u64 = 10;
/// Watching goes on this long after the attack, so a stall it caused is seen.
const TAIL: Duration = Duration::from_millis(700);
/// The publisher offers H264 as payload type 96 only (`whip_client.rs`), so that is its video.
const VIDEO_PT: u8 = 96;

/// A binding request naming `username`, with a MESSAGE-INTEGRITY that is not the session's (a
/// constant HMAC) or, with `integrity` false, none at all.
fn forged_stun(username: &str, integrity: bool) -> Result<Vec<u8>> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 12345, 1, false);
    let mut buf = vec![0u8; 512];
    let password: Option<&[u8]> = integrity.then_some(b"wrong-password-xxxxxxxxx".as_slice());
    let n = msg
        .to_bytes(password, &mut buf, |_, _| [7u8; 20])
        .map_err(|e| anyhow::anyhow!("serialising STUN: {e:?}"))?;
    buf.truncate(n);
    Ok(buf)
}

fn noise(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::fill(&mut v[..]);
    v
}

/// A DTLS 1.2 record header (content type, version 0xfefd, epoch, sequence, length) and a random
/// body: a handshake record (22) at epoch 0 or application data (23) at epoch 1.
fn fake_dtls(handshake: bool) -> Vec<u8> {
    let body = noise(rand::random_range(20..200));
    let (ct, epoch) = if handshake { (22u8, 0u8) } else { (23, 1) };
    let mut r = vec![ct, 0xfe, 0xfd, 0, epoch];
    r.extend_from_slice(&noise(6));
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(&body);
    r
}

/// RTP version 2, the video's payload type, random sequence, timestamp, SSRC and 100–1200 bytes
/// of body: what SRTP looks like to anyone without the keys.
fn fake_srtp() -> Vec<u8> {
    let mut p = vec![0x80u8, VIDEO_PT];
    p.extend_from_slice(&noise(10 + rand::random_range(100..1200)));
    p
}

/// Sends `packet` once from each of `ports` fresh loopback sockets (in batches of 200, to stay
/// well under the file descriptor limit). Returns how many were sent.
async fn from_new_ports(to: SocketAddr, packet: &[u8], ports: usize) -> Result<u64> {
    let mut sent = 0;
    let mut left = ports;
    while left > 0 {
        let batch = left.min(200);
        let mut sockets = Vec::with_capacity(batch);
        for _ in 0..batch {
            sockets.push(UdpSocket::bind("127.0.0.1:0").await?);
        }
        for s in &sockets {
            if s.send_to(packet, to).await.is_ok() {
                sent += 1;
            }
        }
        left -= batch;
    }
    Ok(sent)
}

async fn node_stats(base: &str) -> Result<serde_json::Value> {
    let body = whip_tests::signaling::http_client()?
        .get(format!("{base}/v1/stats"))
        .send()
        .await?
        .text()
        .await?;
    serde_json::from_str(&body).with_context(|| format!("/v1/stats is not JSON: {body:.200}"))
}

fn counter(v: &serde_json::Value, key: &str) -> Option<u64> {
    v[key].as_u64()
}

async fn unrouted(base: &str) -> Result<u64> {
    let v = node_stats(base).await?;
    counter(&v, "udp_unrouted").with_context(|| format!("/v1/stats has no udp_unrouted: {v}"))
}

/// What an attack step sent.
#[derive(Default, Clone, Copy)]
struct Sent {
    /// Forged STUN with a (wrong) MESSAGE-INTEGRITY: each must be counted as an integrity failure.
    bad_integrity: u64,
    /// STUN without MESSAGE-INTEGRITY from new ports: str0m's STUN parser rejects a binding
    /// request without one, so the demux cannot tell it from any stray datagram and counts it in
    /// `udp_unrouted` (expected there, not in `stun_integrity_failures`).
    unroutable: u64,
    /// Other spoofed datagrams (DTLS, SRTP) from the publisher's own address.
    other: u64,
}

/// One step of an attack, as the attacking task saw it.
struct Phase {
    label: String,
    sent: Sent,
    start: Instant,
    end: Instant,
    /// `udp_unrouted` rise from the start to the end of the phase.
    unrouted: u64,
}

impl Phase {
    /// Ends a step that began at `start`, when `udp_unrouted` was `unrouted_then`.
    async fn ended(
        t: &Target,
        label: String,
        sent: Sent,
        start: Instant,
        unrouted_then: u64,
    ) -> Result<Phase> {
        let end = Instant::now();
        let unrouted = unrouted(&t.base).await?.saturating_sub(unrouted_then);
        Ok(Phase {
            label,
            sent,
            start,
            end,
            unrouted,
        })
    }
}

fn forged(bad_integrity: u64) -> Sent {
    Sent {
        bad_integrity,
        ..Sent::default()
    }
}

/// What an attack needs to know.
#[derive(Clone)]
struct Target {
    udp: SocketAddr,
    base: String,
    username: String,
    /// The publisher's own socket (datagrams from its address).
    own: Arc<UdpSocket>,
}

/// A gateway of its own, a live publisher and a viewer that has started playing.
struct Scene {
    gw: Gateway,
    stream: &'static str,
    publisher: WhipPublisher,
    viewer: WhepPlayer,
}

async fn scene(stream: &'static str) -> Result<Scene> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url(stream))).await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    // `play()` is `WhepPlayer::start` + `finish`; the live handle lets the test watch frames
    // arrive during the attack and stop the viewer when the attack is over.
    let viewer = WhepPlayer::start(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(60),
            ..PlayOptions::new(gw.whep_url(stream))
        },
    )
    .await?;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = viewer.report();
        ensure!(r.error.is_none(), "viewer failed: {:?}", r.error);
        if r.video_frames >= 15 {
            break;
        }
        ensure!(Instant::now() < until, "viewer has no frames: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Scene {
        gw,
        stream,
        publisher,
        viewer,
    })
}

impl Scene {
    fn target(&self) -> Target {
        Target {
            udp: self.gw.udp_addr(),
            base: self.gw.base_url(),
            username: self.publisher.ice_username().to_owned(),
            own: self.publisher.socket(),
        }
    }

    /// Runs `attack` in its own task while sampling the viewer's frame count every 20 ms, then
    /// checks everything the file's doc promises and fails with all that did not hold.
    async fn survive<F>(self, attack: F) -> Result<()>
    where
        F: Future<Output = Result<Vec<Phase>>> + Send + 'static,
    {
        let Scene {
            gw,
            stream,
            publisher,
            viewer,
        } = self;
        ensure!(
            publisher.ice_username().len() > 20 && publisher.ice_username().contains(':'),
            "no ICE username: {:?}",
            publisher.ice_username()
        );
        let before = gw.stats().await?;
        let t0 = Instant::now();
        let mut timeline = vec![(t0, viewer.report().video_frames)];
        let attack = tokio::spawn(attack);
        let mut tail_until = None;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = Instant::now();
            timeline.push((now, viewer.report().video_frames));
            if tail_until.is_none() && attack.is_finished() {
                tail_until = Some(now + TAIL);
            }
            if tail_until.is_some_and(|t| now >= t) {
                break;
            }
        }
        let phases = attack.await.context("attack panicked")??;
        let after = gw.stats().await?;
        // Whether the gateway still takes the publisher's media: its video packet count rises.
        let accepting = async {
            let then = video_packets(&gw, stream).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            anyhow::Ok((then, video_packets(&gw, stream).await?))
        }
        .await;
        let report = viewer.stop().await?;

        let watched = timeline.last().map_or(t0, |l| l.0) - t0;
        let frames = timeline.last().map_or(0, |l| l.1) - timeline[0].1;
        let bad_integrity: u64 = phases.iter().map(|p| p.sent.bad_integrity).sum();
        let unroutable: u64 = phases.iter().map(|p| p.sent.unroutable).sum();
        let other: u64 = phases.iter().map(|p| p.sent.other).sum();
        let rise = |key: &str| Some(counter(&after, key)?.saturating_sub(counter(&before, key)?));
        let unrouted_rise = rise("udp_unrouted").context("/v1/stats has no udp_unrouted")?;
        let failures = rise("stun_integrity_failures");

        println!("phase | bad-MI STUN | unroutable | other | udp_unrouted +n | longest frame gap");
        for (i, p) in phases.iter().enumerate() {
            // Up to the next step, or for the last the tail watched after it.
            let until = phases.get(i + 1).map_or(p.end + TAIL, |next| next.start);
            println!(
                "{} | {} | {} | {} | +{} | {:?}",
                p.label,
                p.sent.bad_integrity,
                p.sent.unroutable,
                p.sent.other,
                p.unrouted,
                longest_gap(&timeline, p.start, until)
            );
        }
        let gap = longest_gap(&timeline, t0, Instant::now());
        println!(
            "viewer while attacked: {frames} frames in {watched:?}, longest gap {gap:?}; whole \
             report: {} frames, whole_in_order={}, non_contiguous={}, error={:?}",
            report.video_frames, report.whole_in_order, report.non_contiguous, report.error
        );
        println!(
            "udp_unrouted +{unrouted_rise} (attack's own unroutable {unroutable}); \
             stun_integrity_failures +{failures:?} for {bad_integrity} forged; {other} other \
             spoofed; publisher video packets at the gateway (then, 500 ms later): {}",
            match &accepting {
                Ok((then, now)) => format!("{then}, {now}"),
                Err(e) => format!("unknown ({e:#})"),
            }
        );

        let mut wrong = Vec::new();
        if let Some(e) = &report.error {
            wrong.push(format!("the viewer failed: {e}"));
        }
        if !report.whole_in_order || report.non_contiguous != 0 {
            wrong.push(format!(
                "the viewer lost or reordered frames (whole_in_order={}, non_contiguous={}, {:?})",
                report.whole_in_order, report.non_contiguous, report.sequence
            ));
        }
        let floor = (FRAME_FLOOR * watched.as_secs_f64() * FPS) as u64;
        if frames < floor {
            wrong.push(format!(
                "only {frames} frames in {watched:?} under attack (at least {floor} expected)"
            ));
        }
        if gap > MAX_GAP {
            wrong.push(format!("the viewer got no frame for {gap:?} (a stall)"));
        }
        if unrouted_rise > unroutable + UNROUTED_SLACK {
            wrong.push(format!(
                "udp_unrouted rose by {unrouted_rise}, of which the attack's own unroutable \
                 datagrams explain {unroutable}: the publisher's packets were dropped as unknown"
            ));
        }
        match failures {
            None => wrong.push(
                "/v1/stats has no stun_integrity_failures: this gateway predates the demux's \
                 integrity check (issue 16)"
                    .into(),
            ),
            Some(n) if n < bad_integrity => wrong.push(format!(
                "stun_integrity_failures rose by {n}, but {bad_integrity} forged requests were sent"
            )),
            Some(_) => {}
        }
        if publisher.is_finished() {
            wrong.push("the publisher's session ended during the attack".into());
        }
        match accepting {
            Ok((then, now)) if now <= then => wrong.push(format!(
                "the gateway no longer accepts the publisher's video ({then} packets, none in the \
                 next 500 ms)"
            )),
            Ok(_) => {}
            Err(e) => wrong.push(format!("the publisher's packet count: {e:#}")),
        }
        // A DELETE of a session the gateway ended itself is also 200 for a while (README), hence
        // the checks above; this one proves the publisher can still leave properly.
        if let Err(e) = publisher.stop().await {
            wrong.push(format!("the publisher's DELETE: {e:#}"));
        }
        ensure!(
            wrong.is_empty(),
            "under attack:\n- {}\n(gateway log tail:\n{})",
            wrong.join("\n- "),
            gw.log_tail(1500)
        );
        Ok(())
    }
}

/// The longest time without a new frame seen by samples in `from..=to` (a gap that began before
/// `from` counts from its beginning).
fn longest_gap(timeline: &[(Instant, u64)], from: Instant, to: Instant) -> Duration {
    let mut last_change = timeline.first().map_or(from, |s| s.0);
    let mut last_frames = timeline.first().map_or(0, |s| s.1);
    let mut longest = Duration::ZERO;
    for &(t, frames) in timeline {
        if frames != last_frames {
            last_change = t;
            last_frames = frames;
        }
        if t >= from && t <= to {
            longest = longest.max(t - last_change);
        }
    }
    longest
}

/// The video track's packet count on `/v1/streams` (what the gateway accepted from the publisher).
async fn video_packets(gw: &Gateway, stream: &str) -> Result<u64> {
    let body = whip_tests::signaling::http_client()?
        .get(format!("{}/v1/streams", gw.base_url()))
        .send()
        .await?
        .text()
        .await?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let s = v["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stream))
        .with_context(|| format!("no stream {stream}: {v}"))?;
    let tracks = s["track_stats"]
        .as_array()
        .with_context(|| format!("stream {stream} has no track_stats: {s}"))?;
    Ok(tracks
        .iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("video")))
        .filter_map(|t| t["packets"].as_u64())
        .sum())
}

/// Forged STUN once from 1, then 8, then 1,000 new ports (wrong integrity), then once from 8
/// ports with no integrity, each followed by 1.2 s of watching.
async fn once_from_new_ports(t: Target) -> Result<Vec<Phase>> {
    let mut phases = Vec::new();
    for (ports, integrity) in [(1, true), (8, true), (1000, true), (8, false)] {
        let packet = forged_stun(&t.username, integrity)?;
        let u0 = unrouted(&t.base).await?;
        let start = Instant::now();
        let n = from_new_ports(t.udp, &packet, ports).await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (label, sent) = match integrity {
            true => (
                format!("once from {ports} ports, wrong MESSAGE-INTEGRITY"),
                forged(n),
            ),
            false => (
                format!("once from {ports} ports, no MESSAGE-INTEGRITY"),
                Sent {
                    unroutable: n,
                    ..Sent::default()
                },
            ),
        };
        phases.push(Phase::ended(&t, label, sent, start, u0).await?);
    }
    Ok(phases)
}

/// Every 50 ms for 2.5 s, forged STUN from 8 new ports; then every 50 ms for 2.5 s from each of
/// 1,000 ports (bound once: to the demux each is a new source until it binds, which it must
/// never do).
async fn sustained_from_new_ports(t: Target) -> Result<Vec<Phase>> {
    let packet = forged_stun(&t.username, true)?;
    let window = Duration::from_millis(2500);
    let mut phases = Vec::new();

    let u0 = unrouted(&t.base).await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut rounds) = (0, 0);
    while start.elapsed() < window {
        tick.tick().await;
        sent += from_new_ports(t.udp, &packet, 8).await?;
        rounds += 1;
    }
    let label = format!("8 new ports every 50 ms ({rounds} rounds)");
    phases.push(Phase::ended(&t, label, forged(sent), start, u0).await?);

    let mut pool = Vec::with_capacity(1000);
    for _ in 0..1000 {
        pool.push(UdpSocket::bind("127.0.0.1:0").await?);
    }
    let u0 = unrouted(&t.base).await?;
    let start = Instant::now();
    let (mut sent, mut rounds) = (0, 0);
    while start.elapsed() < window {
        tick.tick().await;
        for s in &pool {
            if s.send_to(&packet, t.udp).await.is_ok() {
                sent += 1;
            }
        }
        rounds += 1;
    }
    let label = format!("1000 ports every 50 ms ({rounds} rounds)");
    phases.push(Phase::ended(&t, label, forged(sent), start, u0).await?);
    Ok(phases)
}

/// For 4.5 s, every 10 ms from the publisher's own socket: one STUN binding request with a wrong
/// integrity, one DTLS record (handshake and application data in turn), one SRTP-looking packet
/// of the video's payload type: 300 datagrams/s.
async fn from_own_address(t: Target) -> Result<Vec<Phase>> {
    let own = t.own.clone();
    let stun = forged_stun(&t.username, true)?;
    let u0 = unrouted(&t.base).await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut stun_sent, mut other) = (0, 0);
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(4500) {
        tick.tick().await;
        let dtls = fake_dtls(n.is_multiple_of(2));
        let srtp = fake_srtp();
        n += 1;
        if own.send_to(&stun, t.udp).await.is_ok() {
            stun_sent += 1;
        }
        for p in [dtls, srtp] {
            if own.send_to(&p, t.udp).await.is_ok() {
                other += 1;
            }
        }
    }
    let sent = Sent {
        bad_integrity: stun_sent,
        unroutable: 0,
        other,
    };
    let label = "from the publisher's own address: STUN, DTLS, SRTP every 10 ms".into();
    Ok(vec![Phase::ended(&t, label, sent, start, u0).await?])
}

/// One test: a scene of its own (`stream`), `attack` run against it, every check of `survive`.
async fn attacked<F>(stream: &'static str, attack: impl FnOnce(Target) -> F) -> Result<()>
where
    F: Future<Output = Result<Vec<Phase>>> + Send + 'static,
{
    let _turn = ONE_AT_A_TIME.lock().await;
    let s = scene(stream).await?;
    let t = s.target();
    s.survive(attack(t)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stun_once_from_1_8_and_1000_ports_does_not_stall_the_publisher() -> Result<()> {
    attacked("once", once_from_new_ports).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stun_every_50ms_from_8_and_1000_ports_does_not_stall_the_publisher() -> Result<()> {
    attacked("sustained", sustained_from_new_ports).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_stun_dtls_and_srtp_from_the_publishers_own_address_do_not_end_it() -> Result<()> {
    attacked("own", from_own_address).await
}

/// The legitimate address change the demux must still follow: the publisher's NAT gives it a
/// new source port mid-stream. Its media from the new port is accepted once a connectivity check
/// from there has passed integrity (the client's next consent check), and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_nat_port_changes_keeps_streaming() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("nat"))).await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let new = publisher.change_source_port().await?;
    let switched = Instant::now();
    let at_switch = video_packets(&gw, "nat").await?;
    // The first packets from the new port come before any check from it: not yet accepted.
    let mut resumed = None;
    while switched.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if video_packets(&gw, "nat").await? > at_switch + 30 {
            resumed = Some(switched.elapsed());
            break;
        }
    }
    println!("publisher moved to {new}; media accepted again after {resumed:?}");
    let resumed = resumed.context("media from the new port was never accepted")?;
    // A viewer joining afterwards gets the stream whole.
    let report: PlayReport = play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(3),
            ..PlayOptions::new(gw.whep_url("nat"))
        },
    )
    .await?;
    ensure!(
        report.error.is_none() && report.whole_in_order && report.video_frames >= 60,
        "viewer after the move: {report:?}"
    );
    ensure!(!publisher.is_finished(), "the publisher's session ended");
    publisher.stop().await.context("DELETE after the move")?;
    println!("resumed after {resumed:?}");
    Ok(())
}
