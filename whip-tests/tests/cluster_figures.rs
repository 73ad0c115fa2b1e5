//! Figures of a whole cluster on loopback (the set-up of `cluster.rs`: an origin gateway, `relay`
//! processes, edge gateways, with the test-only shaper dropping a chosen fraction of node-link
//! datagrams): added latency per hop, delivery under loss, NACKs reaching the publisher with 1
//! and with many viewers, and the stall when a relay dies. Each prints one `FIGURE:` line
//! (`cargo test -p whip-tests --test cluster_figures -- --nocapture | grep FIGURE:`) and asserts
//! only bounds that a broken cluster fails and a slow (debug, 2-core) machine does not.
//!
//! The figures run one at a time (a lock): they measure time, and the per-frame latency log is
//! process-global (`whip_tests::latency`), so overlapping publishers would spoil both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use whip_tests::{
    Gateway, LatencyStats, MediaSource, PlayOptions, PlayReport, PublishOptions, PublishStats,
    WhepPlayer, WhipPublisher,
};

/// One figure at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

mod common;
use common::*;

impl Cluster {
    /// Every node's `/v1/stats` with a label, origin first, then edges, then relays; the
    /// `ClusterStats` part (gateways nest it under `cluster`).
    async fn node_stats(&self) -> Result<Vec<(String, Value, Value)>> {
        let mut out = Vec::new();
        for (i, g) in self.gateways.iter().enumerate() {
            let label = if i == 0 {
                "origin".to_string()
            } else {
                format!("edge{i}")
            };
            let s = g.stats().await?;
            out.push((label, s["cluster"].clone(), s));
        }
        for (i, r) in self.relays.iter().enumerate() {
            let s = r.stats().await?;
            out.push((format!("relay{i}"), s.clone(), s));
        }
        Ok(out)
    }

    /// One line per node: the tree's NACK counters.
    async fn print_nack_counters(&self, title: &str) -> Result<()> {
        println!("{title}: node NACK counters (cluster.tree)");
        for (label, cluster, _) in self.node_stats().await? {
            let t = &cluster["tree"];
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            println!(
                "  {label:7} {:21} received {:4} answered {:4} forwarded {:4} waiting {:4} \
                 missed {:4} sent {:4}",
                cluster["node_id"].as_str().unwrap_or("?"),
                n("nacks_received"),
                n("nacks_answered"),
                n("nacks_forwarded"),
                n("nacks_waiting"),
                n("nacks_missed"),
                n("nacks_sent"),
            );
        }
        Ok(())
    }
}

/// The parent of the node's video track, from its `ClusterStats`.
fn video_parent(cluster: &Value) -> Option<String> {
    cluster["tracks"]
        .as_array()?
        .iter()
        .find(|t| t["key"].as_str().is_some_and(|k| k.ends_with("/video")))
        .and_then(|t| t["parent"].as_str().map(str::to_string))
}

fn carries_video(cluster: &Value) -> bool {
    cluster["tracks"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"].as_str().is_some_and(|k| k.ends_with("/video")))
    })
}

/// Decodable frames over frames expected (received + missing).
/// Which node binaries ran: `scripts/bench.sh` points GATEWAY_BIN/RELAY_BIN at release builds.
fn node_build() -> &'static str {
    if std::env::var_os("GATEWAY_BIN").is_some() {
        "GATEWAY_BIN/RELAY_BIN"
    } else {
        "debug"
    }
}

fn delivered(r: &PlayReport) -> f64 {
    r.sequence.decodable as f64 / (r.sequence.frames + r.sequence.missing).max(1) as f64
}

fn print_report(label: &str, r: &PlayReport) {
    println!(
        "{label}: frames {} delivered {:.4} latency {:?} error {:?} sequence {:?}",
        r.video_frames,
        delivered(r),
        r.latency_ms,
        r.error,
        r.sequence
    );
}

async fn publish(stream: &str, opts: PublishOptions) -> Result<WhipPublisher> {
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(media, opts).await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await
        .with_context(|| format!("publishing {stream}"))?;
    Ok(publisher)
}

fn catalog() -> Result<Arc<whip_tests::FrameCatalog>> {
    Ok(MediaSource::fixture("short-gop.mp4")?.catalog())
}

