//! Tree placement: for each track, which node of the tier above is its parent, computed identically by every
//! node from nothing but the list of live members, with no shared database and no coordination.
//!
//! ## Rendezvous hashing
//! Every (member, track) pair gets a score, [`score`]`(member, track)`; a track's preferred parent is the member
//! with the highest score (ties, which need a 64-bit collision, go to the greater id, so the order is total).
//! Because a member's score depends only on its own id and the track, the choice does not depend on the order
//! of the member list, and membership changes move as little as possible:
//! - a member that **leaves** moves only the tracks it was the parent of (for every other track the maximum is
//!   still present and still the maximum);
//! - a member that **joins** takes only the tracks for which it now scores highest, about 1/N of them, and
//!   takes them from every other member alike.
//!
//! Unlike a hash ring, the tracks of a departed member spread over all the others (each track's runner-up is an
//! independent draw) instead of landing on one neighbour, so one failure does not double one node's load.
//!
//! ## Fan-out limit
//! A hot track may have more children (nodes of the tier below that want it) than one parent should feed. With
//! a per-parent, per-track limit `L`, the children of track `t` are themselves ranked by a second score for `t`
//! ([`child_score`]), and the k-th child in that ranking, counting only the children that currently want `t`,
//! goes to the ⌊k / L⌋-th member of the tier in rendezvous order. So the top-ranked member serves the first `L`
//! children, the runner-up the next `L`, and so on: exactly the "first member whose slot is not full" rule,
//! computed without shared state. If even the whole tier cannot hold the children within `L`
//! (children > members × L), every member is used and the children are split as evenly as possible (each parent
//! takes ⌊children / members⌋ or one more; [`Assignment::is_overloaded`] says so) rather than piling the excess
//! on the last member. Refusing viewers would be worse than overloading relays a little; alarming is the
//! caller's business.
//!
//! The trade-off: to compute its parent exactly, a child must know the set of children that want the track.
//! - The parent (or the origin) knows it, since every child subscribes through it, and can tell a child where
//!   to go ([`assign`]).
//! - A child that knows nothing starts at rank 0 ([`parent`]); a parent that is full answers "full", and the
//!   child asks [`redirect`] for the next member in rendezvous order. Redirects move strictly down the
//!   ranking, so they cannot loop, and they work even when the child's member list differs from the parent's.
//! - Child churn is cheap but not free: a child joining or leaving shifts the children ranked after it by one
//!   place, so at most one child crosses each boundary between two parents' blocks (⌈children / L⌉ − 1 moves
//!   at most, a handful).
//! - A parent that leaves hands its block to the next member in the ranking, and each later block moves one
//!   member down too, so every child from the leaver's block on changes parent. Tracks that did not use the
//!   leaver do not move at all, and a track with at most `L` children (the common case) only ever uses one.
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

/// Anything that can act as a tier's member list: a slice or `Vec` of ids, or a prepared [`Tier`].
///
/// Duplicate ids count once everywhere, so two nodes that see the same members with and without a duplicate
/// still compute the same tree.
pub trait Members {
    /// Each member's id with [`hash64`] of that id (a [`Tier`] computes it once; a slice computes it per call).
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

impl<S: AsRef<str>, const N: usize> Members for [S; N] {
    fn candidates(&self) -> impl Iterator<Item = (&str, u64)> {
        self.as_slice().candidates()
    }
}

/// A tier's live members, deduplicated and sorted, with each id's hash computed once: placing many tracks
/// over the same membership then costs one multiply-and-mix per member per track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tier {
    ids: Vec<Box<str>>,
    hashes: Vec<u64>,
}

impl Tier {
    pub fn new<I, S>(members: I) -> Tier
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut ids: Vec<Box<str>> = members.into_iter().map(|m| Box::from(m.as_ref())).collect();
        ids.sort_unstable();
        ids.dedup();
        let hashes = ids.iter().map(|id| hash64(id.as_bytes())).collect();
        Tier { ids, hashes }
    }

    /// Distinct members.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.binary_search_by(|m| (**m).cmp(id)).is_ok()
    }

    /// The members, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|id| &**id)
    }
}

impl<S: AsRef<str>> FromIterator<S> for Tier {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Tier {
        Tier::new(iter)
    }
}

