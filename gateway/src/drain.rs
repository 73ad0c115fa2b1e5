//! Leaving without cutting anyone off (SIGTERM: scale-in, rollout, node maintenance). At the first
//! signal the gateway stops being ready (`/healthz` 503, so the load balancer sends it no new
//! flows), refuses new sessions with 503 and `Retry-After` on a closing connection (the client's
//! retry lands elsewhere), and keeps serving the sessions it holds: their HTTP requests, and
//! their datagrams, which the balancer now sends to other gateways and those tunnel back here
//! (`forwarding`). It stops when the last session has ended, when the drain timeout passes, or
//! at a second signal, whichever comes first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Whether the node is draining; shared by the signal side and the HTTP front.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    /// Is it?
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How often the drain looks at the session count.
const POLL: Duration = Duration::from_millis(100);
/// How often it says how many sessions are left.
const REPORT: Duration = Duration::from_secs(5);

/// Drains: returns when the registry holds no session, after `timeout`, or when `now` is
/// cancelled (a second signal). Always marks the node draining first.
pub async fn sessions(
    draining: &Draining,
    registry: &Registry,
    timeout: Duration,
    now: &CancellationToken,
) {
    draining.start();
    let started = Instant::now();
    let left = registry.session_count();
    if timeout.is_zero() || left == 0 {
        tracing::info!(sessions = left, "stopping");
        return;
    }
    tracing::info!(
        sessions = left,
        timeout_ms = timeout.as_millis() as u64,
        "draining: no new sessions; the live ones go on until they end (a second signal stops at once)"
    );
    let mut reported = started;
    loop {
        tokio::select! {
            _ = now.cancelled() => {
                tracing::info!(sessions = registry.session_count(), "second signal: stopping now");
                return;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        let left = registry.session_count();
        if left == 0 {
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "drained: every session has ended"
            );
            return;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                sessions = left,
                "drain timeout: stopping with sessions still live"
            );
            return;
        }
        if reported.elapsed() >= REPORT {
            reported = Instant::now();
            tracing::info!(sessions = left, "draining");
        }
    }
}
