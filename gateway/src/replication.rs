//! Sending this gateway's session replicas to the cluster's other gateways (`replica`): each
//! WHIP/WHEP session in full once its DTLS handshake is done (and every `FULL_EVERY` again), its
//! progress as the workers report it, and a tombstone when it ends. One sealed batch per turn,
//! POSTed to every other gateway's `/internal/v1/replicas` (`front::replicas`).
//!
//! At shutdown the workers hand their sessions off (`Engine::hand_off`): the last progress
//! arrives here, goes out in a final batch, and whichever gateway the client's packets reach next
//! resumes the session (`resume`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::IceCreds;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ids::SessionId;
use crate::owner_tag::OneAddress;
use crate::peer::dtls_outcome::OutcomeSlot;
use crate::replica::{self, Batch, FULL_EVERY, Progress, Replica, ReplicaRole};

/// Where the replicas are POSTed.
pub const PATH: &str = "/internal/v1/replicas";
/// How often a batch goes out (when there is something to say).
const TURN: Duration = Duration::from_millis(250);
/// How long a POST to one gateway may take.
const POST_TIMEOUT: Duration = Duration::from_secs(2);
/// At shutdown: how long the workers' hand-off reports are waited for.
const HAND_OFF_WAIT: Duration = Duration::from_millis(300);

/// What the replication task is told.
pub enum ReplicationMsg {
    /// A WHIP/WHEP session was created (or resumed) here.
    Started(Box<Seed>),
    /// A session's progress (from its worker).
    Progress(Progress),
    /// A session ended here: no gateway may resume it.
    Ended(SessionId),
    /// A session another gateway serves too was dropped here (`Command::Release`): forgotten,
    /// no tombstone.
    Released(SessionId),
    /// Another gateway resumed a session this one serves, and gives it up: send this one's
    /// replica again, so that every gateway's store names this one as the holder.
    Reclaim(SessionId),
    /// A session's ICE restarted (a PATCH): its replica goes out again with both sides' new
    /// credentials and the new ETag, so that a gateway resuming it later answers the client's
    /// new checks and its next PATCH.
    IceRestarted {
        /// The session.
        id: SessionId,
        /// Our new credentials.
        local: IceCreds,
        /// The client's new credentials.
        remote: IceCreds,
        /// The session's new ETag.
        etag: String,
    },
}

/// What is known of a session when it is created.
pub struct Seed {
    /// The session.
    pub id: SessionId,
    /// Publisher or viewer.
    pub role: ReplicaRole,
    /// Its stream.
    pub stream: String,
    /// The client's offer (its ICE credentials the client's current ones).
    pub offer: String,
    /// Our ICE credentials.
    pub ice: IceCreds,
    /// The session resource's ETag (`Replica::etag`).
    pub etag: String,
    /// Its DTLS outcome, once the handshake is done.
    pub dtls: OutcomeSlot,
    /// Our `a=fingerprint` (`Replica::fingerprint`).
    pub fingerprint: String,
    /// The answer's send streams (a viewer's SSRCs), for a gateway that adopts it.
    pub sent: Vec<crate::replica::SentStream>,
    /// Fired once the other gateways have the replica (the answer waits for it).
    pub announced: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Local {
    seed: Seed,
    progress: Option<Progress>,
    progress_new: bool,
    full_sent: Option<Instant>,
    /// The replica went out before the handshake (`Replica::is_pending`).
    pending_sent: bool,
}

/// Runs until `shutdown`, then sends what the workers hand off and stops.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<ReplicationMsg>,
    one: &'static OneAddress,
    shutdown: CancellationToken,
) {
    let mut sessions: HashMap<SessionId, Local> = HashMap::new();
    let mut gone: Vec<SessionId> = Vec::new();
    let mut tick = tokio::time::interval(TURN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(mut m) => {
                    // A new session goes out at once, so that the gateway its first check
                    // reaches can adopt it (the check comes within a round trip of the answer,
                    // which waits for `announced`).
                    // So does a session's ICE restart: the client is about to use the new
                    // credentials, and any gateway may have to resume it with them.
                    let (at_once, announced) = match &mut m {
                        ReplicationMsg::Started(seed) => (true, seed.announced.take()),
                        ReplicationMsg::IceRestarted { .. } => (true, None),
                        _ => (false, None),
                    };
                    take(&mut sessions, &mut gone, m);
                    if at_once {
                        let batch = next_batch(one, &mut sessions, &mut gone, Instant::now());
                        tokio::spawn(async move {
                            if let Some(batch) = batch {
                                post_all(one, batch).await;
                            }
                            if let Some(a) = announced {
                                let _ = a.send(());
                            }
                        });
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Some(batch) = next_batch(one, &mut sessions, &mut gone, Instant::now()) {
                    tokio::spawn(post_all(one, batch));
                }
            }
        }
    }
    // The workers stop on the same signal and report their sessions' last progress.
    let until = tokio::time::Instant::now() + HAND_OFF_WAIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(until, rx.recv()).await {
        take(&mut sessions, &mut gone, m);
    }
    let handed = sessions.len();
    if let Some(mut batch) = next_batch(one, &mut sessions, &mut gone, Instant::now()) {
        batch.leaving = true;
        post_all(one, batch).await;
    }
    tracing::info!(sessions = handed, "sessions handed off to the cluster");
}