impl Members for Tier {
    fn candidates(&self) -> impl Iterator<Item = (&str, u64)> {
        self.ids
            .iter()
            .map(|id| &**id)
            .zip(self.hashes.iter().copied())
    }
}

/// Seeds (hex digits of pi, nothing up the sleeve) that keep the three uses of the hash independent: a track's
/// parents, the order of its children, and a stream's home must not be the same ranking in disguise.
const SEED: u64 = 0x243F_6A88_85A3_08D3;
const CHILD_SALT: u64 = 0x1319_8A2E_0370_7344;
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

/// Rendezvous score of `member` for `track`: the member with the highest score is the track's preferred parent.
pub fn score(member: &str, track: impl AsRef<[u8]>) -> u64 {
    combine(hash64(member.as_bytes()), hash64(track.as_ref()))
}

/// The score that orders a track's children ([`Tier`] members of the tier below) when they are spread over
/// several parents. Salted so it is independent of [`score`]: a node that could be both parent and child of
/// one track is not systematically first in both rankings.
pub fn child_score(child: &str, track: impl AsRef<[u8]>) -> u64 {
    child_key(child, hash64(track.as_ref())).0
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

/// Up to `n` distinct members in rendezvous order (best first).
fn top<'a>(
    candidates: impl Iterator<Item = (&'a str, u64)>,
    key_hash: u64,
    n: usize,
) -> Vec<Key<'a>> {
    // A short sorted buffer costs O(members × n) with no allocation per member; the common case is n ≤ 4
    // (a few hundred children at L = 50). Beyond that, sorting everything is cheaper.
    const BUFFERED: usize = 16;
    if n == 0 {
        return Vec::new();
    }
    if n <= BUFFERED {
        let mut buf: Vec<Key<'a>> = Vec::with_capacity(n + 1);
        for (id, h) in candidates {
            let key = (combine(h, key_hash), id);
            if buf.len() == n && buf.last().is_some_and(|last| key <= *last) {
                continue;
            }
            let at = buf.partition_point(|k| *k > key);
            if buf.get(at) == Some(&key) {
                continue; // a duplicate id
            }
            buf.insert(at, key);
            buf.truncate(n);
        }
        buf
    } else {
        let mut all: Vec<Key<'a>> = candidates
            .map(|(id, h)| (combine(h, key_hash), id))
            .collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.dedup();
        all.truncate(n);
        all
    }
}

/// The track's preferred parent: the top of the rendezvous ranking. `None` only when there are no members.
pub fn parent<M: Members + ?Sized>(members: &M, track: impl AsRef<[u8]>) -> Option<&str> {
    best(members.candidates(), hash64(track.as_ref())).map(|(_, id)| id)
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

/// The member ranked just after `full_parent` for this track: where a child goes when `full_parent` says it is
/// full. `None` when `full_parent` was the last (every member is full: the caller attaches to the top-ranked
/// one anyway or to the origin). `full_parent` need not be a member, since its score can be computed from its
/// id alone; so a child and a parent with different views of the tier still make progress, and since each
/// redirect goes strictly down the ranking, a chain of redirects ends.
pub fn redirect<'m, M: Members + ?Sized>(
    members: &'m M,
    track: impl AsRef<[u8]>,
    full_parent: &str,
) -> Option<&'m str> {
    let key_hash = hash64(track.as_ref());
    let bound = (
        combine(hash64(full_parent.as_bytes()), key_hash),
        full_parent,
    );
    best(
        members
            .candidates()
            .filter(|&(id, h)| (combine(h, key_hash), id) < bound),
        key_hash,
    )
    .map(|(_, id)| id)
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

/// How `n` ranked children are cut into contiguous blocks, one block per parent in rendezvous order: the first
/// `extra` blocks hold `per + 1` children and the rest `per` (the last one possibly fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    n: usize,
    /// At least 1.
    per: usize,
    extra: usize,
}

impl Split {
    /// The fan-out rule for `n` children over a tier of `members` distinct members (`members` ≥ 1).
    fn new(n: usize, limit: usize, members: usize) -> Split {
        let members = members.max(1);
        if n <= members.saturating_mul(limit) {
            // Blocks of `limit` in rank order: the k-th child goes to the ⌊k / limit⌋-th member.
            Split {
                n,
                per: limit.max(1),
                extra: 0,
            }
        } else {
            // The tier cannot hold them within the limit: use every member, as evenly as possible, rather than
            // piling the excess on the last one. Here n > members × limit ≥ members, so n / members ≥ 1.
            Split {
                n,
                per: n / members,
                extra: n % members,
            }
        }
    }

