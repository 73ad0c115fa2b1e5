//! The `relay` binary: one mid-tier node of the cluster. No WebRTC, only forwarding between nodes:
//! it runs `relay_shell::cluster` with no local publishers or viewers, and serves its stats.
//!
//! `relay cluster-cert --out DIR` writes a fresh cluster certificate and key (the content of the
//! Kubernetes Secret every node mounts). Every flag also reads `RELAY_*` from the environment, so a
//! pod can set `RELAY_NODE_ID=$(POD_IP):7000` without templating its command line.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use relay_shell::cluster::{self, ClusterHandle};
use relay_shell::cluster_tls::ClusterIdentity;
use relay_shell::drain::DrainState;
use relay_shell::settings::{ClusterSettings, parse_member};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "relay",
    version,
    about = "Mid-tier relay node of a WHIP/WHEP cluster"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new cluster certificate and key (cluster.pem, cluster.key) into DIR.
    ClusterCert {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// UDP address of the cluster (QUIC) listener. Port 0 picks a free port.
    #[arg(long, env = "RELAY_LISTEN", default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// This node's cluster address as peers dial it (default: the listen address; in Kubernetes
    /// the pod IP and port).
    #[arg(long, env = "RELAY_NODE_ID")]
    node_id: Option<String>,
    /// Relay tier: 1 is next to the gateways, higher is nearer the origins.
    #[arg(long, env = "RELAY_TIER", default_value_t = 1)]
    tier: u8,
    /// Cluster name; nodes of other clusters are refused.
    #[arg(long, env = "RELAY_CLUSTER", default_value = "default")]
    cluster: String,
    /// Cluster certificate (PEM), shared by every node.
    #[arg(long, env = "RELAY_CLUSTER_CERT")]
    cluster_cert: Option<PathBuf>,
    /// Cluster key (PEM), shared by every node.
    #[arg(long, env = "RELAY_CLUSTER_KEY")]
    cluster_key: Option<PathBuf>,
    /// A static member, `tier:host:port` (repeatable; comma-separated in the environment).
    #[arg(long = "member", env = "RELAY_MEMBERS", value_delimiter = ',', value_parser = member)]
    members: Vec<String>,
    /// Members from DNS, `tier:name:port`: every address the name resolves to is a member of that
    /// tier (a Kubernetes headless Service). Repeatable.
    #[arg(long = "members-dns", env = "RELAY_MEMBERS_DNS", value_delimiter = ',', value_parser = member)]
    members_dns: Vec<String>,
    /// How often DNS members are re-resolved.
    #[arg(long, env = "RELAY_DNS_REFRESH_MS", default_value_t = 2000)]
    dns_refresh_ms: u64,
    /// HTTP address of `GET /v1/stats` and `GET /healthz`. Port 0 picks a free port.
    #[arg(long, env = "RELAY_STATS_LISTEN", default_value = "0.0.0.0:7080")]
    stats_listen: SocketAddr,
    /// On SIGTERM, wait this long (ms) at most for children to move to other parents before
    /// the links close (0: close at once).
    #[arg(long, env = "RELAY_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// Push metrics over OTLP/HTTP to this receiver (base URL, e.g. `http://otel-collector:4318`).
    #[arg(long, env = "RELAY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// How often (ms) metrics are pushed over OTLP.
    #[arg(long, env = "RELAY_OTLP_INTERVAL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    otlp_interval_ms: u64,
    /// TEST ONLY: drop this fraction of outgoing media datagrams.
    #[arg(long, env = "RELAY_TEST_DROP_DATAGRAMS", default_value_t = 0.0)]
    test_drop_datagrams: f64,
    /// How long a track nobody below wants is kept before this node unsubscribes upward.
    #[arg(long, env = "RELAY_PRUNE_GRACE_MS", default_value_t = 5000)]
    prune_grace_ms: u64,
    /// Children one relay feeds per track at most; more are redirected to the next relay.
    #[arg(long, env = "RELAY_FANOUT_LIMIT", default_value_t = 100)]
    fanout_limit: usize,
    /// TEST ONLY: seed of the datagram dropper.
    #[arg(long, env = "RELAY_TEST_SEED", default_value_t = 1)]
    test_seed: u64,
}

