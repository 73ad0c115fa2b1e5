//! Drives one str0m `Rtc` over one tokio UDP socket.
//!
//! str0m is sans-IO and has one hard rule: after every mutation (input, write, SDP change) drain
//! `poll_output` until it yields a timeout before mutating again. This type owns that rule so the
//! publisher and the player only decide *what* to do between drains.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Why [`RtcLoop::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A packet or a timer was fed to the `Rtc`; drain before anything else.
    Input,
    /// The application's deadline passed (nothing was fed; no drain needed, but harmless).
    Deadline,
    /// The stop signal fired.
    Stop,
}

/// An `Rtc` and the socket it talks through.
pub struct RtcLoop {
    /// The engine. Mutate it only between [`RtcLoop::drain`] calls.
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    buf: Vec<u8>,
    /// Drop every Nth incoming media datagram (tests of loss repair); counts what was dropped.
    drop_every: Option<u32>,
    media_seen: u64,
    pub dropped: u64,
    /// Drop every Nth outgoing RTP datagram (first-mile loss); counts what was dropped.
    drop_outgoing_every: Option<u32>,
    media_sent: u64,
    pub dropped_outgoing: u64,
}

impl RtcLoop {
    /// Binds the UDP socket and registers it with `rtc` as its only host candidate.
    ///
    /// Binding happens before the offer is made because the offer must carry the candidate: the
    /// gateway may be ICE-lite or may simply wait for us, so we never rely on peer-reflexive
    /// discovery.
    pub async fn bind(mut rtc: Rtc, addr: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding UDP {addr}"))?;
        let local = socket.local_addr().context("UDP local address")?;
        let candidate = Candidate::host(local, "udp").context("host candidate")?;
        rtc.add_local_candidate(candidate)
            .context("str0m rejected the host candidate")?;
        Ok(RtcLoop {
            rtc,
            socket,
            local,
            next_timeout: Instant::now(),
            buf: vec![0; 2000],
            drop_every: None,
            media_seen: 0,
            dropped: 0,
            drop_outgoing_every: None,
            media_sent: 0,
            dropped_outgoing: 0,
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
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
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
        tokio::select! {
            biased;
            changed = stop.changed() => {
                // A dropped sender means nobody can stop us any more: treat it as stop.
                let _ = changed;
                Ok(Woke::Stop)
            }
            received = self.socket.recv_from(&mut self.buf) => {
                let (n, source) = received.context("UDP receive")?;
                let Some(packet) = self.buf.get(..n) else {
                    return Ok(Woke::Deadline);
                };
                // SRTP media: first byte 128..=191, RTCP payload types 200..=207 excluded.
                let is_rtp = packet.len() > 12 && (128..192).contains(&packet[0]) && !(200..=207).contains(&packet[1]);
                if let (Some(every), true) = (self.drop_every, is_rtp) {
                    self.media_seen += 1;
                    if self.media_seen.is_multiple_of(u64::from(every)) {
                        self.dropped += 1;
                        return Ok(Woke::Deadline);
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
                Ok(Woke::Input)
            }
            _ = sleep => {
                if app_first && Instant::now() < engine_due {
                    return Ok(Woke::Deadline);
                }
                self.rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .context("str0m timeout")?;
                Ok(Woke::Input)
            }
        }
    }
}

/// SRTP media: first byte 128..=191, RTCP payload types 200..=207 excluded (the same test
/// [`RtcLoop::wait`] applies to incoming datagrams).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() > 12 && (128..192).contains(&packet[0]) && !(200..=207).contains(&packet[1])
}
