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
//! Then the same gateways as one cluster (with two relays, in namespaces of their own), which is
//! what one address is for:
//! - a session whose HTTP lands on one gateway and UDP on another publishes and plays: the UDP
//!   gateway tunnels the datagrams to the session's owner (its ufrag names it) and sends the
//!   owner's replies on; a DELETE that lands on a third gateway is forwarded to the owner;
//! - flows moved mid-stream (re-pinned twice, then re-hashed) keep playing, every frame whole
//!   and in order: the gateway a moved flow lands on probes the others, the owner claims it;
//! - a gateway drained (SIGTERM) keeps its sessions, whole and in order, while the balancer
//!   sends their UDP elsewhere, refuses new ones (503, Retry-After), and stops once they end;
//! - a gateway killed: its sessions are resumed from their replicas by the gateways their
//!   packets reach next, publisher and player go on without a new POST (frames lost during the
//!   outage, every frame after it whole and in order), their DELETEs find them, and a new
//!   viewer plays;
//! - a gateway drained with a short timeout hands its sessions off when it passes, and they go
//!   on the same way.
//!
//! Needs root (namespaces, nftables); CI runs as root.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Certs, Relay, certs, gateway_cluster_args};
use whip_tests::signaling::{self, bare_video_offer, http_client_from};
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhipPublisher, play,
};

const VIP: &str = "10.210.0.1";
/// This (root) namespace's address on the client side of the balancer.
const CLIENT: &str = "10.210.1.2";
const GATEWAYS: usize = 3;
const RELAYS: usize = 2;
/// Every node's cluster port, on its own address.
const CLUSTER_PORT: u16 = 7000;

mod common;

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

/// The rig, taken down again however the test ends. One test at a time holds it (nextest runs
/// this binary's tests one at a time too: `.config/nextest.toml`).
struct Rig(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

static RIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Rig {
    fn up() -> Result<Rig> {
        let held = RIG.lock().unwrap_or_else(|p| p.into_inner());
        rig(&["up", &GATEWAYS.to_string(), &RELAYS.to_string()])?;
        Ok(Rig(held))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = rig(&["down"]);
    }
}

async fn gateway_in(i: usize) -> Result<Gateway> {
    gateway_with(i, Vec::new()).await
}

/// Gateway `i` of the rig, with `extra` arguments.
async fn gateway_with(i: usize, extra: Vec<String>) -> Result<Gateway> {
    tokio::task::spawn_blocking(move || {
        let ns = format!("vip-g{i}");
        let own = format!("10.210.2.{}", 10 + i);
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        args.extend([
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
        ]);
        Gateway::start_in_netns(&ns, &args)
    })
    .await
    .context("start panicked")?
}

/// The rig's gateways and relays as one cluster: tier 0 the gateways, tier 1 the relays, each
/// known by its own address.
struct RigCluster {
    _certs: Certs,
    gateways: Vec<Gateway>,
    _relays: Vec<Relay>,
}

async fn rig_cluster() -> Result<RigCluster> {
    rig_cluster_with(certs()?, &[]).await
}

/// The rig cluster, its gateways started with `extra` arguments too.
async fn rig_cluster_with(certs: Certs, extra: &[&str]) -> Result<RigCluster> {
    let relay = |i: usize| format!("10.210.2.{}:{CLUSTER_PORT}", 20 + i);
    let mut members: Vec<String> = (1..=GATEWAYS)
        .map(|i| format!("0:{}", gateway_id(i)))
        .collect();
    members.extend((1..=RELAYS).map(|i| format!("1:{}", relay(i))));
    let mut relays = Vec::new();
    for i in 1..=RELAYS {
        relays.push(Relay::start_in_netns(
            &format!("vip-r{i}"),
            &certs,
            &relay(i),
            &members,
        )?);
    }
    let mut gateways = Vec::new();
    for i in 1..=GATEWAYS {
        let mut args = gateway_cluster_args(&gateway_id(i), &certs, &members);
        args.extend(extra.iter().map(|a| a.to_string()));
        gateways.push(gateway_with(i, args).await?);
    }
    Ok(RigCluster {
        _certs: certs,
        gateways,
        _relays: relays,
    })
}

/// Gateway `i`'s cluster address, its node id (1-based).
fn gateway_id(i: usize) -> String {
    format!("10.210.2.{}:{CLUSTER_PORT}", 10 + i)
}

/// A stream name whose directory home, among the rig's gateways, is gateway `i` (1-based).
fn homed_on_gateway(prefix: &str, i: usize) -> String {
    let ids: Vec<String> = (1..=GATEWAYS).map(gateway_id).collect();
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|s| relay_proto::placement::home_node(s, &ids) == Some(ids[i - 1].as_str()))
        .unwrap_or_default()
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
    let _rig = Rig::up()?;
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

fn bound_to(bind_ip: &str) -> Result<std::net::SocketAddr> {
    Ok(std::net::SocketAddr::new(bind_ip.parse()?, 0))
}

/// What a test publishes through the VIP.
#[derive(Clone, Copy)]
enum Source {
    /// The short-GOP file; keyframe requests are not answered (as OBS does not).
    ShortGop,
    /// The long-GOP file (keyframes 8 s apart), jumping to its next keyframe when asked for one,
    /// as browsers answer a PLI: a viewer whose session moved gets a keyframe at once.
    LongGopAnsweringPlis,
}

impl Source {
    fn fixture(self) -> &'static str {
        match self {
            Source::ShortGop => "short-gop.mp4",
            Source::LongGopAnsweringPlis => "long-gop.mp4",
        }
    }
}

