//! The session/track API (shaped like Cloudflare Calls) against the real gateway process.
//!
//! A WHIP publisher (`short-gop.mp4`) publishes stream "src"; its session id is the last segment
//! of its resource URL and its tracks are "audio" and "video". API clients are str0m peers in
//! frame mode driven by [`RtcLoop`] in a background task that takes SDP commands, so a peer can be
//! renegotiated while media flows. Every received video frame is identified in the fixture, so
//! the tests can say whether the pulled video arrived whole and in order.
//!
//! - `pull_server_offer_close_and_client_offer`: empty session + `tracks/new` (remote) → server
//!   offer → `renegotiate`; media arrives; `tracks/close` on the video mid → server offer →
//!   `renegotiate`; video stops, audio goes on. Then a client offer with remote tracks at
//!   `sessions/new`.
//! - `push_through_the_api_and_pull_it`: a client offer at `sessions/new` (tracks "audio",
//!   "video"), and an empty session + `tracks/new` with local tracks named "cam"/"mic"; both send
//!   the fixture; other API sessions pull (id, "cam") and (id, "video") and get every frame.
//! - `errors`: 401, 404, error entries, 409, 400, DELETE.
//! - `close_per_item_errors_force_and_client_offer`: Calls' `tracks/close` (per-item
//!   `close_track_error`, `force: true`, the client's offer answered at once).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt};
use str0m::{Event, IceConnectionState, Rtc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use whip_tests::rtc_loop::{RtcLoop, Woke};
use whip_tests::sequence_check::SequenceChecker;
use whip_tests::signaling::http_client;
use whip_tests::{
    FrameCatalog, Gateway, Kind, MediaSource, PublishOptions, SequenceStats, WhipPublisher,
};

const APP: &str = "demo";
const SECRET: &str = "0123456789abcdef0123";

/// The tests are timing-sensitive on a two-core machine: under `cargo test` (one process) they
/// take turns; nextest runs each in its own process, as many at once as there are cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_gateway() -> Result<Gateway> {
    tokio::task::spawn_blocking(|| Gateway::start_with_args(&["--app", &format!("{APP}:{SECRET}")]))
        .await
        .context("gateway start panicked")?
}

// ---------------------------------------------------------------------------------------------
// HTTP side.

struct Api {
    c: Client,
    base: String,
}

impl Api {
    fn new(gw: &Gateway) -> Result<Self> {
        Ok(Api {
            c: http_client()?,
            base: gw.base_url(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/apps/{APP}/sessions{path}", self.base)
    }

    /// A request with the app secret and an optional JSON body; the status and the body as JSON
    /// (`Null` when empty or not JSON).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut req = self
            .c
            .request(method.clone(), self.url(path))
            .header(AUTHORIZATION, format!("Bearer {SECRET}"));
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Like [`Api::call`] but insists on `want`.
    async fn expect(
        &self,
        want: u16,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        ensure!(
            status == want,
            "{method} {path}: HTTP {status}, wanted {want}: {v}"
        );
        Ok(v)
    }

    async fn new_empty_session(&self) -> Result<String> {
        let v = self.expect(201, Method::POST, "/new", None).await?;
        Ok(v["sessionId"].as_str().context("no sessionId")?.to_owned())
    }

    async fn renegotiate(&self, id: &str, answer: &str) -> Result<()> {
        let body = json!({"sessionDescription": {"type": "answer", "sdp": answer}});
        self.expect(200, Method::PUT, &format!("/{id}/renegotiate"), Some(body))
            .await?;
        Ok(())
    }
}

/// The server's offer out of a `tracks/new` or `tracks/close` answer.
fn server_offer(v: &Value) -> Result<String> {
    ensure!(
        v["requiresImmediateRenegotiation"] == json!(true),
        "no renegotiation asked for: {v}"
    );
    ensure!(
        v["sessionDescription"]["type"] == "offer",
        "not an offer: {v}"
    );
    Ok(v["sessionDescription"]["sdp"]
        .as_str()
        .context("no sdp")?
        .to_owned())
}

/// The mid the response gave the track named `name`.
fn mid_of(v: &Value, name: &str) -> Result<String> {
    let t = v["tracks"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["trackName"] == name))
        .with_context(|| format!("no track {name:?} in {v}"))?;
    ensure!(
        t.get("errorCode").is_none(),
        "track {name:?} has an error: {t}"
    );
    Ok(t["mid"]
        .as_str()
        .with_context(|| format!("track {name:?} without mid: {t}"))?
        .to_owned())
}

fn remote(session: &str, name: &str) -> Value {
    json!({"location": "remote", "sessionId": session, "trackName": name})
}

/// A str0m viewer in a new empty API session pulling `source`'s "video" and "audio" (our offer,
/// its answer), once media flows: the viewer, the session id, the video and audio mids.
async fn pull_video_and_audio(
    api: &Api,
    catalog: Arc<FrameCatalog>,
    source: &str,
) -> Result<(Peer, String, String, String)> {
    pull_video_and_audio_named(api, catalog, source, "video", "audio").await
}

/// [`pull_video_and_audio`] of tracks with other names.
async fn pull_video_and_audio_named(
    api: &Api,
    catalog: Arc<FrameCatalog>,
    source: &str,
    video: &str,
    audio: &str,
) -> Result<(Peer, String, String, String)> {
    let viewer = Peer::start("viewer", catalog, None).await?;
    let id = api.new_empty_session().await?;
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(source, video), remote(source, audio)]})),
        )
        .await?;
    let (vmid, amid) = (mid_of(&v, video)?, mid_of(&v, audio)?);
    let answer = viewer.accept_offer(&server_offer(&v)?).await?;
    api.renegotiate(&id, &answer).await?;
    expect_media(&viewer, &vmid, &amid, 10, 10).await?;
    Ok((viewer, id, vmid, amid))
}

