//! Building one str0m `Rtc` per session from a client's offer: RTP mode (we forward packets, never
//! frames), ICE-lite with preset credentials (so the UDP shell can route the first STUN by ufrag),
//! one DTLS certificate and crypto provider for the whole node (made once at start-up instead of
//! once per peer; the provider's DTLS configuration, with dimpl's crypto self-test, once per
//! process: `cached_dtls`), and host candidates for every configured address.

pub mod cached_dtls;
pub mod dtls_outcome;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, CodecSpec, PayloadParams};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::TcpType;
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

use crate::config::Config;
use crate::ids::random_token;
use crate::refusal::Refusal;
use crate::registry::TrackInfo;
use crate::sdp_info::{self, Direction, MLine};

/// A negotiated peer, ready to be handed to a worker.
pub struct NewPeer {
    /// str0m's state for the session, with the offer applied.
    pub rtc: Rtc,
    /// Our SDP answer.
    pub answer: String,
    /// Our ICE credentials: the UDP demux routes STUN by the ufrag and checks it with the pwd.
    pub ice: IceCreds,
    /// The answer's m-lines (mid, kind) that carry media.
    pub media: Vec<(Mid, MediaKind)>,
    /// The viewer has no RTX: we answer its NACKs ourselves, resending on the media SSRC.
    pub same_ssrc_repair: bool,
    /// Where the DTLS handshake's outcome appears (what another gateway needs to resume it).
    pub dtls: dtls_outcome::OutcomeSlot,
}

/// What a session resumed from another gateway keeps: its ICE credentials (the client checks
/// with them) and its DTLS outcome (the client will not shake hands again), if it has one.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Our side's ICE credentials, as the first gateway answered them.
    pub ice: IceCreds,
    /// The handshake the client did with the first gateway; None when it has not shaken hands
    /// yet (the session is adopted: this gateway does the handshake, with the same
    /// certificate).
    pub dtls: Option<dtls_outcome::DtlsOutcome>,
}

/// Fresh local ICE credentials, from the OS CSPRNG: a 16-character ufrag (~95 bits) and a
/// 32-character password (~190 bits) over 62 symbols. Used for new sessions and ICE restarts.
/// In a cluster the ufrag is an owner tag instead (`owner_tag`), so that a gateway that gets the
/// session's first STUN knows where the session is.
pub fn local_ice_creds() -> IceCreds {
    IceCreds {
        ufrag: match crate::owner_tag::installed() {
            Some(one) => one.tags.ufrag(),
            None => random_token(16),
        },
        pass: random_token(32),
    }
}

/// Node-wide ingredients shared by every `Rtc`.
pub struct PeerFactory {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
    candidates: Vec<SocketAddr>,
    /// The ICE-TCP listener's port: each candidate address gets a passive TCP candidate too.
    ice_tcp_port: Option<u16>,
}

/// Largest offer m-line count we negotiate; real clients send 2 (3 with a data channel).
const MAX_MLINES: usize = 16;

impl PeerFactory {
    /// A factory with a fresh DTLS certificate, advertising host candidates on `udp_local`'s port.
    pub fn new(config: &Config, udp_local: SocketAddr) -> Result<Self, String> {
        let provider = cached_dtls::crypto_provider();
        let cert = match (&config.dtls_cert, &config.dtls_key) {
            (Some(cert), Some(key)) => crate::dtls_cert::load(cert, key)?,
            _ => provider
                .dtls_provider
                .generate_certificate()
                .ok_or("the crypto provider cannot generate a DTLS certificate")?,
        };
        let candidates = candidate_addrs(config, udp_local);
        if candidates.is_empty() {
            return Err("no usable host candidate address; pass --candidate-ip".into());
        }
        Ok(PeerFactory {
            provider: Arc::new(provider),
            cert,
            candidates,
            ice_tcp_port: None,
        })
    }

    /// Offer passive ICE-TCP candidates on `port` (RFC 6544) beside the UDP ones.
    pub fn with_ice_tcp(mut self, port: u16) -> Self {
        self.ice_tcp_port = Some(port);
        self
    }

