//! Cluster-scale simulation of track placement: a relay tier of 1,000 members carrying 100,000 tracks, each
//! wanted by 1..=200 edges, through joins and leaves. Checks what the design promises of [`ranked`]: even load,
//! and that a membership change moves exactly the tracks it must and no others.
//!
//! The fan-out limit is modelled the way the tree applies it: a parent that feeds `LIMIT` children of a track
//! redirects the next one, which tries the next member in the track's ranking. So a track wanted by n edges
//! uses the first ⌈n / LIMIT⌉ members of its ranking, each full but the last.
//!
//! Size: the full 1,000 members × 100,000 tracks under `--release`. Debug builds (plain `cargo test`) do not
//! optimise this crate, which makes one placement pass many times slower, so they run 100 members × 10,000 tracks:
//! the same 100 tracks per member, so every statistical bound below holds unchanged (the bounds are union
//! bounds over members, and fewer members only make them safer).
//!
//! The statistics are deterministic (fixed seeds), but each bound is chosen so that a uniform random placement
//! would break it with probability below ~1e-3 (most far below), while a biased hash (one that favours some members, or sends
//! a departed member's tracks to one neighbour as a hash ring does) breaks it by a wide margin.

use relay_proto::placement::ranked;
use std::collections::HashMap;

/// (members, tracks): see the module comment.
const SIZE: (usize, usize) = if cfg!(debug_assertions) {
    (100, 10_000)
} else {
    (1_000, 100_000)
};
const LIMIT: usize = 50;
const MAX_CHILDREN: u64 = 200;
const STEPS: usize = 50;

/// splitmix64: a tiny deterministic generator, so the simulation needs no RNG crate and never varies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct World {
    /// Every relay id that ever exists in a run: the initial members, then the joiners in order.
    names: Vec<String>,
    index: HashMap<String, u32>,
    tracks: Vec<String>,
    /// How many edges want each track: 1..=200.
    wanting: Vec<usize>,
}

impl World {
    fn new() -> World {
        let (members, tracks) = SIZE;
        let names: Vec<String> = (0..members + STEPS)
            .map(|i| format!("relay-{i}.relay.default.svc:7000"))
            .collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mut rng = Rng(0x5EED);
        // "<origin node>/<session id>/<track name>", as the link protocol's track keys.
        let tracks: Vec<String> = (0..tracks)
            .map(|_| {
                let origin = rng.below(20);
                let (hi, lo) = (rng.next(), rng.next());
                let kind = if rng.below(2) == 0 { "audio" } else { "video" };
                format!("gw-{origin}.gw.default.svc:7000/{hi:016x}{lo:016x}/{kind}")
            })
            .collect();
        let wanting = tracks
            .iter()
            .map(|_| 1 + rng.below(MAX_CHILDREN) as usize)
            .collect();
        World {
            names,
            index,
            tracks,
            wanting,
        }
    }

    /// The member list a node holds for the tier.
    fn tier(&self, members: &[u32]) -> Vec<&str> {
        members
            .iter()
            .map(|&m| self.names[m as usize].as_str())
            .collect()
    }

    fn id(&self, name: &str) -> u32 {
        self.index[name]
    }

    /// The parents track `t` uses under the fan-out limit, in rank order: the first ⌈wanting / LIMIT⌉ members of
    /// its ranking. The first is its preferred parent.
    fn place(&self, tier: &[&str], t: usize) -> Vec<u32> {
        let track = &self.tracks[t];
        let order = ranked(tier, track);
        let used = self.wanting[t].div_ceil(LIMIT);
        assert!(
            used <= order.len(),
            "{track}: ≤ 200 children always fit under 4+ members at L = 50"
        );
        order[..used].iter().map(|p| self.id(p)).collect()
    }

    fn place_all(&self, tier: &[&str]) -> Vec<Vec<u32>> {
        (0..self.tracks.len())
            .map(|t| self.place(tier, t))
            .collect()
    }
}

/// Load statistics over the current members.
struct Balance {
    mean: f64,
    max: usize,
    min: usize,
    /// Pearson's chi-square against a uniform spread, and its degrees of freedom.
    chi2: f64,
    df: f64,
}

