//! A WHIP publisher that behaves like OBS: H264 (or the file's H265/AV1) + Opus offer with its host candidate, 201 or
//! failure, then the file's frames at real pace, looping, and (optionally) deaf to keyframe
//! requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::Url;
use serde::Serialize;
use str0m::IceCreds;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::rtp::RawPacket;
use str0m::rtp::rtcp::Rtcp;
use str0m::{Event, IceConnectionState, Rtc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::media_source::{Kind, MediaSample, MediaSource, VideoCodec};
use crate::rtc_loop::{RtcLoop, Woke};
use crate::signaling::{Resource, http_client, post_offer};

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// WHIP endpoint, e.g. `http://127.0.0.1:8080/whip/concert`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Like OBS: count PLI/FIR but never act on them. When false, a keyframe request makes the
    /// video jump to the file's next keyframe (the frames in between are not sent).
    pub ignore_keyframe_requests: bool,
    /// Play the file this many times, or forever.
    pub loops: Option<u32>,
    /// Stop this long after media started flowing, whatever `loops` says.
    pub duration: Option<Duration>,
    /// Local UDP address to send from.
    pub bind: SocketAddr,
    /// ICE and DTLS must be done within this time after the answer.
    pub connect_timeout: Duration,
    /// Send the offer without `a=candidate` lines, as OBS 30.2+ does: the server then only learns
    /// our address from our connectivity checks (a peer-reflexive candidate).
    pub strip_candidates: bool,
    /// Count the sequence numbers our own RTCP NACKs ask for ([`PublishStats::nacks_received`]).
    /// Turns on str0m's raw packet events, which copy every packet: tests only.
    pub count_nacks: bool,
    /// Drop every Nth outgoing RTP datagram (first-mile loss, so the gateway has something to
    /// NACK); STUN, DTLS and RTCP always go out.
    pub drop_outgoing_every: Option<u32>,
    /// Send simulcast: these rids on the video m-line (`a=simulcast:send r0;r1;r2`), top layer
    /// first. Layer k carries every 2^k-th frame of the file (plus every keyframe), so a viewer can
    /// tell the layers apart by frame cadence and their bitrates differ. None: one layer.
    pub simulcast: Option<Vec<String>>,
}

impl PublishOptions {
    /// Loops forever from 127.0.0.1, answering no keyframe requests (the OBS behaviour).
    pub fn new(url: impl Into<String>) -> Self {
        PublishOptions {
            url: url.into(),
            token: None,
            ignore_keyframe_requests: true,
            loops: None,
            duration: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            connect_timeout: Duration::from_secs(10),
            strip_candidates: false,
            count_nacks: false,
            drop_outgoing_every: None,
            simulcast: None,
        }
    }
}

/// Live counters of a publisher.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    video_frames: AtomicU64,
    keyframes: AtomicU64,
    audio_packets: AtomicU64,
    keyframe_requests: AtomicU64,
    keyframe_jumps: AtomicU64,
    frames_skipped: AtomicU64,
    connect_ms: AtomicU64,
    nacks_received: AtomicU64,
    outgoing_dropped: AtomicU64,
}

/// A snapshot of what a publisher has done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishStats {
    /// ICE + DTLS completed.
    pub connected: bool,
    /// From just before the POST to DTLS completion.
    pub connect_ms: Option<u64>,
    /// Video frames handed to str0m.
    pub video_frames_sent: u64,
    /// Of which keyframes.
    pub keyframes_sent: u64,
    /// Opus packets handed to str0m.
    pub audio_packets_sent: u64,
    /// PLI + FIR received for the video.
    pub keyframe_requests: u64,
    /// Requests acted on by jumping to the next keyframe.
    pub keyframe_jumps: u64,
    /// Frames left out by those jumps.
    pub frames_skipped: u64,
    /// Sequence numbers asked for by the NACKs received (0 unless
    /// [`PublishOptions::count_nacks`]).
    pub nacks_received: u64,
    /// RTP datagrams dropped on purpose by [`PublishOptions::drop_outgoing_every`].
    pub outgoing_dropped: u64,
}

/// A running publisher. Dropping it stops the media without a DELETE; call
/// [`WhipPublisher::stop`] to leave properly.
pub struct WhipPublisher {
    resource: Resource,
    /// `<server ufrag>:<our ufrag>`: the USERNAME of our connectivity checks.
    ice_username: String,
    socket: Arc<tokio::net::UdpSocket>,
    send_via: Arc<std::sync::Mutex<Option<Arc<tokio::net::UdpSocket>>>>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    /// New ICE credentials (ours, the server's) for the sending task to switch to.
    restart: Arc<std::sync::Mutex<Option<(IceCreds, IceCreds)>>>,
}

