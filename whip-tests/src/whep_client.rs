//! A WHEP player that checks what it receives: every video frame is looked up in the fixture by
//! its slice data, so the report says how long the first picture took and whether the stream was
//! whole, in order and decodable.
//!
//! A *thin* player ([`PlayOptions::thin`]) only counts: it does real ICE and DTLS and keeps
//! consent alive, but its RTP is counted from the clear header and never decrypted (see
//! [`crate::rtc_loop::RtcLoop::set_thin`]), so it has packet counts, bytes and sequence-gap loss
//! but no frames, no latency, and it sends no NACK or PLI.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::Url;
use serde::Serialize;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::{Event, IceConnectionState, Rtc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::latency::{LatencySamples, LatencyStats};
use crate::media_source::FrameCatalog;
use crate::rtc_loop::{RtcLoop, Woke};
use crate::rtp_counter::{RtpCounter, RtpCounts};
use crate::sequence_check::{SequenceChecker, SequenceStats};
use crate::signaling::{Resource, http_client, post_offer};

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// WHEP endpoint, e.g. `http://127.0.0.1:8080/whep/concert`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Local UDP address to receive on.
    pub bind: SocketAddr,
    /// Play at most this long after the POST.
    pub duration: Duration,
    /// Stop as soon as this many video frames have arrived (1 = measure the join only).
    pub stop_after_frames: Option<u64>,
    /// Stop as soon as a keyframe has arrived (measure the join to the first decodable picture).
    pub stop_at_first_keyframe: bool,
    /// Like a browser: send PLI when the picture cannot be decoded (first frame not a keyframe,
    /// or a gap), at most once a second.
    pub request_keyframes: bool,
    /// ICE and DTLS must be done within this time after the answer.
    pub connect_timeout: Duration,
    /// Offer H264 without RTX, so repairs must come on the media SSRC (some hardware players).
    pub no_rtx: bool,
    /// Drop every Nth incoming media datagram before str0m sees it (loss for repair tests).
    pub drop_every: Option<u32>,
    /// Play through the session/track API instead of WHEP: `url` is then the app's base,
    /// `http://host/v1/apps/{app}`, and this the track pulled on the video m-line.
    pub api_track: Option<crate::signaling::ApiTrack>,
    /// Count RTP datagrams instead of decrypting them (load generation; see the module doc).
    pub thin: bool,
    /// A W3C `traceparent` sent with every request (a player that traces its own join).
    pub traceparent: Option<String>,
}

impl PlayOptions {
    /// Five seconds from 127.0.0.1, asking for keyframes like a browser.
    pub fn new(url: impl Into<String>) -> Self {
        PlayOptions {
            url: url.into(),
            token: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            duration: Duration::from_secs(5),
            stop_after_frames: None,
            stop_at_first_keyframe: false,
            request_keyframes: true,
            connect_timeout: Duration::from_secs(10),
            no_rtx: false,
            drop_every: None,
            api_track: None,
            thin: false,
            traceparent: None,
        }
    }
}