    /// The host candidate addresses every session advertises.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    fn base(&self, resume: Option<&Resume>) -> (RtcConfig, IceCreds) {
        let creds = resume.map_or_else(local_ice_creds, |r| r.ice.clone());
        let ice = creds.clone();
        let config = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(self.cert.clone())
            .set_local_ice_credentials(creds)
            // Once a second: NACK totals of viewers str0m repairs itself (`nacks_rtx`).
            .set_stats_interval(Some(Duration::from_secs(1)));
        (config, ice)
    }

    fn finish(
        &self,
        config: RtcConfig,
        now: Instant,
        offer: SdpOffer,
        ice: IceCreds,
        resume: Option<&Resume>,
    ) -> Result<NewPeer, Refusal> {
        let (mut rtc, dtls) = dtls_outcome::build(config, now, resume.and_then(|r| r.dtls.clone()));
        self.add_candidates(&mut rtc);
        let (answer, media) = answer_offer(&mut rtc, offer)?;
        Ok(NewPeer {
            rtc,
            answer,
            ice,
            media,
            same_ssrc_repair: false,
            dtls,
        })
    }

    /// Every session's local candidates: a UDP host candidate per address, then (ICE-TCP) a
    /// passive TCP one per address at str0m's lower TCP priority, so a client that can use UDP
    /// does.
    pub fn local_candidates(&self) -> Vec<Candidate> {
        let udp = self
            .candidates
            .iter()
            .filter_map(|a| Candidate::host(*a, "udp").ok());
        let tcp = self.ice_tcp_port.iter().flat_map(|port| {
            self.candidates.iter().filter_map(move |a| {
                Candidate::builder()
                    .tcp()
                    .host(SocketAddr::new(a.ip(), *port))
                    .tcptype(TcpType::Passive)
                    .build()
                    .ok()
            })
        });
        udp.chain(tcp).collect()
    }

    fn add_candidates(&self, rtc: &mut Rtc) {
        for c in self.local_candidates() {
            rtc.add_local_candidate(c);
        }
    }

    /// A viewer session that makes the offer itself (the WHEP counter-offer): only the codecs
    /// of `tracks`.
    pub fn offering_viewer(&self, tracks: &[Arc<TrackInfo>], now: Instant) -> (Rtc, IceCreds) {
        let (mut config, ice) = self.base(None);
        viewer_codecs(&mut config, tracks);
        let mut rtc = config.build(now);
        self.add_candidates(&mut rtc);
        (rtc, ice)
    }

    /// A session with nothing negotiated yet (the session/track API creates these); it can
    /// push and pull any codec str0m knows.
    pub fn empty(&self, now: Instant) -> (Rtc, IceCreds) {
        let (mut config, ice) = self.base(None);
        add_publisher_codecs(&mut config);
        let mut rtc = config.build(now);
        self.add_candidates(&mut rtc);
        (rtc, ice)
    }

    /// A publisher (WHIP, or pushing tracks through the API): every media m-line must send, and
    /// every one must be accepted — a partial answer would leave the encoder sending into nothing.
    pub fn publisher(&self, offer_sdp: &str, now: Instant) -> Result<NewPeer, Refusal> {
        self.publisher_resumed(offer_sdp, now, None)
    }

    /// A publisher, resumed from another gateway when `resume` is given (`resume.rs`).
    pub fn publisher_resumed(
        &self,
        offer_sdp: &str,
        now: Instant,
        resume: Option<&Resume>,
    ) -> Result<NewPeer, Refusal> {
        let offer = parse_offer(offer_sdp)?;
        let lines = check_offer(offer_sdp)?;
        if let Some(m) = lines.iter().find(|m| {
            m.is_media()
                && !m.rejected()
                && matches!(m.direction, Direction::RecvOnly | Direction::Inactive)
        }) {
            return Err(Refusal::unprocessable(format!(
                "the {} m-line does not send; a publisher's offer must be sendonly",
                m.kind
            )));
        }
        // Answer one codec per m-line, the client's first choice among those we can forward:
        // a client sends the first codec of the answer, and viewers are offered exactly what
        // the publisher negotiated, so a longer list would let a viewer pick a codec the
        // publisher never sends (browsers and GStreamer offer several).
        let chosen = self.publisher_codecs(offer, &lines, now)?;
        let (mut config, ice) = self.base(resume);
        let codecs = config.codec_config();
        codecs.clear();
        for (pt, resend, spec) in chosen {
            codecs.add_config(
                pt,
                resend,
                spec.codec,
                spec.clock_rate,
                spec.channels,
                spec.format,
            );
        }
        let peer = self.finish(config, now, parse_offer(offer_sdp)?, ice, resume)?;
        let offered = lines
            .iter()
            .filter(|m| m.is_media() && !m.rejected())
            .count();
        if peer.media.len() != offered {
            return Err(Refusal::unprocessable(
                "no supported codec for one of the offered tracks (video: H264, H265, VP8, VP9, AV1; audio: Opus)",
            ));
        }
        Ok(peer)
    }

    /// The codec each media m-line of a publisher's offer will carry, as (payload type, RTX
    /// payload type, codec): str0m negotiates the offer once with every codec we can forward
    /// (that `Rtc` is then dropped), and of the payload types it accepts the one the client
    /// lists first wins, with the client's RTX for it if it offered one.
    fn publisher_codecs(
        &self,
        offer: SdpOffer,
        lines: &[MLine],
        now: Instant,
    ) -> Result<Vec<(Pt, Option<Pt>, CodecSpec)>, Refusal> {
        let (mut config, _) = self.base(None);
        add_publisher_codecs(&mut config);
        let mut probe = config.build(now);
        self.add_candidates(&mut probe);
        answer_offer(&mut probe, offer)?;
        let params = probe.codec_config().params();
        let mut chosen: Vec<(Pt, Option<Pt>, CodecSpec)> = Vec::new();
        for line in lines.iter().filter(|m| m.is_media() && !m.rejected()) {
            let Some(media) = line
                .mid
                .as_deref()
                .and_then(|mid| probe.media(Mid::from(mid)))
            else {
                continue;
            };
            let accepted = media.remote_pts();
            let first = line.pts.iter().map(|pt| Pt::from(*pt)).find_map(|pt| {
                if !accepted.contains(&pt) {
                    return None;
                }
                // RTX/RED/FEC and DTMF ride along with a codec; they are never the choice.
                params.iter().find(|p| {
                    p.pt() == pt && (p.spec().codec.is_audio() || p.spec().codec.is_video())
                })
            });
            let Some(first) = first else { continue };
            if chosen.iter().any(|(pt, _, _)| *pt == first.pt()) {
                continue;
            }
            let resend = line.rtx_for(*first.pt()).map(Pt::from);
            chosen.push((first.pt(), resend, first.spec()));
        }
        Ok(chosen)
    }

    /// A viewer (WHEP, or pulling tracks): the only codecs it is offered are the ones the
    /// publisher actually sends, so whatever it accepts can be forwarded without transcoding.
    pub fn viewer(
        &self,
        offer_sdp: &str,
        tracks: &[Arc<TrackInfo>],
        now: Instant,
    ) -> Result<NewPeer, Refusal> {
        self.viewer_resumed(offer_sdp, tracks, now, None)
    }

    /// A viewer, resumed from another gateway when `resume` is given (`resume.rs`).
    pub fn viewer_resumed(
        &self,
        offer_sdp: &str,
        tracks: &[Arc<TrackInfo>],
        now: Instant,
        resume: Option<&Resume>,
    ) -> Result<NewPeer, Refusal> {
        let offer = parse_offer(offer_sdp)?;
        let lines = check_offer(offer_sdp)?;
        if let Some(m) = lines.iter().find(|m| {
            m.is_media()
                && !m.rejected()
                && matches!(m.direction, Direction::SendOnly | Direction::Inactive)
        }) {
            return Err(Refusal::unprocessable(format!(
                "the {} m-line does not receive; a player's offer must be recvonly",
                m.kind
            )));
        }
        let (mut config, ice) = self.base(resume);
        // str0m repairs only through RTX. A player that offers video without it gets its NACKs
        // answered by the worker, which needs to see the viewer's RTCP.
        let same_ssrc_repair = lines.iter().any(|m| m.kind == "video" && !m.rejected())
            && !offer_sdp.to_ascii_lowercase().contains(" rtx/90000");
        if same_ssrc_repair {
            config = config.enable_raw_packets(true);
        }
        // Simulcast sources: the viewer's layer follows str0m's bandwidth estimate (TWCC).
        if tracks.iter().any(|t| t.layer_group.is_some()) {
            config = config.enable_bwe(Some(str0m::bwe::Bitrate::kbps(VIEWER_INITIAL_BWE_KBPS)));
        }
        viewer_codecs(&mut config, tracks);
        let mut peer = self.finish(config, now, offer, ice, resume)?;
        peer.same_ssrc_repair = same_ssrc_repair;
        if peer.media.is_empty() {
            return Err(Refusal {
                counter_offer: true,
                ..Refusal::unprocessable(format!(
                    "the player accepts none of the stream's codecs ({})",
                    codec_names(tracks)
                ))
            });
        }
        // Never a partial answer either: a player that offers video but cannot take the
        // stream's video codec (Firefox without OpenH264 for an H264 stream) would play black.
        for (kind, name) in [(MediaKind::Audio, "audio"), (MediaKind::Video, "video")] {
            let ours: Vec<Arc<TrackInfo>> =
                tracks.iter().filter(|t| t.kind == kind).cloned().collect();
            let wanted = lines
                .iter()
                .any(|m| m.kind == name && !m.rejected() && m.direction != Direction::Inactive);
            let got = peer.media.iter().any(|(_, k)| *k == kind);
            if !ours.is_empty() && wanted && !got {
                return Err(Refusal {
                    counter_offer: true,
                    ..Refusal::unprocessable(format!(
                        "the player accepts none of the stream's {name} codecs ({})",
                        codec_names(&ours)
                    ))
                });
            }
        }
        Ok(peer)
    }
}