    fn start(&self, block: usize) -> usize {
        let big = block.min(self.extra);
        let start = big
            .saturating_mul(self.per.saturating_add(1))
            .saturating_add((block - big).saturating_mul(self.per));
        start.min(self.n)
    }

    /// The block (parent rank) of the k-th child.
    fn block_of(&self, k: usize) -> usize {
        // Saturating: with a limit of usize::MAX, `per + 1` must not overflow (extra is then 0).
        let big = self.per.saturating_add(1);
        let big_children = self.extra.saturating_mul(big);
        if k < big_children {
            k / big
        } else {
            self.extra + (k - big_children) / self.per
        }
    }

    /// Parents used.
    fn blocks(&self) -> usize {
        if self.n == 0 {
            0
        } else {
            self.block_of(self.n - 1) + 1
        }
    }

    /// The most children any parent gets.
    fn largest(&self) -> usize {
        if self.extra > 0 {
            self.per.saturating_add(1)
        } else {
            self.per.min(self.n)
        }
    }
}

/// Where each child of one track is attached at one tier: the result of the fan-out rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<'m, 'c> {
    /// The members used, in rendezvous order; each serves one contiguous block of `children`.
    parents: Vec<&'m str>,
    /// The distinct children, in child-score order.
    children: Vec<&'c str>,
    split: Split,
    limit: usize,
}

impl<'m, 'c> Assignment<'m, 'c> {
    /// The parents used, best first. Each serves a contiguous block of [`children`](Self::children).
    pub fn parents(&self) -> &[&'m str] {
        &self.parents
    }

    /// The distinct children, in the order that decides their blocks.
    pub fn children(&self) -> &[&'c str] {
        &self.children
    }

    /// The most children any one parent serves: at most the limit, unless [`is_overloaded`](Self::is_overloaded).
    pub fn max_per_parent(&self) -> usize {
        self.split.largest()
    }

    /// True when the tier cannot hold the children within the limit (children > members × limit), so every
    /// member is used and each takes ⌊children / members⌋ or one more.
    pub fn is_overloaded(&self) -> bool {
        self.split.largest() > self.limit
    }

    pub fn parent_of(&self, child: &str) -> Option<&'m str> {
        let k = self.children.iter().position(|c| *c == child)?;
        self.parents.get(self.split.block_of(k)).copied()
    }

    /// The children served by `parent` (empty when it serves none).
    pub fn children_of(&self, parent: &str) -> &[&'c str] {
        self.parents
            .iter()
            .position(|p| *p == parent)
            .and_then(|rank| {
                self.children
                    .get(self.split.start(rank)..self.split.start(rank + 1))
            })
            .unwrap_or(&[])
    }

    /// Every (child, parent) pair, in child order.
    pub fn iter(&self) -> impl Iterator<Item = (&'c str, &'m str)> + '_ {
        self.children
            .iter()
            .enumerate()
            .filter_map(|(k, c)| Some((*c, *self.parents.get(self.split.block_of(k))?)))
    }
}

fn child_key(child: &str, key_hash: u64) -> Key<'_> {
    (
        combine(hash64(child.as_bytes()) ^ CHILD_SALT, key_hash),
        child,
    )
}

/// The distinct children in child-score order.
fn rank_children<'c>(children: impl Iterator<Item = &'c str>, key_hash: u64) -> Vec<Key<'c>> {
    let mut keys: Vec<Key<'c>> = children.map(|c| child_key(c, key_hash)).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.dedup();
    keys
}

/// The parents needed for `n` ranked children and how the children split among them. `None` only when there
/// are no members.
fn plan<'m>(
    candidates: impl Iterator<Item = (&'m str, u64)>,
    key_hash: u64,
    n: usize,
    limit: usize,
) -> Option<(Vec<&'m str>, Split)> {
    // A limit of 0 would admit nobody; the tree must still carry the track, so it means 1.
    let limit = limit.max(1);
    let wanted = n.div_ceil(limit).max(1);
    let top = top(candidates, key_hash, wanted);
    if top.is_empty() {
        return None;
    }
    // `top` holds min(wanted, distinct members): when it is short, it is the whole tier.
    let split = if top.len() < wanted {
        Split::new(n, limit, top.len())
    } else {
        Split::new(n, limit, usize::MAX)
    };
    let parents = top
        .into_iter()
        .take(split.blocks())
        .map(|(_, id)| id)
        .collect();
    Some((parents, split))
}

