//! ICE-TCP (RFC 6544): a passive TCP host candidate beside each UDP one, so a client whose
//! network blocks UDP reaches the gateway itself, without TURN. Each connection carries RFC 4571
//! frames (a 16-bit length, then one STUN, DTLS or SRTP packet).
//!
//! A connection is routed the way a UDP source is: by the ufrag of a STUN request that passes
//! MESSAGE-INTEGRITY, in a `Demux` of its own fed the same updates as the UDP one (so a TCP
//! source can never be taken for a UDP one with the same address). Its frames reach the
//! session's worker as datagrams marked `Protocol::Tcp`; the worker hands its TCP transmits to
//! [`IceTcp::send`], which frames them onto the connection. str0m does the rest: the client's
//! request from a new TCP source is a peer-reflexive candidate like any other.
//!
//! Hostile clients: at most `MAX_CONNECTIONS` at once; a connection that has not proved a
//! session's ICE password within `VERIFY_WITHIN` is closed, and one that has is closed when its
//! session ends; a write queue that is full (a client that does not read) drops packets as UDP
//! would, so a slow client never stalls a worker.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::datagram::Datagram;
use crate::demux::{Demux, DemuxUpdate, Dispatch};
use crate::ids::SessionId;
use crate::mailbox::WorkerMsg;
use crate::udp::normalise;

/// Connections at most; more are closed at accept.
const MAX_CONNECTIONS: usize = 10_000;
/// A connection must carry a verified STUN request this soon, or it is closed.
const VERIFY_WITHIN: Duration = Duration::from_secs(10);
/// Frames queued towards one client at most (a keyframe burst to one viewer fits).
const WRITE_QUEUE: usize = 1024;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct IceTcpStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Closed at accept (over `MAX_CONNECTIONS`) or for proving no session within `VERIFY_WITHIN`.
    pub refused: AtomicU64,
    /// RFC 4571 frames (STUN, DTLS, SRTP) received from clients.
    pub frames_received: AtomicU64,
    /// … and sent to them.
    pub frames_sent: AtomicU64,
    /// Frames dropped: unrouted, forged STUN, or a full write queue.
    pub dropped: AtomicU64,
}

/// [`IceTcpStats`] read at once, with the open connections (`/v1/stats`, `/metrics`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct IceTcpSnapshot {
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused or closed unverified.
    pub refused: u64,
    /// Frames received from clients.
    pub frames_received: u64,
    /// Frames sent to clients.
    pub frames_sent: u64,
    /// Frames dropped: unrouted, forged STUN, or a full write queue.
    pub dropped: u64,
}

/// The ICE-TCP listener and its connections' write queues.
pub struct IceTcp {
    local: SocketAddr,
    writers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    /// The listener's counters.
    pub stats: IceTcpStats,
}

/// What a connection tells the router.
enum ConnEvent {
    Frame {
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    Closed(SocketAddr),
}

impl IceTcp {
    /// Binds `addr`; when `fallback` (the address was not asked for explicitly) and the port is
    /// taken, any free port instead.
    pub async fn bind(addr: SocketAddr, fallback: bool) -> io::Result<(Arc<IceTcp>, TcpListener)> {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if fallback && e.kind() == io::ErrorKind::AddrInUse => {
                TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?
            }
            Err(e) => return Err(e),
        };
        let local = listener.local_addr()?;
        let ice_tcp = Arc::new(IceTcp {
            local,
            writers: Mutex::default(),
            stats: IceTcpStats::default(),
        });
        Ok((ice_tcp, listener))
    }