/// What a viewer saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlayReport {
    /// The WHEP endpoint.
    pub url: String,
    /// The session resource, once created.
    pub resource: Option<String>,
    /// POST to 201.
    pub answer_ms: Option<f64>,
    /// POST to ICE connected (str0m's `IceConnectionStateChange(Connected)`).
    pub ice_connected_ms: Option<f64>,
    /// POST to ICE + DTLS done (str0m's `Connected`).
    pub connected_ms: Option<f64>,
    /// POST to the first RTP datagram received (before decryption).
    pub first_packet_ms: Option<f64>,
    /// POST to the first complete video frame, whatever it was.
    pub first_frame_ms: Option<f64>,
    /// POST to the first keyframe.
    pub first_keyframe_ms: Option<f64>,
    /// Video frames received.
    pub video_frames: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// NAL unit types of the first video frame, in order (a decoder needs SPS 7 and PPS 8 before
    /// the IDR 5).
    pub first_frame_nal_types: Vec<u8>,
    /// Opus packets received.
    pub audio_packets: u64,
    /// Opus packets not found in the fixture.
    pub audio_unknown: u64,
    /// Frames str0m flagged as not following on from the previous one (RTP loss).
    pub non_contiguous: u64,
    /// PLIs this player sent.
    pub keyframe_requests_sent: u64,
    /// NACK messages str0m sent for this player (one may ask for several packets), as of its
    /// last stats event (once a second). Always 0 for a thin player.
    pub nacks_sent: u64,
    /// A thin player: RTP counted, not decrypted; no frames, latency, NACK or PLI.
    pub thin: bool,
    /// Every RTP datagram received, counted from the clear header: bytes, and loss from
    /// sequence-number gaps before any repair.
    pub rtp: RtpCounts,
    /// Frame-by-frame verdict against the fixture.
    pub sequence: SequenceStats,
    /// Whole, in order, nothing missing, starting with a keyframe.
    pub whole_in_order: bool,
    /// From POST to the end of playing.
    pub ran_ms: f64,
    /// Why playing ended early, if it did.
    pub error: Option<String>,
    /// Why the DELETE at the end failed, if it did (e.g. 404 because the gateway had already
    /// ended the session).
    pub delete_error: Option<String>,
    /// Publisher write → player receive per recognised video frame, for frames written after
    /// this player connected. Only when the publisher runs in this same process (tests; see
    /// [`crate::latency`]); `None` otherwise.
    pub latency_ms: Option<LatencyStats>,
    /// Fixture index of each video frame in arrival order (None: not recognised); the first
    /// 10 000 only. Simulcast tests read a layer's frame cadence from it.
    pub frame_indices: Vec<Option<usize>>,
}

#[derive(Debug)]
struct State {
    report: PlayReport,
    checker: SequenceChecker,
    latency: LatencySamples,
    /// Shared with the [`RtcLoop`], which counts while we run.
    rtp: Arc<Mutex<RtpCounter>>,
    /// The POST, from which every `_ms` is measured.
    t0: Instant,
}