/// The fan-out rule for one track at one tier: which member feeds each of `children` (the nodes of the tier
/// below that want the track; duplicates count once), with at most `limit` children per parent while the tier
/// can hold them. `None` when there are no members. What a parent (or the origin) computes to tell children
/// where to attach, and what a parent checks before accepting one.
pub fn assign<'m, 'c, M, C>(
    members: &'m M,
    track: impl AsRef<[u8]>,
    children: &'c [C],
    limit: usize,
) -> Option<Assignment<'m, 'c>>
where
    M: Members + ?Sized,
    C: AsRef<str>,
{
    let key_hash = hash64(track.as_ref());
    let ranked = rank_children(children.iter().map(|c| c.as_ref()), key_hash);
    let (parents, split) = plan(members.candidates(), key_hash, ranked.len(), limit)?;
    Some(Assignment {
        parents,
        children: ranked.into_iter().map(|(_, c)| c).collect(),
        split,
        limit: limit.max(1),
    })
}

/// The parent of one child under the fan-out rule: the same answer as `assign(..).parent_of(child)` (with
/// `child` added), without building and searching everyone's assignment. `child` counts as wanting the track
/// whether or not it is in `children` (it is asking now). It still hashes and orders every child: an exact
/// answer needs the whole set, which is the price of computing without shared state. A child that does not
/// know the set uses [`parent`] and follows [`redirect`]s instead.
pub fn parent_for<'m, M, C>(
    child: &str,
    members: &'m M,
    children: &[C],
    track: impl AsRef<[u8]>,
    limit: usize,
) -> Option<&'m str>
where
    M: Members + ?Sized,
    C: AsRef<str>,
{
    let key_hash = hash64(track.as_ref());
    let mine = child_key(child, key_hash);
    let mut others: Vec<Key<'_>> = children
        .iter()
        .map(|c| child_key(c.as_ref(), key_hash))
        .filter(|key| *key != mine)
        .collect();
    others.sort_unstable_by(|a, b| b.cmp(a));
    others.dedup();
    let k = others.partition_point(|key| *key > mine);
    let n = others.len() + 1;
    let (parents, split) = plan(members.candidates(), key_hash, n, limit)?;
    parents.get(split.block_of(k)).copied()
}

