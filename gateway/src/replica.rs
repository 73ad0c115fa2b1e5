//! Session replicas: what a gateway must know to resume another gateway's session when that one
//! dies or drains (`resume`), and the sealed batches they travel in between gateways.
//!
//! A replica is the session's negotiation (the client's offer, our ICE credentials), its DTLS
//! outcome (the SRTP keying material and the client's certificate: the client never shakes hands
//! again), and its progress: the highest sequence number per stream in each direction and the
//! SRTCP index, which SRTP needs to pick the right rollover counter and to pass the client's
//! replay window. The holder sends each replica once in full and its progress every
//! `PROGRESS_EVERY`; a resuming gateway starts far enough ahead of the last progress it has
//! (`SEQ_JUMP`, `SRTCP_JUMP`) that whatever the holder sent since lies behind it.
//!
//! A replica also goes out the moment its session is created, before any handshake ("pending":
//! no keys): the gateway that gets the session's first check can then adopt it, and do the
//! handshake itself, when every gateway has the cluster's DTLS certificate (`resume`).
//!
//! Batches are sealed (AES-256-GCM under a key derived from the cluster key): they carry SRTP
//! keys, and the endpoint that takes them is on the gateways' public HTTP port. Sans-IO.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use str0m::crypto::dtls::SrtpProfile;

use crate::ids::SessionId;
use crate::owner_tag::Owner;
use crate::peer::dtls_outcome::DtlsOutcome;

/// How often a holder sends its sessions' progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often it sends every replica in full again, so that a gateway that joined late learns
/// them (a full replica is ~8 KB with a browser's offer: `benches/replica.rs`; progress, which
/// also keeps a replica fresh, ~200 bytes).
pub const FULL_EVERY: Duration = Duration::from_secs(60);
/// A replica neither refreshed nor advanced for this long is dropped: its holder is gone and
/// nobody resumed it.
pub const KEEP: Duration = Duration::from_secs(90);
/// A resumed sender continues this far past the last sequence number it knows was sent. Safe
/// while the holder sends fewer packets than this per `PROGRESS_EVERY` (8,192/s), and within
/// the 2^15 a receiver's rollover estimate allows (RFC 3711 §3.3.1).
pub const SEQ_JUMP: u64 = 1 << 14;
/// Same for SRTCP: past anything the holder may have sent since (the index is 31 bits).
pub const SRTCP_JUMP: u32 = 1 << 16;
/// Largest sealed batch taken (an offer is at most `max_body_bytes`; a batch holds many).
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most replicas a gateway keeps from others.
pub const MAX_STORED: usize = 200_000;

/// What the session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// WHIP: publishes `stream`.
    Publisher,
    /// WHEP: plays `stream`.
    Viewer,
}

/// A session's negotiation and DTLS outcome: all that never changes while it lives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The session's id (its owner tag names the gateway that made it).
    pub id: SessionId,
    /// The gateway that holds it now.
    pub holder: Owner,
    /// Publisher or viewer.
    pub role: ReplicaRole,
    /// The WHIP/WHEP stream name.
    pub stream: String,
    /// The client's SDP offer.
    pub offer: String,
    /// Our ICE ufrag.
    pub ufrag: String,
    /// Our ICE password.
    pub pwd: String,
    /// The DTLS-SRTP exporter's output.
    #[serde(with = "hex_bytes")]
    pub keying_material: Vec<u8>,
    /// The SRTP profile (RFC 5764 ids: 1, 7, 8).
    pub profile: u16,
    /// The client's DTLS certificate (DER).
    #[serde(with = "hex_bytes")]
    pub peer_cert: Vec<u8>,
    /// Our `a=fingerprint` in the answer (`sha-256 AB:…`): a gateway with the same DTLS
    /// certificate can adopt the session before its handshake.
    #[serde(default)]
    pub fingerprint: String,
    /// The session resource's ETag, which a resumed session keeps: the client's next ICE
    /// restart PATCH carries it in `If-Match`. Empty from a gateway that did not send it.
    #[serde(default)]
    pub etag: String,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Replica({} {:?} {} at {})",
            self.id,
            self.role,
            self.stream,
            self.holder.http()
        )
    }
}

