//! A TURN server (RFC 8656) as a sans-IO state machine: client messages (UDP datagrams, or framed
//! off a TCP or TLS connection by the shell) and peer datagrams in, with the time; datagrams out (to a client, or from a relayed address to a peer) and
//! requests to bind or close relayed sockets. Allocations, permissions, channels and refreshes;
//! the long-term credential mechanism with the TURN REST API passwords of `turn_credentials` and
//! stateless, expiring nonces. What it refuses: peers outside the deployment's allowed networks
//! (403, so it is never an open relay), more allocations per username or per source address than
//! configured (486), traffic over an allocation's bandwidth (dropped, counted).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use md5::{Digest, Md5};

use super::message::{self as msg, Builder, Class, TurnMessage, attr};
use crate::token_bucket::TokenBucket;

/// Limits and policy.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The realm of the long-term credentials, sent in challenges.
    pub realm: String,
    /// Networks peers may be in (CIDR); nothing else is relayed to.
    pub allowed_peers: Vec<(IpAddr, u8)>,
    /// Allocations one TURN user name may hold at once.
    pub max_allocations_per_user: usize,
    /// Allocations one client IP address may hold at once.
    pub max_allocations_per_source: usize,
    /// Allocations at most.
    pub max_allocations: usize,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Bytes per second each allocation may relay (both directions together); 0 = unlimited.
    pub bandwidth_bytes_per_sec: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "wish".into(),
            allowed_peers: Vec::new(),
            max_allocations_per_user: 10,
            max_allocations_per_source: 20,
            max_allocations: 10_000,
            max_lifetime: Duration::from_secs(3600),
            bandwidth_bytes_per_sec: 2_500_000,
        }
    }
}

const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const NONCE_LIFETIME: Duration = Duration::from_secs(600);

/// What the shell must do.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnOutput {
    /// Send to a client from the listening socket.
    ToClient {
        /// The client's transport address.
        to: SocketAddr,
        /// The STUN or ChannelData message.
        bytes: Vec<u8>,
    },
    /// Send to a peer from the relayed socket `from`.
    ToPeer {
        /// The relayed address to send from.
        from: SocketAddr,
        /// The peer's address.
        to: SocketAddr,
        /// The application data.
        bytes: Vec<u8>,
    },
    /// Bind a relayed socket for `client` (on an even port when `even`: RTP's, EVEN-PORT), then
    /// call [`TurnServer::relay_bound`].
    BindRelay {
        /// The client whose Allocate waits for the socket.
        client: SocketAddr,
        /// Asks for an even port (EVEN-PORT).
        even: bool,
    },
    /// Close the relayed socket: its allocation is gone, or nobody wanted it any more.
    CloseRelay {
        /// The relayed socket's address.
        relayed: SocketAddr,
    },
}

/// The TURN service's counters, for stats and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Live allocations.
    pub allocations: usize,
    /// Permissions, channels or sends refused because the peer is outside the allowed networks
    /// (403).
    pub refused_peers: u64,
    /// Requests with an unknown user name or a failing MESSAGE-INTEGRITY.
    pub auth_failures: u64,
    /// Allocates refused over the per-user, per-source or total limit (486).
    pub quota_refusals: u64,
    /// Datagrams relayed (both directions).
    pub relayed_packets: u64,
    /// … their bytes.
    pub relayed_bytes: u64,
    /// Datagrams dropped over an allocation's bandwidth.
    pub over_bandwidth: u64,
}

#[derive(Debug)]
struct Allocation {
    relayed: SocketAddr,
    username: String,
    key: hmac::Key,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
    bandwidth: Option<TokenBucket>,
    /// The Allocate that made it, to answer a retransmission the same way.
    txid: [u8; 12],
}

#[derive(Debug)]
struct Pending {
    txid: [u8; 12],
    username: String,
    key: hmac::Key,
    lifetime: Duration,
}

/// Looks up a TURN user name's password (`turn_credentials`); `None` when it is not valid.
pub type Passwords<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The TURN server's state: allocations by client, pending Allocates, queued output.
#[derive(Debug)]
pub struct TurnServer {
    config: TurnConfig,
    nonce_key: hmac::Key,
    allocations: HashMap<SocketAddr, Allocation>,
    by_relayed: HashMap<SocketAddr, SocketAddr>,
    pending: HashMap<SocketAddr, Pending>,
    out: VecDeque<TurnOutput>,
    stats: TurnStats,
}