fn session_count(stats: &Value) -> u64 {
    stats["sessions"].as_u64().unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// A str0m peer (frame mode, H264 + Opus) that can be renegotiated while it runs.

enum Cmd {
    MakeOffer {
        media: Vec<(MediaKind, Direction)>,
        reply: oneshot::Sender<Result<(String, Vec<Mid>)>>,
    },
    AcceptAnswer {
        sdp: String,
        reply: oneshot::Sender<Result<()>>,
    },
    AcceptOffer {
        sdp: String,
        reply: oneshot::Sender<Result<String>>,
    },
    /// Stop a transceiver and offer (Calls' `tracks/close` with the client's offer).
    StopAndOffer {
        mid: Mid,
        reply: oneshot::Sender<Result<String>>,
    },
}

/// What arrived on one mid.
struct MidSeen {
    mid: Mid,
    video: u64,
    audio: u64,
    audio_unknown: u64,
    indices: Vec<Option<usize>>,
    checker: SequenceChecker,
    last: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    connected: Option<Instant>,
    mids: Vec<MidSeen>,
    sent_video: u64,
    sent_audio: u64,
}

/// A snapshot of one mid's video.
#[derive(Debug, Clone)]
struct VideoVerdict {
    frames: u64,
    stats: SequenceStats,
    /// Every frame from the first keyframe on is known and follows the previous one.
    consecutive_from_keyframe: bool,
    frames_before_keyframe: usize,
}

struct Peer {
    label: &'static str,
    cmds: mpsc::UnboundedSender<Cmd>,
    seen: Arc<Mutex<Seen>>,
    catalog: Arc<FrameCatalog>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

fn lock(s: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peer {
    /// A peer on 127.0.0.1; with `send`, it sends the fixture (looping, at real pace) on its
    /// sendonly m-lines once connected.
    async fn start(
        label: &'static str,
        catalog: Arc<FrameCatalog>,
        send: Option<Arc<MediaSource>>,
    ) -> Result<Peer> {
        Self::start_with(label, catalog, send, false).await
    }

    /// `all_h264`: str0m's seven default H264 formats (what the WHEP player offers) instead of
    /// the one the fixture is (constrained baseline, packetization mode 1).
    async fn start_with(
        label: &'static str,
        catalog: Arc<FrameCatalog>,
        send: Option<Arc<MediaSource>>,
        all_h264: bool,
    ) -> Result<Peer> {
        let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false);
        if all_h264 {
            cfg = cfg.enable_h264(true);
        } else if send.is_some() {
            // What OBS offers: one H264 format, constrained baseline, packetization mode 1.
            cfg.codec_config()
                .add_h264(Pt::from(96), None, true, 0x42e01f);
        } else {
            // See `server_offer_answered_with_default_h264_formats` for why not all of them.
            cfg.codec_config()
                .add_h264(Pt::from(108), Some(Pt::from(109)), true, 0x42e01f);
        }
        let rtc = cfg.build(Instant::now());
        let lp = RtcLoop::bind(rtc, "127.0.0.1:0".parse()?).await?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(run(lp, rx, stop_rx, seen.clone(), catalog.clone(), send));
        Ok(Peer {
            label,
            cmds,
            seen,
            catalog,
            stop,
            task,
        })
    }

    async fn make_offer(&self, media: &[(MediaKind, Direction)]) -> Result<(String, Vec<Mid>)> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::MakeOffer {
                media: media.to_vec(),
                reply,
            })
            .ok()
            .context("peer gone")?;
        rx.await.context("peer gone")?
    }

    async fn accept_answer(&self, sdp: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::AcceptAnswer {
                sdp: sdp.to_owned(),
                reply,
            })
            .ok()
            .context("peer gone")?;
        rx.await.context("peer gone")?
    }

    async fn stop_and_offer(&self, mid: &str) -> Result<String> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::StopAndOffer {
                mid: Mid::from(mid),
                reply,
            })
            .ok()
            .context("peer gone")?;
        rx.await.context("peer gone")?
    }

    async fn accept_offer(&self, sdp: &str) -> Result<String> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::AcceptOffer {
                sdp: sdp.to_owned(),
                reply,
            })
            .ok()
            .context("peer gone")?;
        rx.await.context("peer gone")?
    }

    fn counts(&self, mid: &str) -> (u64, u64) {
        let s = lock(&self.seen);
        s.mids
            .iter()
            .find(|m| &*m.mid == mid)
            .map_or((0, 0), |m| (m.video, m.audio))
    }

    fn sent(&self) -> (u64, u64) {
        let s = lock(&self.seen);
        (s.sent_video, s.sent_audio)
    }

    fn last_at(&self, mid: &str) -> Option<Instant> {
        lock(&self.seen)
            .mids
            .iter()
            .find(|m| &*m.mid == mid)
            .and_then(|m| m.last)
    }

    fn video(&self, mid: &str) -> VideoVerdict {
        let s = lock(&self.seen);
        let Some(m) = s.mids.iter().find(|m| &*m.mid == mid) else {
            return VideoVerdict {
                frames: 0,
                stats: SequenceStats::default(),
                consecutive_from_keyframe: false,
                frames_before_keyframe: 0,
            };
        };
        let first_key = m
            .indices
            .iter()
            .position(|i| i.is_some_and(|i| self.catalog.is_keyframe(i)));
        let len = self.catalog.video_len();
        let consecutive = first_key.is_some_and(|k| {
            m.indices[k..]
                .windows(2)
                .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if b == (a + 1) % len))
        });
        VideoVerdict {
            frames: m.video,
            stats: m.checker.stats().clone(),
            consecutive_from_keyframe: consecutive,
            frames_before_keyframe: first_key.unwrap_or(m.indices.len()),
        }
    }

    fn audio_unknown(&self, mid: &str) -> u64 {
        lock(&self.seen)
            .mids
            .iter()
            .find(|m| &*m.mid == mid)
            .map_or(0, |m| m.audio_unknown)
    }

    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until `cond` holds, failing with the peer's state after `timeout`.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Peer) -> bool,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if cond(self) {
                return Ok(t0.elapsed());
            }
            if self.is_finished() {
                bail!("{}: peer task ended while waiting for {what}", self.label);
            }
            if t0.elapsed() > timeout {
                let s = lock(&self.seen);
                let mids: Vec<String> = s
                    .mids
                    .iter()
                    .map(|m| format!("{}: video {} audio {}", m.mid, m.video, m.audio))
                    .collect();
                bail!(
                    "{}: no {what} within {timeout:?} (connected: {}, sent v/a {}/{}, {mids:?})",
                    self.label,
                    s.connected.is_some(),
                    s.sent_video,
                    s.sent_audio
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("peer task panicked")?
    }
}

