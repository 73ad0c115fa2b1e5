//! H264 bitstream framing: MP4 stores NAL units length-prefixed (AVCC), RTP packetizers and
//! depacketizers speak Annex B (start codes). This file converts between them and fingerprints a
//! frame by its slice data, which is the one part of a frame every hop must deliver unchanged.

use anyhow::{Context, Result, bail};

/// The four-byte start code; str0m's depacketizer emits this form, so we produce it too.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit type of a non-IDR slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// The NAL unit type of a NAL unit (header byte included).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Converts one AVCC sample (NAL units each prefixed by a big-endian length of
/// `length_size` bytes) to Annex B, optionally putting parameter sets in front.
///
/// Parameter sets go first on keyframes because a viewer that joins at a keyframe has nothing
/// else to decode it with: WebRTC has no out-of-band `avcC`.
pub fn avcc_to_annexb(sample: &[u8], length_size: usize, prefix_nals: &[&[u8]]) -> Result<Vec<u8>> {
    // Access unit delimiters mean nothing over RTP (str0m drops them anyway).
    length_prefixed_to_annexb(sample, length_size, prefix_nals, |nal| {
        nal_type(nal) != Some(9)
    })
}

/// H265's NAL unit type (RFC 7798 §1.1.4): six bits after the forbidden bit.
pub fn h265_nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// [`avcc_to_annexb`] for an `hvc1` sample: the same framing, H265's delimiter (35) dropped.
pub fn hvcc_to_annexb(sample: &[u8], length_size: usize, prefix_nals: &[&[u8]]) -> Result<Vec<u8>> {
    length_prefixed_to_annexb(sample, length_size, prefix_nals, |nal| {
        h265_nal_type(nal) != Some(35)
    })
}

fn length_prefixed_to_annexb(
    sample: &[u8],
    length_size: usize,
    prefix_nals: &[&[u8]],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    if !(1..=4).contains(&length_size) {
        bail!("invalid AVCC NAL length size {length_size}");
    }
    let extra: usize = prefix_nals.iter().map(|n| n.len() + START_CODE.len()).sum();
    let mut out = Vec::with_capacity(sample.len() + extra + 16);
    for nal in prefix_nals {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < length_size {
            bail!("truncated AVCC length prefix ({} bytes left)", rest.len());
        }
        let (len_bytes, tail) = rest.split_at(length_size);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let nal = tail.get(..len).with_context(|| {
            format!(
                "AVCC NAL of {len} bytes overruns sample ({} left)",
                tail.len()
            )
        })?;
        if keep(nal) && !nal.is_empty() {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        rest = &tail[len..];
    }
    Ok(out)
}

/// Iterates over the NAL units of an Annex B buffer, start codes (3 or 4 bytes) stripped.
///
/// Trailing zero bytes belong to the next start code (or are `trailing_zero_8bits`), so they are
/// not part of a NAL unit; stripping them makes a NAL compare equal however it was framed.
pub fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut ranges = Vec::with_capacity(starts.len());
    for (n, &(_, payload_start)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(data.len(), |&(sc, _)| sc);
        let mut nal = &data[payload_start..end];
        while let [head @ .., 0] = nal {
            nal = head;
        }
        if !nal.is_empty() {
            ranges.push(nal);
        }
    }
    ranges.into_iter()
}

/// True if the Annex B frame holds an IDR slice.
pub fn annexb_is_keyframe(data: &[u8]) -> bool {
    annexb_nals(data).any(|n| nal_type(n) == Some(NAL_IDR))
}

/// Fingerprint of the coded picture: FNV-1a over the slice NAL units (types 1 and 5) in order,
/// each preceded by its length so that a split in a different place cannot collide.
///
/// Parameter sets and SEI are left out on purpose: a keyframe cache, the publisher or a relay may
/// legitimately repeat, add or drop them, while the slices are the picture itself.
/// Returns `None` when the buffer holds no slice at all.
pub fn vcl_hash(annexb: &[u8]) -> Option<u64> {
    let mut hash = Fnv1a::new();
    let mut any = false;
    for nal in annexb_nals(annexb) {
        if matches!(nal_type(nal), Some(NAL_SLICE | NAL_IDR)) {
            any = true;
            hash.write(&(nal.len() as u64).to_be_bytes());
            hash.write(nal);
        }
    }
    any.then(|| hash.finish())
}

/// Hash of an opaque packet (used for Opus), with the same stable function as [`vcl_hash`].
pub fn bytes_hash(data: &[u8]) -> u64 {
    let mut hash = Fnv1a::new();
    hash.write(data);
    hash.finish()
}

/// FNV-1a, 64 bit: stable across Rust versions and processes, unlike `DefaultHasher`, so a hash
/// printed by one tool can be looked up by another.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avcc_converts_to_annexb_with_prefix() -> Result<()> {
        let sample = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 3, 0x41, 0xbb, 0xcc];
        let sps = [0x67u8, 1, 2];
        let pps = [0x68u8, 3];
        let out = avcc_to_annexb(&sample, 4, &[&sps, &pps])?;
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1,
                0x41, 0xbb, 0xcc
            ]
        );
        Ok(())
    }

    #[test]
    fn avcc_rejects_overrun() {
        let sample = [0, 0, 0, 9, 0x65, 0xaa];
        assert!(avcc_to_annexb(&sample, 4, &[]).is_err());
        assert!(avcc_to_annexb(&[0, 0], 4, &[]).is_err());
    }

    #[test]
    fn nals_split_on_both_start_code_lengths() {
        let data = [0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x65, 7, 0, 0, 1, 0x41];
        let nals: Vec<&[u8]> = annexb_nals(&data).collect();
        assert_eq!(nals, vec![&[0x67, 9][..], &[0x65, 7][..], &[0x41][..]]);
        assert!(annexb_is_keyframe(&data));
    }

    #[test]
    fn vcl_hash_ignores_parameter_sets_and_framing() {
        let with_ps = [
            0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x68, 8, 0, 0, 1, 0x65, 7, 6,
        ];
        let bare = [0, 0, 0, 1, 0x65, 7, 6];
        let other = [0, 0, 0, 1, 0x65, 7, 5];
        assert_eq!(vcl_hash(&with_ps), vcl_hash(&bare));
        assert_ne!(vcl_hash(&bare), vcl_hash(&other));
        assert_eq!(vcl_hash(&[0, 0, 0, 1, 0x67, 9]), None);
    }
}