/// RFC 8489 §9.2.2: the long-term credential key, MD5(username:realm:password), as an HMAC key.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> hmac::Key {
    let digest = Md5::digest(format!("{username}:{realm}:{password}").as_bytes());
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &digest)
}

fn in_network(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    // Both as 128-bit numbers (IPv4 as IPv4-mapped), the prefix widened to match.
    let wide = |ip: IpAddr| match ip {
        IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), 96),
        IpAddr::V6(a) => (u128::from(a), 0),
    };
    let ((a, offset), (n, net_offset)) = (wide(ip), wide(net));
    if offset != net_offset {
        return false;
    }
    let bits = (u32::from(bits) + offset).min(128);
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    a & mask == n & mask
}

impl TurnServer {
    /// A server with no allocations; nonces are signed with a fresh random key.
    pub fn new(config: TurnConfig) -> TurnServer {
        let secret: [u8; 32] = rand::random();
        TurnServer {
            config,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            allocations: HashMap::new(),
            by_relayed: HashMap::new(),
            pending: HashMap::new(),
            out: VecDeque::new(),
            stats: TurnStats::default(),
        }
    }

    /// The counters, with the live allocation count.
    pub fn stats(&self) -> TurnStats {
        TurnStats {
            allocations: self.allocations.len(),
            ..self.stats
        }
    }

    /// The next datagram to send or relayed socket to bind or close, until `None`.
    pub fn poll_output(&mut self) -> Option<TurnOutput> {
        self.out.pop_front()
    }

    fn allowed(&self, peer: IpAddr) -> bool {
        self.config
            .allowed_peers
            .iter()
            .any(|n| in_network(peer, *n))
    }

    /// A nonce that says when it was made, bound to the client's address: `{secs}-{mac}`.
    fn nonce(&self, client: SocketAddr, now_unix: u64) -> String {
        let tag = hmac::sign(&self.nonce_key, format!("{now_unix}|{client}").as_bytes());
        format!("{now_unix:x}-{}", hex::encode(&tag.as_ref()[..12]))
    }