fn on_media(seen: &Mutex<Seen>, catalog: &FrameCatalog, data: &MediaData) {
    let mut s = lock(seen);
    let i = match s.mids.iter().position(|m| m.mid == data.mid) {
        Some(i) => i,
        None => {
            s.mids.push(MidSeen {
                mid: data.mid,
                video: 0,
                audio: 0,
                audio_unknown: 0,
                indices: Vec::new(),
                checker: SequenceChecker::new(catalog.video_len()),
                last: None,
            });
            s.mids.len() - 1
        }
    };
    let m = &mut s.mids[i];
    m.last = Some(Instant::now());
    if data.params.spec().codec.is_audio() {
        m.audio += 1;
        if !catalog.knows_audio(&data.data) {
            m.audio_unknown += 1;
        }
        return;
    }
    m.video += 1;
    let index = catalog.identify(&data.data);
    m.indices.push(index);
    m.checker.push(index, catalog);
}

fn pick_pt(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    rtc.writer(mid)?
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

/// Our offer waiting for its answer, with the m-lines (mid, kind, direction) it asked for.
type PendingOffer = (SdpPendingOffer, Vec<(Mid, MediaKind, Direction)>);

async fn run(
    mut lp: RtcLoop,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut stop: watch::Receiver<bool>,
    seen: Arc<Mutex<Seen>>,
    catalog: Arc<FrameCatalog>,
    send: Option<Arc<MediaSource>>,
) -> Result<()> {
    let mut events = Vec::new();
    let mut pending: Option<PendingOffer> = None;
    // (kind, mid, pt) of what we send, known once our offer is answered.
    let mut tracks: Vec<(Kind, Mid, Pt)> = Vec::new();
    let mut start: Option<Instant> = None;
    let mut cursors = send
        .as_ref()
        .map(|m| [m.cursor(Kind::Video, None), m.cursor(Kind::Audio, None)]);
    lp.drain(&mut events).await?;
    loop {
        for e in events.drain(..) {
            match e {
                Event::Connected => {
                    let now = Instant::now();
                    start.get_or_insert(now);
                    lock(&seen).connected.get_or_insert(now);
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    bail!("ICE disconnected")
                }
                Event::MediaData(d) => on_media(&seen, &catalog, &d),
                _ => {}
            }
        }
        if !lp.rtc.is_alive() {
            bail!("the WebRTC session died");
        }
        // Send whatever is due.
        let mut deadline = None;
        if let (Some(t0), Some(cur)) = (start, cursors.as_mut())
            && !tracks.is_empty()
        {
            let now = Instant::now();
            let next = cur
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    tracks.iter().any(|(k, _, _)| *k == c_kind(*i)) && c.peek_time().is_some()
                })
                .min_by_key(|(_, c)| c.peek_time())
                .map(|(i, c)| (i, c.peek_time().unwrap_or_default()));
            if let Some((i, at)) = next {
                if t0 + at <= now {
                    let kind = c_kind(i);
                    if let Some(sample) = cur[i].next()
                        && let Some((_, mid, pt)) = tracks.iter().find(|(k, _, _)| *k == kind)
                    {
                        let freq = if kind == Kind::Video {
                            Frequency::NINETY_KHZ
                        } else {
                            Frequency::FORTY_EIGHT_KHZ
                        };
                        let writer = lp.rtc.writer(*mid).context("media vanished")?;
                        writer
                            .write(
                                *pt,
                                t0 + sample.time,
                                MediaTime::new(sample.rtp_time, freq),
                                sample.data.clone(),
                            )
                            .context("str0m write")?;
                        let mut s = lock(&seen);
                        if kind == Kind::Video {
                            s.sent_video += 1;
                        } else {
                            s.sent_audio += 1;
                        }
                    }
                    lp.drain(&mut events).await?;
                    continue;
                }
                deadline = Some(t0 + at);
            }
        }
        tokio::select! {
            woke = lp.wait(deadline, &mut stop) => match woke? {
                Woke::Stop => return Ok(()),
                Woke::Input => lp.drain(&mut events).await?,
                Woke::Deadline => {}
            },
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                match cmd {
                    Cmd::MakeOffer { media, reply } => {
                        let mut api = lp.rtc.sdp_api();
                        let mut lines = Vec::new();
                        for (kind, dir) in media {
                            lines.push((api.add_media(kind, dir, None, None, None), kind, dir));
                        }
                        let result = match api.apply() {
                            Some((offer, p)) => {
                                let mids = lines.iter().map(|l| l.0).collect();
                                pending = Some((p, lines));
                                Ok((offer.to_sdp_string(), mids))
                            }
                            None => Err(anyhow::anyhow!("str0m made no offer")),
                        };
                        let _ = reply.send(result);
                    }
                    Cmd::AcceptAnswer { sdp, reply } => {
                        let result = (|| {
                            let (p, lines) = pending.take().context("no offer pending")?;
                            let answer = SdpAnswer::from_sdp_string(&sdp).context("parsing the answer")?;
                            lp.rtc.sdp_api().accept_answer(p, answer).context("str0m refused the answer")?;
                            for (mid, kind, dir) in lines {
                                if dir != Direction::SendOnly {
                                    continue;
                                }
                                let (k, codec) = if kind == MediaKind::Video { (Kind::Video, Codec::H264) } else { (Kind::Audio, Codec::Opus) };
                                let pt = pick_pt(&mut lp.rtc, mid, codec).with_context(|| format!("{codec} not accepted on {mid}"))?;
                                tracks.push((k, mid, pt));
                            }
                            anyhow::Ok(())
                        })();
                        let _ = reply.send(result);
                    }
                    Cmd::AcceptOffer { sdp, reply } => {
                        let result = SdpOffer::from_sdp_string(&sdp)
                            .context("parsing the offer")
                            .and_then(|o| lp.rtc.sdp_api().accept_offer(o).context("str0m refused the offer"))
                            .map(|a| a.to_sdp_string());
                        // A peer with media sends on every m-line the offer asks it to send on.
                        if result.is_ok() && cursors.is_some() {
                            let new: Vec<(Mid, MediaKind)> = sdp
                                .split("\r\nm=")
                                .skip(1)
                                .filter(|s| s.contains("a=recvonly"))
                                .filter_map(|s| {
                                    let mid = s.lines().find_map(|l| l.strip_prefix("a=mid:"))?;
                                    let kind = if s.starts_with("video") { MediaKind::Video } else { MediaKind::Audio };
                                    Some((Mid::from(mid.trim()), kind))
                                })
                                .filter(|(m, _)| !tracks.iter().any(|(_, t, _)| t == m))
                                .collect();
                            for (mid, kind) in new {
                                let (k, codec) = if kind == MediaKind::Video { (Kind::Video, Codec::H264) } else { (Kind::Audio, Codec::Opus) };
                                if let Some(pt) = pick_pt(&mut lp.rtc, mid, codec) {
                                    tracks.push((k, mid, pt));
                                }
                            }
                        }
                        let _ = reply.send(result);
                    }
                    Cmd::StopAndOffer { mid, reply } => {
                        let mut api = lp.rtc.sdp_api();
                        api.stop_media(mid);
                        let result = match api.apply() {
                            Some((offer, p)) => {
                                pending = Some((p, vec![]));
                                Ok(offer.to_sdp_string())
                            }
                            None => Err(anyhow::anyhow!("str0m made no offer")),
                        };
                        let _ = reply.send(result);
                    }
                }
                lp.drain(&mut events).await?;
            }
        }
    }
}

