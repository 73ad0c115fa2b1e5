//! Owner tags: in a cluster, the session ids and ICE ufrags a gateway makes name that gateway, so
//! that any other gateway can send the session's HTTP requests and UDP datagrams to it (see
//! "One address" in docs/ARCHITECTURE.md).
//!
//! A tag is one AES-128 block under a key every gateway of the cluster derives from the cluster's
//! private key: the owner's IPv4 address, its media UDP port and its HTTP port, then 64 random
//! bits. Encrypted, so a client learns nothing of the cluster's addresses and cannot aim a tag at
//! an address of its choosing: a made-up block decrypts to a random address, which a gateway only
//! acts on when it is one of the cluster's gateways (`GatewaySet`). The random half keeps every
//! id unique; the whole block stays as unguessable as 128 random bits to anyone without the key.
//! Sans-IO: no clock, no sockets; randomness comes from the OS CSPRNG.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};

use aws_lc_rs::cipher::{AES_128, DecryptingKey, EncryptingKey, UnboundCipherKey};
use aws_lc_rs::hmac;
use rand::TryRngCore;

/// Where a session's owner gateway is reached from inside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// The gateway's own (pod) address.
    pub ip: Ipv4Addr,
    /// Its WebRTC UDP port.
    pub udp_port: u16,
    /// Its HTTP port.
    pub http_port: u16,
}

impl Owner {
    /// The owner's media socket: where tunnelled datagrams go.
    pub fn udp(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.udp_port)
    }

    /// The owner's HTTP listener: where forwarded requests go.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.http_port)
    }
}

/// The cluster's secrets for one address, derived from the cluster key every node holds.
pub struct ClusterSecrets {
    /// AES-128 key of the owner tags.
    pub tag_key: [u8; 16],
    /// HMAC-SHA256 key that authenticates tunnelled datagrams between gateways.
    pub tunnel_key: [u8; 32],
    /// AES-256-GCM key that seals session replicas between gateways (`replica`).
    pub replica_key: [u8; 32],
}

impl ClusterSecrets {
    /// Derives the keys from `cluster_key` (the PEM private key's bytes), one label each, so
    /// no key says anything about another or about the cluster key.
    pub fn derive(cluster_key: &[u8]) -> ClusterSecrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, cluster_key);
        let tag = hmac::sign(&key, b"wish one-address owner tag v1");
        let tunnel = hmac::sign(&key, b"wish one-address peer tunnel v1");
        let replica = hmac::sign(&key, b"wish one-address session replica v1");
        let mut tag_key = [0u8; 16];
        tag_key.copy_from_slice(&tag.as_ref()[..16]);
        let mut tunnel_key = [0u8; 32];
        tunnel_key.copy_from_slice(tunnel.as_ref());
        let mut replica_key = [0u8; 32];
        replica_key.copy_from_slice(replica.as_ref());
        ClusterSecrets {
            tag_key,
            tunnel_key,
            replica_key,
        }
    }
}

/// Makes and reads owner tags.
pub struct OwnerTags {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
    own: Owner,
}

impl OwnerTags {
    /// Tags naming `own`, under `key`.
    pub fn new(key: &[u8; 16], own: Owner) -> Result<OwnerTags, String> {
        let unbound =
            || UnboundCipherKey::new(&AES_128, key).map_err(|_| "AES-128 key refused".to_string());
        Ok(OwnerTags {
            encrypt: EncryptingKey::ecb(unbound()?).map_err(|_| "AES-ECB unavailable")?,
            decrypt: DecryptingKey::ecb(unbound()?).map_err(|_| "AES-ECB unavailable")?,
            own,
        })
    }

    /// This gateway.
    pub fn own(&self) -> Owner {
        self.own
    }

    /// A fresh tag naming this gateway.
    pub fn mint(&self) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[..4].copy_from_slice(&self.own.ip.octets());
        block[4..6].copy_from_slice(&self.own.udp_port.to_be_bytes());
        block[6..8].copy_from_slice(&self.own.http_port.to_be_bytes());
        // The OS RNG failing means the machine cannot do crypto at all (DTLS would fail too).
        rand::rngs::OsRng
            .try_fill_bytes(&mut block[8..])
            .expect("operating system random number generator");
        // One whole block in ECB: cannot fail for a 16-byte input.
        let _ = self.encrypt.encrypt(&mut block);
        block
    }

    /// The gateway a tag names (any 16 bytes decrypt to some address: check it with
    /// [`GatewaySet::elsewhere`]).
    pub fn read(&self, tag: [u8; 16]) -> Owner {
        let mut block = tag;
        let _ = self
            .decrypt
            .decrypt(&mut block, aws_lc_rs::cipher::DecryptionContext::None);
        Owner {
            ip: Ipv4Addr::new(block[0], block[1], block[2], block[3]),
            udp_port: u16::from_be_bytes([block[4], block[5]]),
            http_port: u16::from_be_bytes([block[6], block[7]]),
        }
    }

    /// A fresh ICE ufrag naming this gateway: the tag in 32 lowercase hex digits (ICE allows up
    /// to 256 characters of letters and digits).
    pub fn ufrag(&self) -> String {
        hex(&self.mint())
    }

    /// The gateway a ufrag of ours names, if it has the shape ours have.
    pub fn read_ufrag(&self, ufrag: &str) -> Option<Owner> {
        parse_hex16(ufrag).map(|tag| self.read(tag))
    }
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The cluster's gateways as the membership currently has them (tier 0): a tag is only acted on
/// when it names one of them, and never when it names this gateway.
#[derive(Clone, Default)]
pub struct GatewaySet(Arc<RwLock<HashSet<IpAddr>>>);

