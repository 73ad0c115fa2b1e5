//! Short-lived TURN credentials, the "TURN REST API" scheme coturn (`use-auth-secret`) and most
//! WebRTC services use: the username carries its own expiry and the key that issued it,
//! `{expiry unix seconds}:{key id}:{random}`, and the password is
//! `base64(HMAC-SHA1(key secret, username))`. The TURN server needs no table of users: it checks
//! the expiry and recomputes the password. A username can be revoked before it expires (Calls'
//! `…/credentials/{username}/revoke`); revocations are kept until the username would have
//! expired anyway. Sans-IO: time comes in as Unix seconds.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A TTL a client may ask for at most (Calls allows up to 48 h).
pub const MAX_TTL_SECS: u64 = 48 * 3600;
/// Revoked usernames kept at most; beyond, revoking is refused (a caller would be hammering).
pub const MAX_REVOKED: usize = 100_000;

/// Seconds since the Unix epoch: what TURN REST credentials' usernames count in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the TURN service shares with the rest of the node: the credentials clients are checked
/// against (the API issues and revokes them), and the TLS handshakes that failed.
pub struct TurnShared {
    credentials: Mutex<TurnCredentials>,
    /// TLS handshakes of `turns:` clients that failed (for stats).
    pub tls_handshake_failures: AtomicU64,
}

impl TurnShared {
    /// Shares `credentials`, with no handshake failures counted yet.
    pub fn new(credentials: TurnCredentials) -> TurnShared {
        TurnShared {
            credentials: Mutex::new(credentials),
            tls_handshake_failures: AtomicU64::new(0),
        }
    }

    /// The credentials, locked (a poisoned lock is recovered: the maps stay usable).
    pub fn credentials(&self) -> MutexGuard<'_, TurnCredentials> {
        self.credentials.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One TURN key: its id (in URLs and usernames) and its secret (the API bearer token, which
/// also signs the usernames it issues).
#[derive(Debug, Clone)]
pub struct TurnKey {
    /// Key id, in the credentials API's URLs and in the user names it issues.
    pub id: String,
    /// The secret: the API bearer token, and the HMAC key of the passwords.
    pub secret: String,
}

/// A TURN credential as handed to a client (WebRTC's `RTCIceServer` username and credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `{expiry}:{key id}:{random}`.
    pub username: String,
    /// base64(HMAC-SHA1(key secret, username)).
    pub password: String,
    /// When it expires, Unix seconds.
    pub expires: u64,
}

/// Why a user name could not be revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// The user name is not one this key issued.
    #[error("not a username this key issued")]
    NotIssued,
    /// The revocation list is full ([`MAX_REVOKED`]).
    #[error("too many revoked usernames")]
    Full,
}

/// The TURN keys, and the user names revoked before their expiry.
#[derive(Debug, Default)]
pub struct TurnCredentials {
    keys: Vec<TurnKey>,
    /// username → its expiry.
    revoked: HashMap<String, u64>,
}

fn password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// (expiry, key id) of a username in our form.
fn parse(username: &str) -> Option<(u64, &str)> {
    let mut parts = username.splitn(3, ':');
    let expiry = parts.next()?.parse().ok()?;
    let key = parts.next()?;
    let nonce = parts.next()?;
    (!key.is_empty() && !nonce.is_empty()).then_some((expiry, key))
}

impl TurnCredentials {
    /// Credentials issued with `keys`, none revoked.
    pub fn new(keys: Vec<TurnKey>) -> TurnCredentials {
        TurnCredentials {
            keys,
            revoked: HashMap::new(),
        }
    }

    /// No keys are configured: no credentials can be issued.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with id `id`.
    pub fn key(&self, id: &str) -> Option<&TurnKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// A credential from key `key_id`, valid for `ttl_secs` (clamped to 1 s … 48 h).
    pub fn issue(&self, key_id: &str, ttl_secs: u64, now: u64) -> Option<Credential> {
        let key = self.key(key_id)?;
        let expires = now.saturating_add(ttl_secs.clamp(1, MAX_TTL_SECS));
        let nonce: [u8; 8] = rand::random();
        let username = format!("{expires}:{}:{}", key.id, hex::encode(nonce));
        Some(Credential {
            password: password(&key.secret, &username),
            username,
            expires,
        })
    }