fn c_kind(i: usize) -> Kind {
    if i == 0 { Kind::Video } else { Kind::Audio }
}

/// Waits for `frames` video frames and `audio` packets on the given mids, then checks that the
/// video is whole and in order (consecutive from its first keyframe) and the audio is the
/// fixture's. Returns the time until the first video frame was seen (from the call).
async fn expect_media(
    p: &Peer,
    video_mid: &str,
    audio_mid: &str,
    frames: u64,
    audio: u64,
) -> Result<VideoVerdict> {
    p.wait_for("video and audio", Duration::from_secs(12), |p| {
        p.counts(video_mid).0 >= frames && p.counts(audio_mid).1 >= audio
    })
    .await?;
    let v = p.video(video_mid);
    println!(
        "{}: video {} frames, perfect {}, consecutive from keyframe {} ({} before it), {:?}; audio {}",
        p.label,
        v.frames,
        v.stats.is_perfect(),
        v.consecutive_from_keyframe,
        v.frames_before_keyframe,
        v.stats,
        p.counts(audio_mid).1
    );
    ensure!(
        v.consecutive_from_keyframe,
        "{}: video not whole and in order: {v:?}",
        p.label
    );
    ensure!(
        v.stats.unknown == 0,
        "{}: unknown (damaged) frames: {v:?}",
        p.label
    );
    ensure!(
        p.audio_unknown(audio_mid) == 0,
        "{}: audio packets not from the fixture",
        p.label
    );
    Ok(v)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_server_offer_close_and_client_offer() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let began = Instant::now();
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();

    // 1. The publisher, addressed by its session id.
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("src"))).await?;
    let src = publisher.session_id().context("no id")?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;

    // 2. Server offer: empty session, remote tracks, renegotiate.
    let viewer = Peer::start("server-offer viewer", catalog.clone(), None).await?;
    let id = api.new_empty_session().await?;
    let s = gw.stats().await?;
    ensure!(session_count(&s) == 2, "publisher + empty session: {s}");
    let t0 = Instant::now();
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "video"), remote(&src, "audio")]})),
        )
        .await?;
    let offer = server_offer(&v)?;
    let (vmid, amid) = (mid_of(&v, "video")?, mid_of(&v, "audio")?);
    ensure!(vmid != amid, "one mid for both tracks: {v}");
    for t in v["tracks"].as_array().context("tracks")? {
        ensure!(
            t["sessionId"] == src.as_str(),
            "track of another session: {t}"
        );
    }
    let answer = viewer.accept_offer(&offer).await?;
    api.renegotiate(&id, &answer).await?;
    let verdict = expect_media(&viewer, &vmid, &amid, 60, 50).await?;
    ensure!(verdict.frames >= 60);
    println!(
        "server-offer pull: 60 frames + 50 audio {:?} after tracks/new",
        t0.elapsed()
    );

    // A second renegotiate has no offer to answer.
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/{id}/renegotiate"),
            Some(json!({"sessionDescription": {"type": "answer", "sdp": answer}})),
        )
        .await?;
    ensure!(
        status == 409,
        "renegotiate without a pending offer: {status} {body}"
    );

    // 3. Close the video track: the server offers again, the client answers; video stops.
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/close"),
            Some(json!({"tracks": [{"mid": vmid}]})),
        )
        .await?;
    let offer = server_offer(&v)?;
    let answer = viewer.accept_offer(&offer).await?;
    api.renegotiate(&id, &answer).await?;
    // Let packets already in flight land, then watch for a second: no video, audio goes on.
    viewer
        .wait_for("a video pause of 400 ms", Duration::from_secs(3), |p| {
            p.last_at(&vmid)
                .is_some_and(|t| t.elapsed() > Duration::from_millis(400))
        })
        .await?;
    let (v0, a0) = (viewer.counts(&vmid).0, viewer.counts(&amid).1);
    viewer
        .wait_for("25 more audio packets", Duration::from_secs(3), |p| {
            p.counts(&amid).1 >= a0 + 25
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v1, a1) = (viewer.counts(&vmid).0, viewer.counts(&amid).1);
    println!("after close: video {v0} → {v1}, audio {a0} → {a1}");
    ensure!(
        v1 == v0,
        "video kept arriving after tracks/close: {v0} → {v1}"
    );
    ensure!(a1 > a0, "audio stopped too");

    // 4. Client offer with remote tracks at creation.
    let viewer2 = Peer::start("client-offer viewer", catalog.clone(), None).await?;
    let (offer, mids) = viewer2
        .make_offer(&[
            (MediaKind::Audio, Direction::RecvOnly),
            (MediaKind::Video, Direction::RecvOnly),
        ])
        .await?;
    let (amid2, vmid2) = (mids[0].to_string(), mids[1].to_string());
    let body = json!({
        "sessionDescription": {"type": "offer", "sdp": offer},
        "tracks": [
            {"location": "remote", "sessionId": src, "trackName": "video", "mid": vmid2},
            {"location": "remote", "sessionId": src, "trackName": "audio", "mid": amid2},
        ]
    });
    let t0 = Instant::now();
    let v = api.expect(201, Method::POST, "/new", Some(body)).await?;
    let id2 = v["sessionId"].as_str().context("no sessionId")?.to_owned();
    ensure!(
        v["sessionDescription"]["type"] == "answer",
        "no answer: {v}"
    );
    ensure!(v["requiresImmediateRenegotiation"] == json!(false), "{v}");
    ensure!(
        mid_of(&v, "video")? == vmid2 && mid_of(&v, "audio")? == amid2,
        "mids not kept: {v}"
    );
    viewer2
        .accept_answer(v["sessionDescription"]["sdp"].as_str().context("sdp")?)
        .await?;
    expect_media(&viewer2, &vmid2, &amid2, 60, 50).await?;
    println!(
        "client-offer pull: 60 frames + 50 audio {:?} after sessions/new",
        t0.elapsed()
    );

    // The first viewer still gets audio, and never got video again.
    ensure!(
        viewer.counts(&vmid).0 == v0,
        "video resumed on the closed mid"
    );
    ensure!(
        viewer.counts(&amid).1 > a1,
        "audio stopped on the first viewer"
    );

    for sid in [&id, &id2] {
        api.expect(200, Method::DELETE, &format!("/{sid}"), None)
            .await?;
    }
    let _ = viewer.stop().await;
    let _ = viewer2.stop().await;
    publisher.stop().await?;
    println!("pull test took {:?}", began.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_through_the_api_and_pull_it() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let began = Instant::now();
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let sendonly = [
        (MediaKind::Video, Direction::SendOnly),
        (MediaKind::Audio, Direction::SendOnly),
    ];

    // A. The offer at sessions/new: the session pushes its tracks, named "video" and "audio".
    let pusher_a = Peer::start(
        "pusher A (sessions/new)",
        catalog.clone(),
        Some(media.clone()),
    )
    .await?;
    let (offer, mids) = pusher_a.make_offer(&sendonly).await?;
    let v = api
        .expect(
            201,
            Method::POST,
            "/new",
            Some(json!({"sessionDescription": {"type": "offer", "sdp": offer}})),
        )
        .await?;
    let a_id = v["sessionId"].as_str().context("no sessionId")?.to_owned();
    ensure!(v["sessionDescription"]["type"] == "answer", "{v}");
    ensure!(
        mid_of(&v, "video")? == mids[0].to_string() && mid_of(&v, "audio")? == mids[1].to_string(),
        "{v}"
    );
    for t in v["tracks"].as_array().context("tracks")? {
        ensure!(
            t["location"] == "local" && t["sessionId"] == a_id.as_str(),
            "{t}"
        );
    }
    pusher_a
        .accept_answer(v["sessionDescription"]["sdp"].as_str().context("sdp")?)
        .await?;

    // B. An empty session, then tracks/new with the offer and local track names.
    let pusher_b = Peer::start(
        "pusher B (tracks/new)",
        catalog.clone(),
        Some(media.clone()),
    )
    .await?;
    let b_id = api.new_empty_session().await?;
    let (offer, mids) = pusher_b.make_offer(&sendonly).await?;
    let body = json!({
        "sessionDescription": {"type": "offer", "sdp": offer},
        "tracks": [
            {"location": "local", "mid": mids[0].to_string(), "trackName": "cam"},
            {"location": "local", "mid": mids[1].to_string(), "trackName": "mic"},
        ]
    });
    let b_cam = mids[0].to_string();
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{b_id}/tracks/new"),
            Some(body),
        )
        .await?;
    ensure!(v["sessionDescription"]["type"] == "answer", "{v}");
    ensure!(v["requiresImmediateRenegotiation"] == json!(false), "{v}");
    ensure!(
        mid_of(&v, "cam")? == mids[0].to_string() && mid_of(&v, "mic")? == mids[1].to_string(),
        "{v}"
    );
    pusher_b
        .accept_answer(v["sessionDescription"]["sdp"].as_str().context("sdp")?)
        .await?;
    let g = api
        .expect(200, Method::GET, &format!("/{b_id}"), None)
        .await?;
    let mut names: Vec<&str> = g["tracks"]
        .as_array()
        .context("tracks")?
        .iter()
        .filter_map(|t| t["trackName"].as_str())
        .collect();
    names.sort();
    ensure!(names == ["cam", "mic"], "GET session lists {g}");

    for p in [&pusher_a, &pusher_b] {
        p.wait_for("30 frames sent", Duration::from_secs(10), |p| {
            p.sent().0 >= 30
        })
        .await?;
    }
    let s = gw.stats().await?;
    ensure!(
        s["packets_in"].as_u64().unwrap_or(0) > 0,
        "nothing received by the gateway: {s}"
    );

    // Pull (B, "cam") + (B, "mic") with a server offer.
    let viewer_b = Peer::start("viewer of B", catalog.clone(), None).await?;
    let vb = api.new_empty_session().await?;
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{vb}/tracks/new"),
            Some(json!({"tracks": [remote(&b_id, "cam"), remote(&b_id, "mic")]})),
        )
        .await?;
    let offer = server_offer(&v)?;
    let (vmid, amid) = (mid_of(&v, "cam")?, mid_of(&v, "mic")?);
    let answer = viewer_b.accept_offer(&offer).await?;
    api.renegotiate(&vb, &answer).await?;

    // Pull (A, "video") + (A, "audio") with a client offer.
    let viewer_a = Peer::start("viewer of A", catalog.clone(), None).await?;
    let (offer, mids) = viewer_a
        .make_offer(&[
            (MediaKind::Video, Direction::RecvOnly),
            (MediaKind::Audio, Direction::RecvOnly),
        ])
        .await?;
    let (vmid_a, amid_a) = (mids[0].to_string(), mids[1].to_string());
    let body = json!({
        "sessionDescription": {"type": "offer", "sdp": offer},
        "tracks": [
            {"location": "remote", "sessionId": a_id, "trackName": "video", "mid": vmid_a},
            {"location": "remote", "sessionId": a_id, "trackName": "audio", "mid": amid_a},
        ]
    });
    let v = api.expect(201, Method::POST, "/new", Some(body)).await?;
    let va = v["sessionId"].as_str().context("no sessionId")?.to_owned();
    viewer_a
        .accept_answer(v["sessionDescription"]["sdp"].as_str().context("sdp")?)
        .await?;

    expect_media(&viewer_b, &vmid, &amid, 60, 50).await?;
    expect_media(&viewer_a, &vmid_a, &amid_a, 60, 50).await?;
    let s = gw.stats().await?;
    println!("stats after the pushes were pulled: {s}");

    // Closing a pushed track ends it for its viewer: B closes "cam" (no renegotiation needed
    // unless the server says so), the viewer's video stops, its audio goes on.
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{b_id}/tracks/close"),
            Some(json!({"tracks": [{"mid": b_cam}]})),
        )
        .await?;
    if v["requiresImmediateRenegotiation"] == json!(true) {
        let answer = pusher_b.accept_offer(&server_offer(&v)?).await?;
        api.renegotiate(&b_id, &answer).await?;
    }
    viewer_b
        .wait_for("a video pause of 400 ms", Duration::from_secs(3), |p| {
            p.last_at(&vmid)
                .is_some_and(|t| t.elapsed() > Duration::from_millis(400))
        })
        .await?;
    let a0 = viewer_b.counts(&amid).1;
    viewer_b
        .wait_for("more audio", Duration::from_secs(3), |p| {
            p.counts(&amid).1 >= a0 + 25
        })
        .await?;
    let g = api
        .expect(200, Method::GET, &format!("/{b_id}"), None)
        .await?;
    ensure!(
        g["tracks"]
            .as_array()
            .is_some_and(|t| t.len() == 1 && t[0]["trackName"] == "mic"),
        "after close: {g}"
    );

    for sid in [&a_id, &b_id, &vb, &va] {
        api.expect(200, Method::DELETE, &format!("/{sid}"), None)
            .await?;
    }
    for p in [pusher_a, pusher_b, viewer_a, viewer_b] {
        let _ = p.stop().await;
    }
    println!("push test took {:?}", began.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let c = http_client()?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("src"))).await?;
    let src = publisher.session_id().context("no id")?;

    // Auth: missing, wrong, another app's id, and the secret of this app under another app name.
    let new_url = api.url("/new");
    let r = c.post(&new_url).send().await?;
    ensure!(r.status() == 401, "no secret: {}", r.status());
    ensure!(
        r.headers().get("www-authenticate").is_some(),
        "401 without WWW-Authenticate"
    );
    let r = c
        .post(&new_url)
        .header(AUTHORIZATION, "Bearer wrong-secret")
        .send()
        .await?;
    ensure!(r.status() == 401, "wrong secret: {}", r.status());
    let r = c
        .post(format!("{}/v1/apps/other/sessions/new", gw.base_url()))
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .send()
        .await?;
    ensure!(r.status() == 401, "unknown app: {}", r.status());

    let id = api.new_empty_session().await?;
    let r = c
        .get(api.url(&format!("/{id}")))
        .header(AUTHORIZATION, "Bearer nope")
        .send()
        .await?;
    ensure!(r.status() == 401, "GET with a wrong secret: {}", r.status());
    let r = c.delete(api.url(&format!("/{id}"))).send().await?;
    ensure!(r.status() == 401, "DELETE without a secret: {}", r.status());

    // Unknown sessions: well-formed, malformed, and a WHIP session (not this app's).
    let unknown = "0123456789abcdef0123456789abcdef";
    for sid in [unknown, "nope", src.as_str()] {
        let (status, body) = api.call(Method::GET, &format!("/{sid}"), None).await?;
        ensure!(status == 404, "GET session {sid}: {status} {body}");
        let (status, body) = api
            .call(
                Method::POST,
                &format!("/{sid}/tracks/new"),
                Some(json!({"tracks": [remote(&src, "video")]})),
            )
            .await?;
        ensure!(
            status == 404,
            "tracks/new on session {sid}: {status} {body}"
        );
        let (status, body) = api.call(Method::DELETE, &format!("/{sid}"), None).await?;
        ensure!(status == 404, "DELETE session {sid}: {status} {body}");
    }

    // Remote tracks that do not exist: a batch answer, 200 with each item's errorCode and no
    // offer, when none does; an errorCode entry beside one that does.
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "nope"), remote(unknown, "video")]})),
        )
        .await?;
    ensure!(
        v["sessionDescription"].is_null() && v["requiresImmediateRenegotiation"] == json!(false),
        "only unknown remote tracks: {v}"
    );
    ensure!(
        v["tracks"].as_array().is_some_and(
            |t| t.len() == 2 && t.iter().all(|t| t["errorCode"] == "not_found_track_error")
        ),
        "only unknown remote tracks: {v}"
    );
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "video"), remote(&src, "nope")]})),
        )
        .await?;
    server_offer(&v)?;
    let tracks = v["tracks"].as_array().context("tracks")?;
    ensure!(tracks.len() == 2, "{v}");
    let bad = tracks
        .iter()
        .find(|t| t["trackName"] == "nope")
        .context("no entry for the unknown track")?;
    ensure!(
        bad["errorCode"] == "not_found_track_error",
        "unknown track without errorCode: {bad}"
    );
    ensure!(mid_of(&v, "video").is_ok(), "{v}");
    // An offer is pending now: more tracks or a close must wait for the answer.
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "audio")]})),
        )
        .await?;
    ensure!(
        status == 409,
        "tracks/new while an offer waits: {status} {body}"
    );

    // Renegotiate without a pending offer (a fresh empty session): 409.
    let id2 = api.new_empty_session().await?;
    let viewer = Peer::start("error viewer", catalog.clone(), None).await?;
    let (fake_offer, _) = viewer
        .make_offer(&[(MediaKind::Video, Direction::RecvOnly)])
        .await?;
    let answer_like = fake_offer.replace("a=recvonly", "a=sendonly");
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/{id2}/renegotiate"),
            Some(json!({"sessionDescription": {"type": "answer", "sdp": answer_like}})),
        )
        .await?;
    ensure!(
        status == 409,
        "renegotiate without a pending offer: {status} {body}"
    );

    // Bad requests: invalid JSON, wrong description type, missing tracks, unknown mid to close.
    let r = c
        .post(api.url(&format!("/{id2}/tracks/new")))
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"tracks\": [")
        .send()
        .await?;
    ensure!(r.status() == 400, "bad JSON: {}", r.status());
    let r = c
        .post(&new_url)
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .header(CONTENT_TYPE, "application/json")
        .body("not json")
        .send()
        .await?;
    ensure!(
        r.status() == 400,
        "bad JSON at sessions/new: {}",
        r.status()
    );
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/{id2}/renegotiate"),
            Some(json!({"sessionDescription": {"type": "offer", "sdp": fake_offer}})),
        )
        .await?;
    ensure!(status == 400, "renegotiate with an offer: {status} {body}");
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/{id2}/tracks/new"),
            Some(json!({"tracks": []})),
        )
        .await?;
    ensure!(status == 406, "empty tracks: {status} {body}");
    ensure!(
        body["errorCode"] == "invalid_params",
        "empty tracks: {body}"
    );
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/{id2}/tracks/close"),
            Some(json!({"tracks": [{"mid": "77"}]})),
        )
        .await?;
    ensure!(
        status == 200 && body["tracks"][0]["errorCode"] == "close_track_error",
        "closing an unknown mid: {status} {body}"
    );

    // DELETE: 200, gone from /v1/stats, then 404.
    let before = session_count(&gw.stats().await?);
    api.expect(200, Method::DELETE, &format!("/{id2}"), None)
        .await?;
    let after = session_count(&gw.stats().await?);
    ensure!(
        after + 1 == before,
        "sessions {before} → {after} after DELETE"
    );
    let (status, _) = api.call(Method::GET, &format!("/{id2}"), None).await?;
    ensure!(status == 404, "GET after DELETE: {status}");
    let (status, _) = api.call(Method::DELETE, &format!("/{id2}"), None).await?;
    ensure!(status == 404, "second DELETE: {status}");
    api.expect(200, Method::DELETE, &format!("/{id}"), None)
        .await?;
    ensure!(
        session_count(&gw.stats().await?) == 1,
        "only the publisher is left"
    );

    let _ = viewer.stop().await;
    publisher.stop().await?;
    Ok(())
}

