//! NACK compression for the link's `Nack` message, in the shape of RTCP generic NACK (RFC 4585 §6.2.1) but
//! with extended 64-bit sequence numbers: each block is `u64 first | u16 mask`, where bit `i` of the mask means
//! `first + 1 + i` is missing too. A burst of 17 losses costs 10 bytes; 512 isolated losses (the worst case)
//! 5 KiB, well inside a control frame.
//!
//! Blocks must be strictly ascending and non-overlapping (each `first` above the last seq of the previous
//! block). The encoder always produces that, and the decoder insists on it, so a decoded list is sorted and
//! free of duplicates and its length is bounded by counting, not by trusting the peer.

use std::borrow::Cow;

use bytes::BufMut;

use super::MAX_NACK_SEQS;
use super::control::ControlMessage;
use super::error::{DecodeError, EncodeError};
use super::wire::Reader;

/// Seqs covered by one block: its `first` plus 16 mask bits.
const BLOCK_SPAN: u64 = 17;
const BLOCK_LEN: usize = 10;

/// Writes `u16 block count | blocks`. The input may be in any order with duplicates; it is sent sorted and
/// unique. More than [`MAX_NACK_SEQS`] distinct seqs is refused ([`nack_messages`] splits).
pub(crate) fn put_nack(out: &mut impl BufMut, seqs: &[u64]) -> Result<(), EncodeError> {
    let seqs = normalize(seqs);
    if seqs.len() > MAX_NACK_SEQS {
        return Err(EncodeError::TooMany {
            what: "nack seqs",
            count: seqs.len(),
            max: MAX_NACK_SEQS,
        });
    }
    let blocks = compress(&seqs);
    // Fits: at most one block per seq, and MAX_NACK_SEQS < 65536.
    out.put_u16(blocks.len() as u16);
    for (first, mask) in blocks {
        out.put_u64(first);
        out.put_u16(mask);
    }
    Ok(())
}

/// Reads what [`put_nack`] wrote, refusing out-of-order or overlapping blocks, seqs past `u64::MAX` and more
/// than [`MAX_NACK_SEQS`] seqs in total.
pub(crate) fn read_nack(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let count = usize::from(r.u16("nack block count")?);
    // Every block names at least one seq, so more blocks than seqs allowed is over the bound already.
    if count > MAX_NACK_SEQS {
        return Err(r.too_many("nack blocks", count, MAX_NACK_SEQS));
    }
    if r.remaining() < count * BLOCK_LEN {
        return Err(r.malformed("nack blocks"));
    }
    let mut seqs = Vec::with_capacity(count);
    let mut last: Option<u64> = None;
    for _ in 0..count {
        let first = r.u64("nack first seq")?;
        let mask = r.u16("nack mask")?;
        if last.is_some_and(|last| first <= last) {
            return Err(r.malformed("nack blocks out of order"));
        }
        seqs.push(first);
        for bit in 0..16u64 {
            if mask & (1 << bit) == 0 {
                continue;
            }
            let seq = first
                .checked_add(bit + 1)
                .ok_or_else(|| r.malformed("nack seq overflow"))?;
            seqs.push(seq);
        }
        if seqs.len() > MAX_NACK_SEQS {
            return Err(r.too_many("nack seqs", seqs.len(), MAX_NACK_SEQS));
        }
        last = seqs.last().copied();
    }
    Ok(seqs)
}

/// One `Nack` message per [`MAX_NACK_SEQS`] distinct seqs, for a caller whose gap is larger than one message
/// may carry. Empty input gives no messages.
pub fn nack_messages(channel: u32, seqs: &[u64]) -> Vec<ControlMessage> {
    normalize(seqs)
        .chunks(MAX_NACK_SEQS)
        .map(|chunk| ControlMessage::Nack {
            channel,
            seqs: chunk.to_vec(),
        })
        .collect()
}

/// Sorted and deduplicated, copying only when the caller's list is not already so (gap detection produces
/// sorted lists).
fn normalize(seqs: &[u64]) -> Cow<'_, [u64]> {
    if seqs.windows(2).all(|w| w[0] < w[1]) {
        Cow::Borrowed(seqs)
    } else {
        let mut owned = seqs.to_vec();
        owned.sort_unstable();
        owned.dedup();
        Cow::Owned(owned)
    }
}

