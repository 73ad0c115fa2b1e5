//! A small read-only view of an SDP's m-lines (kind, port, mid, direction), enough to validate an
//! offer before str0m sees it and to check str0m's answer. str0m's own parsed SDP is not public.

/// Direction attribute of an m-line, from the writer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, also the default when none is given.
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

/// One m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MLine {
    /// `audio`, `video` or `application`.
    pub kind: String,
    /// The m-line's port; 0 rejects it (unless bundle-only).
    pub port: u16,
    /// `a=mid`, if any.
    pub mid: Option<String>,
    /// The direction attribute.
    pub direction: Direction,
    /// `a=rid` lines: simulcast layers the writer sends (or receives).
    pub rids: usize,
    /// Port 0 with `a=bundle-only`, the mid in a BUNDLE group (RFC 8843): the m-line is wanted
    /// and shares the group's transport. webrtcbin (GStreamer) and Firefox offer every m-line
    /// but the first this way under the max-bundle policy.
    pub bundle_only: bool,
    /// Payload types in m-line order: the writer's preference.
    pub pts: Vec<u8>,
    /// `(rtx, apt)`: the RTX payload type repairing each media payload type.
    pub rtx: Vec<(u8, u8)>,
    /// The sender's MediaStreamTrack id (`a=msid:<stream> <track>`), if it says one.
    pub msid_track: Option<String>,
}

impl MLine {
    /// An audio or video m-line (not data channels).
    pub fn is_media(&self) -> bool {
        self.kind == "audio" || self.kind == "video"
    }
    /// Port 0 and not bundle-only: the writer does not want this m-line.
    pub fn rejected(&self) -> bool {
        self.port == 0 && !self.bundle_only
    }
    /// The RTX payload type that repairs `pt`, if the writer gave one.
    pub fn rtx_for(&self, pt: u8) -> Option<u8> {
        self.rtx
            .iter()
            .find(|(_, apt)| *apt == pt)
            .map(|(rtx, _)| *rtx)
    }
}

/// The m-lines of an SDP, in order. Lines that do not parse are skipped: str0m is the judge of
/// validity, this only summarises.
pub fn mlines(sdp: &str) -> Vec<MLine> {
    let mut out: Vec<MLine> = Vec::new();
    let mut session_direction = Direction::SendRecv;
    let mut bundled: Vec<String> = Vec::new();
    // Per m-line: the payload types named `rtx` and every `apt=` seen (in either line order:
    // Firefox writes a=fmtp before a=rtpmap).
    let mut rtx_pts: Vec<Vec<u8>> = Vec::new();
    let mut apts: Vec<Vec<(u8, u8)>> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split(' ');
            let kind = parts.next().unwrap_or_default().to_string();
            let port = parts
                .next()
                .and_then(|p| p.split('/').next()?.parse().ok())
                .unwrap_or(0);
            let pts = parts.skip(1).filter_map(|f| f.parse().ok()).collect();
            out.push(MLine {
                kind,
                port,
                mid: None,
                direction: session_direction,
                rids: 0,
                bundle_only: false,
                pts,
                rtx: Vec::new(),
                msid_track: None,
            });
            rtx_pts.push(Vec::new());
            apts.push(Vec::new());
            continue;
        }
        let direction = match line.trim_end() {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        match (out.last_mut(), direction) {
            (Some(m), Some(d)) => m.direction = d,
            (None, Some(d)) => session_direction = d,
            (Some(m), None) => {
                if let Some(mid) = line.strip_prefix("a=mid:") {
                    m.mid = Some(mid.trim().to_string());
                } else if line.starts_with("a=rid:") {
                    m.rids += 1;
                } else if line.trim_end() == "a=bundle-only" {
                    m.bundle_only = true;
                } else if let Some(msid) = line.strip_prefix("a=msid:") {
                    m.msid_track = msid
                        .split_whitespace()
                        .nth(1)
                        .filter(|t| !t.is_empty() && *t != "-")
                        .map(str::to_string);
                } else if let Some((pt, value)) = line
                    .strip_prefix("a=rtpmap:")
                    .and_then(|v| v.split_once(' '))
                {
                    if value.to_ascii_lowercase().starts_with("rtx/")
                        && let Ok(pt) = pt.parse()
                        && let Some(list) = rtx_pts.last_mut()
                    {
                        list.push(pt);
                    }
                } else if let Some((pt, value)) =
                    line.strip_prefix("a=fmtp:").and_then(|v| v.split_once(' '))
                    && let Ok(pt) = pt.parse::<u8>()
                    && let Some(apt) = value
                        .split(';')
                        .find_map(|kv| kv.trim().strip_prefix("apt="))
                        .and_then(|a| a.trim().parse::<u8>().ok())
                    && let Some(list) = apts.last_mut()
                {
                    list.push((pt, apt));
                }
            }
            (None, None) => {
                if let Some(mids) = line.strip_prefix("a=group:BUNDLE") {
                    bundled.extend(mids.split_whitespace().map(str::to_string));
                }
            }
        }
    }
    for (i, m) in out.iter_mut().enumerate() {
        // bundle-only means something only inside a BUNDLE group; elsewhere port 0 rejects.
        m.bundle_only &= m.mid.as_ref().is_some_and(|mid| bundled.contains(mid));
        m.rtx = apts[i]
            .iter()
            .filter(|(pt, _)| rtx_pts[i].contains(pt))
            .copied()
            .collect();
    }
    out
}

