//! A real Prometheus server (Debian's `prometheus`, started here with its own config and data
//! directory) scrapes an origin gateway, an edge gateway and a relay every second while a WHIP
//! publisher sends to the origin and a WHEP viewer plays from the edge. The test then asks
//! Prometheus' HTTP API for the series an operator's dashboard is built on: every target up,
//! packets in and out, the tree's forwarding and per-hop latency, link RTT, the viewer's join
//! phases. `scripts/setup-prometheus.sh` installs the server; without it the test fails.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use whip_tests::{MediaSource, PlayOptions, PublishOptions, WhipPublisher};

mod common;
use common::*;

struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts a server scraping `targets` (job name, address) every second; waits until ready.
    async fn start(targets: &[(&str, SocketAddr)]) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n",
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `prometheus` (Debian package; scripts/setup-prometheus.sh)")?;
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = whip_tests::signaling::http_client()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{}/-/ready", p.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 30 s: {}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: (labels, value) per series.
    async fn query(&self, q: &str) -> Result<Vec<(Value, f64)>> {
        let text = whip_tests::signaling::http_client()?
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", q)])
            .send()
            .await?
            .text()
            .await?;
        let body: Value = serde_json::from_str(&text)?;
        ensure!(body["status"] == "success", "query {q}: {body}");
        let result = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(result
            .into_iter()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), v)
            })
            .collect())
    }

    /// The one value of `q` for `job`, waiting (up to 15 s) for it to satisfy `ok`.
    async fn wait_for(&self, q: &str, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let series = self.query(q).await?;
            if let Some((_, v)) = series.iter().find(|(_, v)| ok(*v)) {
                return Ok(*v);
            }
            if Instant::now() > deadline {
                bail!("{q}: {series:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_gateways_and_a_relay_during_a_publish_and_play() -> Result<()> {
    let c = cluster(1, 1, 0.0).await?;
    let (origin, edge, relay) = (&c.gateways[0], &c.gateways[1], &c.relays[0]);
    let prom = Prometheus::start(&[
        ("origin", origin.http_addr()),
        ("edge", edge.http_addr()),
        ("relay", relay.stats),
    ])
    .await?;

    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(origin.whip_url("metrics")),
    )
    .await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let opts = PlayOptions {
        duration: Duration::from_secs(4),
        ..PlayOptions::new(edge.whep_url("metrics"))
    };
    let player = whip_tests::WhepPlayer::start(media.catalog(), opts).await?;
    // The edge counts its viewer of a stream published elsewhere.
    prom.wait_for(
        "gateway_stream_viewers{job=\"edge\",stream=\"metrics\"}",
        |v| v == 1.0,
    )
    .await?;
    let report = player.finish().await?;
    ensure!(
        report.error.is_none() && report.video_frames > 30,
        "viewer: {report:?}"
    );

    for job in ["origin", "edge", "relay"] {
        let up = prom
            .wait_for(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0)
            .await;
        ensure!(up.is_ok(), "{job} not up: {up:?} {}", prom.log());
    }
    let received = prom
        .wait_for("gateway_rtp_packets_received_total{job=\"origin\"}", |v| {
            v > 100.0
        })
        .await?;
    let sent = prom
        .wait_for("gateway_rtp_packets_sent_total{job=\"edge\"}", |v| {
            v > 100.0
        })
        .await?;
    let forwarded = prom
        .wait_for("tree_datagrams_sent_total{job=\"relay\"}", |v| v > 100.0)
        .await?;
    prom.wait_for("tree_hop_duration_seconds_count{job=\"relay\"}", |v| {
        v > 100.0
    })
    .await?;
    prom.wait_for(
        "histogram_quantile(0.99, tree_hop_duration_seconds_bucket{job=\"relay\"})",
        |v| v > 0.0 && v < 0.05,
    )
    .await?;
    prom.wait_for("cluster_link_rtt_seconds{job=\"relay\"}", |v| {
        v > 0.0 && v < 0.1
    })
    .await?;
    prom.wait_for("cluster_links{job=\"relay\"}", |v| v == 2.0)
        .await?;
    prom.wait_for(
        "gateway_join_seconds_count{job=\"edge\",role=\"viewer\"}",
        |v| v >= 1.0,
    )
    .await?;
    prom.wait_for(
        "gateway_join_seconds_count{job=\"origin\",role=\"publisher\"}",
        |v| v >= 1.0,
    )
    .await?;
    for phase in ["answer", "ice", "dtls", "first_packet"] {
        prom.wait_for(
            &format!(
                "gateway_join_phase_seconds_count{{job=\"edge\",role=\"viewer\",phase=\"{phase}\"}}"
            ),
            |v| v >= 1.0,
        )
        .await?;
    }
    prom.wait_for(
        "gateway_http_request_duration_seconds_count{job=\"edge\",method=\"POST\",route=\"/whep/{stream}\"}",
        |v| v >= 1.0,
    )
    .await?;
    prom.wait_for(
        "gateway_stream_received_bits_per_second{job=\"origin\",stream=\"metrics\"}",
        |v| v > 0.0,
    )
    .await?;
    prom.wait_for("gateway_publishers{job=\"origin\"}", |v| v == 1.0)
        .await?;
    // What an operator graphs: the edge's outgoing bitrate over the play.
    let rate = prom
        .wait_for(
            "rate(gateway_udp_sent_bytes_total{job=\"edge\"}[5s]) * 8",
            |v| v >= 0.0,
        )
        .await?;
    println!(
        "prometheus: origin received {received} packets, edge sent {sent}, relay forwarded \
         {forwarded} datagrams; edge sends {rate:.0} bit/s now"
    );
    drop(publisher);
    Ok(())
}
