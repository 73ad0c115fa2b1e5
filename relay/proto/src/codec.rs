//! Which codec a track carries, and the per-codec payload inspection the media plane needs: is this packet the
//! start of a keyframe? Payloads come straight off the network, so every parser here treats its input as
//! untrusted and answers "no" to anything short or malformed instead of panicking.

mod aggregation;
mod av1;
mod h264;
mod h265;
mod vp8;
mod vp9;

pub use aggregation::{AggregationUnits, MalformedAggregate, aggregation_units};

/// The codec a track carries, as the media plane tells them apart: it picks the keyframe detector
/// ([`is_keyframe_start`]). Read from SDP names with [`Codec::from_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 (RFC 6184 payload).
    H264,
    /// H.265 / HEVC (RFC 7798 payload).
    H265,
    /// VP8 (RFC 7741 payload).
    Vp8,
    /// VP9 (RFC 9628 payload).
    Vp9,
    /// AV1 (the AV1 RTP payload format).
    Av1,
    /// Opus audio; it has no keyframes.
    Opus,
    /// Any other codec, and data tracks: forwarded as they are, never inspected, no keyframes.
    Other,
}

impl Codec {
    /// True for the video codecs (H264, H265, VP8, VP9, AV1).
    pub fn is_video(self) -> bool {
        matches!(
            self,
            Codec::H264 | Codec::H265 | Codec::Vp8 | Codec::Vp9 | Codec::Av1
        )
    }

    /// Accepts the encoding name as it appears in SDP (`H264`, `opus`), optionally as a MIME type
    /// (`video/H264`) or with the rtpmap clock suffix (`H264/90000`), since callers get names from all three.
    pub fn from_name(name: &str) -> Codec {
        let name = strip_prefix_ignore_case(name, "video/")
            .or_else(|| strip_prefix_ignore_case(name, "audio/"))
            .unwrap_or(name);
        let name = name.split('/').next().unwrap_or(name).trim();
        const NAMES: [(&str, Codec); 8] = [
            ("h264", Codec::H264),
            ("h265", Codec::H265),
            ("hevc", Codec::H265),
            ("vp8", Codec::Vp8),
            ("vp9", Codec::Vp9),
            ("av1", Codec::Av1),
            // Chrome advertised AV1 under this name before the payload format was final.
            ("av1x", Codec::Av1),
            ("opus", Codec::Opus),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Codec::Other, |&(_, c)| c)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// True when this RTP payload begins a keyframe or carries its parameter sets.
///
/// - H264 (RFC 6184): single NAL type 5 (IDR) or 7 (SPS); STAP-A containing one; FU-A start fragment of one.
/// - H265 (RFC 7798): NAL types 16..=21 (IRAP) or 32..=34 (VPS/SPS/PPS); AP containing one; FU start of one.
/// - VP8 (RFC 7741): start of partition 0 whose frame tag says key frame.
/// - VP9 (RFC 9628): begin-of-frame without inter-picture prediction, in the base spatial layer.
/// - AV1 (AV1 RTP spec): aggregation header says new coded video sequence.
/// - Opus/Other: never.
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::H264 => h264::is_keyframe_start(payload),
        Codec::H265 => h265::is_keyframe_start(payload),
        Codec::Vp8 => vp8::is_keyframe_start(payload),
        Codec::Vp9 => vp9::is_keyframe_start(payload),
        Codec::Av1 => av1::is_keyframe_start(payload),
        Codec::Opus | Codec::Other => false,
    }
}