/// Regression test for a gateway crash: the server offer of an empty session used to carry two
/// H264 Main formats (str0m's default 123 `4d001f` and an added 117 `4d401f`), which str0m ranks
/// as the same profile, so a client answering Main on one payload type made both lock it and
/// str0m's `update_params` panicked ("Pt locked multiple times: 117") inside the worker's
/// `accept_answer`, killing the worker and every session on it. Fixed twice over: only H264
/// formats str0m tells apart are configured (`640c1f` added), and each worker step runs under
/// `catch_unwind`. Here a str0m client with its default H264 set answers the server offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_offer_answered_with_default_h264_formats() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("src"))).await?;
    let src = publisher.session_id().context("no id")?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;

    let viewer = Peer::start_with("default-H264 viewer", catalog.clone(), None, true).await?;
    let id = api.new_empty_session().await?;
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "video"), remote(&src, "audio")]})),
        )
        .await?;
    let (vmid, amid) = (mid_of(&v, "video")?, mid_of(&v, "audio")?);
    let answer = viewer.accept_offer(&server_offer(&v)?).await?;
    let (status, body) = api
        .call(
            Method::PUT,
            &format!("/{id}/renegotiate"),
            Some(json!({"sessionDescription": {"type": "answer", "sdp": answer}})),
        )
        .await?;
    let panicked = gw
        .log_tail(20_000)
        .lines()
        .find(|l| l.contains("panicked"))
        .map(str::to_owned);
    ensure!(
        panicked.is_none(),
        "the gateway panicked on renegotiate ({status} {body}): {panicked:?}"
    );
    ensure!(status == 200, "renegotiate: {status} {body}");
    expect_media(&viewer, &vmid, &amid, 60, 50).await?;
    let _ = viewer.stop().await;
    publisher.stop().await?;
    Ok(())
}

