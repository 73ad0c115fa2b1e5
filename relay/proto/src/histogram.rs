//! A latency histogram with fixed buckets, recorded with relaxed atomics from whatever thread
//! sees the event (a media worker, the cluster node's task) and read as a snapshot by a scrape.
//! Buckets are cumulative only in the exposition; here each holds its own range, so `observe`
//! is one search and two adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) for the time a client waits: HTTP answers, ICE, DTLS, first frame.
pub const JOIN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) for what one node adds to a packet's trip.
pub const HOP_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
];

/// Latency observations counted in fixed buckets, updated from any thread (see the module docs).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, and one more for everything above the last.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// What a histogram held at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds in seconds, as the histogram was made with.
    #[serde(skip)]
    pub bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one above every bound.
    pub counts: Vec<u64>,
    /// The sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation in the first bucket whose bound it does not exceed (or the last bucket, above
    /// every bound) and adds it to the sum.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// What the histogram holds now. Each counter is read on its own, so an observation made meanwhile may
    /// show in some fields and not yet in others.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl HistogramSnapshot {
    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The smallest bound at or under which at least `q` of the observations fall (the last
    /// bound's overflow reads as infinity); `None` when nothing was observed.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let h = Histogram::new(&[0.01, 0.1, 1.0]);
        h.observe(Duration::from_millis(10)); // on a bound: that bucket (le is inclusive)
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(60));
        h.observe(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!(s.counts, vec![1, 2, 0, 1]);
        assert_eq!(s.count(), 4);
        assert!((s.sum_seconds - 5.12).abs() < 1e-9);
        assert_eq!(s.quantile_bound(0.5), Some(0.1));
        assert_eq!(s.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(Histogram::new(&[1.0]).snapshot().quantile_bound(0.5), None);
    }
}
