//! VP8 RTP payload inspection (RFC 7741): skip the payload descriptor and read the key-frame flag of the
//! frame tag at the start of partition 0.

const X: u8 = 0x80;
const S: u8 = 0x10;
const PID: u8 = 0x07;
const I: u8 = 0x80;
const L: u8 = 0x40;
const T: u8 = 0x20;
const K: u8 = 0x10;
const M: u8 = 0x80;
/// Frame tag "show_frame/version/P" byte: P is clear for key frames (RFC 6386 section 9.1).
const INTER_FRAME: u8 = 0x01;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    // Only the first packet of partition 0 holds the frame tag.
    if b0 & S == 0 || b0 & PID != 0 {
        return false;
    }
    let Some(header_at) = payload_header_offset(payload, b0) else {
        return false;
    };
    matches!(payload.get(header_at), Some(&tag) if tag & INTER_FRAME == 0)
}

/// Where the VP8 payload header starts, after the variable-length descriptor.
fn payload_header_offset(payload: &[u8], b0: u8) -> Option<usize> {
    if b0 & X == 0 {
        return Some(1);
    }
    let ext = *payload.get(1)?;
    let mut at = 2;
    if ext & I != 0 {
        at += if payload.get(at)? & M != 0 { 2 } else { 1 };
    }
    if ext & L != 0 {
        at += 1;
    }
    // TID/Y and KEYIDX share one byte.
    if ext & (T | K) != 0 {
        at += 1;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start of a key frame's payload header: frame tag (P=0) and the start code.
    const KEY: [u8; 6] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];

    fn with_descriptor(descriptor: &[u8], rest: &[u8]) -> Vec<u8> {
        [descriptor, rest].concat()
    }

    #[test]
    fn minimal_descriptor() {
        assert!(is_keyframe_start(&with_descriptor(&[0x10], &KEY)));
        assert!(!is_keyframe_start(&with_descriptor(
            &[0x10],
            &[0x51, 0x42, 0x00]
        ))); // P=1
    }

    #[test]
    fn must_be_start_of_partition_zero() {
        assert!(!is_keyframe_start(&with_descriptor(&[0x00], &KEY))); // S clear
        assert!(!is_keyframe_start(&with_descriptor(&[0x11], &KEY))); // partition 1
        assert!(!is_keyframe_start(&with_descriptor(&[0x01], &KEY)));
    }

    #[test]
    fn n_bit_does_not_matter() {
        assert!(is_keyframe_start(&with_descriptor(&[0x30], &KEY)));
    }

    #[test]
    fn seven_bit_picture_id() {
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x80, 0x05],
            &KEY
        )));
        assert!(!is_keyframe_start(&with_descriptor(
            &[0x90, 0x80, 0x05],
            &[0x31]
        )));
    }

    #[test]
    fn fifteen_bit_picture_id() {
        // If M were ignored, the second picture-id byte (odd) would be read as the frame tag.
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x80, 0x81, 0x23],
            &KEY
        )));
        assert!(!is_keyframe_start(&with_descriptor(
            &[0x90, 0x80, 0x81, 0x22],
            &[0x31]
        )));
    }

    #[test]
    fn all_extensions() {
        // I (15-bit), L, T and K; every skipped byte is odd so a wrong offset would read "inter frame".
        let descriptor = [0x90, 0xf0, 0x81, 0x23, 0x01, 0x41];
        assert!(is_keyframe_start(&with_descriptor(&descriptor, &KEY)));
        assert!(!is_keyframe_start(&with_descriptor(&descriptor, &[0x51])));
    }

    #[test]
    fn single_extensions() {
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x40, 0x03],
            &KEY
        ))); // L
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x20, 0x03],
            &KEY
        ))); // T
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x10, 0x03],
            &KEY
        ))); // K
        assert!(is_keyframe_start(&with_descriptor(
            &[0x90, 0x30, 0x03],
            &KEY
        ))); // T+K share a byte
        assert!(is_keyframe_start(&with_descriptor(&[0x90, 0x00], &KEY))); // X with nothing
    }

    #[test]
    fn truncated_descriptors() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x10])); // no payload header
        assert!(!is_keyframe_start(&[0x90]));
        assert!(!is_keyframe_start(&[0x90, 0x80]));
        assert!(!is_keyframe_start(&[0x90, 0x80, 0x81]));
        assert!(!is_keyframe_start(&[0x90, 0x80, 0x81, 0x23]));
        assert!(!is_keyframe_start(&[0x90, 0xf0, 0x81, 0x23, 0x01, 0x41]));
    }
}
