//! Gives the heap that ended sessions freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas: after a flood of sessions that
//! never connected is reaped, the process would stay at its peak RSS (issue 10 measured 58 →
//! 300 MB, staying there). `malloc_trim` returns the free pages of every arena. It walks the
//! arenas, so it runs only when many sessions have ended since the last time, at most every few
//! seconds — never on the packet path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(5);
/// Sessions (or remembered ended sessions) that must have gone since the last trim to trim.
const ENDED: usize = 64;

/// When to trim, from what each tick sees; no clock, no allocator inside.
#[derive(Debug, Default)]
struct Trimmer {
    /// The highest session count since the last trim.
    high: usize,
    /// Trim once more on the next tick: the workers and the demux free their part of a session
    /// after the registry's count has dropped, and the registry forgets ended sessions later.
    again: bool,
}

impl Trimmer {
    /// Whether to trim now, given the session count and how many ended sessions the registry
    /// just forgot.
    fn tick(&mut self, sessions: usize, forgotten: usize) -> bool {
        self.high = self.high.max(sessions);
        let due =
            self.high >= sessions + ENDED || (sessions == 0 && self.high > 0) || forgotten >= ENDED;
        if due {
            self.high = sessions;
            self.again = true;
            return true;
        }
        std::mem::take(&mut self.again)
    }
}

/// Every few seconds, asks `sessions` (called with the time) how many ended sessions were just
/// forgotten and how many sessions there are, and trims when enough have gone.
pub async fn run(
    sessions: impl Fn(std::time::Instant) -> (usize, usize),
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    let mut trimmer = Trimmer::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (forgotten, sessions) = sessions(std::time::Instant::now());
        if trimmer.tick(sessions, forgotten) {
            let released = trim();
            tracing::debug!(sessions, forgotten, released, "heap trimmed");
        }
    }
}

/// Gives back a hash map's table after most of its entries went: a hash map keeps its peak
/// capacity, so one flood of sessions would pin its tables (megabytes, in the middle of the heap
/// where `malloc_trim` cannot return the pages around them) for the life of the process. Called
/// after removals; it rebuilds only when three quarters of the table is empty, which keeps the
/// cost amortised O(1) per removal.
pub fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    const SMALL: usize = 64;
    if map.capacity() > SMALL && map.len() * 4 <= map.capacity() {
        map.shrink_to((map.len() * 2).max(SMALL / 2));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks glibc's own arenas; 0 keeps no extra padding.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::{Trimmer, shrink_map};
    use std::collections::HashMap;

    #[test]
    fn a_map_gives_back_its_table_when_mostly_empty_and_not_before() {
        let mut m: HashMap<u32, [u8; 64]> = (0..3000).map(|i| (i, [0; 64])).collect();
        m.retain(|k, _| *k < 1000);
        shrink_map(&mut m);
        // (`capacity` is entries + free slots: slots left as tombstones count in neither.)
        assert!(m.capacity() > 2000, "a third full: kept ({})", m.capacity());
        m.retain(|k, _| *k < 10);
        shrink_map(&mut m);
        assert!(m.capacity() < 100, "{} left", m.capacity());
        assert_eq!(m.len(), 10);
        let mut small: HashMap<u32, u32> = (0..50)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|i| (i, i))
            .collect();
        let cap = small.capacity();
        small.clear();
        shrink_map(&mut small);
        assert_eq!(
            small.capacity(),
            cap,
            "small tables are not worth rebuilding"
        );
    }

    #[test]
    fn trims_after_many_sessions_end_or_all_of_them_and_once_more_after() {
        let mut t = Trimmer::default();
        assert!(!t.tick(0, 0), "idle");
        assert!(!t.tick(100, 0));
        assert!(!t.tick(50, 0), "50 ended");
        assert!(t.tick(3000, 0) || t.tick(0, 0));
        assert!(t.tick(0, 0), "once more, a tick later");
        assert!(!t.tick(0, 0), "then quiet");
        assert!(!t.tick(5000, 0));
        assert!(!t.tick(5000, 0), "steady");
        assert!(t.tick(4900, 0), "100 ended");
        assert!(t.tick(4900, 0));
        assert!(!t.tick(4900, 10), "a few forgotten");
        assert!(t.tick(4900, 3000), "the flood's ended sessions forgotten");
        let mut t = Trimmer::default();
        assert!(!t.tick(5, 0));
        assert!(t.tick(0, 0), "the last ones ended");
    }
}
