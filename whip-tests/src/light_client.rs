//! A cheap WHIP/WHEP client for join storms and memory runs, where thousands of sessions come
//! and go on the same machine as the gateway and the client must not be what runs out of CPU.
//!
//! What makes it cheap next to [`crate::WhepPlayer`]: one DTLS certificate and one validated
//! DTLS configuration for the whole process (the gateway's `peer::cached_dtls`: str0m's stock
//! provider runs dimpl's crypto self-test for every `Rtc`, and a certificate would be generated
//! per `Rtc` too), str0m in RTP mode (packets are counted, never depacketized, identified or
//! checked), and no per-frame bookkeeping. What it still does, because a join needs it: real
//! ICE (it is the controlling agent; the gateway is ICE-lite), a full DTLS handshake, SRTP.
//!
//! A viewer offers recvonly Opus + H264 like [`crate::WhepPlayer`]; a publisher offers sendonly
//! Opus + H264 and never sends media (a *silent* publisher: the stream exists, nothing flows).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::signaling::{Resource, post_offer};

/// Made once per process and shared by every [`LightPeer`].
pub struct SharedCrypto {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
}

impl SharedCrypto {
    /// One crypto provider and DTLS certificate for every light peer of a run.
    pub fn new() -> Result<Self> {
        let provider = gateway::peer::cached_dtls::crypto_provider();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .context("the crypto provider cannot generate a DTLS certificate")?;
        Ok(SharedCrypto {
            provider: Arc::new(provider),
            cert,
        })
    }
}

/// Which way media would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// WHEP: recvonly audio + video.
    Viewer,
    /// WHIP: sendonly audio + video, never sending anything.
    SilentPublisher,
}

/// What [`LightPeer::drive_until`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// ICE and DTLS done (`Event::Connected`).
    Connected,
    /// The first RTP packet received (decrypted by SRTP).
    FirstRtp,
}

/// One session's `Rtc` and UDP socket.
pub struct LightPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    next_timeout: Instant,
    buf: Vec<u8>,
    /// When ICE + DTLS completed.
    pub connected_at: Option<Instant>,
    /// When the first RTP packet arrived.
    pub first_rtp_at: Option<Instant>,
    /// RTP packets received.
    pub rtp_packets: u64,
}

/// Timings of one join, all from the start of the POST.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JoinTimes {
    /// The POST's answer (201) arrived.
    pub answer_ms: Option<f64>,
    /// ICE and DTLS done.
    pub connected_ms: Option<f64>,
    /// The first RTP datagram arrived.
    pub first_rtp_ms: Option<f64>,
}

/// A joined session: the peer to keep driving, and the resource to DELETE.
pub struct Joined {
    /// The peer, to keep driving.
    pub peer: LightPeer,
    /// The WHEP resource, to DELETE at the end.
    pub resource: Resource,
    /// How long each step of the join took.
    pub times: JoinTimes,
}

/// POSTs an offer to `endpoint` (WHIP or WHEP), then drives the session until `goal` or
/// `timeout` (counted from the POST). A session that misses its goal is DELETEd and is an error
/// carrying the times reached so far.
pub async fn join(
    crypto: &SharedCrypto,
    http: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    role: Role,
    goal: Goal,
    timeout: Duration,
) -> Result<Joined, (anyhow::Error, JoinTimes)> {
    let mut times = JoinTimes::default();
    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let (mut peer, offer, pending) = LightPeer::offer(crypto, role, bind)
        .await
        .map_err(|e| (e, times.clone()))?;
    let t0 = Instant::now();
    let answer = post_offer(http, endpoint, token, &offer)
        .await
        .map_err(|e| (e, times.clone()))?;
    times.answer_ms = Some(ms_since(t0));
    let reached = match peer.accept_answer(pending, &answer.sdp) {
        Ok(()) => peer.drive_until(goal, t0 + timeout).await,
        Err(e) => Err(e),
    };
    times.connected_ms = peer
        .connected_at
        .map(|t| ms(t.saturating_duration_since(t0)));
    times.first_rtp_ms = peer
        .first_rtp_at
        .map(|t| ms(t.saturating_duration_since(t0)));
    let failure = match reached {
        Ok(true) => None,
        Ok(false) => Some(anyhow::anyhow!("{goal:?} not reached within {timeout:?}")),
        Err(e) => Some(e),
    };
    if let Some(e) = failure {
        // Leave nothing behind on the gateway.
        let _ = answer.resource.delete().await;
        return Err((e, times));
    }
    Ok(Joined {
        peer,
        resource: answer.resource,
        times,
    })
}