/// Put every m-line of an answer in one MediaStream: a recvonly offer carries no msid, so str0m
/// picks a stream id per m-line, and players that attach `ontrack`'s `streams[0]` to a `<video>`
/// would then show the video without its audio (or the reverse). The track ids stay.
pub fn unify_msid(sdp: &str, stream_id: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("a=msid:") {
            let track = rest.split_once(' ').map(|(_, t)| t);
            out.push_str("a=msid:");
            out.push_str(stream_id);
            if let Some(t) = track {
                out.push(' ');
                out.push_str(t);
            }
        } else if let Some((head, msid)) = body
            .strip_prefix("a=ssrc:")
            .and_then(|r| r.split_once(" msid:"))
        {
            out.push_str("a=ssrc:");
            out.push_str(head);
            out.push_str(" msid:");
            out.push_str(stream_id);
            if let Some((_, t)) = msid.split_once(' ') {
                out.push(' ');
                out.push_str(t);
            }
        } else {
            out.push_str(body);
        }
        out.push_str(ending);
    }
    out
}

/// The writer's ICE ufrag: the first `a=ice-ufrag` (session level or the first m-line; a BUNDLE
/// group shares one).
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_string())
}

/// `sdp` with every `a=ice-ufrag` and `a=ice-pwd` replaced by `creds`: a client's offer as it
/// stands after an ICE restart (RFC 8840 changes the credentials, nothing else), from which a
/// resumed session is built. Line endings are kept as they were.
pub fn with_ice_credentials(sdp: &str, creds: &str0m::IceCreds) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if body.trim_start().starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(&creds.ufrag);
        } else if body.trim_start().starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(&creds.pass);
        } else {
            out.push_str(body);
        }
        out.push_str(ending);
    }
    out
}

/// The ICE credentials and candidates of an `application/trickle-ice-sdpfrag` body (RFC 8840).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`: a new one (with `a=ice-pwd`) is an ICE restart.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub pwd: Option<String>,
    /// Candidate lines, as `candidate:…` without the `a=`.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` was given.
    pub end_of_candidates: bool,
}

