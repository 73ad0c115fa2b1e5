//! Running a node: bind, announce readiness, serve HTTP(S), and shut everything down once, in
//! order, on SIGINT/SIGTERM:
//! 1. stop accepting HTTP and let requests in flight finish (`shutdown`, the signal);
//! 2. the media workers close every session properly — RTCP BYE and DTLS close_notify, so clients
//!    learn at once — and go (`media`);
//! 3. the cluster bridge, once the last worker has gone, closes the node links (QUIC close
//!    frames) and waits for the node to stop;
//! 4. exit (after at most 5 s of steps 2–3).

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::front;
use crate::node::Node;

/// Runs a node with `config` until `shutdown` is cancelled (SIGINT/SIGTERM), then shuts it down in
/// order.
///
/// `shutdown` starts the drain (`drain.rs`): the sessions it holds go on until they end or the
/// drain timeout passes; `now` (a second signal) cuts it short.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    now: CancellationToken,
) -> Result<(), String> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(c, k, crate::tls::HTTP_ALPN)?),
        _ => None,
    };
    // One address: requests for sessions on other gateways are forwarded over HTTPS to peers
    // that present this same certificate.
    if let (Some(cert), Some(_)) = (&config.tls_cert, &config.cluster) {
        crate::cluster_http::use_tls(crate::tls::leaf_certificate(cert)?)?;
    }
    if config.anonymous_publish() {
        tracing::warn!(
            "anonymous publishing is allowed: anyone who reaches this port can publish (set tokens to stop it)"
        );
    }
    let listener = TcpListener::bind(config.http_listen)
        .await
        .map_err(|e| format!("cannot bind HTTP {}: {e}", config.http_listen))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The real port (the configured one may be 0): session ids made in a cluster carry it.
    let mut config = config;
    config.http_listen = http_addr;
    let mut tasks = JoinSet::new();
    // Not a child of `shutdown`: the media outlives HTTP until HTTP has stopped.
    let media = CancellationToken::new();
    let node = Node::start(config, media.clone(), &mut tasks, crate::metrics::gather).await?;
    let resumes = node
        .resume_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(requests) = resumes {
        tasks.spawn(crate::resume::run(node.clone(), requests, media.clone()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "gateway ready: {scheme}://{http_addr}/ (WHIP {scheme}://<host>:{}/whip/<stream>), WebRTC on UDP {}, candidates {:?}",
        http_addr.port(),
        node.udp_addr(),
        node.peers.candidates()
    );
    // Machine-readable line for scripts and tests that start the gateway on port 0.
    match &node.ice_tcp {
        Some(t) => println!(
            "READY http={http_addr} udp={} ice_tcp={}",
            node.udp_addr(),
            t.local_addr()
        ),
        None => println!("READY http={http_addr} udp={}", node.udp_addr()),
    }
    let app = front::router(node.clone());
    let drained = {
        let (shutdown, node) = (shutdown.clone(), node.clone());
        async move {
            shutdown.cancelled().await;
            // The balancer is about to move this gateway's flows: the other gateways learn
            // now where they go, instead of probing for each.
            node.claim_clients();
            let timeout = node.config.drain_timeout();
            crate::drain::sessions(&node.draining, &node.registry, timeout, &now).await;
        }
    };

    match tls {
        None => {
            // The peer address feeds admission (`front::admitted`): per-source limits.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(drained)
            .await
            .map_err(|e| e.to_string())?;
        }
        Some(tls) => serve_tls(listener, app, tls, drained).await,
    }
    shutdown.cancel();
    media.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("media tasks did not stop within 5 s; exiting anyway");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    tls: std::sync::Arc<rustls::ServerConfig>,
    drained: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(drained);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut drained => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = TowerToHyperService::new(app);
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