/// A viewer is offered exactly the codecs the publisher sends (forwarded without transcoding),
/// each video one with RTX: browsers repair video with it, even when the publisher (OBS) has none.
fn viewer_codecs(config: &mut RtcConfig, tracks: &[Arc<TrackInfo>]) {
    let codecs = config.codec_config();
    codecs.clear();
    let mut used: Vec<u8> = tracks
        .iter()
        .flat_map(|t| t.params.iter())
        .flat_map(|p| [Some(*p.pt()), p.resend().map(|r| *r)])
        .flatten()
        .collect();
    for p in tracks.iter().flat_map(|t| t.params.iter()) {
        let spec = p.spec();
        let resend = p
            .resend()
            .or_else(|| spec.codec.is_video().then(|| free_pt(&mut used)).flatten());
        codecs.add_config(
            p.pt(),
            resend,
            spec.codec,
            spec.clock_rate,
            spec.channels,
            spec.format,
        );
    }
}

/// Initial bandwidth estimate of a viewer of a simulcast source: high enough for the top layer
/// of common encodes, so viewers start on it until TWCC says otherwise.
pub const VIEWER_INITIAL_BWE_KBPS: u64 = 8_000;

/// str0m's default codecs plus H264 Constrained High (`640c1f`), which Safari and hardware
/// encoders announce and str0m's set lacks. Only profiles str0m tells apart may be added: a
/// second format of one profile (Main `4d401f` beside `4d001f`) makes both claim the peer's
/// payload type in an answer to our offer, which str0m asserts against.
fn add_publisher_codecs(config: &mut RtcConfig) {
    config
        .codec_config()
        .add_h264(116.into(), None, true, 0x640c1f);
}

