//! Tree placement: for each track, the order in which a node tries the members of the tier above as its
//! parent ([`ranked`]), and for each stream, its home node ([`home_node`]). Every node computes both
//! identically from nothing but the list of live members, with no shared database and no coordination.
//!
//! ## Rendezvous hashing
//! Every (member, track) pair gets a score, a hash of the member's id and the track key; [`ranked`] orders the
//! members by score, highest first (ties, which need a 64-bit collision, go to the greater id, so the order is
//! total), and the first of them is the track's preferred parent. Because a member's score depends only on its
//! own id and the track, the order does not depend on the order of the member list, and membership changes move
//! as little as possible:
//! - a member that **leaves** drops out of every ranking and the others keep their order, so only the tracks
//!   it was the parent of move (for every other track the top is still present and still the top);
//! - a member that **joins** takes only the tracks for which it now scores highest, about 1/N of them, and
//!   takes them from every other member alike.
//!
//! Unlike a hash ring, the tracks of a departed member spread over all the others (each track's runner-up is an
//! independent draw) instead of landing on one neighbour, so one failure does not double one node's load.
//!
//! ## Fan-out limit
//! The per-parent, per-track limit is enforced by the tree ([`crate::tree`]), not here: a parent that already
//! feeds its limit of children for a track redirects the next one, and that child takes the first member in
//! [`ranked`] order that has not redirected it. Since every child walks the same order, a hot track fills the
//! top-ranked member first, then the runner-up, and so on; a track with at most the limit of children (the
//! common case) uses one parent.
//!
//! ## The hash
//! [`hash64`] is a fixed, hand-written 64-bit hash (the splitmix64 finaliser chained over little-endian 8-byte
//! words, length first), so every process on every platform and every build computes the same tree; std's
//! `DefaultHasher` is explicitly unstable across releases and `RandomState` differs per process. It is fast and
//! well mixed, but not keyed and not collision-resistant: node ids are chosen by the operator and track keys
//! contain server-generated session ids, so nobody outside can aim a track at a chosen node. Stream names are
//! chosen by clients, so a client could aim many streams at one [`home_node`]; that node then only holds more
//! directory entries, which are small. Changing the hash moves almost every track in a running cluster
//! during a rolling upgrade, so the unit tests pin its outputs.

/// Anything that can act as a tier's member list: a slice or `Vec` of ids.
///
/// Duplicate ids count once everywhere, so two nodes that see the same members with and without a duplicate
/// still compute the same tree.
pub trait Members {
    /// Each member's id with [`hash64`] of that id.
    fn candidates(&self) -> impl Iterator<Item = (&str, u64)>;
}

impl<S: AsRef<str>> Members for [S] {
    fn candidates(&self) -> impl Iterator<Item = (&str, u64)> {
        self.iter().map(|m| {
            let id = m.as_ref();
            (id, hash64(id.as_bytes()))
        })
    }
}

impl<S: AsRef<str>> Members for Vec<S> {
    fn candidates(&self) -> impl Iterator<Item = (&str, u64)> {
        self.as_slice().candidates()
    }
}

/// Seeds (hex digits of pi, nothing up the sleeve) that keep the two uses of the hash independent: a track's
/// parents and a stream's home must not be the same ranking in disguise.
const SEED: u64 = 0x243F_6A88_85A3_08D3;
const HOME_SEED: u64 = 0xA409_3822_299F_31D0;

/// The splitmix64 finaliser: a bijection on u64 in which every input bit flips each output bit with
/// probability about 1/2, so nearby inputs (ids that differ in one digit) give unrelated outputs.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_seeded(seed: u64, bytes: &[u8]) -> u64 {
    // The length goes in first so that inputs differing only by trailing zero bytes still differ.
    let mut h = mix(seed ^ bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// The stable 64-bit hash of a node id or track key. Same output on every platform, process and release.
pub fn hash64(bytes: &[u8]) -> u64 {
    hash_seeded(SEED, bytes)
}

#[inline]
fn combine(id_hash: u64, key_hash: u64) -> u64 {
    mix(id_hash ^ key_hash)
}

/// A ranking key: higher score first, then greater id, a total order over distinct ids.
type Key<'a> = (u64, &'a str);

fn best<'a>(candidates: impl Iterator<Item = (&'a str, u64)>, key_hash: u64) -> Option<Key<'a>> {
    let mut best: Option<Key<'a>> = None;
    for (id, h) in candidates {
        let key = (combine(h, key_hash), id);
        if best.is_none_or(|b| key > b) {
            best = Some(key);
        }
    }
    best
}

/// All distinct members in rendezvous order for the track, best first: the order in which a child should try
/// them when parents are full.
pub fn ranked<'m, M: Members + ?Sized>(members: &'m M, track: impl AsRef<[u8]>) -> Vec<&'m str> {
    let key_hash = hash64(track.as_ref());
    let mut all: Vec<Key<'m>> = members
        .candidates()
        .map(|(id, h)| (combine(h, key_hash), id))
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.dedup();
    all.into_iter().map(|(_, id)| id).collect()
}

