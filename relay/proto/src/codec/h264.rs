//! H264 RTP payload inspection (RFC 6184): which NAL unit types a packet carries or begins, in packetization
//! modes 0 and 1 (the ones WebRTC uses: single NAL, STAP-A, FU-A).

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const FORBIDDEN_BIT: u8 = 0x80;
const TYPE_MASK: u8 = 0x1f;
const FU_START: u8 = 0x80;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    nal_types(payload) & (bit(IDR) | bit(SPS)) != 0
}

pub(super) fn parameter_sets(payload: &[u8]) -> (bool, bool) {
    let types = nal_types(payload);
    (types & bit(SPS) != 0, types & bit(PPS) != 0)
}

fn bit(nal_type: u8) -> u32 {
    1 << (nal_type & TYPE_MASK)
}

/// A bitmask of the NAL unit types this payload holds whole or starts. A continuation fragment starts nothing,
/// and a malformed payload yields nothing at all, so garbage can never look like a keyframe.
fn nal_types(payload: &[u8]) -> u32 {
    let Some((&header, rest)) = payload.split_first() else {
        return 0;
    };
    if header & FORBIDDEN_BIT != 0 {
        return 0;
    }
    match header & TYPE_MASK {
        t @ 1..=23 => bit(t),
        STAP_A => stap_a_types(rest),
        FU_A => match rest.first() {
            Some(&fu) if fu & FU_START != 0 => bit(fu),
            _ => 0,
        },
        // 0 is invalid; STAP-B, MTAP and FU-B need packetization mode 2, which WebRTC never negotiates.
        _ => 0,
    }
}

fn stap_a_types(rest: &[u8]) -> u32 {
    let mut types = 0;
    for unit in super::aggregation_units(rest) {
        match unit.ok().and_then(|nal| nal.first()) {
            Some(&h) if h & FORBIDDEN_BIT == 0 => types |= bit(h),
            _ => return 0,
        }
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS_NAL: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS_NAL: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    #[test]
    fn single_nal_units() {
        assert!(is_keyframe_start(&[0x65, 0x88, 0x84, 0x00])); // IDR, nri 3
        assert!(is_keyframe_start(&[0x25, 0x88])); // IDR, nri 1
        assert!(is_keyframe_start(&SPS_NAL));
        assert!(!is_keyframe_start(&PPS_NAL));
        assert!(!is_keyframe_start(&[0x41, 0x9a, 0x02])); // non-IDR slice
        assert!(!is_keyframe_start(&[0x06, 0x05, 0x10])); // SEI
        assert!(!is_keyframe_start(&[0x09, 0xf0])); // access unit delimiter
    }

    #[test]
    fn header_only_idr_counts() {
        assert!(is_keyframe_start(&[0x65]));
    }

    #[test]
    fn forbidden_bit_and_empty_are_rejected() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0xe5, 0x88])); // IDR type with forbidden bit
        assert!(!is_keyframe_start(&[0x60, 0x00])); // type 0
    }

    #[test]
    fn stap_a_with_parameter_sets() {
        #[rustfmt::skip]
        let stap = [
            0x78, // STAP-A, nri 3
            0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, // SPS
            0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, // PPS
        ];
        assert!(is_keyframe_start(&stap));
        assert_eq!(parameter_sets(&stap), (true, true));
    }

    #[test]
    fn stap_a_with_sps_pps_and_idr() {
        #[rustfmt::skip]
        let stap = [
            0x78,
            0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f,
            0x00, 0x04, 0x68, 0xce, 0x3c, 0x80,
            0x00, 0x03, 0x65, 0x88, 0x84,
        ];
        assert!(is_keyframe_start(&stap));
    }

    #[test]
    fn stap_a_idr_found_after_other_units() {
        #[rustfmt::skip]
        let stap = [
            0x78,
            0x00, 0x02, 0x09, 0xf0, // AUD
            0x00, 0x03, 0x06, 0x05, 0x01, // SEI
            0x00, 0x02, 0x65, 0x88, // IDR
        ];
        assert!(is_keyframe_start(&stap));
        assert_eq!(parameter_sets(&stap), (false, false));
    }

    #[test]
    fn stap_a_without_keyframe_units() {
        #[rustfmt::skip]
        let stap = [
            0x78,
            0x00, 0x02, 0x06, 0x05,
            0x00, 0x02, 0x41, 0x9a,
            0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, // a PPS alone is not a keyframe
        ];
        assert!(!is_keyframe_start(&stap));
        assert_eq!(parameter_sets(&stap), (false, true));
    }

    #[test]
    fn malformed_stap_a_is_not_a_keyframe() {
        // Declared size runs past the end.
        assert!(!is_keyframe_start(&[0x78, 0x00, 0x10, 0x67, 0x42, 0xc0]));
        // A valid SPS followed by a truncated entry: the whole packet is distrusted.
        assert!(!is_keyframe_start(&[
            0x78, 0x00, 0x04, 0x67, 0x42, 0xc0, 0x1f, 0x00, 0x09, 0x65
        ]));
        // Dangling single length byte.
        assert!(!is_keyframe_start(&[0x78, 0x00, 0x02, 0x65, 0x88, 0x00]));
        // Zero-length unit.
        assert!(!is_keyframe_start(&[
            0x78, 0x00, 0x00, 0x00, 0x02, 0x65, 0x88
        ]));
        // Inner unit with the forbidden bit.
        assert!(!is_keyframe_start(&[0x78, 0x00, 0x02, 0xe5, 0x88]));
        // Header only.
        assert!(!is_keyframe_start(&[0x78]));
        assert_eq!(
            parameter_sets(&[0x78, 0x00, 0x05, 0x67, 0x42]),
            (false, false)
        );
    }

    #[test]
    fn fu_a_idr_fragments() {
        let start = [0x7c, 0x85, 0x88, 0x84, 0x00]; // FU indicator nri 3, header S + IDR
        let middle = [0x7c, 0x05, 0x11, 0x22];
        let end = [0x7c, 0x45, 0x33, 0x44];
        assert!(is_keyframe_start(&start));
        assert!(!is_keyframe_start(&middle));
        assert!(!is_keyframe_start(&end));
    }

    #[test]
    fn fu_a_non_idr_start_is_not_a_keyframe() {
        assert!(!is_keyframe_start(&[0x5c, 0x81, 0x9a, 0x02]));
    }

    #[test]
    fn fu_a_of_sps_counts_and_reports_parameter_set() {
        let start = [0x7c, 0x87, 0x42, 0xc0];
        assert!(is_keyframe_start(&start));
        assert_eq!(parameter_sets(&start), (true, false));
        assert_eq!(parameter_sets(&[0x7c, 0x07, 0x42]), (false, false)); // not the start
    }

    #[test]
    fn fu_a_without_header_byte() {
        assert!(!is_keyframe_start(&[0x7c]));
    }

    #[test]
    fn unsupported_aggregation_modes_are_ignored() {
        assert!(!is_keyframe_start(&[
            0x79, 0x00, 0x01, 0x00, 0x02, 0x65, 0x88
        ])); // STAP-B
        assert!(!is_keyframe_start(&[0x7d, 0x85, 0x00, 0x01])); // FU-B
    }

    #[test]
    fn parameter_sets_of_single_units() {
        assert_eq!(parameter_sets(&SPS_NAL), (true, false));
        assert_eq!(parameter_sets(&PPS_NAL), (false, true));
        assert_eq!(parameter_sets(&[0x65, 0x88]), (false, false));
        assert_eq!(parameter_sets(&[]), (false, false));
    }
}