impl GatewaySet {
    /// Replaces the set with the addresses of these node ids (`ip:port`; others are skipped).
    pub fn update<'a>(&self, node_ids: impl IntoIterator<Item = &'a str>) {
        let ips: HashSet<IpAddr> = node_ids
            .into_iter()
            .filter_map(|id| id.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = ips;
    }

    /// Whether `ip` is a gateway of the cluster.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    /// `owner`, if it is another gateway of the cluster (not this one, `own`).
    pub fn elsewhere(&self, owner: Owner, own: Owner) -> Option<Owner> {
        (owner != own && self.contains(IpAddr::V4(owner.ip))).then_some(owner)
    }

    /// The gateways' addresses, this one's included.
    pub fn ips(&self) -> Vec<IpAddr> {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        set.iter().copied().collect()
    }
}

/// The node's one-address state, once it is in a cluster: its tags and the cluster's gateways.
pub struct OneAddress {
    /// This gateway's tags.
    pub tags: OwnerTags,
    /// The cluster's gateways.
    pub gateways: GatewaySet,
    /// The key that authenticates tunnelled datagrams.
    pub tunnel_key: [u8; 32],
    /// The key that seals session replicas.
    pub replica_key: [u8; 32],
}

impl OneAddress {
    /// The cluster's other gateways, each at `port` of its address (gateways of one cluster
    /// share their ports, as a Deployment's pods do): their media sockets or their HTTP.
    pub fn others(&self, port: u16) -> impl Iterator<Item = std::net::SocketAddr> + use<> {
        let own = std::net::IpAddr::V4(self.tags.own().ip);
        self.gateways
            .ips()
            .into_iter()
            .filter(move |ip| *ip != own)
            .map(move |ip| std::net::SocketAddr::new(ip, port))
    }

    /// The other gateway a tag names, if it names one.
    pub fn owner_elsewhere(&self, tag: [u8; 16]) -> Option<Owner> {
        self.gateways
            .elsewhere(self.tags.read(tag), self.tags.own())
    }

    /// The other gateway a ufrag of ours names, if it names one.
    pub fn ufrag_owner_elsewhere(&self, ufrag: &str) -> Option<Owner> {
        parse_hex16(ufrag).and_then(|tag| self.owner_elsewhere(tag))
    }
}

static INSTALLED: OnceLock<OneAddress> = OnceLock::new();

/// Makes this process's session ids and ufrags name this gateway from now on (once per process:
/// a gateway is one node). Returns the installed state.
pub fn install(one: OneAddress) -> &'static OneAddress {
    INSTALLED.get_or_init(|| one)
}

/// The installed state, if the node is in a cluster.
pub fn installed() -> Option<&'static OneAddress> {
    INSTALLED.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(ip: [u8; 4]) -> OwnerTags {
        let secrets = ClusterSecrets::derive(b"-----BEGIN PRIVATE KEY----- test");
        OwnerTags::new(
            &secrets.tag_key,
            Owner {
                ip: Ipv4Addr::from(ip),
                udp_port: 8189,
                http_port: 8080,
            },
        )
        .expect("tags")
    }

    #[test]
    fn a_tag_names_its_maker_to_every_gateway_with_the_key() {
        let a = tags([10, 0, 0, 1]);
        let b = tags([10, 0, 0, 2]);
        let t = a.mint();
        assert_eq!(b.read(t), a.own());
        assert_ne!(a.mint(), t, "the random half differs");
        let u = a.ufrag();
        assert_eq!(u.len(), 32);
        assert_eq!(b.read_ufrag(&u), Some(a.own()));
        assert_eq!(b.read_ufrag("not-ours"), None);
    }

    #[test]
    fn another_key_reads_noise() {
        let a = tags([10, 0, 0, 1]);
        let other = OwnerTags::new(&[7u8; 16], a.own()).expect("tags");
        assert_ne!(other.read(a.mint()), a.own());
    }

    #[test]
    fn only_other_member_gateways_are_acted_on() {
        let a = tags([10, 0, 0, 1]);
        let b = tags([10, 0, 0, 2]);
        let set = GatewaySet::default();
        set.update(["10.0.0.1:7000", "10.0.0.2:7000", "relay.example:7000"]);
        assert_eq!(set.elsewhere(b.read(a.mint()), b.own()), Some(a.own()));
        assert_eq!(set.elsewhere(a.read(a.mint()), a.own()), None, "itself");
        set.update(["10.0.0.2:7000"]);
        assert_eq!(set.elsewhere(b.read(a.mint()), b.own()), None, "left");
        // A block nobody minted names some address that is no gateway.
        set.update(["10.0.0.1:7000", "10.0.0.2:7000"]);
        assert_eq!(set.elsewhere(b.read([0x5a; 16]), b.own()), None);
    }
}
