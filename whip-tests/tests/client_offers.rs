//! The gateway against the offers real clients send: OBS 30–32 (libdatachannel), FFmpeg 8's WHIP
//! muxer, GStreamer's whipclientsink (webrtcbin), and the browsers (Chrome, Firefox, Safari)
//! publishing from the gateway's page or playing from a player. The offers are fixtures in
//! `fixtures/offers/*.sdp`, written the way each client emits them (CRLF, attribute order,
//! candidates or none, mDNS, `a=bundle-only`, simulcast rids…); fingerprints and ICE credentials
//! are made up but well formed.
//!
//! Signalling only: nothing connects, so each check is about the answer the client would get:
//! every media m-line accepted with the right direction, a payload type the client offered and of
//! the right codec, BUNDLE + rtcp-mux, a DTLS role the client can live with, a first candidate
//! FFmpeg can use, simulcast layers OBS counts. WHEP offers play a stream that a fixture
//! publisher registered by POSTing its offer.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use reqwest::header::CONTENT_TYPE;
use whip_tests::Gateway;
use whip_tests::signaling::http_client;

// ---------------------------------------------------------------------------------------------
// Fixtures and HTTP

fn fixture(name: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/offers")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // No client sends an empty line (str0m stops parsing at one), so a fixture must not either.
    ensure!(
        !text.lines().any(|l| l.trim_end_matches('\r').is_empty()),
        "{name} has an empty line"
    );
    // The clients send CRLF. Keep it that way even if a checkout turned the files into LF.
    if text.contains("\r\n") {
        return Ok(text);
    }
    Ok(text.lines().map(|l| format!("{l}\r\n")).collect())
}

