//! A whole cluster on loopback, as separate processes: an origin gateway, two `relay` processes
//! (tier 1) and three edge gateways, linked by QUIC with the test-only loss shaper dropping 5 % of
//! media datagrams on every node's outgoing links. A WHIP publisher sends to the origin; WHEP
//! viewers on every edge — which have never seen the stream — must get every frame, through a
//! tree built on demand; killing the relay a viewer hangs below must not need a new WHEP POST;
//! a node without the cluster key gets nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer, WhipPublisher,
};

mod common;
use common::*;

/// Loss on every node-to-node link, in each direction.
const LINK_LOSS: f64 = 0.05;

fn print_report(label: &str, r: &PlayReport) {
    println!(
        "{label}: frames {} first_frame_ms {:?} whole_in_order {} sequence {:?}",
        r.video_frames, r.first_frame_ms, r.whole_in_order, r.sequence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_edge_get_every_frame_through_lossy_relays() -> Result<()> {
    let c = cluster(3, 2, LINK_LOSS).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("concert")),
    )
    .await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;

    let mut viewers = Vec::new();
    for edge in &c.gateways[1..] {
        let opts = PlayOptions {
            duration: Duration::from_secs(5),
            // 5 % loss on the last mile too; repaired by the edge's caches.
            drop_every: Some(20),
            ..PlayOptions::new(edge.whep_url("concert"))
        };
        viewers.push(tokio::spawn(whip_tests::play(media.catalog(), opts)));
    }
    let mut reports = Vec::new();
    for v in viewers {
        reports.push(v.await.context("viewer panicked")??);
    }
    for (i, r) in reports.iter().enumerate() {
        print_report(&format!("edge {i}"), r);
    }
    let mut node_stats = Vec::new();
    for (i, g) in c.gateways.iter().enumerate() {
        let s = g.stats().await?;
        println!("gateway {i} cluster: {}", s["cluster"]);
        node_stats.push(s);
    }
    for r in &c.relays {
        let s = r.stats().await?;
        println!("relay {}: {}", r.node, s);
    }
    for (i, r) in reports.iter().enumerate() {
        ensure!(r.error.is_none(), "edge {i}: {:?}", r.error);
        ensure!(
            r.video_frames >= 100,
            "edge {i}: only {} frames in 5 s",
            r.video_frames
        );
        let delivered =
            r.sequence.decodable as f64 / (r.sequence.frames + r.sequence.missing).max(1) as f64;
        ensure!(
            delivered >= 0.995,
            "edge {i}: {delivered:.4} of frames decodable under 5 % loss per hop: {:?}",
            r.sequence
        );
    }
    let answered: u64 = c
        .gateways
        .iter()
        .zip(&node_stats)
        .map(|(_, s)| s["cluster"]["tree"]["nacks_answered"].as_u64().unwrap_or(0))
        .sum();
    ensure!(
        answered > 0,
        "no node answered a NACK although every link drops 5 %"
    );
    publisher.stop().await?;
    let _ = &c.certs;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_resume_without_a_new_post_when_their_relay_dies() -> Result<()> {
    let mut c = cluster(1, 2, LINK_LOSS).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("kill")),
    )
    .await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let opts = PlayOptions {
        duration: Duration::from_secs(9),
        ..PlayOptions::new(c.gateways[1].whep_url("kill"))
    };
    let player = WhepPlayer::start(media.catalog(), opts).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        player.report().video_frames > 20,
        "no frames before the kill: {:?}",
        player.report().video_frames
    );

    let carrier = video_carrier(&c.relays).await?;
    let killed = c.relays.remove(carrier);
    let before = player.report().video_frames;
    let killed_at = Instant::now();
    drop(killed);
    // Watch frames resume.
    let mut resumed = None;
    let mut last = before;
    let mut stalled_since = Instant::now();
    while killed_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = player.report().video_frames;
        if now > last {
            if now > before + 5 && resumed.is_none() && stalled_since.elapsed() >= Duration::ZERO {
                resumed = Some(killed_at.elapsed());
            }
            last = now;
            stalled_since = Instant::now();
        }
    }
    let report = player.finish().await?;
    print_report("after the kill", &report);
    let resumed = resumed.context("frames did not resume after the relay died")?;
    println!("frames resumed {:?} after the relay was killed", resumed);
    ensure!(
        resumed < Duration::from_secs(3),
        "took {resumed:?} to resume"
    );
    ensure!(
        report.video_frames > before + 60,
        "delivery did not continue: {} → {}",
        before,
        report.video_frames
    );
    publisher.stop().await?;
    Ok(())
}