// ---- a) added latency per hop ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_a_added_latency_per_hop() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = cluster(1, 1, 0.0).await?;
    let publisher = publish(
        "latency",
        PublishOptions::new(c.gateways[0].whip_url("latency")),
    )
    .await?;
    let catalog = catalog()?;
    let opts = |g: &Gateway| PlayOptions {
        duration: Duration::from_secs(6),
        ..PlayOptions::new(g.whep_url("latency"))
    };
    let at_origin = WhepPlayer::start(catalog.clone(), opts(&c.gateways[0])).await?;
    let at_edge = WhepPlayer::start(catalog.clone(), opts(&c.gateways[1])).await?;

    // While they play: the edge's video comes from the relay, whose parent is the origin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = c.node_stats().await?;
    let origin_id = stats[0].1["node_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let edge_parent = video_parent(&stats[1].1);
    let relay_parent = video_parent(&stats[2].1);
    println!(
        "path: origin {origin_id} → relay {} (parent {relay_parent:?}) → edge {} (parent \
         {edge_parent:?})",
        c.relays[0].node,
        stats[1].1["node_id"].as_str().unwrap_or("?")
    );
    ensure!(
        edge_parent.as_deref() == Some(c.relays[0].node.as_str())
            && relay_parent.as_deref() == Some(origin_id.as_str()),
        "the edge's video does not come origin → relay → edge"
    );

    let origin = at_origin.finish().await?;
    let edge = at_edge.finish().await?;
    print_report("origin viewer (0 hops)", &origin);
    print_report("edge viewer (2 node hops)", &edge);
    publisher.stop().await?;

    for (label, r) in [("origin", &origin), ("edge", &edge)] {
        ensure!(r.error.is_none(), "{label} viewer: {:?}", r.error);
    }
    let lat = |label: &str, r: &PlayReport| -> Result<LatencyStats> {
        let l = r
            .latency_ms
            .clone()
            .with_context(|| format!("{label} viewer measured no latency"))?;
        ensure!(
            l.samples >= 100,
            "{label}: only {} latency samples",
            l.samples
        );
        Ok(l)
    };
    let o = lat("origin", &origin)?;
    let e = lat("edge", &edge)?;
    let hop50 = (e.p50 - o.p50) / 2.0;
    let hop99 = (e.p99 - o.p99) / 2.0;
    println!(
        "FIGURE: a latency (loopback, no loss, {} nodes) origin p50/p95/p99 {:.2}/{:.2}/{:.2} ms \
         (n={}), edge via relay p50/p95/p99 {:.2}/{:.2}/{:.2} ms (n={}); per-hop added p50 \
         {hop50:.2} ms, p99 {hop99:.2} ms",
        node_build(),
        o.p50,
        o.p95,
        o.p99,
        o.samples,
        e.p50,
        e.p95,
        e.p99,
        e.samples
    );
    ensure!(
        e.p50 < o.p50 + 50.0,
        "edge p50 {:.1} ms is not within 50 ms of the origin's {:.1} ms",
        e.p50,
        o.p50
    );
    Ok(())
}

// ---- b) delivery under 5 % loss per hop ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_b_delivery_under_loss_per_hop() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let c = cluster(3, 2, 0.05).await?;
    let publisher = publish(
        "delivery",
        PublishOptions::new(c.gateways[0].whip_url("delivery")),
    )
    .await?;
    let catalog = catalog()?;
    let mut viewers = Vec::new();
    for edge in &c.gateways[1..] {
        let opts = PlayOptions {
            duration: Duration::from_secs(6),
            // 5 % loss on the last mile too.
            drop_every: Some(20),
            ..PlayOptions::new(edge.whep_url("delivery"))
        };
        viewers.push(tokio::spawn(whip_tests::play(catalog.clone(), opts)));
    }
    let mut reports = Vec::new();
    for v in viewers {
        reports.push(v.await.context("viewer panicked")??);
    }
    for (i, r) in reports.iter().enumerate() {
        print_report(&format!("edge{}", i + 1), r);
    }
    c.print_nack_counters("b").await?;
    publisher.stop().await?;

    let ratios: Vec<f64> = reports.iter().map(delivered).collect();
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.4}")).collect();
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "FIGURE: b delivery with 5 % loss per node link + 5 % last mile, 3 edges / 2 relays: \
         decodable/expected per edge [{}], min {min:.4}",
        listed.join(", ")
    );
    for (i, r) in reports.iter().enumerate() {
        ensure!(r.error.is_none(), "edge{}: {:?}", i + 1, r.error);
        ensure!(
            r.video_frames >= 120,
            "edge{}: only {} frames in 6 s",
            i + 1,
            r.video_frames
        );
        ensure!(
            ratios[i] >= 0.995,
            "edge{}: {:.4} of frames decodable: {:?}",
            i + 1,
            ratios[i],
            r.sequence
        );
    }
    Ok(())
}