impl Replica {
    /// Sent before the handshake (no keys yet): another gateway can adopt the session and do
    /// the handshake itself, if it has the same DTLS certificate.
    pub fn is_pending(&self) -> bool {
        self.keying_material.is_empty()
    }

    /// The DTLS outcome it carries, if its profile is one str0m knows.
    pub fn dtls(&self) -> Option<DtlsOutcome> {
        let profile = match self.profile {
            1 => SrtpProfile::AES128_CM_SHA1_80,
            7 => SrtpProfile::AEAD_AES_128_GCM,
            8 => SrtpProfile::AEAD_AES_256_GCM,
            _ => return None,
        };
        Some(DtlsOutcome {
            keying_material: self.keying_material.clone(),
            profile,
            peer_cert: self.peer_cert.clone(),
        })
    }

    /// The RFC 5764 id of a profile.
    pub fn profile_id(profile: SrtpProfile) -> u16 {
        match profile {
            SrtpProfile::AES128_CM_SHA1_80 => 1,
            SrtpProfile::AEAD_AES_128_GCM => 7,
            SrtpProfile::AEAD_AES_256_GCM => 8,
            _ => 0,
        }
    }
}

/// Where a session's streams are: what changes while it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The session.
    pub id: SessionId,
    /// Per stream we send (viewer m-lines): mid, SSRC, RTX SSRC, highest extended sequence
    /// number written, and its RTP time.
    pub sent: Vec<SentStream>,
    /// Per stream we receive (publisher): SSRC, mid, highest extended sequence number.
    pub received: Vec<ReceivedStream>,
    /// The next SRTCP index.
    pub srtcp: Option<u32>,
}

/// One stream we send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentStream {
    /// Its m-line.
    pub mid: String,
    /// Its SSRC (the client's receiver is bound to it).
    pub ssrc: u32,
    /// Its RTX SSRC.
    pub rtx: Option<u32>,
    /// Highest extended sequence number written.
    pub seq: u64,
    /// The RTP time of the latest packet written.
    pub time: u64,
}

/// One stream we receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedStream {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its m-line.
    pub mid: String,
    /// Highest extended sequence number received.
    pub seq: u64,
}

/// What one gateway tells the others in one go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Batch {
    /// The sender.
    pub from: Option<Owner>,
    /// New and refreshed replicas.
    pub replicas: Vec<Replica>,
    /// Progress of sessions whose replicas were sent before.
    pub progress: Vec<Progress>,
    /// Sessions that ended: never to be resumed.
    pub gone: Vec<SessionId>,
    /// The sender is leaving (its last batch, at shutdown): its sessions are to be resumed by
    /// the next gateway their packets reach, at once.
    #[serde(default)]
    pub leaving: bool,
}

/// Why a sealed batch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Too short, too long, or not sealed under the cluster's key.
    #[error("not a batch sealed under this cluster's key")]
    Unsealed,
    /// Sealed, but not a batch.
    #[error("malformed batch")]
    Malformed,
}

fn key(replica_key: &[u8; 32]) -> LessSafeKey {
    // 32 bytes is AES-256's key length: this cannot fail.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, replica_key).expect("AES-256 key"))
}

/// A batch sealed under `replica_key`: a random nonce, then the sealed JSON.
pub fn seal(replica_key: &[u8; 32], batch: &Batch) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // The OS RNG failing means the machine cannot do crypto at all.
    aws_lc_rs::rand::fill(&mut nonce).expect("operating system random number generator");
    let mut body = serde_json::to_vec(batch).unwrap_or_default();
    // Sealing in memory with a valid key and nonce does not fail.
    let _ = key(replica_key).seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut body,
    );
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    out
}

