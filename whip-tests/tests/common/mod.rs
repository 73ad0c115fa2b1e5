//! A cluster on loopback for the multi-process tests: an origin gateway, edge gateways and
//! `relay` processes sharing one freshly made cluster certificate, every node optionally dropping
//! a fraction of its outgoing node-link datagrams (the test-only loss shaper).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use whip_tests::Gateway;
use whip_tests::harness::relay_binary;

/// Trees are pruned this long after their last viewer leaves (5 s by default; short for tests).
pub(crate) const PRUNE_GRACE_MS: &str = "500";

/// A UDP port for a node's cluster listener, which must be known before the node starts (every
/// member lists every other). Taken at random *below* the kernel's ephemeral range: a port from
/// `bind(0)` is free only until someone else's `bind(0)` (a viewer, another test's gateway) gets
/// it first, which happened in CI ("Address already in use").
pub(crate) fn free_udp_port() -> Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for _ in 0..200 {
        let port = low + (rand::random::<u16>() % (high - low));
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) struct Certs {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(crate) fn certs() -> Result<Certs> {
    let dir = tempfile::tempdir()?;
    let (cert_pem, key_pem) =
        relay_shell::cluster_tls::ClusterIdentity::generate().map_err(anyhow::Error::msg)?;
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
pub(crate) struct Relay {
    child: Child,
    pub node: String,
    pub stats: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    pub(crate) fn start(
        certs: &Certs,
        port: u16,
        members: &[String],
        link_loss: f64,
    ) -> Result<Relay> {
        Relay::start_with_args(certs, port, members, link_loss, &[])
    }

    /// As [`Relay::start`], with `extra` arguments.
    pub(crate) fn start_with_args(
        certs: &Certs,
        port: u16,
        members: &[String],
        link_loss: f64,
        extra: &[&str],
    ) -> Result<Relay> {
        let mut extra: Vec<&str> = extra.to_vec();
        let loss = link_loss.to_string();
        if link_loss > 0.0 {
            extra.extend(["--test-drop-datagrams", &loss]);
        }
        Relay::spawn(None, certs, &format!("127.0.0.1:{port}"), members, &extra)
    }

    /// A relay inside network namespace `netns`, listening on (and known as) `node`.
    pub(crate) fn start_in_netns(
        netns: &str,
        certs: &Certs,
        node: &str,
        members: &[String],
    ) -> Result<Relay> {
        Relay::spawn(Some(netns), certs, node, members, &[])
    }

    fn spawn(
        netns: Option<&str>,
        certs: &Certs,
        node: &str,
        members: &[String],
        extra: &[&str],
    ) -> Result<Relay> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(relay_binary()?);
                c
            }
            None => Command::new(relay_binary()?),
        };
        cmd.args([
            "--listen",
            node,
            "--node-id",
            node,
            "--tier",
            "1",
            "--stats-listen",
            "127.0.0.1:0",
        ])
        .arg("--cluster-cert")
        .arg(&certs.cert)
        .arg("--cluster-key")
        .arg(&certs.key)
        .args(["--prune-grace-ms", PRUNE_GRACE_MS]);
        for m in members {
            cmd.args(["--member", m]);
        }
        cmd.args(extra);
        let log = std::fs::File::create(relay_log(node))?;
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
                return Ok(Relay {
                    child,
                    node: node.to_string(),
                    stats,
                });
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(relay_log(node)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "relay {node} did not print READY; its log's last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Sends SIGTERM (the relay drains, then exits) and waits up to `within` for the exit;
    /// returns whether it exited successfully, and how long it took.
    pub(crate) fn terminate(&mut self, within: Duration) -> Result<(bool, Duration)> {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        while started.elapsed() < within {
            if let Some(exit) = self.child.try_wait()? {
                return Ok((exit.success(), started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("relay did not exit within {within:?} of SIGTERM")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the relay logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(relay_log(&self.node)).unwrap_or_default()
    }

    /// The relay's `/v1/stats`: its `ClusterStats` at the top level.
    pub(crate) async fn stats(&self) -> Result<Value> {
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

/// A gateway's arguments to join the cluster as `node` (its listen address and id) with the
/// cluster's certificate and every member.
pub(crate) fn gateway_cluster_args(node: &str, certs: &Certs, members: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--cluster-listen".into(),
        node.into(),
        "--node-id".into(),
        node.into(),
        "--cluster-cert".into(),
        certs.cert.display().to_string(),
        "--cluster-key".into(),
        certs.key.display().to_string(),
        "--cluster-prune-grace-ms".into(),
        PRUNE_GRACE_MS.into(),
    ];
    for m in members {
        args.push("--cluster-member".into());
        args.push(m.clone());
    }
    args
}

/// Where a relay known as `node` logs.
fn relay_log(node: &str) -> PathBuf {
    std::env::temp_dir().join(format!("relay-{}.stderr", node.replace([':', '.'], "_")))
}

pub(crate) struct Cluster {
    pub certs: Certs,
    /// Origin = gateways[0]; edges = gateways[1..].
    pub gateways: Vec<Gateway>,
    pub relays: Vec<Relay>,
}

/// An origin, `edges` edge gateways (tier 0) and `relays` relays (tier 1); every node drops
/// `link_loss` of its outgoing media datagrams (none when 0).
pub(crate) async fn cluster(edges: usize, relays: usize, link_loss: f64) -> Result<Cluster> {
    cluster_with_args(edges, relays, link_loss, &[]).await
}

/// As [`cluster`], every gateway also started with `extra` arguments (e.g. an API app).
pub(crate) async fn cluster_with_args(
    edges: usize,
    relays: usize,
    link_loss: f64,
    extra: &[&str],
) -> Result<Cluster> {
    cluster_with_node_args(edges, relays, link_loss, extra, &[]).await
}

/// As [`cluster_with_args`], the relays also started with `relay_extra`.
///
/// Cluster ports must be chosen before any node starts, so another test may bind one of them
/// first (seen once in CI under load: "cannot bind cluster listener … Address already in use").
/// Then the whole cluster is started again on new ports, up to three times.
pub(crate) async fn cluster_with_node_args(
    edges: usize,
    relays: usize,
    link_loss: f64,
    extra: &[&str],
    relay_extra: &[&str],
) -> Result<Cluster> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start_cluster(edges, relays, link_loss, extra, relay_extra).await {
            Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                eprintln!("a cluster port was taken meanwhile; starting again: {e:#}");
            }
            started => return started,
        }
    }
}

async fn start_cluster(
    edges: usize,
    relays: usize,
    link_loss: f64,
    extra: &[&str],
    relay_extra: &[&str],
) -> Result<Cluster> {
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
        .map(|p| Relay::start_with_args(&certs, *p, &members, link_loss, relay_extra))
        .collect::<Result<Vec<_>>>()?;
    let mut gateways = Vec::new();
    for port in gw_ports {
        let mut args = gateway_cluster_args(&format!("127.0.0.1:{port}"), &certs, &members);
        args.extend(extra.iter().map(|a| a.to_string()));
        if link_loss > 0.0 {
            args.push("--test-drop-datagrams".into());
            args.push(link_loss.to_string());
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