    /// The address the listener is bound to (the passive candidates' port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// The counters and open connections, read at once.
    pub fn snapshot(&self) -> IceTcpSnapshot {
        let r = Ordering::Relaxed;
        IceTcpSnapshot {
            connections: self.connections(),
            accepted: self.stats.accepted.load(r),
            refused: self.stats.refused.load(r),
            frames_received: self.stats.frames_received.load(r),
            frames_sent: self.stats.frames_sent.load(r),
            dropped: self.stats.dropped.load(r),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        // A panic elsewhere while holding it leaves the map itself consistent.
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frame each TCP transmit onto its connection's write queue. A connection that has gone, or
    /// whose queue is full, loses the packet (ICE, DTLS and RTP recover as they do over UDP).
    pub fn send<'a>(&self, transmits: impl Iterator<Item = &'a Transmit>) {
        let writers = self.lock();
        for t in transmits.filter(|t| t.proto == Protocol::Tcp) {
            let Some(frame) = frame(&t.contents) else {
                continue;
            };
            let sent = writers
                .get(&t.destination)
                .is_some_and(|w| w.try_send(frame).is_ok());
            let counter = if sent {
                &self.stats.frames_sent
            } else {
                &self.stats.dropped
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A routing update; a session that has ended takes its connections with it (a client that
    /// keeps one open would otherwise hold it, and a slot under `MAX_CONNECTIONS`, for good).
    fn apply(
        &self,
        demux: &mut Demux,
        sessions: &mut HashMap<SessionId, Vec<SocketAddr>>,
        update: DemuxUpdate,
    ) {
        if let DemuxUpdate::Remove { session } = &update
            && let Some(conns) = sessions.remove(session)
        {
            let mut writers = self.lock();
            for source in conns {
                // Dropping its write queue ends the connection's task.
                writers.remove(&source);
            }
        }
        demux.apply(update);
    }

    /// Accept connections and route their frames until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        mut updates: mpsc::UnboundedReceiver<DemuxUpdate>,
        workers: Vec<mpsc::UnboundedSender<WorkerMsg>>,
        shutdown: CancellationToken,
    ) {
        let (events_tx, mut events) = mpsc::channel::<ConnEvent>(4096);
        let mut demux = Demux::default();
        // Connections that have not yet proved a session's password, and since when.
        let mut unverified: HashMap<SocketAddr, Instant> = HashMap::new();
        // The connections each session has proved, closed when the session ends.
        let mut sessions: HashMap<SessionId, Vec<SocketAddr>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                update = updates.recv() => match update {
                    Some(u) => self.apply(&mut demux, &mut sessions, u),
                    None => break,
                },
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let source = normalise(peer);
                    if self.connections() >= MAX_CONNECTIONS {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue; // dropped: closes it
                    }
                    let Ok(destination) = stream.local_addr().map(normalise) else { continue };
                    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                    self.lock().insert(source, tx);
                    unverified.insert(source, Instant::now());
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(stream, source, destination, events_tx.clone(), rx, shutdown.clone()));
                }
                Some(event) = events.recv() => match event {
                    ConnEvent::Frame { source, destination, data } => {
                        // A new session's ufrag must be known before its first STUN is routed.
                        while let Ok(u) = updates.try_recv() {
                            self.apply(&mut demux, &mut sessions, u);
                        }
                        self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                        let at = Instant::now();
                        match demux.route(at, source, &data) {
                            Dispatch::To(route) => {
                                if unverified.remove(&source).is_some() {
                                    sessions.entry(route.session).or_default().push(source);
                                }
                                let d = Datagram { session: route.session, source, destination, data, at, proto: Protocol::Tcp };
                                if let Some(w) = workers.get(route.worker) {
                                    let _ = w.send(WorkerMsg::Datagrams(vec![d]));
                                }
                            }
                            Dispatch::Unknown | Dispatch::Forged => {
                                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    ConnEvent::Closed(source) => {
                        self.lock().remove(&source);
                        unverified.remove(&source);
                        // Few sessions use TCP: a scan is cheaper than a second index.
                        for conns in sessions.values_mut() {
                            conns.retain(|a| *a != source);
                        }
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let stale: Vec<SocketAddr> = unverified
                        .iter()
                        .filter(|(_, since)| now.duration_since(**since) >= VERIFY_WITHIN)
                        .map(|(a, _)| *a)
                        .collect();
                    for source in stale {
                        // Dropping its write queue ends the connection's task.
                        unverified.remove(&source);
                        self.lock().remove(&source);
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%source, "ICE-TCP connection proved no session; closed");
                    }
                }
            }
        }
        self.lock().clear();
    }
}

/// One connection: frames read off it go to the router; frames queued for it are written in
/// batches. It ends when the client closes, the router stops, or its queue is dropped (every byte
/// stream frames as RFC 4571, so bad frames are the demux's to drop, not a reason to close).
async fn connection(
    stream: TcpStream,
    source: SocketAddr,
    destination: SocketAddr,
    events: mpsc::Sender<ConnEvent>,
    mut writes: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some((packet, next)) = next_frame(&buf[start..]) {
                let data = packet.to_vec();
                start += next;
                if data.is_empty() {
                    continue;
                }
                let frame = ConnEvent::Frame {
                    source,
                    destination,
                    data,
                };
                if events.send(frame).await.is_err() {
                    return;
                }
            }
            buf.drain(..start);
        }
    };
    let write = async {
        let mut batch = Vec::with_capacity(16 * 1024);
        while let Some(first) = writes.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < 64 * 1024 {
                match writes.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if writer.write_all(&batch).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
        _ = shutdown.cancelled() => {}
    }
    let _ = events.send(ConnEvent::Closed(source)).await;
}

/// RFC 4571: the first frame in `buf` and the length it takes there (header included), or `None`
/// while it is incomplete. Every 16-bit length is valid, so any byte stream frames; what the
/// frames hold is the demux's and str0m's to judge.
pub fn next_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let header = buf.get(..2)?;
    let len = u16::from_be_bytes([header[0], header[1]]) as usize;
    let packet = buf.get(2..2 + len)?;
    Some((packet, 2 + len))
}

/// `packet` with its RFC 4571 length in front; `None` for one too long to frame.
pub fn frame(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Take every whole frame off the front of `buf`, as the connection's reader does.
    fn drain(buf: &mut Vec<u8>, got: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        while let Some((p, n)) = next_frame(&buf[start..]) {
            got.push(p.to_vec());
            start += n;
        }
        buf.drain(..start);
    }

    #[test]
    fn frames_split_a_stream_wherever_it_is_cut() {
        let packets: [&[u8]; 3] = [b"stun request", b"", b"a dtls record"];
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| frame(p).expect("short"))
            .collect();
        let want: Vec<Vec<u8>> = packets.iter().map(|p| p.to_vec()).collect();
        for cut in 0..stream.len() {
            // Whatever the first read held, the frames come out whole and in order.
            let (mut buf, mut got) = (stream[..cut].to_vec(), Vec::new());
            drain(&mut buf, &mut got);
            buf.extend_from_slice(&stream[cut..]);
            drain(&mut buf, &mut got);
            assert_eq!(got, want, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_packet_longer_than_a_frame_can_say_is_not_framed() {
        assert!(frame(&vec![0u8; 65_535]).is_some());
        assert!(frame(&vec![0u8; 65_536]).is_none());
        assert_eq!(next_frame(&[0x00]), None);
        assert_eq!(next_frame(&[0x00, 0x03, 1, 2]), None);
        assert_eq!(next_frame(&[0x00, 0x02, 1, 2, 9]), Some((&[1u8, 2][..], 4)));
    }
}
