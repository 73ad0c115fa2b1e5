//! Counts RTP datagrams from their clear header, without decrypting them.
//!
//! SRTP encrypts the payload only: version, payload type, sequence number and SSRC stay readable.
//! That is enough to count packets and bytes and to find loss from sequence-number gaps, which is
//! what a load generator's "thin" viewers need: decrypting and depacketizing every packet for
//! hundreds of viewers costs the client as much CPU as the gateway spends forwarding them.
//!
//! Sans-IO: the caller hands over each datagram it has classified as RTP (not RTCP), with the time
//! it arrived. Loss per SSRC follows RFC 3550 A.3 (expected = highest − first + 1 extended
//! sequence numbers; lost = expected − received), with a 128-packet window to tell duplicates from
//! late arrivals. Repair streams (RTX) have their own SSRC and sequence space; their payload types
//! are given with [`RtpCounter::set_repair_payload_types`] so that their packets are not counted
//! as media and their gaps (lost repairs, or repairs never asked for) not as media loss.

use std::time::Instant;

use serde::Serialize;

/// How far back (in sequence numbers) a late packet can still be told from a duplicate.
const WINDOW: u64 = 128;

/// Extended sequence numbers start this many 2¹⁶ cycles up, so that a packet from before the
/// first one received (reordering at the very start) still has a place below it.
const FIRST_CYCLE: u64 = 1 << 16;

/// One SSRC's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SsrcCount {
    /// The stream.
    pub ssrc: u32,
    /// Payload type of its first packet.
    pub payload_type: u8,
    /// Whether the payload type is a repair (RTX) one.
    pub repair: bool,
    /// Distinct sequence numbers received.
    pub packets: u64,
    /// UDP payload bytes of every datagram, duplicates included (what crossed the wire).
    pub bytes: u64,
    /// Datagrams whose sequence number had already been received.
    pub duplicates: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers from the lowest to the highest received, inclusive.
    pub expected: u64,
    /// `expected − packets`: never received (so far; a late packet still reduces it).
    pub lost: u64,
    #[serde(skip)]
    first_ext: u64,
    #[serde(skip)]
    highest_ext: u64,
    /// Bit k: `highest_ext − k` was received.
    #[serde(skip)]
    window: u128,
}

impl SsrcCount {
    fn new(ssrc: u32, payload_type: u8, repair: bool, seq: u16) -> Self {
        let ext = (FIRST_CYCLE << 16) | u64::from(seq);
        SsrcCount {
            ssrc,
            payload_type,
            repair,
            first_ext: ext,
            highest_ext: ext,
            window: 0,
            ..SsrcCount::default()
        }
    }

    fn on_packet(&mut self, seq: u16, len: usize) {
        self.bytes += len as u64;
        // The extended sequence number nearest to the highest so far: a forward jump of less than
        // half the space is new, anything else is late (RFC 3550's rule, without probation: the
        // gateway keeps a viewer's sequence numbers continuous).
        let delta = seq.wrapping_sub(self.highest_ext as u16) as i16;
        let ext = self.highest_ext.saturating_add_signed(i64::from(delta));
        if self.packets == 0 || ext > self.highest_ext {
            let shift = ext - self.highest_ext;
            self.window = if shift >= WINDOW {
                1
            } else {
                (self.window << shift) | 1
            };
            self.highest_ext = ext;
            self.packets += 1;
        } else {
            let back = self.highest_ext - ext;
            let bit = 1u128.checked_shl(back as u32).unwrap_or(0);
            if back < WINDOW && self.window & bit != 0 {
                self.duplicates += 1;
                return;
            }
            // Beyond the window a duplicate cannot be told from a late packet: count it as late.
            self.window |= bit;
            self.packets += 1;
            self.reordered += 1;
            self.first_ext = self.first_ext.min(ext);
        }
        self.expected = self.highest_ext - self.first_ext + 1;
        self.lost = self.expected.saturating_sub(self.packets);
    }
}

/// Totals over a viewer's streams, plus each stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RtpCounts {
    /// RTP datagrams received (every SSRC, duplicates included).
    pub datagrams: u64,
    /// Their UDP payload bytes (RTP header + encrypted payload + SRTP tag).
    pub bytes: u64,
    /// Distinct packets on media (non-repair) SSRCs.
    pub media_packets: u64,
    /// Sequence numbers expected on media SSRCs (see [`SsrcCount::expected`]).
    pub media_expected: u64,
    /// Of which never received: loss before any repair.
    pub media_lost: u64,
    /// Packets on repair (RTX) SSRCs.
    pub repair_packets: u64,
    /// Late and duplicate datagrams, all SSRCs.
    pub reordered: u64,
    /// Of those, datagrams whose sequence number was already seen.
    pub duplicates: u64,
    /// Datagrams too short or not RTP version 2.
    pub malformed: u64,
    /// Per SSRC, in order of first arrival.
    pub streams: Vec<SsrcCount>,
}

impl RtpCounts {
    /// Media loss before repair, as a fraction of the expected packets (0 when none expected).
    pub fn media_loss(&self) -> f64 {
        self.media_lost as f64 / self.media_expected.max(1) as f64
    }
}

/// Counts one viewer's RTP datagrams by SSRC.
#[derive(Debug, Clone, Default)]
pub struct RtpCounter {
    /// A viewer has two to four SSRCs (audio, video, their repairs): a short list beats a map.
    streams: Vec<SsrcCount>,
    repair_pts: Vec<u8>,
    datagrams: u64,
    bytes: u64,
    malformed: u64,
    first_at: Option<Instant>,
}

