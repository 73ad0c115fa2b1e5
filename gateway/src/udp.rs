//! The one UDP socket every WebRTC session of the node shares, and its receive loop. OS-level
//! receive work (recvmmsg/GRO batches, the destination address of each datagram via IP_PKTINFO)
//! is quinn-udp's; sending is `sendmmsg`'s on Linux (many GSO messages per syscall, the source
//! address of each on a wildcard bind) and quinn-udp's elsewhere; routing is `Demux`'s.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use str0m::net::Protocol;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::datagram::Datagram;
use crate::demux::{Demux, DemuxUpdate, Dispatch, Route};
use crate::forwarding::{Forwarding, FrameAction, ViaTable};
use crate::gso;
use crate::mailbox::WorkerMsg;
use crate::peer_tunnel::{Kind, Tunnel};

/// Socket buffers large enough for a keyframe burst to many viewers without kernel drops.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
const BATCH: usize = 32;
const BUF_LEN: usize = 64 * 1024;

/// How the shell may batch sends; both on by default, off for A/B measurements or a kernel that
/// misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct SendPath {
    /// UDP generic segmentation offload: a viewer's run of equal-sized datagrams as one buffer.
    pub gso: bool,
    /// Many messages per syscall (Linux `sendmmsg`), gathered without a copy.
    pub sendmmsg: bool,
}

impl Default for SendPath {
    fn default() -> Self {
        SendPath {
            gso: true,
            sendmmsg: true,
        }
    }
}

/// The node's UDP socket.
pub struct UdpShell {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    /// Cleared for good if the kernel refuses GSO (EIO).
    gso: AtomicBool,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    sendmmsg: bool,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// GSO buffers sent (each carried several of the datagrams in `sent`).
    pub gso_sends: AtomicU64,
    /// … their bytes (UDP payload).
    pub sent_bytes: AtomicU64,
    /// Messages sent: a GSO buffer or a lone datagram each (the kernel's unit of work).
    pub messages: AtomicU64,
    /// Send syscalls (`sendmsg` or `sendmmsg`) that carried datagrams.
    pub send_calls: AtomicU64,
    /// Sends that failed (logged every 1000th).
    pub send_errors: AtomicU64,
    /// Datagrams received.
    pub received: AtomicU64,
    /// … their bytes.
    pub received_bytes: AtomicU64,
    /// Datagrams received that the demux routed to no session (dropped).
    pub unrouted: AtomicU64,
    /// STUN with a live ufrag and a failed MESSAGE-INTEGRITY (see `demux`).
    pub forged: AtomicU64,
    /// Clients reached through another gateway of the cluster (`forwarding`): their datagrams
    /// go back that way.
    via: Arc<ViaTable>,
    /// In a cluster: the tunnel to the other gateways and this gateway's own address, which a
    /// tunnelled datagram is handed to its session as having arrived at.
    one_address: std::sync::OnceLock<(Tunnel, SocketAddr)>,
    /// Resuming sessions of gateways that are gone (`resume`), once the node has replicas.
    resume: std::sync::OnceLock<crate::resume_hook::ResumeHook>,
    /// Forwarding counters, copied from the receive loop after each batch.
    forwarding: std::sync::Mutex<crate::forwarding::ForwardingStats>,
}

