//! The TURN service's sockets: one UDP listener for clients and, when configured, a TCP one and a
//! TLS one (`turns:`; a handshake first, then the same framing), each connection framed into STUN
//! messages and ChannelData (RFC 8656 §12.5) with its allocation ending with it; one UDP socket
//! per allocation on the relay address (a reader task each, feeding the one task that owns the
//! `TurnServer`), a once-a-second timer for expiries. Everything the server decides comes out of
//! `poll_output`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::server::{TurnConfig, TurnOutput, TurnServer};
use crate::turn_credentials::TurnShared;

/// A relayed datagram: (relayed address, peer, bytes).
type PeerDatagram = (SocketAddr, SocketAddr, Vec<u8>);

/// TCP and TLS connections at most, together; more are closed at once.
const MAX_TCP_CLIENTS: usize = 10_000;

/// A TLS client that has not finished its handshake by then is dropped: a slow or silent one
/// would otherwise hold a connection slot for ever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 7443's ALPN id for TURN; clients that offer no ALPN are served too.
const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// The TLS listener's rustls configuration: TLS 1.2 and 1.3 (coturn's client and Chromium),
/// `stun.turn` advertised.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    crate::tls::server_config(cert, key, &[ALPN_STUN_TURN])
}

/// What a TCP or TLS connection tells the server task.
enum TcpEvent {
    Open(SocketAddr, mpsc::Sender<Vec<u8>>),
    Message(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

/// Binds `listen` (returns its real address), and `listen_tcp` and `listen_tls` when given, and
/// serves TURN on them until `shutdown`.
pub async fn start(
    listen: SocketAddr,
    listen_tcp: Option<SocketAddr>,
    listen_tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    relay_ip: IpAddr,
    config: TurnConfig,
    shared: Arc<TurnShared>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let socket = UdpSocket::bind(listen)
        .await
        .map_err(|e| format!("cannot bind TURN UDP {listen}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, %relay_ip, "TURN over UDP");
    let (tcp_tx, tcp_rx) = mpsc::channel::<TcpEvent>(4096);
    let open = Arc::new(AtomicUsize::new(0));
    let streams = [
        listen_tcp.map(|addr| (addr, None)),
        listen_tls.map(|(addr, config)| (addr, Some(TlsAcceptor::from(config)))),
    ];
    for (addr, tls) in streams.into_iter().flatten() {
        let kind = if tls.is_some() { "TLS" } else { "TCP" };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind TURN {kind} {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, "TURN over {kind}");
        let accepting = Accepting {
            tls,
            events: tcp_tx.clone(),
            open: open.clone(),
            shared: shared.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(accept(listener, accepting));
    }
    let task = tokio::spawn(run(
        socket,
        tcp_rx,
        relay_ip,
        TurnServer::new(config),
        shared,
        shutdown,
    ));
    Ok((local, task))
}

async fn run(
    socket: UdpSocket,
    mut tcp_rx: mpsc::Receiver<TcpEvent>,
    relay_ip: IpAddr,
    mut server: TurnServer,
    shared: Arc<TurnShared>,
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
                from_client(&mut server, &shared, from, &buf[..n]);
            }
            Some(event) = tcp_rx.recv() => match event {
                TcpEvent::Open(addr, writer) => {
                    tcp_clients.insert(addr, writer);
                }
                TcpEvent::Message(from, bytes) => {
                    from_client(&mut server, &shared, from, &bytes);
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
                TurnOutput::ToClient { to, mut bytes } => match tcp_clients.get(&to) {
                    Some(writer) => {
                        super::message::pad_for_stream(&mut bytes);
                        // A client that does not read loses what does not fit (like UDP).
                        let _ = writer.try_send(bytes);
                    }
                    None => {
                        let _ = socket.send_to(&bytes, to).await;
                    }
                },
                TurnOutput::ToPeer { from, to, bytes } => {
                    if let Some(r) = relays.get(&from) {
                        let _ = r.socket.send_to(&bytes, to).await;
                    }
                }
                TurnOutput::BindRelay { client, even } => {
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
                TurnOutput::CloseRelay { relayed } => {
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
fn from_client(server: &mut TurnServer, shared: &TurnShared, from: SocketAddr, bytes: &[u8]) {
    let now_unix = crate::turn_credentials::unix_now();
    let passwords = |u: &str| shared.credentials().password_for(u, now_unix);
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

/// What a stream listener's connections share: the TLS acceptor (none: plain TCP), the server
/// task's queue, the count of open connections across both listeners.
struct Accepting {
    tls: Option<TlsAcceptor>,
    events: mpsc::Sender<TcpEvent>,
    open: Arc<AtomicUsize>,
    shared: Arc<TurnShared>,
    shutdown: CancellationToken,
}

async fn accept(listener: TcpListener, a: Accepting) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = a.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: retrying at once would spin.
                    tracing::warn!(error = %e, "TURN accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if a.open.load(Ordering::Relaxed) >= MAX_TCP_CLIENTS {
            continue; // dropped: closes the connection
        }
        a.open.fetch_add(1, Ordering::Relaxed);
        // STUN transactions and ChannelData are small writes that must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (tls, events, open, shared, shutdown) = (
            a.tls.clone(),
            a.events.clone(),
            a.open.clone(),
            a.shared.clone(),
            a.shutdown.clone(),
        );
        tokio::spawn(async move {
            let served = match tls {
                None => connection(stream, addr, &events, shutdown).await,
                Some(acceptor) => match handshake(&acceptor, stream, addr, &shared).await {
                    Some(tls) => connection(tls, addr, &events, shutdown).await,
                    None => false,
                },
            };
            if served {
                let _ = events.send(TcpEvent::Closed(addr)).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// A `turns:` client's TLS handshake, within [`TLS_HANDSHAKE_TIMEOUT`]. A failure (a client
/// speaking something else, an old TLS version, a certificate it rejects) ends only this
/// connection: logged at debug, counted in `/v1/stats`.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    shared: &TurnShared,
) -> Option<TlsStream<TcpStream>> {
    let error = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let (_, session) = tls.get_ref();
            tracing::debug!(
                %addr,
                version = ?session.protocol_version(),
                alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
                "TURN over TLS"
            );
            return Some(tls);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("none within {TLS_HANDSHAKE_TIMEOUT:?}"),
    };
    tracing::debug!(%addr, %error, "TURN TLS handshake failed");
    shared
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    None
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

/// Frames one client connection (TCP, or TLS once its handshake is done) into the server task
/// until either side ends it; false if the server task had gone before it began.
async fn connection<S>(
    stream: S,
    addr: SocketAddr,
    events: &mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) -> bool
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    if events.send(TcpEvent::Open(addr, tx)).await.is_err() {
        return false;
    }
    let write = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
            // TLS keeps what a busy socket did not take in its buffer until the next write or a
            // flush: flush once the queue is empty, so nothing waits there, yet not per message.
            if rx.is_empty() && writer.flush().await.is_err() {
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
    true
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
