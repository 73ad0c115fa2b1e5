//! The relay tier for real: `relay` binary processes between in-process gateway-tier nodes
//! (`cluster::start`), QUIC with mutual TLS on 127.0.0.1, loss injected by the test-only shaper.
//! Proves delivery under loss through a relay with per-hop repair, that a node without the
//! cluster key (or of another cluster) is refused and gets no media, and that an edge re-parents
//! on its own when its relay process is killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_proto::link::{StreamOrigin, StreamTrack, SubscribeOk, TrackKey, TrackKind};
use relay_proto::tree::TreeConfig;
use relay_proto::{Codec, MediaPacket};
use relay_shell::cluster::{self, ClusterConfig, ClusterEvent, ClusterHandle, Local};
use relay_shell::cluster_tls::{ClusterIdentity, LinkTiming};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const SESSION: [u8; 16] = [0x5e; 16];

/// A cluster certificate made by `relay cluster-cert`, as an operator would.
struct Cert {
    dir: tempfile::TempDir,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["cluster-cert", "--out"])
            .arg(dir.path())
            .output()
            .expect("run relay cluster-cert");
        assert!(out.status.success(), "relay cluster-cert: {out:?}");
        // Never overwrites an identity.
        let again = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["cluster-cert", "--out"])
            .arg(dir.path())
            .output()
            .expect("run relay cluster-cert");
        assert!(!again.status.success(), "cluster-cert refuses to overwrite");
        Cert { dir }
    }

    fn pem(&self) -> PathBuf {
        self.dir.path().join("cluster.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("cluster.key")
    }

    fn identity(&self) -> ClusterIdentity {
        ClusterIdentity::load(&self.pem(), &self.key()).expect("load cluster identity")
    }
}

/// A free UDP port on loopback (released again at once: a small race the tests accept).
fn free_addr() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").to_string()
}

/// A `relay` process; killed when dropped, its log printed if the test is failing.
struct RelayProcess {
    child: tokio::process::Child,
    id: String,
    stats: SocketAddr,
    log: PathBuf,
}

