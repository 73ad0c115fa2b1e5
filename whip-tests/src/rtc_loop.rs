//! Drives one str0m `Rtc` over one tokio UDP socket.
//!
//! str0m is sans-IO and has one hard rule: after every mutation (input, write, SDP change) drain
//! `poll_output` until it yields a timeout before mutating again. This type owns that rule so the
//! publisher and the player only decide *what* to do between drains.
//!
//! Every incoming RTP datagram is also counted from its clear header ([`RtpCounter`]) before str0m
//! sees it. In *thin* mode ([`RtcLoop::set_thin`]) that is all that happens to RTP: str0m still
//! gets STUN, DTLS and RTCP (so ICE, DTLS and consent freshness are real) but never decrypts
//! media, which is what lets one load generator play hundreds of viewers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::rtp_counter::RtpCounter;

/// Why [`RtcLoop::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A packet or a timer was fed to the `Rtc`; drain before anything else.
    Input,
    /// Nothing was fed to the engine (the application's deadline passed, or a datagram was
    /// dropped or only counted); no drain needed, but harmless.
    Deadline,
    /// The stop signal fired.
    Stop,
}

/// An `Rtc` and the socket it talks through.
pub struct RtcLoop {
    /// The engine. Mutate it only between [`RtcLoop::drain`] calls.
    pub rtc: Rtc,
    /// Shared so that a test can send other datagrams from the same address (`socket`).
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    next_timeout: Instant,
    buf: Vec<u8>,
    /// Drop every Nth incoming media datagram (tests of loss repair); counts what was dropped.
    drop_every: Option<u32>,
    media_seen: u64,
    /// Incoming media datagrams dropped by `drop_every`.
    pub dropped: u64,
    /// Drop every Nth outgoing RTP datagram (first-mile loss); counts what was dropped.
    drop_outgoing_every: Option<u32>,
    media_sent: u64,
    /// Outgoing RTP datagrams dropped by `drop_outgoing_every`.
    pub dropped_outgoing: u64,
    /// Counts every incoming RTP datagram; shared so that a report can be read while we run.
    rtp: Arc<Mutex<RtpCounter>>,
    /// RTP datagrams are counted only, never given to str0m.
    thin: bool,
    /// When set, datagrams leave through this socket instead (a NAT that gave the client a new
    /// port): what the server sees as a legitimate address change. Replies still arrive on
    /// `socket`.
    send_via: Arc<Mutex<Option<Arc<UdpSocket>>>>,
}

impl RtcLoop {
    /// Binds the UDP socket and registers it with `rtc` as its only host candidate.
    ///
    /// Binding happens before the offer is made because the offer must carry the candidate: the
    /// gateway may be ICE-lite or may simply wait for us, so we never rely on peer-reflexive
    /// discovery.
    pub async fn bind(mut rtc: Rtc, addr: SocketAddr) -> Result<Self> {
        let socket = bind_udp(addr).with_context(|| format!("binding UDP {addr}"))?;
        let local = socket.local_addr().context("UDP local address")?;
        let candidate = Candidate::host(local, "udp").context("host candidate")?;
        rtc.add_local_candidate(candidate)
            .context("str0m rejected the host candidate")?;
        Ok(RtcLoop {
            rtc,
            socket: Arc::new(socket),
            local,
            next_timeout: Instant::now(),
            buf: vec![0; 2000],
            drop_every: None,
            media_seen: 0,
            dropped: 0,
            drop_outgoing_every: None,
            media_sent: 0,
            dropped_outgoing: 0,
            rtp: Arc::default(),
            thin: false,
            send_via: Arc::default(),
        })
    }

    /// Simulate loss: drop every `n`th incoming RTP datagram (not STUN, DTLS or small RTCP).
    pub fn set_drop_every(&mut self, n: Option<u32>) {
        self.drop_every = n.filter(|n| *n > 1);
    }

    /// Simulate loss on the way out: drop every `n`th outgoing RTP datagram (never STUN, DTLS or
    /// RTCP), so that the peer has something to NACK.
    pub fn set_drop_outgoing_every(&mut self, n: Option<u32>) {
        self.drop_outgoing_every = n.filter(|n| *n > 1);
    }

    /// Thin mode: incoming RTP datagrams are counted ([`RtcLoop::rtp_counter`]) and dropped
    /// instead of being decrypted by str0m. STUN, DTLS and RTCP still reach str0m, so ICE, DTLS
    /// and consent freshness stay real; but str0m never sees media, so it emits no `MediaData`
    /// and sends no NACK (and the application no PLI) for this peer.
    pub fn set_thin(&mut self, thin: bool) {
        self.thin = thin;
    }

