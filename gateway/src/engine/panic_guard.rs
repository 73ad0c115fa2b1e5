//! The panic guard: str0m's invariants are its own, and "a panic means a bug" must not take a
//! whole engine and every session on it down. Every entry point runs its step guarded; a panic
//! costs the session that was being driven (`touching`), which is reaped, and nothing else.

use std::sync::atomic::Ordering;

use super::Engine;
use crate::ids::SessionId;

impl Engine {
    /// Run one step; None if it panicked.
    pub(super) fn guarded<R>(&mut self, step: impl FnOnce(&mut Self) -> R) -> Option<R> {
        self.touching = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        let panic = match result {
            Ok(r) => return Some(r),
            Err(panic) => panic,
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        self.stats.panics.fetch_add(1, Ordering::Relaxed);
        match self.touching.take() {
            Some(id) => {
                tracing::error!(session = %id, panic = %what, "a session panicked; it is closed, the worker goes on");
                let now = self.latest;
                self.reap(id, now);
            }
            None => tracing::error!(panic = %what, "a worker step panicked; the worker goes on"),
        }
        self.dirty.retain(|id| self.sessions.contains_key(id));
        None
    }

    /// A step about one session: a panic costs that session even before its `Rtc` is touched.
    pub(super) fn guarded_for<R>(
        &mut self,
        id: SessionId,
        step: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        self.guarded(|e| {
            e.touching = Some(id);
            step(e)
        })
    }
}