impl LightPeer {
    /// Binds a socket and makes the offer (with that socket as the only host candidate).
    pub async fn offer(
        crypto: &SharedCrypto,
        role: Role,
        bind: SocketAddr,
    ) -> Result<(LightPeer, String, SdpPendingOffer)> {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true)
            .set_crypto_provider(crypto.provider.clone())
            .set_dtls_cert(crypto.cert.clone())
            .build(Instant::now());
        let socket = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("binding UDP {bind}"))?;
        let local = socket.local_addr().context("UDP local address")?;
        rtc.add_local_candidate(Candidate::host(local, "udp").context("host candidate")?)
            .context("str0m rejected the host candidate")?;
        let direction = match role {
            Role::Viewer => Direction::RecvOnly,
            Role::SilentPublisher => Direction::SendOnly,
        };
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, direction, None, None, None);
        change.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = change.apply().context("str0m made no offer")?;
        let peer = LightPeer {
            rtc,
            socket,
            local,
            next_timeout: Instant::now(),
            buf: vec![0; 2048],
            connected_at: None,
            first_rtp_at: None,
            rtp_packets: 0,
        };
        Ok((peer, offer.to_sdp_string(), pending))
    }

    /// Apply the gateway's SDP answer to our pending offer.
    pub fn accept_answer(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<()> {
        let answer = SdpAnswer::from_sdp_string(answer).context("parsing the SDP answer")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("str0m refused the answer")
    }

    fn reached(&self, goal: Goal) -> bool {
        match goal {
            Goal::Connected => self.connected_at.is_some(),
            Goal::FirstRtp => self.first_rtp_at.is_some(),
        }
    }

    /// Runs the session until `goal` (true) or `deadline` (false).
    pub async fn drive_until(&mut self, goal: Goal, deadline: Instant) -> Result<bool> {
        loop {
            self.drain().await?;
            if self.reached(goal) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.step(deadline, None).await?;
        }
    }

    /// Keeps the session alive (consent checks, RTCP, receiving) until `stop` fires or the
    /// session dies.
    pub async fn hold(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        loop {
            self.drain().await?;
            if *stop.borrow() {
                return Ok(());
            }
            if !self.rtc.is_alive() {
                bail!("the WebRTC session died");
            }
            // Waking once a second at the latest keeps a far-away str0m timeout harmless.
            let wake = Instant::now() + Duration::from_secs(1);
            if self.step(wake, Some(stop)).await? {
                return Ok(());
            }
        }
    }

    /// Sends what str0m has to send and records its events, until it only has a timeout left.
    async fn drain(&mut self) -> Result<()> {
        loop {
            match self.rtc.poll_output().context("str0m poll_output")? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    // A lost datagram is what WebRTC retransmits; not an error here.
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(e) => self.on_event(e)?,
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Connected => {
                self.connected_at.get_or_insert_with(Instant::now);
            }
            Event::RtpPacket(_) => {
                self.rtp_packets += 1;
                self.first_rtp_at.get_or_insert_with(Instant::now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                bail!("ICE disconnected")
            }
            _ => {}
        }
        Ok(())
    }

    /// Feeds str0m one datagram or one timeout, or returns at `wake` with nothing fed. True when
    /// `stop` fired.
    async fn step(
        &mut self,
        wake: Instant,
        stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<bool> {
        let engine_first = self.next_timeout <= wake;
        let sleep =
            tokio::time::sleep_until(tokio::time::Instant::from_std(self.next_timeout.min(wake)));
        let stopped = async {
            match stop {
                // A dropped sender cannot stop us any more: that is a stop too.
                Some(rx) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            _ = stopped => Ok(true),
            received = self.socket.recv_from(&mut self.buf) => {
                let (n, source) = received.context("UDP receive")?;
                let Some(Ok(contents)) = self.buf.get(..n).map(|b| b.try_into()) else {
                    // Not STUN, DTLS or (S)RTP: not for this session.
                    return Ok(false);
                };
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                );
                self.rtc.handle_input(input).context("str0m handle_input")?;
                Ok(false)
            }
            _ = sleep => {
                if engine_first || Instant::now() >= self.next_timeout {
                    self.rtc
                        .handle_input(Input::Timeout(Instant::now()))
                        .context("str0m timeout")?;
                }
                Ok(false)
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_since(t: Instant) -> f64 {
    ms(t.elapsed())
}
