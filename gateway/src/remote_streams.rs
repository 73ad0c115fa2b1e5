//! Streams published on other gateways, as this edge last found them: the tracks a WHEP POST
//! for a remote stream subscribes to. A flash crowd joining one stream on one edge would
//! otherwise ask the stream's home node once per POST (a round trip each, on the join path);
//! with the cache, concurrent POSTs for a stream not yet known share one lookup (moka's
//! `try_get_with` runs it once and hands every waiter its answer) and later ones none.
//!
//! Bounded (`MAX_STREAMS`) and expiring (`TTL`) because nothing else bounds the names clients
//! ask for. Only found streams are kept: a stream that starts is found by the next POST. An
//! answer goes stale when the stream's publisher leaves or is replaced; the bridge invalidates
//! it when the tree ends one of its tracks, and the TTL bounds whatever that misses.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::registry::TrackInfo;

/// Streams remembered at most.
pub const MAX_STREAMS: u64 = 10_000;
/// How long an answer is trusted without news from the tree.
pub const TTL: Duration = Duration::from_secs(2);

/// A remote stream's tracks, shared by every POST that found them.
pub type Tracks = Arc<Vec<Arc<TrackInfo>>>;

/// Shared by the HTTP handlers (reads) and the cluster bridge (invalidation); clones share.
#[derive(Clone)]
pub struct RemoteStreams {
    cache: Cache<String, Tracks>,
}

impl Default for RemoteStreams {
    fn default() -> Self {
        RemoteStreams {
            cache: Cache::builder()
                .max_capacity(MAX_STREAMS)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl RemoteStreams {
    /// The stream's tracks: cached, or from `lookup` (once for all concurrent callers). A
    /// lookup that finds nothing is not remembered.
    pub async fn get_or_lookup<F>(&self, stream: &str, lookup: F) -> Option<Tracks>
    where
        F: std::future::Future<Output = Option<Vec<Arc<TrackInfo>>>>,
    {
        self.cache
            .try_get_with(stream.to_string(), async move {
                lookup.await.map(Arc::new).ok_or(NotFound)
            })
            .await
            .ok()
    }

    /// Forget `stream` (one of its tracks ended). Never blocks the caller.
    pub fn invalidate(&self, stream: String) {
        let cache = self.cache.clone();
        tokio::spawn(async move { cache.invalidate(&stream).await });
    }

    /// Streams cached now.
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// A lookup found no such stream (not cached).
#[derive(Debug, Clone, Copy)]
struct NotFound;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_misses_share_one_lookup_and_misses_are_not_kept() {
        let cache = RemoteStreams::default();
        let lookups = Arc::new(AtomicUsize::new(0));
        let ask = |found: bool| {
            let lookups = lookups.clone();
            async move {
                lookups.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                found.then(Vec::new)
            }
        };
        let (a, b, c) = tokio::join!(
            cache.get_or_lookup("s", ask(true)),
            cache.get_or_lookup("s", ask(true)),
            cache.get_or_lookup("s", ask(true)),
        );
        assert!(a.is_some() && b.is_some() && c.is_some());
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            1,
            "one lookup for three POSTs"
        );
        assert!(cache.get_or_lookup("s", ask(true)).await.is_some());
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            1,
            "then answered from the cache"
        );

        assert!(cache.get_or_lookup("gone", ask(false)).await.is_none());
        assert!(cache.get_or_lookup("gone", ask(false)).await.is_none());
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            3,
            "not-found is asked again"
        );

        cache.invalidate("s".into());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cache.get_or_lookup("s", ask(true)).await.is_some());
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            4,
            "invalidated: asked again"
        );
    }
}