/// `tracks/close` as Calls does it: a mid that names no track is reported in its item
/// (`close_track_error`) while the others close; `force: true` closes without any SDP; with the
/// client's own offer (its transceiver stopped) the answer comes back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_per_item_errors_force_and_client_offer() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("src"))).await?;
    let src = publisher.session_id().context("no id")?;
    publisher
        .wait_for_frames(1, Duration::from_secs(10))
        .await?;

    let (viewer, id, vmid, amid) = pull_video_and_audio(&api, catalog.clone(), &src).await?;

    // Only an unknown mid: 200, its item says why, nothing changes.
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/close"),
            Some(json!({"tracks": [{"mid": "nope"}], "force": true})),
        )
        .await?;
    ensure!(v["tracks"][0]["errorCode"] == "close_track_error", "{v}");
    ensure!(v["sessionDescription"].is_null(), "force: no SDP: {v}");
    let v0 = viewer.counts(&vmid).0;
    viewer
        .wait_for("video after closing nothing", Duration::from_secs(3), |p| {
            p.counts(&vmid).0 >= v0 + 15
        })
        .await?;

    // force: the video mid and an unknown one; video stops, audio goes on, no renegotiation.
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/close"),
            // Orange Meets' way of naming a transceiver: "#" + the track it carries.
            Some(json!({"tracks": [{"mid": "#video"}, {"mid": "nope"}], "force": true})),
        )
        .await?;
    ensure!(v["tracks"][0]["mid"] == json!(vmid), "{v}");
    ensure!(v["tracks"][0]["errorCode"].is_null(), "{v}");
    ensure!(v["tracks"][1]["errorCode"] == "close_track_error", "{v}");
    ensure!(v["requiresImmediateRenegotiation"] == json!(false), "{v}");
    ensure!(v["sessionDescription"].is_null(), "force: no SDP: {v}");
    viewer
        .wait_for("a video pause of 400 ms", Duration::from_secs(3), |p| {
            p.last_at(&vmid)
                .is_some_and(|t| t.elapsed() > Duration::from_millis(400))
        })
        .await?;
    let (v1, a1) = (viewer.counts(&vmid).0, viewer.counts(&amid).1);
    viewer
        .wait_for(
            "audio after the forced close",
            Duration::from_secs(3),
            |p| p.counts(&amid).1 >= a1 + 25,
        )
        .await?;
    ensure!(
        viewer.counts(&vmid).0 == v1,
        "video kept arriving after force"
    );

    // The client stops its audio transceiver and offers: we answer in the same call.
    let offer = viewer.stop_and_offer(&amid).await?;
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/close"),
            Some(json!({
                "tracks": [{"mid": amid}],
                "sessionDescription": {"type": "offer", "sdp": offer},
            })),
        )
        .await?;
    ensure!(v["requiresImmediateRenegotiation"] == json!(false), "{v}");
    ensure!(v["sessionDescription"]["type"] == "answer", "{v}");
    let answer = v["sessionDescription"]["sdp"]
        .as_str()
        .context("no answer sdp")?;
    viewer.accept_answer(answer).await?;
    viewer
        .wait_for("an audio pause of 400 ms", Duration::from_secs(3), |p| {
            p.last_at(&amid)
                .is_some_and(|t| t.elapsed() > Duration::from_millis(400))
        })
        .await?;
    // The session is still good for another pull.
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [remote(&src, "audio")]})),
        )
        .await?;
    let answer = viewer.accept_offer(&server_offer(&v)?).await?;
    api.renegotiate(&id, &answer).await?;

    let _ = viewer.stop().await;
    publisher.stop().await?;
    Ok(())
}

