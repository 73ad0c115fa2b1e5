//! Which session owns an incoming datagram — sans-IO (time is an input), so it is tested without
//! sockets.
//!
//! STUN binding requests carry `USERNAME = <our ufrag>:<their ufrag>`, and our ufrag is unique per
//! session (and per ICE restart), so STUN is routed by ufrag. A source address is bound to a
//! session only once a request from it has passed MESSAGE-INTEGRITY with that session's ICE
//! password: anyone can copy a USERNAME off the wire, nobody without the password can forge the
//! HMAC. Everything else (DTLS, SRTP, SRTCP) is routed by the bound source address. All of it is
//! hash-map lookups plus at most one HMAC-SHA1: no session is ever asked "is this yours?".
//!
//! Forged STUN (a live ufrag, a wrong or missing integrity) is dropped here, counted per session
//! and node-wide, and costs O(1) with no allocation per source address: an attacker spraying it
//! from a thousand ports neither grows the table nor moves the session off its real address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use str0m::ice::StunMessage;

use crate::ids::SessionId;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The worker the session runs on.
    pub worker: usize,
    /// The session.
    pub session: SessionId,
}

/// Changes made by the control plane (new session, ICE restart, session gone).
#[derive(Debug, Clone)]
pub enum DemuxUpdate {
    /// STUN naming `ufrag` goes to `route` if it verifies with `pwd` (our ICE password for that
    /// ufrag). `failures` counts the session's forged STUN (shared with the registry, so the
    /// stream list can show it); an ICE restart sends `None` and keeps the session's counter.
    Ufrag {
        /// Our ufrag for the session (this ICE generation).
        ufrag: String,
        /// Our ICE password: the MESSAGE-INTEGRITY key.
        pwd: String,
        /// Where the session's datagrams go.
        route: Route,
        /// The session's forged-STUN counter; `None` keeps the one it has.
        failures: Option<Arc<AtomicU64>>,
    },
    /// The session ended: forget its ufrags and bound addresses.
    Remove {
        /// The session.
        session: SessionId,
    },
    /// The node starts draining (one address): tell the cluster's other gateways now that every
    /// bound client is held here, so that flows the balancer moves to them are forwarded at once
    /// instead of probed. The UDP receive loop acts on it; a table has nothing to change.
    ClaimAll,
    /// A client datagram the UDP receive loop handed over while the session it asked for was
    /// resumed here (`resume`): routed again once the session's ufrag is known, which binds the
    /// client's address as any first STUN check does. A table has nothing to change.
    Replay {
        /// The client.
        source: std::net::SocketAddr,
        /// Our address it was sent to.
        destination: std::net::SocketAddr,
        /// The datagram (a STUN check).
        datagram: Vec<u8>,
    },
}

/// Every routing table that must learn of each session: the UDP socket's and, when ICE-TCP is
/// on, its listener's (each owns a `Demux`, so neither waits on a lock).
#[derive(Debug, Clone, Default)]
pub struct DemuxFeed(Vec<tokio::sync::mpsc::UnboundedSender<DemuxUpdate>>);

impl DemuxFeed {
    /// A feed to these tables.
    pub fn new(tables: Vec<tokio::sync::mpsc::UnboundedSender<DemuxUpdate>>) -> DemuxFeed {
        DemuxFeed(tables)
    }