impl UdpShell {
    /// Bind `addr`, sending as `path` allows.
    pub fn bind(addr: SocketAddr, path: SendPath) -> io::Result<Arc<UdpShell>> {
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
            gso: AtomicBool::new(path.gso),
            sendmmsg: path.sendmmsg,
            sent: AtomicU64::new(0),
            gso_sends: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            send_calls: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            forged: AtomicU64::new(0),
            via: Arc::default(),
            one_address: std::sync::OnceLock::new(),
            resume: std::sync::OnceLock::new(),
            forwarding: Default::default(),
        }))
    }

    /// In a cluster with one address: tell every other gateway every `ALIVE_EVERY` that this one
    /// is up (`Kind::Alive`), until `shutdown`. A task of its own, not a branch of the receive
    /// loop, which a flood can keep busy for longer than `DEAD_AFTER`.
    pub async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(one) = crate::owner_tag::installed() else {
            return;
        };
        let tunnel = Tunnel::new(&one.tunnel_key);
        let mut tick = tokio::time::interval(crate::forwarding::ALIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for (gateway, frame) in crate::forwarding::alive_frames(one, &tunnel) {
                let _ = self.socket.send_to(&frame, gateway).await;
            }
        }
    }

    /// Resume sessions of gateways that are gone, from the node's replicas (`resume`).
    pub fn set_resume_hook(&self, hook: crate::resume_hook::ResumeHook) {
        let _ = self.resume.set(hook);
    }

    /// A STUN check for a session another gateway replicated here: to the session's holder, or,
    /// when that holder is gone, a resume of the session here. None when there is no replica.
    fn replicated_check(
        &self,
        f: &mut Forwarding,
        at: Instant,
        (source, destination): (SocketAddr, SocketAddr),
        chunk: &[u8],
    ) -> Option<Vec<(SocketAddr, Vec<u8>)>> {
        let hook = self.resume.get()?;
        let ufrag = crate::demux::stun_local_ufrag(chunk)?;
        let stored = hook
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_ufrag(&ufrag)?
            .clone();
        let holder = stored.replica.holder;
        if stored.replica.is_pending() {
            // Not shaken hands yet: adopted here, where its checks arrive, when the answer
            // carried our certificate's fingerprint and this is the client's first datagram here
            // (never one in the middle of a handshake the holder does through this gateway), or
            // the holder is gone.
            let adoptable = stored.replica.fingerprint == hook.fingerprint
                && (f.first_from(source) || f.holder_gone(at, source, holder));
            if !adoptable {
                return Some(f.check_to(at, source, chunk, holder));
            }
        } else if !stored.orphaned && !f.holder_gone(at, source, holder) {
            return Some(f.check_to(at, source, chunk, holder));
        }
        if f.ask_resume(at, source) {
            let _ = hook.requests.send(crate::resume_hook::ResumeRequest {
                stored,
                client: source,
                destination,
                first: chunk.to_vec(),
            });
        }
        Some(Vec::new())
    }

    /// Serves sessions held by other gateways of the cluster through this socket (see
    /// `forwarding`); `own` is this gateway's address as its sessions' candidates have it.
    pub fn join_one_address(&self, tunnel_key: &[u8; 32], own: SocketAddr) {
        let _ = self.one_address.set((Tunnel::new(tunnel_key), own));
    }

    /// Forwarding counters (zero outside a cluster).
    pub fn forwarding_stats(&self) -> crate::forwarding::ForwardingStats {
        *self.forwarding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Send a worker's datagrams in order, each run `gso::runs` allows as one GSO message. On
    /// Linux the runs go out many per `sendmmsg`, gathered from the datagrams' own buffers
    /// (`sendmmsg`, unless `sendmmsg: false` at bind); elsewhere one `sendmsg` each, copied into
    /// a GSO buffer. A full socket buffer waits for room. If the kernel refuses segmentation
    /// offload, GSO is turned off for the socket and the rest goes out one datagram at a time,
    /// so nothing accepted is lost to it; any other error drops that run's datagrams, as UDP
    /// would, and the rest still go.
    pub async fn send_batch(&self, transmits: &[str0m::net::Transmit]) {
        let through;
        let transmits = match self.through_other_gateways(transmits) {
            Some(t) => {
                through = t;
                &through[..]
            }
            None => transmits,
        };
        let mut runs = gso::runs(transmits, self.max_segments());
        let mut next = 0;
        while !self.send_until_full(transmits, &mut runs, &mut next) {
            if self.socket.writable().await.is_err() {
                return;
            }
        }
    }

    /// Sends `runs[*next..]` of `transmits` until all are gone (true) or the socket buffer is full
    /// (false; `*next` is where to go on). If the kernel refuses segmentation offload, GSO is
    /// turned off for the socket and the rest goes out one datagram at a time; any other error
    /// drops that run's datagrams, as UDP would, and the rest still go.
    fn send_until_full(
        &self,
        transmits: &[str0m::net::Transmit],
        runs: &mut Vec<std::ops::Range<usize>>,
        next: &mut usize,
    ) -> bool {
        while *next < runs.len() {
            match self.try_send_runs(transmits, &runs[*next..]) {
                Ok(n) => {
                    for run in &runs[*next..*next + n] {
                        self.count_sent(&transmits[run.clone()]);
                    }
                    *next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if runs[*next].len() > 1 && e.raw_os_error() == Some(libc::EIO) => {
                    // The route's device cannot segment: as quinn-udp does, stop asking.
                    tracing::warn!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                    *runs = runs[*next..]
                        .iter()
                        .flat_map(|r| r.clone())
                        .map(|i| i..i + 1)
                        .collect();
                    *next = 0;
                }
                Err(e) => {
                    self.count_error(transmits[runs[*next].start].destination, &e);
                    *next += 1;
                }
            }
        }
        true
    }

    /// Segments per GSO message now (1: no GSO).
    /// The batch with every datagram for a client that reaches us through another gateway
    /// wrapped for that gateway, or `None` when there is none (the common case: one load).
    fn through_other_gateways(
        &self,
        transmits: &[str0m::net::Transmit],
    ) -> Option<Vec<str0m::net::Transmit>> {
        if self.via.is_empty() {
            return None;
        }
        let (tunnel, _) = self.one_address.get()?;
        let vias: Vec<Option<SocketAddr>> = transmits
            .iter()
            .map(|t| self.via.get(t.destination))
            .collect();
        if vias.iter().all(Option::is_none) {
            return None;
        }
        Some(
            transmits
                .iter()
                .zip(vias)
                .map(|(t, via)| match via {
                    Some(gateway) => str0m::net::Transmit {
                        proto: t.proto,
                        source: t.source,
                        destination: gateway,
                        contents: tunnel.wrap(Kind::Reply, t.destination, &t.contents).into(),
                    },
                    None => str0m::net::Transmit {
                        proto: t.proto,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.to_vec().into(),
                    },
                })
                .collect(),
        )
    }

    /// What the receive loop sends (tunnel frames, claims, holders' replies for clients), one
    /// read batch at a time: GSO runs and `sendmmsg` as the workers' sends get. Never waits: a
    /// full socket buffer drops the rest, as UDP may.
    fn send_from_receive_loop(&self, transmits: &[str0m::net::Transmit]) {
        if transmits.is_empty() {
            return;
        }
        let mut runs = gso::runs(transmits, self.max_segments());
        let _ = self.send_until_full(transmits, &mut runs, &mut 0);
    }

    fn max_segments(&self) -> usize {
        if self.gso.load(Ordering::Relaxed) {
            self.state.max_gso_segments()
        } else {
            1
        }
    }

    /// One syscall's worth of `runs`; returns how many went.
    fn try_send_runs(
        &self,
        transmits: &[str0m::net::Transmit],
        runs: &[std::ops::Range<usize>],
    ) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if self.sendmmsg {
            use std::os::fd::AsRawFd;
            let fd = self.socket.as_raw_fd();
            return self.socket.try_io(Interest::WRITABLE, || {
                self.send_calls.fetch_add(1, Ordering::Relaxed);
                crate::sendmmsg::send(
                    fd,
                    runs,
                    |i| &transmits[i].contents,
                    |i| self.source_ip(transmits[i].source),
                    |i| transmits[i].destination,
                )
            });
        }
        let Some(run) = runs.first() else {
            return Ok(0);
        };
        let first = &transmits[run.start];
        let scratch: Vec<u8>;
        let (contents, segment_size) = if run.len() > 1 {
            scratch = transmits[run.clone()]
                .iter()
                .flat_map(|t| t.contents.iter().copied())
                .collect();
            (&scratch[..], Some(first.contents.len()))
        } else {
            (&first.contents[..], None)
        };
        let transmit = quinn_udp::Transmit {
            destination: first.destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: self.source_ip(first.source),
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.send_calls.fetch_add(1, Ordering::Relaxed);
            self.state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
        })?;
        Ok(1)
    }

    fn count_sent(&self, run: &[str0m::net::Transmit]) {
        let bytes: usize = run.iter().map(|t| t.contents.len()).sum();
        self.sent.fetch_add(run.len() as u64, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        if run.len() > 1 {
            self.gso_sends.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The source address to ask for: on a wildcard bind it must be chosen per datagram (the
    /// candidate the peer knows); on a specific bind the kernel's choice is that address already.
    fn source_ip(&self, source: SocketAddr) -> Option<IpAddr> {
        self.local
            .ip()
            .is_unspecified()
            .then_some(source.ip())
            .filter(|ip| !ip.is_unspecified())
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
        let mut forwarding = crate::owner_tag::installed()
            .filter(|_| self.one_address.get().is_some())
            .map(|one| Forwarding::new(one, self.via.clone()));
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF_LEN]).collect();
        let mut metas = [RecvMeta::default(); BATCH];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                update = updates.recv() => match update {
                    Some(u) => self.apply(&mut demux, forwarding.as_mut(), u, &workers),
                    None => return,
                },
                ready = self.socket.readable() => {
                    if ready.is_err() {
                        return;
                    }
                    // New sessions' ufrags must be known before their first STUN is routed.
                    while let Ok(u) = updates.try_recv() {
                        self.apply(&mut demux, forwarding.as_mut(), u, &workers);
                    }
                    self.drain(&mut demux, forwarding.as_mut(), &mut bufs, &mut metas, &workers);
                    if let Some(f) = &forwarding {
                        *self.forwarding.lock().unwrap_or_else(|p| p.into_inner()) = f.stats;
                    }
                }
            }
        }
    }

    fn drain(
        &self,
        demux: &mut Demux,
        mut forwarding: Option<&mut Forwarding>,
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
            let mut outbox = Vec::new();
            for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                let destination =
                    SocketAddr::new(meta.dst_ip.unwrap_or(self.local.ip()), self.local.port());
                let stride = meta.stride.max(1);
                self.received_bytes
                    .fetch_add(meta.len as u64, Ordering::Relaxed);
                for chunk in buf[..meta.len].chunks(stride) {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    let source = normalise(meta.addr);
                    let (route, source, destination, data) = match forwarding.as_deref_mut() {
                        Some(f) => match self.forward(
                            demux,
                            f,
                            at,
                            (source, destination),
                            chunk,
                            &mut outbox,
                        ) {
                            Some(delivery) => delivery,
                            None => continue,
                        },
                        None => match self.dispatch(demux.route(at, source, chunk)) {
                            Some(route) => (route, source, destination, chunk),
                            None => continue,
                        },
                    };
                    if let Some(batch) = batches.get_mut(route.worker) {
                        batch.push(Datagram {
                            session: route.session,
                            source,
                            destination,
                            data: data.to_vec(),
                            at,
                            proto: Protocol::Udp,
                        });
                    }
                }
            }
            self.send_from_receive_loop(&outbox);
            for (worker, batch) in workers.iter().zip(batches) {
                if !batch.is_empty() {
                    let _ = worker.send(WorkerMsg::Datagrams(batch));
                }
            }
        }
    }
}