impl RelayProcess {
    async fn spawn(cert: &Cert, id: &str, members: &[(u8, String)], drop: f64) -> RelayProcess {
        let log = cert
            .dir
            .path()
            .join(format!("relay-{}.log", id.replace(':', "_")));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(["--listen", id, "--node-id", id, "--tier", "1"])
            .args(["--cluster", "test", "--stats-listen", "127.0.0.1:0"])
            .arg("--cluster-cert")
            .arg(cert.pem())
            .arg("--cluster-key")
            .arg(cert.key())
            .args([
                "--test-drop-datagrams",
                &drop.to_string(),
                "--test-seed",
                "11",
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (tier, m) in members {
            cmd.arg("--member").arg(format!("{tier}:{m}"));
        }
        let mut child = cmd.spawn().expect("spawn relay");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("relay prints READY in time")
            .expect("read stdout")
            .expect("a line");
        // READY cluster=<addr> stats=<addr>
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {ready:?}"))
                .to_string()
        };
        assert!(ready.starts_with("READY "), "{ready}");
        assert_eq!(field("cluster="), id);
        let stats = field("stats=").parse().expect("stats addr");
        RelayProcess {
            child,
            id: id.to_string(),
            stats,
            log,
        }
    }

    async fn stats(&self) -> Value {
        http_json(self.stats, "/v1/stats").await
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // On failure, or when asked for logs with RUST_LOG.
        if std::thread::panicking() || std::env::var_os("RUST_LOG").is_some() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- relay {} log (last lines) ----", self.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// HTTP/1.1 GET with no client library: the stats endpoint is plain JSON.
async fn http_json(addr: SocketAddr, path: &str) -> Value {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect stats");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
        .await
        .expect("stats in time")
        .expect("read response");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("stats JSON: {e}: {body}"))
}

/// What a node's event stream showed.
#[derive(Default)]
struct Log {
    delivered: Vec<(u64, Instant)>,
    ready: usize,
    ended: usize,
    locations: Vec<(String, Option<StreamOrigin>)>,
}

/// An in-process gateway-tier node with its events collected.
struct Node {
    handle: ClusterHandle,
    log: Arc<Mutex<Log>>,
    shutdown: CancellationToken,
}

impl Node {
    async fn start(
        id: &str,
        cluster_name: &str,
        identity: ClusterIdentity,
        members: &[(u8, String)],
        drop: f64,
        seed: u64,
    ) -> Node {
        // RUST_LOG=relay=debug shows the in-process nodes' logs too (the relays log to files).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let shutdown = CancellationToken::new();
        let config = ClusterConfig {
            node_id: id.to_string(),
            tier: 0,
            cluster: cluster_name.to_string(),
            listen: id.parse().expect("addr"),
            identity,
            members: members.to_vec(),
            dns: Vec::new(),
            dns_refresh: Duration::from_secs(2),
            timing: LinkTiming::default(),
            tree: TreeConfig::new(id, 0),
            drop_datagrams: drop,
            drop_seed: seed,
        };
        let (handle, mut events) = cluster::start(config, shutdown.clone())
            .await
            .expect("start node");
        let log = Arc::new(Mutex::new(Log::default()));
        tokio::spawn({
            let log = log.clone();
            async move {
                while let Some(e) = events.recv().await {
                    let mut l = log.lock().expect("log");
                    match e {
                        ClusterEvent::Deliver(_, p) => l.delivered.push((p.seq, Instant::now())),
                        ClusterEvent::Run(_, run, _) => {
                            let now = Instant::now();
                            l.delivered.extend(run.iter().map(|p| (p.seq, now)));
                        }
                        ClusterEvent::TrackReady(..) => l.ready += 1,
                        ClusterEvent::TrackEnded(_) => l.ended += 1,
                        ClusterEvent::StreamLocation(s, o) => l.locations.push((s, o)),
                        ClusterEvent::KeyframeRequest(_) | ClusterEvent::Drained => {}
                    }
                }
            }
        });
        Node {
            handle,
            log,
            shutdown,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("log")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn track(origin: &str) -> TrackKey {
    TrackKey {
        origin: origin.to_string(),
        session: SESSION,
        name: "video".into(),
    }
}

fn stream_origin(origin: &str) -> StreamOrigin {
    StreamOrigin {
        node: origin.to_string(),
        session: SESSION,
        tracks: vec![StreamTrack {
            name: "video".into(),
            kind: TrackKind::Video,
        }],
    }
}

/// The origin's publisher: a track at 200 packets/s, a keyframe every 100 packets.
struct Publisher {
    published: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Publisher {
    fn start(origin: &Node, origin_id: &str) -> Publisher {
        let key = track(origin_id);
        origin.handle.send(Local::Publish(SubscribeOk {
            track: key.clone(),
            channel: 0,
            first_seq: u64::MAX,
            codec: Codec::H264,
            clock_rate: 90_000,
            pt: 96,
            audio_channels: 0,
            fmtp: String::new(),
        }));
        let published = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let handle = origin.handle.clone();
        tokio::spawn({
            let published = published.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                let mut seq = 0u64;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let packet = Arc::new(MediaPacket {
                        seq,
                        rtp_time: seq * 450,
                        marker: seq % 5 == 4,
                        pt: 96,
                        payload: Arc::from(vec![(seq % 251) as u8; 900]),
                        keyframe_start: seq.is_multiple_of(100),
                        received: Instant::now(),
                    });
                    handle.send(Local::Packet(key.clone(), packet));
                    seq += 1;
                    published.store(seq, Ordering::Relaxed);
                }
            }
        });
        Publisher { published, stop }
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Distinct seqs delivered in `[from, to]`, and how many that range holds.
fn coverage(delivered: &[(u64, Instant)], from: u64, to: u64) -> (usize, usize) {
    let mut seqs: Vec<u64> = delivered
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| (from..=to).contains(s))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    (seqs.len(), (to + 1 - from) as usize)
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_gets_everything_through_a_relay_process_under_loss() {
    let cert = Cert::new();
    let (origin_id, edge_id, relay_id) = (free_addr(), free_addr(), free_addr());
    let members = vec![
        (0, origin_id.clone()),
        (0, edge_id.clone()),
        (1, relay_id.clone()),
    ];
    let relay = RelayProcess::spawn(&cert, &relay_id, &members, 0.05).await;
    let origin = Node::start(&origin_id, "test", cert.identity(), &members, 0.05, 1).await;
    let edge = Node::start(&edge_id, "test", cert.identity(), &members, 0.05, 2).await;

    let publisher = Publisher::start(&origin, &origin_id);
    origin
        .handle
        .send(Local::Announce("concert".into(), stream_origin(&origin_id)));

    // The edge finds the stream through its home node (the announce may still be on its way).
    let start = Instant::now();
    let location = loop {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no StreamLocation"
        );
        edge.handle.send(Local::Lookup("concert".into()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let found = edge
            .log()
            .locations
            .iter()
            .find_map(|(s, o)| (s == "concert").then(|| o.clone()).flatten());
        if let Some(o) = found {
            break o;
        }
    };
    assert_eq!(location, stream_origin(&origin_id));

    let key = location.track_key("video");
    edge.handle.send(Local::Subscribe(key.clone()));
    wait_for("first delivery", Duration::from_secs(5), || {
        !edge.log().delivered.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let published = publisher.published();

    let relay_stats = relay.stats().await;
    let edge_stats = edge.handle.stats();
    let origin_stats = origin.handle.stats();
    let (delivered, ready) = {
        let log = edge.log();
        (log.delivered.clone(), log.ready)
    };
    let first = delivered.iter().map(|(s, _)| *s).min().expect("delivered");
    // The tail may still be in repair: judge up to half a second before the end.
    let last = published.saturating_sub(100);
    let (got, want) = coverage(&delivered, first, last);
    let ratio = got as f64 / want as f64;
    println!(
        "delivery through the relay under 5% loss per hop: {got}/{want} = {ratio:.4} (first seq {first})"
    );
    println!("relay: {}", relay_stats["tree"]);
    println!("edge:  {:?}", edge_stats.tree);
    println!("origin: {:?}", origin_stats.tree);
    assert_eq!(ready, 1, "one TrackReady");
    assert_eq!(first % 100, 0, "playback starts at a keyframe: {first}");
    assert!(ratio >= 0.99, "delivered {ratio:.4}");

    let tracks = relay_stats["tracks"].as_array().expect("tracks");
    assert_eq!(tracks.len(), 1, "{tracks:?}");
    let label = format!("{origin_id}/{}/video", "5e".repeat(16));
    assert_eq!(tracks[0]["key"], label.as_str());
    assert_eq!(tracks[0]["children"], 1);
    assert_eq!(tracks[0]["parent"], origin_id.as_str());
    assert!(
        u(&relay_stats["tree"]["nacks_received"]) > 0,
        "the edge NACKed the relay"
    );
    assert!(
        u(&relay_stats["tree"]["nacks_answered"]) > 0,
        "the relay repaired the edge"
    );
    assert!(
        u(&relay_stats["tree"]["nacks_sent"]) > 0,
        "the relay NACKed the origin"
    );
    let shaped: u64 = relay_stats["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| u(&l["datagrams_dropped_by_shaper"]))
        .sum();
    assert!(shaped > 0, "the relay's shaper dropped datagrams");
    assert_eq!(edge_stats.tracks.len(), 1);
    assert_eq!(
        edge_stats.tracks[0].parent.as_deref(),
        Some(relay_id.as_str())
    );
    assert_eq!(u(&relay_stats["refused_handshakes"]), 0);
    let health = {
        let mut s = tokio::net::TcpStream::connect(relay.stats)
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut r = String::new();
        s.read_to_string(&mut r).await.expect("read");
        r
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_get_no_media() {
    let cert = Cert::new();
    let other_cert = Cert::new();
    let (origin_id, relay_id, bogus_id, foreign_id) =
        (free_addr(), free_addr(), free_addr(), free_addr());
    let members = vec![(0, origin_id.clone()), (1, relay_id.clone())];
    let relay = RelayProcess::spawn(&cert, &relay_id, &members, 0.0).await;
    let origin = Node::start(&origin_id, "test", cert.identity(), &members, 0.0, 1).await;
    let publisher = Publisher::start(&origin, &origin_id);

    // Without the cluster key: the TLS handshake fails.
    let mut bogus_members = members.clone();
    bogus_members.push((0, bogus_id.clone()));
    let bogus = Node::start(
        &bogus_id,
        "test",
        other_cert.identity(),
        &bogus_members,
        0.0,
        3,
    )
    .await;
    // With the key but of another cluster: the Hello is refused.
    let mut foreign_members = members.clone();
    foreign_members.push((0, foreign_id.clone()));
    let foreign = Node::start(
        &foreign_id,
        "other",
        cert.identity(),
        &foreign_members,
        0.0,
        4,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bogus.handle.send(Local::Subscribe(track(&origin_id)));
    foreign.handle.send(Local::Subscribe(track(&origin_id)));
    // Both try the relay, then the origin, then give the track up.
    wait_for("both strangers to give up", Duration::from_secs(8), || {
        bogus.log().ended > 0 && foreign.log().ended > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(publisher.published() > 100, "the origin was publishing");

    let relay_stats = relay.stats().await;
    let (b, f, o) = (
        bogus.handle.stats(),
        foreign.handle.stats(),
        origin.handle.stats(),
    );
    println!(
        "refused handshakes: relay {}, origin {}, bogus {}, foreign {}",
        relay_stats["refused_handshakes"],
        o.refused_handshakes,
        b.refused_handshakes,
        f.refused_handshakes
    );
    for (name, node, stats) in [("bogus", &bogus, &b), ("foreign", &foreign, &f)] {
        assert!(node.log().delivered.is_empty(), "{name} received media");
        assert_eq!(node.log().ready, 0, "{name} got a TrackReady");
        assert!(stats.refused_handshakes >= 1, "{name} counts its refusal");
        assert!(
            stats.links.is_empty(),
            "{name} has no link: {:?}",
            stats.links
        );
        assert_eq!(stats.tree.packets_in, 0);
    }
    assert!(
        u(&relay_stats["refused_handshakes"]) >= 2,
        "the relay counted both strangers: {}",
        relay_stats["refused_handshakes"]
    );
    assert!(
        o.refused_handshakes >= 2,
        "the origin counted both strangers"
    );
    assert!(
        relay_stats["links"].as_array().expect("links").is_empty(),
        "no stranger has a link to the relay: {}",
        relay_stats["links"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_reparents_when_its_relay_process_dies() {
    let cert = Cert::new();
    let (origin_id, edge_id, relay_a, relay_b) =
        (free_addr(), free_addr(), free_addr(), free_addr());
    let members = vec![
        (0, origin_id.clone()),
        (0, edge_id.clone()),
        (1, relay_a.clone()),
        (1, relay_b.clone()),
    ];
    let mut relays = [
        RelayProcess::spawn(&cert, &relay_a, &members, 0.0).await,
        RelayProcess::spawn(&cert, &relay_b, &members, 0.0).await,
    ];
    let origin = Node::start(&origin_id, "test", cert.identity(), &members, 0.0, 1).await;
    let edge = Node::start(&edge_id, "test", cert.identity(), &members, 0.0, 2).await;
    let publisher = Publisher::start(&origin, &origin_id);
    let key = track(&origin_id);
    edge.handle.send(Local::Subscribe(key.clone()));
    wait_for("a second of media", Duration::from_secs(5), || {
        edge.log().delivered.len() >= 200
    })
    .await;
    let mut parent = None;
    wait_for(
        "the edge's parent in its stats",
        Duration::from_secs(2),
        || {
            parent = edge
                .handle
                .stats()
                .tracks
                .first()
                .and_then(|t| t.parent.clone());
            parent.is_some()
        },
    )
    .await;
    let parent = parent.expect("parent");
    let victim = relays
        .iter()
        .position(|r| r.id == parent)
        .unwrap_or_else(|| panic!("the edge's parent {parent} is a relay"));

    let seq_at_kill = publisher.published();
    let killed_at = Instant::now();
    relays[victim].child.start_kill().expect("kill relay");
    let _ = relays[victim].child.wait().await;
    let survivor = &relays[1 - victim];

    // Whatever was already in flight is delivered within a few ms; anything later came through
    // the new parent.
    let settle = killed_at + Duration::from_millis(100);
    let mut resumed = None;
    wait_for("delivery to resume", Duration::from_secs(3), || {
        resumed = edge
            .log()
            .delivered
            .iter()
            .find(|(_, at)| *at >= settle)
            .map(|(_, at)| at.duration_since(killed_at));
        resumed.is_some()
    })
    .await;
    let resumed = resumed.expect("resumed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = publisher.published().saturating_sub(100);
    let edge_stats = edge.handle.stats();
    let (got, want) = coverage(&edge.log().delivered, seq_at_kill, last);
    let survivor_stats = survivor.stats().await;
    println!(
        "relay {parent} killed: edge resumed after {resumed:?}; seqs {seq_at_kill}..={last} delivered {got}/{want}"
    );
    println!("edge: {:?}", edge_stats.tree);
    println!("survivor {}: {}", survivor.id, survivor_stats["tree"]);
    assert!(
        resumed < Duration::from_secs(3),
        "resumed after {resumed:?}"
    );
    assert_eq!(
        edge_stats.tracks.first().and_then(|t| t.parent.as_deref()),
        Some(survivor.id.as_str()),
        "the edge re-parented to the other relay"
    );
    assert!(edge_stats.tree.reparents >= 1);
    assert_eq!(
        edge.log().ready,
        1,
        "no second TrackReady: the track carried on"
    );
    assert_eq!(edge.log().ended, 0, "the track never ended");
    assert!(
        got as f64 >= 0.95 * want as f64,
        "media after the kill mostly recovered: {got}/{want}"
    );
    let tracks = survivor_stats["tracks"].as_array().expect("tracks");
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0]["children"], 1);

    // A graceful stop (SIGTERM) closes the links with code 0: the edge does not wait for an idle
    // timeout, and with no relay left it falls back to the origin itself.
    let survivor_id = survivor.id.clone();
    let pid = relays[1 - victim].child.id().expect("survivor pid");
    let stopped_at = Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(3), relays[1 - victim].child.wait())
        .await
        .expect("relay exits promptly on SIGTERM")
        .expect("wait");
    assert!(status.success(), "relay exit status {status}");
    let exited = stopped_at.elapsed();
    let settle = stopped_at + Duration::from_millis(50);
    let mut fell_back = None;
    wait_for("delivery from the origin", Duration::from_secs(3), || {
        fell_back = edge
            .log()
            .delivered
            .iter()
            .find(|(_, at)| *at >= settle)
            .map(|(_, at)| at.duration_since(stopped_at));
        fell_back.is_some()
    })
    .await;
    let fell_back = fell_back.expect("fell back");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let edge_stats = edge.handle.stats();
    println!(
        "relay {survivor_id} stopped gracefully (exited after {exited:?}): edge delivering again after {fell_back:?}, parent {:?}",
        edge_stats.tracks.first().and_then(|t| t.parent.clone())
    );
    assert!(
        fell_back < Duration::from_millis(700),
        "a graceful stop is noticed at once, not after an idle timeout: {fell_back:?}"
    );
    assert_eq!(
        edge_stats.tracks.first().and_then(|t| t.parent.as_deref()),
        Some(origin_id.as_str()),
        "with every relay gone the edge hangs below the origin"
    );
    assert_eq!(edge.log().ended, 0, "the track never ended");
}
