//! The tunnel between gateways of one cluster for a session's datagrams: a client's datagram that
//! the load balancer sent to a gateway that does not hold the session goes, wrapped, to the one
//! that does; that gateway's datagrams for the client come back the same way and leave from the
//! gateway the client is talking to, so the client only ever sees the one address.
//!
//! A tunnel frame rides on the gateways' media UDP sockets. Its first byte, 0xFA, is outside every
//! range RFC 7983/9443 give STUN, DTLS, TURN channels, RTP/RTCP and QUIC, so the receive loop
//! tells frames from client datagrams by one byte. A frame claims a client address, so it is
//! authenticated (HMAC-SHA256 under a key derived from the cluster key, truncated to 128 bits):
//! nobody outside the cluster can make a gateway treat a datagram as coming from a client.
//! Sans-IO.
//!
//! ```text
//! 0      1      2                      20                     36
//! | 0xFA | kind | client ip (16, v6)   | port (2) | HMAC (16) | payload …
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use aws_lc_rs::{constant_time, hmac};

/// The first byte of every frame.
pub const MAGIC: u8 = 0xFA;
const ADDR_END: usize = 20;
const HEADER: usize = 36;
const MAC_LEN: usize = 16;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client's datagram, for the gateway that holds its session.
    Forward = 1,
    /// A client's datagram whose session the sender does not know: each gateway it is sent to
    /// handles it if it holds the session, and then answers [`Kind::Claim`].
    Probe = 2,
    /// The session's datagram, for the client: the receiver sends it from its own socket.
    Reply = 3,
    /// "This client's session is mine": send its datagrams here.
    Claim = 4,
    /// "I am up", every `forwarding::ALIVE_EVERY` to every other gateway (no client, no
    /// payload): a way-in gateway that stops hearing it resumes the sender's sessions.
    Alive = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Forward,
            2 => Kind::Probe,
            3 => Kind::Reply,
            4 => Kind::Claim,
            5 => Kind::Alive,
            _ => return None,
        })
    }
}

/// A frame that checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What it carries.
    pub kind: Kind,
    /// The client it is from or for.
    pub client: SocketAddr,
    /// The datagram (empty for a claim).
    pub payload: &'a [u8],
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than a header, or an unknown kind.
    Malformed,
    /// The HMAC does not match: not from a gateway of this cluster.
    Forged,
}

/// Wraps and unwraps frames under the cluster's tunnel key.
pub struct Tunnel {
    key: hmac::Key,
}

impl Tunnel {
    /// Frames under `key` (`ClusterSecrets::tunnel_key`).
    pub fn new(key: &[u8; 32]) -> Tunnel {
        Tunnel {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// Whether a datagram is a tunnel frame rather than a client's.
    pub fn is_frame(datagram: &[u8]) -> bool {
        datagram.first() == Some(&MAGIC)
    }

    /// A frame of `kind` for `client` carrying `payload`.
    pub fn wrap(&self, kind: Kind, client: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(MAGIC);
        out.push(kind as u8);
        let ip = match client.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        out.extend_from_slice(&ip.octets());
        out.extend_from_slice(&client.port().to_be_bytes());
        let mac = self.mac(&out, payload);
        out.extend_from_slice(&mac.as_ref()[..MAC_LEN]);
        out.extend_from_slice(payload);
        out
    }

    /// The frame in `datagram`, if it is whole and made under our key.
    pub fn unwrap<'a>(&self, datagram: &'a [u8]) -> Result<Frame<'a>, Refused> {
        if datagram.len() < HEADER || datagram[0] != MAGIC {
            return Err(Refused::Malformed);
        }
        let kind = Kind::from_byte(datagram[1]).ok_or(Refused::Malformed)?;
        let payload = &datagram[HEADER..];
        let mac = self.mac(&datagram[..ADDR_END], payload);
        if constant_time::verify_slices_are_equal(
            &mac.as_ref()[..MAC_LEN],
            &datagram[ADDR_END..HEADER],
        )
        .is_err()
        {
            return Err(Refused::Forged);
        }
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&datagram[2..18]);
        let v6 = Ipv6Addr::from(octets);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        let port = u16::from_be_bytes([datagram[18], datagram[19]]);
        Ok(Frame {
            kind,
            client: SocketAddr::new(ip, port),
            payload,
        })
    }

    fn mac(&self, header: &[u8], payload: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(header);
        ctx.update(payload);
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_tampering() {
        let t = Tunnel::new(&[3u8; 32]);
        let client: SocketAddr = "198.51.100.7:50000".parse().expect("addr");
        let f = t.wrap(Kind::Forward, client, b"\x80payload");
        assert!(Tunnel::is_frame(&f));
        assert_eq!(
            t.unwrap(&f),
            Ok(Frame {
                kind: Kind::Forward,
                client,
                payload: b"\x80payload"
            })
        );
        let v6: SocketAddr = "[2001:db8::1]:9".parse().expect("addr");
        let claim = t.wrap(Kind::Claim, v6, &[]);
        assert_eq!(t.unwrap(&claim).map(|f| f.client), Ok(v6));

        let mut bad = f.clone();
        *bad.last_mut().expect("payload") ^= 1;
        assert_eq!(t.unwrap(&bad), Err(Refused::Forged), "payload changed");
        let mut moved = f.clone();
        moved[19] ^= 1;
        assert_eq!(t.unwrap(&moved), Err(Refused::Forged), "client changed");
        let other = Tunnel::new(&[4u8; 32]);
        assert_eq!(other.unwrap(&f), Err(Refused::Forged), "another cluster");
        assert_eq!(t.unwrap(&f[..20]), Err(Refused::Malformed));
        let mut kind = f;
        kind[1] = 9;
        assert_eq!(t.unwrap(&kind), Err(Refused::Malformed));
        assert!(!Tunnel::is_frame(b"\x00\x01stun"));
    }
}
