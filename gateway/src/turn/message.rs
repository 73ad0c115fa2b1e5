//! STUN messages as TURN (RFC 8656) uses them, over RFC 8489's framing: reading a message's
//! header and attributes out of untrusted bytes (every length checked, nothing copied), writing
//! responses and indications, MESSAGE-INTEGRITY (HMAC-SHA1, the long-term key) and FINGERPRINT,
//! XOR-mangled addresses, and ChannelData framing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

/// The magic cookie every RFC 8489 STUN header carries (bytes 4–8); also the XOR mask for
/// addresses.
pub const MAGIC: u32 = 0x2112_A442;
/// Length of a STUN header, bytes.
pub const HEADER: usize = 20;

/// STUN Binding: a client's ICE connectivity check or a NAT reflexive-address probe.
pub const BINDING: u16 = 0x001;
/// TURN Allocate: asks for a relayed transport address.
pub const ALLOCATE: u16 = 0x003;
/// TURN Refresh: extends an allocation's lifetime, or with LIFETIME 0 deletes it.
pub const REFRESH: u16 = 0x004;
/// TURN Send indication: data from the client to a peer, without a channel.
pub const SEND: u16 = 0x006;
/// TURN Data indication: data from a peer to the client, without a channel.
pub const DATA: u16 = 0x007;
/// TURN CreatePermission: lets a peer's IP address send to the allocation.
pub const CREATE_PERMISSION: u16 = 0x008;
/// TURN ChannelBind: binds a channel number to a peer, for 4-byte ChannelData framing.
pub const CHANNEL_BIND: u16 = 0x009;

/// The message class, encoded in the type field's C0/C1 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Expects a response.
    Request,
    /// Expects no response.
    Indication,
    /// A success response.
    Success,
    /// An error response (carries ERROR-CODE).
    Error,
}

/// STUN/TURN attribute types (RFC 8489 §18.3, RFC 8656 §18).
pub mod attr {
    /// The long-term credential's user name.
    pub const USERNAME: u16 = 0x0006;
    /// HMAC-SHA1 over the message up to this attribute.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// Error class and number, with a reason phrase.
    pub const ERROR_CODE: u16 = 0x0009;
    /// The comprehension-required attribute types a 420 response did not understand.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// The channel number of a ChannelBind.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// Requested or granted allocation lifetime, seconds.
    pub const LIFETIME: u16 = 0x000D;
    /// A peer's address, XOR-mangled.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// The application data of a Send or Data indication.
    pub const DATA: u16 = 0x0013;
    /// The long-term credential's realm.
    pub const REALM: u16 = 0x0014;
    /// The server's nonce, echoed in authenticated requests.
    pub const NONCE: u16 = 0x0015;
    /// The allocation's relayed address, XOR-mangled.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// IPv4 or IPv6 relayed address, asked for by the client.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// Asks for an even relayed port (and maybe the next one reserved).
    pub const EVEN_PORT: u16 = 0x0018;
    /// The transport protocol asked for; only UDP (17) is served.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// Asks that the relay set DF on packets to peers.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// The client's address as the server sees it, XOR-mangled.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// Names a port reserved by an earlier EVEN-PORT allocation.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// The server's product name, informational.
    pub const SOFTWARE: u16 = 0x8022;
    /// CRC-32 of the message up to this attribute, XORed with 0x5354554E.
    pub const FINGERPRINT: u16 = 0x8028;
}

/// A STUN message read from a datagram: borrowed, validated framing.
#[derive(Debug)]
pub struct TurnMessage<'a> {
    /// Method (e.g. [`ALLOCATE`]), with the class bits removed.
    pub method: u16,
    /// Request, indication, success or error.
    pub class: Class,
    /// Transaction ID, echoed in the response.
    pub txid: [u8; 12],
    bytes: &'a [u8],
    /// (type, value offset, value length), in order.
    attrs: Vec<(u16, usize, usize)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Whether `bytes` start like a STUN message (top bits 00, the magic cookie).
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC.to_be_bytes()
}