/// Accept an offer on an `Rtc` (new or already negotiated): the answer (CRLF) and the answer's
/// accepted media m-lines, old and new.
pub fn answer_offer(
    rtc: &mut Rtc,
    offer: SdpOffer,
) -> Result<(String, Vec<(Mid, MediaKind)>), Refusal> {
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| Refusal::malformed(format!("offer refused: {e}")))?;
    let answer = crlf(&answer.to_sdp_string());
    let media = accepted_media(&answer);
    Ok((answer, media))
}

/// The media m-lines an SDP accepts (port not 0), with their mids.
pub fn accepted_media(sdp: &str) -> Vec<(Mid, MediaKind)> {
    sdp_info::mlines(sdp)
        .into_iter()
        .filter(|m| m.is_media() && !m.rejected() && m.direction != Direction::Inactive)
        .filter_map(|m| {
            let kind = if m.kind == "audio" {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            Some((Mid::from(m.mid?.as_str()), kind))
        })
        .collect()
}

fn check_offer(sdp: &str) -> Result<Vec<MLine>, Refusal> {
    let lines = sdp_info::mlines(sdp);
    if lines.len() > MAX_MLINES {
        return Err(Refusal::unprocessable(format!(
            "more than {MAX_MLINES} m-lines"
        )));
    }
    if !lines.iter().any(|m| m.is_media() && !m.rejected()) {
        return Err(Refusal::unprocessable(
            "the offer has no audio or video m-line",
        ));
    }
    Ok(lines)
}

/// Checks and parses a client's SDP offer: the lines RFC 8866 requires and well-formed m-lines.
pub fn parse_offer(sdp: &str) -> Result<SdpOffer, Refusal> {
    // RFC 8866 requires v=, o=, s= and t=; str0m is lenient about the last three.
    let has = |prefix: &str| sdp.lines().any(|l| l.starts_with(prefix));
    if !sdp.starts_with("v=0") || !has("o=") || !has("s=") || !has("t=") {
        return Err(Refusal::malformed(
            "malformed SDP offer: it needs v=0, o=, s= and t= lines",
        ));
    }
    let mline_ok = |l: &str| {
        let f: Vec<&str> = l.trim_end().split(' ').collect();
        f.len() >= 4 && f[1].split('/').all(|p| p.parse::<u16>().is_ok())
    };
    if let Some(bad) = sdp
        .lines()
        .filter(|l| l.starts_with("m="))
        .find(|l| !mline_ok(l))
    {
        return Err(Refusal::malformed(format!(
            "malformed SDP offer: bad m-line {:.60}",
            bad
        )));
    }
    let sdp = bundle_single_mline(sdp);
    SdpOffer::from_sdp_string(&sdp).map_err(|e| {
        Refusal::malformed(format!(
            "malformed SDP offer: {}",
            sdp_error(&e.to_string())
        ))
    })
}

/// GStreamer's webrtcbin (simple-whip-client) offers a single m-line without `a=group:BUNDLE`,
/// which str0m refuses; with one m-line the group changes nothing on the wire, so it is added.
fn bundle_single_mline(sdp: &str) -> std::borrow::Cow<'_, str> {
    let mlines = sdp_info::mlines(sdp);
    let has_group = sdp.lines().any(|l| l.starts_with("a=group:"));
    let (false, [only]) = (has_group, mlines.as_slice()) else {
        return sdp.into();
    };
    let (Some(mid), Some(at)) = (only.mid.as_deref(), sdp.find("\nm=")) else {
        return sdp.into();
    };
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len() + 32);
    out.push_str(&sdp[..=at]);
    out.push_str(&format!("a=group:BUNDLE {mid}{eol}"));
    out.push_str(&sdp[at + 1..]);
    out.into()
}