async fn start_gateway() -> Result<Gateway> {
    tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")?
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

async fn post(url: &str, sdp: &str) -> Result<Reply> {
    let resp = http_client()?
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.text().await.context("reading the body")?;
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// POST an offer that must be answered with 201 and an SDP.
async fn post_created(url: &str, sdp: &str) -> Result<Sdp> {
    let reply = post(url, sdp).await?;
    ensure!(
        reply.status == 201,
        "POST {url}: HTTP {} (expected 201): {}",
        reply.status,
        reply.body
    );
    ensure!(
        reply.content_type.starts_with("application/sdp"),
        "answer Content-Type {:?}",
        reply.content_type
    );
    ensure!(
        reply.body.contains("\r\n") && !reply.body.replace("\r\n", "").contains('\n'),
        "the answer must use CRLF line ends"
    );
    Ok(Sdp::parse(&reply.body))
}

// ---------------------------------------------------------------------------------------------
// A small SDP reader for offers and answers (the checks need more than the gateway's own view).

#[derive(Debug, Clone)]
struct Codec {
    name: String,
    clock: u32,
    fmtp: String,
}

impl Codec {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn param(&self, key: &str) -> Option<String> {
        self.fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_ascii_lowercase())
        })
    }

    /// H264 profile-level-id, lower case (every client here signals it).
    fn profile_level_id(&self) -> Option<String> {
        self.param("profile-level-id")
    }

    fn packetization_mode(&self) -> u8 {
        self.param("packetization-mode")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn is_helper(&self) -> bool {
        [
            "rtx",
            "red",
            "ulpfec",
            "flexfec-03",
            "cn",
            "telephone-event",
        ]
        .iter()
        .any(|n| self.is(n))
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.clock)?;
        if !self.fmtp.is_empty() {
            write!(f, " [{}]", self.fmtp)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct Media {
    kind: String,
    port: u16,
    proto: String,
    /// Payload types (or `webrtc-datachannel`) in m-line order.
    fmts: Vec<String>,
    attrs: Vec<String>,
    codecs: HashMap<u8, Codec>,
}

impl Media {
    fn is_media(&self) -> bool {
        self.kind == "audio" || self.kind == "video"
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|a| {
            let a = a.as_str();
            if a == name {
                Some("")
            } else {
                a.strip_prefix(name)?.strip_prefix(':')
            }
        })
    }

    fn attrs_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs
            .iter()
            .filter_map(move |a| a.strip_prefix(name)?.strip_prefix(':'))
    }

    fn has(&self, flag: &str) -> bool {
        self.attrs.iter().any(|a| a == flag)
    }

    fn mid(&self) -> Option<&str> {
        self.attr("mid")
    }

    fn direction(&self, session: &[String]) -> &'static str {
        for d in ["sendrecv", "sendonly", "recvonly", "inactive"] {
            if self.has(d) {
                return d;
            }
        }
        for d in ["sendrecv", "sendonly", "recvonly", "inactive"] {
            if session.iter().any(|a| a == d) {
                return d;
            }
        }
        "sendrecv"
    }

    /// Offered port 0 without `a=bundle-only` = the offerer does not want this m-line.
    fn offered_disabled(&self) -> bool {
        self.port == 0 && !self.has("bundle-only")
    }

    fn pts(&self) -> Vec<u8> {
        self.fmts.iter().filter_map(|f| f.parse().ok()).collect()
    }

    /// The first payload type that is a real codec (not RTX/RED/FEC/CN/DTMF): what a sender
    /// uses when it follows the answer's preference.
    fn primary(&self) -> Option<(u8, &Codec)> {
        self.pts()
            .into_iter()
            .filter_map(|pt| Some((pt, self.codecs.get(&pt)?)))
            .find(|(_, c)| !c.is_helper())
    }

    fn rids(&self) -> Vec<(String, String)> {
        self.attrs_named("rid")
            .filter_map(|r| {
                let mut f = r.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }
}

#[derive(Debug, Default, Clone)]
struct Sdp {
    text: String,
    session: Vec<String>,
    media: Vec<Media>,
}

impl Sdp {
    fn parse(text: &str) -> Sdp {
        let mut sdp = Sdp {
            text: text.to_string(),
            ..Sdp::default()
        };
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(m) = line.strip_prefix("m=") {
                let f: Vec<&str> = m.split(' ').collect();
                sdp.media.push(Media {
                    kind: f.first().copied().unwrap_or_default().to_string(),
                    port: f
                        .get(1)
                        .and_then(|p| p.split('/').next()?.parse().ok())
                        .unwrap_or(0),
                    proto: f.get(2).copied().unwrap_or_default().to_string(),
                    fmts: f.iter().skip(3).map(|s| s.to_string()).collect(),
                    ..Media::default()
                });
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let attr = attr.trim_end().to_string();
            match sdp.media.last_mut() {
                None => sdp.session.push(attr),
                Some(m) => {
                    if let Some(v) = attr.strip_prefix("rtpmap:") {
                        if let Some((pt, enc)) = v.split_once(' ')
                            && let Ok(pt) = pt.parse::<u8>()
                        {
                            let mut e = enc.split('/');
                            let c = m.codecs.entry(pt).or_insert(Codec {
                                name: String::new(),
                                clock: 0,
                                fmtp: String::new(),
                            });
                            c.name = e.next().unwrap_or_default().to_string();
                            c.clock = e.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                        }
                    } else if let Some(v) = attr.strip_prefix("fmtp:")
                        && let Some((pt, params)) = v.split_once(' ')
                        && let Ok(pt) = pt.parse::<u8>()
                    {
                        m.codecs
                            .entry(pt)
                            .or_insert(Codec {
                                name: String::new(),
                                clock: 0,
                                fmtp: String::new(),
                            })
                            .fmtp = params.trim().to_string();
                    }
                    m.attrs.push(attr);
                }
            }
        }
        sdp
    }

    fn session_attr(&self, name: &str) -> Option<&str> {
        self.session
            .iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix(':'))
    }

    fn bundle(&self) -> Vec<String> {
        self.session
            .iter()
            .find_map(|a| a.strip_prefix("group:BUNDLE"))
            .map(|m| m.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// `a=setup` of the first m-line that has one, else the session's.
    fn setup(&self) -> Option<&str> {
        self.media
            .iter()
            .find_map(|m| m.attr("setup"))
            .or_else(|| self.session_attr("setup"))
    }

    fn candidates(&self) -> Vec<&str> {
        self.session
            .iter()
            .chain(self.media.iter().flat_map(|m| m.attrs.iter()))
            .filter_map(|a| a.strip_prefix("candidate:"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Checks shared by WHIP and WHEP answers

/// One `a=candidate` value: (transport, address, type).
fn candidate_fields(c: &str) -> Option<(String, String, String)> {
    let f: Vec<&str> = c.split_whitespace().collect();
    let typ = f
        .iter()
        .position(|x| *x == "typ")
        .and_then(|i| f.get(i + 1))?;
    Some((
        f.get(2)?.to_ascii_lowercase(),
        f.get(4)?.to_string(),
        typ.to_string(),
    ))
}

/// Things every answer must get right, whatever the client. `answer_dir` is the direction the
/// gateway must use on the media m-lines it accepts.
fn check_common(offer: &Sdp, answer: &Sdp, answer_dir: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if answer.media.len() != offer.media.len() {
        errors.push(format!(
            "the answer has {} m-lines, the offer {}",
            answer.media.len(),
            offer.media.len()
        ));
        return errors;
    }
    let bundle = answer.bundle();
    if bundle.is_empty() {
        errors.push("no a=group:BUNDLE in the answer".into());
    }
    for (i, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        let what = format!("m-line {i} ({} mid {:?})", o.kind, o.mid());
        if a.kind != o.kind || a.mid() != o.mid() {
            errors.push(format!("{what}: answered as {} mid {:?}", a.kind, a.mid()));
            continue;
        }
        if o.offered_disabled() {
            if a.port != 0 {
                errors.push(format!("{what}: disabled in the offer but accepted"));
            }
            continue;
        }
        if !o.is_media() {
            // A data channel may be accepted or refused; it only must not break the rest.
            continue;
        }
        if a.port == 0 {
            errors.push(format!("{what}: rejected (port 0)"));
            continue;
        }
        if a.proto != o.proto {
            errors.push(format!(
                "{what}: protocol {} answered to {}",
                a.proto, o.proto
            ));
        }
        let dir = a.direction(&answer.session);
        if dir != answer_dir {
            errors.push(format!("{what}: direction {dir}, expected {answer_dir}"));
        }
        if !a.has("rtcp-mux") {
            errors.push(format!("{what}: no a=rtcp-mux"));
        }
        if !bundle.iter().any(|m| Some(m.as_str()) == a.mid()) {
            errors.push(format!(
                "{what}: not in the answer's BUNDLE group {bundle:?}"
            ));
        }
        if a.attr("ice-ufrag").is_none() && answer.session_attr("ice-ufrag").is_none() {
            errors.push(format!("{what}: no ice-ufrag"));
        }
        let offered = o.pts();
        for pt in a.pts() {
            if !offered.contains(&pt) {
                errors.push(format!("{what}: payload type {pt} was never offered"));
                continue;
            }
            // The codec behind each answered PT must be the one the client gave it.
            if let (Some(ac), Some(oc)) = (a.codecs.get(&pt), o.codecs.get(&pt))
                && (!ac.name.eq_ignore_ascii_case(&oc.name) || ac.clock != oc.clock)
            {
                errors.push(format!("{what}: PT {pt} answered as {ac}, offered as {oc}"));
            }
        }
        match a.primary() {
            None => errors.push(format!("{what}: no codec in the answer")),
            Some((pt, c)) => {
                if let Some(oc) = o.codecs.get(&pt)
                    && (c.is("H264") || oc.is("H264"))
                    && (c.profile_level_id() != oc.profile_level_id()
                        || c.packetization_mode() != oc.packetization_mode())
                {
                    errors.push(format!(
                        "{what}: H264 PT {pt} answered as {c}, offered as {oc}"
                    ));
                }
            }
        }
    }
    // DTLS role: the answerer never says actpass; an offerer that is passive (FFmpeg) needs us
    // active.
    match (offer.setup(), answer.setup()) {
        (_, None) => errors.push("no a=setup in the answer".into()),
        (_, Some("actpass")) => errors.push("a=setup:actpass in an answer".into()),
        (Some("passive"), Some(s)) if s != "active" => {
            errors.push(format!("offer is setup:passive, answer says setup:{s}"))
        }
        (Some("active"), Some(s)) if s != "passive" => {
            errors.push(format!("offer is setup:active, answer says setup:{s}"))
        }
        (_, Some(s)) if s != "active" && s != "passive" => {
            errors.push(format!("answer says setup:{s}"))
        }
        _ => {}
    }
    let fingerprint = answer
        .media
        .iter()
        .find_map(|m| m.attr("fingerprint"))
        .or_else(|| answer.session_attr("fingerprint"));
    match fingerprint.and_then(|f| f.split_once(' ')) {
        Some((alg, hex)) if alg.eq_ignore_ascii_case("sha-256") && hex.split(':').count() == 32 => {
        }
        other => errors.push(format!("answer fingerprint {other:?}, expected sha-256")),
    }
    // The first candidate is the one FFmpeg uses (and the only one it parses).
    let candidates = answer.candidates();
    match candidates.first().and_then(|c| candidate_fields(c)) {
        None => errors.push("the answer has no usable a=candidate".into()),
        Some((transport, addr, typ)) => {
            if transport != "udp" || typ != "host" || addr.parse::<Ipv4Addr>().is_err() {
                errors.push(format!(
                    "first candidate is {transport} {addr} typ {typ}, expected an IPv4 UDP host"
                ));
            }
        }
    }
    if answer.text.contains(".local") {
        errors.push("the answer mentions an mDNS (.local) name".into());
    }
    errors
}

fn report(name: &str, answer: &Sdp, errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    bail!(
        "{name}: {} deviation(s):\n  - {}\n--- answer ---\n{}",
        errors.len(),
        errors.join("\n  - "),
        answer.text
    )
}

// ---------------------------------------------------------------------------------------------
// WHIP

/// What the answer's video codec must be.
enum Video {
    /// Exactly this PT (OBS, FFmpeg: they send on the one PT they offered).
    Pt(u8),
    /// An H264 PT with this profile-level-id (Safari: its first, High profile).
    H264(&'static str),
    /// The first real codec of the offer (browsers and GStreamer list several, in order of
    /// preference, and send the first one the answer lists).
    First,
}

async fn whip_case(gw: &Gateway, fixture_name: &str, stream: &str, video: Video) -> Result<Sdp> {
    let offer_text = fixture(fixture_name)?;
    let offer = Sdp::parse(&offer_text);
    let answer = post_created(&gw.whip_url(stream), &offer_text)
        .await
        .with_context(|| format!("{fixture_name}: publishing"))?;
    let mut errors = check_common(&offer, &answer, "recvonly");
    if errors.is_empty() {
        for (o, a) in offer.media.iter().zip(&answer.media) {
            let Some((pt, codec)) = a.primary() else {
                continue;
            };
            if o.kind == "audio" && !codec.is("opus") {
                errors.push(format!("audio answered with {codec}, expected Opus"));
            }
            if o.kind != "video" {
                continue;
            }
            match video {
                Video::Pt(want) if pt != want => errors.push(format!(
                    "video answered with PT {pt} ({codec}), expected PT {want}"
                )),
                Video::H264(plid)
                    if !(codec.is("H264") && codec.profile_level_id().as_deref() == Some(plid)) =>
                {
                    errors.push(format!(
                        "video answered with PT {pt} ({codec}), expected H264 {plid}"
                    ))
                }
                Video::First => {
                    if let Some((want, wc)) = o.primary()
                        && want != pt
                    {
                        errors.push(format!(
                            "video answered with PT {pt} ({codec}), the client prefers PT {want} ({wc})"
                        ));
                    }
                }
                _ => {}
            }
            // One codec per m-line (plus its RTX): what the publisher sends is then known, and a
            // viewer is never offered a codec the publisher does not use.
            let real: Vec<u8> = a
                .pts()
                .into_iter()
                .filter(|p| a.codecs.get(p).is_some_and(|c| !c.is_helper()))
                .collect();
            if real.len() != 1 {
                errors.push(format!(
                    "video answer lists {} codecs: {real:?}",
                    real.len()
                ));
            }
            // Simulcast: every offered send rid comes back as recv, in the a=simulcast line too
            // (OBS counts the layers and fails on fewer).
            if let Some(sim) = o.attr("simulcast") {
                let sent: Vec<String> = o
                    .rids()
                    .into_iter()
                    .filter(|(_, d)| d == "send")
                    .map(|(r, _)| r)
                    .collect();
                let got: Vec<String> = a
                    .rids()
                    .into_iter()
                    .filter(|(_, d)| d == "recv")
                    .map(|(r, _)| r)
                    .collect();
                if got != sent {
                    errors.push(format!(
                        "offer rids {sent:?} (send), answer a=rid recv {got:?}"
                    ));
                }
                let want = sim.replacen("send", "recv", 1);
                match a.attr("simulcast") {
                    Some(s) if s.trim() == want.trim() => {}
                    other => errors.push(format!(
                        "offer a=simulcast:{sim}, answer a=simulcast:{other:?} (expected {want})"
                    )),
                }
            }
        }
    }
    report(fixture_name, &answer, errors)?;
    Ok(answer)
}

/// One gateway per client keeps failures independent; each test is signalling only.
async fn whip_alone(fixture_name: &str, video: Video) -> Result<()> {
    let gw = start_gateway().await?;
    whip_case(&gw, fixture_name, "live", video).await?;
    Ok(())
}

#[tokio::test]
async fn obs30_h264() -> Result<()> {
    whip_alone("obs30-h264.sdp", Video::Pt(96)).await
}

#[tokio::test]
async fn obs31_h265() -> Result<()> {
    whip_alone("obs31-h265.sdp", Video::Pt(96)).await
}

#[tokio::test]
async fn obs31_av1() -> Result<()> {
    whip_alone("obs31-av1.sdp", Video::Pt(96)).await
}

#[tokio::test]
async fn obs32_simulcast() -> Result<()> {
    whip_alone("obs32-simulcast-h264.sdp", Video::Pt(96)).await
}

#[tokio::test]
async fn ffmpeg8_passive_setup() -> Result<()> {
    whip_alone("ffmpeg8-h264-opus.sdp", Video::Pt(106)).await
}

#[tokio::test]
async fn ffmpeg81_with_rtx() -> Result<()> {
    whip_alone("ffmpeg81-h264-rtx.sdp", Video::Pt(106)).await
}

#[tokio::test]
async fn gstreamer_whipclientsink_max_bundle() -> Result<()> {
    whip_alone("gstreamer-whipclientsink.sdp", Video::First).await
}

/// simple-whip-client (webrtcbin) with only a video pipeline: one m-line and no
/// `a=group:BUNDLE`, which str0m alone would refuse (captured live; gstreamer_live.rs publishes
/// this way too).
#[tokio::test]
async fn gstreamer_single_mline_without_bundle_group() -> Result<()> {
    whip_alone("gstreamer-simple-whip-client-video-only.sdp", Video::First).await
}

#[tokio::test]
async fn chrome_publish_page() -> Result<()> {
    whip_alone("chrome-publish.sdp", Video::First).await
}

#[tokio::test]
async fn firefox_publish_page_max_bundle() -> Result<()> {
    whip_alone("firefox-publish.sdp", Video::First).await
}

#[tokio::test]
async fn safari_publish_page_h264_high() -> Result<()> {
    whip_alone("safari-publish.sdp", Video::H264("640c1f")).await
}

// ---------------------------------------------------------------------------------------------
// WHEP

/// The publisher's negotiated video codec, from its answer.
fn published_video(answer: &Sdp) -> Option<Codec> {
    answer
        .media
        .iter()
        .find(|m| m.kind == "video" && m.port != 0)
        .and_then(|m| m.primary())
        .map(|(_, c)| c.clone())
}

/// Whether a viewer codec carries what the publisher sends.
fn same_codec(viewer: &Codec, publisher: &Codec) -> bool {
    if !viewer.name.eq_ignore_ascii_case(&publisher.name) || viewer.clock != publisher.clock {
        return false;
    }
    if publisher.is("H264") {
        // Same profile (profile_idc + constraint flags); the level may differ.
        let p = |c: &Codec| {
            c.profile_level_id()
                .map(|s| s.chars().take(4).collect::<String>())
        };
        return p(viewer) == p(publisher)
            && viewer.packetization_mode() == publisher.packetization_mode();
    }
    true
}

async fn whep_case(gw: &Gateway, stream: &str, publisher: &Sdp, fixture_name: &str) -> Result<Sdp> {
    let offer_text = fixture(fixture_name)?;
    let offer = Sdp::parse(&offer_text);
    let answer = post_created(&gw.whep_url(stream), &offer_text)
        .await
        .with_context(|| format!("{fixture_name}: playing"))?;
    let mut errors = check_common(&offer, &answer, "sendonly");
    let want_video = published_video(publisher).context("the publisher has no video")?;
    for (o, a) in offer.media.iter().zip(&answer.media) {
        if a.port == 0 || !o.is_media() {
            continue;
        }
        let Some((pt, codec)) = a.primary() else {
            continue;
        };
        if o.kind == "video" && !same_codec(codec, &want_video) {
            errors.push(format!(
                "video answered with PT {pt} ({codec}); the publisher sends {want_video}"
            ));
        }
        if o.kind == "audio" && !codec.is("opus") {
            errors.push(format!(
                "audio answered with PT {pt} ({codec}), expected Opus"
            ));
        }
    }
    report(fixture_name, &answer, errors)?;
    Ok(answer)
}

/// A gateway with `publisher_fixture` publishing on stream "live"; returns its answer.
async fn with_publisher(publisher_fixture: &str) -> Result<(Gateway, Sdp)> {
    let gw = start_gateway().await?;
    let offer = fixture(publisher_fixture)?;
    let answer = post_created(&gw.whip_url("live"), &offer)
        .await
        .with_context(|| format!("publishing {publisher_fixture}"))?;
    Ok((gw, answer))
}

#[tokio::test]
async fn whep_chrome_recvonly_obs_h264() -> Result<()> {
    let (gw, publisher) = with_publisher("obs30-h264.sdp").await?;
    whep_case(&gw, "live", &publisher, "chrome-whep-recvonly.sdp").await?;
    Ok(())
}

#[tokio::test]
async fn whep_firefox_recvonly_obs_h264() -> Result<()> {
    let (gw, publisher) = with_publisher("obs30-h264.sdp").await?;
    whep_case(&gw, "live", &publisher, "firefox-whep-recvonly.sdp").await?;
    Ok(())
}

#[tokio::test]
async fn whep_player_with_data_channel() -> Result<()> {
    let (gw, publisher) = with_publisher("obs30-h264.sdp").await?;
    let answer = whep_case(&gw, "live", &publisher, "player-whep-datachannel.sdp").await?;
    // The data channel m-line: accepted or cleanly refused, and not in BUNDLE when refused.
    let app = answer
        .media
        .iter()
        .find(|m| m.kind == "application")
        .context("no application m-line in the answer")?;
    if app.port == 0 {
        let mid = app.mid().unwrap_or_default();
        ensure!(
            !answer.bundle().iter().any(|m| m == mid),
            "refused data channel mid {mid} is still in BUNDLE {:?}",
            answer.bundle()
        );
    }
    Ok(())
}

#[tokio::test]
async fn whep_chrome_plays_chrome_publisher() -> Result<()> {
    let (gw, publisher) = with_publisher("chrome-publish.sdp").await?;
    whep_case(&gw, "live", &publisher, "chrome-whep-recvonly.sdp").await?;
    Ok(())
}

#[tokio::test]
async fn whep_chrome_plays_safari_high_profile() -> Result<()> {
    let (gw, publisher) = with_publisher("safari-publish.sdp").await?;
    whep_case(&gw, "live", &publisher, "chrome-whep-recvonly.sdp").await?;
    Ok(())
}

/// The player offers none of the stream's codecs for a media kind it wants: the WHEP draft's
/// counter-offer, 406 with our SDP offer carrying `codec` (the player may take it or leave it;
/// never a partial answer of ours).
async fn expect_counter_offer(
    publisher_fixture: &str,
    player_fixture: &str,
    codec: &str,
) -> Result<()> {
    let (gw, _publisher) = with_publisher(publisher_fixture).await?;
    let reply = post(&gw.whep_url("live"), &fixture(player_fixture)?).await?;
    ensure!(
        reply.status == 406,
        "{player_fixture} vs {publisher_fixture}: HTTP {} (expected a 406 counter-offer):\n{}",
        reply.status,
        reply.body
    );
    ensure!(
        reply.content_type.starts_with("application/sdp"),
        "406 with Content-Type {:?}",
        reply.content_type
    );
    ensure!(
        reply.body.contains("a=sendonly") && reply.body.contains(codec),
        "the counter-offer does not send {codec}:\n{}",
        reply.body
    );
    Ok(())
}

#[tokio::test]
async fn whep_vp8_only_player_vs_h264_publisher_gets_a_counter_offer() -> Result<()> {
    expect_counter_offer("obs30-h264.sdp", "pion-whep-vp8-only.sdp", "H264/90000").await
}

/// Firefox without the OpenH264 plugin offers audio + VP8/VP9 only. Against an H264 stream the
/// video cannot be carried as offered; a partial (audio-only) answer would leave a black player,
/// so the player gets our offer (H264) to take or leave.
#[tokio::test]
async fn whep_firefox_without_openh264_vs_h264_publisher_gets_a_counter_offer() -> Result<()> {
    expect_counter_offer(
        "obs30-h264.sdp",
        "firefox-whep-no-openh264.sdp",
        "H264/90000",
    )
    .await
}

/// Safari publishes H264 Constrained High; Firefox offers only Constrained Baseline.
#[tokio::test]
async fn whep_firefox_vs_safari_high_profile_gets_a_counter_offer() -> Result<()> {
    expect_counter_offer(
        "safari-publish.sdp",
        "firefox-whep-recvonly.sdp",
        "H264/90000",
    )
    .await
}

#[tokio::test]
async fn whep_chrome_plays_obs_av1() -> Result<()> {
    let (gw, publisher) = with_publisher("obs31-av1.sdp").await?;
    whep_case(&gw, "live", &publisher, "chrome-whep-recvonly.sdp").await?;
    Ok(())
}

/// OBS HEVC to a browser that offers no H265 (this Chrome fixture, Firefox): a counter-offer of
/// H265, not a black player.
#[tokio::test]
async fn whep_firefox_vs_obs_h265_gets_a_counter_offer() -> Result<()> {
    expect_counter_offer("obs31-h265.sdp", "firefox-whep-recvonly.sdp", "H265/90000").await
}

/// Players commonly do `video.srcObject = event.streams[0]` in `ontrack` (MediaMTX's reader and
/// most WHEP samples). That only works when the answer puts audio and video into one
/// MediaStream (one `a=msid` stream id); with two, the last track event (audio) replaces the
/// video. A recvonly offer carries no msid, so str0m gives each m-line a random stream id.
#[tokio::test]
async fn whep_answer_puts_audio_and_video_in_one_stream() -> Result<()> {
    let (gw, publisher) = with_publisher("obs30-h264.sdp").await?;
    let answer = whep_case(&gw, "live", &publisher, "chrome-whep-recvonly.sdp").await?;
    let streams: Vec<&str> = answer
        .media
        .iter()
        .filter(|m| m.is_media() && m.port != 0)
        .filter_map(|m| m.attr("msid")?.split_whitespace().next())
        .collect();
    ensure!(streams.len() == 2, "a=msid missing: {streams:?}");
    ensure!(
        streams[0] == streams[1],
        "audio and video are in different streams: {streams:?}"
    );
    Ok(())
}
