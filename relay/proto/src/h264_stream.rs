//! H264 stream inspection across packets (RFC 6184 payloads): the encoder quirks that break viewers who join
//! late or decode like WebRTC does.
//!
//! - B-frames (VideoToolbox sends them unless told not to): WebRTC decoders have no reordering, so they stutter.
//! - IDRs without SPS/PPS (x264 with `repeat-headers=0`, some hardware encoders): a viewer that starts at such a
//!   keyframe cannot decode anything. The inspector keeps the latest in-band parameter sets so the gateway can
//!   send them ahead of a keyframe run ([`h264_parameter_sets_stap_a`]).
//!
//! Input is untrusted: anything short or malformed is skipped, never a panic.

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const NON_IDR_SLICE: u8 = 1;
const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const FORBIDDEN_BIT: u8 = 0x80;
const TYPE_MASK: u8 = 0x1f;
const NRI_MASK: u8 = 0x60;
const FU_START: u8 = 0x80;

/// Parameter sets larger than this are not kept (real ones are tens of bytes; scaling lists make a few hundred).
pub const MAX_PARAMETER_SET_BYTES: usize = 1024;

/// Per-track H264 inspector: feed it every RTP payload of the track in arrival order.
#[derive(Debug, Default, Clone)]
pub struct H264Inspector {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// The access unit (RTP timestamp) being seen.
    au: Option<AccessUnit>,
    /// SPS / PPS seen since the previous IDR access unit (or since the start).
    sps_since_idr: bool,
    pps_since_idr: bool,
    b_frames: u64,
    idr_without_parameter_sets: u64,
}

#[derive(Debug, Clone, Copy)]
struct AccessUnit {
    rtp_time: u64,
    idr: bool,
    b: bool,
}

impl H264Inspector {
    /// An inspector that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One RTP payload (single NAL unit, STAP-A, or FU-A fragment) with its extended RTP timestamp. The
    /// verdict on an access unit is taken when a packet of another access unit arrives, so parameter sets
    /// reordered behind their IDR still count.
    pub fn push(&mut self, rtp_time: u64, payload: &[u8]) {
        if self.au.is_none_or(|au| au.rtp_time != rtp_time) {
            self.finish_access_unit();
            self.au = Some(AccessUnit {
                rtp_time,
                idr: false,
                b: false,
            });
        }
        let Some((&header, rest)) = payload.split_first() else {
            return;
        };
        if header & FORBIDDEN_BIT != 0 {
            return;
        }
        match header & TYPE_MASK {
            1..=23 => self.nal(payload, true),
            STAP_A => {
                // Validate the whole aggregate before taking anything from it.
                let Some(units) = stap_a_units(rest) else {
                    return;
                };
                for nal in units {
                    self.nal(nal, true);
                }
            }
            FU_A => {
                let Some(&fu) = rest.first() else {
                    return;
                };
                if fu & FU_START == 0 || fu & TYPE_MASK == 0 {
                    return;
                }
                // Rebuild the NAL header; the fragment holds the start of the NAL's body (the slice header).
                let mut head = [0u8; 24];
                head[0] = (header & (FORBIDDEN_BIT | NRI_MASK)) | (fu & TYPE_MASK);
                let body = &rest[1..];
                let n = body.len().min(head.len() - 1);
                head[1..=n].copy_from_slice(&body[..n]);
                // A fragmented parameter set is never cached: only its start is here.
                self.nal(&head[..=n], false);
            }
            _ => {}
        }
    }

    /// Latest in-band (SPS, PPS), once both have been seen whole.
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        Some((self.sps.as_deref()?, self.pps.as_deref()?))
    }

    /// Parameter sets learnt out of band (another copy of the track saw them in-band); counters and
    /// access-unit tracking are untouched. Ignored unless they are an SPS and a PPS of bounded size.
    pub fn learn_parameter_sets(&mut self, sps: &[u8], pps: &[u8]) {
        let is = |nal: &[u8], t: u8| {
            nal.first()
                .is_some_and(|&h| h & FORBIDDEN_BIT == 0 && h & TYPE_MASK == t)
                && nal.len() <= MAX_PARAMETER_SET_BYTES
        };
        if is(sps, SPS) && is(pps, PPS) {
            keep(&mut self.sps, sps);
            keep(&mut self.pps, pps);
        }
    }

    /// Access units carrying at least one B slice.
    pub fn b_frames(&self) -> u64 {
        self.b_frames
    }

    /// IDR access units whose SPS and PPS were neither in the access unit nor sent since the previous IDR.
    pub fn idr_without_parameter_sets(&self) -> u64 {
        self.idr_without_parameter_sets
    }

    fn nal(&mut self, nal: &[u8], whole: bool) {
        let Some(&header) = nal.first() else {
            return;
        };
        if header & FORBIDDEN_BIT != 0 {
            return;
        }
        match header & TYPE_MASK {
            SPS => {
                self.sps_since_idr = true;
                if whole && nal.len() <= MAX_PARAMETER_SET_BYTES {
                    keep(&mut self.sps, nal);
                }
            }
            PPS => {
                self.pps_since_idr = true;
                if whole && nal.len() <= MAX_PARAMETER_SET_BYTES {
                    keep(&mut self.pps, nal);
                }
            }
            t @ (NON_IDR_SLICE | IDR) => {
                let Some(au) = self.au.as_mut() else {
                    return;
                };
                if t == IDR {
                    au.idr = true;
                }
                if slice_type(&nal[1..]).is_some_and(|st| st % 5 == 1) {
                    au.b = true;
                }
            }
            _ => {}
        }
    }

    fn finish_access_unit(&mut self) {
        let Some(au) = self.au.take() else {
            return;
        };
        if au.b {
            self.b_frames += 1;
        }
        if au.idr {
            if !(self.sps_since_idr && self.pps_since_idr) {
                self.idr_without_parameter_sets += 1;
            }
            self.sps_since_idr = false;
            self.pps_since_idr = false;
        }
    }
}

