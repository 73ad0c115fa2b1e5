//! H265 RTP payload inspection (RFC 7798): which NAL unit types a packet carries or begins (single NAL units,
//! aggregation packets and fragmentation units, without DONL since WebRTC does not negotiate it).

const AP: u8 = 48;
const FU: u8 = 49;
const FORBIDDEN_BIT: u8 = 0x80;
const FU_START: u8 = 0x80;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    nal_types(payload) & KEYFRAME_TYPES != 0
}

/// IRAP pictures (BLA, IDR, CRA: 16..=21) and the VPS/SPS/PPS (32..=34) a decoder needs before them.
const KEYFRAME_TYPES: u64 = (0x3f << 16) | (0x7 << 32);

fn nal_type(header: &[u8]) -> Option<u8> {
    match header {
        [b0, _, ..] if b0 & FORBIDDEN_BIT == 0 => Some((b0 >> 1) & 0x3f),
        _ => None,
    }
}

fn bit(nal_type: u8) -> u64 {
    1 << (nal_type & 0x3f)
}

/// A bitmask of the NAL unit types this payload holds whole or starts; malformed payloads yield nothing.
fn nal_types(payload: &[u8]) -> u64 {
    let Some(t) = nal_type(payload) else {
        return 0;
    };
    let rest = &payload[2..];
    match t {
        0..=47 => bit(t),
        AP => aggregation_types(rest),
        FU => match rest.first() {
            Some(&fu) if fu & FU_START != 0 => bit(fu),
            _ => 0,
        },
        // PACI and reserved types carry nothing we can classify.
        _ => 0,
    }
}

fn aggregation_types(rest: &[u8]) -> u64 {
    let mut types = 0;
    for unit in super::aggregation_units(rest) {
        let Some(t) = unit.ok().and_then(nal_type) else {
            return 0;
        };
        types |= bit(t);
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-byte NAL header for `t` with layer 0 and temporal id 1, as encoders emit it.
    fn header(t: u8) -> [u8; 2] {
        [t << 1, 0x01]
    }

    #[test]
    fn irap_and_parameter_sets_are_keyframes() {
        for t in (16..=21).chain(32..=34) {
            let [a, b] = header(t);
            assert!(is_keyframe_start(&[a, b, 0xaf, 0x00]), "type {t}");
        }
        assert!(is_keyframe_start(&[0x26, 0x01, 0xaf])); // IDR_W_RADL as seen on the wire
        assert!(is_keyframe_start(&[0x40, 0x01, 0x0c])); // VPS
    }

    #[test]
    fn other_types_are_not() {
        for t in (0..=15).chain(22..=31).chain(35..=47) {
            let [a, b] = header(t);
            assert!(!is_keyframe_start(&[a, b, 0xaf]), "type {t}");
        }
        assert!(!is_keyframe_start(&[0x02, 0x01, 0xd0])); // TRAIL_R
        assert!(!is_keyframe_start(&[0x4e, 0x01, 0x05])); // prefix SEI (39)
    }

    #[test]
    fn short_or_forbidden_headers() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x26])); // one byte of a two-byte header
        assert!(!is_keyframe_start(&[0xa6, 0x01, 0xaf])); // IDR with forbidden bit
    }

    #[test]
    fn aggregation_packet_with_parameter_sets() {
        #[rustfmt::skip]
        let ap = [
            0x60, 0x01, // AP
            0x00, 0x03, 0x40, 0x01, 0x0c, // VPS
            0x00, 0x03, 0x42, 0x01, 0x01, // SPS
            0x00, 0x03, 0x44, 0x01, 0xc1, // PPS
        ];
        assert!(is_keyframe_start(&ap));
    }

    #[test]
    fn aggregation_packet_with_irap_last() {
        #[rustfmt::skip]
        let ap = [
            0x60, 0x01,
            0x00, 0x03, 0x4e, 0x01, 0x05, // SEI
            0x00, 0x03, 0x2a, 0x01, 0xaf, // CRA
        ];
        assert!(is_keyframe_start(&ap));
    }

    #[test]
    fn aggregation_packet_of_trailing_pictures() {
        let ap = [
            0x60, 0x01, 0x00, 0x02, 0x02, 0x01, 0x00, 0x03, 0x02, 0x01, 0xd0,
        ];
        assert!(!is_keyframe_start(&ap));
    }

    #[test]
    fn malformed_aggregation_packets() {
        assert!(!is_keyframe_start(&[0x60, 0x01, 0x00, 0x09, 0x40, 0x01])); // overlong
        assert!(!is_keyframe_start(&[0x60, 0x01, 0x00, 0x01, 0x40])); // unit shorter than its header
        assert!(!is_keyframe_start(&[
            0x60, 0x01, 0x00, 0x03, 0x40, 0x01, 0x0c, 0x00
        ])); // dangling byte
        assert!(!is_keyframe_start(&[0x60, 0x01, 0x00, 0x02, 0xc0, 0x01])); // forbidden bit inside
    }

    #[test]
    fn fragmentation_units() {
        assert!(is_keyframe_start(&[0x62, 0x01, 0x93, 0xaf])); // S + IDR_W_RADL (19)
        assert!(is_keyframe_start(&[0x62, 0x01, 0x95, 0xaf])); // S + CRA (21)
        assert!(!is_keyframe_start(&[0x62, 0x01, 0x13, 0xaf])); // IDR continuation
        assert!(!is_keyframe_start(&[0x62, 0x01, 0x53, 0xaf])); // IDR end
        assert!(!is_keyframe_start(&[0x62, 0x01, 0x81, 0xaf])); // S + TRAIL_R
        assert!(!is_keyframe_start(&[0x62, 0x01])); // FU header missing
    }

    #[test]
    fn paci_is_ignored() {
        assert!(!is_keyframe_start(&[0x64, 0x01, 0x26, 0x01, 0xaf]));
    }
}
