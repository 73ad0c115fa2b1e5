//! Which of a worker's outgoing datagrams can leave as one UDP GSO send.
//!
//! In this kind of VM a datagram costs ~5 µs of kernel work per `sendmsg`, and `sendmmsg` saves
//! only ~8 % of it; generic segmentation offload saves ~80 % because the kernel walks its stack
//! once per buffer and cuts it into datagrams late (BENCHMARKS.md, the floor). GSO wants one
//! buffer for one destination from one source, cut into equal segments of which only the last
//! may be shorter. A worker's output has that shape naturally: str0m gives a session's datagrams
//! in a row, and a video frame is packetized into equal-sized RTP packets with a shorter last one.
//! Sans-IO: this decides the runs; `UdpShell` sends them.

use std::net::SocketAddr;

/// The most a GSO buffer may hold: one UDP datagram's worth (65,535 less the IP and UDP headers,
/// rounded down so IPv6 with extension headers fits too).
pub const MAX_GSO_BYTES: usize = 64_000;

/// One datagram as the grouping sees it.
pub trait Datagram {
    /// The local address it is sent from.
    fn source(&self) -> SocketAddr;
    /// Where it goes.
    fn destination(&self) -> SocketAddr;
    /// Its UDP payload size, bytes.
    fn size(&self) -> usize;
}

impl Datagram for str0m::net::Transmit {
    fn source(&self) -> SocketAddr {
        self.source
    }
    fn destination(&self) -> SocketAddr {
        self.destination
    }
    fn size(&self) -> usize {
        self.contents.len()
    }
}

/// How many datagrams from the start of `datagrams` form one GSO send (at least 1 unless
/// `datagrams` is empty): same source and destination, the first one's size for all but the last,
/// at most `max_segments` of them and `MAX_GSO_BYTES` in all.
pub fn run_len<D: Datagram>(datagrams: &[D], max_segments: usize) -> usize {
    let Some(first) = datagrams.first() else {
        return 0;
    };
    let size = first.size();
    let mut total = size;
    let mut n = 1;
    while n < datagrams.len().min(max_segments) {
        let d = &datagrams[n];
        let len = d.size();
        if d.destination() != first.destination()
            || d.source() != first.source()
            || len > size
            || len == 0
            || total + len > MAX_GSO_BYTES
        {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            // Only the last segment may be short.
            break;
        }
    }
    n
}

/// `datagrams` cut into consecutive runs by [`run_len`]: one send each.
pub fn runs<D: Datagram>(datagrams: &[D], max_segments: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < datagrams.len() {
        let n = run_len(&datagrams[start..], max_segments).max(1);
        out.push(start..start + n);
        start += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct D(u16, u16, usize);

    impl Datagram for D {
        fn source(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.0))
        }
        fn destination(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.1))
        }
        fn size(&self) -> usize {
            self.2
        }
    }

    fn lens(ds: &[D], max: usize) -> Vec<usize> {
        let runs = runs(ds, max);
        // Consecutive and covering every datagram once.
        assert!(runs.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(runs.last().map_or(0, |r| r.end), ds.len());
        runs.iter().map(|r| r.len()).collect()
    }

    #[test]
    fn a_frame_to_one_viewer_is_one_send() {
        let frame = [D(1, 2, 1200), D(1, 2, 1200), D(1, 2, 1200), D(1, 2, 400)];
        assert_eq!(lens(&frame, 64), vec![4]);
    }

    #[test]
    fn a_short_datagram_ends_the_run() {
        let ds = [D(1, 2, 1200), D(1, 2, 300), D(1, 2, 1200), D(1, 2, 1200)];
        assert_eq!(lens(&ds, 64), vec![2, 2]);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        let ds = [D(1, 2, 300), D(1, 2, 1200), D(1, 2, 1200)];
        assert_eq!(lens(&ds, 64), vec![1, 2]);
    }

    #[test]
    fn other_peers_and_sources_split_runs() {
        let ds = [
            D(1, 2, 1200),
            D(1, 3, 1200),
            D(1, 3, 1200),
            D(9, 3, 1200),
            D(1, 2, 1200),
        ];
        assert_eq!(lens(&ds, 64), vec![1, 2, 1, 1]);
    }

    #[test]
    fn segment_and_byte_limits_hold() {
        let ds: Vec<D> = (0..100).map(|_| D(1, 2, 1200)).collect();
        // 64,000 / 1,200 = 53 segments fit in one buffer.
        assert_eq!(lens(&ds, 64), vec![53, 47]);
        assert_eq!(lens(&ds[..10], 4), vec![4, 4, 2]);
        // Without GSO every datagram is its own send.
        assert_eq!(lens(&ds[..3], 1), vec![1, 1, 1]);
    }

    #[test]
    fn empty_datagrams_never_join_a_run() {
        let ds = [D(1, 2, 0), D(1, 2, 0), D(1, 2, 100), D(1, 2, 0)];
        assert_eq!(lens(&ds, 64), vec![1, 1, 1, 1]);
        assert_eq!(run_len::<D>(&[], 64), 0);
    }
}