impl WhipPublisher {
    /// Negotiates with the WHIP endpoint (fails unless it answers 201) and starts sending in the
    /// background once ICE and DTLS are up.
    pub async fn start(media: Arc<MediaSource>, opts: PublishOptions) -> Result<Self> {
        let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false);
        if opts.count_nacks {
            cfg = cfg.enable_raw_packets(true);
        }
        // What OBS offers: one video format, for H264 constrained baseline 3.1, packetization
        // mode 1, no RTX; for H265/AV1 str0m's default format.
        let video_codec = match media.video_codec() {
            VideoCodec::H264 => {
                cfg.codec_config()
                    .add_h264(Pt::from(96), None, true, 0x42e01f);
                Codec::H264
            }
            VideoCodec::H265 => {
                cfg.codec_config().enable_h265(true);
                Codec::H265
            }
            VideoCodec::Av1 => {
                cfg.codec_config().enable_av1(true);
                Codec::Av1
            }
        };
        let rtc = cfg.build(Instant::now());
        let mut lp = RtcLoop::bind(rtc, opts.bind).await?;
        lp.set_drop_outgoing_every(opts.drop_outgoing_every);

        let mut change = lp.rtc.sdp_api();
        let audio_mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let simulcast = opts.simulcast.as_ref().map(|rids| {
            let mut s = str0m::media::Simulcast::new();
            for r in rids {
                s.add_send_layer(str0m::media::SimulcastLayer::new(r));
            }
            s
        });
        let video_mid =
            change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        let (offer, pending) = change.apply().context("str0m made no offer")?;