/// Which relay carries the *video* track (audio may hang below the other relay).
async fn video_carrier(relays: &[Relay]) -> Result<usize> {
    let mut carrier = None;
    for (i, r) in relays.iter().enumerate() {
        let s = r.stats().await?;
        let carries_video = s["tracks"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"].as_str().is_some_and(|k| k.ends_with("/video")))
        });
        if carries_video {
            carrier = Some(i);
        }
    }
    carrier.context("no relay carries the video track")
}

/// SIGTERM on the relay a viewer's video hangs below: the relay drains (its children move to
/// the other relay while it still feeds them) and exits; the viewer sees every frame once and
/// in order, and nothing on the way needed repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_drained_mid_stream_loses_no_frame() -> Result<()> {
    let mut c = cluster(1, 2, 0.0).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("drain")),
    )
    .await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let opts = PlayOptions {
        duration: Duration::from_secs(7),
        ..PlayOptions::new(c.gateways[1].whep_url("drain"))
    };
    let player = WhepPlayer::start(media.catalog(), opts).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let carrier = video_carrier(&c.relays).await?;
    let edge_nacks = |s: &serde_json::Value| s["cluster"]["tree"]["nacks_sent"].as_u64();
    let nacks_before = edge_nacks(&c.gateways[1].stats().await?);
    let before = player.report().video_frames;
    let mut relay = c.relays.remove(carrier);
    let (clean, took) = tokio::task::spawn_blocking(move || {
        let r = relay.terminate(Duration::from_secs(12));
        (r, relay)
    })
    .await
    .map(|(r, relay)| {
        let log = relay.log();
        (r, log)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
    .and_then(|(r, log)| {
        let (ok, took) = r?;
        ensure!(
            log.contains("drained: no child left"),
            "the relay closed its links before its children had moved: {log}"
        );
        Ok((ok, took))
    })?;
    ensure!(clean, "the relay exited with an error after draining");
    let report = player.finish().await?;
    print_report("across the drain", &report);
    let nacks_after = edge_nacks(&c.gateways[1].stats().await?);
    println!(
        "relay drained and exited in {took:?}; edge NACKs sent {nacks_before:?} → {nacks_after:?}; viewer NACKs {}",
        report.nacks_sent
    );
    ensure!(report.error.is_none(), "{:?}", report.error);
    ensure!(
        report.video_frames > before + 100,
        "delivery did not continue: {before} → {}",
        report.video_frames
    );
    ensure!(
        report.whole_in_order && report.sequence.missing == 0 && report.sequence.gaps == 0,
        "frames lost or out of order across the drain: {:?}",
        report.sequence
    );
    ensure!(
        nacks_after == nacks_before,
        "the edge had to repair: {nacks_before:?} → {nacks_after:?}"
    );
    publisher.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_key_gets_nothing() -> Result<()> {
    let c = cluster(1, 1, LINK_LOSS).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("secret")),
    )
    .await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;

    // A gateway with its own certificate, claiming to be a member.
    let bogus_certs = certs()?;
    let port = free_udp_port()?;
    let node = format!("127.0.0.1:{port}");
    let origin_node = c.gateways[0].stats().await?["cluster"]["node_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let args: Vec<String> = vec![
        "--cluster-listen".into(),
        node.clone(),
        "--node-id".into(),
        node.clone(),
        "--cluster-cert".into(),
        bogus_certs.cert.display().to_string(),
        "--cluster-key".into(),
        bogus_certs.key.display().to_string(),
        "--cluster-member".into(),
        format!("0:{origin_node}"),
        "--cluster-member".into(),
        format!("0:{node}"),
    ];
    let bogus = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Gateway::start_with_args(&refs)
    })
    .await??;
    let r = whip_tests::play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(2),
            ..PlayOptions::new(bogus.whep_url("secret"))
        },
    )
    .await;
    let got_frames = r.as_ref().map(|r| r.video_frames).unwrap_or(0);
    ensure!(
        got_frames == 0,
        "a node outside the cluster received {got_frames} frames"
    );
    let origin = c.gateways[0].stats().await?;
    println!("origin cluster stats: {}", origin["cluster"]);
    ensure!(
        origin["cluster"]["refused_handshakes"]
            .as_u64()
            .unwrap_or(0)
            > 0
            || bogus.stats().await?["cluster"]["links"]
                .as_array()
                .is_none_or(|l| l.is_empty()),
        "the bogus node linked up"
    );
    publisher.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_is_torn_down_after_its_viewers_leave() -> Result<()> {
    let c = cluster(1, 1, LINK_LOSS).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("brief")),
    )
    .await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let report = whip_tests::play(
        media.catalog(),
        PlayOptions {
            duration: Duration::from_secs(2),
            ..PlayOptions::new(c.gateways[1].whep_url("brief"))
        },
    )
    .await?;
    ensure!(
        report.video_frames > 20,
        "the viewer got {} frames",
        report.video_frames
    );
    let relay_tracks = |s: &serde_json::Value| s["tracks"].as_array().map_or(0, |t| t.len());
    // The viewer left (DELETE): edge, then relay, unsubscribe after the grace period each.
    let deadline = Instant::now() + Duration::from_secs(6);
    let origin_children = |s: &serde_json::Value| -> u64 {
        s["cluster"]["tracks"].as_array().map_or(0, |t| {
            t.iter().map(|t| t["children"].as_u64().unwrap_or(0)).sum()
        })
    };
    loop {
        let relay = c.relays[0].stats().await?;
        let edge = c.gateways[1].stats().await?;
        let origin = c.gateways[0].stats().await?;
        let edge_tracks = edge["cluster"]["tracks"].as_array().map_or(0, |t| t.len());
        // The relay's Unsubscribe reaches the origin just after the relay drops the track.
        if relay_tracks(&relay) == 0 && edge_tracks == 0 && origin_children(&origin) == 0 {
            println!("tree torn down: relay {relay}, edge tracks {edge_tracks}");
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the tree is still up: relay {relay}, edge {}, origin feeds {} children",
                edge["cluster"],
                origin_children(&origin)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.stop().await?;
    Ok(())
}

/// The session/track API across gateways: a session on one gateway pulls, by (session id, track
/// name), a track another gateway's session pushes, as Calls apps do when a load balancer puts
/// their sessions on different gateways. The pushing session lists its tracks in the cluster's
/// directory (`media:{id}`); the pulling gateway finds them there and subscribes to the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pulls_a_track_pushed_on_another_gateway() -> Result<()> {
    const APP: &str = "app1";
    const SECRET: &str = "s3cret-s3cret-s3cret";
    let app = format!("{APP}:{SECRET}");
    let c = cluster_with_args(1, 1, 0.0, &["--app", &app]).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("api-x")),
    )
    .await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let session = publisher.session_id().context("publisher session id")?;
    let base = |g: &Gateway| format!("{}/v1/apps/{APP}", g.base_url());
    let pull = |g: &Gateway, name: &str| PlayOptions {
        duration: Duration::from_secs(3),
        token: Some(SECRET.into()),
        api_track: Some(whip_tests::signaling::ApiTrack {
            session_id: session.clone(),
            track_name: name.into(),
            preferred_rid: None,
        }),
        ..PlayOptions::new(base(g))
    };
    let r = whip_tests::play(media.catalog(), pull(&c.gateways[1], "video")).await?;
    print_report("API pull on the other gateway", &r);
    ensure!(
        r.error.is_none() && r.whole_in_order && r.video_frames >= 30,
        "the pull across gateways: {} frames, whole and in order {} ({:?})",
        r.video_frames,
        r.whole_in_order,
        r.error
    );
    // A track the session does not push is still a per-track error, not a hang.
    let missing = whip_tests::play(media.catalog(), pull(&c.gateways[1], "nope")).await;
    ensure!(
        missing.as_ref().map_or(true, |r| r.error.is_some()),
        "pulling a track nobody pushes played: {missing:?}"
    );
    publisher.stop().await?;
    Ok(())
}