fn balance(members: &[u32], load: impl Iterator<Item = (u32, usize)>) -> Balance {
    // Indexed by member id; `None` for ids not currently members, so load on a departed member is caught.
    let mut per: Vec<Option<usize>> = Vec::new();
    for &m in members {
        let m = m as usize;
        if per.len() <= m {
            per.resize(m + 1, None);
        }
        per[m] = Some(0);
    }
    for (m, n) in load {
        let slot = per.get_mut(m as usize).and_then(Option::as_mut);
        *slot.expect("load only on current members") += n;
    }
    let counts: Vec<usize> = per.into_iter().flatten().collect();
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    Balance {
        mean,
        max: counts.iter().copied().max().unwrap_or(0),
        min: counts.iter().copied().min().unwrap_or(0),
        chi2: counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2) / mean)
            .sum(),
        df: counts.len() as f64 - 1.0,
    }
}

/// Tracks per member (each track counted at its preferred parent). With T tracks over N members a member's count
/// is Binomial(T, 1/N), mean 100 here, standard deviation ≈ 10. The maximum of 1,000 such counts is typically
/// 135–140, so "max/mean < 1.3" would fail for a perfect hash (expected ≈ 2 members at ≥ 130). The exact tails:
/// P(some member ≥ 160) ≈ 2e-5 and P(some member ≤ 50) ≈ 2e-5 for N = 1,000; so max ≤ 1.6 × mean and
/// min ≥ 0.5 × mean. The chi-square statistic has mean N − 1 and standard deviation √(2(N − 1)) (45 for
/// N = 1,000); ± 6 of those has a tail below 1e-7 and catches a small bias spread over many members, which the
/// extremes would miss.
fn check_track_balance(b: &Balance, what: &str) {
    let sd = (2.0 * b.df).sqrt();
    assert!(
        b.max as f64 <= 1.6 * b.mean,
        "{what}: max {} vs mean {:.1}",
        b.max,
        b.mean
    );
    assert!(
        b.min as f64 >= 0.5 * b.mean,
        "{what}: min {} vs mean {:.1}",
        b.min,
        b.mean
    );
    assert!(
        (b.chi2 - b.df).abs() <= 6.0 * sd,
        "{what}: chi-square {:.0}, expected {:.0} ± {:.0}",
        b.chi2,
        b.df,
        sd
    );
}

/// Child links per member (how many edges each relay feeds, over all tracks). A track with n children puts
/// blocks of min(50, n − 50r) on its ranks r = 0, 1, …; with n uniform on 1..=200 the per-member total has mean
/// 10,050 and standard deviation ≈ 680 (6.7 %). max ≤ 1.45 × mean and min ≥ 0.55 × mean are ≥ 6.6 standard
/// deviations out (a normal tail below 1e-10 per member).
fn check_child_balance(b: &Balance, what: &str) {
    assert!(
        b.max as f64 <= 1.45 * b.mean,
        "{what}: child links max {} vs mean {:.0}",
        b.max,
        b.mean
    );
    assert!(
        b.min as f64 >= 0.55 * b.mean,
        "{what}: child links min {} vs mean {:.0}",
        b.min,
        b.mean
    );
}

/// A membership change that adds one member moves about T/N tracks, each independently with probability (ranks
/// it now takes)/N: the count is within 5 standard deviations (≈ √expected) of the expectation.
fn check_join_moves(moved: usize, expected: f64, what: &str) {
    let tolerance = 5.0 * expected.sqrt();
    assert!(
        (moved as f64 - expected).abs() <= tolerance,
        "{what}: {moved} moved, expected {expected:.1} ± {tolerance:.0}"
    );
}

/// Child links per member (`placed[t]` = the parents track t uses, in rank order).
fn child_links<'a>(
    world: &'a World,
    placed: &'a [Vec<u32>],
) -> impl Iterator<Item = (u32, usize)> + 'a {
    placed.iter().enumerate().flat_map(move |(t, parents)| {
        let wanting = world.wanting[t];
        parents
            .iter()
            .enumerate()
            .map(move |(rank, &p)| (p, (wanting - rank * LIMIT).min(LIMIT)))
    })
}

/// Each track's preferred parent.
fn preferred(placed: &[Vec<u32>]) -> Vec<u32> {
    placed.iter().map(|p| p[0]).collect()
}

