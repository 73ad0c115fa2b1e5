//! A whole cluster on loopback, as separate processes: an origin gateway, two `relay` processes
//! (tier 1) and three edge gateways, linked by QUIC with the test-only loss shaper dropping 5 % of
//! media datagrams on every node's outgoing links. A WHIP publisher sends to the origin; WHEP
//! viewers on every edge — which have never seen the stream — must get every frame, through a
//! tree built on demand; killing the relay a viewer hangs below must not need a new WHEP POST;
//! a node without the cluster key gets nothing.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use whip_tests::harness::relay_binary;
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer, WhipPublisher,
};

/// Loss on every node-to-node link, in each direction.
const LINK_LOSS: &str = "0.05";
/// Trees are pruned this long after their last viewer leaves (5 s by default; short for tests).
const PRUNE_GRACE_MS: &str = "500";

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn certs() -> Result<Certs> {
    let dir = tempfile::tempdir()?;
    let (cert_pem, key_pem) =
        relay::shell::cluster_tls::ClusterIdentity::generate().map_err(anyhow::Error::msg)?;
    let cert = dir.path().join("cluster.pem");
    let key = dir.path().join("cluster.key");
    std::fs::write(&cert, cert_pem)?;
    std::fs::write(&key, key_pem)?;
    Ok(Certs {
        _dir: dir,
        cert,
        key,
    })
}

/// A `relay` process; killed on drop.
struct Relay {
    child: Child,
    node: String,
    stats: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(certs: &Certs, port: u16, members: &[String]) -> Result<Relay> {
        let node = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(relay_binary()?);
        cmd.args([
            "--listen",
            &node,
            "--node-id",
            &node,
            "--tier",
            "1",
            "--stats-listen",
            "127.0.0.1:0",
        ])
        .arg("--cluster-cert")
        .arg(&certs.cert)
        .arg("--cluster-key")
        .arg(&certs.key)
        .args(["--test-drop-datagrams", LINK_LOSS]);
        for m in members {
            cmd.args(["--member", m]);
        }
        let log = std::fs::File::create(std::env::temp_dir().join(format!("relay-{port}.stderr")))?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("spawning relay")?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(line) = lines.next() else { break };
            let line = line?;
            if let Some(rest) = line.strip_prefix("READY ") {
                let stats = rest
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("stats="))
                    .context("READY line without stats=")?
                    .parse()?;
                return Ok(Relay { child, node, stats });
            }
        }
        bail!("relay on {port} did not print READY")
    }

    async fn stats(&self) -> Result<serde_json::Value> {
        let url = format!("http://{}/v1/stats", self.stats);
        let text = whip_tests::signaling::http_client()?
            .get(url)
            .send()
            .await?
            .text()
            .await?;
        Ok(serde_json::from_str(&text)?)
    }
}

struct Cluster {
    certs: Certs,
    gateways: Vec<Gateway>,
    relays: Vec<Relay>,
}

/// Origin = gateways[0]; edges = gateways[1..].
async fn cluster(edges: usize, relays: usize) -> Result<Cluster> {
    let certs = certs()?;
    let gw_ports: Vec<u16> = (0..=edges)
        .map(|_| free_udp_port())
        .collect::<Result<_>>()?;
    let relay_ports: Vec<u16> = (0..relays)
        .map(|_| free_udp_port())
        .collect::<Result<_>>()?;
    let mut members: Vec<String> = gw_ports
        .iter()
        .map(|p| format!("0:127.0.0.1:{p}"))
        .collect();
    members.extend(relay_ports.iter().map(|p| format!("1:127.0.0.1:{p}")));
    let relays = relay_ports
        .iter()
        .map(|p| Relay::start(&certs, *p, &members))
        .collect::<Result<Vec<_>>>()?;
    let mut gateways = Vec::new();
    for port in gw_ports {
        let node = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "--cluster-listen".into(),
            node.clone(),
            "--node-id".into(),
            node,
            "--cluster-cert".into(),
            certs.cert.display().to_string(),
            "--cluster-key".into(),
            certs.key.display().to_string(),
            "--test-drop-datagrams".into(),
            LINK_LOSS.into(),
            "--cluster-prune-grace-ms".into(),
            PRUNE_GRACE_MS.into(),
        ];
        for m in &members {
            args.push("--cluster-member".into());
            args.push(m.clone());
        }
        let gw = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Gateway::start_with_args(&refs)
        })
        .await
        .context("gateway start panicked")??;
        gateways.push(gw);
    }
    Ok(Cluster {
        certs,
        gateways,
        relays,
    })
}

fn print_report(label: &str, r: &PlayReport) {
    println!(
        "{label}: frames {} first_frame_ms {:?} whole_in_order {} sequence {:?}",
        r.video_frames, r.first_frame_ms, r.whole_in_order, r.sequence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_edge_get_every_frame_through_lossy_relays() -> Result<()> {
    let c = cluster(3, 2).await?;
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
    let mut c = cluster(1, 2).await?;
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

    // Which relay carries the track? Its stats list it.
    let mut carrier = None;
    for (i, r) in c.relays.iter().enumerate() {
        let s = r.stats().await?;
        if s["tracks"].as_array().is_some_and(|t| !t.is_empty()) {
            carrier = Some(i);
        }
    }
    let carrier = carrier.context("no relay carries the track")?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_key_gets_nothing() -> Result<()> {
    let c = cluster(1, 1).await?;
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
    let c = cluster(1, 1).await?;
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
    loop {
        let relay = c.relays[0].stats().await?;
        let edge = c.gateways[1].stats().await?;
        let edge_tracks = edge["cluster"]["tracks"].as_array().map_or(0, |t| t.len());
        if relay_tracks(&relay) == 0 && edge_tracks == 0 {
            println!("tree torn down: relay {relay}, edge tracks {edge_tracks}");
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the tree is still up: relay {relay}, edge {}",
                edge["cluster"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let origin = c.gateways[0].stats().await?;
    let children: u64 = origin["cluster"]["tracks"].as_array().map_or(0, |t| {
        t.iter().map(|t| t["children"].as_u64().unwrap_or(0)).sum()
    });
    ensure!(children == 0, "the origin still feeds {children} children");
    publisher.stop().await?;
    Ok(())
}