    /// Sends `update` to every table.
    pub fn send(&self, update: DemuxUpdate) {
        for table in &self.0 {
            // A table whose task has stopped (shutdown) needs no more updates.
            let _ = table.send(update.clone());
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Hand it to this session's worker.
    To(Route),
    /// No session knows the source (and it is no STUN naming a live ufrag).
    Unknown,
    /// STUN naming a live ufrag whose MESSAGE-INTEGRITY failed (or is missing): dropped.
    Forged,
}

/// Remote addresses a session may have bound at once (candidate pairs, NAT rebinding). Only
/// verified STUN binds one; beyond this the least recently used is forgotten.
const MAX_ADDRS_PER_SESSION: usize = 8;

/// A session's forged STUN is logged at most this often (it is counted always).
const LOG_EVERY: Duration = Duration::from_secs(10);

struct Credential {
    route: Route,
    key: hmac::Key,
}

struct Bound {
    route: Route,
    /// Last verified STUN or routed datagram from this address: eviction picks the oldest.
    used: Instant,
}

#[derive(Default)]
struct Keys {
    ufrags: Vec<String>,
    addrs: Vec<SocketAddr>,
    failures: Arc<AtomicU64>,
    logged: Option<Instant>,
}

/// The routing table.
#[derive(Default)]
pub struct Demux {
    /// Boxed: an HMAC key holds its precomputed contexts (hundreds of bytes), and a map keeps its
    /// peak capacity.
    by_ufrag: HashMap<String, Box<Credential>>,
    by_addr: HashMap<SocketAddr, Bound>,
    keys: HashMap<SessionId, Keys>,
}

impl Demux {
    /// Learns or forgets a session's ufrag, as the workers announce it.
    pub fn apply(&mut self, update: DemuxUpdate) {
        match update {
            DemuxUpdate::ClaimAll | DemuxUpdate::Replay { .. } => {}
            DemuxUpdate::Ufrag {
                ufrag,
                pwd,
                route,
                failures,
            } => {
                let keys = self.keys.entry(route.session).or_default();
                if let Some(f) = failures {
                    keys.failures = f;
                }
                keys.ufrags.push(ufrag.clone());
                let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
                self.by_ufrag
                    .insert(ufrag, Box::new(Credential { route, key }));
            }
            DemuxUpdate::Remove { session } => {
                let Some(keys) = self.keys.remove(&session) else {
                    return;
                };
                for u in keys.ufrags {
                    self.by_ufrag.remove(&u);
                }
                for a in keys.addrs {
                    if self
                        .by_addr
                        .get(&a)
                        .is_some_and(|b| b.route.session == session)
                    {
                        self.by_addr.remove(&a);
                    }
                }
                crate::heap_trim::shrink_map(&mut self.keys);
                crate::heap_trim::shrink_map(&mut self.by_ufrag);
                crate::heap_trim::shrink_map(&mut self.by_addr);
            }
        }
    }

    /// The owner of a datagram that arrived from `source` at `now`.
    pub fn route(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Dispatch {
        if is_stun(datagram)
            && let Ok(msg) = StunMessage::parse(datagram)
            && let Some((local, _remote)) = msg.split_username()
            && let Some(cred) = self.by_ufrag.get(local)
        {
            let route = cred.route;
            if !verify(&msg, &cred.key) {
                self.forged(now, route.session, source);
                return Dispatch::Forged;
            }
            self.bind(now, source, route);
            return Dispatch::To(route);
        }
        match self.by_addr.get_mut(&source) {
            Some(b) => {
                b.used = now;
                Dispatch::To(b.route)
            }
            None => Dispatch::Unknown,
        }
    }

    /// `source` proved it holds `route`'s ICE password.
    fn bind(&mut self, now: Instant, source: SocketAddr, route: Route) {
        let previous = self.by_addr.insert(source, Bound { route, used: now });
        if previous.as_ref().is_some_and(|b| b.route == route) {
            return;
        }
        // A verified request for another session from this address: that session's client owns
        // the address now (a new PeerConnection on the same socket).
        if let Some(old) = previous
            && let Some(k) = self.keys.get_mut(&old.route.session)
        {
            k.addrs.retain(|a| *a != source);
        }
        let keys = self.keys.entry(route.session).or_default();
        keys.addrs.push(source);
        if keys.addrs.len() > MAX_ADDRS_PER_SESSION {
            let by_addr = &self.by_addr;
            let used = |a: &SocketAddr| by_addr.get(a).map(|b| b.used);
            if let Some((i, _)) = keys
                .addrs
                .iter()
                .enumerate()
                .filter(|(_, a)| **a != source)
                .min_by_key(|(_, a)| used(a))
            {
                let old = keys.addrs.swap_remove(i);
                if self
                    .by_addr
                    .get(&old)
                    .is_some_and(|b| b.route.session == route.session)
                {
                    self.by_addr.remove(&old);
                }
            }
        }
    }

    fn forged(&mut self, now: Instant, session: SessionId, source: SocketAddr) {
        let Some(keys) = self.keys.get_mut(&session) else {
            return;
        };
        let n = keys.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if keys
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            keys.logged = Some(now);
            tracing::warn!(
                %session, %source, total = n,
                "STUN naming this session's ufrag failed MESSAGE-INTEGRITY; dropped"
            );
        }
    }

    /// Sessions in the table.
    pub fn sessions(&self) -> usize {
        self.keys.len()
    }

    /// Source addresses bound to sessions.
    pub fn addrs(&self) -> usize {
        self.by_addr.len()
    }

    /// Every source address bound to a session.
    pub fn bound(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_addr.keys().copied()
    }
}

/// MESSAGE-INTEGRITY (RFC 8489 §14.5) with the session's precomputed HMAC key; a request without
/// one fails.
fn verify(msg: &StunMessage<'_>, key: &hmac::Key) -> bool {
    msg.verify(&[], |_, parts| {
        let mut ctx = hmac::Context::with_key(key);
        for p in parts {
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 20];
        // SHA-1 tags are 20 bytes; anything else leaves zeros and fails the comparison.
        if let Some(t) = tag.as_ref().get(..20) {
            out.copy_from_slice(t);
        }
        out
    })
}

/// The local half (ours) of a STUN request's `USERNAME`, if the datagram is one.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<String> {
    if !is_stun(datagram) {
        return None;
    }
    let msg = StunMessage::parse(datagram).ok()?;
    let (local, _remote) = msg.split_username()?;
    Some(local.to_string())
}

/// RFC 7983: STUN starts with 0..=3 and carries the magic cookie.
fn is_stun(d: &[u8]) -> bool {
    d.len() >= 20 && d[0] < 4 && d[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

#[cfg(test)]
mod tests;