/// Parse a trickle/restart fragment. Errors name the offending line.
pub fn sdpfrag(body: &str) -> Result<SdpFrag, String> {
    let mut frag = SdpFrag::default();
    for line in body.lines() {
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            frag.ufrag = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            frag.pwd = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            frag.candidates.push(format!("candidate:{}", v.trim()));
        } else if line == "a=end-of-candidates" {
            frag.end_of_candidates = true;
        } else if line.starts_with("m=") || line.starts_with("a=") {
            // m=, a=mid, a=ice-options and the like are allowed and carry nothing we need.
        } else {
            return Err(format!("not an SDP fragment line: {:.60}", line));
        }
    }
    let ufrag_ok = frag
        .ufrag
        .as_ref()
        .is_none_or(|u| (4..=256).contains(&u.len()));
    let pwd_ok = frag
        .pwd
        .as_ref()
        .is_none_or(|p| (22..=256).contains(&p.len()));
    if !ufrag_ok || !pwd_ok {
        return Err("ice-ufrag must be 4-256 and ice-pwd 22-256 characters".into());
    }
    if frag.ufrag.is_some() != frag.pwd.is_some() {
        return Err("ice-ufrag and ice-pwd must come together".into());
    }
    Ok(frag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS: &str = "v=0\r\no=rtc 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rid:0 send\r\na=rid:1 send\r\n";

    #[test]
    fn reads_mlines() {
        let m = mlines(OBS);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].kind, "audio");
        assert_eq!(m[0].mid.as_deref(), Some("0"));
        assert_eq!(m[1].direction, Direction::SendOnly);
        assert_eq!(m[1].rids, 2);
        assert_eq!(m[1].port, 9);
        assert_eq!(m[1].pts, vec![96]);
        assert!(mlines("m=video 0 UDP 96\r\n")[0].rejected());
    }

    #[test]
    fn bundle_only_is_not_rejected() {
        // webrtcbin / Firefox max-bundle: port 0 + a=bundle-only inside the group.
        let sdp = "v=0\r\na=group:BUNDLE video0 audio1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:video0\r\n\
            a=fmtp:97 apt=96\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
            a=rtpmap:98 red/90000\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
            m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=bundle-only\r\na=mid:audio1\r\n\
            m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=bundle-only\r\na=mid:stray\r\n";
        let m = mlines(sdp);
        assert!(!m[1].rejected(), "bundle-only inside the group is wanted");
        assert!(m[2].rejected(), "bundle-only outside any group is refused");
        assert_eq!(m[0].pts, vec![96, 97, 98, 99]);
        assert_eq!(m[0].rtx_for(96), Some(97));
        assert_eq!(m[0].rtx_for(98), Some(99));
        assert_eq!(m[0].rtx_for(97), None);
    }

    #[test]
    fn one_media_stream_for_all_mlines() {
        let sdp = "m=audio 9 X 111\r\na=msid:abc t1\r\na=ssrc:1 msid:abc t1\r\nm=video 9 X 96\r\na=msid:def t2\r\na=ssrc:2 msid:def t2\r\n";
        let u = unify_msid(sdp, "live");
        assert_eq!(
            u,
            "m=audio 9 X 111\r\na=msid:live t1\r\na=ssrc:1 msid:live t1\r\nm=video 9 X 96\r\na=msid:live t2\r\na=ssrc:2 msid:live t2\r\n"
        );
    }

    #[test]
    fn reads_sdpfrags() {
        let f = sdpfrag("a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n").expect("parses");
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
        assert!(sdpfrag("garbage").is_err());
        assert!(sdpfrag("a=ice-ufrag:abcd\r\n").is_err());
        assert!(sdpfrag("a=ice-ufrag:ab\r\na=ice-pwd:0123456789012345678901\r\n").is_err());
    }

    #[test]
    fn ice_credentials_are_replaced_everywhere_and_nothing_else() {
        let offer = "v=0\r\na=ice-ufrag:old1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpassword\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-pwd:oldpassword\r\n";
        let creds = str0m::IceCreds {
            ufrag: "new2".into(),
            pass: "newpassword".into(),
        };
        let out = with_ice_credentials(offer, &creds);
        assert_eq!(
            out,
            offer
                .replace("old1", "new2")
                .replace("oldpassword", "newpassword")
        );
        assert_eq!(ice_ufrag(&out).as_deref(), Some("new2"));
        // A bare-LF offer stays bare LF.
        let lf = offer.replace("\r\n", "\n");
        assert_eq!(with_ice_credentials(&lf, &creds), out.replace("\r\n", "\n"));
    }
}