/// A publisher of `source` to `stream` through the VIP, once it has sent 10 frames.
async fn publish(stream: &str, source: Source) -> Result<WhipPublisher> {
    let media = Arc::new(MediaSource::fixture(source.fixture())?);
    let publish = PublishOptions {
        bind: bound_to(CLIENT)?,
        ignore_keyframe_requests: matches!(source, Source::ShortGop),
        ..PublishOptions::new(url("whip", stream))
    };
    let publisher = WhipPublisher::start(media, publish).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    Ok(publisher)
}

/// A publisher and a player of `stream` with every flow on gateway 1 (`pin 1`), the player
/// playing for `play_for` in a task of its own: where the tests that move, drain or kill
/// start from.
async fn playing_on_gateway_1(
    stream: &str,
    source: Source,
    play_for: Duration,
) -> Result<(WhipPublisher, tokio::task::JoinHandle<Result<PlayReport>>)> {
    rig(&["pin", "1"])?;
    let publisher = publish(stream, source).await?;
    let catalog = MediaSource::fixture(source.fixture())?.catalog();
    let player = tokio::spawn(play(catalog, play_through_vip(stream, play_for)?));
    Ok((publisher, player))
}

fn play_through_vip(stream: &str, duration: Duration) -> Result<PlayOptions> {
    Ok(PlayOptions {
        bind: bound_to(CLIENT)?,
        duration,
        ..PlayOptions::new(url("whep", stream))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_whose_http_and_udp_land_on_different_gateways_publish_and_play() -> Result<()> {
    let _rig = Rig::up()?;
    let cluster = rig_cluster().await?;
    let catalog = MediaSource::fixture("short-gop.mp4")?.catalog();

    // The publisher's HTTP to gateway 1 (its owner), its UDP to gateway 2.
    rig(&["split", "1", "2"])?;
    let publisher = publish("split", Source::ShortGop).await?;
    ensure!(
        cluster.gateways[0]
            .log_tail(1 << 20)
            .contains("stream=split "),
        "the publisher's session is not on gateway 1"
    );

    // The player's HTTP to gateway 3 (its owner; the stream comes through the relays), its UDP
    // to gateway 2.
    rig(&["split", "3", "2"])?;
    let report = play(catalog, play_through_vip("split", Duration::from_secs(4))?).await?;
    ensure!(
        report.whole_in_order && report.video_frames >= 30,
        "the player: {} frames, whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );

    // HTTP anywhere: a DELETE of the publisher's session lands on gateway 2, which forwards it
    // to gateway 1. (On a new connection: this balancer keeps no state, so the publisher's own
    // keep-alive connection to gateway 1 now reaches gateway 2, which resets it.)
    rig(&["split", "2", "2"])?;
    let resource = publisher.resource_url().to_string();
    let client = http_client_from(CLIENT.parse()?)?;
    let deleted = client.delete(&resource).send().await?;
    ensure!(
        deleted.status().is_success(),
        "DELETE through gateway 2: {}",
        deleted.status()
    );
    let ended = publisher.stats();
    let _ = publisher.stop().await;
    let id = resource.rsplit('/').next().unwrap_or_default();
    ensure!(
        cluster.gateways[0]
            .log_tail(1 << 20)
            .lines()
            .any(|l| l.contains("session closed") && l.contains(id)),
        "gateway 1 did not close the session ({ended:?})"
    );
    let again = client.delete(&resource).send().await?;
    ensure!(
        again.status() == reqwest::StatusCode::NOT_FOUND,
        "a second DELETE of the ended session: {}",
        again.status()
    );
    ensure!(
        again
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json")),
        "the owner's 404 comes back as it is: a problem+json"
    );
    Ok(())
}

/// With the cluster's DTLS certificate on every gateway, the gateway a session's first check
/// reaches adopts the session before its handshake and serves the PeerConnection itself: no
/// tunnel. The gateway that answered the POST gives it up; HTTP for it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_a_sessions_first_check_reaches_adopts_it() -> Result<()> {
    let _rig = Rig::up()?;
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["wish-dtls".to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.path().join("dtls.pem"), dir.path().join("dtls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let cluster = rig_cluster_with(certs()?, &["--dtls-cert", &c, "--dtls-key", &k]).await?;
    let catalog = MediaSource::fixture("short-gop.mp4")?.catalog();

    // The publisher's POST to gateway 1, its UDP to gateway 2; the player's POST to gateway 3,
    // its UDP to gateway 2 as well.
    rig(&["split", "1", "2"])?;
    let publisher = publish("adopted", Source::ShortGop).await?;
    rig(&["split", "3", "2"])?;
    let played = play(
        catalog,
        play_through_vip("adopted", Duration::from_secs(4))?,
    )
    .await;
    if let Err(e) = &played {
        for (i, g) in cluster.gateways.iter().enumerate() {
            for l in g.log_tail(1 << 20).lines().filter(|l| {
                [
                    "adopted",
                    "released",
                    "publishing",
                    "playing",
                    "stream",
                    "serves",
                    "connected",
                ]
                .iter()
                .any(|w| l.contains(w))
            }) {
                eprintln!("gateway {}: {l}", i + 1);
            }
        }
        eprintln!("player: {e}");
    }
    let report = played?;
    let logs: Vec<String> = cluster
        .gateways
        .iter()
        .map(|g| g.log_tail(1 << 20))
        .collect();
    let adopted = logs[1]
        .lines()
        .filter(|l| l.contains("adopted a session another gateway negotiated"))
        .count();
    let story: Vec<String> = logs
        .iter()
        .enumerate()
        .flat_map(|(i, log)| {
            log.lines()
                .filter(|l| {
                    [
                        "adopted",
                        "released",
                        "resumed",
                        "publishing",
                        "playing",
                        "serves",
                        "cannot",
                        "connected",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                })
                .map(move |l| format!("gateway {}: {l}", i + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    ensure!(
        adopted == 2,
        "gateway 2 adopted {adopted} sessions: {story:#?}"
    );
    ensure!(
        logs[0].contains("released here") && logs[2].contains("released here"),
        "gateways 1 and 3 gave their sessions up"
    );
    ensure!(
        report.whole_in_order && report.video_frames >= 30,
        "the player: {} frames, whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );
    // The publisher's DELETE lands on gateway 3, which sends it to gateway 2.
    rig(&["split", "3", "2"])?;
    let resource = publisher.resource_url().to_string();
    let deleted = http_client_from(CLIENT.parse()?)?
        .delete(&resource)
        .send()
        .await?;
    let _ = publisher.stop().await;
    ensure!(
        deleted.status().is_success(),
        "DELETE through gateway 3: {}",
        deleted.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_moved_mid_stream_keep_playing_whole_and_in_order() -> Result<()> {
    let _rig = Rig::up()?;
    let _cluster = rig_cluster().await?;

    // Both sessions on gateway 1, then their flows moved under them: to gateway 2, to 3, then
    // spread by a new hash.
    let (publisher, player) =
        playing_on_gateway_1("moved", Source::ShortGop, Duration::from_secs(8)).await?;
    for step in [["pin", "2"], ["pin", "3"], ["rehash", "7"]] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig(&step)?;
    }
    let report = player.await.context("player panicked")??;
    let sent = publisher.stats().video_frames_sent;
    // Its DELETE goes over its keep-alive connection, which the stateless balancer has moved
    // to another gateway (a reset): not what this test is about.
    let _ = publisher.stop().await;
    ensure!(
        report.whole_in_order && report.video_frames >= 150,
        "the player across three moves: {} frames (publisher sent {sent}), whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );
    Ok(())
}

fn signal(gateway: &Gateway, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([signal, &gateway.pid().to_string()])
        .status()?;
    ensure!(status.success(), "kill {signal}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_keeps_its_sessions_while_their_flows_go_elsewhere() -> Result<()> {
    let _rig = Rig::up()?;
    let mut cluster = rig_cluster().await?;
    let (publisher, player) =
        playing_on_gateway_1("drained", Source::ShortGop, Duration::from_secs(8)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGTERM: gateway 1 drains. The balancer keeps its TCP connections (as a real one does
    // for a backend that is draining) but sends UDP to gateway 2, then gateway 3; both tunnel
    // the flows back to gateway 1, which still holds the sessions.
    signal(&cluster.gateways[0], "-TERM")?;
    rig(&["split", "1", "2"])?;
    // A new session on the draining gateway is refused, with a retry hint.
    let client = http_client_from(CLIENT.parse()?)?;
    let refused = client
        .post(url("whip", "too-late"))
        .header("content-type", "application/sdp")
        .body(bare_video_offer()?)
        .send()
        .await?;
    ensure!(
        refused.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && refused.headers().contains_key("retry-after"),
        "a POST to the draining gateway: {} {:?}",
        refused.status(),
        refused.headers()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig(&["split", "1", "3"])?;

    let report = player.await.context("player panicked")??;
    let publisher_stats = publisher.stats();
    publisher.stop().await.context("the publisher's DELETE")?;
    ensure!(
        report.whole_in_order && report.video_frames >= 150,
        "the player through the drain: {} frames, whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );
    ensure!(
        publisher_stats.video_frames_sent > 200,
        "the publisher kept sending: {publisher_stats:?}"
    );
    // Its last session gone, gateway 1 stops.
    let t0 = std::time::Instant::now();
    while cluster.gateways[0].is_running() {
        if t0.elapsed() > Duration::from_secs(5) {
            let log = cluster.gateways[0].log_tail(1 << 20);
            bail!(
                "the drained gateway did not stop after its last session ended (player DELETE: {:?}): {}",
                report.delete_error,
                &log[log.len().saturating_sub(3000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = cluster.gateways[0].log_tail(1 << 20);
    ensure!(
        log.contains("draining: the other gateways told which clients are held here"),
        "gateway 1 did not claim its clients to the other gateways when it began to drain"
    );
    ensure!(
        log.contains("drained: every session has ended"),
        "gateway 1 stopped, but not drained: {}",
        &log[log.len().saturating_sub(2000)..]
    );
    println!(
        "gateway 1 stopped {:?} after its last session ended",
        t0.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_sessions_are_resumed_where_their_packets_land() -> Result<()> {
    let _rig = Rig::up()?;
    let cluster = rig_cluster().await?;

    // Publisher and player on gateway 1; their replicas on gateways 2 and 3. The stream's
    // directory entry is on gateway 1 too (its home): the survivors must choose another home.
    let stream = homed_on_gateway("resumed", 1);
    let (mut publisher, player) = playing_on_gateway_1(
        &stream,
        Source::LongGopAnsweringPlis,
        Duration::from_secs(14),
    )
    .await?;
    // The publisher restarts ICE first: its replica must carry both sides' new credentials.
    tokio::time::sleep(Duration::from_secs(1)).await;
    publisher.restart_ice().await.context("ICE restart")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = publisher.stats();

    // Gateway 1 dies (SIGKILL: nothing handed off); the balancer spreads its flows over 2 and 3.
    signal(&cluster.gateways[0], "-KILL")?;
    let killed = std::time::Instant::now();
    let killed_at = seconds_of_day(std::time::SystemTime::now());
    rig(&["drop", "1"])?;
    let report = player.await.context("player panicked")??;
    let publisher_stats = publisher.stats();
    let resumed: Vec<String> = cluster.gateways[1..]
        .iter()
        .flat_map(|g| {
            g.log_tail(1 << 20)
                .lines()
                .filter(|l| l.contains("resumed a session of another gateway"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let after: Vec<f64> = resumed
        .iter()
        .filter_map(|l| log_seconds_of_day(l))
        .map(|at| at - killed_at)
        .collect();
    println!(
        "killed {:?} ago; sessions resumed {after:.2?} s after the kill: {resumed:#?}; player {} frames {:?}; publisher {publisher_stats:?}",
        killed.elapsed(),
        report.video_frames,
        report.sequence
    );
    ensure!(
        !publisher.is_finished(),
        "the publisher's session ended: it would have had to POST again"
    );
    let s = &report.sequence;
    ensure!(
        report.error.is_none() && whole_across_outage(s),
        "the player across the kill: frames not whole and in order: {s:?} ({:?})",
        report.error
    );
    // 14 s of 30 fps; the 3 s before the kill are 90 of them, the outage a few seconds.
    ensure!(
        report.video_frames >= 150
            && publisher_stats.video_frames_sent > before.video_frames_sent + 200,
        "the player got {} frames across the kill (publisher sent {} since), resumes: {resumed:?}",
        report.video_frames,
        publisher_stats.video_frames_sent - before.video_frames_sent
    );
    // The resumed player asked for a keyframe (8 s apart in this file), and the request reached
    // the publisher through its resumed session: SRTCP went on past the old holder's index.
    ensure!(
        publisher_stats.keyframe_jumps > before.keyframe_jumps,
        "no keyframe request reached the resumed publisher: {publisher_stats:?}"
    );
    ensure!(resumed.len() >= 2, "both sessions resumed: {resumed:?}");
    // The player's DELETE, through whatever gateway its HTTP lands on, reached the gateway
    // that resumed its session.
    ensure!(
        report.delete_error.is_none(),
        "the player's DELETE: {:?}",
        report.delete_error
    );
    // A new viewer joins the resumed publisher through the gateway that does not hold it (its
    // HTTP there; its UDP, like the publisher's, to the holder): that gateway finds the stream
    // at its new home. The publisher's own DELETE (on a new connection: its keep-alive one went
    // to the dead gateway) finds its session.
    let resource = publisher.resource_url().to_string();
    let session = publisher
        .session_id()
        .context("the publisher's resource names no session")?;
    let holder = (2..=GATEWAYS)
        .find(|i| {
            cluster.gateways[i - 1]
                .log_tail(1 << 20)
                .lines()
                .any(|l| l.contains("resumed a session of another gateway") && l.contains(&session))
        })
        .with_context(|| format!("no gateway resumed the publisher {session}"))?;
    let other = (2..=GATEWAYS)
        .find(|i| *i != holder)
        .context("a third gateway")?;
    rig(&["split", &other.to_string(), &holder.to_string()])?;
    // Another ICE restart, its PATCH on the other gateway (forwarded to the holder), with the
    // ETag the publisher holds: the resumed session kept it. The late viewer below gets the
    // media that flows with the new credentials.
    publisher
        .restart_ice()
        .await
        .context("an ICE restart after the kill")?;
    let late = play(
        MediaSource::fixture("long-gop.mp4")?.catalog(),
        play_through_vip(&stream, Duration::from_secs(3))?,
    )
    .await?;
    ensure!(
        whole_across_outage(&late.sequence) && late.video_frames >= 30,
        "a viewer after the kill: {} frames, {:?} ({:?})",
        late.video_frames,
        late.sequence,
        late.error
    );
    let deleted = http_client_from(CLIENT.parse()?)?
        .delete(&resource)
        .send()
        .await?;
    let _ = publisher.stop().await;
    ensure!(
        deleted.status().is_success(),
        "the publisher's DELETE after the kill: {}",
        deleted.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_gateway_hands_its_sessions_off_at_the_drain_timeout() -> Result<()> {
    let _rig = Rig::up()?;
    let mut cluster = rig_cluster_with(certs()?, &["--drain-timeout-ms", "2000"]).await?;
    // The stream's directory home is the gateway that leaves, too.
    let stream = homed_on_gateway("handed", 1);
    let (publisher, player) = playing_on_gateway_1(
        &stream,
        Source::LongGopAnsweringPlis,
        Duration::from_secs(10),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGTERM, and the balancer sends the flows to gateway 2 (which tunnels them back to the
    // draining gateway 1). After 2 s of drain, gateway 1 hands its sessions off and exits;
    // gateway 2 resumes them on the clients' next checks.
    signal(&cluster.gateways[0], "-TERM")?;
    let drained_at = seconds_of_day(std::time::SystemTime::now());
    rig(&["split", "2", "2"])?;
    let report = player.await.context("player panicked")??;
    let publisher_stats = publisher.stats();
    ensure!(
        !cluster.gateways[0].is_running(),
        "gateway 1 still runs 8 s after SIGTERM with a 2 s drain timeout"
    );
    let log1 = cluster.gateways[0].log_tail(1 << 20);
    let log2 = cluster.gateways[1].log_tail(1 << 20);
    let exited = log1
        .lines()
        .find(|l| l.contains("sessions handed off to the cluster"))
        .and_then(log_seconds_of_day);
    let resumed: Vec<f64> = log2
        .lines()
        .filter(|l| l.contains("resumed a session of another gateway"))
        .filter_map(log_seconds_of_day)
        .collect();
    println!(
        "drain: handed off {:.2?} s after SIGTERM; resumed {:.2?} s after the hand-off; player {} frames {:?}",
        exited.map(|e| e - drained_at),
        resumed
            .iter()
            .map(|r| r - exited.unwrap_or(drained_at))
            .collect::<Vec<_>>(),
        report.video_frames,
        report.sequence
    );
    ensure!(
        resumed.len() == 2,
        "gateway 2 resumed {} sessions: {}",
        resumed.len(),
        &log2[log2.len().saturating_sub(3000)..]
    );
    ensure!(!publisher.is_finished(), "the publisher had to POST again");
    let s = &report.sequence;
    ensure!(
        report.error.is_none() && whole_across_outage(s) && report.video_frames >= 150,
        "the player across the hand-off: {} frames, {s:?} ({:?}); gateway 2: {}",
        report.video_frames,
        report.error,
        &log2[log2.len().saturating_sub(6000)..]
    );
    ensure!(
        publisher_stats.video_frames_sent > 200,
        "the publisher kept sending: {publisher_stats:?}"
    );
    let _ = publisher.stop().await;
    cluster.gateways.clear();
    Ok(())
}

/// Every frame whole (decodable from a keyframe) and in order, none twice, the source never
/// seen to start over; frames lost while a session moved are allowed (a gap), since nothing
/// can carry them while no gateway serves it. (The publisher also jumps ahead to a keyframe
/// when asked for one, another gap.)
fn whole_across_outage(s: &whip_tests::sequence_check::SequenceStats) -> bool {
    s.frames > 0
        && s.first_is_keyframe
        && s.unknown == 0
        && s.out_of_order == 0
        && s.duplicates == 0
        && s.undecodable == 0
        && s.restarts == 0
}

/// Seconds since midnight (UTC) of `t`, as the gateways' log lines have it.
fn seconds_of_day(t: std::time::SystemTime) -> f64 {
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    since % 86_400.0
}

/// Seconds since midnight of a log line's `…THH:MM:SS.ffffffZ` timestamp.
fn log_seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
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
