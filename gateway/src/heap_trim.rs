//! Gives the heap that ended sessions freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its per-thread arenas: after a flood of sessions that
//! never connected is reaped, the process would stay at its peak RSS (issue 10 measured 58 →
//! 300 MB, staying there). `malloc_trim` returns the free pages of every arena. It walks the
//! arenas, so it runs only when many sessions have ended since the last time, at most every few
//! seconds — never on the packet path.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

const EVERY: Duration = Duration::from_secs(5);
/// Sessions that must have gone (from the highest count since the last trim) to trim.
const ENDED: usize = 64;

/// Whether to trim now, given the highest session count since the last trim and the count now.
fn due(high: usize, now: usize) -> bool {
    high >= now + ENDED || (now == 0 && high > 0)
}

pub async fn run(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    let mut high = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = registry.session_count();
        high = high.max(now);
        if due(high, now) {
            let released = trim();
            tracing::debug!(sessions = now, from = high, released, "heap trimmed");
            high = now;
        }
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
    use super::due;

    #[test]
    fn trims_after_many_sessions_end_or_all_of_them() {
        assert!(!due(0, 0));
        assert!(!due(100, 50), "50 ended");
        assert!(due(3000, 0));
        assert!(due(200, 100), "100 ended");
        assert!(due(5, 0), "the last ones ended");
        assert!(!due(5000, 5000), "steady");
    }
}