/// str0m's parse errors name a `PointerOffset(0x…)`: a heap address, which must not reach a
/// client. Keep the human part, drop the pointer.
pub fn sdp_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("PointerOffset(") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once(')').map(|(_, r)| r).unwrap_or("");
        out.push_str("the input");
    }
    out.push_str(rest);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .take(200)
        .collect()
}

fn free_pt(used: &mut Vec<u8>) -> Option<str0m::media::Pt> {
    let pt = (96u8..=127).find(|p| !used.contains(p))?;
    used.push(pt);
    Some(pt.into())
}

fn codec_names(tracks: &[Arc<TrackInfo>]) -> String {
    let mut names: Vec<String> = tracks
        .iter()
        .flat_map(|t| t.params.iter().map(|p| p.spec().codec.to_string()))
        .collect();
    names.dedup();
    names.join(", ")
}

/// The payload parameters str0m negotiated for a publisher's m-line, primary codecs first.
pub fn negotiated_params(rtc: &Rtc, mid: Mid) -> Vec<PayloadParams> {
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    let pts = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| pts.contains(&p.pt()) && p.spec().codec != Codec::Rtx)
        .copied()
        .collect()
}

/// SDP wants CRLF line ends (RFC 8866); some clients refuse a bare LF answer.
pub fn crlf(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out
}

/// The host candidates: public (NAT 1:1) addresses first, then the configured or discovered
/// interface addresses, IPv4 before IPv6 because FFmpeg uses only the first one.
fn candidate_addrs(config: &Config, udp_local: SocketAddr) -> Vec<SocketAddr> {
    let port = udp_local.port();
    let mut ips: Vec<IpAddr> = config.public_ips.clone();
    if !config.candidate_ips.is_empty() {
        ips.extend(&config.candidate_ips);
    } else if !udp_local.ip().is_unspecified() {
        ips.push(udp_local.ip());
    } else {
        let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()
            .map(|list| list.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default();
        found.retain(|ip| match ip {
            IpAddr::V4(v) => !v.is_link_local() && udp_local.is_ipv4(),
            // Link-local v6 needs a scope id a candidate cannot carry.
            IpAddr::V6(v) => (v.segments()[0] & 0xffc0) != 0xfe80 && udp_local.is_ipv6(),
        });
        found.sort_by_key(|ip| (ip.is_ipv6(), ip.is_loopback()));
        ips.extend(found);
    }
    let mut seen = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        if !seen.contains(&addr) {
            seen.push(addr);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_carry_no_addresses() {
        let e = sdp_error(
            "SDP parse: Parse error at PointerOffset(0x7fb990007ea0)\nUnexpected `h`\nExpected `v=`",
        );
        assert!(!e.contains("0x"), "{e}");
        assert!(e.contains("Unexpected"), "{e}");
        let p = parse_offer("hello world").expect_err("garbage is refused");
        assert!(!p.detail.contains("0x7f"), "{}", p.detail);
    }
}
