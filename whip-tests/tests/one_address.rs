//! The one-address rig (`scripts/vip-rig.sh`): three gateways in their own network namespaces
//! behind one virtual IP, spread by a real L4 balancer (nftables in a fourth namespace, hashing
//! each flow's 4-tuple, stateless). This test proves the rig itself, which the cluster's "any
//! gateway serves any session" work runs on:
//! - HTTP through the VIP reaches every gateway, by 4-tuple (each new connection is a new
//!   source port);
//! - WebRTC (ICE, DTLS, SRTP over UDP) crosses the balancer both ways: with every flow pinned
//!   to one gateway, a publisher and a player through the VIP get every frame whole and in
//!   order;
//! - re-pinning moves live flows at once (the balancer keeps no per-flow state), which is what
//!   the session-moves-mid-stream tests need.
//!
//! Needs root (namespaces, nftables); CI runs as root. Gateways here are not clustered yet: a
//! session whose HTTP and UDP land on different gateways does not connect until a gateway can
//! serve a session another one negotiated.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use whip_tests::signaling::{self, bare_video_offer, http_client_from};
use whip_tests::{Gateway, MediaSource, PlayOptions, PublishOptions, WhipPublisher, play};

const VIP: &str = "10.210.0.1";
/// This (root) namespace's address on the client side of the balancer.
const CLIENT: &str = "10.210.1.2";
const GATEWAYS: usize = 3;

fn rig(args: &[&str]) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/vip-rig.sh");
    let out = Command::new("bash").arg(script).args(args).output()?;
    if !out.status.success() {
        bail!(
            "vip-rig.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The rig, taken down again however the test ends.
struct Rig;

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = rig(&["down"]);
    }
}

async fn gateway_in(i: usize) -> Result<Gateway> {
    tokio::task::spawn_blocking(move || {
        let ns = format!("vip-g{i}");
        let own = format!("10.210.2.{}", 10 + i);
        Gateway::start_in_netns(
            &ns,
            &[
                "--http-listen",
                "0.0.0.0:8080",
                "--udp-listen",
                "0.0.0.0:8189",
                // The VIP first, as a node behind a 1:1 NAT advertises its public address; the
                // gateway's own address (what the balancer's packets arrive at) after it, which
                // clients cannot reach.
                "--public-ip",
                VIP,
                "--candidate-ip",
                &own,
            ],
        )
    })
    .await
    .context("start panicked")?
}

fn url(kind: &str, stream: &str) -> String {
    format!("http://{VIP}:8080/{kind}/{stream}")
}

/// A WHIP POST of a bare video offer through the VIP, on a connection of its own.
async fn post_offer(stream: &str) -> Result<()> {
    let client = http_client_from(CLIENT.parse()?)?;
    signaling::post_offer(&client, &url("whip", stream), None, &bare_video_offer()?).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_spreads_flows_over_the_gateways_and_carries_webrtc() -> Result<()> {
    rig(&["up", &GATEWAYS.to_string(), "2"])?;
    let _rig = Rig;
    let mut gateways = Vec::new();
    for i in 1..=GATEWAYS {
        gateways.push(gateway_in(i).await?);
    }

    // HTTP: each POST on a new connection, so a new source port and a new hash.
    const POSTS: usize = 30;
    for k in 0..POSTS {
        post_offer(&format!("spread-{k}")).await?;
    }
    let mut landed = Vec::new();
    for g in &gateways {
        let log = g.log_tail(1 << 20);
        let here = (0..POSTS)
            .filter(|k| log.contains(&format!("stream=spread-{k} ")))
            .count();
        landed.push(here);
    }
    println!("WHIP POSTs per gateway through the VIP: {landed:?}");
    ensure!(
        landed.iter().sum::<usize>() == POSTS,
        "every POST was answered by exactly one gateway: {landed:?}"
    );
    ensure!(
        landed.iter().all(|n| *n > 0),
        "the balancer spread the POSTs over every gateway: {landed:?}"
    );

    // WebRTC through the balancer: every flow to gateway 2.
    rig(&["pin", "2"])?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let bind = std::net::SocketAddr::new(CLIENT.parse()?, 0);
    let publish = PublishOptions {
        bind,
        ..PublishOptions::new(url("whip", "pinned"))
    };
    let publisher = WhipPublisher::start(media, publish).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let opts = PlayOptions {
        bind,
        duration: Duration::from_secs(3),
        ..PlayOptions::new(url("whep", "pinned"))
    };
    let report = play(catalog, opts).await?;
    ensure!(
        report.whole_in_order && report.video_frames >= 30,
        "the player through the VIP: {} frames, whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );
    ensure!(
        gateways[1].log_tail(1 << 20).contains("stream=pinned "),
        "the pinned publisher is not on gateway 2"
    );

    // Re-pinning moves the publisher's live flow at once: gateway 3 gets its packets (and, not
    // knowing the session, drops them).
    let before = publisher.stats().video_frames_sent;
    let third_before = udp_datagrams_in("vip-g3")?;
    rig(&["pin", "3"])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        publisher.stats().video_frames_sent > before,
        "the publisher kept sending"
    );
    let third = udp_datagrams_in("vip-g3")? - third_before;
    println!("datagrams gateway 3 received after the re-pin: {third}");
    ensure!(
        third > 0,
        "gateway 3 received none of the moved flow's datagrams"
    );
    Ok(())
}

/// UDP datagrams the namespace's kernel delivered to sockets (`/proc/net/snmp` Udp InDatagrams).
fn udp_datagrams_in(ns: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().context("Udp header")?,
        udp.next().context("Udp values")?,
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "InDatagrams")
        .context("InDatagrams")?;
    values
        .split_whitespace()
        .nth(i)
        .context("InDatagrams value")?
        .parse()
        .context("InDatagrams number")
}