/// IPv4-mapped IPv6 sources (from a dual-stack socket) as plain IPv4, so they match candidates.
impl UdpShell {
    /// A routing update; at the start of a drain, the claims of every bound client to the
    /// cluster's other gateways (`Forwarding::claim_all`).
    fn apply(
        &self,
        demux: &mut Demux,
        forwarding: Option<&mut Forwarding>,
        update: DemuxUpdate,
        workers: &[mpsc::UnboundedSender<WorkerMsg>],
    ) {
        match (update, forwarding) {
            (
                DemuxUpdate::Replay {
                    source,
                    destination,
                    datagram,
                },
                f,
            ) => {
                let at = Instant::now();
                let Dispatch::To(route) = demux.route(at, source, &datagram) else {
                    return;
                };
                if let Some(f) = f {
                    f.direct(source);
                }
                if let Some(worker) = workers.get(route.worker) {
                    let _ = worker.send(WorkerMsg::Datagrams(vec![Datagram {
                        session: route.session,
                        source,
                        destination,
                        data: datagram,
                        at,
                        proto: Protocol::Udp,
                    }]));
                }
            }
            (DemuxUpdate::ClaimAll, Some(f)) => {
                let claims: Vec<str0m::net::Transmit> = f
                    .claim_all(demux.bound())
                    .into_iter()
                    .map(|(gateway, frame)| transmit(gateway, frame))
                    .collect();
                tracing::info!(
                    clients = demux.addrs(),
                    frames = claims.len(),
                    "draining: the other gateways told which clients are held here"
                );
                self.send_from_receive_loop(&claims);
            }
            (update, _) => demux.apply(update),
        }
    }

