//! Where a datagram goes when its session lives on another gateway of the cluster — the UDP half
//! of "one address" (docs/ARCHITECTURE.md). Sans-IO: the receive loop (`udp.rs`) feeds it
//! datagrams and time, and sends what it returns.
//!
//! Two roles, each gateway playing both:
//! - **the way in** (the gateway the balancer sends a client to): a datagram no session of its own
//!   takes is sent on, in a tunnel frame (`peer_tunnel`), to the gateway that holds the session.
//!   Which one: a STUN binding names it (our ufrags are owner tags); after that the client's
//!   address is remembered. A client whose flow the balancer moved mid-stream sends DTLS or SRTP,
//!   which names nobody: it is probed to every other gateway (rate-limited), and the one that
//!   holds the session claims it.
//! - **the holder**: a frame's datagram is routed to its session as if it came straight from the
//!   client, and the client is remembered as reached "via" the way-in gateway, so that the
//!   session's datagrams for it go back through that gateway ([`ViaTable`], read by the senders)
//!   and leave from the address the client talks to. A datagram straight from the client ends that.
//!
//! And a third: **the resumer**. A STUN check forwarded to a holder is answered within a round
//! trip. When the holder is gone from the cluster, or the previous check forwarded to it got no
//! answer (and nothing else came back) for `HOLDER_SILENT`, the way in resumes the session itself
//! from its replica (`resume`), if it has one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::owner_tag::{OneAddress, Owner};
use crate::peer_tunnel::{Frame, Kind, Tunnel};
use crate::token_bucket::TokenBucket;

/// A remembered way in or way back is forgotten after this long without a datagram (ICE consent
/// checks come every few seconds, so a live session never gets there).
const IDLE: Duration = Duration::from_secs(30);
/// How stale a via entry may get before a datagram refreshes it (far below `IDLE`).
const REFRESH: Duration = Duration::from_secs(1);
/// Most clients remembered as held elsewhere; beyond it the table is swept of idle entries and,
/// if still full, new clients are not remembered (they are probed again).
const MAX_ELSEWHERE: usize = 65_536;
/// Node-wide: client datagrams per second that may be probed (each to every other gateway). A
/// moved flow needs one answer (a balancer that drops a gateway moves all its flows at once);
/// garbage from the internet must not become much cluster traffic.
const PROBES_PER_SECOND: f64 = 1000.0;
/// A client just probed is not probed again for this long: its holder's claim is on its way
/// (one round trip in the cluster), and the flow's next datagrams must not eat the budget.
const PROBE_WAIT: Duration = Duration::from_millis(50);
/// A holder that has not answered a forwarded STUN check (nor sent anything else back) for this
/// long is taken for dead: a live one answers within a round trip, and clients check again
/// every few seconds, faster once their checks go unanswered.
pub const HOLDER_SILENT: Duration = Duration::from_secs(1);
/// A resume asked for a client is not asked again for this long (it takes milliseconds).
const RESUME_WAIT: Duration = Duration::from_secs(1);
/// How often a gateway tells every other one it is up (`Kind::Alive`).
pub const ALIVE_EVERY: Duration = Duration::from_millis(250);
/// A gateway not heard from for this long (six heartbeats) is taken for dead, and the sessions
/// it held are resumed on their clients' next datagrams: a lost heartbeat or two on a cluster
/// network must not make two gateways serve one session.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);

/// The holder's side: clients whose datagrams reach this gateway through another one. Shared by
/// the receive loop (writer) and the senders (readers); empty, it costs a senders one atomic load.
#[derive(Default)]
pub struct ViaTable {
    map: RwLock<HashMap<SocketAddr, (SocketAddr, Instant)>>,
    len: AtomicUsize,
}

