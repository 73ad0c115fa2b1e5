//! AV1 RTP payload inspection (AV1 RTP payload format, section 4.4): the aggregation header marks the first
//! packet of a new coded video sequence, which is what a decoder joining mid-stream needs.

const Z: u8 = 0x80;
const N: u8 = 0x08;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    match payload {
        // A new sequence cannot begin with the continuation of an earlier OBU, and a bare aggregation header
        // carries no sequence at all; either means the packet is not what its N bit claims.
        [header, _, ..] => header & N != 0 && header & Z == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sequence_bit() {
        assert!(is_keyframe_start(&[0x08, 0x0a, 0x0b, 0x00]));
        assert!(is_keyframe_start(&[0x18, 0x0a, 0x0b])); // W=1
        assert!(is_keyframe_start(&[0x48, 0x0a])); // Y: last OBU continues in the next packet
    }

    #[test]
    fn other_packets() {
        assert!(!is_keyframe_start(&[0x00, 0x0a]));
        assert!(!is_keyframe_start(&[0x10, 0x32])); // W=1, no N
        assert!(!is_keyframe_start(&[0xc0, 0x32])); // middle fragment
        assert!(!is_keyframe_start(&[0x88, 0x0a])); // N with Z is contradictory
    }

    #[test]
    fn too_short() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0x08]));
    }
}