fn keep(slot: &mut Option<Vec<u8>>, nal: &[u8]) {
    if slot.as_deref() != Some(nal) {
        *slot = Some(nal.to_vec());
    }
}

/// The NAL units of a STAP-A body, or None if any is malformed (then the packet is distrusted whole).
fn stap_a_units(rest: &[u8]) -> Option<Vec<&[u8]>> {
    let mut units = Vec::new();
    for unit in crate::aggregation_units(rest) {
        let nal = unit.ok()?;
        if nal.is_empty() || nal[0] & FORBIDDEN_BIT != 0 {
            return None;
        }
        units.push(nal);
    }
    Some(units)
}

/// `slice_type` from the start of a slice header (bytes after the NAL header): `first_mb_in_slice` ue(v),
/// then `slice_type` ue(v). Emulation prevention bytes are removed first.
fn slice_type(body: &[u8]) -> Option<u32> {
    let mut rbsp = [0u8; 16];
    let mut len = 0;
    let mut zeros = 0;
    for &b in body {
        if len == rbsp.len() {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp[len] = b;
        len += 1;
    }
    let mut bits = BitReader {
        data: &rbsp[..len],
        pos: 0,
    };
    bits.ue()?; // first_mb_in_slice
    let st = bits.ue()?;
    (st <= 9).then_some(st)
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    /// Unsigned exp-Golomb; None past the data or beyond 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut value: u64 = 1;
        for _ in 0..zeros {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from(value - 1).ok()
    }
}

/// An H264 track's latest (SPS, PPS) NAL units, shared: handed with a keyframe run to a new
/// subscriber, which may have to start at a later keyframe sent without them.
pub type ParameterSets = (std::sync::Arc<[u8]>, std::sync::Arc<[u8]>);

/// A keyframe run is about to be sent to a new subscriber (a viewer, another worker, a child node) and
/// `frame` is its first frame's packets, first one first. When that frame carries no SPS, the packet to
/// send ahead of it: a STAP-A of `sps` and `pps` with the frame's timestamp and the sequence number just
/// before it, so that every hop and rewriter places it right in front of the keyframe.
pub fn parameter_sets_packet<'a>(
    frame: impl IntoIterator<Item = &'a crate::SharedPacket>,
    sps: &[u8],
    pps: &[u8],
) -> Option<crate::SharedPacket> {
    let mut frame = frame.into_iter();
    let first = frame.next()?;
    let carries_sps = std::iter::once(first)
        .chain(frame.take_while(|p| p.rtp_time == first.rtp_time))
        .any(|p| crate::h264_parameter_sets(&p.payload).0);
    if carries_sps {
        return None;
    }
    Some(std::sync::Arc::new(crate::MediaPacket {
        seq: first.seq.checked_sub(1)?,
        rtp_time: first.rtp_time,
        marker: false,
        pt: first.pt,
        payload: h264_parameter_sets_stap_a(sps, pps)?.into(),
        keyframe_start: true,
        received: first.received,
    }))
}