/// Calls' `GET …/sessions/{id}` lists pulled tracks with their source and `status`, and
/// `tracks/update` re-points a pulled m-line at another publisher's track without SDP: after the
/// first publisher leaves, video keeps coming on the same mid, from the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_session_lists_pulls_and_update_repoints_a_mid() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let first =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("first"))).await?;
    let second =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("second"))).await?;
    let (a, b) = (
        first.session_id().context("no id")?,
        second.session_id().context("no id")?,
    );
    first.wait_for_frames(1, Duration::from_secs(10)).await?;
    second.wait_for_frames(1, Duration::from_secs(10)).await?;

    let (viewer, id, vmid, amid) = pull_video_and_audio(&api, catalog.clone(), &a).await?;

    let v = api
        .expect(200, Method::GET, &format!("/{id}"), None)
        .await?;
    let pulled = |v: &Value, mid: &str| -> Option<Value> {
        v["tracks"]
            .as_array()?
            .iter()
            .find(|t| t["mid"] == mid && t["location"] == "remote")
            .cloned()
    };
    let video = pulled(&v, &vmid).with_context(|| format!("no pulled video in {v}"))?;
    ensure!(video["sessionId"] == json!(a), "{video}");
    ensure!(video["trackName"] == "video", "{video}");
    ensure!(video["status"] == "active", "{video}");
    ensure!(pulled(&v, &amid).is_some(), "no pulled audio in {v}");
    ensure!(v["dataChannels"].is_array(), "{v}");

    // Re-point the video mid at the second publisher; an unknown mid fails in its item only.
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/update"),
            Some(json!({"tracks": [
                {"location": "remote", "mid": vmid, "sessionId": b, "trackName": "video"},
                {"location": "remote", "mid": "zz", "sessionId": b, "trackName": "video"},
            ]})),
        )
        .await?;
    ensure!(v["tracks"][0]["errorCode"].is_null(), "{v}");
    ensure!(v["tracks"][1]["errorCode"] == "update_track_error", "{v}");
    ensure!(v["requiresImmediateRenegotiation"] == json!(false), "{v}");
    let v = api
        .expect(
            200,
            Method::PUT,
            &format!("/{id}/tracks/update"),
            Some(json!({"tracks": [
                {"location": "remote", "mid": amid, "sessionId": b, "trackName": "video"},
            ]})),
        )
        .await?;
    ensure!(
        v["tracks"][0]["errorCode"] == "update_track_error",
        "video onto the audio mid: {v}"
    );

    first.stop().await?;
    let v0 = viewer.counts(&vmid).0;
    viewer
        .wait_for(
            "video from the second publisher",
            Duration::from_secs(5),
            |p| p.counts(&vmid).0 >= v0 + 30,
        )
        .await?;
    let v = api
        .expect(200, Method::GET, &format!("/{id}"), None)
        .await?;
    let video = pulled(&v, &vmid).with_context(|| format!("no pulled video in {v}"))?;
    ensure!(video["sessionId"] == json!(b), "after the update: {video}");

    let _ = viewer.stop().await;
    second.stop().await?;
    Ok(())
}

