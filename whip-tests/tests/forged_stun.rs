//! Issues 16 and 10, end to end: a live publisher and a viewer while an attacker who knows the
//! publisher's STUN USERNAME (`<gateway ufrag>:<client ufrag>`, visible on the wire) sends
//! binding requests with a wrong or missing MESSAGE-INTEGRITY from 1, 8 and 1,000 source ports,
//! once and sustained, and spoofs datagrams from the publisher's own address (STUN with bad
//! integrity, DTLS records, SRTP-looking garbage). The stream never stalls: the viewer gets every
//! frame whole and in order at the normal rate, the publisher's packets are never unrouted, the
//! forged STUN is counted (`stun_integrity_failures`), and the publisher still leaves with a 200.
//! And the legitimate change still works: a publisher whose NAT gives it a new port is followed
//! after its next verified check. (ICE restart credentials reach the demux as a new ufrag and
//! password: its unit tests; restart signalling: `http_conformance`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use str0m::ice::{StunMessage, TransId};
use tokio::net::UdpSocket;
use whip_tests::{Gateway, MediaSource, PlayOptions, PublishOptions, WhipPublisher, play};

/// A binding request naming `username`, with an integrity that is not the session's.
fn forged(username: &str, with_integrity: bool) -> Vec<u8> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 12345, 1, false);
    let mut buf = vec![0u8; 512];
    let password: Option<&[u8]> = with_integrity.then_some(b"not-the-password".as_slice());
    match msg.to_bytes(password, &mut buf, |_, _| [7u8; 20]) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

/// Sends `packet` once from each of `ports` fresh loopback sockets (in batches, to stay well
/// under the file descriptor limit). Returns how many were sent.
async fn from_ports(to: std::net::SocketAddr, packet: &[u8], ports: usize) -> Result<u64> {
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

fn stat(v: &serde_json::Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("/v1/stats has no {key}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stun_and_spoofed_datagrams_never_stall_a_live_publisher() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("victim"))).await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let username = publisher.ice_username().to_owned();
    ensure!(username.len() > 20, "no ICE username: {username:?}");
    let target = gw.udp_addr();
    let before = gw.stats().await?;

    let play_secs = 7;
    let viewer = tokio::spawn(play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(play_secs),
            ..PlayOptions::new(gw.whep_url("victim"))
        },
    ));
    // Let the viewer start, then attack for the rest of its window.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let with_integrity = forged(&username, true);
    let without_integrity = forged(&username, false);
    let mut forged_sent = 0u64;
    // Once: from 1, 8 and 1,000 new ports.
    for ports in [1, 8, 1000] {
        forged_sent += from_ports(target, &with_integrity, ports).await?;
    }
    from_ports(target, &without_integrity, 8).await?;
    // Sustained: 8 ports every 50 ms and 1,000 every second, while the publisher's own socket
    // sends STUN with a bad integrity, DTLS records and SRTP garbage at ~200 datagrams/s.
    let own = publisher.socket();
    let dtls: Vec<u8> = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 40]
        .into_iter()
        .chain((0..40).map(|i| i as u8))
        .collect();
    let mut srtp = vec![0x80u8, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    srtp.extend((0..900).map(|i| (i * 7) as u8));
    let until = Instant::now() + Duration::from_secs(play_secs - 2);
    let mut round = 0u64;
    while Instant::now() < until {
        forged_sent += from_ports(target, &with_integrity, 8).await?;
        if round.is_multiple_of(20) {
            forged_sent += from_ports(target, &with_integrity, 1000).await?;
        }
        for _ in 0..3 {
            let _ = own.send_to(&with_integrity, target).await;
            let _ = own.send_to(&dtls, target).await;
            let _ = own.send_to(&srtp, target).await;
        }
        forged_sent += 3;
        round += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let report = viewer.await.context("viewer panicked")??;
    let after = gw.stats().await?;
    println!(
        "viewer: {} frames, whole_in_order={}, non_contiguous={}, error={:?}",
        report.video_frames, report.whole_in_order, report.non_contiguous, report.error
    );
    let unrouted = stat(&after, "udp_unrouted")? - stat(&before, "udp_unrouted")?;
    let failures =
        stat(&after, "stun_integrity_failures")? - stat(&before, "stun_integrity_failures")?;
    println!("forged STUN sent {forged_sent}, counted {failures}; udp_unrouted +{unrouted}");
    ensure!(report.error.is_none(), "viewer failed: {:?}", report.error);
    ensure!(
        report.whole_in_order && report.non_contiguous == 0,
        "the viewer lost or reordered frames during the attack: {report:?}"
    );
    // 30 fps for the window less the join; a stall of a second or more would cost 30 frames.
    let floor = (play_secs - 1) * 30 * 80 / 100;
    ensure!(
        report.video_frames >= floor,
        "only {} frames in {play_secs} s (a stall): at least {floor} expected",
        report.video_frames
    );
    ensure!(
        unrouted < 50,
        "{unrouted} datagrams unrouted: the publisher's own packets were dropped as unknown"
    );
    // Loopback under load may drop a few of the attacker's datagrams; the rest are counted.
    ensure!(
        failures * 10 >= forged_sent * 9,
        "only {failures} of {forged_sent} forged STUN requests counted"
    );
    ensure!(
        !publisher.is_finished(),
        "the publisher's session ended during the attack"
    );
    publisher.stop().await.context("the publisher's DELETE")?;
    Ok(())
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
    Ok(s["track_stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("video")))
        .filter_map(|t| t["packets"].as_u64())
        .sum())
}

/// The legitimate address change the demux must still follow: the publisher's NAT gives it a
/// new source port mid-stream. Its media from the new port is accepted once a connectivity check
/// from there has passed integrity (the client's next consent check), and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_nat_port_changes_keeps_streaming() -> Result<()> {
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
    let report = play(
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
