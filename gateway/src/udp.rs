//! The one UDP socket every WebRTC session of the node shares, and its receive loop. OS-level
//! work (recvmmsg/GRO batches, the destination address of each datagram via IP_PKTINFO, choosing
//! the source address of replies on a wildcard bind) is quinn-udp's; routing is `Demux`'s.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demux::{Demux, DemuxUpdate};
use crate::ids::SessionId;
use crate::worker::WorkerMsg;

/// Socket buffers large enough for a keyframe burst to many viewers without kernel drops.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
const BATCH: usize = 32;
const BUF_LEN: usize = 64 * 1024;

/// A datagram on its way to the worker that owns its session.
#[derive(Debug)]
pub struct Datagram {
    pub session: SessionId,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
    pub at: Instant,
}

/// The node's UDP socket.
pub struct UdpShell {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub received: AtomicU64,
    pub unrouted: AtomicU64,
}

impl UdpShell {
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<UdpShell>> {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER_BYTES);
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER_BYTES);
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let local = socket.local_addr()?;
        Ok(Arc::new(UdpShell {
            socket,
            state,
            local,
            sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Send one datagram from `source` (a local candidate) to `destination`. A full socket
    /// buffer waits for room; any other error is counted and the datagram dropped, as UDP would.
    pub async fn send(&self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let src_ip = self
            .local
            .ip()
            .is_unspecified()
            .then_some(source.ip())
            .filter(|ip| !ip.is_unspecified());
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip,
        };
        loop {
            let r = self.socket.try_io(Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&self.socket), &transmit)
            });
            match r {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if self
                        .send_errors
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(1000)
                    {
                        tracing::warn!(%destination, error = %e, "UDP send failed");
                    }
                    return;
                }
            }
        }
    }

    /// Read datagrams until shutdown and hand each to the worker owning its session.
    pub async fn receive_loop(
        self: Arc<Self>,
        mut updates: mpsc::UnboundedReceiver<DemuxUpdate>,
        workers: Vec<mpsc::UnboundedSender<WorkerMsg>>,
        shutdown: CancellationToken,
    ) {
        let mut demux = Demux::default();
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF_LEN]).collect();
        let mut metas = [RecvMeta::default(); BATCH];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                update = updates.recv() => match update {
                    Some(u) => demux.apply(u),
                    None => return,
                },
                ready = self.socket.readable() => {
                    if ready.is_err() {
                        return;
                    }
                    // New sessions' ufrags must be known before their first STUN is routed.
                    while let Ok(u) = updates.try_recv() {
                        demux.apply(u);
                    }
                    self.drain(&mut demux, &mut bufs, &mut metas, &workers);
                }
            }
        }
    }

    fn drain(
        &self,
        demux: &mut Demux,
        bufs: &mut [Vec<u8>],
        metas: &mut [RecvMeta],
        workers: &[mpsc::UnboundedSender<WorkerMsg>],
    ) {
        loop {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let r = self.socket.try_io(Interest::READABLE, || {
                self.state
                    .recv(UdpSockRef::from(&self.socket), &mut slices, metas)
            });
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors (a viewer's port closed) surface here; they are not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            };
            let at = Instant::now();
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let destination =
                    SocketAddr::new(meta.dst_ip.unwrap_or(self.local.ip()), self.local.port());
                let stride = meta.stride.max(1);
                for chunk in buf[..meta.len].chunks(stride) {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    let source = normalise(meta.addr);
                    let Some(route) = demux.route(source, chunk) else {
                        self.unrouted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let datagram = Datagram {
                        session: route.session,
                        source,
                        destination,
                        data: chunk.to_vec(),
                        at,
                    };
                    if let Some(w) = workers.get(route.worker) {
                        let _ = w.send(WorkerMsg::Datagram(datagram));
                    }
                }
            }
        }
    }
}

/// IPv4-mapped IPv6 sources (from a dual-stack socket) as plain IPv4, so they match candidates.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}