/// One address with gateways that serve HTTPS themselves: a request for a session another
/// gateway holds is forwarded over HTTPS, to a peer that must present the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_session_elsewhere_are_forwarded_over_https() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let cluster = cluster_with_args(1, 1, 0.0, &["--tls-cert", &c, "--tls-key", &k]).await?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let to = |g: &Gateway| -> Result<(reqwest::Client, String)> {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes())?)
            .resolve("localhost", g.http_addr())
            .build()?;
        Ok((
            client,
            format!("https://localhost:{}", g.http_addr().port()),
        ))
    };
    let (first, first_base) = to(&cluster.gateways[0])?;
    let created = first
        .post(format!("{first_base}/whip/tls-forward"))
        .header("content-type", "application/sdp")
        .body(whip_tests::signaling::bare_video_offer()?)
        .send()
        .await?;
    ensure!(created.status() == 201, "POST: {}", created.status());
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location")?
        .to_string();
    // The DELETE reaches the other gateway, which forwards it over HTTPS to the owner.
    let (second, second_base) = to(&cluster.gateways[1])?;
    let deleted = second
        .delete(format!("{second_base}{location}"))
        .send()
        .await?;
    ensure!(
        deleted.status() == 200,
        "DELETE through the other gateway: {} {}",
        deleted.status(),
        deleted.text().await.unwrap_or_default()
    );
    let again = second
        .delete(format!("{second_base}{location}"))
        .send()
        .await?;
    ensure!(
        again.status() == 404,
        "the session is gone on its owner: {}",
        again.status()
    );
    Ok(())
}