// ---- c) NACKs at the publisher, 1 vs many viewers ----
//
// The publisher is OBS-like: no RTX, so it cannot answer NACKs and ignores keyframe requests; its
// first-mile losses stay holes, and the viewers' "delivered" is low here (each hole breaks the
// picture until the next keyframe). What is measured is only how many NACKs reach it.

/// Viewers per edge in the crowded run (3 edges).
const CROWD_PER_EDGE: usize = 10;
/// How long the publisher's NACKs are counted, with every viewer playing.
const NACK_WINDOW: Duration = Duration::from_secs(6);

struct NackRun {
    viewers: usize,
    nacks: u64,
    dropped: u64,
    min_delivered: f64,
    min_frames: u64,
    errors: usize,
}

/// A fresh cluster (3 edges, 2 relays, 5 % link loss), a publisher losing 5 % on its first mile,
/// `per_edge[i]` viewers on edge i; counts the publisher's NACKs over [`NACK_WINDOW`] once every
/// viewer receives.
async fn nack_run(label: &str, per_edge: [usize; 3]) -> Result<NackRun> {
    let c = cluster(3, 2, 0.05).await?;
    let stream = "shield";
    let publisher = publish(
        stream,
        PublishOptions {
            count_nacks: true,
            drop_outgoing_every: Some(20),
            ..PublishOptions::new(c.gateways[0].whip_url(stream))
        },
    )
    .await?;
    let catalog = catalog()?;
    let mut players = Vec::new();
    for (e, n) in per_edge.iter().enumerate() {
        for _ in 0..*n {
            let opts = PlayOptions {
                duration: NACK_WINDOW + Duration::from_secs(6),
                ..PlayOptions::new(c.gateways[e + 1].whep_url(stream))
            };
            players.push(WhepPlayer::start(catalog.clone(), opts).await?);
        }
    }
    let waited = Instant::now();
    while players.iter().any(|p| p.report().video_frames == 0) {
        ensure!(
            waited.elapsed() < Duration::from_secs(10),
            "{label}: not every viewer receives"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before: PublishStats = publisher.stats();
    tokio::time::sleep(NACK_WINDOW).await;
    let after = publisher.stats();
    // Load while everyone still plays.
    for (node, _, s) in c.node_stats().await? {
        if s.get("sessions").is_some() {
            println!(
                "{label}: {node:7} sessions {} udp_send_errors {} panics {}",
                s["sessions"], s["udp_send_errors"], s["panics"]
            );
        }
    }
    let mut reports = Vec::new();
    for p in players {
        reports.push(p.stop().await?);
    }
    let run = NackRun {
        viewers: reports.len(),
        nacks: after.nacks_received - before.nacks_received,
        dropped: after.outgoing_dropped - before.outgoing_dropped,
        min_delivered: reports.iter().map(delivered).fold(f64::INFINITY, f64::min),
        min_frames: reports.iter().map(|r| r.video_frames).min().unwrap_or(0),
        errors: reports.iter().filter(|r| r.error.is_some()).count(),
    };
    println!(
        "{label}: {} viewers, publisher NACKed for {} packets in {NACK_WINDOW:?} ({} dropped on \
         its first mile then; {} in all); viewers: min frames {}, min delivered {:.4}, errors {}",
        run.viewers,
        run.nacks,
        run.dropped,
        after.outgoing_dropped,
        run.min_frames,
        run.min_delivered,
        run.errors
    );
    c.print_nack_counters(label).await?;
    for (i, r) in reports.iter().enumerate() {
        if r.error.is_some() || delivered(r) < 0.99 {
            print_report(&format!("{label} viewer {i}"), r);
        }
    }
    publisher.stop().await?;
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_c_nacks_at_the_publisher_do_not_grow_with_viewers() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let a = nack_run("c run A", [1, 0, 0]).await?;
    let b = nack_run("c run B", [CROWD_PER_EDGE; 3]).await?;
    println!(
        "FIGURE: c publisher NACKs over {NACK_WINDOW:?} with 5 % first-mile loss (5 % per node \
         link): {} viewer {} (first-mile drops {}), {} viewers {} (drops {}); B/A {:.2}; crowd: \
         min frames {} min delivered {:.4} errors {}",
        a.viewers,
        a.nacks,
        a.dropped,
        b.viewers,
        b.nacks,
        b.dropped,
        b.nacks as f64 / a.nacks.max(1) as f64,
        b.min_frames,
        b.min_delivered,
        b.errors
    );
    // 30 viewers must not overload the machine (this is where a smaller crowd would be chosen).
    ensure!(
        b.errors == 0 && b.min_frames as f64 >= 0.8 * a.min_frames as f64,
        "the crowd run was unhealthy: {} errors, min frames {} (1 viewer: {})",
        b.errors,
        b.min_frames,
        a.min_frames
    );
    ensure!(
        a.nacks > 0,
        "the publisher got no NACK although it lost {} packets",
        a.dropped
    );
    ensure!(
        (b.nacks as f64) <= 1.5 * a.nacks as f64 + 10.0,
        "NACKs at the publisher grew with the audience: {} with 1 viewer, {} with {}",
        a.nacks,
        b.nacks,
        b.viewers
    );
    Ok(())
}

// ---- d) recovery after a relay kill ----

/// Kills the relay carrying the video to the edge's viewer; returns the longest time without a
/// new frame from the last frame before the kill on.
async fn relay_kill_stall(rep: usize) -> Result<Duration> {
    let mut c = cluster(1, 2, 0.05).await?;
    let stream = format!("kill{rep}");
    let publisher = publish(
        &stream,
        PublishOptions::new(c.gateways[0].whip_url(&stream)),
    )
    .await?;
    let player = WhepPlayer::start(
        catalog()?,
        PlayOptions {
            duration: Duration::from_secs(15),
            ..PlayOptions::new(c.gateways[1].whep_url(&stream))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(
        player.report().video_frames > 20,
        "no frames before the kill"
    );
    let mut carrier = None;
    for (i, r) in c.relays.iter().enumerate() {
        if carries_video(&r.stats().await?) {
            carrier = Some(i);
        }
    }
    let carrier = carrier.context("no relay carries the video")?;
    let edge_parent = video_parent(&c.gateways[1].stats().await?["cluster"]);
    ensure!(
        edge_parent.as_deref() == Some(c.relays[carrier].node.as_str()),
        "the edge's video parent {edge_parent:?} is not the carrier {}",
        c.relays[carrier].node
    );

    // Frame arrivals, polled finely; the kill comes right after a frame arrived, so that the
    // stall runs from the last frame before it.
    let mut frames = player.report().video_frames;
    let waiting = Instant::now();
    while player.report().video_frames == frames && waiting.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    frames = player.report().video_frames;
    let mut last_arrival = Instant::now();
    let mut longest = Duration::ZERO;
    let killed = c.relays.remove(carrier);
    let killed_node = killed.node.clone();
    let killed_at = Instant::now();
    drop(killed);
    let mut resumed_at = None;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now_frames = player.report().video_frames;
        let now = Instant::now();
        if now_frames > frames {
            let gap = now.duration_since(last_arrival);
            if gap > longest {
                longest = gap;
                resumed_at = Some(now);
            }
            frames = now_frames;
            last_arrival = now;
        }
        // Frames flowing for a second after the longest gap, which is a real stall: done.
        if resumed_at.is_some_and(|r| now.duration_since(r) > Duration::from_secs(1))
            && longest > Duration::from_millis(150)
        {
            break;
        }
        if now.duration_since(killed_at) > Duration::from_secs(8) {
            ensure!(
                now.duration_since(last_arrival) < Duration::from_secs(1),
                "frames did not resume after the relay died (longest gap {longest:?})"
            );
            break;
        }
    }
    let report = player.stop().await?;
    print_report(&format!("d rep {rep}"), &report);
    let edge = c.gateways[1].stats().await?;
    println!(
        "d rep {rep}: killed {killed_node}, edge's video parent now {:?}, stall {:.0} ms",
        video_parent(&edge["cluster"]),
        longest.as_secs_f64() * 1000.0
    );
    publisher.stop().await?;
    Ok(longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_d_stall_after_a_relay_kill() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut stalls = Vec::new();
    for rep in 0..3 {
        stalls.push(relay_kill_stall(rep).await?);
    }
    let ms: Vec<String> = stalls
        .iter()
        .map(|s| format!("{:.0}", s.as_secs_f64() * 1000.0))
        .collect();
    let max = stalls.iter().max().copied().unwrap_or_default();
    println!(
        "FIGURE: d stall for a viewer below a killed relay (1 edge, 2 relays, 5 % link loss): \
         [{}] ms, max {:.0} ms",
        ms.join(", "),
        max.as_secs_f64() * 1000.0
    );
    ensure!(
        max < Duration::from_secs(5),
        "a stall of {max:?} after a relay kill"
    );
    Ok(())
}

// ---- e) relay CPU per forwarded datagram, and the cost of a scrape ----

/// CPU nanoseconds `pid` spent while `f` ran.
async fn cpu_during<T>(
    pid: u32,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, u64)> {
    let pid = pid.to_string();
    let before = whip_tests::gateway_probe::cpu_ns(&pid).context("relay CPU")?;
    let out = f.await?;
    let after = whip_tests::gateway_probe::cpu_ns(&pid).context("relay CPU")?;
    Ok((out, after.saturating_sub(before)))
}

/// `n` scrapes of `url`: the body size of the last.
async fn scrape(url: &str, n: usize) -> Result<usize> {
    let client = whip_tests::signaling::http_client()?;
    let mut bytes = 0;
    for _ in 0..n {
        let r = client
            .get(url)
            .bearer_auth(whip_tests::harness::HARNESS_ADMIN_TOKEN)
            .send()
            .await?;
        ensure!(r.status().is_success(), "GET {url}: {}", r.status());
        bytes = r.bytes().await?.len();
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_e_relay_cpu_per_forwarded_datagram() -> Result<()> {
    const STREAMS: usize = 10;
    const EDGES: usize = 5;
    const WINDOW: Duration = Duration::from_secs(6);
    const SCRAPES: usize = 200;
    let _serial = SERIAL.lock().await;
    let c = cluster(EDGES, 1, 0.0).await?;
    let mut publishers = Vec::new();
    for s in 0..STREAMS {
        let name = format!("load{s}");
        publishers.push(publish(&name, PublishOptions::new(c.gateways[0].whip_url(&name))).await?);
    }
    let mut viewers = Vec::new();
    for edge in &c.gateways[1..] {
        for s in 0..STREAMS {
            let opts = PlayOptions {
                duration: WINDOW + Duration::from_secs(4),
                thin: true,
                ..PlayOptions::new(edge.whep_url(&format!("load{s}")))
            };
            viewers.push(WhepPlayer::start(catalog()?, opts).await?);
        }
    }
    // Every tree built and its keyframe runs sent: then measure the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let relay = &c.relays[0];
    let sent = |s: &Value| s["tree"]["datagrams_out"].as_u64().unwrap_or(0);
    let before = sent(&relay.stats().await?);
    let ((), cpu) = cpu_during(relay.pid(), async {
        tokio::time::sleep(WINDOW).await;
        Ok(())
    })
    .await?;
    // The stats snapshot is up to a second old at both ends; same lag, same window.
    let forwarded = sent(&relay.stats().await?).saturating_sub(before);
    let relay_url = format!("http://{}/metrics", relay.stats);
    let (relay_bytes, relay_scrape_cpu) =
        cpu_during(relay.pid(), scrape(&relay_url, SCRAPES)).await?;
    let edge = &c.gateways[1];
    let edge_url = format!("{}/metrics", edge.base_url());
    let (edge_bytes, edge_scrape_cpu) = cpu_during(edge.pid(), scrape(&edge_url, SCRAPES)).await?;
    for v in viewers {
        let r = v.finish().await?;
        ensure!(r.error.is_none(), "viewer: {:?}", r.error);
    }
    for p in publishers {
        p.stop().await?;
    }
    ensure!(
        forwarded > 1000,
        "the relay forwarded only {forwarded} datagrams"
    );
    let ns = cpu as f64 / forwarded as f64;
    println!(
        "FIGURE: e relay CPU per forwarded datagram ({} nodes, {STREAMS} streams x {EDGES} edges, \
         {WINDOW:?}): {forwarded} datagrams ({:.0}/s), {:.0} ms CPU, {ns:.0} ns/datagram = \
         {:.0} k datagrams/s per core; a scrape costs the relay {:.0} µs CPU ({relay_bytes} B), \
         an edge gateway {:.0} µs ({edge_bytes} B)",
        node_build(),
        forwarded as f64 / WINDOW.as_secs_f64(),
        cpu as f64 / 1e6,
        1e6 / ns,
        relay_scrape_cpu as f64 / SCRAPES as f64 / 1e3,
        edge_scrape_cpu as f64 / SCRAPES as f64 / 1e3,
    );
    Ok(())
}