    /// The password of `username` if it is ours, unexpired and not revoked.
    pub fn password_for(&self, username: &str, now: u64) -> Option<String> {
        let (expiry, key_id) = parse(username)?;
        if expiry <= now || self.revoked.contains_key(username) {
            return None;
        }
        let key = self.key(key_id)?;
        Some(password(&key.secret, username))
    }

    /// Revoke a username `key_id` issued (whether or not it has been used).
    pub fn revoke(&mut self, key_id: &str, username: &str, now: u64) -> Result<(), RevokeError> {
        let (expiry, issuer) = parse(username).ok_or(RevokeError::NotIssued)?;
        if issuer != key_id || self.key(key_id).is_none() {
            return Err(RevokeError::NotIssued);
        }
        self.revoked.retain(|_, e| *e > now);
        if expiry <= now {
            return Ok(()); // expired already: nothing left to revoke
        }
        if self.revoked.len() >= MAX_REVOKED {
            return Err(RevokeError::Full);
        }
        self.revoked.insert(username.to_string(), expiry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> TurnCredentials {
        TurnCredentials::new(vec![TurnKey {
            id: "k1".into(),
            secret: "s3cret-token".into(),
        }])
    }

    #[test]
    fn an_issued_credential_verifies_until_it_expires() {
        let c = creds();
        let cred = c.issue("k1", 600, 1_000).expect("issued");
        assert_eq!(cred.expires, 1_600);
        assert!(cred.username.starts_with("1600:k1:"));
        assert_eq!(
            c.password_for(&cred.username, 1_599),
            Some(cred.password.clone())
        );
        assert_eq!(c.password_for(&cred.username, 1_600), None);
        assert_eq!(c.issue("nope", 600, 1_000), None);
    }

    #[test]
    fn the_password_is_coturns_rest_api_scheme() {
        // base64(HMAC-SHA1("s3cret-token", "1600:k1:abcd")), computed independently with
        // `printf %s 1600:k1:abcd | openssl dgst -sha1 -hmac s3cret-token -binary | base64`.
        assert_eq!(
            password("s3cret-token", "1600:k1:abcd"),
            "ijhnLHPe1bnRAiFJOrJnM3fCsqY="
        );
    }

    #[test]
    fn forged_usernames_get_no_password() {
        let c = creds();
        for u in [
            "",
            "x",
            "1600",
            "1600:k1",
            "1600:k1:",
            "abc:k1:n",
            "1600:k2:n",
            ":k1:n",
        ] {
            assert_eq!(c.password_for(u, 1_000), None, "{u:?}");
        }
        // A username with a later expiry written in by hand has another password.
        let cred = c.issue("k1", 60, 1_000).expect("issued");
        let forged = cred.username.replacen("1060", "9999", 1);
        assert_ne!(c.password_for(&forged, 1_000), Some(cred.password));
    }

    #[test]
    fn a_revoked_username_stops_verifying_and_the_list_forgets_it_after_expiry() {
        let mut c = creds();
        let cred = c.issue("k1", 60, 1_000).expect("issued");
        assert_eq!(
            c.revoke("k2", &cred.username, 1_000),
            Err(RevokeError::NotIssued)
        );
        assert_eq!(c.revoke("k1", "junk", 1_000), Err(RevokeError::NotIssued));
        c.revoke("k1", &cred.username, 1_000).expect("revoked");
        assert_eq!(c.password_for(&cred.username, 1_001), None);
        let other = c.issue("k1", 600, 1_000).expect("issued");
        c.revoke("k1", &other.username, 1_100).expect("revoked");
        assert_eq!(
            c.revoked.len(),
            1,
            "the first one expired and was forgotten"
        );
    }
}