#[test]
fn load_is_balanced_across_members() {
    let world = World::new();
    let members: Vec<u32> = (0..SIZE.0 as u32).collect();
    let placed = world.place_all(&world.tier(&members));
    let parents = preferred(&placed);
    let b = balance(&members, parents.iter().map(|&p| (p, 1)));
    eprintln!(
        "balance: {} tracks over {} members: mean {:.1}, max {} ({:.2}× mean), min {} ({:.2}× mean), chi-square {:.0} (df {})",
        parents.len(),
        members.len(),
        b.mean,
        b.max,
        b.max as f64 / b.mean,
        b.min,
        b.min as f64 / b.mean,
        b.chi2,
        b.df
    );
    check_track_balance(&b, "initial");
    // Every node computes the same parents whatever order it lists the members in.
    let reversed: Vec<u32> = members.iter().rev().copied().collect();
    assert_eq!(world.place_all(&world.tier(&reversed)), placed);
}

#[test]
fn fan_out_spreads_child_links_evenly() {
    let world = World::new();
    let members: Vec<u32> = (0..SIZE.0 as u32).collect();
    let placed = world.place_all(&world.tier(&members));
    let spread = placed.iter().filter(|p| p.len() > 1).count();
    let links = balance(&members, child_links(&world, &placed));
    eprintln!(
        "fan-out: {} of {} tracks spread over >1 parent (max {} parents); child links per member: mean {:.0}, max {:.2}× mean, min {:.2}× mean",
        spread,
        placed.len(),
        placed.iter().map(Vec::len).max().unwrap_or(0),
        links.mean,
        links.max as f64 / links.mean,
        links.min as f64 / links.mean
    );
    check_child_balance(&links, "initial");
}

#[test]
fn one_leave_and_one_join_move_only_what_they_must() {
    let world = World::new();
    let n = SIZE.0 as u32;
    let members: Vec<u32> = (0..n).collect();
    let placed = world.place_all(&world.tier(&members));
    let parents = preferred(&placed);

    // Leave: exactly the tracks whose parent was the leaver move, and they scatter over the survivors.
    let gone = Rng(0x1EAF).below(n as u64) as u32;
    let fewer: Vec<u32> = members.iter().copied().filter(|&m| m != gone).collect();
    let placed_fewer = world.place_all(&world.tier(&fewer));
    let after = preferred(&placed_fewer);
    let moved: Vec<usize> = (0..parents.len())
        .filter(|&t| after[t] != parents[t])
        .collect();
    let had_it: Vec<usize> = (0..parents.len()).filter(|&t| parents[t] == gone).collect();
    assert_eq!(moved, had_it);
    let mut landed: HashMap<u32, usize> = HashMap::new();
    for &t in &moved {
        *landed.entry(after[t]).or_default() += 1;
    }
    let pile = landed.values().copied().max().unwrap_or(0);
    // ~100 tracks over N − 1 survivors: P(any survivor gets ≥ 10) < 3e-4 at N = 100 (even for 130 tracks) and
    // < 1e-12 at N = 1,000. A hash ring would hand all of them to one neighbour.
    assert!(
        pile <= 9,
        "{pile} of the leaver's tracks landed on one member"
    );

    // Same under the fan-out limit: exactly the tracks that used the leaver at any rank change their parents.
    let mut spread_moved = 0;
    for (t, (before, now)) in placed.iter().zip(&placed_fewer).enumerate() {
        assert_eq!(now != before, before.contains(&gone), "track {t}");
        spread_moved += usize::from(now != before);
    }

    // Join: only tracks the joiner now ranks first for move, all to it, ≈ T/(N + 1) of them.
    let joiner = n;
    let more: Vec<u32> = members.iter().copied().chain([joiner]).collect();
    let placed_more = world.place_all(&world.tier(&more));
    let after = preferred(&placed_more);
    let took = (0..parents.len())
        .filter(|&t| {
            assert!(
                after[t] == parents[t] || after[t] == joiner,
                "track {t} moved between old members"
            );
            after[t] != parents[t]
        })
        .count();
    let expected = parents.len() as f64 / more.len() as f64;
    check_join_moves(took, expected, "join");
    let mut spread_took = 0;
    let mut spread_expected = 0.0;
    for (t, (before, now)) in placed.iter().zip(&placed_more).enumerate() {
        // The track changes exactly when the joiner takes one of its ranks.
        assert_eq!(now != before, now.contains(&joiner), "track {t}");
        spread_took += usize::from(now != before);
        spread_expected += before.len() as f64 / more.len() as f64;
    }
    check_join_moves(spread_took, spread_expected, "join, fan-out");
    eprintln!(
        "movement: leave moved {} tracks (= those it parented; max {pile} onto one survivor), {spread_moved} with the fan-out limit; join moved {took} tracks (expected {expected:.1} = {:.3}%), {spread_took} with the fan-out limit (expected {spread_expected:.1})",
        moved.len(),
        100.0 * took as f64 / parents.len() as f64
    );
}

