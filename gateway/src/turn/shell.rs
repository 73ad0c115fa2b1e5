//! The TURN service's sockets: one UDP listener for clients and, when configured, a TCP one (each
//! connection framed into STUN messages and ChannelData, RFC 8656 §12.5, its allocation ending
//! with it), one UDP socket per allocation on the relay address (a reader task each, feeding the
//! one task that owns the `TurnServer`), a once-a-second timer for expiries. Everything the
//! server decides comes out of `poll_output`.

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

/// TCP connections at most; more are closed at once.
const MAX_TCP_CLIENTS: usize = 10_000;

/// What a TCP connection tells the server task.
enum TcpEvent {
    Open(SocketAddr, mpsc::Sender<Vec<u8>>),
    Message(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

/// Binds `listen` (returns its real address) and serves TURN on it until `shutdown`.
pub async fn start(
    listen: SocketAddr,
    listen_tcp: Option<SocketAddr>,
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
    let (tcp_tx, tcp_rx) = mpsc::channel::<TcpEvent>(4096);
    if let Some(addr) = listen_tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind TURN TCP {addr}: {e}"))?;
        tracing::info!(local = %addr, "TURN over TCP");
        tokio::spawn(accept(listener, tcp_tx, shutdown.clone()));
    }
    let task = tokio::spawn(run(
        socket,
        tcp_rx,
        relay_ip,
        TurnServer::new(config),
        node,
        shutdown,
    ));
    Ok((local, task))
}

async fn run(
    socket: UdpSocket,
    mut tcp_rx: mpsc::Receiver<TcpEvent>,
    relay_ip: IpAddr,
    mut server: TurnServer,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let (peer_tx, mut peer_rx) = mpsc::channel::<PeerDatagram>(4096);
    let mut relays: HashMap<SocketAddr, Relay> = HashMap::new();
    let mut tcp_clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                from_client(&mut server, &node, from, &buf[..n]);
            }
            Some(event) = tcp_rx.recv() => match event {
                TcpEvent::Open(addr, writer) => {
                    tcp_clients.insert(addr, writer);
                }
                TcpEvent::Message(from, bytes) => {
                    from_client(&mut server, &node, from, &bytes);
                }
                TcpEvent::Closed(addr) => {
                    tcp_clients.remove(&addr);
                    server.client_gone(addr);
                }
            },
            Some((relayed, peer, bytes)) = peer_rx.recv() => {
                server.handle_peer(Instant::now(), relayed, peer, &bytes);
            }
            _ = tick.tick() => server.handle_timeout(Instant::now()),
        }
        while let Some(o) = server.poll_output() {
            match o {
                Output::ToClient { to, mut bytes } => match tcp_clients.get(&to) {
                    Some(writer) => {
                        // Over TCP, ChannelData is padded to a multiple of four (§12.5).
                        if bytes.first().is_some_and(|b| b & 0xC0 == 0x40) {
                            bytes.resize(bytes.len().div_ceil(4) * 4, 0);
                        }
                        // A client that does not read loses what does not fit (like UDP).
                        let _ = writer.try_send(bytes);
                    }
                    None => {
                        let _ = socket.send_to(&bytes, to).await;
                    }
                },
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

/// A client's message (a UDP datagram, or one framed off a TCP connection) into the server,
/// checked against the credentials the API issued.
fn from_client(server: &mut TurnServer, node: &Node, from: SocketAddr, bytes: &[u8]) {
    let now_unix = crate::http::turn::unix_now();
    let passwords = |u: &str| node.turn_credentials().password_for(u, now_unix);
    server.handle_client(Instant::now(), now_unix, from, bytes, &passwords);
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

async fn accept(
    listener: tokio::net::TcpListener,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_TCP_CLIENTS {
            continue; // dropped: closes the connection
        }
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (events, open, shutdown) = (events.clone(), open.clone(), shutdown.clone());
        tokio::spawn(async move {
            connection(stream, addr, &events, shutdown).await;
            let _ = events.send(TcpEvent::Closed(addr)).await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// Bytes on a TURN TCP connection that are neither a STUN message nor ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotTurn;

/// Length of the first STUN message or ChannelData in `buf` (padded ChannelData over TCP),
/// `Ok(None)` while incomplete, `Err` for bytes that are neither.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, NotTurn> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match buf[0] & 0xC0 {
        0x00 => super::message::HEADER + len,
        0x40 => 4 + len.div_ceil(4) * 4,
        _ => return Err(NotTurn),
    };
    Ok((buf.len() >= total).then_some(total))
}

async fn connection(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    if events.send(TcpEvent::Open(addr, tx)).await.is_err() {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = reader.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_len(&buf) {
                Ok(Some(total)) => {
                    let rest = buf.split_off(total);
                    let message = std::mem::replace(&mut buf, rest);
                    if events.send(TcpEvent::Message(addr, message)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(NotTurn) => break 'read, // not TURN: close
            }
        }
    }
    write.abort();
}

#[cfg(test)]
mod tests {
    use super::{NotTurn, frame_len};

    #[test]
    fn tcp_frames_are_stun_messages_or_padded_channel_data() {
        // A STUN header saying 4 bytes of attributes: 24 in all.
        let mut stun = vec![0x00, 0x03, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42];
        stun.extend([0u8; 16]);
        assert_eq!(frame_len(&stun[..10]), Ok(None));
        assert_eq!(frame_len(&stun), Ok(Some(24)));
        // ChannelData of 5 bytes: 4 + 8 with its padding.
        let cd = [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 9];
        assert_eq!(frame_len(&cd[..11]), Ok(None));
        assert_eq!(frame_len(&cd), Ok(Some(12)));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(NotTurn));
    }
}
