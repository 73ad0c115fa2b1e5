//! Keyframe request aggregation: many viewers of one track asking for a keyframe (PLI/FIR) must not turn into
//! a storm of requests toward the publisher, whose encoder would answer each with an expensive keyframe.

use std::time::{Duration, Instant};

/// Aggregates keyframe requests (PLI/FIR) from many viewers of one track into at most one request per interval toward the publisher.
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    min_interval: Duration,
    /// When the oldest unanswered request arrived.
    pending_since: Option<Instant>,
    last_forwarded: Option<Instant>,
    aggregated: u64,
    forwarded: u64,
}

impl KeyframeRequests {
    /// Forwards at most one request upstream per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        KeyframeRequests {
            min_interval,
            pending_since: None,
            last_forwarded: None,
            aggregated: 0,
            forwarded: 0,
        }
    }

    /// A viewer asked. If a request is already waiting to go upstream, this one rides along with it.
    pub fn request(&mut self, now: Instant) {
        if self.pending_since.is_some() {
            self.aggregated += 1;
        } else {
            self.pending_since = Some(now);
        }
    }

    /// True = send one request upstream now (then the interval starts).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.pending_since = None;
                self.last_forwarded = Some(now);
                self.forwarded += 1;
                true
            }
            _ => false,
        }
    }

    /// When poll should next be called if a request is pending: at once if the interval since the last
    /// upstream request has passed, else when it does.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending_since = self.pending_since?;
        match self.last_forwarded {
            None => Some(pending_since),
            // An interval too large to represent means "never again", which no timer can express.
            Some(last) => Some(last.checked_add(self.min_interval)?.max(pending_since)),
        }
    }

    /// Requests absorbed without going upstream (a counter for stats).
    pub fn aggregated(&self) -> u64 {
        self.aggregated
    }

    /// Requests sent upstream (a counter for stats).
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// True while a request is waiting to go upstream.
    pub fn is_pending(&self) -> bool {
        self.pending_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at_ms;

    fn requests() -> KeyframeRequests {
        KeyframeRequests::new(Duration::from_millis(1000))
    }

    #[test]
    fn idle_does_nothing() {
        let mut kr = requests();
        assert_eq!(kr.poll_timeout(), None);
        assert!(!kr.poll(at_ms(0)));
        assert!(!kr.is_pending());
        assert_eq!((kr.forwarded(), kr.aggregated()), (0, 0));
    }

    #[test]
    fn first_request_goes_up_at_once() {
        let mut kr = requests();
        kr.request(at_ms(10));
        assert!(kr.is_pending());
        assert_eq!(kr.poll_timeout(), Some(at_ms(10)));
        assert!(kr.poll(at_ms(10)));
        assert!(!kr.poll(at_ms(10)), "only once");
        assert_eq!(kr.poll_timeout(), None);
        assert_eq!((kr.forwarded(), kr.aggregated()), (1, 0));
    }

    #[test]
    fn simultaneous_requests_are_aggregated() {
        let mut kr = requests();
        for _ in 0..50 {
            kr.request(at_ms(0));
        }
        assert!(kr.poll(at_ms(0)));
        assert!(!kr.poll(at_ms(1)));
        assert_eq!((kr.forwarded(), kr.aggregated()), (1, 49));
    }

    #[test]
    fn rate_limited_to_one_per_interval() {
        let mut kr = requests();
        kr.request(at_ms(0));
        assert!(kr.poll(at_ms(0)));
        // A viewer joins just after: its request waits for the interval to pass.
        kr.request(at_ms(200));
        kr.request(at_ms(300));
        assert_eq!(kr.poll_timeout(), Some(at_ms(1000)));
        assert!(!kr.poll(at_ms(200)));
        assert!(!kr.poll(at_ms(999)));
        assert!(kr.poll(at_ms(1000)));
        assert_eq!((kr.forwarded(), kr.aggregated()), (2, 1));
        // The next interval starts at the actual send.
        kr.request(at_ms(1500));
        assert_eq!(kr.poll_timeout(), Some(at_ms(2000)));
        assert!(kr.poll(at_ms(2100)));
        assert_eq!(kr.poll_timeout(), None);
        kr.request(at_ms(2200));
        assert_eq!(kr.poll_timeout(), Some(at_ms(3100)));
    }

    #[test]
    fn late_poll_still_sends() {
        let mut kr = requests();
        kr.request(at_ms(0));
        assert!(kr.poll(at_ms(0)));
        kr.request(at_ms(5000));
        assert_eq!(
            kr.poll_timeout(),
            Some(at_ms(5000)),
            "interval long past: due at once"
        );
        assert!(kr.poll(at_ms(7000)));
    }

    #[test]
    fn steady_storm_is_bounded() {
        // 100 viewers each asking every 10 ms for 10 s: at most one upstream request per second.
        let mut kr = requests();
        let mut sent = 0;
        for ms in (0..10_000).step_by(10) {
            for _ in 0..100 {
                kr.request(at_ms(ms));
            }
            if kr.poll(at_ms(ms)) {
                sent += 1;
            }
        }
        assert_eq!(sent, 10);
        assert_eq!(kr.forwarded(), 10);
        // Every request either went up or was absorbed; one is still pending at the end.
        assert_eq!(kr.forwarded() + kr.aggregated() + 1, 100_000);
        assert!(kr.is_pending());
    }

    #[test]
    fn zero_interval_forwards_every_poll() {
        let mut kr = KeyframeRequests::new(Duration::ZERO);
        kr.request(at_ms(0));
        assert!(kr.poll(at_ms(0)));
        kr.request(at_ms(0));
        assert!(kr.poll(at_ms(0)));
        assert_eq!(kr.forwarded(), 2);
    }

    #[test]
    fn huge_interval_does_not_panic() {
        let mut kr = KeyframeRequests::new(Duration::MAX);
        kr.request(at_ms(0));
        assert!(kr.poll(at_ms(0)));
        kr.request(at_ms(1));
        assert_eq!(kr.poll_timeout(), None);
        assert!(!kr.poll(at_ms(1_000_000)));
    }
}
