//! VP9 RTP payload inspection (RFC 9628, formerly draft-ietf-payload-vp9): the first descriptor byte says
//! whether a packet begins a frame and whether that frame is predicted from earlier pictures.

const I: u8 = 0x80;
const P: u8 = 0x40;
const L: u8 = 0x20;
const B: u8 = 0x08;
const M: u8 = 0x80;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    if b0 & B == 0 || b0 & P != 0 {
        return false;
    }
    if b0 & L == 0 {
        return true;
    }
    // With spatial layers, the upper layers of a key picture also begin frames without inter-picture
    // prediction; only the base layer begins the keyframe, otherwise one picture would count several times.
    let layer_at = if b0 & I == 0 {
        1
    } else {
        match payload.get(1) {
            Some(&pid) if pid & M != 0 => 3,
            Some(_) => 2,
            None => return false,
        }
    };
    matches!(payload.get(layer_at), Some(&layer) if (layer >> 1) & 0x07 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_without_prediction() {
        assert!(is_keyframe_start(&[0x08, 0x82, 0x49, 0x83]));
        assert!(is_keyframe_start(&[0x0c, 0x82])); // B and E: a one-packet key frame
    }

    #[test]
    fn predicted_or_not_beginning() {
        assert!(!is_keyframe_start(&[0x48, 0x82])); // P set
        assert!(!is_keyframe_start(&[0x00, 0x82])); // middle packet
        assert!(!is_keyframe_start(&[0x04, 0x82])); // end packet
        assert!(!is_keyframe_start(&[0xc8, 0x01])); // I + P + B
    }

    #[test]
    fn picture_id_without_layers() {
        assert!(is_keyframe_start(&[0x88, 0x05]));
        assert!(is_keyframe_start(&[0x88, 0x81, 0x23]));
        assert!(is_keyframe_start(&[0x88])); // picture id not needed when there is no layer byte to find
    }

    #[test]
    fn flexible_mode_and_scalability_structure() {
        assert!(is_keyframe_start(&[0x98, 0x05])); // I + F + B
        assert!(is_keyframe_start(&[0x8a, 0x05, 0x18])); // I + B + V
        assert!(!is_keyframe_start(&[0xd8, 0x05])); // flexible, predicted
    }

    #[test]
    fn base_spatial_layer_only() {
        // I + L + B, 7-bit picture id, layer byte, TL0PICIDX.
        assert!(is_keyframe_start(&[0xa8, 0x05, 0x00, 0x00]));
        assert!(!is_keyframe_start(&[0xa8, 0x05, 0x02, 0x00])); // SID 1
        assert!(!is_keyframe_start(&[0xa8, 0x05, 0x0e, 0x00])); // SID 7
        // Temporal id, switching-up and inter-layer bits do not matter.
        assert!(is_keyframe_start(&[0xa8, 0x05, 0xf1, 0x00]));
    }

    #[test]
    fn base_layer_with_fifteen_bit_picture_id() {
        // If M were ignored, 0x23 would be read as the layer byte (SID 1).
        assert!(is_keyframe_start(&[0xa8, 0x81, 0x23, 0x00, 0x00]));
        assert!(!is_keyframe_start(&[0xa8, 0x81, 0x00, 0x02, 0x00]));
    }

    #[test]
    fn layers_without_picture_id() {
        assert!(is_keyframe_start(&[0x28, 0x00, 0x00]));
        assert!(!is_keyframe_start(&[0x28, 0x02, 0x00]));
    }

    #[test]
    fn truncated() {
        assert!(!is_keyframe_start(&[]));
        assert!(!is_keyframe_start(&[0xa8]));
        assert!(!is_keyframe_start(&[0xa8, 0x05]));
        assert!(!is_keyframe_start(&[0xa8, 0x81, 0x23]));
        assert!(!is_keyframe_start(&[0x28]));
    }
}