/// The batch sealed in `bytes`, if sealed under `replica_key`.
pub fn open(replica_key: &[u8; 32], bytes: &[u8]) -> Result<Batch, BatchError> {
    if bytes.len() < NONCE_LEN + 16 || bytes.len() > MAX_BATCH_BYTES {
        return Err(BatchError::Unsealed);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| BatchError::Unsealed)?;
    let mut sealed = sealed.to_vec();
    let plain = key(replica_key)
        .open_in_place(nonce, Aad::empty(), &mut sealed)
        .map_err(|_| BatchError::Unsealed)?;
    serde_json::from_slice(plain).map_err(|_| BatchError::Malformed)
}

/// The extended sequence number a received 16-bit `seq` stands for, given the highest one the
/// holder last reported: the candidate nearest a little past it, since the stream has moved on
/// since (by less than `SEQ_JUMP`) and packets may arrive slightly out of order.
pub fn extend_from(last_known: u64, seq: u16) -> u64 {
    let aim = last_known.saturating_add(SEQ_JUMP / 2);
    let roc = aim >> 16;
    [roc.saturating_sub(1), roc, roc + 1]
        .into_iter()
        .map(|r| (r << 16) | u64::from(seq))
        .min_by_key(|v| v.abs_diff(aim))
        .unwrap_or(u64::from(seq))
}

/// The replication state of one session, kept by its engine (`engine/replication.rs`).
#[derive(Debug, Default)]
pub struct SessionReplication {
    /// Highest sequence number per received stream.
    pub(crate) received: Vec<ReceivedStream>,
    /// When the next progress report is due.
    pub(crate) next_progress: Option<Instant>,
    /// Resumed here: incoming streams whose rollover counter is set from their first packet.
    pub(crate) pending_roc: Vec<ReceivedStream>,
    /// Resumed here: the SRTCP index the old holder last reported.
    pub(crate) resume_srtcp: Option<u32>,
}

impl SessionReplication {
    /// For a session resumed from `progress`.
    pub fn resumed(progress: &Progress) -> SessionReplication {
        SessionReplication {
            received: Vec::new(),
            next_progress: None,
            pending_roc: progress.received.clone(),
            resume_srtcp: progress.srtcp,
        }
    }
}

/// When a session another gateway serves too is dropped here (`Command::Release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseWhen {
    /// Always: the other gateway keeps it (both connected; the lower address wins).
    Always,
    /// Unless it connected here: the other gateway finished the handshake.
    NotConnected,
    /// Only if the client never reached it here: the other gateway adopted it before its
    /// handshake, and the client talks to that one.
    Untouched,
}

/// Replicas of other gateways' sessions, as this gateway received them.
#[derive(Default)]
pub struct ReplicaStore {
    by_id: HashMap<SessionId, Stored>,
    by_ufrag: HashMap<String, SessionId>,
}

/// One stored replica.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The replica.
    pub replica: Replica,
    /// Its latest progress (default until one arrives).
    pub progress: Progress,
    /// When that progress arrived (the resumer adds the time since to RTP times).
    pub progress_at: Instant,
    /// When the replica was last sent in full or refreshed.
    pub refreshed: Instant,
    /// Its holder said it was leaving: resume it without waiting for the holder to go silent.
    pub orphaned: bool,
}