/// Two gateways that both serve one session (both resumed it: two checks of one client reached
/// both in one turn; or one adopted it before its handshake) settle it from each other's
/// replicas: a session that connected is kept over one that did not, between two connected ones
/// the lower address keeps it, and one the client never reached yields to an adopter. The loser
/// drops it without a word to the client. Replicas are taken only when sealed under the
/// cluster's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_served_by_two_gateways_is_kept_by_one() -> Result<()> {
    use gateway::owner_tag::{ClusterSecrets, Owner};
    use gateway::replica::{Batch, Replica, ReplicaRole, seal};
    let cluster = cluster(1, 1, 0.0).await?;
    let secrets = ClusterSecrets::derive(&std::fs::read(&cluster.certs.key)?);
    let owner = |g: &Gateway| -> Result<Owner> {
        let std::net::IpAddr::V4(ip) = g.http_addr().ip() else {
            bail!("IPv4 gateways");
        };
        Ok(Owner {
            ip,
            udp_port: g.udp_addr().port(),
            http_port: g.http_addr().port(),
        })
    };
    let (a, b) = (&cluster.gateways[0], &cluster.gateways[1]);
    let (low, high) = if (owner(a)?.ip, owner(a)?.udp_port) < (owner(b)?.ip, owner(b)?.udp_port) {
        (a, b)
    } else {
        (b, a)
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::new();
    let id_of = |url: &str| url.rsplit('/').next().unwrap_or_default().to_string();
    // A session the client never reached (a bare offer) on each gateway…
    let bare_on = |g: &Gateway, stream: &'static str| {
        let (http, base) = (http.clone(), format!("http://{}", g.http_addr()));
        async move {
            let created = http
                .post(format!("{base}/whip/{stream}"))
                .header("content-type", "application/sdp")
                .body(whip_tests::signaling::bare_video_offer()?)
                .send()
                .await?;
            ensure!(created.status() == 201, "POST: {}", created.status());
            let location = created
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .context("no Location")?
                .to_string();
            Ok::<_, anyhow::Error>(location)
        }
    };
    let untouched_high = id_of(&bare_on(high, "bare-high").await?);
    let untouched_low = id_of(&bare_on(low, "bare-low").await?);
    // …and a connected one on the higher gateway.
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher =
        WhipPublisher::start(media, PublishOptions::new(high.whip_url("twice"))).await?;
    publisher
        .wait_for_frames(5, Duration::from_secs(10))
        .await?;
    let connected_high = id_of(publisher.resource_url().as_str());

    let claim = |id: &str, holder: Owner, pending: bool| -> Result<Vec<u8>> {
        let replica = Replica {
            id: id.parse().map_err(|_| anyhow::anyhow!("id"))?,
            holder,
            role: ReplicaRole::Publisher,
            stream: "twice".into(),
            offer: whip_tests::signaling::bare_video_offer()?,
            ufrag: "0123456789abcdef0123456789abcdef".into(),
            pwd: "0123456789abcdef0123456789abcdef".into(),
            keying_material: if pending { vec![] } else { vec![1; 60] },
            profile: if pending { 0 } else { 1 },
            peer_cert: vec![2; 100],
            fingerprint: String::new(),
            etag: String::new(),
        };
        Ok(seal(
            &secrets.replica_key,
            &Batch {
                from: Some(holder),
                replicas: vec![replica],
                ..Batch::default()
            },
        ))
    };
    let post = |g: &Gateway, body: Vec<u8>| {
        http.post(format!("http://{}/internal/v1/replicas", g.http_addr()))
            .body(body)
            .send()
    };
    // A connected copy elsewhere (the lower address) beats an untouched one here.
    ensure!(
        post(high, claim(&untouched_high, owner(low)?, false)?)
            .await?
            .status()
            == 204
    );
    ensure!(settled(high, &untouched_high).await? == "released");
    // A connected copy on the higher address still beats one that never connected.
    ensure!(
        post(low, claim(&untouched_low, owner(high)?, false)?)
            .await?
            .status()
            == 204
    );
    ensure!(settled(low, &untouched_low).await? == "released");
    // A session connected here stays, against an adopter's claim and a higher address's.
    ensure!(
        post(high, claim(&connected_high, owner(low)?, true)?)
            .await?
            .status()
            == 204
    );
    ensure!(settled(high, &connected_high).await? == "kept");
    ensure!(!publisher.is_finished(), "the kept session goes on");
    let _ = publisher.stop().await;

    // Not sealed under the cluster's key: refused, and nothing changes.
    let forged = post(low, seal(&[7u8; 32], &Batch::default())).await?;
    ensure!(
        forged.status() == 403
            && forged
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json")),
        "a forged batch: {}",
        forged.status()
    );
    Ok(())
}

/// What gateway `g` decided about session `id` served elsewhere too: "released" or "kept".
async fn settled(g: &Gateway, id: &str) -> Result<&'static str> {
    let t0 = std::time::Instant::now();
    loop {
        let log = g.log_tail(1 << 20);
        let decided = log.lines().filter(|l| l.contains(id)).find_map(|l| {
            if l.contains("released here") {
                Some("released")
            } else if l.contains("kept here") {
                Some("kept")
            } else {
                None
            }
        });
        if let Some(d) = decided {
            return Ok(d);
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(5),
            "{id}: nothing decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