#[test]
fn fifty_joins_and_leaves_keep_every_promise() {
    let world = World::new();
    let mut members: Vec<u32> = (0..SIZE.0 as u32).collect();
    let mut next_joiner = SIZE.0 as u32;
    let mut tier = world.tier(&members);
    let mut placed = world.place_all(&tier);
    let mut rng = Rng(0xC4A2);
    let sample = world.tracks.len() / 100;
    let (mut worst_max, mut worst_min): (f64, f64) = (0.0, f64::MAX);
    // Per step: + join or - leave, tracks whose preferred parent moved / tracks whose parents changed.
    let mut log = Vec::new();

    for step in 0..STEPS {
        let joining = rng.below(2) == 0;
        let changed = if joining {
            next_joiner += 1;
            next_joiner - 1
        } else {
            members[rng.below(members.len() as u64) as usize]
        };
        if joining {
            members.push(changed);
        } else {
            members.retain(|&m| m != changed);
        }
        let new_tier = world.tier(&members);
        let changed_name = world.names[changed as usize].as_str();

        // Which tracks must change, without placing them all again: a leaver's tracks are those it served at any
        // rank; a joiner takes a rank in a track when it ranks above the track's last-ranked parent. Recompute
        // exactly those, and check they did change.
        let mut moved = 0;
        let mut parent_moves = 0;
        for (t, track) in world.tracks.iter().enumerate() {
            let must_move = if joining {
                let last = *placed[t].last().expect("every track has a parent");
                let last_name = world.names[last as usize].as_str();
                ranked(&[last_name, changed_name][..], track)[0] == changed_name
            } else {
                placed[t].contains(&changed)
            };
            if must_move {
                let now = world.place(&new_tier, t);
                assert_ne!(now, placed[t], "step {step}: track {t} should have moved");
                if joining {
                    assert!(
                        now.contains(&changed),
                        "step {step}: track {t} moved, but not to the joiner"
                    );
                } else {
                    // The preferred parent changes only where the leaver was it.
                    assert_eq!(
                        now[0] != placed[t][0],
                        placed[t][0] == changed,
                        "step {step}: track {t}"
                    );
                }
                parent_moves += usize::from(now[0] != placed[t][0]);
                placed[t] = now;
                moved += 1;
            }
        }
        // Everything else must be untouched: check a fresh sample every step (and every track at the end).
        for _ in 0..sample {
            let t = rng.below(world.tracks.len() as u64) as usize;
            assert_eq!(
                world.place(&new_tier, t),
                placed[t],
                "step {step}: track {t} moved unexpectedly"
            );
        }
        if joining {
            let expected_parent = world.tracks.len() as f64 / members.len() as f64;
            check_join_moves(parent_moves, expected_parent, &format!("step {step}: join"));
        }
        tier = new_tier;

        let b = balance(&members, placed.iter().map(|p| (p[0], 1)));
        check_track_balance(&b, &format!("step {step}"));
        check_child_balance(
            &balance(&members, child_links(&world, &placed)),
            &format!("step {step}"),
        );
        worst_max = worst_max.max(b.max as f64 / b.mean);
        worst_min = worst_min.min(b.min as f64 / b.mean);
        log.push(format!(
            "{}{parent_moves}/{moved}",
            if joining { '+' } else { '-' }
        ));
    }

    // The state built step by step is exactly what a node that only ever saw the final membership computes.
    assert_eq!(world.place_all(&tier), placed);
    eprintln!(
        "churn: {STEPS} steps, {} members at the end; worst max/mean {worst_max:.2}, worst min/mean {worst_min:.2}; per step (parent moves/parent changes): {}",
        members.len(),
        log.join(" ")
    );
}