impl<'a> TurnMessage<'a> {
    /// `None` unless `bytes` is exactly one well-formed message (attributes inside its length).
    pub fn parse(bytes: &'a [u8]) -> Option<TurnMessage<'a>> {
        if !is_stun(bytes) {
            return None;
        }
        let t = be16(bytes, 0)?;
        let len = be16(bytes, 2)? as usize;
        if !len.is_multiple_of(4) || HEADER + len != bytes.len() {
            return None;
        }
        let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b1) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = (t & 0xF) | ((t >> 1) & 0x70) | ((t >> 2) & 0xF80);
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&bytes[8..20]);
        let mut attrs = Vec::new();
        let mut at = HEADER;
        while at < bytes.len() {
            let kind = be16(bytes, at)?;
            let vlen = be16(bytes, at + 2)? as usize;
            let value = at + 4;
            if value + vlen > bytes.len() || attrs.len() >= 64 {
                return None;
            }
            attrs.push((kind, value, vlen));
            at = value + vlen.div_ceil(4) * 4;
        }
        Some(TurnMessage {
            method,
            class,
            txid,
            bytes,
            attrs,
        })
    }

    /// The value of the first attribute of type `kind`.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs
            .iter()
            .find(|(k, ..)| *k == kind)
            .map(|(_, at, len)| &self.bytes[*at..*at + *len])
    }

    /// The values of every attribute of type `kind`, in order.
    pub fn all(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs
            .iter()
            .filter(move |(k, ..)| *k == kind)
            .map(|(_, at, len)| &self.bytes[*at..*at + *len])
    }

    /// Comprehension-required attributes (below 0x8000) this server does not know.
    pub fn unknown_required(&self) -> Vec<u16> {
        const KNOWN: &[u16] = &[
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::ERROR_CODE,
            attr::CHANNEL_NUMBER,
            attr::LIFETIME,
            attr::XOR_PEER_ADDRESS,
            attr::DATA,
            attr::REALM,
            attr::NONCE,
            attr::REQUESTED_ADDRESS_FAMILY,
            attr::REQUESTED_TRANSPORT,
            attr::DONT_FRAGMENT,
            attr::EVEN_PORT,
            attr::RESERVATION_TOKEN,
            attr::XOR_MAPPED_ADDRESS,
        ];
        self.attrs
            .iter()
            .map(|(k, ..)| *k)
            .filter(|k| *k < 0x8000 && !KNOWN.contains(k))
            .collect()
    }

    /// The first attribute of type `kind` as a big-endian u32 (LIFETIME, REQUESTED-TRANSPORT…).
    pub fn u32_attr(&self, kind: u16) -> Option<u32> {
        let v = self.get(kind)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// The first attribute of type `kind` as UTF-8 text (USERNAME, REALM, NONCE).
    pub fn string(&self, kind: u16) -> Option<&'a str> {
        std::str::from_utf8(self.get(kind)?).ok()
    }

    /// An XOR-mangled address attribute's value, unmangled with this message's transaction ID.
    pub fn xor_address(&self, value: &[u8]) -> Option<SocketAddr> {
        xor_address(value, &self.txid)
    }

    /// MESSAGE-INTEGRITY checked with `key`: the HMAC over the message up to the attribute,
    /// with the header's length covering it (RFC 8489 §14.5).
    pub fn integrity_ok(&self, key: &hmac::Key) -> bool {
        let Some(&(_, value, len)) = self
            .attrs
            .iter()
            .find(|(k, ..)| *k == attr::MESSAGE_INTEGRITY)
        else {
            return false;
        };
        if len != 20 {
            return false;
        }
        let start = value - 4;
        let mut head = self.bytes[..start].to_vec();
        let covered = (value + 20 - HEADER) as u16;
        head[2..4].copy_from_slice(&covered.to_be_bytes());
        hmac::verify(key, &head, &self.bytes[value..value + 20]).is_ok()
    }
}

/// Unmangles an XOR-MAPPED/PEER/RELAYED-ADDRESS value; `None` when truncated or of an unknown
/// family.
pub fn xor_address(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = be16(value, 2)? ^ (MAGIC >> 16) as u16;
    match family {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip = u32::from_be_bytes(raw) ^ MAGIC;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
            mask[4..].copy_from_slice(txid);
            let ip: [u8; 16] = std::array::from_fn(|i| raw[i] ^ mask[i]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn xor_address_value(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 0x01]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 0x02]);
            v.extend_from_slice(&port.to_be_bytes());
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
            mask[4..].copy_from_slice(txid);
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    v
}

/// A message being written.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    txid: [u8; 12],
}

impl Builder {
    /// A message header of `method` and `class`; the length is kept up to date as attributes are
    /// added.
    pub fn new(method: u16, class: Class, txid: [u8; 12]) -> Builder {
        let c: u16 = match class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        };
        let t = (method & 0xF)
            | ((method & 0x70) << 1)
            | ((method & 0xF80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&t.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(&txid);
        Builder { buf, txid }
    }

    /// Appends an attribute, padded to four bytes.
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Builder {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = value.len().div_ceil(4) * 4 - value.len();
        self.buf.extend(std::iter::repeat_n(0, pad));
        self.set_len();
        self
    }

    /// Appends a big-endian u32 attribute.
    pub fn u32(self, kind: u16, v: u32) -> Builder {
        self.attr(kind, &v.to_be_bytes())
    }

    /// Appends an XOR-mangled address attribute.
    pub fn address(self, kind: u16, addr: SocketAddr) -> Builder {
        let v = xor_address_value(addr, &self.txid);
        self.attr(kind, &v)
    }

    /// Appends ERROR-CODE with the (RFC 8489 §14.8) `code` and reason phrase.
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// MESSAGE-INTEGRITY with `key`, then FINGERPRINT.
    pub fn sign(mut self, key: &hmac::Key) -> Vec<u8> {
        let covered = (self.buf.len() + 24 - HEADER) as u16;
        self.buf[2..4].copy_from_slice(&covered.to_be_bytes());
        let tag = hmac::sign(key, &self.buf);
        self.attr(attr::MESSAGE_INTEGRITY, tag.as_ref()).finish()
    }

    /// FINGERPRINT, and the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let covered = (self.buf.len() + 8 - HEADER) as u16;
        self.buf[2..4].copy_from_slice(&covered.to_be_bytes());
        let crc = crc32fast::hash(&self.buf) ^ 0x5354_554E;
        self = self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
        self.buf
    }
}