    fn nonce_fresh(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> bool {
        let Some((t, _)) = nonce.split_once('-') else {
            return false;
        };
        let Ok(made) = u64::from_str_radix(t, 16) else {
            return false;
        };
        now_unix.saturating_sub(made) < NONCE_LIFETIME.as_secs()
            && self.nonce(client, made) == nonce
    }

    fn challenge(
        &self,
        m: &TurnMessage<'_>,
        client: SocketAddr,
        code: u16,
        now_unix: u64,
    ) -> Vec<u8> {
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        Builder::new(m.method, Class::Error, m.txid)
            .error(code, reason)
            .attr(attr::REALM, self.config.realm.as_bytes())
            .attr(attr::NONCE, self.nonce(client, now_unix).as_bytes())
            .finish()
    }

    fn reply(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.out.push_back(TurnOutput::ToClient { to, bytes });
    }

    /// A datagram from a client to the listening socket.
    pub fn handle_client(
        &mut self,
        now: Instant,
        now_unix: u64,
        from: SocketAddr,
        bytes: &[u8],
        passwords: Passwords<'_>,
    ) {
        if let Some((channel, data)) = msg::parse_channel_data(bytes) {
            self.channel_to_peer(now, from, channel, data);
            return;
        }
        let Some(m) = TurnMessage::parse(bytes) else {
            return;
        };
        match (m.class, m.method) {
            (Class::Request, msg::BINDING) => {
                let r = Builder::new(msg::BINDING, Class::Success, m.txid)
                    .address(attr::XOR_MAPPED_ADDRESS, from)
                    .finish();
                self.reply(from, r);
            }
            (Class::Indication, msg::SEND) => self.send_indication(now, from, &m),
            (Class::Request, _) => self.request(now, now_unix, from, &m, passwords),
            _ => {}
        }
    }

    fn request(
        &mut self,
        now: Instant,
        now_unix: u64,
        from: SocketAddr,
        m: &TurnMessage<'_>,
        passwords: Passwords<'_>,
    ) {
        let unknown = m.unknown_required();
        if !unknown.is_empty() {
            tracing::debug!(client = %from, ?unknown, "TURN: unknown comprehension-required attributes");
            let list: Vec<u8> = unknown.iter().flat_map(|k| k.to_be_bytes()).collect();
            let r = Builder::new(m.method, Class::Error, m.txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &list)
                .finish();
            self.reply(from, r);
            return;
        }
        // Long-term credentials: challenge, then check nonce, user and integrity.
        let (Some(username), Some(nonce), Some(_)) = (
            m.string(attr::USERNAME),
            m.string(attr::NONCE),
            m.get(attr::MESSAGE_INTEGRITY),
        ) else {
            let r = self.challenge(m, from, 401, now_unix);
            self.reply(from, r);
            return;
        };
        if !self.nonce_fresh(nonce, from, now_unix) {
            let r = self.challenge(m, from, 438, now_unix);
            self.reply(from, r);
            return;
        }
        let key = passwords(username).map(|p| long_term_key(username, &self.config.realm, &p));
        let Some(key) = key.filter(|k| m.integrity_ok(k)) else {
            self.stats.auth_failures += 1;
            let r = self.challenge(m, from, 401, now_unix);
            self.reply(from, r);
            return;
        };
        if m.method == msg::ALLOCATE {
            self.allocate(from, m, username, key);
            return;
        }
        let Some(alloc) = self.allocations.get(&from) else {
            let r = Builder::new(m.method, Class::Error, m.txid)
                .error(437, "Allocation Mismatch")
                .sign(&key);
            self.reply(from, r);
            return;
        };
        if alloc.username != username {
            let r = Builder::new(m.method, Class::Error, m.txid)
                .error(441, "Wrong Credentials")
                .sign(&key);
            self.reply(from, r);
            return;
        }
        let r = match m.method {
            msg::REFRESH => self.refresh(now, from, m, &key),
            msg::CREATE_PERMISSION => self.create_permission(now, from, m, &key),
            msg::CHANNEL_BIND => self.channel_bind(now, from, m, &key),
            _ => Builder::new(m.method, Class::Error, m.txid)
                .error(400, "Bad Request")
                .sign(&key),
        };
        self.reply(from, r);
    }

    fn allocate(&mut self, from: SocketAddr, m: &TurnMessage<'_>, username: &str, key: hmac::Key) {
        if let Some(a) = self.allocations.get(&from) {
            let r = if a.txid == m.txid {
                self.allocate_success(from, m.txid)
            } else {
                Builder::new(msg::ALLOCATE, Class::Error, m.txid)
                    .error(437, "Allocation Mismatch")
                    .sign(&key)
            };
            self.reply(from, r);
            return;
        }
        if self.pending.contains_key(&from) {
            return; // a retransmission while the socket is being bound
        }
        let fail = |code: u16, reason: &str| {
            Builder::new(msg::ALLOCATE, Class::Error, m.txid)
                .error(code, reason)
                .sign(&key)
        };
        if m.get(attr::REQUESTED_TRANSPORT).and_then(|v| v.first()) != Some(&17) {
            let r = fail(442, "Unsupported Transport Protocol");
            self.reply(from, r);
            return;
        }
        if m.get(attr::RESERVATION_TOKEN).is_some() {
            // Reserved ports (EVEN-PORT's R bit) are not kept: the token names nothing here.
            let r = fail(508, "Insufficient Capacity");
            self.reply(from, r);
            return;
        }
        if m.get(attr::REQUESTED_ADDRESS_FAMILY)
            .and_then(|v| v.first())
            .is_some_and(|f| *f != 1)
        {
            let r = fail(440, "Address Family not Supported");
            self.reply(from, r);
            return;
        }
        let per_user = self
            .allocations
            .values()
            .filter(|a| a.username == username)
            .count()
            + self
                .pending
                .values()
                .filter(|p| p.username == username)
                .count();
        let per_source = self
            .allocations
            .keys()
            .chain(self.pending.keys())
            .filter(|c| c.ip() == from.ip())
            .count();
        if per_user >= self.config.max_allocations_per_user
            || per_source >= self.config.max_allocations_per_source
            || self.allocations.len() + self.pending.len() >= self.config.max_allocations
        {
            self.stats.quota_refusals += 1;
            let r = fail(486, "Allocation Quota Reached");
            self.reply(from, r);
            return;
        }
        let lifetime = m
            .u32_attr(attr::LIFETIME)
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(DEFAULT_LIFETIME)
            .clamp(
                DEFAULT_LIFETIME.min(self.config.max_lifetime),
                self.config.max_lifetime,
            );
        self.pending.insert(
            from,
            Pending {
                txid: m.txid,
                username: username.to_string(),
                key,
                lifetime,
            },
        );
        let even = m.get(attr::EVEN_PORT).is_some();
        self.out
            .push_back(TurnOutput::BindRelay { client: from, even });
    }

    fn allocate_success(&self, client: SocketAddr, txid: [u8; 12]) -> Vec<u8> {
        let Some(a) = self.allocations.get(&client) else {
            return Vec::new();
        };
        let left = a
            .expires
            .saturating_duration_since(Instant::now())
            .as_secs() as u32;
        Builder::new(msg::ALLOCATE, Class::Success, txid)
            .address(attr::XOR_RELAYED_ADDRESS, a.relayed)
            .u32(attr::LIFETIME, left)
            .address(attr::XOR_MAPPED_ADDRESS, client)
            .sign(&a.key)
    }

    /// The shell bound (or failed to bind) the relayed socket of `client`'s Allocate.
    pub fn relay_bound(
        &mut self,
        now: Instant,
        client: SocketAddr,
        relayed: Result<SocketAddr, ()>,
    ) {
        let Some(p) = self.pending.remove(&client) else {
            if let Ok(r) = relayed {
                self.out.push_back(TurnOutput::CloseRelay { relayed: r });
            }
            return;
        };
        let Ok(relayed) = relayed else {
            let r = Builder::new(msg::ALLOCATE, Class::Error, p.txid)
                .error(508, "Insufficient Capacity")
                .sign(&p.key);
            self.reply(client, r);
            return;
        };
        let bandwidth = (self.config.bandwidth_bytes_per_sec > 0).then(|| {
            let rate = self.config.bandwidth_bytes_per_sec as f64;
            TokenBucket::new(rate, rate)
        });
        let r = Builder::new(msg::ALLOCATE, Class::Success, p.txid)
            .address(attr::XOR_RELAYED_ADDRESS, relayed)
            .u32(attr::LIFETIME, p.lifetime.as_secs() as u32)
            .address(attr::XOR_MAPPED_ADDRESS, client)
            .sign(&p.key);
        self.allocations.insert(
            client,
            Allocation {
                relayed,
                username: p.username,
                key: p.key,
                expires: now + p.lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                by_peer: HashMap::new(),
                bandwidth,
                txid: p.txid,
            },
        );
        self.by_relayed.insert(relayed, client);
        self.reply(client, r);
    }

    fn refresh(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &TurnMessage<'_>,
        key: &hmac::Key,
    ) -> Vec<u8> {
        let requested = m
            .u32_attr(attr::LIFETIME)
            .map(|s| Duration::from_secs(s.into()));
        if requested == Some(Duration::ZERO) {
            self.remove(from);
            return Builder::new(msg::REFRESH, Class::Success, m.txid)
                .u32(attr::LIFETIME, 0)
                .sign(key);
        }
        let lifetime = requested.unwrap_or(DEFAULT_LIFETIME).clamp(
            DEFAULT_LIFETIME.min(self.config.max_lifetime),
            self.config.max_lifetime,
        );
        if let Some(a) = self.allocations.get_mut(&from) {
            a.expires = now + lifetime;
        }
        Builder::new(msg::REFRESH, Class::Success, m.txid)
            .u32(attr::LIFETIME, lifetime.as_secs() as u32)
            .sign(key)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &TurnMessage<'_>,
        key: &hmac::Key,
    ) -> Vec<u8> {
        let peers: Vec<SocketAddr> = m
            .all(attr::XOR_PEER_ADDRESS)
            .filter_map(|v| m.xor_address(v))
            .collect();
        if peers.is_empty() {
            return Builder::new(m.method, Class::Error, m.txid)
                .error(400, "Bad Request")
                .sign(key);
        }
        if peers.iter().any(|p| !self.allowed(p.ip())) {
            self.stats.refused_peers += 1;
            return Builder::new(m.method, Class::Error, m.txid)
                .error(403, "Forbidden")
                .sign(key);
        }
        if let Some(a) = self.allocations.get_mut(&from) {
            for p in peers {
                a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME);
            }
        }
        Builder::new(m.method, Class::Success, m.txid).sign(key)
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &TurnMessage<'_>,
        key: &hmac::Key,
    ) -> Vec<u8> {
        let bad = |code: u16, reason: &str| {
            Builder::new(m.method, Class::Error, m.txid)
                .error(code, reason)
                .sign(key)
        };
        let channel = m
            .get(attr::CHANNEL_NUMBER)
            .and_then(|v| v.get(..2))
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        let peer = m.get(attr::XOR_PEER_ADDRESS).and_then(|v| m.xor_address(v));
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return bad(400, "Bad Request");
        };
        if !msg::CHANNELS.contains(&channel) {
            return bad(400, "Bad Request");
        }
        if !self.allowed(peer.ip()) {
            self.stats.refused_peers += 1;
            return bad(403, "Forbidden");
        }
        let Some(a) = self.allocations.get_mut(&from) else {
            return bad(437, "Allocation Mismatch");
        };
        let channel_elsewhere = a.channels.get(&channel).is_some_and(|(p, _)| *p != peer);
        let peer_elsewhere = a.by_peer.get(&peer).is_some_and(|c| *c != channel);
        if channel_elsewhere || peer_elsewhere {
            return bad(400, "Bad Request");
        }
        a.channels.insert(channel, (peer, now + CHANNEL_LIFETIME));
        a.by_peer.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Builder::new(m.method, Class::Success, m.txid).sign(key)
    }

    fn admit(a: &mut Allocation, stats: &mut TurnStats, len: usize, now: Instant) -> bool {
        if let Some(b) = a.bandwidth.as_mut()
            && !b.take_n(len as f64, now)
        {
            stats.over_bandwidth += 1;
            return false;
        }
        stats.relayed_packets += 1;
        stats.relayed_bytes += len as u64;
        true
    }

    fn send_indication(&mut self, now: Instant, from: SocketAddr, m: &TurnMessage<'_>) {
        let peer = m.get(attr::XOR_PEER_ADDRESS).and_then(|v| m.xor_address(v));
        let (Some(peer), Some(data)) = (peer, m.get(attr::DATA)) else {
            return;
        };
        self.relay_to_peer(now, from, peer, data);
    }

    fn channel_to_peer(&mut self, now: Instant, from: SocketAddr, channel: u16, data: &[u8]) {
        let Some(a) = self.allocations.get(&from) else {
            return;
        };
        let Some((peer, expires)) = a.channels.get(&channel).copied() else {
            return;
        };
        if expires > now {
            self.relay_to_peer(now, from, peer, data);
        }
    }

    /// `client`'s data to `peer` from its relayed address, if it holds a permission for the
    /// peer and the bandwidth allows.
    fn relay_to_peer(&mut self, now: Instant, client: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocations.get_mut(&client) else {
            return;
        };
        if a.permissions.get(&peer.ip()).is_none_or(|t| *t <= now) {
            return;
        }
        if Self::admit(a, &mut self.stats, data.len(), now) {
            let from = a.relayed;
            self.out.push_back(TurnOutput::ToPeer {
                from,
                to: peer,
                bytes: data.to_vec(),
            });
        }
    }

    /// A datagram from a peer to a relayed address.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let Some(client) = self.by_relayed.get(&relayed).copied() else {
            return;
        };
        let Some(a) = self.allocations.get_mut(&client) else {
            return;
        };
        if a.permissions.get(&peer.ip()).is_none_or(|t| *t <= now) {
            return; // no permission: silently dropped (RFC 8656 §9)
        }
        if !Self::admit(a, &mut self.stats, data.len(), now) {
            return;
        }
        let bytes = match a.by_peer.get(&peer) {
            Some(channel) if a.channels.get(channel).is_some_and(|(_, t)| *t > now) => {
                msg::channel_data(*channel, data)
            }
            _ => Builder::new(msg::DATA, Class::Indication, rand::random())
                .address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish(),
        };
        self.out
            .push_back(TurnOutput::ToClient { to: client, bytes });
    }

    /// The client's connection closed (TURN over TCP): its allocation goes with it.
    pub fn client_gone(&mut self, client: SocketAddr) {
        self.pending.remove(&client);
        self.remove(client);
    }

    fn remove(&mut self, client: SocketAddr) {
        if let Some(a) = self.allocations.remove(&client) {
            self.by_relayed.remove(&a.relayed);
            self.out
                .push_back(TurnOutput::CloseRelay { relayed: a.relayed });
        }
    }

    /// Expire allocations, permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        let dead: Vec<SocketAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in dead {
            self.remove(c);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, t| *t > now);
            a.channels.retain(|_, (_, t)| *t > now);
            let live: Vec<SocketAddr> = a.channels.values().map(|(p, _)| *p).collect();
            a.by_peer.retain(|p, _| live.contains(p));
        }
    }
}

#[cfg(test)]
mod tests;
