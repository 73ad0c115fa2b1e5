//! End-to-end latency per video frame, measured with one clock: the publisher logs when it wrote
//! each fixture frame, the player looks the frame it just received up in that log.
//!
//! **Only meaningful when the publisher and the player run in the same process** (the
//! integration tests): the log is a process-global, so a player in another process (e.g. the
//! `whep-play` CLI) finds nothing and reports no latency, and two publishers of the same fixture
//! in one process at once (tests running in parallel) mix their entries and make the figures
//! wrong. Tests that read [`LatencyStats`] should not overlap with other publishers of the same
//! file.
//!
//! Frames are keyed by their index in the fixture. The publisher loops the file, so an index comes
//! round again one period later; the log keeps the last [`KEEP`] send times per index and a
//! receive is matched with the latest of them that is not after it.
//!
//! A frame the publisher wrote before the player was connected was held in a cache somewhere
//! (the gateway sends a joining viewer the current GOP); its delay measures that cache, not the
//! path, so the player leaves such frames out of its samples (see
//! [`LatencySamples::on_receive`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde::Serialize;

/// Send times kept per fixture frame index.
pub const KEEP: usize = 4;

type Log = HashMap<usize, VecDeque<Instant>>;

fn log() -> MutexGuard<'static, Log> {
    static LOG: OnceLock<Mutex<Log>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The publisher wrote fixture video frame `index` at `at`.
pub fn record_send(index: usize, at: Instant) {
    let mut log = log();
    let times = log.entry(index).or_default();
    times.push_back(at);
    while times.len() > KEEP {
        times.pop_front();
    }
}

/// The latest time fixture frame `index` was written that is not after `received`.
pub fn send_time(index: usize, received: Instant) -> Option<Instant> {
    log()
        .get(&index)?
        .iter()
        .filter(|t| **t <= received)
        .max()
        .copied()
}

/// Percentiles of a player's per-frame latency, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Worst frame.
    pub max: f64,
    /// Frames measured.
    pub samples: u64,
}

impl LatencyStats {
    /// Nearest-rank percentiles of `samples_ms`; `None` when there are none.
    pub fn from_samples(samples_ms: &[f64]) -> Option<Self> {
        if samples_ms.is_empty() {
            return None;
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = sorted.len();
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            sorted[i]
        };
        Some(LatencyStats {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            samples: sorted.len() as u64,
        })
    }
}

/// One player's samples.
#[derive(Debug, Clone, Default)]
pub struct LatencySamples {
    /// Frames written before this instant are left out (cached, not travelled).
    since: Option<Instant>,
    /// (receive time, latency in ms) per frame, in arrival order.
    samples: Vec<(Instant, f64)>,
}

impl LatencySamples {
    /// Count only frames the publisher wrote at or after `since` (the player's connection).
    pub fn set_since(&mut self, since: Instant) {
        self.since = Some(since);
    }

    /// Fixture frame `index` arrived at `received`: keeps `received − send` if the frame was sent
    /// in this process, after [`LatencySamples::set_since`] (frames before the connection, or
    /// before `set_since` was ever called, are not sampled).
    pub fn on_receive(&mut self, index: usize, received: Instant) {
        let Some(since) = self.since else { return };
        let Some(sent) = send_time(index, received) else {
            return;
        };
        if sent < since {
            return;
        }
        let d = received.duration_since(sent);
        self.samples.push((received, d.as_secs_f64() * 1000.0));
    }

    /// The percentiles so far.
    pub fn stats(&self) -> Option<LatencyStats> {
        let all: Vec<f64> = self.samples.iter().map(|(_, ms)| *ms).collect();
        LatencyStats::from_samples(&all)
    }

    /// The percentiles of frames received in `[from, to)`: a load tool's steady window, without
    /// the join (a joining viewer's first live frames queue behind its keyframe run).
    pub fn stats_between(&self, from: Instant, to: Instant) -> Option<LatencyStats> {
        let window: Vec<f64> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ms)| *ms)
            .collect();
        LatencyStats::from_samples(&window)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = LatencyStats::from_samples(&samples).unwrap_or_default();
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.samples),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(LatencyStats::from_samples(&[]), None);
        let one = LatencyStats::from_samples(&[7.0]).unwrap_or_default();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn a_receive_matches_the_latest_send_not_after_it() {
        // An index no fixture has, so that parallel tests in this process do not interfere.
        let index = usize::MAX - 7;
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for k in 0..6 {
            record_send(index, t0 + ms(1000 * k));
        }
        // Only the last KEEP survive: 2000, 3000, 4000, 5000.
        assert_eq!(send_time(index, t0 + ms(1500)), None);
        assert_eq!(send_time(index, t0 + ms(3010)), Some(t0 + ms(3000)));
        assert_eq!(send_time(index, t0 + ms(9000)), Some(t0 + ms(5000)));

        let mut s = LatencySamples::default();
        s.on_receive(index, t0 + ms(3010));
        assert_eq!(s.stats(), None, "nothing counts before set_since");
        s.set_since(t0 + ms(2500));
        s.on_receive(index, t0 + ms(2600)); // sent at 2000, before `since`: cached
        s.on_receive(index, t0 + ms(3010));
        s.on_receive(index, t0 + ms(4030));
        let st = s.stats().unwrap_or_default();
        assert_eq!(st.samples, 2);
        assert!((st.max - 30.0).abs() < 1e-6, "{st:?}");
        // A window holds only the frames received in it.
        let late = s
            .stats_between(t0 + ms(4000), t0 + ms(5000))
            .unwrap_or_default();
        assert_eq!((late.samples, late.max.round()), (1, 30.0));
        assert_eq!(s.stats_between(t0, t0 + ms(3000)), None);
    }
}