/// `tier:host:port` (the host may be a bracketed IPv6 address), checked as the cluster reads it.
fn member(s: &str) -> Result<String, String> {
    parse_member(s).map(|_| s.to_string())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only for a person at a terminal (see the gateway's main).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let result = match cli.command {
        Some(Command::ClusterCert { out }) => write_cluster_cert(&out),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start runtime: {e}"))
            .and_then(|rt| rt.block_on(run(cli.run))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn write_cluster_cert(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (cert, key) = ClusterIdentity::generate()?;
    let cert_path = dir.join("cluster.pem");
    let key_path = dir.join("cluster.key");
    // A new certificate splits a running cluster in two: never replace one silently.
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(format!(
                "{} exists; remove it first to make a new cluster identity",
                p.display()
            ));
        }
    }
    write_file(&cert_path, &cert, 0o644)?;
    write_file(&key_path, &key, 0o600)?;
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    Ok(())
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(content.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn run(args: RunArgs) -> Result<(), String> {
    let (Some(cert), Some(key)) = (&args.cluster_cert, &args.cluster_key) else {
        return Err("--cluster-cert and --cluster-key are required (make them with `relay cluster-cert --out DIR`)".into());
    };
    let listen = concrete_listen(args.listen)?;
    if args.test_drop_datagrams > 0.0 {
        tracing::warn!(
            fraction = args.test_drop_datagrams,
            "TEST ONLY: dropping outgoing media datagrams"
        );
    }
    let shutdown = CancellationToken::new();
    let settings = ClusterSettings {
        node_id: args.node_id.clone(),
        name: args.cluster.clone(),
        members: args.members.clone(),
        members_dns: args.members_dns.clone(),
        dns_refresh_ms: args.dns_refresh_ms,
        prune_grace_ms: args.prune_grace_ms,
        fanout_limit: args.fanout_limit,
        test_drop_datagrams: args.test_drop_datagrams,
        test_seed: args.test_seed,
        ..ClusterSettings::new(listen, cert.clone(), key.clone())
    };
    let config = settings.config(args.tier)?;
    let (handle, mut events) = cluster::start(config, shutdown.clone()).await?;
    let http = tokio::net::TcpListener::bind(args.stats_listen)
        .await
        .map_err(|e| format!("cannot bind stats listener {}: {e}", args.stats_listen))?;
    let stats_addr = http.local_addr().map_err(|e| e.to_string())?;
    let drain = Arc::new(DrainState::default());
    let app = Router::new()
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(App {
            handle: handle.clone(),
            drain: drain.clone(),
        });
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
        }
    });
    if let Some(endpoint) = args.otlp_endpoint.clone() {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "--otlp-endpoint must be an http(s) URL, not {endpoint:?}"
            ));
        }
        let otlp = relay_shell::otlp_push::OtlpConfig {
            endpoint,
            interval: Duration::from_millis(args.otlp_interval_ms),
            service: "wish-relay".into(),
            instance: handle.stats().node_id,
        };
        let for_metrics = handle.clone();
        let gather = std::sync::Arc::new(move || gather(&for_metrics));
        // Relays make no spans; the queue only satisfies the pusher.
        let (_spans, queue) = relay_shell::otlp_push::span_queue();
        tokio::spawn(relay_shell::otlp_push::run(
            otlp,
            gather,
            queue,
            shutdown.clone(),
        ));
    }
    // Tests and scripts wait for this line; it carries the bound ports when 0 was asked for.
    println!("READY cluster={} stats={stats_addr}", handle.local_addr());
    tokio::spawn(relay_shell::drain::on_signal(
        handle.clone(),
        drain.clone(),
        Duration::from_millis(args.drain_timeout_ms),
        shutdown.clone(),
    ));
    // A relay has no local viewers; the channel ends when the node has shut down.
    while let Some(event) = events.recv().await {
        if matches!(event, cluster::ClusterEvent::Drained) {
            drain.drained.notify_one();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// The node id must be known before the node starts; with port 0, find a free port first.
fn concrete_listen(listen: SocketAddr) -> Result<SocketAddr, String> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = UdpSocket::bind(listen).map_err(|e| format!("cannot bind {listen}: {e}"))?;
    let port = probe.local_addr().map_err(|e| e.to_string())?.port();
    Ok(SocketAddr::new(listen.ip(), port))
}

/// What the stats server's handlers share.
#[derive(Clone)]
struct App {
    handle: ClusterHandle,
    drain: Arc<DrainState>,
}

async fn stats(State(app): State<App>) -> axum::Json<cluster::ClusterStats> {
    axum::Json(app.handle.stats())
}

/// Liveness and readiness: 503 once draining, so nothing new is sent this way.
async fn healthz(State(app): State<App>) -> (axum::http::StatusCode, &'static str) {
    if app.drain.draining.load(std::sync::atomic::Ordering::SeqCst) {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (axum::http::StatusCode::OK, "ok\n")
    }
}

/// The relay's metrics, for `/metrics` and OTLP alike: its tree and links.
fn gather(handle: &ClusterHandle) -> relay_proto::metrics::Exposition {
    let mut e = relay_proto::metrics::Exposition::new();
    relay_shell::cluster_metrics::write(&mut e, &handle.stats());
    e
}

/// Prometheus: the node's tree and link metrics (`relay_proto::metrics`).
async fn metrics(State(app): State<App>) -> impl axum::response::IntoResponse {
    let e = gather(&app.handle);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            relay_proto::metrics::CONTENT_TYPE,
        )],
        e.finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        assert_eq!(
            parse_member("1:10.0.0.5:7000"),
            Ok((1, "10.0.0.5:7000".into()))
        );
        assert_eq!(parse_member("0:[::1]:7000"), Ok((0, "[::1]:7000".into())));
        assert_eq!(
            parse_member("2:relay.ns.svc.cluster.local:7000"),
            Ok((2, "relay.ns.svc.cluster.local:7000".into()))
        );
        assert!(parse_member("x:host:1").is_err());
        assert!(parse_member("1:host").is_err());
        assert!(parse_member("1:host:port").is_err());
        assert!(parse_member("256:host:1").is_err());
    }
}
