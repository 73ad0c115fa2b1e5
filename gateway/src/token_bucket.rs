//! A token bucket (sans-IO: time comes in): a rate with a burst, for the per-session API call
//! limit and the per-channel message limit.

use std::time::{Duration, Instant};

/// A rate limit with a burst: tokens refill at `per_second` up to `burst`; each message (or
/// byte) takes its share.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl TokenBucket {
    /// Full at the start: a client may use its burst at once.
    pub fn new(per_second: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            refilled: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self
            .refilled
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        self.refilled = Some(now);
    }

    /// Takes `n` tokens (bytes, for a bandwidth limit) at `now`, if there are that many.
    pub fn take_n(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// Takes one token at `now`; when there is none, how long until there is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second.max(f64::MIN_POSITIVE),
            ));
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(50.0, 50.0);
        let t0 = Instant::now();
        assert_eq!((0..100).filter(|_| b.take(t0).is_ok()).count(), 50);
        let wait = b.take(t0).expect_err("empty");
        assert!(wait <= Duration::from_millis(20) && wait > Duration::ZERO);
        let later = t0 + Duration::from_millis(100);
        assert_eq!((0..100).filter(|_| b.take(later).is_ok()).count(), 5);
    }
}