impl RtpCounter {
    /// An empty counter.
    pub fn new() -> Self {
        RtpCounter::default()
    }

    /// Payload types that carry repairs (RTX), as negotiated. Applies to streams seen from now on.
    pub fn set_repair_payload_types(&mut self, pts: impl IntoIterator<Item = u8>) {
        self.repair_pts = pts.into_iter().collect();
    }

    /// One datagram the caller classified as RTP, received at `at`.
    pub fn on_datagram(&mut self, packet: &[u8], at: Instant) {
        self.datagrams += 1;
        self.bytes += packet.len() as u64;
        let (Some(&[b0, b1, s0, s1]), Some(ssrc)) = (
            packet.get(..4).and_then(|h| <&[u8; 4]>::try_from(h).ok()),
            packet
                .get(8..12)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes),
        ) else {
            self.malformed += 1;
            return;
        };
        if b0 >> 6 != 2 {
            self.malformed += 1;
            return;
        }
        self.first_at.get_or_insert(at);
        let seq = u16::from_be_bytes([s0, s1]);
        let stream = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => &mut self.streams[i],
            None => {
                let pt = b1 & 0x7f;
                let repair = self.repair_pts.contains(&pt);
                self.streams.push(SsrcCount::new(ssrc, pt, repair, seq));
                let last = self.streams.len() - 1;
                &mut self.streams[last]
            }
        };
        stream.on_packet(seq, packet.len());
    }

    /// When the first RTP datagram arrived.
    pub fn first_at(&self) -> Option<Instant> {
        self.first_at
    }

    /// The counts so far.
    pub fn counts(&self) -> RtpCounts {
        let mut c = RtpCounts {
            datagrams: self.datagrams,
            bytes: self.bytes,
            malformed: self.malformed,
            streams: self.streams.clone(),
            ..RtpCounts::default()
        };
        for s in &self.streams {
            if s.repair {
                c.repair_packets += s.packets;
            } else {
                c.media_packets += s.packets;
                c.media_expected += s.expected;
                c.media_lost += s.lost;
            }
            c.reordered += s.reordered;
            c.duplicates += s.duplicates;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len.max(12)];
        p[0] = 0x80;
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    fn feed(c: &mut RtpCounter, pt: u8, ssrc: u32, seqs: &[u16]) {
        let now = Instant::now();
        for &s in seqs {
            c.on_datagram(&rtp(pt, s, ssrc, 100), now);
        }
    }

    #[test]
    fn gaps_are_loss_and_bytes_are_counted() {
        let mut c = RtpCounter::new();
        feed(&mut c, 96, 1, &[10, 11, 13, 14, 17]);
        let n = c.counts();
        assert_eq!((n.datagrams, n.bytes), (5, 500));
        assert_eq!((n.media_packets, n.media_expected, n.media_lost), (5, 8, 3));
        assert!((n.media_loss() - 3.0 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut c = RtpCounter::new();
        feed(&mut c, 96, 1, &[65533, 65534, 65535, 0, 2]);
        let n = c.counts();
        assert_eq!((n.media_packets, n.media_expected, n.media_lost), (5, 6, 1));
    }

    #[test]
    fn late_packets_fill_gaps_and_duplicates_do_not() {
        let mut c = RtpCounter::new();
        // 3 arrives late, 5 twice, 1 before the first one received (reordered at the start).
        feed(&mut c, 96, 1, &[2, 4, 3, 5, 5, 1, 65535]);
        let n = c.counts();
        assert_eq!(n.media_lost, 1, "{n:?}"); // only 0 is missing between 65535 and 5
        assert_eq!((n.media_packets, n.media_expected), (6, 7));
        assert_eq!((n.reordered, n.duplicates), (3, 1));
        assert_eq!(n.datagrams, 7);
    }

    #[test]
    fn a_jump_beyond_the_window_forgets_the_history() {
        let mut c = RtpCounter::new();
        feed(&mut c, 96, 1, &[0, 1, 500, 1]);
        let n = c.counts();
        // 1 is older than the window after the jump: counted as late, not as a duplicate.
        assert_eq!((n.media_lost, n.duplicates, n.reordered), (497, 0, 1));
    }

    #[test]
    fn repair_streams_are_counted_apart() {
        let mut c = RtpCounter::new();
        c.set_repair_payload_types([97]);
        feed(&mut c, 96, 1, &[1, 3]);
        feed(&mut c, 97, 2, &[100, 105]);
        // Marker bit set on an audio packet: the payload type is still 111.
        feed(&mut c, 111 | 0x80, 3, &[7, 8]);
        let n = c.counts();
        assert_eq!(n.repair_packets, 2);
        assert_eq!((n.media_packets, n.media_expected, n.media_lost), (4, 5, 1));
        assert_eq!(n.streams.len(), 3);
        assert_eq!(n.streams[2].payload_type, 111);
        assert!(n.streams[1].repair && !n.streams[0].repair);
    }

    #[test]
    fn malformed_datagrams_are_counted_not_parsed() {
        let mut c = RtpCounter::new();
        c.on_datagram(&[0x80, 96, 0, 1], Instant::now());
        let mut v1 = rtp(96, 1, 1, 20);
        v1[0] = 0x40;
        c.on_datagram(&v1, Instant::now());
        let n = c.counts();
        assert_eq!((n.datagrams, n.malformed, n.media_packets), (2, 2, 0));
        assert_eq!(c.first_at(), None);
    }
}