fn take(sessions: &mut HashMap<SessionId, Local>, gone: &mut Vec<SessionId>, msg: ReplicationMsg) {
    match msg {
        ReplicationMsg::Started(seed) => {
            sessions.insert(
                seed.id,
                Local {
                    seed: *seed,
                    progress: None,
                    progress_new: false,
                    full_sent: None,
                    pending_sent: false,
                },
            );
        }
        ReplicationMsg::Progress(p) => {
            if let Some(l) = sessions.get_mut(&p.id) {
                l.progress = Some(p);
                l.progress_new = true;
            }
        }
        ReplicationMsg::Released(id) => {
            sessions.remove(&id);
        }
        ReplicationMsg::Reclaim(id) => {
            if let Some(l) = sessions.get_mut(&id) {
                l.full_sent = None;
            }
        }
        ReplicationMsg::IceRestarted {
            id,
            local,
            remote,
            etag,
        } => {
            if let Some(l) = sessions.get_mut(&id) {
                l.seed.offer = crate::sdp_info::with_ice_credentials(&l.seed.offer, &remote);
                l.seed.ice = local;
                l.seed.etag = etag;
                l.full_sent = None;
                l.pending_sent = false;
            }
        }
        ReplicationMsg::Ended(id) => {
            // Only sessions whose replica may have gone out need a tombstone.
            if sessions.remove(&id).is_some_and(|l| l.full_sent.is_some()) {
                gone.push(id);
            }
        }
    }
}

/// What to send now, if anything: replicas due in full (handshake done, never sent or sent
/// `FULL_EVERY` ago), new progress, tombstones.
fn next_batch(
    one: &OneAddress,
    sessions: &mut HashMap<SessionId, Local>,
    gone: &mut Vec<SessionId>,
    now: Instant,
) -> Option<Batch> {
    let own = one.tags.own();
    let mut batch = Batch {
        from: Some(own),
        ..Batch::default()
    };
    for l in sessions.values_mut() {
        let Some(dtls) = l.seed.dtls.get() else {
            if !l.pending_sent {
                l.pending_sent = true;
                batch.replicas.push(replica_of(&l.seed, own, None));
                if !l.seed.sent.is_empty() {
                    batch.progress.push(Progress {
                        id: l.seed.id,
                        sent: l.seed.sent.clone(),
                        received: Vec::new(),
                        srtcp: None,
                    });
                }
            }
            continue;
        };
        let due = l
            .full_sent
            .is_none_or(|at| now.saturating_duration_since(at) >= FULL_EVERY);
        if due {
            l.full_sent = Some(now);
            batch.replicas.push(replica_of(&l.seed, own, Some(dtls)));
            l.progress_new |= l.progress.is_some();
        }
        if l.progress_new
            && let Some(p) = &l.progress
        {
            l.progress_new = false;
            batch.progress.push(p.clone());
        }
    }
    batch.gone = std::mem::take(gone);
    if batch.replicas.is_empty() && batch.progress.is_empty() && batch.gone.is_empty() {
        return None;
    }
    Some(batch)
}

