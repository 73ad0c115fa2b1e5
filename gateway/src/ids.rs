//! Identifiers. Session ids appear in URLs and are the only thing protecting a session resource
//! from strangers, so they come from the OS CSPRNG and carry 128 bits.

use std::fmt;
use std::str::FromStr;

use rand::TryRngCore;

/// A session's public id: 128 random bits, rendered as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// A fresh id from the operating system's CSPRNG; in a cluster, an owner tag naming this
    /// gateway (`owner_tag`), as unguessable.
    pub fn random() -> SessionId {
        if let Some(one) = crate::owner_tag::installed() {
            return SessionId::from_bytes(one.tags.mint());
        }
        let mut bytes = [0u8; 16];
        // The OS RNG failing means the machine cannot do crypto at all (DTLS would fail too).
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("operating system random number generator");
        SessionId(u128::from_le_bytes(bytes))
    }
}

impl SessionId {
    /// The raw 16 bytes, as track keys carry them between nodes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The other gateway of the cluster that made this id, if another one did.
    pub fn owner_elsewhere(self) -> Option<crate::owner_tag::Owner> {
        crate::owner_tag::installed()?.owner_elsewhere(self.to_bytes())
    }

    /// The id whose [`SessionId::to_bytes`] these are.
    pub fn from_bytes(bytes: [u8; 16]) -> SessionId {
        SessionId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for SessionId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(());
        }
        u128::from_str_radix(s, 16).map(SessionId).map_err(|_| ())
    }
}

/// A track's node-local handle. Globally a track is (session id, track name); inside the node a
/// number is cheaper to hash and send between workers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TrackId(pub u64);

/// Random printable secret (ICE ufrag/pwd, ETags).
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0u8; len];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("operating system random number generator");
    // 62 does not divide 256, so there is a tiny bias; 4+ bits of margin per char keep it harmless.
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Stream names are URL path segments chosen by users: keep them to a safe alphabet.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        && name != "."
        && name != ".."
}

/// As its 32 hex digits (session replicas between gateways carry it).
impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <&str>::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom("a session id is 32 lowercase hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_differ() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<SessionId>(), Ok(a));
        assert!("xyz".parse::<SessionId>().is_err());
        assert!(
            a.to_string().to_uppercase().parse::<SessionId>().is_err()
                || a.to_string().chars().all(|c| c.is_ascii_digit())
        );
    }

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("concert-2026_a.b"));
        assert!(!valid_stream_name(""));
        assert!(!valid_stream_name("a/b"));
        assert!(!valid_stream_name(".."));
        assert!(!valid_stream_name(&"a".repeat(129)));
    }
}