        let mut offer_sdp = offer.to_sdp_string();
        if opts.strip_candidates {
            offer_sdp = offer_sdp
                .split_inclusive('\n')
                .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
                .collect();
        }
        let client = http_client()?;
        let t0 = Instant::now();
        let answer = post_offer(&client, &opts.url, opts.token.as_deref(), &offer_sdp).await?;
        let ufrag = |sdp: &str| {
            crate::signaling::sdp_attribute(sdp, "ice-ufrag")
                .unwrap_or_default()
                .to_owned()
        };
        let ice_username = format!("{}:{}", ufrag(&answer.sdp), ufrag(&offer_sdp));
        let socket = lp.socket();
        let send_via = lp.send_via();
        let negotiated = (|| {
            let sdp = SdpAnswer::from_sdp_string(&answer.sdp).context("parsing the SDP answer")?;
            lp.rtc
                .sdp_api()
                .accept_answer(pending, sdp)
                .context("str0m refused the answer")?;
            let video =
                pick_pt(&mut lp.rtc, video_mid, video_codec).context("video not accepted")?;
            let audio =
                pick_pt(&mut lp.rtc, audio_mid, Codec::Opus).context("audio not accepted")?;
            anyhow::Ok((video, audio))
        })();
        let (video_pt, audio_pt) = match negotiated {
            Ok(pts) => pts,
            Err(e) => {
                // The gateway holds a session for us already; leaving it would look like a stuck
                // publisher under this stream name until it times out.
                let _ = answer.resource.delete().await;
                return Err(e);
            }
        };

        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let restart = Arc::default();
        let send = Sender {
            restart: Arc::clone(&restart),
            lp,
            media,
            opts,
            counters: counters.clone(),
            tracks: [(video_mid, video_pt), (audio_mid, audio_pt)],
            t0,
        };
        let task = tokio::spawn(send.run(stop_rx));
        Ok(WhipPublisher {
            resource: answer.resource,
            ice_username,
            socket,
            send_via,
            counters,
            stop,
            task,
            restart,
        })
    }

    /// Restarts ICE (RFC 9725 §4.3): new credentials of ours PATCHed with the ETag we hold; the
    /// sending task switches both sides' credentials within a frame, and str0m checks the pair
    /// again with them. Fails unless the server answers 200.
    pub async fn restart_ice(&mut self) -> Result<()> {
        let ours = IceCreds {
            ufrag: format!("r{:08x}", rand::random::<u32>()),
            pass: format!("{:032x}", rand::random::<u128>()),
        };
        let theirs = self.resource.ice_restart(&ours).await?;
        self.ice_username = format!("{}:{}", theirs.ufrag, ours.ufrag);
        *self.restart.lock().unwrap_or_else(|e| e.into_inner()) = Some((ours, theirs));
        Ok(())
    }

    /// The STUN USERNAME of this publisher's connectivity checks (`<server ufrag>:<ours>`): what
    /// an attacker who saw one of them on the wire knows.
    pub fn ice_username(&self) -> &str {
        &self.ice_username
    }

    /// From now on, send from a new local port (what a NAT rebinding looks like to the server);
    /// the new source address.
    pub async fn change_source_port(&self) -> Result<std::net::SocketAddr> {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = s.local_addr()?;
        *self.send_via.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(s));
        Ok(addr)
    }

    /// The publisher's UDP socket, to send other datagrams from its own address.
    pub fn socket(&self) -> Arc<tokio::net::UdpSocket> {
        self.socket.clone()
    }

    /// The session resource (`Location`).
    pub fn resource_url(&self) -> &Url {
        &self.resource.url
    }

    /// The gateway's session id: the resource URL's last segment (the session/track API pulls
    /// this publisher's tracks by it).
    pub fn session_id(&self) -> Option<String> {
        self.resource_url()
            .path_segments()
            .and_then(|mut s| s.next_back().map(str::to_owned))
    }

    /// What has been sent so far.
    pub fn stats(&self) -> PublishStats {
        Self::snapshot(&self.counters)
    }

    fn snapshot(c: &Counters) -> PublishStats {
        let connected = c.connected.load(Ordering::Relaxed);
        PublishStats {
            connected,
            connect_ms: connected.then(|| c.connect_ms.load(Ordering::Relaxed)),
            video_frames_sent: c.video_frames.load(Ordering::Relaxed),
            keyframes_sent: c.keyframes.load(Ordering::Relaxed),
            audio_packets_sent: c.audio_packets.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            keyframe_jumps: c.keyframe_jumps.load(Ordering::Relaxed),
            frames_skipped: c.frames_skipped.load(Ordering::Relaxed),
            nacks_received: c.nacks_received.load(Ordering::Relaxed),
            outgoing_dropped: c.outgoing_dropped.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `frames` video frames have gone out (fails if the sender dies or
    /// `timeout` passes first).
    pub async fn wait_for_frames(&self, frames: u64, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        while self.counters.video_frames.load(Ordering::Relaxed) < frames {
            if self.task.is_finished() {
                bail!("publisher stopped after {:?}", self.stats());
            }
            if Instant::now() > until {
                bail!("publisher sent only {:?} within {timeout:?}", self.stats());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Whether the sending task has ended (loops done, duration over, or an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the configured loops/duration to finish, then DELETEs the session.
    pub async fn finish(self) -> Result<PublishStats> {
        self.end(false).await
    }

    /// Stops sending now and DELETEs the session.
    pub async fn stop(self) -> Result<PublishStats> {
        self.end(true).await
    }

    async fn end(self, now: bool) -> Result<PublishStats> {
        if now {
            let _ = self.stop.send(true);
        }
        let outcome = self.task.await.context("publisher task panicked")?;
        let stats = Self::snapshot(&self.counters);
        let deleted = self.resource.delete().await;
        outcome?;
        deleted?;
        Ok(stats)
    }
}

fn pick_pt(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let writer = rtc.writer(mid)?;
    writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

/// The background half: paces samples out of the file into str0m.
struct Sender {
    /// An ICE restart to apply (`WhipPublisher::restart_ice`).
    restart: Arc<std::sync::Mutex<Option<(IceCreds, IceCreds)>>>,
    lp: RtcLoop,
    media: Arc<MediaSource>,
    opts: PublishOptions,
    counters: Arc<Counters>,
    /// (mid, pt) for video, then audio.
    tracks: [(Mid, Pt); 2],
    t0: Instant,
}

impl Sender {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let media = self.media.clone();
        let mut video = media.cursor(Kind::Video, self.opts.loops);
        let mut audio = media.cursor(Kind::Audio, self.opts.loops);
        let connect_deadline = Instant::now() + self.opts.connect_timeout;
        let mut start: Option<Instant> = None;
        let mut jump_pending = false;
        let mut events = Vec::new();
        self.lp.drain(&mut events).await?;

        loop {
            let restart = self
                .restart
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some((ours, theirs)) = restart {
                let mut api = self.lp.rtc.direct_api();
                api.set_local_ice_credentials(ours);
                api.set_remote_ice_credentials(theirs);
            }
            self.counters
                .outgoing_dropped
                .store(self.lp.dropped_outgoing, Ordering::Relaxed);
            for e in events.drain(..) {
                match e {
                    Event::Connected => {
                        let now = Instant::now();
                        start = Some(now);
                        self.counters.connect_ms.store(
                            now.duration_since(self.t0).as_millis() as u64,
                            Ordering::Relaxed,
                        );
                        self.counters.connected.store(true, Ordering::Relaxed);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        bail!("ICE disconnected");
                    }
                    Event::KeyframeRequest(req) if req.mid == self.tracks[0].0 => {
                        self.counters
                            .keyframe_requests
                            .fetch_add(1, Ordering::Relaxed);
                        jump_pending |= !self.opts.ignore_keyframe_requests;
                    }
                    Event::RawPacket(raw) => {
                        if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                            // Each entry asks for `pid` and one more per bit set in `blp`.
                            let asked: u64 = nack
                                .reports
                                .iter()
                                .map(|e| 1 + u64::from(e.blp.count_ones()))
                                .sum();
                            self.counters
                                .nacks_received
                                .fetch_add(asked, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
            if !self.lp.rtc.is_alive() {
                bail!("the WebRTC session died");
            }
            let now = Instant::now();
            let deadline = match start {
                None if now > connect_deadline => {
                    bail!("not connected within {:?}", self.opts.connect_timeout)
                }
                None => Some(connect_deadline),
                Some(start) => {
                    if jump_pending {
                        jump_pending = false;
                        if let Some(skipped) = video.skip_to_next_keyframe()
                            && skipped > 0
                        {
                            self.counters.keyframe_jumps.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .frames_skipped
                                .fetch_add(skipped as u64, Ordering::Relaxed);
                        }
                    }
                    let end = self.opts.duration.map(|d| start + d);
                    if end.is_some_and(|e| now >= e) {
                        return Ok(());
                    }
                    let next = match (video.peek_time(), audio.peek_time()) {
                        (None, None) => return Ok(()),
                        (Some(v), Some(a)) if a < v => Kind::Audio,
                        (Some(_), _) => Kind::Video,
                        (None, Some(_)) => Kind::Audio,
                    };
                    let cursor = if next == Kind::Video {
                        &mut video
                    } else {
                        &mut audio
                    };
                    let due = cursor.peek_time().map(|t| start + t);
                    if due.is_some_and(|d| d <= now) {
                        if let Some(sample) = cursor.next() {
                            self.write(start, &sample)?;
                            self.lp.drain(&mut events).await?;
                        }
                        continue;
                    }
                    match (due, end) {
                        (Some(d), Some(e)) => Some(d.min(e)),
                        (d, e) => d.or(e),
                    }
                }
            };
            match self.lp.wait(deadline, &mut stop).await? {
                Woke::Stop => return Ok(()),
                Woke::Input => self.lp.drain(&mut events).await?,
                Woke::Deadline => {}
            }
        }
    }

    fn write(&mut self, start: Instant, s: &MediaSample) -> Result<()> {
        let (mid, pt) = match s.kind {
            Kind::Video => self.tracks[0],
            Kind::Audio => self.tracks[1],
        };
        let freq = match s.kind {
            Kind::Video => Frequency::NINETY_KHZ,
            Kind::Audio => Frequency::FORTY_EIGHT_KHZ,
        };
        match (&self.opts.simulcast, s.kind) {
            (Some(rids), Kind::Video) => {
                for (k, rid) in rids.iter().enumerate() {
                    let every = 1usize << k;
                    if !s.keyframe && !s.index.is_multiple_of(every) {
                        continue;
                    }
                    let writer = self.lp.rtc.writer(mid).context("media vanished")?;
                    writer
                        .rid(rid.as_str().into())
                        .write(
                            pt,
                            start + s.time,
                            MediaTime::new(s.rtp_time, freq),
                            s.data.clone(),
                        )
                        .context("str0m write")?;
                }
            }
            _ => {
                let writer = self.lp.rtc.writer(mid).context("media vanished")?;
                writer
                    .write(
                        pt,
                        start + s.time,
                        MediaTime::new(s.rtp_time, freq),
                        s.data.clone(),
                    )
                    .context("str0m write")?;
            }
        }
        match s.kind {
            Kind::Video => {
                // For same-process latency figures (see `latency`).
                crate::latency::record_send(s.index, Instant::now());
                self.counters.video_frames.fetch_add(1, Ordering::Relaxed);
                if s.keyframe {
                    self.counters.keyframes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Kind::Audio => {
                self.counters.audio_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