/// The parent chain of `edge` for one track through several tiers, nearest tier first (`tiers[0]` is the tier
/// just above the edges; the last tier's choice is fed by the origin named in the track key). `edges` are the
/// edges that want the track (`edge` counts whether listed or not); at each tier the parents in use become the
/// children of the next tier, so the whole tree follows from the edge set. A tier with no live members is
/// skipped rather than cutting the track off: its children attach to the next tier up, and an empty result
/// means "pull straight from the origin". Tiers must be disjoint, or a node may be chosen as its own parent.
pub fn path<'m, M, C>(
    edge: &str,
    track: impl AsRef<[u8]>,
    tiers: &[&'m M],
    edges: &[C],
    limit: usize,
) -> Vec<&'m str>
where
    M: Members + ?Sized,
    C: AsRef<str>,
{
    let key_hash = hash64(track.as_ref());
    let mut children: Vec<Key<'_>> =
        rank_children(edges.iter().map(|e| e.as_ref()).chain([edge]), key_hash);
    let mut me: &str = edge;
    let mut chain = Vec::with_capacity(tiers.len());
    for tier in tiers {
        let Some((parents, split)) = plan(tier.candidates(), key_hash, children.len(), limit)
        else {
            continue;
        };
        let Some(k) = children.iter().position(|(_, c)| *c == me) else {
            break; // unreachable: `me` is always among the children
        };
        let Some(mine) = parents.get(split.block_of(k)).copied() else {
            break;
        };
        chain.push(mine);
        me = mine;
        children = rank_children(parents.into_iter(), key_hash);
    }
    chain
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

    fn edges(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("edge-{i}")).collect()
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
        assert_eq!(child_score("edge-7", TRACK), 0xb462_22c9_65e3_92fa);
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
        // Track key as str, bytes or owned bytes: the same score.
        let owned: Vec<u8> = TRACK.into();
        assert_eq!(score("r", TRACK), score("r", TRACK.as_bytes()));
        assert_eq!(score("r", TRACK), score("r", &owned));
    }

    #[test]
    fn choice_is_independent_of_member_order() {
        let members = relays(40);
        let tier = Tier::new(&members);
        let children = edges(130);
        for t in 0..50 {
            let track = format!("gw/{t}/video");
            let expected_rank = ranked(&members, &track);
            let expected_assign =
                assign(&members, &track, &children, 50).map(|a| a.iter().collect::<Vec<_>>());
            for seed in 0..5 {
                let m = shuffled(&members, seed);
                let c = shuffled(&children, seed + 100);
                assert_eq!(parent(&m, &track), Some(expected_rank[0]));
                assert_eq!(ranked(&m, &track), expected_rank);
                assert_eq!(home_node(&track, &m), home_node(&track, &members));
                assert_eq!(
                    assign(&m, &track, &c, 50).map(|a| a.iter().collect::<Vec<_>>()),
                    expected_assign
                );
            }
            // A prepared tier gives the same answers as the plain list.
            assert_eq!(parent(&tier, &track), Some(expected_rank[0]));
            assert_eq!(ranked(&tier, &track), expected_rank);
            assert_eq!(home_node(&track, &tier), home_node(&track, &members));
            assert_eq!(
                assign(&tier, &track, &children, 50).map(|a| a.iter().collect::<Vec<_>>()),
                expected_assign
            );
        }
    }

    #[test]
    fn empty_tier_chooses_nothing() {
        let none: Vec<String> = Vec::new();
        let tier = Tier::new(&none);
        assert!(tier.is_empty());
        assert_eq!(parent(&none, TRACK), None);
        assert_eq!(parent(&tier, TRACK), None);
        assert!(ranked(&none, TRACK).is_empty());
        assert_eq!(redirect(&none, TRACK, "relay-0"), None);
        assert_eq!(home_node("concert", &none), None);
        assert_eq!(assign(&none, TRACK, &edges(3), 2), None);
        assert_eq!(parent_for("edge-0", &none, &edges(3), TRACK, 2), None);
        // No tiers, or only empty ones: the edge pulls straight from the origin.
        assert!(path::<Vec<String>, String>("edge-0", TRACK, &[], &[], 2).is_empty());
        assert!(path("edge-0", TRACK, &[&none, &none], &edges(3), 2).is_empty());
    }

    #[test]
    fn duplicate_members_and_children_count_once() {
        let members = relays(6);
        let mut doubled = members.clone();
        doubled.extend(members.iter().take(4).cloned());
        doubled.push(members[2].clone());
        let doubled = shuffled(&doubled, 7);
        let tier = Tier::new(&doubled);
        assert_eq!(tier.len(), 6);
        assert!(tier.contains(&members[5]) && !tier.contains("relay-6"));
        let children = edges(25);
        let mut children_twice = children.clone();
        children_twice.extend(children.iter().step_by(3).cloned());
        for t in 0..40 {
            let track = format!("gw/{t}/video");
            assert_eq!(parent(&doubled, &track), parent(&members, &track));
            let order = ranked(&doubled, &track);
            assert_eq!(order, ranked(&members, &track));
            assert_eq!(order.len(), 6);
            // Walking redirects visits each member once even though some appear twice in the list.
            let mut walk = vec![parent(&doubled, &track).unwrap()];
            while let Some(next) = redirect(&doubled, &track, walk[walk.len() - 1]) {
                walk.push(next);
            }
            assert_eq!(walk, order);
            // With 25 children and a limit of 4, 7 blocks are wanted from 6 distinct members: overloaded the
            // same way whether the lists carry duplicates or not.
            let plain = assign(&members, &track, &children, 4).unwrap();
            let dup = assign(&doubled, &track, &children_twice, 4).unwrap();
            assert_eq!(plain, dup);
            assert_eq!(dup.children().len(), 25);
            assert!(dup.is_overloaded());
            assert_eq!((dup.max_per_parent(), dup.parents().len()), (5, 6));
            for c in &children {
                assert_eq!(
                    parent_for(c, &doubled, &children_twice, &track, 4),
                    plain.parent_of(c)
                );
            }
        }
    }

    /// Checks the fan-out rule for `n` children over `members` at `limit`.
    fn check_fan_out(members: &[String], track: &str, n: usize, limit: usize) {
        let children = edges(n);
        let a = assign(members, track, &children, limit).unwrap();
        let order = ranked(members, track);
        let overloaded = n > members.len() * limit;
        assert_eq!(a.is_overloaded(), overloaded);
        if overloaded {
            assert_eq!(a.max_per_parent(), n.div_ceil(members.len()));
            assert_eq!(a.parents(), &order[..], "every member is used");
        } else {
            assert!(a.max_per_parent() <= limit);
            assert_eq!(
                a.parents(),
                &order[..n.div_ceil(limit)],
                "the first ⌈n/L⌉ in rendezvous order"
            );
        }
        let mut load = vec![0usize; a.parents().len()];
        let mut seen = 0;
        for (child, p) in a.iter() {
            let rank = a.parents().iter().position(|x| *x == p).unwrap();
            load[rank] += 1;
            seen += 1;
            assert_eq!(a.parent_of(child), Some(p));
            assert_eq!(
                parent_for(child, members, &children, track, limit),
                Some(p),
                "parent_for agrees"
            );
            // A child asking for itself without being listed yet gets the answer it will have once listed.
            let without: Vec<&String> = children.iter().filter(|c| *c != child).collect();
            assert_eq!(parent_for(child, members, &without, track, limit), Some(p));
        }
        assert_eq!(seen, n, "every child has a parent");
        assert_eq!(load.iter().sum::<usize>(), n);
        for (rank, l) in load.iter().enumerate() {
            assert_eq!(a.children_of(a.parents()[rank]).len(), *l);
            assert!(*l >= 1, "a parent is used only if it serves someone");
            if overloaded {
                // Even: every member takes ⌊n/N⌋ or ⌈n/N⌉, the larger shares first.
                assert!(*l == n / members.len() || *l == n.div_ceil(members.len()));
            } else if rank + 1 < load.len() {
                // Blocks fill in rank order: every parent but the last is full.
                assert_eq!(*l, limit);
            }
            assert!(rank == 0 || load[rank - 1] >= *l);
        }
    }

    #[test]
    fn fan_out_limit_spreads_children_in_rendezvous_order() {
        let members = relays(8);
        for n in [0, 1, 49, 50, 51, 99, 100, 101, 250, 399, 400] {
            check_fan_out(&members, TRACK, n, 50);
        }
        // More children than the tier holds within the limit: spread evenly, not piled on the last member.
        for n in [401, 450, 1000] {
            check_fan_out(&members, TRACK, n, 50);
        }
        check_fan_out(&members, TRACK, 17, 1);
        check_fan_out(&members, TRACK, 8, 1);
        check_fan_out(&members, TRACK, 9, 1);
        let three = edges(3);
        let a = assign(&members, TRACK, &three, 0).unwrap();
        assert_eq!(a.max_per_parent(), 1, "a limit of 0 means 1");
        assert_eq!(a.parents().len(), 3);
        let nobody: Vec<String> = Vec::new();
        let none = assign(&members, TRACK, &nobody, 50).unwrap();
        // No limit at all: one parent for everyone, no overflow.
        let many = edges(300);
        let one = assign(&members, TRACK, &many, usize::MAX).unwrap();
        assert_eq!(one.parents(), [parent(&members, TRACK).unwrap()]);
        assert_eq!(one.max_per_parent(), 300);
        assert_eq!(one.children_of(one.parents()[0]).len(), 300);
        assert_eq!(
            parent_for("edge-5", &members, &many, TRACK, usize::MAX),
            parent(&members, TRACK)
        );
        assert!(none.parents().is_empty() && none.children().is_empty());
        assert!(none.children_of(&members[0]).is_empty());
        assert_eq!(none.parent_of("edge-0"), None);
    }

    #[test]
    fn a_child_joining_moves_at_most_one_child_per_block_boundary() {
        let members = relays(10);
        let all = edges(301);
        let before = assign(&members, TRACK, &all[..300], 50).unwrap();
        let after = assign(&members, TRACK, &all, 50).unwrap();
        let moved = all[..300]
            .iter()
            .filter(|c| before.parent_of(c) != after.parent_of(c))
            .count();
        assert!(moved < after.parents().len(), "{moved} moved");
    }

    #[test]
    fn redirect_walks_down_the_ranking() {
        let members = relays(12);
        let order = ranked(&members, TRACK);
        assert_eq!(parent(&members, TRACK), Some(order[0]));
        for pair in order.windows(2) {
            assert_eq!(redirect(&members, TRACK, pair[0]), Some(pair[1]));
        }
        assert_eq!(
            redirect(&members, TRACK, order[order.len() - 1]),
            None,
            "every member is full"
        );
        // A parent the child does not know of (the two views differ): the next member below it in the ranking.
        let stranger = "relay-99.relay.default.svc:7000";
        let s = score(stranger, TRACK);
        let expected = order.iter().copied().find(|m| score(m, TRACK) < s);
        assert_eq!(redirect(&members, TRACK, stranger), expected);
        // The same walk from the redirect chain when a child knows where each full parent sits.
        let wanting = edges(120);
        let a = assign(&members, TRACK, &wanting, 50).unwrap();
        assert_eq!(
            redirect(&members, TRACK, a.parents()[0]),
            Some(a.parents()[1])
        );
        assert_eq!(
            redirect(&members, TRACK, a.parents()[1]),
            Some(a.parents()[2])
        );
    }

    #[test]
    fn leaving_moves_only_the_leavers_tracks_and_joining_only_the_joiners() {
        let members = relays(30);
        let tracks: Vec<String> = (0..3000).map(|t| format!("gw/{t}/audio")).collect();
        let before: Vec<&str> = tracks
            .iter()
            .map(|t| parent(&members, t).unwrap())
            .collect();
        let gone = &members[17];
        let fewer: Vec<String> = members.iter().filter(|m| *m != gone).cloned().collect();
        let joined = "relay-new.relay.default.svc:7000".to_string();
        let more: Vec<String> = members.iter().cloned().chain([joined.clone()]).collect();
        let mut took = 0;
        for (t, old) in tracks.iter().zip(&before) {
            let after_leave = parent(&fewer, t).unwrap();
            assert_eq!(after_leave != *old, *old == gone.as_str());
            let after_join = parent(&more, t).unwrap();
            assert!(after_join == *old || after_join == joined);
            took += usize::from(after_join == joined);
        }
        // 3000 / 31 ≈ 97, standard deviation ≈ 9.7.
        assert!((50..150).contains(&took), "{took}");
    }

    #[test]
    fn path_climbs_the_tiers_and_respects_the_limit_at_each() {
        let lower = relays(20);
        let upper: Vec<String> = (0..5).map(|i| format!("core-{i}")).collect();
        let wanting = edges(2600);
        let limit = 50;
        let a0 = assign(&lower, TRACK, &wanting, limit).unwrap();
        // 2600 edges need 52 blocks, the 20 lower relays hold 1000 within the limit: overloaded, all 20 used.
        assert_eq!(a0.parents().len(), 20);
        let a1 = assign(&upper, TRACK, a0.parents(), limit).unwrap();
        assert_eq!(
            a1.parents().len(),
            1,
            "20 children fit under one upper relay"
        );
        for e in wanting.iter().step_by(37) {
            let chain = path(e, TRACK, &[&lower, &upper], &wanting, limit);
            assert_eq!(chain.len(), 2);
            assert_eq!(Some(chain[0]), a0.parent_of(e));
            assert_eq!(Some(chain[1]), a1.parent_of(chain[0]));
            // An empty middle tier is skipped: the edges attach to the next tier up.
            let empty: Vec<String> = Vec::new();
            assert_eq!(
                path(e, TRACK, &[&empty, &upper], &wanting, limit),
                [a1_for(&upper, &wanting, e, limit)]
            );
        }
        // With few edges, one chain: the top of each tier's ranking.
        let few = edges(3);
        let chain = path("edge-1", TRACK, &[&lower, &upper], &few, limit);
        assert_eq!(
            chain,
            [
                parent(&lower, TRACK).unwrap(),
                parent(&upper, TRACK).unwrap()
            ]
        );
        // The edge asking need not be listed.
        assert_eq!(
            path("edge-9", TRACK, &[&lower, &upper], &few, limit).len(),
            2
        );
    }

    fn a1_for<'m>(upper: &'m [String], wanting: &[String], e: &str, limit: usize) -> &'m str {
        assign(upper, TRACK, wanting, limit)
            .unwrap()
            .parent_of(e)
            .unwrap()
    }
}
