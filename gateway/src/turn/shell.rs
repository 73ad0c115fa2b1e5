//! The TURN service's sockets: one UDP listener for clients, one UDP socket per allocation on the
//! relay address (a reader task each, feeding the one task that owns the `TurnServer`), a
//! once-a-second timer for expiries. Everything the server decides comes out of `poll_output`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::server::{Output, TurnConfig, TurnServer};
use crate::node::Node;

/// A relayed datagram: (relayed address, peer, bytes).
type PeerDatagram = (SocketAddr, SocketAddr, Vec<u8>);

struct Relay {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

/// Binds `listen` (returns its real address) and serves TURN on it until `shutdown`.
pub async fn start(
    listen: SocketAddr,
    relay_ip: IpAddr,
    config: TurnConfig,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let socket = UdpSocket::bind(listen)
        .await
        .map_err(|e| format!("cannot bind TURN UDP {listen}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, %relay_ip, "TURN over UDP");
    let task = tokio::spawn(run(
        socket,
        relay_ip,
        TurnServer::new(config),
        node,
        shutdown,
    ));
    Ok((local, task))
}

async fn run(
    socket: UdpSocket,
    relay_ip: IpAddr,
    mut server: TurnServer,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let (peer_tx, mut peer_rx) = mpsc::channel::<PeerDatagram>(4096);
    let mut relays: HashMap<SocketAddr, Relay> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now_unix = crate::http::turn::unix_now();
                let passwords = |u: &str| {
                    node.turn.lock().unwrap_or_else(|p| p.into_inner()).password_for(u, now_unix)
                };
                server.handle_client(Instant::now(), now_unix, from, &buf[..n], &passwords);
            }
            Some((relayed, peer, bytes)) = peer_rx.recv() => {
                server.handle_peer(Instant::now(), relayed, peer, &bytes);
            }
            _ = tick.tick() => server.handle_timeout(Instant::now()),
        }
        while let Some(o) = server.poll_output() {
            match o {
                Output::ToClient { to, bytes } => {
                    let _ = socket.send_to(&bytes, to).await;
                }
                Output::ToPeer { from, to, bytes } => {
                    if let Some(r) = relays.get(&from) {
                        let _ = r.socket.send_to(&bytes, to).await;
                    }
                }
                Output::BindRelay { client, even } => {
                    let bound = bind_relay(relay_ip, even, peer_tx.clone()).await;
                    let result = match bound {
                        Ok((addr, relay)) => {
                            relays.insert(addr, relay);
                            Ok(addr)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "TURN: no relayed socket");
                            Err(())
                        }
                    };
                    server.relay_bound(Instant::now(), client, result);
                }
                Output::CloseRelay { relayed } => {
                    if let Some(r) = relays.remove(&relayed) {
                        r.reader.abort();
                    }
                }
            }
        }
    }
    for (_, r) in relays {
        r.reader.abort();
    }
}

async fn bind_relay(
    ip: IpAddr,
    even: bool,
    tx: mpsc::Sender<PeerDatagram>,
) -> std::io::Result<(SocketAddr, Relay)> {
    let mut socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    // An even port, when asked: the kernel picks at random, so a few tries find one.
    for _ in 0..32 {
        if !even || socket.local_addr()?.port() % 2 == 0 {
            break;
        }
        socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    }
    let socket = Arc::new(socket);
    let addr = socket.local_addr()?;
    let reader = tokio::spawn({
        let socket = socket.clone();
        async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                // A full queue drops the datagram (UDP semantics) rather than stall the reader.
                let _ = tx.try_send((addr, peer, buf[..n].to_vec()));
            }
        }
    });
    Ok((addr, Relay { socket, reader }))
}