/// An RTP payload aggregating SPS and PPS (RFC 6184 section 5.7.1): STAP-A header with F the OR of the units'
/// F bits and NRI their maximum, then each unit behind its 16-bit size. None for an empty or oversized unit.
pub fn h264_parameter_sets_stap_a(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(1 + 4 + sps.len() + pps.len());
    let (&s, &p) = (sps.first()?, pps.first()?);
    let f = (s | p) & FORBIDDEN_BIT;
    let nri = (s & NRI_MASK).max(p & NRI_MASK);
    out.push(f | nri | STAP_A);
    for nal in [sps, pps] {
        let size = u16::try_from(nal.len()).ok()?;
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(nal);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS_NAL: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS_NAL: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
    // Slice headers: first_mb_in_slice = 0 ('1'), then slice_type ue.
    // slice_type 7 (I, all) = ue '0001000' -> bits 1 0001000 -> 0x88
    const IDR_SLICE: [u8; 3] = [0x65, 0x88, 0x84];
    // slice_type 5 (P, all) = ue '00110' -> bits 1 00110 xx -> 0x98
    const P_SLICE: [u8; 3] = [0x41, 0x9a, 0x02];
    // slice_type 6 (B, all) = ue '00111' -> bits 1 00111 -> 0x9c
    const B_SLICE: [u8; 3] = [0x01, 0x9e, 0x02];
    // slice_type 1 (B) = ue '010' -> bits 1 010 -> 0xa0
    const B1_SLICE: [u8; 2] = [0x21, 0xa0];

    fn stap(units: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78];
        for u in units {
            out.extend_from_slice(&(u.len() as u16).to_be_bytes());
            out.extend_from_slice(u);
        }
        out
    }

    fn fu_start(nal: &[u8]) -> Vec<u8> {
        let mut out = vec![(nal[0] & 0xe0) | FU_A, FU_START | (nal[0] & TYPE_MASK)];
        out.extend_from_slice(&nal[1..]);
        out
    }

    #[test]
    fn slice_types() {
        assert_eq!(slice_type(&IDR_SLICE[1..]), Some(7));
        assert_eq!(slice_type(&P_SLICE[1..]), Some(5));
        assert_eq!(slice_type(&B_SLICE[1..]), Some(6));
        assert_eq!(slice_type(&B1_SLICE[1..]), Some(1));
        // first_mb_in_slice = 3 ('00100'), slice_type 1 ('010'): 0010 0010 -> 0x22
        assert_eq!(slice_type(&[0x22]), Some(1));
        assert_eq!(slice_type(&[]), None);
        assert_eq!(slice_type(&[0x00, 0x00, 0x00, 0x00, 0x00]), None);
        // slice_type 10 is out of range.
        assert_eq!(slice_type(&[0b1000_1011, 0]), None);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        // first_mb_in_slice with 16 leading zeros: 00 00 03 01 ... would otherwise misparse.
        // bits: 0000000000000000 1 0000000000000000 (value 65535), then slice_type 1 = '010'
        let raw = [0x00, 0x00, 0x80, 0x00, 0x20];
        let escaped = [0x00, 0x00, 0x03, 0x80, 0x00, 0x20];
        assert_eq!(slice_type(&raw), slice_type(&escaped));
        assert_eq!(slice_type(&escaped), Some(1));
    }

    #[test]
    fn b_frames_are_counted_per_access_unit() {
        let mut h = H264Inspector::new();
        h.push(0, &stap(&[&SPS_NAL, &PPS_NAL, &IDR_SLICE]));
        h.push(3000, &P_SLICE);
        h.push(1500, &B_SLICE);
        h.push(1500, &B_SLICE); // second slice of the same frame
        h.push(6000, &fu_start(&B1_SLICE));
        h.push(6000, &[0x7c, 0x01, 0x00]); // continuation: ignored
        h.push(9000, &P_SLICE);
        assert_eq!(h.b_frames(), 2);
        assert_eq!(h.idr_without_parameter_sets(), 0);
    }

    #[test]
    fn p_only_stream_has_no_b_frames() {
        let mut h = H264Inspector::new();
        h.push(0, &SPS_NAL);
        h.push(0, &PPS_NAL);
        h.push(0, &IDR_SLICE);
        for i in 1..100 {
            h.push(i * 3000, &P_SLICE);
        }
        assert_eq!(h.b_frames(), 0);
        assert_eq!(h.idr_without_parameter_sets(), 0);
        assert_eq!(h.parameter_sets(), Some((&SPS_NAL[..], &PPS_NAL[..])));
    }

    #[test]
    fn idr_without_parameter_sets_ever() {
        let mut h = H264Inspector::new();
        h.push(0, &fu_start(&IDR_SLICE));
        h.push(3000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 1);
        assert_eq!(h.parameter_sets(), None);
    }

    #[test]
    fn parameter_sets_only_at_start() {
        let mut h = H264Inspector::new();
        h.push(0, &SPS_NAL);
        h.push(0, &PPS_NAL);
        h.push(0, &IDR_SLICE);
        h.push(3000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 0);
        h.push(6000, &IDR_SLICE);
        h.push(6000, &IDR_SLICE); // second slice: same access unit, counted once
        h.push(9000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 1);
        h.push(12_000, &fu_start(&IDR_SLICE));
        h.push(15_000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 2);
        // Still known from the start, for the gateway to resend.
        assert_eq!(h.parameter_sets(), Some((&SPS_NAL[..], &PPS_NAL[..])));
    }

    #[test]
    fn parameter_sets_reordered_behind_the_idr_count() {
        let mut h = H264Inspector::new();
        h.push(0, &IDR_SLICE);
        h.push(0, &stap(&[&SPS_NAL, &PPS_NAL]));
        h.push(3000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 0);
    }

    #[test]
    fn parameter_sets_sent_between_idrs_count() {
        let mut h = H264Inspector::new();
        h.push(0, &stap(&[&SPS_NAL, &PPS_NAL, &IDR_SLICE]));
        h.push(3000, &P_SLICE);
        h.push(4000, &stap(&[&SPS_NAL, &PPS_NAL])); // own timestamp
        h.push(6000, &IDR_SLICE);
        h.push(9000, &P_SLICE);
        assert_eq!(h.idr_without_parameter_sets(), 0);
    }

    #[test]
    fn latest_parameter_sets_are_kept() {
        let mut h = H264Inspector::new();
        h.push(0, &stap(&[&SPS_NAL, &PPS_NAL]));
        let sps2 = [0x67, 0x64, 0x00, 0x28];
        h.push(3000, &sps2);
        assert_eq!(h.parameter_sets(), Some((&sps2[..], &PPS_NAL[..])));
        // Fragmented or oversized ones are not taken.
        h.push(6000, &fu_start(&SPS_NAL));
        let mut huge = vec![0x68];
        huge.resize(MAX_PARAMETER_SET_BYTES + 1, 0x11);
        h.push(6000, &huge);
        assert_eq!(h.parameter_sets(), Some((&sps2[..], &PPS_NAL[..])));
    }

    #[test]
    fn learnt_parameter_sets() {
        let mut h = H264Inspector::new();
        h.learn_parameter_sets(&PPS_NAL, &SPS_NAL); // swapped: refused
        h.learn_parameter_sets(&[], &PPS_NAL);
        assert_eq!(h.parameter_sets(), None);
        h.learn_parameter_sets(&SPS_NAL, &PPS_NAL);
        assert_eq!(h.parameter_sets(), Some((&SPS_NAL[..], &PPS_NAL[..])));
        assert_eq!(h.idr_without_parameter_sets(), 0);
    }

    #[test]
    fn malformed_stap_a_is_ignored_whole() {
        let mut h = H264Inspector::new();
        let mut bad = stap(&[&SPS_NAL, &PPS_NAL]);
        bad.extend_from_slice(&[0x00, 0x09, 0x65]);
        h.push(0, &bad);
        assert_eq!(h.parameter_sets(), None);
    }

    #[test]
    fn stap_a_builder() {
        let p = h264_parameter_sets_stap_a(&SPS_NAL, &PPS_NAL).unwrap();
        assert_eq!(p, stap(&[&SPS_NAL, &PPS_NAL]));
        assert!(crate::is_keyframe_start(crate::Codec::H264, &p));
        assert_eq!(crate::h264_parameter_sets(&p), (true, true));
        // NRI is the maximum of the units'.
        let p = h264_parameter_sets_stap_a(&[0x27, 1], &[0x48, 2]).unwrap();
        assert_eq!(p[0], 0x40 | STAP_A);
        let mut h = H264Inspector::new();
        h.push(0, &p);
        assert_eq!(h.parameter_sets(), Some((&[0x27, 1][..], &[0x48, 2][..])));
        assert_eq!(h264_parameter_sets_stap_a(&[], &PPS_NAL), None);
        assert_eq!(
            h264_parameter_sets_stap_a(&vec![0x67; 70_000], &PPS_NAL),
            None
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut h = H264Inspector::new();
        for a in 0..=255u8 {
            h.push(u64::from(a), &[a]);
            for b in 0..=255u8 {
                h.push(u64::from(b), &[a, b]);
                h.push(0, &[0x7c, a, b]);
                h.push(0, &[0x78, 0x00, 0x02, a, b]);
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 64];
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (state >> 58) as usize % buf.len();
            let mut x = state;
            for byte in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            // Bias towards the interesting headers.
            buf[0] = match state % 4 {
                0 => 0x78,
                1 => 0x7c,
                2 => buf[0] & 0x7f,
                _ => buf[0],
            };
            h.push(state >> 60, &buf[..len]);
            let _ = slice_type(&buf[..len]);
        }
        if let Some((sps, pps)) = h.parameter_sets() {
            assert!(sps.len() <= MAX_PARAMETER_SET_BYTES && pps.len() <= MAX_PARAMETER_SET_BYTES);
        }
    }
}