impl ViaTable {
    /// The gateway `client`'s datagrams must go through, if any.
    pub fn get(&self, client: SocketAddr) -> Option<SocketAddr> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&client).map(|(via, _)| *via)
    }

    /// Whether no client is reached through another gateway.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// `client` now reaches us through `via`; true if that is news (new client or new way in).
    /// Every tunnelled datagram says so: the write lock (which the senders' reads wait for) is
    /// only taken when it is news or the entry is a second old.
    fn insert(&self, client: SocketAddr, via: SocketAddr, now: Instant) -> bool {
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some((known, used)) = map.get(&client)
                && *known == via
                && now.saturating_duration_since(*used) < REFRESH
            {
                return false;
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let previous = map.insert(client, (via, now));
        self.len.store(map.len(), Ordering::Relaxed);
        previous.is_none_or(|(old, _)| old != via)
    }

    /// `client` reached us directly.
    fn remove(&self, client: SocketAddr) {
        if self.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&client);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    fn sweep(&self, now: Instant) {
        if self.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
        self.len.store(map.len(), Ordering::Relaxed);
    }
}

/// What the receive loop does with a tunnel frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameAction<'a> {
    /// Route `payload` as a datagram from `client`; if a session takes it, call
    /// [`Forwarding::delivered`].
    Deliver {
        /// The client it is from.
        client: SocketAddr,
        /// The client's datagram.
        payload: &'a [u8],
        /// It was probed (the sender does not know who holds the session).
        probe: bool,
    },
    /// Send `payload` to `client` from our own socket.
    ToClient {
        /// The client.
        client: SocketAddr,
        /// The session's datagram.
        payload: &'a [u8],
    },
    /// Nothing to send (a claim, remembered; or a frame dropped).
    Nothing,
}

/// Counters for `/v1/stats` and the metrics.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ForwardingStats {
    /// Client datagrams sent on to the gateway that holds their session.
    pub forwarded: u64,
    /// Client datagrams probed to every other gateway.
    pub probed: u64,
    /// Datagrams that came through another gateway and reached a session here.
    pub delivered: u64,
    /// The holders' datagrams sent on to their clients from here.
    pub replied: u64,
    /// Tunnel frames refused (bad HMAC, malformed).
    pub refused: u64,
}

/// The receive loop's forwarding state.
pub struct Forwarding {
    one: &'static OneAddress,
    tunnel: Tunnel,
    /// The way-in side: clients whose session another gateway holds → that gateway.
    elsewhere: HashMap<SocketAddr, (SocketAddr, Instant)>,
    probes: TokenBucket,
    /// Clients probed in the last `PROBE_WAIT`.
    probing: HashMap<SocketAddr, Instant>,
    /// Clients whose STUN check went to their holder with nothing back since: the holder, and
    /// when the first such check went.
    unanswered: HashMap<SocketAddr, (SocketAddr, Instant)>,
    /// Clients whose session a resume was asked for, and when.
    resuming: HashMap<SocketAddr, Instant>,
    /// Each client's latest STUN check sent to a holder: what a resume replays when the holder
    /// dies between checks (it carries the nomination the new session needs).
    last_check: HashMap<SocketAddr, (Vec<u8>, Instant)>,
    /// When each other gateway was last heard from (`Kind::Alive`).
    heard: HashMap<SocketAddr, Instant>,
    swept: Option<Instant>,
    /// Shared with the senders.
    pub via: std::sync::Arc<ViaTable>,
    /// Counters.
    pub stats: ForwardingStats,
}

impl Forwarding {
    /// Forwarding for the node whose one-address state is `one`, sharing `via` with the senders.
    pub fn new(one: &'static OneAddress, via: std::sync::Arc<ViaTable>) -> Forwarding {
        Forwarding {
            one,
            tunnel: Tunnel::new(&one.tunnel_key),
            elsewhere: HashMap::new(),
            probes: TokenBucket::new(PROBES_PER_SECOND, PROBES_PER_SECOND),
            probing: HashMap::new(),
            unanswered: HashMap::new(),
            resuming: HashMap::new(),
            last_check: HashMap::new(),
            heard: HashMap::new(),
            swept: None,
            via,
            stats: ForwardingStats::default(),
        }
    }

    /// The tunnel (the senders wrap with it too).
    pub fn tunnel(&self) -> &Tunnel {
        &self.tunnel
    }

