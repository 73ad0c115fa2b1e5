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
use crate::gso;
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
    gso: bool,
    pub sent: AtomicU64,
    /// GSO buffers sent (each carried several of the datagrams in `sent`).
    pub gso_sends: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub received: AtomicU64,
    pub unrouted: AtomicU64,
}

impl UdpShell {
    /// Bind `addr`; `gso: false` sends every datagram on its own even where GSO works.
    pub fn bind(addr: SocketAddr, gso: bool) -> io::Result<Arc<UdpShell>> {
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
            gso,
            sent: AtomicU64::new(0),
            gso_sends: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
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
        let transmit = self.transmit(source, destination, contents, None);
        if let Err(e) = self.send_transmit(&transmit).await {
            self.count_error(destination, &e);
        }
    }

    /// Send a worker's datagrams in order, each run `gso::run_len` allows as one GSO buffer
    /// (copied into `scratch`, which the caller keeps between calls). If the kernel refuses
    /// segmentation offload (quinn-udp then turns it off for the socket), the run goes out one
    /// datagram at a time instead, so nothing accepted is lost to it.
    pub async fn send_batch(&self, transmits: &[str0m::net::Transmit], scratch: &mut Vec<u8>) {
        let mut rest = transmits;
        while !rest.is_empty() {
            let segments = if self.gso {
                self.state.max_gso_segments()
            } else {
                1
            };
            let n = gso::run_len(rest, segments).max(1);
            let (run, tail) = rest.split_at(n);
            rest = tail;
            let first = &run[0];
            if n == 1 {
                self.send(first.source, first.destination, &first.contents)
                    .await;
                continue;
            }
            scratch.clear();
            for t in run {
                scratch.extend_from_slice(&t.contents);
            }
            let transmit = self.transmit(
                first.source,
                first.destination,
                scratch,
                Some(first.contents.len()),
            );
            match self.send_transmit(&transmit).await {
                Ok(()) => {
                    self.gso_sends.fetch_add(1, Ordering::Relaxed);
                    self.sent.fetch_add(n as u64 - 1, Ordering::Relaxed);
                }
                Err(_) => {
                    for t in run {
                        self.send(t.source, t.destination, &t.contents).await;
                    }
                }
            }
        }
    }

    fn transmit<'a>(
        &self,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &'a [u8],
        segment_size: Option<usize>,
    ) -> quinn_udp::Transmit<'a> {
        // On a wildcard bind the source address must be chosen per datagram (the candidate the
        // peer knows); on a specific bind the kernel's choice is that address already.
        let src_ip = self
            .local
            .ip()
            .is_unspecified()
            .then_some(source.ip())
            .filter(|ip| !ip.is_unspecified());
        quinn_udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip,
        }
    }

    /// One `sendmsg`, waiting while the socket buffer is full; counts one datagram and its bytes.
    async fn send_transmit(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        loop {
            let r = self.socket.try_io(Interest::WRITABLE, || {
                self.state
                    .try_send(UdpSockRef::from(&self.socket), transmit)
            });
            match r {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    self.sent_bytes
                        .fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.writable().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn count_error(&self, destination: SocketAddr, e: &io::Error) {
        if self
            .send_errors
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1000)
        {
            tracing::warn!(%destination, error = %e, "UDP send failed");
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
            // One message per worker per read batch: a frame's packets reach the worker
            // together, so its viewers' copies leave together (GSO, see `gso`).
            let mut batches: Vec<Vec<Datagram>> = workers.iter().map(|_| Vec::new()).collect();
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
                    if let Some(batch) = batches.get_mut(route.worker) {
                        batch.push(Datagram {
                            session: route.session,
                            source,
                            destination,
                            data: chunk.to_vec(),
                            at,
                        });
                    }
                }
            }
            for (worker, batch) in workers.iter().zip(batches) {
                if !batch.is_empty() {
                    let _ = worker.send(WorkerMsg::Datagrams(batch));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use str0m::net::{Protocol, Transmit};

    fn transmit(source: SocketAddr, destination: SocketAddr, tag: u8, len: usize) -> Transmit {
        let mut contents = vec![tag; len];
        contents[0] = 0x80;
        Transmit {
            proto: Protocol::Udp,
            source,
            destination,
            contents: contents.into(),
        }
    }

    fn receive_all(socket: &std::net::UdpSocket) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// A frame to one viewer leaves as one GSO buffer and arrives as the same datagrams in the
    /// same order; datagrams to another viewer in between are not mixed in.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        let shell = UdpShell::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).expect("bind");
        let viewer = |_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("viewer socket");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            s
        };
        let (a, b) = (viewer(0), viewer(1));
        let src = shell.local_addr();
        let (to_a, to_b) = (
            a.local_addr().expect("addr"),
            b.local_addr().expect("addr"),
        );
        let batch = vec![
            transmit(src, to_a, 1, 1200),
            transmit(src, to_a, 2, 1200),
            transmit(src, to_a, 3, 1200),
            transmit(src, to_a, 4, 500),
            transmit(src, to_b, 5, 1200),
            transmit(src, to_b, 6, 1200),
            transmit(src, to_a, 7, 900),
        ];
        let mut scratch = Vec::new();
        shell.send_batch(&batch, &mut scratch).await;

        let got_a = receive_all(&a);
        let got_b = receive_all(&b);
        let want = |dst: SocketAddr| -> Vec<Vec<u8>> {
            batch
                .iter()
                .filter(|t| t.destination == dst)
                .map(|t| t.contents.to_vec())
                .collect()
        };
        assert_eq!(got_a, want(to_a));
        assert_eq!(got_b, want(to_b));
        assert_eq!(shell.sent.load(Ordering::Relaxed), 7);
        let bytes: usize = batch.iter().map(|t| t.contents.len()).sum();
        assert_eq!(shell.sent_bytes.load(Ordering::Relaxed), bytes as u64);
        if shell.state.max_gso_segments() > 1 {
            // [1..4] to a, [5,6] to b, [7] alone.
            assert_eq!(shell.gso_sends.load(Ordering::Relaxed), 2);
        }
    }
}
