//! Reads the codec (sample entry four-character code) of each track straight from the MP4 box
//! tree.
//!
//! The `mp4` crate (0.14) only decodes the sample entries it knows (avc1, hev1, vp09, mp4a,
//! tx3g): an `Opus` entry is silently skipped, so `Mp4Track::media_type()` fails for it although
//! the sample tables (stts, stsz, stco, stss) are parsed and `Mp4Reader::read_sample` returns the
//! Opus packets fine. All we lack is proof that the audio track *is* Opus, so this walks
//! moov/trak/mdia/minf/stbl/stsd and reports the first entry's type per track id (and, for
//! Opus, the `dOps` channel count and pre-skip). The same holds for `hvc1` and `av01`, so for
//! video entries the codec configuration box (`avcC`, `hvcC`, `av1C`) is returned too, and
//! [`hvcc_parameter_sets`] reads the H265 one.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

/// What the first sample entry of a track says about its codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEntry {
    /// Four-character code of the sample entry, e.g. `avc1`, `Opus`, `mp4a`.
    pub fourcc: [u8; 4],
    /// From `dOps`, for Opus entries.
    pub opus_channels: Option<u8>,
    /// From `dOps`, for Opus entries: samples (at 48 kHz) the decoder drops at the start.
    pub opus_pre_skip: Option<u16>,
    /// For video entries: the body of the first child box (`avcC`, `hvcC`, `av1C`).
    pub video_config: Option<Vec<u8>>,
}

impl SampleEntry {
    /// The four-character code as text (lossy for non-ASCII codes).
    pub fn fourcc_str(&self) -> String {
        String::from_utf8_lossy(&self.fourcc).into_owned()
    }
}

/// Sample entries of every track in `file`, keyed by track id.
pub fn sample_entries(file: &[u8]) -> Result<HashMap<u32, SampleEntry>> {
    let moov = children(file)?
        .into_iter()
        .find(|(t, _)| t == b"moov")
        .map(|(_, body)| body)
        .context("no moov box")?;
    let mut out = HashMap::new();
    for (t, trak) in children(moov)? {
        if &t != b"trak" {
            continue;
        }
        let track_id = track_id(trak)?;
        let stsd = descend(trak, &[b"mdia", b"minf", b"stbl", b"stsd"])?
            .with_context(|| format!("track {track_id} has no stsd"))?;
        // stsd is a full box: version/flags (4) and entry_count (4) precede the entries.
        let entries = stsd.get(8..).context("stsd too short")?;
        let Some((fourcc, entry)) = children(entries)?.into_iter().next() else {
            bail!("track {track_id} has an empty stsd");
        };
        let mut se = SampleEntry {
            fourcc,
            opus_channels: None,
            opus_pre_skip: None,
            video_config: None,
        };
        if matches!(&fourcc, b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"av01") {
            // A visual sample entry has 78 bytes of fixed fields before its child boxes.
            let boxes = entry.get(78..).context("visual sample entry too short")?;
            se.video_config = children(boxes)?.into_iter().next().map(|(_, b)| b.to_vec());
        }
        if &fourcc == b"Opus" {
            // An audio sample entry has 28 bytes of fixed fields before its child boxes.
            let boxes = entry.get(28..).context("Opus sample entry too short")?;
            if let Some((_, dops)) = children(boxes)?.into_iter().find(|(t, _)| t == b"dOps") {
                // dOps: Version(1) OutputChannelCount(1) PreSkip(2) ...
                se.opus_channels = dops.get(1).copied();
                se.opus_pre_skip = dops.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
            }
        }
        out.insert(track_id, se);
    }
    Ok(out)
}

/// The NAL unit length size and the parameter sets (VPS, SPS, PPS… in stored order) of an
/// `hvcC` body (ISO/IEC 14496-15 §8.3.3.1).
pub fn hvcc_parameter_sets(hvcc: &[u8]) -> Result<(usize, Vec<Vec<u8>>)> {
    let fixed = hvcc.get(..23).context("hvcC too short")?;
    let length_size = usize::from(fixed[21] & 3) + 1;
    let mut rest = &hvcc[23..];
    let mut nals = Vec::new();
    for _ in 0..fixed[22] {
        let head = rest.get(..3).context("hvcC array cut short")?;
        let count = u16::from_be_bytes([head[1], head[2]]);
        rest = &rest[3..];
        for _ in 0..count {
            let len = rest.get(..2).context("hvcC NAL length cut short")?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            nals.push(rest.get(2..2 + len).context("hvcC NAL cut short")?.to_vec());
            rest = &rest[2 + len..];
        }
    }
    Ok((length_size, nals))
}

fn track_id(trak: &[u8]) -> Result<u32> {
    let tkhd = children(trak)?
        .into_iter()
        .find(|(t, _)| t == b"tkhd")
        .map(|(_, b)| b)
        .context("trak without tkhd")?;
    // Version 1 widens the two timestamps before track_ID from 4 to 8 bytes.
    let offset = match tkhd.first() {
        Some(1) => 4 + 8 + 8,
        Some(_) => 4 + 4 + 4,
        None => bail!("empty tkhd"),
    };
    let b = tkhd.get(offset..offset + 4).context("tkhd too short")?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn descend<'a>(mut body: &'a [u8], path: &[&[u8; 4]]) -> Result<Option<&'a [u8]>> {
    for want in path {
        match children(body)?.into_iter().find(|(t, _)| t == *want) {
            Some((_, b)) => body = b,
            None => return Ok(None),
        }
    }
    Ok(Some(body))
}

/// Splits a run of boxes into (type, body) pairs.
fn children(mut data: &[u8]) -> Result<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    while data.len() >= 8 {
        let size32 = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let fourcc = [data[4], data[5], data[6], data[7]];
        let (header, size) = match size32 {
            0 => (8, data.len()),
            1 => {
                let b = data.get(8..16).context("truncated 64-bit box size")?;
                let mut s = [0u8; 8];
                s.copy_from_slice(b);
                let size = usize::try_from(u64::from_be_bytes(s)).context("box too large")?;
                (16, size)
            }
            n => (8, n as usize),
        };
        if size < header || size > data.len() {
            bail!(
                "box {} of size {size} does not fit in {} bytes",
                String::from_utf8_lossy(&fourcc),
                data.len()
            );
        }
        out.push((fourcc, &data[header..size]));
        data = &data[size..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_box_overrunning_its_parent() {
        let data = [0, 0, 0, 100, b'm', b'o', b'o', b'v', 0, 0];
        assert!(children(&data).is_err());
    }
}
