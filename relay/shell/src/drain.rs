//! A relay leaving on SIGTERM (scale-in, rollout) without a lost packet: readiness goes false,
//! every peer is told (`Local::Drain`), children move to their next rendezvous parent while this
//! node still feeds them, and only when none is left — or the drain timeout passes, or a second
//! signal comes — do the links close. A timeout of zero skips the drain (links close at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterHandle, Local};

/// Shared between the signal task, the event loop and the health endpoint.
#[derive(Debug, Default)]
pub struct DrainState {
    /// Set at the first signal: `/healthz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Notified when the node reports `ClusterEvent::Drained`.
    pub drained: Notify,
}

/// Waits for SIGTERM or SIGINT, drains, then cancels `shutdown`.
pub async fn on_signal(
    handle: ClusterHandle,
    state: Arc<DrainState>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    signal().await;
    if timeout.is_zero() {
        tracing::info!("shutting down");
        shutdown.cancel();
        return;
    }
    let started = Instant::now();
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        timeout_ms = timeout.as_millis() as u64,
        "draining: children move to their next parent"
    );
    handle.send(Local::Drain);
    tokio::select! {
        _ = state.drained.notified() => {
            tracing::info!(after_ms = started.elapsed().as_millis() as u64, "drained: no child left");
        }
        _ = tokio::time::sleep(timeout) => {
            tracing::warn!("drain timeout: closing links with children still attached");
        }
        _ = signal() => tracing::warn!("second signal: closing links now"),
    }
    shutdown.cancel();
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