/// The replica of `seed`, held by `own`; pending (no keys) before the handshake.
fn replica_of(
    seed: &Seed,
    own: crate::owner_tag::Owner,
    dtls: Option<&crate::peer::dtls_outcome::DtlsOutcome>,
) -> Replica {
    Replica {
        id: seed.id,
        holder: own,
        role: seed.role,
        stream: seed.stream.clone(),
        offer: seed.offer.clone(),
        ufrag: seed.ice.ufrag.clone(),
        pwd: seed.ice.pass.clone(),
        keying_material: dtls.map(|d| d.keying_material.clone()).unwrap_or_default(),
        profile: dtls.map_or(0, |d| Replica::profile_id(d.profile)),
        peer_cert: dtls.map(|d| d.peer_cert.clone()).unwrap_or_default(),
        fingerprint: seed.fingerprint.clone(),
        etag: seed.etag.clone(),
    }
}

/// Seal `batch` once and POST it to every other gateway.
async fn post_all(one: &'static OneAddress, batch: Batch) {
    let sealed = bytes::Bytes::from(replica::seal(&one.replica_key, &batch));
    let mut posts = tokio::task::JoinSet::new();
    for peer in one.others(one.tags.own().http_port) {
        let body = sealed.clone();
        posts.spawn(async move {
            let sent = crate::cluster_http::post(peer, PATH, body);
            match tokio::time::timeout(POST_TIMEOUT, sent).await {
                Ok(Ok(status)) if status.is_success() => {}
                Ok(Ok(status)) => {
                    tracing::warn!(%peer, %status, "a gateway refused our session replicas")
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "session replicas not delivered"),
                Err(_) => tracing::debug!(%peer, "session replicas: no answer in time"),
            }
        });
    }
    while posts.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner_tag::{ClusterSecrets, GatewaySet, Owner, OwnerTags};
    use crate::peer::dtls_outcome::DtlsOutcome;
    use std::net::Ipv4Addr;

    fn one() -> OneAddress {
        let secrets = ClusterSecrets::derive(b"cluster key");
        let own = Owner {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 8189,
            http_port: 8080,
        };
        OneAddress {
            tags: OwnerTags::new(&secrets.tag_key, own).expect("tags"),
            gateways: GatewaySet::default(),
            tunnel_key: secrets.tunnel_key,
            replica_key: secrets.replica_key,
        }
    }

    fn creds(ufrag: &str, pass: &str) -> IceCreds {
        IceCreds {
            ufrag: ufrag.into(),
            pass: pass.into(),
        }
    }

    #[test]
    fn an_ice_restart_sends_the_replica_again_with_the_new_credentials_and_etag() {
        let one = one();
        let t0 = Instant::now();
        let id = SessionId::random();
        let dtls = OutcomeSlot::default();
        let _ = dtls.set(DtlsOutcome {
            keying_material: vec![1; 60],
            profile: str0m::crypto::dtls::SrtpProfile::AEAD_AES_128_GCM,
            peer_cert: vec![2; 10],
        });
        let offer = "v=0\r\na=ice-ufrag:cold\r\na=ice-pwd:clientpassword0000000\r\n";
        let (mut sessions, mut gone) = (HashMap::new(), Vec::new());
        take(
            &mut sessions,
            &mut gone,
            ReplicationMsg::Started(Box::new(Seed {
                id,
                role: ReplicaRole::Publisher,
                stream: "s".into(),
                offer: offer.into(),
                ice: creds("ours1", "ourpassword1"),
                etag: "etag1".into(),
                dtls,
                fingerprint: String::new(),
                sent: Vec::new(),
                announced: None,
            })),
        );
        let first = next_batch(&one, &mut sessions, &mut gone, t0).expect("the full replica");
        assert_eq!(first.replicas[0].etag, "etag1");
        assert!(next_batch(&one, &mut sessions, &mut gone, t0).is_none());

        take(
            &mut sessions,
            &mut gone,
            ReplicationMsg::IceRestarted {
                id,
                local: creds("ours2", "ourpassword2"),
                remote: creds("cnew", "clientpassword1111111"),
                etag: "etag2".into(),
            },
        );
        let again = next_batch(&one, &mut sessions, &mut gone, t0).expect("sent again at once");
        let r = &again.replicas[0];
        assert_eq!(
            (r.ufrag.as_str(), r.pwd.as_str()),
            ("ours2", "ourpassword2")
        );
        assert_eq!(r.etag, "etag2");
        assert_eq!(
            crate::sdp_info::ice_ufrag(&r.offer).as_deref(),
            Some("cnew")
        );
        assert!(r.offer.contains("a=ice-pwd:clientpassword1111111\r\n"));
        assert!(!r.is_pending(), "with the keys");
    }
}
