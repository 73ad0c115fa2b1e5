//! Sending this gateway's session replicas to the cluster's other gateways (`replica`): each
//! WHIP/WHEP session in full once its DTLS handshake is done (and every `FULL_EVERY` again), its
//! progress as the workers report it, and a tombstone when it ends. One sealed batch per turn,
//! POSTed to every other gateway's `/internal/v1/replicas` (`front::replicas`).
//!
//! At shutdown the workers hand their sessions off (`Engine::hand_off`): the last progress
//! arrives here, goes out in a final batch, and whichever gateway the client's packets reach next
//! resumes the session (`resume`).

use std::collections::HashMap;
use std::net::SocketAddr;
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
}

/// What is known of a session when it is created.
pub struct Seed {
    /// The session.
    pub id: SessionId,
    /// Publisher or viewer.
    pub role: ReplicaRole,
    /// Its stream.
    pub stream: String,
    /// The client's offer.
    pub offer: String,
    /// Our ICE credentials.
    pub ice: IceCreds,
    /// Its DTLS outcome, once the handshake is done.
    pub dtls: OutcomeSlot,
}

struct Local {
    seed: Seed,
    progress: Option<Progress>,
    progress_new: bool,
    full_sent: Option<Instant>,
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
                Some(m) => take(&mut sessions, &mut gone, m),
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
            continue;
        };
        let due = l
            .full_sent
            .is_none_or(|at| now.saturating_duration_since(at) >= FULL_EVERY);
        if due {
            l.full_sent = Some(now);
            batch.replicas.push(Replica {
                id: l.seed.id,
                holder: own,
                role: l.seed.role,
                stream: l.seed.stream.clone(),
                offer: l.seed.offer.clone(),
                ufrag: l.seed.ice.ufrag.clone(),
                pwd: l.seed.ice.pass.clone(),
                keying_material: dtls.keying_material.clone(),
                profile: Replica::profile_id(dtls.profile),
                peer_cert: dtls.peer_cert.clone(),
            });
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

/// Seal `batch` once and POST it to every other gateway.
async fn post_all(one: &'static OneAddress, batch: Batch) {
    let sealed = bytes::Bytes::from(replica::seal(&one.replica_key, &batch));
    let own = one.tags.own();
    let peers: Vec<SocketAddr> = one
        .gateways
        .ips()
        .into_iter()
        .filter(|ip| *ip != std::net::IpAddr::V4(own.ip))
        .map(|ip| SocketAddr::new(ip, own.http_port))
        .collect();
    let mut posts = tokio::task::JoinSet::new();
    for peer in peers {
        let body = sealed.clone();
        posts.spawn(async move {
            let sent = crate::front::forward::post(peer, PATH, body);
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