    /// The session a demux decision names, counting the datagrams it drops.
    fn dispatch(&self, dispatch: Dispatch) -> Option<Route> {
        match dispatch {
            Dispatch::To(route) => Some(route),
            Dispatch::Unknown => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Dispatch::Forged => {
                self.forged.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// In a cluster: a datagram for a session here (straight from its client, or through
    /// another gateway), as (route, client, destination, datagram); everything else (for a
    /// session elsewhere, a claim, a reply for a client) is sent on here and gives `None`.
    fn forward<'a>(
        &self,
        demux: &mut Demux,
        f: &mut Forwarding,
        at: Instant,
        (source, destination): (SocketAddr, SocketAddr),
        chunk: &'a [u8],
        outbox: &mut Vec<str0m::net::Transmit>,
    ) -> Option<(Route, SocketAddr, SocketAddr, &'a [u8])> {
        if !Tunnel::is_frame(chunk) {
            return match demux.route(at, source, chunk) {
                Dispatch::To(route) => {
                    f.direct(source);
                    Some((route, source, destination, chunk))
                }
                Dispatch::Unknown => {
                    let addrs = (source, destination);
                    let frames = match self.replicated_check(f, at, addrs, chunk) {
                        Some(frames) => frames,
                        // Media from a client whose holder died since its last check: that
                        // check, replayed, resumes the session now.
                        None => match f.check_of_orphan(at, source).map(<[u8]>::to_vec) {
                            Some(check) => self
                                .replicated_check(f, at, addrs, &check)
                                .unwrap_or_default(),
                            None => f.on_unknown(at, source, chunk),
                        },
                    };
                    if frames.is_empty() {
                        self.unrouted.fetch_add(1, Ordering::Relaxed);
                    }
                    for (gateway, frame) in frames {
                        outbox.push(transmit(gateway, frame));
                    }
                    None
                }
                forged => {
                    self.dispatch(forged);
                    None
                }
            };
        }
        match f.on_frame(at, source, chunk) {
            FrameAction::Deliver {
                client,
                payload,
                probe,
            } => {
                let route = match demux.route(at, client, payload) {
                    Dispatch::To(route) => route,
                    // A probe for a session another gateway holds: not ours to count.
                    Dispatch::Unknown if probe => return None,
                    other => {
                        self.dispatch(other);
                        return None;
                    }
                };
                if let Some((gateway, claim)) = f.delivered(at, client, source, probe) {
                    outbox.push(transmit(gateway, claim));
                }
                let own = self.one_address.get().map_or(destination, |(_, own)| *own);
                Some((route, client, own, payload))
            }
            FrameAction::ToClient { client, payload } => {
                outbox.push(transmit(client, payload.to_vec()));
                None
            }
            FrameAction::Nothing => None,
        }
    }
}

/// A datagram the receive loop sends; the kernel picks its source address (the one the client or
/// gateway reached us at, on a wildcard bind).
fn transmit(destination: SocketAddr, contents: Vec<u8>) -> str0m::net::Transmit {
    let any = match destination {
        SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
    };
    str0m::net::Transmit {
        proto: Protocol::Udp,
        source: SocketAddr::new(any, 0),
        destination,
        contents: contents.into(),
    }
}

pub(crate) fn normalise(addr: SocketAddr) -> SocketAddr {
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

    fn viewer() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("viewer socket");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        s
    }

    fn addr(socket: &std::net::UdpSocket) -> SocketAddr {
        socket.local_addr().expect("addr")
    }

    fn shell_and_two_viewers(
        path: SendPath,
    ) -> (Arc<UdpShell>, std::net::UdpSocket, std::net::UdpSocket) {
        let shell = UdpShell::bind(SocketAddr::from(([127, 0, 0, 1], 0)), path).expect("bind");
        (shell, viewer(), viewer())
    }

    fn sent_to(batch: &[Transmit], dst: SocketAddr) -> Vec<Vec<u8>> {
        batch
            .iter()
            .filter(|t| t.destination == dst)
            .map(|t| t.contents.to_vec())
            .collect()
    }

    const PATHS: [SendPath; 3] = [
        SendPath {
            gso: true,
            sendmmsg: true,
        },
        SendPath {
            gso: true,
            sendmmsg: false,
        },
        SendPath {
            gso: false,
            sendmmsg: true,
        },
    ];

    /// A frame to one viewer leaves as one GSO message and arrives as the same datagrams in the
    /// same order; datagrams to another viewer in between are not mixed in. Every send path.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        for path in PATHS {
            let (shell, a, b) = shell_and_two_viewers(path);
            let src = shell.local_addr();
            let (to_a, to_b) = (addr(&a), addr(&b));
            let batch = vec![
                transmit(src, to_a, 1, 1200),
                transmit(src, to_a, 2, 1200),
                transmit(src, to_a, 3, 1200),
                transmit(src, to_a, 4, 500),
                transmit(src, to_b, 5, 1200),
                transmit(src, to_b, 6, 1200),
                transmit(src, to_a, 7, 900),
            ];
            shell.send_batch(&batch).await;

            assert_eq!(receive_all(&a), sent_to(&batch, to_a), "{path:?}");
            assert_eq!(receive_all(&b), sent_to(&batch, to_b), "{path:?}");
            assert_eq!(shell.sent.load(Ordering::Relaxed), 7);
            let bytes: usize = batch.iter().map(|t| t.contents.len()).sum();
            assert_eq!(shell.sent_bytes.load(Ordering::Relaxed), bytes as u64);
            let gso = path.gso && shell.state.max_gso_segments() > 1;
            // [1..4] to a, [5,6] to b, [7] alone.
            let messages = if gso { 3 } else { 7 };
            assert_eq!(
                shell.gso_sends.load(Ordering::Relaxed),
                if gso { 2 } else { 0 }
            );
            assert_eq!(shell.messages.load(Ordering::Relaxed), messages);
            let calls = shell.send_calls.load(Ordering::Relaxed);
            if path.sendmmsg && cfg!(target_os = "linux") {
                assert_eq!(calls, 1, "{path:?}: one sendmmsg for the whole batch");
            } else {
                assert_eq!(calls, messages, "{path:?}");
            }
        }
    }

    /// A message the kernel refuses (an IPv6 destination on an IPv4 socket) costs only its own
    /// datagrams: the ones before and after it still go, and the error is counted.
    #[tokio::test]
    async fn a_refused_message_does_not_stop_the_rest() {
        for path in PATHS {
            let (shell, a, b) = shell_and_two_viewers(path);
            let src = shell.local_addr();
            let (to_a, to_b) = (addr(&a), addr(&b));
            let nowhere: SocketAddr = "[::1]:9".parse().expect("v6 address");
            let batch = vec![
                transmit(src, to_a, 1, 1200),
                transmit(src, to_a, 2, 700),
                transmit(src, nowhere, 3, 1200),
                transmit(src, nowhere, 4, 1200),
                transmit(src, to_b, 5, 300),
            ];
            shell.send_batch(&batch).await;

            assert_eq!(receive_all(&a), sent_to(&batch, to_a), "{path:?}");
            assert_eq!(receive_all(&b), sent_to(&batch, to_b), "{path:?}");
            assert_eq!(shell.sent.load(Ordering::Relaxed), 3, "{path:?}");
            assert!(shell.send_errors.load(Ordering::Relaxed) >= 1, "{path:?}");
        }
    }

    /// On a wildcard bind each message leaves from the source address the session uses (the
    /// candidate the viewer knows), as the viewer sees it.
    #[tokio::test]
    async fn a_wildcard_bind_sends_from_the_candidate_address() {
        for path in PATHS {
            let shell = UdpShell::bind(SocketAddr::from(([0, 0, 0, 0], 0)), path).expect("bind");
            let a = viewer();
            let to_a = addr(&a);
            // 127.0.0.2: the kernel would pick 127.0.0.1 towards the viewer by itself.
            let candidate = SocketAddr::from(([127, 0, 0, 2], shell.local_addr().port()));
            let batch = vec![
                transmit(candidate, to_a, 1, 1200),
                transmit(candidate, to_a, 2, 1200),
                transmit(candidate, to_a, 3, 100),
            ];
            shell.send_batch(&batch).await;
            let mut buf = [0u8; 2048];
            for want in &batch {
                let (n, from) = a.recv_from(&mut buf).expect("datagram");
                assert_eq!(&buf[..n], &want.contents[..], "{path:?}");
                assert_eq!(from, candidate, "{path:?}");
            }
        }
    }
}