    /// A client datagram no session here took: the frames to send, as (gateway, frame).
    pub fn on_unknown(
        &mut self,
        now: Instant,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        self.sweep(now);
        // A STUN check names its holder: it wins over what the address said before (a new
        // PeerConnection on a reused port, or a forged check that redirected the address).
        if let Some(ufrag) = crate::demux::stun_local_ufrag(datagram) {
            let Some(owner) = self.one.ufrag_owner_elsewhere(&ufrag) else {
                return Vec::new();
            };
            return self.check_to(now, client, datagram, owner);
        }
        if let Some((owner, used)) = self.elsewhere.get_mut(&client) {
            *used = now;
            self.stats.forwarded += 1;
            let owner = *owner;
            return vec![(owner, self.tunnel.wrap(Kind::Forward, client, datagram))];
        }
        // DTLS (20..=63) or RTP/RTCP (128..=191) from a client whose flow moved here.
        let Some(&first) = datagram.first() else {
            return Vec::new();
        };
        if !((20..=63).contains(&first) || (128..=191).contains(&first))
            || self
                .probing
                .get(&client)
                .is_some_and(|at| now.saturating_duration_since(*at) < PROBE_WAIT)
            || !self.probes.take_n(1.0, now)
        {
            return Vec::new();
        }
        if self.probing.len() >= MAX_ELSEWHERE {
            self.probing
                .retain(|_, at| now.saturating_duration_since(*at) < PROBE_WAIT);
        }
        self.probing.insert(client, now);
        let frame = self.tunnel.wrap(Kind::Probe, client, datagram);
        self.stats.probed += 1;
        others_media(self.one).map(|t| (t, frame.clone())).collect()
    }

    /// A client's STUN check, to the gateway that holds its session (named by the ufrag, or by
    /// the session's replica once another gateway resumed it).
    pub fn check_to(
        &mut self,
        now: Instant,
        client: SocketAddr,
        datagram: &[u8],
        holder: Owner,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        self.sweep(now);
        // Unverified (we do not hold the password): a forger only sends its own datagrams to
        // the holder, which checks them as it checks any, and the client's next check puts its
        // address back.
        self.remember(client, holder.udp(), now);
        if self.last_check.len() < MAX_ELSEWHERE || self.last_check.contains_key(&client) {
            self.last_check.insert(client, (datagram.to_vec(), now));
        }
        if self.unanswered.len() < MAX_ELSEWHERE {
            let since = self.unanswered.entry(client).or_insert((holder.udp(), now));
            // Another holder (the session was resumed elsewhere): its silence starts now.
            if since.0 != holder.udp() {
                *since = (holder.udp(), now);
            }
        }
        self.stats.forwarded += 1;
        vec![(
            holder.udp(),
            self.tunnel.wrap(Kind::Forward, client, datagram),
        )]
    }

    /// Is `holder` gone for `client`'s session: no longer a gateway of the cluster, not heard
    /// from for `DEAD_AFTER`, or silent since a check of this client went to it
    /// `HOLDER_SILENT` ago?
    pub fn holder_gone(&self, now: Instant, client: SocketAddr, holder: Owner) -> bool {
        !self.one.gateways.contains(std::net::IpAddr::V4(holder.ip))
            || self.dead(now, holder.udp())
            || self.unanswered.get(&client).is_some_and(|(to, at)| {
                *to == holder.udp() && now.saturating_duration_since(*at) >= HOLDER_SILENT
            })
    }

    /// A gateway that was heard from, but not for `DEAD_AFTER` (one never heard from, an older
    /// version, is judged by its answers only).
    fn dead(&self, now: Instant, gateway: SocketAddr) -> bool {
        self.heard
            .get(&gateway)
            .is_some_and(|at| now.saturating_duration_since(*at) >= DEAD_AFTER)
    }

    /// A datagram (not a check) from `client`, whose session another gateway held: when that
    /// gateway is dead, the client's latest check, for a resume to replay.
    pub fn check_of_orphan(&self, now: Instant, client: SocketAddr) -> Option<&[u8]> {
        let (holder, _) = self.elsewhere.get(&client)?;
        if !self.dead(now, *holder) {
            return None;
        }
        self.last_check
            .get(&client)
            .map(|(check, _)| check.as_slice())
    }