/// Channel numbers: RFC 8656 narrowed them to 0x4000–0x4FFF, RFC 5766 clients (coturn's among
/// them) still use up to 0x7FFE; both are accepted.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;

/// ChannelData (RFC 8656 §12.4): channel number, length, data. Over UDP unpadded.
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len());
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Over a stream (TCP, TLS) a ChannelData message is padded to a multiple of four bytes (RFC 8656
/// §12.5); STUN messages are already. Anything else is left as it is.
pub fn pad_for_stream(bytes: &mut Vec<u8>) {
    if bytes.first().is_some_and(|b| b & 0xC0 == 0x40) {
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    }
}

/// (channel, data) of a ChannelData message, if `bytes` is one.
pub fn parse_channel_data(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let channel = be16(bytes, 0)?;
    if !CHANNELS.contains(&channel) {
        return None;
    }
    let len = be16(bytes, 2)? as usize;
    bytes.get(4..4 + len).map(|d| (channel, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"k")
    }

    #[test]
    fn what_is_written_reads_back_signed_and_fingerprinted() {
        let txid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        let peer6: SocketAddr = "[2001:db8::1]:5000".parse().expect("addr");
        let bytes = Builder::new(ALLOCATE, Class::Success, txid)
            .address(attr::XOR_RELAYED_ADDRESS, peer)
            .address(attr::XOR_PEER_ADDRESS, peer6)
            .u32(attr::LIFETIME, 600)
            .attr(attr::USERNAME, b"abc")
            .sign(&key());
        let m = TurnMessage::parse(&bytes).expect("parses");
        assert_eq!(
            (m.method, m.class, m.txid),
            (ALLOCATE, Class::Success, txid)
        );
        assert_eq!(
            m.xor_address(m.get(attr::XOR_RELAYED_ADDRESS).expect("relayed")),
            Some(peer)
        );
        assert_eq!(
            m.xor_address(m.get(attr::XOR_PEER_ADDRESS).expect("peer")),
            Some(peer6)
        );
        assert_eq!(m.u32_attr(attr::LIFETIME), Some(600));
        assert_eq!(m.string(attr::USERNAME), Some("abc"));
        assert!(m.integrity_ok(&key()));
        let other = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"x");
        assert!(!m.integrity_ok(&other));
        let mut tampered = bytes.clone();
        tampered[30] ^= 1;
        assert!(TurnMessage::parse(&tampered).is_none_or(|m| !m.integrity_ok(&key())));
    }

    #[test]
    fn the_type_field_interleaves_class_and_method() {
        // RFC 8489: a Binding success is 0x0101, an Allocate error 0x0113, a Data indication 0x0017.
        assert_eq!(
            &Builder::new(BINDING, Class::Success, [0; 12]).finish()[..2],
            &[0x01, 0x01]
        );
        assert_eq!(
            &Builder::new(ALLOCATE, Class::Error, [0; 12]).finish()[..2],
            &[0x01, 0x13]
        );
        assert_eq!(
            &Builder::new(DATA, Class::Indication, [0; 12]).finish()[..2],
            &[0x00, 0x17]
        );
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        let good = Builder::new(ALLOCATE, Class::Request, [1; 12])
            .attr(attr::USERNAME, b"user")
            .finish();
        for cut in 0..good.len() {
            assert!(TurnMessage::parse(&good[..cut]).is_none());
        }
        let mut long = good.clone();
        long[3] = 0xFC; // length beyond the datagram
        assert!(TurnMessage::parse(&long).is_none());
        let mut attr_overrun = good.clone();
        attr_overrun[HEADER + 3] = 0xFF;
        assert!(TurnMessage::parse(&attr_overrun).is_none());
        assert!(xor_address(&[0, 9, 0, 0], &[0; 12]).is_none());
        assert!(parse_channel_data(&[0x40, 0x00, 0x00, 0x09, 1]).is_none());
        assert_eq!(
            parse_channel_data(&[0x40, 0x01, 0x00, 0x01, 7]),
            Some((0x4001, &[7u8][..]))
        );
    }
}
