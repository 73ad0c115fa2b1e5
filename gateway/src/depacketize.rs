//! RTP payloads back into codec frames, for recording. One [`Assembler`] per video track frames
//! packets into pictures (by RTP timestamp and marker) and leaves the payload format to its codec:
//! H264 (`h264`, RFC 6184) and H265 (`h265`, RFC 7798) become access units of 4-byte
//! length-prefixed NAL units, AV1 (`av1`, the AOM RTP payload format) becomes a temporal unit of
//! OBUs with size fields, which is what the MP4 bindings of each codec store. Parameter sets
//! (SPS/PPS, VPS/SPS/PPS, the AV1 sequence header) are kept for the sample entry.
//!
//! Payloads are untrusted: a malformed packet is counted and the frame it belongs to is dropped,
//! never a panic. So is a frame that lost a packet (a sequence gap, a fragment without its start
//! or end): writing it would put garbage in the file. After a dropped frame [`Assembler::lost`]
//! is set so the caller can wait for the next keyframe.

mod av1;
mod h264;
mod h265;
mod nal;

pub(crate) use av1::leb128;

use std::time::Instant;

use relay_proto::MediaPacket;

/// One picture (an H264/H265 access unit, an AV1 temporal unit), ready to be an MP4 sample.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// RTP timestamp of the picture, extended to 64 bits.
    pub rtp_time: u64,
    /// When its first packet arrived.
    pub received: Instant,
    /// A random access point: IDR/IRAP, or an AV1 key frame with its sequence header.
    pub keyframe: bool,
    /// The sample bytes as the codec's MP4 binding stores them (parameter sets left out for
    /// H264/H265; they go to the sample entry).
    pub data: Vec<u8>,
}

/// Why a frame cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The sender broke the payload format (counted in [`Assembler::malformed`]).
    Malformed,
    /// A fragment lost its start or end.
    Incomplete,
}

/// What differs between payload formats: what one packet adds to the frame being built, and
/// what a complete frame becomes.
trait PayloadFormat: Send {
    /// Adds the units (NAL units, OBUs) this packet completes to `units`.
    fn push(&mut self, payload: &[u8], units: &mut Vec<Vec<u8>>) -> Result<(), Damage>;
    /// The frame ended or was dropped: forget any fragment in progress. Err if one was pending.
    fn end_frame(&mut self) -> Result<(), Damage>;
    /// Turns an intact frame's units into (sample bytes, keyframe); keeps its parameter sets.
    /// `None`: nothing to write (only parameter sets or delimiters).
    fn finish(&mut self, units: Vec<Vec<u8>>) -> Result<Option<(Vec<u8>, bool)>, Damage>;
    /// The latest complete set of parameter sets, in the order the sample entry wants them.
    fn parameter_sets(&self) -> Option<Vec<Vec<u8>>>;
}

/// The video codecs the recorder can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H264 (RFC 6184).
    H264,
    /// H265 (RFC 7798).
    H265,
    /// AV1 (the AOM RTP payload format).
    Av1,
}

struct Building {
    rtp_time: u64,
    received: Instant,
    units: Vec<Vec<u8>>,
    damaged: bool,
}

/// Frame assembler for one video track.
pub struct Assembler {
    format: Box<dyn PayloadFormat>,
    cur: Option<Building>,
    last_seq: Option<u64>,
    /// Set when a frame was dropped (loss or damage) since the caller last cleared it: what
    /// follows may not decode until the next keyframe.
    pub lost: bool,
    /// Packets that broke the payload format.
    pub malformed: u64,
}

impl Assembler {
    /// An assembler for `codec`'s RTP payload format, with nothing received yet.
    pub fn new(codec: VideoCodec) -> Assembler {
        let format: Box<dyn PayloadFormat> = match codec {
            VideoCodec::H264 => Box::<h264::H264>::default(),
            VideoCodec::H265 => Box::<h265::H265>::default(),
            VideoCodec::Av1 => Box::<av1::Av1>::default(),
        };
        Assembler {
            format,
            cur: None,
            last_seq: None,
            lost: false,
            malformed: 0,
        }
    }

    /// The latest parameter sets (H264: SPS, PPS; H265: VPS, SPS, PPS; AV1: the sequence
    /// header OBU), once the stream has sent a complete set.
    pub fn parameter_sets(&self) -> Option<Vec<Vec<u8>>> {
        self.format.parameter_sets()
    }

    /// Feed one packet; returns the frames it completed (at most two).
    pub fn push(&mut self, p: &MediaPacket) -> Vec<AccessUnit> {
        let mut done = Vec::new();
        let mut gap = false;
        if let Some(last) = self.last_seq {
            if p.seq <= last {
                return done; // duplicate or late: the frame it belonged to is gone already
            }
            gap = p.seq != last + 1;
        }
        self.last_seq = Some(p.seq);
        // Lost packets may have ended the current frame or begun this one: both are suspect.
        if let Some(cur) = self.cur.as_mut() {
            cur.damaged |= gap;
        }
        if self.cur.as_ref().is_some_and(|c| c.rtp_time != p.rtp_time) {
            done.extend(self.finish());
        }
        let cur = self.cur.get_or_insert_with(|| Building {
            rtp_time: p.rtp_time,
            received: p.received,
            units: Vec::new(),
            damaged: false,
        });
        cur.damaged |= gap;
        if !cur.damaged
            && let Err(d) = self.format.push(&p.payload, &mut cur.units)
        {
            cur.damaged = true;
            self.malformed += u64::from(d == Damage::Malformed);
        }
        if p.marker {
            done.extend(self.finish());
        }
        done
    }

    fn finish(&mut self) -> Option<AccessUnit> {
        let b = self.cur.take()?;
        let ended = self.format.end_frame();
        let built = if b.damaged {
            Err(Damage::Incomplete)
        } else {
            ended.and_then(|()| self.format.finish(b.units))
        };
        match built {
            Ok(Some((data, keyframe))) => Some(AccessUnit {
                rtp_time: b.rtp_time,
                received: b.received,
                keyframe,
                data,
            }),
            Ok(None) => None,
            Err(d) => {
                self.malformed += u64::from(d == Damage::Malformed);
                self.lost = true;
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;
    use std::time::Instant;

    use relay_proto::MediaPacket;

    pub(crate) fn pkt(seq: u64, ts: u64, marker: bool, payload: &[u8]) -> MediaPacket {
        MediaPacket {
            seq,
            rtp_time: ts,
            marker,
            pt: 96,
            payload: Arc::from(payload),
            keyframe_start: false,
            received: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::pkt;
    use super::*;

    #[test]
    fn a_gap_drops_both_frames_it_may_have_hit() {
        let mut a = Assembler::new(VideoCodec::H264);
        assert!(a.push(&pkt(1, 100, false, &[0x41, 1])).is_empty());
        // A new timestamp ends a frame without a marker.
        let aus = a.push(&pkt(2, 3100, false, &[0x41, 2]));
        assert_eq!(aus.len(), 1);
        assert_eq!((aus[0].rtp_time, aus[0].keyframe), (100, false));
        assert!(!a.lost);
        // Seq 3 is lost: it may have been the end of the 3100 frame or the start of 6100.
        assert!(a.push(&pkt(4, 6100, true, &[0x41, 3])).is_empty());
        assert!(a.lost);
        // The next frame after a marker is clean again; duplicates are ignored.
        assert_eq!(a.push(&pkt(5, 9100, true, &[0x41, 4])).len(), 1);
        assert!(a.push(&pkt(5, 9100, true, &[0x41, 4])).is_empty());
        assert_eq!(a.malformed, 0);
    }
}