/// H264 only: whether the payload carries an SPS (7) and a PPS (8), whole (single NAL or STAP-A) or as the
/// start of an FU-A. Lets the gateway warn about streams that send IDRs without parameter sets, which
/// late-joining viewers cannot decode.
pub fn h264_parameter_sets(payload: &[u8]) -> (bool, bool) {
    h264::parameter_sets(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Codec::from_name("H264"), Codec::H264);
        assert_eq!(Codec::from_name("h264"), Codec::H264);
        assert_eq!(Codec::from_name("H265"), Codec::H265);
        assert_eq!(Codec::from_name("HEVC"), Codec::H265);
        assert_eq!(Codec::from_name("hevc"), Codec::H265);
        assert_eq!(Codec::from_name("VP8"), Codec::Vp8);
        assert_eq!(Codec::from_name("vp9"), Codec::Vp9);
        assert_eq!(Codec::from_name("AV1"), Codec::Av1);
        assert_eq!(Codec::from_name("AV1X"), Codec::Av1);
        assert_eq!(Codec::from_name("OPUS"), Codec::Opus);
        assert_eq!(Codec::from_name("opus"), Codec::Opus);
    }

    #[test]
    fn mime_and_rtpmap_forms() {
        assert_eq!(Codec::from_name("video/H264"), Codec::H264);
        assert_eq!(Codec::from_name("VIDEO/vp8"), Codec::Vp8);
        assert_eq!(Codec::from_name("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_name("H264/90000"), Codec::H264);
        assert_eq!(Codec::from_name("opus/48000/2"), Codec::Opus);
    }

    #[test]
    fn unknown_names_are_other() {
        assert_eq!(Codec::from_name(""), Codec::Other);
        assert_eq!(Codec::from_name("PCMU"), Codec::Other);
        assert_eq!(Codec::from_name("rtx"), Codec::Other);
        assert_eq!(Codec::from_name("h26"), Codec::Other);
        assert_eq!(Codec::from_name("h2644"), Codec::Other);
        // Multi-byte characters must not trip the prefix slicing.
        assert_eq!(Codec::from_name("vidé/H264"), Codec::Other);
        assert_eq!(Codec::from_name("é"), Codec::Other);
    }

    #[test]
    fn video_classification() {
        for c in [Codec::H264, Codec::H265, Codec::Vp8, Codec::Vp9, Codec::Av1] {
            assert!(c.is_video(), "{c:?}");
        }
        assert!(!Codec::Opus.is_video());
        assert!(!Codec::Other.is_video());
    }

    #[test]
    fn audio_and_unknown_never_keyframes() {
        for payload in [
            &[][..],
            &[0x65, 0x88][..],
            &[0x10, 0x50][..],
            &[0x08, 0x01][..],
        ] {
            assert!(!is_keyframe_start(Codec::Opus, payload));
            assert!(!is_keyframe_start(Codec::Other, payload));
        }
    }

    #[test]
    fn dispatch_reaches_each_parser() {
        assert!(is_keyframe_start(Codec::H264, &[0x65, 0x88]));
        assert!(is_keyframe_start(Codec::H265, &[0x26, 0x01, 0xaf]));
        assert!(is_keyframe_start(Codec::Vp8, &[0x10, 0x50]));
        assert!(is_keyframe_start(Codec::Vp9, &[0x08, 0x00]));
        assert!(is_keyframe_start(Codec::Av1, &[0x08, 0x0a]));
        // The same bytes mean different things per codec: an IDR header is no VP8 key frame.
        assert!(!is_keyframe_start(Codec::Vp8, &[0x65, 0x88]));
    }

    #[test]
    fn garbage_never_panics() {
        let codecs = [
            Codec::H264,
            Codec::H265,
            Codec::Vp8,
            Codec::Vp9,
            Codec::Av1,
            Codec::Opus,
            Codec::Other,
        ];
        for a in 0..=255u8 {
            for c in codecs {
                is_keyframe_start(c, &[a]);
            }
            h264_parameter_sets(&[a]);
            for b in 0..=255u8 {
                for c in codecs {
                    is_keyframe_start(c, &[a, b]);
                }
                h264_parameter_sets(&[a, b]);
            }
        }
        // Longer pseudo-random payloads (fixed LCG seed, so the test is deterministic).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut buf = [0u8; 24];
        for _ in 0..50_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (state >> 59) as usize % buf.len();
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = (state >> (i % 8 * 8)) as u8 ^ i as u8;
            }
            for c in codecs {
                is_keyframe_start(c, &buf[..len]);
            }
            h264_parameter_sets(&buf[..len]);
        }
    }
}