    /// Nothing from `client` was sent on to another gateway yet (it is not remembered there).
    pub fn first_from(&self, client: SocketAddr) -> bool {
        !self.elsewhere.contains_key(&client) && !self.last_check.contains_key(&client)
    }

    /// Whether to ask for `client`'s session to be resumed now (not while an earlier ask is
    /// under way).
    pub fn ask_resume(&mut self, now: Instant, client: SocketAddr) -> bool {
        if self
            .resuming
            .get(&client)
            .is_some_and(|at| now.saturating_duration_since(*at) < RESUME_WAIT)
        {
            return false;
        }
        if self.resuming.len() >= MAX_ELSEWHERE {
            self.resuming
                .retain(|_, at| now.saturating_duration_since(*at) < RESUME_WAIT);
        }
        self.resuming.insert(client, now);
        self.unanswered.remove(&client);
        self.elsewhere.remove(&client);
        true
    }

    /// Claims for these clients (every one bound here), to every other gateway: sent when this
    /// gateway starts draining, so that the flows the balancer is about to move are forwarded
    /// back here from their first datagram, not probed.
    pub fn claim_all(
        &self,
        clients: impl Iterator<Item = SocketAddr>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let gateways: Vec<SocketAddr> = others_media(self.one).collect();
        clients
            .flat_map(|client| {
                let frame = self.tunnel.wrap(Kind::Claim, client, &[]);
                gateways.iter().map(move |g| (*g, frame.clone()))
            })
            .collect()
    }

    /// A tunnel frame from gateway `from`.
    pub fn on_frame<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> FrameAction<'a> {
        self.sweep(now);
        let frame = match self.tunnel.unwrap(datagram) {
            Ok(f) => f,
            Err(_) => {
                self.stats.refused += 1;
                return FrameAction::Nothing;
            }
        };
        let Frame {
            kind,
            client,
            payload,
        } = frame;
        match kind {
            Kind::Forward | Kind::Probe => FrameAction::Deliver {
                client,
                payload,
                probe: kind == Kind::Probe,
            },
            Kind::Reply => {
                self.stats.replied += 1;
                self.unanswered.remove(&client);
                self.remember(client, from, now);
                FrameAction::ToClient { client, payload }
            }
            Kind::Claim => {
                self.remember(client, from, now);
                FrameAction::Nothing
            }
            Kind::Alive => {
                if self.heard.len() < MAX_ELSEWHERE || self.heard.contains_key(&from) {
                    self.heard.insert(from, now);
                }
                FrameAction::Nothing
            }
        }
    }

    /// A datagram from `client` that came through gateway `from` reached a session here: the
    /// session's datagrams for the client go back that way. Returns a claim to send `from` when
    /// it needs to learn that the session is here.
    pub fn delivered(
        &mut self,
        now: Instant,
        client: SocketAddr,
        from: SocketAddr,
        probe: bool,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        self.stats.delivered += 1;
        let news = self.via.insert(client, from, now);
        // The way in may hold an older answer (another gateway); we are the holder now.
        self.elsewhere.remove(&client);
        (news || probe).then(|| (from, self.tunnel.wrap(Kind::Claim, client, &[])))
    }

    /// A datagram straight from `client` reached a session here.
    pub fn direct(&mut self, client: SocketAddr) {
        self.via.remove(client);
    }

    fn remember(&mut self, client: SocketAddr, owner: SocketAddr, now: Instant) {
        if self.elsewhere.len() >= MAX_ELSEWHERE && !self.elsewhere.contains_key(&client) {
            self.elsewhere
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
            if self.elsewhere.len() >= MAX_ELSEWHERE {
                return;
            }
        }
        self.elsewhere.insert(client, (owner, now));
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < IDLE)
        {
            return;
        }
        self.swept = Some(now);
        self.elsewhere
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
        self.probing
            .retain(|_, at| now.saturating_duration_since(*at) < PROBE_WAIT);
        self.unanswered
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < IDLE);
        self.resuming
            .retain(|_, at| now.saturating_duration_since(*at) < RESUME_WAIT);
        self.last_check
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < IDLE);
        self.via.sweep(now);
    }
}