impl ReplicaStore {
    /// Take a batch in; returns how many replicas it added or refreshed.
    pub fn apply(&mut self, batch: Batch, now: Instant) -> usize {
        self.sweep(now);
        let mut taken = 0;
        for replica in batch.replicas {
            if self.by_id.len() >= MAX_STORED && !self.by_id.contains_key(&replica.id) {
                break;
            }
            taken += 1;
            let id = replica.id;
            self.by_ufrag.insert(replica.ufrag.clone(), id);
            match self.by_id.get_mut(&id) {
                Some(s) => {
                    if s.replica.ufrag != replica.ufrag {
                        self.by_ufrag.remove(&s.replica.ufrag);
                        self.by_ufrag.insert(replica.ufrag.clone(), id);
                    }
                    s.orphaned &= s.replica.holder == replica.holder;
                    s.replica = replica;
                    s.refreshed = now;
                }
                None => {
                    self.by_id.insert(
                        id,
                        Stored {
                            replica,
                            progress: Progress {
                                id,
                                sent: Vec::new(),
                                received: Vec::new(),
                                srtcp: None,
                            },
                            progress_at: now,
                            refreshed: now,
                            orphaned: false,
                        },
                    );
                }
            }
        }
        for p in batch.progress {
            if let Some(s) = self.by_id.get_mut(&p.id) {
                s.progress = p;
                s.progress_at = now;
                s.refreshed = now;
            }
        }
        for id in batch.gone {
            self.remove(id);
        }
        if batch.leaving
            && let Some(from) = batch.from
        {
            for s in self.by_id.values_mut() {
                s.orphaned |= s.replica.holder == from;
            }
        }
        taken
    }

    /// The replica whose ICE ufrag is `ufrag`.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<&Stored> {
        self.by_id.get(self.by_ufrag.get(ufrag)?)
    }

    /// The replica of session `id`.
    pub fn get(&self, id: SessionId) -> Option<&Stored> {
        self.by_id.get(&id)
    }

    /// Forget session `id` (it ended, or it is resumed here).
    pub fn remove(&mut self, id: SessionId) -> Option<Stored> {
        let s = self.by_id.remove(&id)?;
        self.by_ufrag.remove(&s.replica.ufrag);
        Some(s)
    }

    /// How many replicas are kept.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        let stale: Vec<SessionId> = self
            .by_id
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.refreshed) > KEEP)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(id);
        }
    }
}