/// Greedy packing of a sorted, unique list: each block starts at the lowest seq not yet covered.
fn compress(seqs: &[u64]) -> Vec<(u64, u16)> {
    let mut blocks = Vec::new();
    let mut rest = seqs;
    while let Some((&first, tail)) = rest.split_first() {
        let covered = tail.iter().take_while(|&&s| s - first < BLOCK_SPAN).count();
        let mask = tail[..covered]
            .iter()
            .fold(0u16, |mask, &s| mask | 1 << (s - first - 1));
        blocks.push((first, mask));
        rest = &tail[covered..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testkit::Rng;

    fn round_trip(seqs: &[u64]) -> (Vec<u64>, usize) {
        let mut out = Vec::new();
        put_nack(&mut out, seqs).unwrap();
        let mut r = Reader::new(&out, 0x15);
        let decoded = read_nack(&mut r).unwrap();
        r.finish().unwrap();
        (decoded, out.len())
    }

    #[test]
    fn dense_run_packs_seventeen_per_block() {
        let seqs: Vec<u64> = (1000..1000 + MAX_NACK_SEQS as u64).collect();
        let (decoded, len) = round_trip(&seqs);
        assert_eq!(decoded, seqs);
        // 512 = 30 × 17 + 2 → 31 blocks.
        assert_eq!(len, 2 + 31 * BLOCK_LEN);
    }

    #[test]
    fn sparse_seqs_take_one_block_each() {
        let seqs: Vec<u64> = (0..MAX_NACK_SEQS as u64).map(|i| i * 100).collect();
        let (decoded, len) = round_trip(&seqs);
        assert_eq!(decoded, seqs);
        assert_eq!(len, 2 + MAX_NACK_SEQS * BLOCK_LEN);
    }

    #[test]
    fn mixed_pattern_and_mask_edges() {
        // first, first+16 (last mask bit), first+17 (next block), and seqs at the top of the u64 range.
        let seqs = vec![5, 21, 22, 40, 41, 43, u64::MAX - 1, u64::MAX];
        let mut out = Vec::new();
        put_nack(&mut out, &seqs).unwrap();
        assert_eq!(compress(&seqs).len(), 4);
        assert_eq!(round_trip(&seqs).0, seqs);
        assert_eq!(
            compress(&[5, 21, 22]),
            vec![(5, 1 << 15), (22, 0)],
            "21 is bit 15 of block 5; 22 starts a new block"
        );
    }

    #[test]
    fn unsorted_and_duplicated_input_is_sent_sorted_and_unique() {
        let (decoded, _) = round_trip(&[9, 3, 9, 4, 3]);
        assert_eq!(decoded, vec![3, 4, 9]);
        assert_eq!(round_trip(&[]).0, Vec::<u64>::new());
    }

    #[test]
    fn random_sets_round_trip() {
        let mut rng = Rng::new(0x5eed);
        for _ in 0..500 {
            let base = rng.next_u64() >> 1;
            let n = rng.below(MAX_NACK_SEQS as u64 + 1) as usize;
            let spread = 1 + rng.below(64);
            let mut seqs: Vec<u64> = (0..n)
                .map(|_| base + rng.below(spread * n as u64 + 1))
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            assert_eq!(round_trip(&seqs).0, seqs);
        }
    }

    #[test]
    fn more_than_the_bound_is_refused_on_encode() {
        let seqs: Vec<u64> = (0..=MAX_NACK_SEQS as u64).collect();
        assert_eq!(
            put_nack(&mut Vec::new(), &seqs),
            Err(EncodeError::TooMany {
                what: "nack seqs",
                count: 513,
                max: 512
            })
        );
        // Duplicates do not count against the bound.
        let dup: Vec<u64> = (0..MAX_NACK_SEQS as u64).chain([0, 1, 2]).collect();
        assert!(put_nack(&mut Vec::new(), &dup).is_ok());
    }

    #[test]
    fn more_than_the_bound_is_refused_on_decode() {
        // 31 full blocks carry 527 seqs: within the block count bound, over the seq bound.
        let mut body = vec![];
        body.put_u16(31);
        for i in 0..31u64 {
            body.put_u64(i * 17);
            body.put_u16(0xffff);
        }
        assert!(matches!(
            read_nack(&mut Reader::new(&body, 0x15)),
            Err(DecodeError::TooMany {
                what: "nack seqs",
                ..
            })
        ));
        // A block count over the bound is refused before reading any block.
        let mut body = vec![];
        body.put_u16(513);
        assert!(matches!(
            read_nack(&mut Reader::new(&body, 0x15)),
            Err(DecodeError::TooMany {
                what: "nack blocks",
                count: 513,
                ..
            })
        ));
    }

    #[test]
    fn overlapping_blocks_and_overflow_are_malformed() {
        let mut body = vec![];
        body.put_u16(2);
        body.put_u64(10);
        body.put_u16(1); // covers 10, 11
        body.put_u64(11); // overlaps
        body.put_u16(0);
        assert!(matches!(
            read_nack(&mut Reader::new(&body, 0x15)),
            Err(DecodeError::Malformed {
                what: "nack blocks out of order",
                ..
            })
        ));

        let mut body = vec![];
        body.put_u16(1);
        body.put_u64(u64::MAX);
        body.put_u16(1);
        assert!(matches!(
            read_nack(&mut Reader::new(&body, 0x15)),
            Err(DecodeError::Malformed {
                what: "nack seq overflow",
                ..
            })
        ));
    }

    #[test]
    fn nack_messages_split_at_the_bound() {
        let seqs: Vec<u64> = (0..1200).rev().collect();
        let msgs = nack_messages(3, &seqs);
        assert_eq!(msgs.len(), 3);
        let mut all = Vec::new();
        for msg in &msgs {
            let ControlMessage::Nack { channel, seqs } = msg else {
                panic!("not a nack: {msg:?}")
            };
            assert_eq!(*channel, 3);
            assert!(seqs.len() <= MAX_NACK_SEQS);
            assert!(msg.to_bytes().is_ok());
            all.extend_from_slice(seqs);
        }
        assert_eq!(all, (0..1200).collect::<Vec<u64>>());
        assert!(nack_messages(3, &[]).is_empty());
    }
}
