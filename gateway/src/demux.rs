//! Which session owns an incoming datagram — sans-IO, so it is tested without sockets.
//!
//! STUN binding requests carry `USERNAME = <our ufrag>:<their ufrag>`, and our ufrag is unique per
//! session (and per ICE restart), so STUN is always routed by ufrag; the source address it came
//! from is then remembered for that session. Everything else (DTLS, SRTP, SRTCP) is routed by
//! source address. Both are hash-map lookups: no session is ever asked "is this yours?".

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::ice::StunMessage;

use crate::ids::SessionId;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub worker: usize,
    pub session: SessionId,
}

/// Changes made by the control plane (new session, ICE restart, session gone).
#[derive(Debug)]
pub enum DemuxUpdate {
    Ufrag { ufrag: String, route: Route },
    Remove { session: SessionId },
}

/// Remote addresses a session may accumulate (candidate pairs, NAT rebinding); beyond this the
/// oldest is forgotten, so a peer spraying STUN from many ports cannot grow the table.
const MAX_ADDRS_PER_SESSION: usize = 8;

#[derive(Default)]
struct Keys {
    ufrags: Vec<String>,
    addrs: Vec<SocketAddr>,
}

/// The routing table.
#[derive(Default)]
pub struct Demux {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    keys: HashMap<SessionId, Keys>,
}

impl Demux {
    pub fn apply(&mut self, update: DemuxUpdate) {
        match update {
            DemuxUpdate::Ufrag { ufrag, route } => {
                self.keys
                    .entry(route.session)
                    .or_default()
                    .ufrags
                    .push(ufrag.clone());
                self.by_ufrag.insert(ufrag, route);
            }
            DemuxUpdate::Remove { session } => {
                let Some(keys) = self.keys.remove(&session) else {
                    return;
                };
                for u in keys.ufrags {
                    self.by_ufrag.remove(&u);
                }
                for a in keys.addrs {
                    if self.by_addr.get(&a).is_some_and(|r| r.session == session) {
                        self.by_addr.remove(&a);
                    }
                }
            }
        }
    }

    /// The owner of a datagram from `source`, if any.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<Route> {
        if is_stun(datagram)
            && let Some(route) = self.route_stun(source, datagram)
        {
            return Some(route);
        }
        self.by_addr.get(&source).copied()
    }

    fn route_stun(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<Route> {
        let msg = StunMessage::parse(datagram).ok()?;
        let (local, _remote) = msg.split_username()?;
        let route = *self.by_ufrag.get(local)?;
        // The address is only learned from STUN naming a live ufrag; str0m still verifies the
        // MESSAGE-INTEGRITY before it believes the pair, so a forged packet gains nothing.
        if self.by_addr.insert(source, route) != Some(route) {
            let keys = self.keys.entry(route.session).or_default();
            keys.addrs.retain(|a| *a != source);
            keys.addrs.push(source);
            if keys.addrs.len() > MAX_ADDRS_PER_SESSION {
                let old = keys.addrs.remove(0);
                if self
                    .by_addr
                    .get(&old)
                    .is_some_and(|r| r.session == route.session)
                {
                    self.by_addr.remove(&old);
                }
            }
        }
        Some(route)
    }

    pub fn sessions(&self) -> usize {
        self.keys.len()
    }

    pub fn addrs(&self) -> usize {
        self.by_addr.len()
    }
}

/// RFC 7983: STUN starts with 0..=3 and carries the magic cookie.
fn is_stun(d: &[u8]) -> bool {
    d.len() >= 20 && d[0] < 4 && d[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;

    fn stun(username: &str) -> Vec<u8> {
        let msg = StunMessage::binding_request(username, TransId::new(), true, 1, 1, false);
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(Some(b"0123456789012345678901"), &mut buf, |_, _| [7u8; 20])
            .expect("serialises");
        buf.truncate(n);
        buf
    }

    #[test]
    fn stun_routes_by_ufrag_then_media_by_address() {
        let mut d = Demux::default();
        let s = SessionId::random();
        let route = Route {
            worker: 1,
            session: s,
        };
        d.apply(DemuxUpdate::Ufrag {
            ufrag: "ourufrag".into(),
            route,
        });
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(
            d.route(peer, &[0x80, 0, 0, 0]),
            None,
            "media before STUN is unknown"
        );
        assert_eq!(d.route(peer, &stun("ourufrag:theirs")), Some(route));
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), Some(route));
        assert_eq!(
            d.route(peer, &stun("other:theirs")),
            Some(route),
            "falls back to address"
        );
        d.apply(DemuxUpdate::Remove { session: s });
        assert_eq!(d.route(peer, &[0x80, 0, 0, 0]), None);
        assert_eq!(d.sessions(), 0);
        assert_eq!(d.addrs(), 0);
    }

    #[test]
    fn an_address_moves_to_the_session_its_stun_names() {
        let mut d = Demux::default();
        let a = Route {
            worker: 0,
            session: SessionId::random(),
        };
        let b = Route {
            worker: 1,
            session: SessionId::random(),
        };
        d.apply(DemuxUpdate::Ufrag {
            ufrag: "aaaa".into(),
            route: a,
        });
        d.apply(DemuxUpdate::Ufrag {
            ufrag: "bbbb".into(),
            route: b,
        });
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        d.route(peer, &stun("aaaa:x"));
        d.route(peer, &stun("bbbb:x"));
        assert_eq!(d.route(peer, &[0x80]), Some(b));
        d.apply(DemuxUpdate::Remove { session: a.session });
        assert_eq!(
            d.route(peer, &[0x80]),
            Some(b),
            "removing a leaves b's address"
        );
    }

    #[test]
    fn addresses_per_session_are_bounded() {
        let mut d = Demux::default();
        let a = Route {
            worker: 0,
            session: SessionId::random(),
        };
        d.apply(DemuxUpdate::Ufrag {
            ufrag: "aaaa".into(),
            route: a,
        });
        for port in 0..100u16 {
            let peer = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
            d.route(peer, &stun("aaaa:x"));
        }
        assert_eq!(d.addrs(), MAX_ADDRS_PER_SESSION);
    }

    #[test]
    fn garbage_is_not_routed_and_does_not_panic() {
        let mut d = Demux::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        for len in 0..64 {
            let mut g = vec![0u8; len];
            if len >= 8 {
                g[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            }
            assert_eq!(d.route(peer, &g), None);
        }
    }
}