/// Byte strings as hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn owner(last: u8) -> Owner {
        Owner {
            ip: Ipv4Addr::new(10, 0, 0, last),
            udp_port: 8189,
            http_port: 8080,
        }
    }

    fn replica(id: u8, holder: u8) -> Replica {
        Replica {
            id: SessionId::from_bytes([id; 16]),
            holder: owner(holder),
            role: ReplicaRole::Viewer,
            stream: "live".into(),
            offer: "v=0\r\n".into(),
            ufrag: format!("ufrag{id}"),
            pwd: "pwd".into(),
            keying_material: vec![1, 2, 3],
            profile: 7,
            peer_cert: vec![4, 5],
            fingerprint: "sha-256 00".into(),
            etag: "e1".into(),
        }
    }

    fn progress(id: u8, seq: u64) -> Progress {
        Progress {
            id: SessionId::from_bytes([id; 16]),
            sent: vec![],
            received: vec![ReceivedStream {
                ssrc: 1,
                mid: "0".into(),
                seq,
            }],
            srtcp: Some(9),
        }
    }

    #[test]
    fn batches_open_only_under_the_key_they_were_sealed_with() {
        let key = [7u8; 32];
        let batch = Batch {
            from: Some(owner(1)),
            replicas: vec![replica(1, 1)],
            progress: vec![progress(1, 5)],
            gone: vec![SessionId::from_bytes([2; 16])],
            leaving: true,
        };
        let sealed = seal(&key, &batch);
        let opened = open(&key, &sealed).expect("opens");
        assert_eq!(opened.replicas, batch.replicas);
        assert_eq!(opened.progress, batch.progress);
        assert_eq!(opened.gone, batch.gone);
        assert!(opened.leaving);
        assert_eq!(open(&[8u8; 32], &sealed).err(), Some(BatchError::Unsealed));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 20;
        tampered[last] ^= 1;
        assert_eq!(open(&key, &tampered).err(), Some(BatchError::Unsealed));
        assert_eq!(open(&key, &sealed[..20]).err(), Some(BatchError::Unsealed));
        assert_eq!(open(&key, b"").err(), Some(BatchError::Unsealed));
        // Sealed under the key but not a batch.
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("rng");
        let mut body = b"[1,2,3]".to_vec();
        key_of(&key)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .expect("seal");
        let mut garbage = nonce.to_vec();
        garbage.extend_from_slice(&body);
        assert_eq!(open(&key, &garbage).err(), Some(BatchError::Malformed));
    }

    fn key_of(k: &[u8; 32]) -> LessSafeKey {
        key(k)
    }

    #[test]
    fn a_replica_does_not_show_its_keys_in_logs() {
        let text = format!("{:?}", replica(1, 1));
        assert!(!text.contains("keying") && !text.contains("pwd"), "{text}");
        let outcome = replica(1, 1).dtls().expect("profile 7");
        assert_eq!(format!("{outcome:?}"), "DtlsOutcome(SRTP_AEAD_AES_128_GCM)");
        assert!(
            Replica {
                profile: 3,
                ..replica(1, 1)
            }
            .dtls()
            .is_none()
        );
    }

    #[test]
    fn the_rollover_counter_is_the_one_nearest_just_past_the_last_report() {
        // Moved on a little, same rollover.
        assert_eq!(extend_from(1_000, 1_500), 1_500);
        // The report was just below a wrap; the stream wrapped since.
        assert_eq!(extend_from(65_000, 200), 65_536 + 200);
        // Just past a wrap, a late packet from before it.
        assert_eq!(extend_from(65_536 + 10, 65_530), 65_530);
        // Far into a later rollover.
        assert_eq!(
            extend_from(5 * 65_536 + 40_000, 45_000),
            5 * 65_536 + 45_000
        );
        // The very start.
        assert_eq!(extend_from(0, 3), 3);
    }

    #[test]
    fn the_store_finds_replicas_by_ufrag_and_forgets_ended_and_stale_ones() {
        let mut store = ReplicaStore::default();
        let t0 = Instant::now();
        let a = SessionId::from_bytes([1; 16]);
        let taken = store.apply(
            Batch {
                from: Some(owner(1)),
                replicas: vec![replica(1, 1), replica(2, 1)],
                progress: vec![progress(1, 77), progress(9, 1)],
                ..Batch::default()
            },
            t0,
        );
        assert_eq!(taken, 2);
        assert_eq!(store.by_ufrag("ufrag1").map(|s| s.replica.id), Some(a));
        assert_eq!(store.get(a).map(|s| s.progress.received[0].seq), Some(77));
        assert!(!store.get(a).is_some_and(|s| s.orphaned));
        // Resumed by gateway 2: the holder changes, the ufrag still finds it.
        store.apply(
            Batch {
                from: Some(owner(2)),
                replicas: vec![replica(1, 2)],
                ..Batch::default()
            },
            t0,
        );
        assert_eq!(
            store.by_ufrag("ufrag1").map(|s| s.replica.holder),
            Some(owner(2))
        );
        // Gateway 1 leaves: what it still holds is orphaned, not what gateway 2 took over.
        store.apply(
            Batch {
                from: Some(owner(1)),
                leaving: true,
                ..Batch::default()
            },
            t0,
        );
        assert!(!store.get(a).is_some_and(|s| s.orphaned));
        assert!(
            store
                .get(SessionId::from_bytes([2; 16]))
                .is_some_and(|s| s.orphaned)
        );
        // Ended: gone for good.
        store.apply(
            Batch {
                from: Some(owner(2)),
                gone: vec![a],
                ..Batch::default()
            },
            t0,
        );
        assert!(store.get(a).is_none() && store.by_ufrag("ufrag1").is_none());
        // Not refreshed for `KEEP`: dropped with the next batch.
        store.apply(Batch::default(), t0 + KEEP + Duration::from_secs(1));
        assert!(store.is_empty());
    }
}