    /// The counter of incoming RTP datagrams (both modes), to read while the loop runs.
    pub fn rtp_counter(&self) -> Arc<Mutex<RtpCounter>> {
        self.rtp.clone()
    }

    /// Where a test switches the outgoing socket (see `send_via`).
    pub fn send_via(&self) -> Arc<Mutex<Option<Arc<UdpSocket>>>> {
        self.send_via.clone()
    }

    /// The socket itself: tests send hostile datagrams from the client's own address with it.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.socket.clone()
    }

    /// The socket address media flows from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Polls the engine until it has nothing more to say, sending its datagrams and collecting
    /// its events into `events`.
    pub async fn drain(&mut self, events: &mut Vec<Event>) -> Result<()> {
        loop {
            match self.rtc.poll_output().context("str0m poll_output")? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if let (Some(every), true) = (self.drop_outgoing_every, is_rtp(&t.contents)) {
                        self.media_sent += 1;
                        if self.media_sent.is_multiple_of(u64::from(every)) {
                            self.dropped_outgoing += 1;
                            continue;
                        }
                    }
                    // A failed send is a lost packet, which WebRTC is built to survive; only the
                    // log should know.
                    let via = self
                        .send_via
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    let socket = via.as_ref().unwrap_or(&self.socket);
                    if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                        tracing::debug!("UDP send to {} failed: {e}", t.destination);
                    }
                }
                Output::Event(e) => events.push(e),
            }
        }
    }

    /// Waits for whichever comes first: a datagram, the engine's timer, `deadline`, or `stop`,
    /// and feeds the engine accordingly.
    pub async fn wait(
        &mut self,
        deadline: Option<Instant>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Woke> {
        if *stop.borrow() {
            return Ok(Woke::Stop);
        }
        let engine_due = self.next_timeout;
        let app_first = deadline.is_some_and(|d| d < engine_due);
        let wake_at = deadline.map_or(engine_due, |d| d.min(engine_due));
        // str0m may report a timeout far away when idle; waking once a second costs nothing and
        // keeps a wrong clock from stalling us.
        let wake_at = wake_at.min(Instant::now() + Duration::from_secs(1));
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at));
        tokio::pin!(sleep);
        // Loops only over datagrams that str0m is not given (thin mode), so that a thin viewer
        // costs one receive and one count per packet, not a new timer each.
        loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    // A dropped sender means nobody can stop us any more: treat it as stop.
                    let _ = changed;
                    return Ok(Woke::Stop);
                }
                received = self.socket.recv_from(&mut self.buf) => {
                    let (n, source) = received.context("UDP receive")?;
                    let Some(packet) = self.buf.get(..n) else {
                        return Ok(Woke::Deadline);
                    };
                    if is_rtp(packet) {
                        if let Some(every) = self.drop_every {
                            self.media_seen += 1;
                            if self.media_seen.is_multiple_of(u64::from(every)) {
                                self.dropped += 1;
                                return Ok(Woke::Deadline);
                            }
                        }
                        lock(&self.rtp).on_datagram(packet, Instant::now());
                        if self.thin {
                            continue;
                        }
                    }
                    let Ok(contents) = packet.try_into() else {
                        // Not STUN/DTLS/RTP: someone else's traffic, not our problem.
                        return Ok(Woke::Deadline);
                    };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                    );
                    self.rtc.handle_input(input).context("str0m handle_input")?;
                    return Ok(Woke::Input);
                }
                _ = &mut sleep => {
                    if app_first && Instant::now() < engine_due {
                        return Ok(Woke::Deadline);
                    }
                    self.rtc
                        .handle_input(Input::Timeout(Instant::now()))
                        .context("str0m timeout")?;
                    return Ok(Woke::Input);
                }
            }
        }
    }
}

fn lock(counter: &Mutex<RtpCounter>) -> MutexGuard<'_, RtpCounter> {
    // Counts are plain numbers: still worth reading after a panic elsewhere.
    counter.lock().unwrap_or_else(|p| p.into_inner())
}

/// Receive buffer asked for; the kernel caps it at `net.core.rmem_max`.
///
/// The default (about 200 KB, which the kernel charges ~2.3 KB per 1.2 KB datagram) overflows
/// when a viewer joins: the gateway sends the cached GOP at once (≈300 KB for one second at
/// 2.5 Mbit/s), and a load generator with hundreds of viewers on two cores cannot always read it
/// in time. Loss there is the client's, not the gateway's; memory is used only while queued.
const RECV_BUFFER_BYTES: usize = 2 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only means more loss under load, which the counts show.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// SRTP media: first byte 128..=191, RTCP payload types 200..=207 excluded (applied to datagrams
/// both ways).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() > 12 && (128..192).contains(&packet[0]) && !(200..=207).contains(&packet[1])
}