/// A running player.
pub struct WhepPlayer {
    resource: Resource,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

/// Plays `opts.url` until its duration or frame limit and returns the report (after DELETE).
pub async fn play(catalog: Arc<FrameCatalog>, opts: PlayOptions) -> Result<PlayReport> {
    WhepPlayer::start(catalog, opts).await?.finish().await
}

impl WhepPlayer {
    /// POSTs a recvonly offer; fails unless the endpoint answers 201. Playing continues in the
    /// background.
    pub async fn start(catalog: Arc<FrameCatalog>, opts: PlayOptions) -> Result<Self> {
        let mut config = Rtc::builder().clear_codecs().enable_opus(true, false);
        if opts.no_rtx {
            config
                .codec_config()
                .add_h264(102.into(), None, true, 0x42e01f);
            config
                .codec_config()
                .add_h264(103.into(), None, true, 0x42001f);
        } else {
            config = config.enable_h264(true);
        }
        // Stats events carry the NACKs str0m sent.
        let rtc = config
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(Instant::now());
        let mut lp = RtcLoop::bind(rtc, opts.bind).await?;
        lp.set_drop_every(opts.drop_every);
        lp.set_thin(opts.thin);
        let mut change = lp.rtc.sdp_api();
        let _audio = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let video_mid = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().context("str0m made no offer")?;

        let client = match &opts.traceparent {
            Some(tp) => crate::signaling::http_client_with_header("traceparent", tp)?,
            None => http_client()?,
        };
        // The clock starts here: what a viewer waits for includes the HTTP round trip.
        let t0 = Instant::now();
        let answer = match &opts.api_track {
            Some(track) => {
                crate::signaling::post_api_offer(
                    &client,
                    &opts.url,
                    opts.token.as_deref(),
                    &offer.to_sdp_string(),
                    track,
                    &video_mid.to_string(),
                )
                .await?
            }
            None => {
                post_offer(
                    &client,
                    &opts.url,
                    opts.token.as_deref(),
                    &offer.to_sdp_string(),
                )
                .await?
            }
        };
        let answer_ms = ms(t0.elapsed());
        let sdp = SdpAnswer::from_sdp_string(&answer.sdp).context("parsing the SDP answer");
        let accepted = sdp.and_then(|sdp| {
            lp.rtc
                .sdp_api()
                .accept_answer(pending, sdp)
                .context("str0m refused the answer")
        });
        if let Err(e) = accepted {
            // Do not leave a viewer session behind on the gateway.
            let _ = answer.resource.delete().await;
            return Err(e);
        }
        if opts.no_rtx {
            // str0m NACKs only streams with RTX; a player without RTX that still NACKs (and
            // expects repairs on the media SSRC) is what this mode imitates.
            if let Some(rx) = lp.rtc.direct_api().stream_rx_by_mid(video_mid, None) {
                rx.suppress_nack(false);
            }
        }

        // RTX payload types as negotiated, so that repairs are not counted as media.
        let rtp = lp.rtp_counter();
        let repair_pts = lp
            .rtc
            .codec_config()
            .params()
            .iter()
            .filter_map(|p| p.resend());
        lock(&rtp).set_repair_payload_types(repair_pts.map(|pt| *pt));

        let state = Arc::new(Mutex::new(State {
            report: PlayReport {
                url: opts.url.clone(),
                resource: Some(answer.resource.url.to_string()),
                answer_ms: Some(answer_ms),
                thin: opts.thin,
                ..PlayReport::default()
            },
            checker: SequenceChecker::new(catalog.video_len()),
            latency: LatencySamples::default(),
            rtp,
            t0,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let receiver = Receiver {
            lp,
            catalog,
            opts,
            state: state.clone(),
            video_mid,
            t0,
            last_pli: None,
            nacks: Vec::new(),
        };
        let task = tokio::spawn(receiver.run(stop_rx));
        Ok(WhepPlayer {
            resource: answer.resource,
            state,
            stop,
            task,
        })
    }

    /// The session resource (`Location`).
    pub fn resource_url(&self) -> &Url {
        &self.resource.url
    }

    /// What has been received so far.
    pub fn report(&self) -> PlayReport {
        snapshot(&lock(&self.state))
    }

    /// Latency percentiles of the frames received in `[from, to)` (see
    /// [`LatencySamples::stats_between`]); `None` for thin players or without samples.
    pub fn latency_between(&self, from: Instant, to: Instant) -> Option<LatencyStats> {
        lock(&self.state).latency.stats_between(from, to)
    }

    /// Waits for the duration or frame limit, then DELETEs the session. Failures while playing
    /// or deleting end up in the report rather than as an error, so the counters survive.
    pub async fn finish(self) -> Result<PlayReport> {
        self.end(false).await
    }

    /// Stops now and DELETEs the session.
    pub async fn stop(self) -> Result<PlayReport> {
        self.end(true).await
    }

    async fn end(self, now: bool) -> Result<PlayReport> {
        if now {
            let _ = self.stop.send(true);
        }
        let outcome = self.task.await.context("player task panicked")?;
        let deleted = self.resource.delete().await;
        let mut report = snapshot(&lock(&self.state));
        if let Err(e) = outcome {
            report.error = Some(format!("{e:#}"));
        }
        if let Err(e) = deleted {
            report.delete_error = Some(format!("{e:#}"));
        }
        Ok(report)
    }
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves counters that are still worth reading.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn snapshot(s: &State) -> PlayReport {
    let mut r = s.report.clone();
    r.sequence = s.checker.stats().clone();
    r.whole_in_order = r.sequence.is_perfect();
    r.latency_ms = s.latency.stats();
    let rtp = lock(&s.rtp);
    r.rtp = rtp.counts();
    r.first_packet_ms = rtp
        .first_at()
        .map(|t| ms(t.saturating_duration_since(s.t0)));
    r
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Receiver {
    lp: RtcLoop,
    catalog: Arc<FrameCatalog>,
    opts: PlayOptions,
    state: Arc<Mutex<State>>,
    video_mid: Mid,
    t0: Instant,
    last_pli: Option<Instant>,
    /// NACKs sent per (mid, rid), as str0m's cumulative stats last said.
    nacks: Vec<((Mid, Option<Rid>), u64)>,
}

impl Receiver {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let end = self.t0 + self.opts.duration;
        let connect_deadline = Instant::now() + self.opts.connect_timeout;
        let mut connected = false;
        let mut events = Vec::new();
        self.lp.drain(&mut events).await?;
        let result = loop {
            let mut want_pli = false;
            for e in events.drain(..) {
                match e {
                    Event::Connected => {
                        connected = true;
                        let mut st = lock(&self.state);
                        st.report.connected_ms = Some(ms(self.t0.elapsed()));
                        st.latency.set_since(Instant::now());
                    }
                    Event::IceConnectionStateChange(
                        IceConnectionState::Connected | IceConnectionState::Completed,
                    ) => {
                        let t = ms(self.t0.elapsed());
                        lock(&self.state).report.ice_connected_ms.get_or_insert(t);
                    }
                    Event::MediaIngressStats(s) => self.on_ingress_stats((s.mid, s.rid), s.nacks),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        lock(&self.state).report.ran_ms = ms(self.t0.elapsed());
                        anyhow::bail!("ICE disconnected");
                    }
                    Event::MediaData(data) => want_pli |= self.on_media(&data),
                    _ => {}
                }
            }
            if want_pli && self.opts.request_keyframes {
                self.request_keyframe();
                self.lp.drain(&mut events).await?;
                continue;
            }
            let now = Instant::now();
            if now >= end {
                break Ok(());
            }
            if !connected && now > connect_deadline {
                break Err(anyhow::anyhow!(
                    "not connected within {:?}",
                    self.opts.connect_timeout
                ));
            }
            if self.limit_reached() {
                break Ok(());
            }
            if !self.lp.rtc.is_alive() {
                break Err(anyhow::anyhow!("the WebRTC session died"));
            }
            let deadline = if connected {
                end
            } else {
                end.min(connect_deadline)
            };
            match self.lp.wait(Some(deadline), &mut stop).await? {
                Woke::Stop => break Ok(()),
                Woke::Input => self.lp.drain(&mut events).await?,
                Woke::Deadline => {}
            }
        };
        lock(&self.state).report.ran_ms = ms(self.t0.elapsed());
        result
    }

    fn on_ingress_stats(&mut self, key: (Mid, Option<Rid>), nacks: u64) {
        match self.nacks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n = nacks,
            None => self.nacks.push((key, nacks)),
        }
        lock(&self.state).report.nacks_sent = self.nacks.iter().map(|(_, n)| n).sum();
    }

    fn limit_reached(&self) -> bool {
        let st = lock(&self.state);
        let frames = self
            .opts
            .stop_after_frames
            .is_some_and(|n| st.report.video_frames >= n);
        frames || (self.opts.stop_at_first_keyframe && st.report.keyframes > 0)
    }

    /// Records one frame; returns whether the decoder would now want a keyframe.
    fn on_media(&mut self, data: &MediaData) -> bool {
        let received = Instant::now();
        let elapsed = ms(self.t0.elapsed());
        let mut st = lock(&self.state);
        if data.params.spec().codec.is_audio() {
            st.report.audio_packets += 1;
            if !self.catalog.knows_audio(&data.data) {
                st.report.audio_unknown += 1;
            }
            return false;
        }
        let index = self.catalog.identify(&data.data);
        if let Some(i) = index {
            st.latency.on_receive(i, received);
        }
        let key = index.map_or_else(|| data.is_keyframe(), |i| self.catalog.is_keyframe(i));
        let r = &mut st.report;
        if r.video_frames == 0 {
            r.first_frame_nal_types = crate::annexb::annexb_nals(&data.data)
                .filter_map(crate::annexb::nal_type)
                .collect();
        }
        r.video_frames += 1;
        if r.frame_indices.len() < 10_000 {
            r.frame_indices.push(index);
        }
        r.first_frame_ms.get_or_insert(elapsed);
        if key {
            r.keyframes += 1;
            r.first_keyframe_ms.get_or_insert(elapsed);
        }
        if !data.contiguous {
            r.non_contiguous += 1;
        }
        let before = st.checker.stats().undecodable;
        st.checker.push(index, &self.catalog);
        st.checker.stats().undecodable > before
    }

    fn request_keyframe(&mut self) {
        let now = Instant::now();
        if self
            .last_pli
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let Some(mut writer) = self.lp.rtc.writer(self.video_mid) else {
            return;
        };
        if writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .is_ok()
        {
            self.last_pli = Some(now);
            lock(&self.state).report.keyframe_requests_sent += 1;
        }
    }
}
