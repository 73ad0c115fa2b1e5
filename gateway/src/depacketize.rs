//! RTP payloads back into codec frames, for recording: H264 (RFC 6184 single NAL unit, STAP-A,
//! FU-A) into access units of AVCC length-prefixed NAL units, delimited by RTP timestamp and
//! marker. Payloads are untrusted: malformed input is dropped, never a panic. Loss (a sequence
//! gap) is reported so the caller can wait for the next keyframe.

use std::time::Instant;

use relay::MediaPacket;

/// One H264 picture.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub rtp_time: u64,
    pub received: Instant,
    /// Contains an IDR slice.
    pub keyframe: bool,
    /// Parameter sets carried in this access unit (the last of each kind).
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
    /// The other NAL units, each prefixed by its 4-byte big-endian length.
    pub avcc: Vec<u8>,
}

struct Building {
    rtp_time: u64,
    received: Instant,
    nals: Vec<Vec<u8>>,
}

/// H264 access-unit assembler for one track.
#[derive(Default)]
pub struct H264Assembler {
    cur: Option<Building>,
    fu: Option<Vec<u8>>,
    last_seq: Option<u64>,
    /// Set when packets went missing (or a fragment could not be rebuilt) since the caller last
    /// cleared it: what follows may not decode until the next keyframe.
    pub lost: bool,
}

impl H264Assembler {
    /// Feed one packet; returns the access units it completed (at most two).
    pub fn push(&mut self, p: &MediaPacket) -> Vec<AccessUnit> {
        let mut done = Vec::new();
        if let Some(last) = self.last_seq {
            if p.seq <= last {
                return done; // duplicate or late: the frame it belonged to is gone already
            }
            if p.seq != last + 1 {
                self.lost = true;
                self.fu = None;
            }
        }
        self.last_seq = Some(p.seq);
        if self.cur.as_ref().is_some_and(|c| c.rtp_time != p.rtp_time) {
            done.extend(self.finish());
        }
        let cur = self.cur.get_or_insert_with(|| Building {
            rtp_time: p.rtp_time,
            received: p.received,
            nals: Vec::new(),
        });
        let pl = &p.payload[..];
        match pl.first().map(|b| b & 0x1f) {
            Some(1..=23) => cur.nals.push(pl.to_vec()),
            Some(24) => {
                // A cut-short body keeps the units before the cut.
                for unit in relay::aggregation_units(&pl[1..]) {
                    let Ok(nal) = unit else { break };
                    if !nal.is_empty() {
                        cur.nals.push(nal.to_vec());
                    }
                }
            }
            Some(28) if pl.len() >= 2 => {
                let (start, end) = (pl[1] & 0x80 != 0, pl[1] & 0x40 != 0);
                if start {
                    let mut nal = vec![(pl[0] & 0xe0) | (pl[1] & 0x1f)];
                    nal.extend_from_slice(&pl[2..]);
                    self.fu = Some(nal);
                } else if let Some(fu) = self.fu.as_mut() {
                    fu.extend_from_slice(&pl[2..]);
                } else {
                    self.lost = true;
                }
                if end && let Some(nal) = self.fu.take() {
                    cur.nals.push(nal);
                }
            }
            _ => {}
        }
        if p.marker {
            done.extend(self.finish());
        }
        done
    }

    fn finish(&mut self) -> Option<AccessUnit> {
        let b = self.cur.take()?;
        self.fu = None;
        let mut au = AccessUnit {
            rtp_time: b.rtp_time,
            received: b.received,
            keyframe: false,
            sps: None,
            pps: None,
            avcc: Vec::new(),
        };
        for nal in b.nals {
            match nal[0] & 0x1f {
                7 => au.sps = Some(nal),
                8 => au.pps = Some(nal),
                9 => {} // access unit delimiter: not needed in MP4
                t => {
                    au.keyframe |= t == 5;
                    au.avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    au.avcc.extend_from_slice(&nal);
                }
            }
        }
        (!au.avcc.is_empty()).then_some(au)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pkt(seq: u64, ts: u64, marker: bool, payload: &[u8]) -> MediaPacket {
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

    #[test]
    fn stap_a_then_fu_a_make_one_keyframe() {
        let mut a = H264Assembler::default();
        // STAP-A: SPS (3 bytes) + PPS (2 bytes).
        let stap = [24, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3];
        assert!(a.push(&pkt(1, 100, false, &stap)).is_empty());
        // FU-A of an IDR slice in three parts.
        assert!(
            a.push(&pkt(2, 100, false, &[0x7c, 0x85, 10, 11]))
                .is_empty()
        );
        assert!(a.push(&pkt(3, 100, false, &[0x7c, 0x05, 12])).is_empty());
        let aus = a.push(&pkt(4, 100, true, &[0x7c, 0x45, 13]));
        assert_eq!(aus.len(), 1);
        let au = &aus[0];
        assert!(au.keyframe);
        assert_eq!(au.sps.as_deref(), Some(&[0x67, 1, 2][..]));
        assert_eq!(au.pps.as_deref(), Some(&[0x68, 3][..]));
        assert_eq!(au.avcc, vec![0, 0, 0, 5, 0x65, 10, 11, 12, 13]);
        assert!(!a.lost);
    }

    #[test]
    fn a_new_timestamp_ends_a_frame_without_marker_and_gaps_are_reported() {
        let mut a = H264Assembler::default();
        assert!(a.push(&pkt(1, 100, false, &[0x41, 1])).is_empty());
        let aus = a.push(&pkt(2, 3100, false, &[0x41, 2]));
        assert_eq!(aus.len(), 1);
        assert!(!aus[0].keyframe);
        assert_eq!(aus[0].rtp_time, 100);
        a.push(&pkt(4, 6100, true, &[0x41, 3]));
        assert!(a.lost);
        // A middle fragment without its start is dropped, not glued to something else.
        let mut b = H264Assembler::default();
        assert!(b.push(&pkt(1, 0, true, &[0x7c, 0x45, 1])).is_empty());
        assert!(b.lost);
        // Garbage does not panic.
        b.push(&pkt(2, 0, true, &[24, 0xff]));
        b.push(&pkt(3, 0, true, &[28]));
        b.push(&pkt(4, 0, true, &[]));
    }
}