/// The other gateways' media sockets.
fn others_media(one: &OneAddress) -> impl Iterator<Item = SocketAddr> + use<> {
    one.others(one.tags.own().udp_port)
}

/// The heartbeat (`Kind::Alive`) for each other gateway of `one`'s cluster.
pub fn alive_frames(one: &OneAddress, tunnel: &Tunnel) -> Vec<(SocketAddr, Vec<u8>)> {
    let frame = tunnel.wrap(Kind::Alive, SocketAddr::from(([0, 0, 0, 0], 0)), &[]);
    others_media(one).map(|g| (g, frame.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner_tag::{ClusterSecrets, GatewaySet, Owner, OwnerTags};
    use std::net::Ipv4Addr;

    fn gateway(last: u8, members: &GatewaySet) -> &'static OneAddress {
        let secrets = ClusterSecrets::derive(b"cluster key");
        let own = Owner {
            ip: Ipv4Addr::new(10, 0, 0, last),
            udp_port: 8189,
            http_port: 8080,
        };
        Box::leak(Box::new(OneAddress {
            tags: OwnerTags::new(&secrets.tag_key, own).expect("tags"),
            gateways: members.clone(),
            tunnel_key: secrets.tunnel_key,
            replica_key: secrets.replica_key,
        }))
    }

    /// A STUN binding request naming `ufrag` (ours), as a client sends it.
    fn binding(ufrag: &str) -> Vec<u8> {
        let username = format!("{ufrag}:theirs");
        let msg = str0m::ice::StunMessage::binding_request(
            &username,
            str0m::ice::TransId::new(),
            true,
            1,
            1,
            false,
        );
        let mut buf = vec![0u8; 512];
        let n = msg
            .to_bytes(Some(b"somebody's password"), &mut buf, |_, _| [7u8; 20])
            .expect("serialises");
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_holder_that_leaves_the_cluster_or_stays_silent_after_a_check_is_gone() {
        let members = GatewaySet::default();
        members.update(["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
        let (a, b, c) = (
            gateway(1, &members),
            gateway(2, &members),
            gateway(3, &members),
        );
        let t0 = Instant::now();
        let client: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut way_in = Forwarding::new(b, Default::default());
        let holder = a.tags.own();
        let check = binding(&a.tags.ufrag());

        // A live holder answers: never gone, however long the session lasts.
        assert!(!way_in.holder_gone(t0, client, holder));
        let frames = way_in.check_to(t0, client, &check, holder);
        assert_eq!(frames.len(), 1);
        let reply = Tunnel::new(&a.tunnel_key).wrap(Kind::Reply, client, b"answer");
        assert!(matches!(
            way_in.on_frame(t0, holder.udp(), &reply),
            FrameAction::ToClient { .. }
        ));
        let later = t0 + HOLDER_SILENT * 3;
        assert!(!way_in.holder_gone(later, client, holder));

        // A check with nothing back for `HOLDER_SILENT`: gone.
        way_in.check_to(later, client, &check, holder);
        assert!(!way_in.holder_gone(later + HOLDER_SILENT / 2, client, holder));
        assert!(way_in.holder_gone(later + HOLDER_SILENT, client, holder));

        // Resumed on gateway 3 meanwhile: its silence starts with the first check sent to it.
        let resumer = c.tags.own();
        let t1 = later + HOLDER_SILENT * 2;
        way_in.check_to(t1, client, &check, resumer);
        assert!(!way_in.holder_gone(t1 + HOLDER_SILENT / 2, client, resumer));

        // One resume asked per client at a time.
        assert!(way_in.ask_resume(t1, client));
        assert!(!way_in.ask_resume(t1 + Duration::from_millis(10), client));
        assert!(way_in.ask_resume(t1 + Duration::from_secs(2), client));

        // A holder the membership no longer lists is gone at once.
        members.update(["10.0.0.2:7000", "10.0.0.3:7000"]);
        assert!(way_in.holder_gone(t1, client, holder));
    }

    #[test]
    fn a_holder_whose_heartbeat_stops_is_dead_and_its_clients_media_replays_their_check() {
        let members = GatewaySet::default();
        members.update(["10.0.0.1:7000", "10.0.0.2:7000"]);
        let (a, b) = (gateway(1, &members), gateway(2, &members));
        let t0 = Instant::now();
        let client: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut way_in = Forwarding::new(b, Default::default());
        let holder = a.tags.own();
        let check = binding(&a.tags.ufrag());
        way_in.check_to(t0, client, &check, holder);
        let reply = Tunnel::new(&a.tunnel_key).wrap(Kind::Reply, client, b"answer");
        way_in.on_frame(t0, holder.udp(), &reply);

        // Never heard from: judged by its answers only.
        let later = t0 + DEAD_AFTER * 2;
        assert!(!way_in.holder_gone(later, client, holder));
        assert_eq!(way_in.check_of_orphan(later, client), None);

        // Heartbeats from gateway 1 (made as it makes them), then none for `DEAD_AFTER`.
        let alive = alive_frames(a, &Tunnel::new(&a.tunnel_key));
        assert_eq!(alive.len(), 1, "one other gateway");
        assert_eq!(alive[0].0, b.tags.own().udp());
        assert_eq!(
            way_in.on_frame(later, holder.udp(), &alive[0].1),
            FrameAction::Nothing
        );
        assert!(!way_in.holder_gone(later + DEAD_AFTER / 2, client, holder));
        assert_eq!(way_in.check_of_orphan(later + DEAD_AFTER / 2, client), None);
        let dead = later + DEAD_AFTER;
        assert!(way_in.holder_gone(dead, client, holder));
        // The client's media now brings back its last check, to resume with.
        assert_eq!(way_in.check_of_orphan(dead, client), Some(check.as_slice()));
        assert!(way_in.ask_resume(dead, client));
        assert_eq!(way_in.check_of_orphan(dead, client), None, "asked once");
        // A heartbeat forged without the cluster key is refused.
        let forged = Tunnel::new(&[0u8; 32]).wrap(Kind::Alive, client, &[]);
        assert_eq!(
            way_in.on_frame(dead, holder.udp(), &forged),
            FrameAction::Nothing
        );
        assert!(way_in.holder_gone(dead, client, holder));
    }

    #[test]
    fn a_session_elsewhere_is_reached_by_its_ufrag_then_by_the_clients_address() {
        let members = GatewaySet::default();
        members.update(["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
        let (a, b) = (gateway(1, &members), gateway(2, &members));
        let now = Instant::now();
        let client: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut way_in = Forwarding::new(b, Default::default());
        let mut holder = Forwarding::new(a, Default::default());

        // The first STUN names the holder: forwarded there, and the client remembered.
        let stun = binding(&a.tags.ufrag());
        let frames = way_in.on_unknown(now, client, &stun);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, a.tags.own().udp());
        let FrameAction::Deliver {
            client: c,
            payload,
            probe,
        } = holder.on_frame(now, b.tags.own().udp(), &frames[0].1)
        else {
            panic!("a forwarded datagram is delivered");
        };
        assert_eq!((c, payload, probe), (client, &stun[..], false));
        // The session took it: the client is now reached through the way in.
        let claim = holder.delivered(now, client, b.tags.own().udp(), false);
        assert!(claim.is_some(), "news is claimed");
        assert_eq!(holder.via.get(client), Some(b.tags.own().udp()));
        assert!(
            holder
                .delivered(now, client, b.tags.own().udp(), false)
                .is_none()
        );

        // DTLS from the same client goes the same way, by address.
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        let frames = way_in.on_unknown(now, client, &dtls);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, a.tags.own().udp());

        // A check naming another holder (a new PeerConnection on the same port) wins over the
        // remembered address.
        let c3 = gateway(3, &members);
        let frames = way_in.on_unknown(now, client, &binding(&c3.tags.ufrag()));
        assert_eq!(frames[0].0, c3.tags.own().udp());
        let frames = way_in.on_unknown(now, client, &dtls);
        assert_eq!(frames[0].0, c3.tags.own().udp());
        let _ = way_in.on_unknown(now, client, &stun);

        // The holder's reply leaves from the way in.
        let reply = holder.tunnel().wrap(Kind::Reply, client, b"answer");
        assert_eq!(
            way_in.on_frame(now, a.tags.own().udp(), &reply),
            FrameAction::ToClient {
                client,
                payload: b"answer"
            }
        );
        // The client comes straight to the holder again: no more detour.
        holder.direct(client);
        assert_eq!(holder.via.get(client), None);
        assert_eq!(way_in.stats.forwarded, 5);
    }

    #[test]
    fn a_moved_flow_is_probed_to_the_other_gateways_and_claimed() {
        let members = GatewaySet::default();
        members.update(["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]);
        let (a, c) = (gateway(1, &members), gateway(3, &members));
        let now = Instant::now();
        let client: SocketAddr = "198.51.100.9:5000".parse().expect("addr");
        let mut way_in = Forwarding::new(c, Default::default());
        let mut holder = Forwarding::new(a, Default::default());
        let srtp = [0x90u8, 96, 0, 1, 0, 0, 0, 0];
        let probes = way_in.on_unknown(now, client, &srtp);
        assert!(
            way_in.on_unknown(now, client, &srtp).is_empty(),
            "the flow's next datagram waits for the claim instead of probing again"
        );
        let mut targets: Vec<SocketAddr> = probes.iter().map(|p| p.0).collect();
        targets.sort();
        let expect: Vec<SocketAddr> = vec![
            "10.0.0.1:8189".parse().expect("addr"),
            "10.0.0.2:8189".parse().expect("addr"),
        ];
        assert_eq!(targets, expect, "every other gateway, not itself");
        let probe = &probes
            .iter()
            .find(|p| p.0 == a.tags.own().udp())
            .expect("to a")
            .1;
        let FrameAction::Deliver { probe: true, .. } =
            holder.on_frame(now, c.tags.own().udp(), probe)
        else {
            panic!("a probe is delivered as one");
        };
        let (to, claim) = holder
            .delivered(now, client, c.tags.own().udp(), true)
            .expect("a probe that found its session is claimed");
        assert_eq!(to, c.tags.own().udp());
        assert_eq!(
            way_in.on_frame(now, a.tags.own().udp(), &claim),
            FrameAction::Nothing
        );
        let next = way_in.on_unknown(now, client, &srtp);
        assert_eq!(next.len(), 1, "claimed: forwarded, not probed");
        assert_eq!(next[0].0, a.tags.own().udp());

        // Garbage is not probed, STUN naming no gateway is dropped, and probes are rate-limited.
        assert!(
            way_in
                .on_unknown(now, "203.0.113.1:1".parse().expect("a"), b"\x05junk")
                .is_empty()
        );
        assert!(
            way_in
                .on_unknown(now, "203.0.113.1:1".parse().expect("a"), &binding("abcd"))
                .is_empty()
        );
        let probed = (0..1000)
            .filter(|i| {
                let from = SocketAddr::new("203.0.113.2".parse().expect("ip"), 1000 + *i as u16);
                !way_in.on_unknown(now, from, &srtp).is_empty()
            })
            .count();
        assert!(
            probed <= PROBES_PER_SECOND as usize,
            "{probed} probes at one instant"
        );
        // A draining holder claims its clients ahead of the move: the way in forwards a moved
        // flow from its first datagram.
        let moved: SocketAddr = "198.51.100.50:6000".parse().expect("addr");
        let claims = holder.claim_all([moved].into_iter());
        assert_eq!(claims.len(), 2, "one claim per other gateway");
        let to_c = claims
            .iter()
            .find(|(g, _)| *g == c.tags.own().udp())
            .expect("to c");
        assert_eq!(
            way_in.on_frame(now, a.tags.own().udp(), &to_c.1),
            FrameAction::Nothing
        );
        let first = way_in.on_unknown(now, moved, &srtp);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, a.tags.own().udp());

        // A forged frame is refused and counted.
        let mut forged = holder.tunnel().wrap(Kind::Forward, client, &srtp);
        forged[40] ^= 1;
        assert_eq!(
            holder.on_frame(now, c.tags.own().udp(), &forged),
            FrameAction::Nothing
        );
        assert_eq!(holder.stats.refused, 1);
    }
}