/// A stream's home node: the member that keeps the stream's directory entry (where the origin announces the
/// stream, so that any gateway with a viewer can find it). Rendezvous over the stream name with its own seed,
/// so homes are spread independently of track parents.
pub fn home_node<'m, M: Members + ?Sized>(stream: &str, members: &'m M) -> Option<&'m str> {
    best(
        members.candidates(),
        hash_seeded(HOME_SEED, stream.as_bytes()),
    )
    .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACK: &str = "gw-0.gw.default.svc:7000/0123456789abcdef/video";

    fn relays(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("relay-{i}.relay.default.svc:7000"))
            .collect()
    }

    /// The rendezvous score [`ranked`] orders by, for pinning and checking it.
    fn score(member: &str, track: impl AsRef<[u8]>) -> u64 {
        combine(hash64(member.as_bytes()), hash64(track.as_ref()))
    }

    /// A deterministic Fisher-Yates shuffle (splitmix64 stream), so "any order" is tested without a RNG crate.
    fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
        let mut state = seed;
        let mut out = items.to_vec();
        for i in (1..out.len()).rev() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let j = (mix(state) % (i as u64 + 1)) as usize;
            out.swap(i, j);
        }
        out
    }

    #[test]
    fn hash_values_are_pinned() {
        // Computed by an independent Python transcription of the documented algorithm. If these change, every
        // track of a running cluster moves during a rolling upgrade: change the hash only on purpose.
        assert_eq!(hash64(b""), 0xe9e0_033e_3bad_af36);
        assert_eq!(hash64(b"a"), 0x74d5_df3e_26d6_ab0e);
        assert_eq!(
            hash64(b"relay-0.relay.default.svc:7000"),
            0x6cf1_b444_8f78_03b8
        );
        assert_eq!(
            score("relay-0.relay.default.svc:7000", TRACK),
            0xa1d7_418b_4210_0c9c
        );
        assert_eq!(
            score("relay-1.relay.default.svc:7000", TRACK),
            0xee4d_5bb0_edb5_096d
        );
        assert_eq!(
            score("relay-4.relay.default.svc:7000", TRACK),
            0xdc2b_c666_b5b1_7215
        );
        let members = relays(5);
        assert_eq!(
            ranked(&members, TRACK),
            [1, 4, 2, 3, 0].map(|i| format!("relay-{i}.relay.default.svc:7000"))
        );
        assert_eq!(
            home_node("concert", &members),
            Some("relay-1.relay.default.svc:7000")
        );
    }

    #[test]
    fn hash_separates_lengths_and_every_byte() {
        assert_ne!(hash64(b"ab"), hash64(b"ab\0"));
        assert_ne!(hash64(b""), hash64(b"\0"));
        assert_ne!(hash64(b"12345678"), hash64(b"12345678\0"));
        let base = b"relay-0.relay.default.svc:7000".to_vec();
        for i in 0..base.len() {
            let mut changed = base.clone();
            changed[i] ^= 1;
            assert_ne!(hash64(&changed), hash64(&base), "byte {i}");
        }
        // Track key as str, bytes or owned bytes: the same ranking.
        let members = relays(7);
        let owned: Vec<u8> = TRACK.into();
        assert_eq!(ranked(&members, TRACK), ranked(&members, TRACK.as_bytes()));
        assert_eq!(ranked(&members, TRACK), ranked(&members, &owned));
    }

    #[test]
    fn ranking_is_by_score_and_independent_of_member_order() {
        let members = relays(40);
        for t in 0..50 {
            let track = format!("gw/{t}/video");
            let expected = ranked(&members, &track);
            assert_eq!(expected.len(), 40);
            // Highest score first.
            assert!(
                expected
                    .windows(2)
                    .all(|w| score(w[0], &track) > score(w[1], &track))
            );
            for seed in 0..5 {
                let m = shuffled(&members, seed);
                assert_eq!(ranked(&m, &track), expected);
                assert_eq!(ranked(&m[..], &track), expected);
                assert_eq!(home_node(&track, &m), home_node(&track, &members));
            }
        }
    }

    #[test]
    fn empty_tier_chooses_nothing() {
        let none: Vec<String> = Vec::new();
        assert!(ranked(&none, TRACK).is_empty());
        assert_eq!(home_node("concert", &none), None);
    }

    #[test]
    fn duplicate_members_count_once() {
        let members = relays(6);
        let mut doubled = members.clone();
        doubled.extend(members.iter().take(4).cloned());
        doubled.push(members[2].clone());
        let doubled = shuffled(&doubled, 7);
        for t in 0..40 {
            let track = format!("gw/{t}/video");
            let order = ranked(&doubled, &track);
            assert_eq!(order, ranked(&members, &track));
            assert_eq!(order.len(), 6);
            assert_eq!(home_node(&track, &doubled), home_node(&track, &members));
        }
    }

    #[test]
    fn leaving_moves_only_the_leavers_tracks_and_joining_only_the_joiners() {
        let members = relays(30);
        let tracks: Vec<String> = (0..3000).map(|t| format!("gw/{t}/audio")).collect();
        let gone = &members[17];
        let fewer: Vec<String> = members.iter().filter(|m| *m != gone).cloned().collect();
        let joined = "relay-new.relay.default.svc:7000".to_string();
        let more: Vec<String> = members.iter().cloned().chain([joined.clone()]).collect();
        let mut took = 0;
        for t in &tracks {
            let before = ranked(&members, t);
            // A leaver drops out of the ranking and the others keep their order, so the track moves only if
            // the leaver was its parent, and then to the runner-up.
            let after_leave = ranked(&fewer, t);
            let without: Vec<&str> = before.iter().copied().filter(|m| m != gone).collect();
            assert_eq!(after_leave, without);
            // A joiner slots in somewhere and the others keep their order.
            let after_join = ranked(&more, t);
            let others: Vec<&str> = after_join
                .iter()
                .copied()
                .filter(|m| *m != joined)
                .collect();
            assert_eq!(others, before);
            took += usize::from(after_join[0] == joined);
        }
        // 3000 / 31 ≈ 97, standard deviation ≈ 9.7.
        assert!((50..150).contains(&took), "{took}");
    }
}
