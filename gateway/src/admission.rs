//! Who may open another session now — sans-IO (time is an input), held under the registry's lock.
//!
//! A session that has been answered but has not connected yet (ICE + DTLS) costs memory and a
//! reaper slot and proves nothing about its client: a flood of WHIP/WHEP POSTs that never do ICE
//! is the cheapest attack on a WebRTC server. So new sessions are admitted against three limits:
//! a token bucket of POSTs per source address (429), the source's unconnected sessions (429), and
//! the node's unconnected sessions (503). A session stops counting as pending when it connects
//! or ends. The table of sources is bounded: idle sources are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The limits (`[limits]` in the config file). Zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Session-creating POSTs per second per source address (sustained).
    pub posts_per_second_per_source: f64,
    /// … and in a burst.
    pub post_burst_per_source: f64,
    /// Unconnected sessions one source address may hold.
    pub pending_per_source: usize,
    /// Unconnected sessions on the node.
    pub pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            posts_per_second_per_source: 50.0,
            post_burst_per_source: 200.0,
            pending_per_source: 200,
            pending: 5000,
        }
    }
}

/// Why a session was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// 429: this source POSTs too fast.
    Rate {
        /// Seconds to wait before trying again (`Retry-After`).
        retry_after: u32,
    },
    /// 429: this source holds too many unconnected sessions.
    SourcePending {
        /// Seconds to wait before trying again (`Retry-After`).
        retry_after: u32,
    },
    /// 503: the node holds too many unconnected sessions.
    NodePending {
        /// Seconds to wait before trying again (`Retry-After`).
        retry_after: u32,
    },
}

#[derive(Debug)]
struct Source {
    tokens: f64,
    refilled: Instant,
    pending: usize,
}

/// Sources remembered at most; beyond it idle ones are dropped first, then admission is refused
/// for new sources until some go idle (a spoofed-address storm cannot grow the table).
const MAX_SOURCES: usize = 65_536;

/// A refused source is told to come back after about this long when its sessions are pending.
const PENDING_RETRY: u32 = 5;

/// Admission state: each source's POST token bucket and pending sessions, and the node's.
#[derive(Debug, Default)]
pub struct Admission {
    limits: Limits,
    sources: HashMap<IpAddr, Source>,
    pending: usize,
}

impl Admission {
    /// Admission within `limits`, with nothing pending.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    /// Admit one new session from `source` at `now`: on success it counts as pending until
    /// `settled` is called for it.
    pub fn admit(&mut self, now: Instant, source: IpAddr) -> Result<(), Throttled> {
        let l = self.limits;
        if l.pending > 0 && self.pending >= l.pending {
            return Err(Throttled::NodePending {
                retry_after: PENDING_RETRY,
            });
        }
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.forget_idle(now);
            if self.sources.len() >= MAX_SOURCES {
                return Err(Throttled::NodePending {
                    retry_after: PENDING_RETRY,
                });
            }
        }
        let s = self.sources.entry(source).or_insert(Source {
            tokens: l.post_burst_per_source.max(1.0),
            refilled: now,
            pending: 0,
        });
        if l.posts_per_second_per_source > 0.0 {
            let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
            s.tokens = (s.tokens + elapsed * l.posts_per_second_per_source)
                .min(l.post_burst_per_source.max(1.0));
            s.refilled = now;
            if s.tokens < 1.0 {
                let wait = (1.0 - s.tokens) / l.posts_per_second_per_source;
                return Err(Throttled::Rate {
                    retry_after: (wait.ceil() as u32).max(1),
                });
            }
        }
        if l.pending_per_source > 0 && s.pending >= l.pending_per_source {
            return Err(Throttled::SourcePending {
                retry_after: PENDING_RETRY,
            });
        }
        if l.posts_per_second_per_source > 0.0 {
            s.tokens -= 1.0;
        }
        s.pending += 1;
        self.pending += 1;
        Ok(())
    }

    /// A session admitted from `source` connected, ended, or was never created.
    pub fn settled(&mut self, source: IpAddr) {
        if let Some(s) = self.sources.get_mut(&source)
            && s.pending > 0
        {
            s.pending -= 1;
            self.pending -= 1;
        }
    }

    /// Unconnected sessions on the node.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Drops sources with nothing pending whose bucket is full again.
    fn forget_idle(&mut self, now: Instant) {
        let l = self.limits;
        let full_after = if l.posts_per_second_per_source > 0.0 {
            Duration::from_secs_f64(l.post_burst_per_source / l.posts_per_second_per_source)
        } else {
            Duration::ZERO
        };
        self.sources
            .retain(|_, s| s.pending > 0 || now.saturating_duration_since(s.refilled) < full_after);
        crate::heap_trim::shrink_map(&mut self.sources);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: f64, per_source: usize, node: usize) -> Limits {
        Limits {
            posts_per_second_per_source: rate,
            post_burst_per_source: burst,
            pending_per_source: per_source,
            pending: node,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(10.0, 5.0, 0, 0));
        for _ in 0..5 {
            assert_eq!(a.admit(t0, ip(1)), Ok(()));
        }
        assert_eq!(a.admit(t0, ip(1)), Err(Throttled::Rate { retry_after: 1 }));
        assert_eq!(
            a.admit(t0, ip(2)),
            Ok(()),
            "another source has its own bucket"
        );
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.admit(t1, ip(1)), Ok(()));
        assert!(a.admit(t1, ip(1)).is_err());
    }

    #[test]
    fn pending_sessions_per_source_and_per_node() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(0.0, 0.0, 2, 3));
        assert_eq!(a.admit(t0, ip(1)), Ok(()));
        assert_eq!(a.admit(t0, ip(1)), Ok(()));
        assert_eq!(
            a.admit(t0, ip(1)),
            Err(Throttled::SourcePending { retry_after: 5 })
        );
        assert_eq!(a.admit(t0, ip(2)), Ok(()));
        assert_eq!(
            a.admit(t0, ip(3)),
            Err(Throttled::NodePending { retry_after: 5 }),
            "three pending on the node"
        );
        // One connects: its source and the node have room again.
        a.settled(ip(1));
        assert_eq!(a.pending(), 2);
        assert_eq!(a.admit(t0, ip(1)), Ok(()));
        a.settled(ip(9));
        assert_eq!(a.pending(), 3, "settling an unknown source changes nothing");
    }

    #[test]
    fn zero_turns_limits_off() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(0.0, 0.0, 0, 0));
        for _ in 0..10_000 {
            assert_eq!(a.admit(t0, ip(1)), Ok(()));
        }
    }

    #[test]
    fn the_source_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(1.0, 1.0, 0, 0));
        for i in 0..MAX_SOURCES as u32 {
            let addr = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            assert_eq!(a.admit(t0, addr), Ok(()));
            a.settled(addr);
        }
        let new = IpAddr::from([198, 51, 100, 1]);
        assert!(a.admit(t0, new).is_err(), "full of fresh sources");
        // Once their buckets are full again they are forgotten and the new one gets in.
        assert_eq!(a.admit(t0 + Duration::from_secs(2), new), Ok(()));
        assert!(a.sources.len() < 10);
    }
}