/// Calls' `autoDiscover`: `tracks/new` with the client's offer and no track list pushes every
/// m-line the offer sends on, named by the sender's MediaStreamTrack id (`a=msid`); those names
/// can then be pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_discover_pushes_every_sent_track_by_its_msid() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let pusher = Peer::start(
        "pusher (autoDiscover)",
        catalog.clone(),
        Some(media.clone()),
    )
    .await?;
    let id = api.new_empty_session().await?;
    let (offer, mids) = pusher
        .make_offer(&[
            (MediaKind::Video, Direction::SendOnly),
            (MediaKind::Audio, Direction::SendOnly),
        ])
        .await?;
    // The offer's own word for each m-line's track: `a=msid:<stream> <track>` after `a=mid:`.
    let msid_of = |mid: &Mid| -> Option<String> {
        let section = offer
            .split("\r\nm=")
            .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))?;
        let line = section.lines().find_map(|l| l.strip_prefix("a=msid:"))?;
        line.split_whitespace().nth(1).map(str::to_owned)
    };
    let (video_name, audio_name) = (
        msid_of(&mids[0]).context("no msid for video")?,
        msid_of(&mids[1]).context("no msid for audio")?,
    );
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({
                "autoDiscover": true,
                "sessionDescription": {"type": "offer", "sdp": offer},
            })),
        )
        .await?;
    ensure!(v["sessionDescription"]["type"] == "answer", "{v}");
    ensure!(mid_of(&v, &video_name)? == mids[0].to_string(), "{v}");
    ensure!(mid_of(&v, &audio_name)? == mids[1].to_string(), "{v}");
    pusher
        .accept_answer(v["sessionDescription"]["sdp"].as_str().context("sdp")?)
        .await?;

    let viewer = Peer::start("viewer", catalog.clone(), None).await?;
    let vs = api.new_empty_session().await?;
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{vs}/tracks/new"),
            Some(json!({"tracks": [remote(&id, &video_name), remote(&id, &audio_name)]})),
        )
        .await?;
    let (vmid, amid) = (mid_of(&v, &video_name)?, mid_of(&v, &audio_name)?);
    let answer = viewer.accept_offer(&server_offer(&v)?).await?;
    api.renegotiate(&vs, &answer).await?;
    expect_media(&viewer, &vmid, &amid, 30, 25).await?;
    let _ = viewer.stop().await;
    let _ = pusher.stop().await;
    Ok(())
}

/// Calls' local tracks without the client's offer: `tracks/new` with `{location: local,
/// trackName, kind}` answers our offer (a recvonly m-line each, `requiresImmediateRenegotiation`);
/// the client answers with `renegotiate` and its tracks can be pulled by those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tracks_without_an_offer_get_our_offer() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let gw = start_gateway().await?;
    let api = Api::new(&gw)?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let pusher = Peer::start("pusher (our offer)", catalog.clone(), Some(media.clone())).await?;
    let id = api.new_empty_session().await?;
    let v = api
        .expect(
            200,
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [
                {"location": "local", "trackName": "cam", "kind": "video"},
                {"location": "local", "trackName": "mic", "kind": "audio"},
            ]})),
        )
        .await?;
    let offer = server_offer(&v)?;
    ensure!(
        mid_of(&v, "cam").is_ok() && mid_of(&v, "mic").is_ok(),
        "{v}"
    );
    let answer = pusher.accept_offer(&offer).await?;
    api.renegotiate(&id, &answer).await?;
    // Without a kind there is nothing to offer.
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/{id}/tracks/new"),
            Some(json!({"tracks": [{"location": "local", "trackName": "x"}]})),
        )
        .await?;
    ensure!(
        status == 406 && body["errorCode"] == "invalid_params",
        "{status} {body}"
    );

    let (viewer, _, _, _) =
        pull_video_and_audio_named(&api, catalog.clone(), &id, "cam", "mic").await?;
    let _ = viewer.stop().await;
    let _ = pusher.stop().await;
    Ok(())
}
