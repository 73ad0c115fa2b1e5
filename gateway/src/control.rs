//! Creating and ending sessions — the operations WHIP, WHEP and the session/track API share.
//! WHIP is "a session that pushes a stream's tracks", WHEP "a session that pulls them".

use std::sync::Arc;
use std::time::Instant;

use str0m::media::MediaKind;
use tokio::sync::oneshot;

use crate::cluster_bridge::{BridgeRequest, RESOLVE_TIMEOUT};
use crate::command::Command;
use crate::engine::Adopt;
use crate::ids::{SessionId, random_token};
use crate::mailbox::WorkerMsg;
use crate::negotiation::{Negotiated, Negotiation};
use crate::node::Node;
use crate::peer::{NewPeer, negotiated_params};
use crate::refusal::Refusal;
use crate::registry::{EtagError, Registry, Role, SessionEntry, TrackInfo};
use crate::session::Pull;

/// A session the HTTP layer can describe to its client.
pub struct Created {
    /// The new session's id.
    pub id: SessionId,
    /// Our SDP answer.
    pub answer: String,
    /// The ETag of its ICE session (changes on ICE restart).
    pub etag: String,
    /// The tracks it pushes.
    pub tracks: Vec<Arc<TrackInfo>>,
    /// Fires once the other gateways have the session's replica (`replication`): the answer
    /// waits for it (briefly), so that whichever gateway the client's first check reaches
    /// knows the session and can adopt it.
    pub announced: Option<oneshot::Receiver<()>>,
}

/// Make a negotiated session live: registered (so HTTP finds it), routable (so its first STUN
/// reaches the worker), and owned by its worker. The order matters: a client can send STUN as
/// soon as it has the answer, which is after this returns.
fn start_session(node: &Node, entry: SessionEntry, ice: str0m::IceCreds, mut adopt: Adopt) {
    adopt.requested = crate::join_metrics::RequestContext::current();
    let (id, worker) = (adopt.id, entry.worker);
    let failures = entry.stun_integrity_failures.clone();
    node.registry.insert_session(id, entry);
    node.route_ice(ice, worker, id, failures);
    node.send(worker, WorkerMsg::Command(Command::Adopt(Box::new(adopt))));
}

fn check_capacity(node: &Node) -> Result<(), Refusal> {
    if node.registry.session_count() >= node.config.max_sessions {
        return Err(Refusal::unavailable("this node is at its session limit"));
    }
    Ok(())
}

/// A session that pushes the tracks of `offer`. With a stream name, it becomes that stream's
/// publisher, replacing (and closing) any previous one: an encoder that reconnects after a
/// network failure often cannot DELETE its old session first (OBS does exactly this).
pub fn push(
    node: &Node,
    stream: Option<Arc<str>>,
    role: Role,
    app: Option<String>,
    offer: &str,
) -> Result<Created, Refusal> {
    push_resumed(node, stream, role, app, offer, None)
}

/// A new session's ETag; a resumed one keeps the ETag its client holds.
fn session_etag(resumed: Option<&crate::resume_streams::Resumed>) -> String {
    resumed
        .map(|r| r.etag.clone())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| random_token(16))
}

/// Replication for a new session: WHIP and WHEP sessions of a node in a cluster are replicated
/// to the other gateways (the session/track API's are not: they renegotiate, and carry data
/// channels, which cannot be resumed).
fn replicate(
    node: &Node,
    id: SessionId,
    (role, stream): (&Role, Option<&Arc<str>>),
    (offer, etag): (&str, &str),
    peer: &mut NewPeer,
    resumed: Option<&crate::resume_streams::Resumed>,
) -> (
    Option<Box<crate::replica::SessionReplication>>,
    Option<oneshot::Receiver<()>>,
) {
    let Some(tx) = node.replication.as_ref() else {
        return (None, None);
    };
    let role = match role {
        Role::Whip => crate::replica::ReplicaRole::Publisher,
        Role::Whep => crate::replica::ReplicaRole::Viewer,
        Role::Api => return (None, None),
    };
    let Some(stream) = stream else {
        return (None, None);
    };
    let mut api = peer.rtc.direct_api();
    let fingerprint = api.local_dtls_fingerprint().to_string();
    let sent = peer
        .media
        .iter()
        .filter_map(|(mid, _)| {
            let tx = api.stream_tx_by_mid(*mid, None)?;
            Some(crate::replica::SentStream {
                mid: mid.to_string(),
                ssrc: *tx.ssrc(),
                rtx: tx.rtx().map(|r| *r),
                seq: 0,
                time: 0,
            })
        })
        .collect();
    let (announced, on_announced) = oneshot::channel();
    let _ = tx.send(crate::replication::ReplicationMsg::Started(Box::new(
        crate::replication::Seed {
            id,
            role,
            stream: stream.to_string(),
            offer: offer.to_string(),
            ice: peer.ice.clone(),
            etag: etag.to_string(),
            dtls: peer.dtls.clone(),
            fingerprint,
            sent,
            announced: Some(announced),
        },
    )));
    let replication = Box::new(match resumed {
        Some(r) => crate::replica::SessionReplication::resumed(&r.progress),
        None => crate::replica::SessionReplication::default(),
    });
    (Some(replication), Some(on_announced))
}

/// `push`, or a publisher resumed from another gateway.
pub fn push_resumed(
    node: &Node,
    stream: Option<Arc<str>>,
    role: Role,
    app: Option<String>,
    offer: &str,
    resumed: Option<crate::resume_streams::Resumed>,
) -> Result<Created, Refusal> {
    check_capacity(node)?;
    let mut peer =
        node.peers
            .publisher_resumed(offer, Instant::now(), resumed.as_ref().map(|r| &r.peer))?;
    let id = resumed.as_ref().map_or_else(SessionId::random, |r| r.id);
    let etag = session_etag(resumed.as_ref());
    let (replication, announced) = replicate(
        node,
        id,
        (&role, stream.as_ref()),
        (offer, &etag),
        &mut peer,
        resumed.as_ref(),
    );
    let worker = node.pick_worker();
    let tracks = pushed_tracks(&peer, id, worker, &node.registry);
    start_session(
        node,
        SessionEntry::new(
            worker,
            role,
            stream.clone(),
            app,
            etag.clone(),
            crate::sdp_info::ice_ufrag(offer),
            tracks.clone(),
        ),
        peer.ice,
        Adopt {
            id,
            rtc: peer.rtc,
            same_ssrc_repair: false,
            pushed: tracks.clone(),
            pulls: vec![],
            requested: crate::join_metrics::RequestContext::now(),
            replication,
        },
    );
    let stream_for_cluster = stream.clone();
    if let Some(stream) = stream {
        if let Some(old) = node.registry.publish(stream.clone(), id, tracks.clone()) {
            tracing::info!(%stream, %old, new = %id, "a new publisher replaces the old one");
            close(node, old);
        }
        let live = tracks.clone();
        node.broadcast(|| {
            WorkerMsg::Command(Command::StreamLive {
                stream: stream.clone(),
                tracks: live.clone(),
            })
        });
        tracing::info!(%stream, session = %id, tracks = tracks.len(), "publishing");
    }
    if let (Some(recorder), Some(stream)) = (&node.recorder, &stream_for_cluster) {
        let _ = recorder.send(crate::recorder::RecorderRequest::Publish {
            stream: stream.clone(),
            session: id,
            tracks: tracks.clone(),
        });
    }
    if let Some(cluster) = &node.cluster {
        let _ = cluster.bridge.send(BridgeRequest::Publish {
            stream: stream_for_cluster,
            session: id,
            tracks: tracks.clone(),
        });
    }
    Ok(Created {
        id,
        answer: peer.answer,
        etag,
        tracks,
        announced,
    })
}

/// The tracks a publisher's negotiated session pushes: one per m-line, or one per simulcast
/// layer (all in one layer group), named as Calls and WHIP clients expect.
pub fn pushed_tracks(
    peer: &NewPeer,
    id: SessionId,
    worker: usize,
    registry: &Registry,
) -> Vec<Arc<TrackInfo>> {
    let mut tracks = Vec::new();
    for (mid, kind) in &peer.media {
        let base = if *kind == MediaKind::Audio {
            "audio"
        } else {
            "video"
        };
        let name = if tracks.iter().any(|t: &Arc<TrackInfo>| t.name == base) {
            format!("{base}-{mid}")
        } else {
            base.to_string()
        };
        // Simulcast: one track per layer (rid), all in one layer group. The first rid offered
        // keeps the plain name (OBS's `0`, browsers' `h`/`f`), the others are `<name>.<rid>`.
        let rids: Vec<String> = match peer.rtc.media(*mid).map(|m| m.rids_rx()) {
            Some(str0m::media::Rids::Specific(r)) if *kind == MediaKind::Video => {
                r.iter().map(|r| r.to_string()).collect()
            }
            _ => vec![],
        };
        let params = negotiated_params(&peer.rtc, *mid);
        if rids.is_empty() {
            tracks.push(Arc::new(TrackInfo::new(
                registry.next_track_id(),
                id,
                name,
                *kind,
                *mid,
                params,
                worker,
            )));
            continue;
        }
        let group = registry.next_track_id();
        for (i, rid) in rids.iter().enumerate() {
            // The first layer keeps the m-line's name and gives the group its id.
            let (track_id, track_name) = if i == 0 {
                (group, name.clone())
            } else {
                (registry.next_track_id(), format!("{name}.{rid}"))
            };
            let info = TrackInfo::new(
                track_id,
                id,
                track_name,
                *kind,
                *mid,
                params.clone(),
                worker,
            );
            tracks.push(Arc::new(info.layer(rid.clone(), group)));
        }
    }
    tracks
}

/// A viewer's pulls of a stream: each of its m-lines takes the first unassigned primary track
/// of its kind (a simulcast group's top layer stands for the group) and follows the stream.
/// Also the tracks assigned.
pub fn viewer_pulls(
    peer: &NewPeer,
    primary: &[Arc<TrackInfo>],
    tracks: &[Arc<TrackInfo>],
    stream: &Arc<str>,
) -> (Vec<Pull>, Vec<Arc<TrackInfo>>) {
    let mut assigned: Vec<Arc<TrackInfo>> = Vec::new();
    let mut pulls = Vec::new();
    for (mid, kind) in &peer.media {
        let track = primary
            .iter()
            .find(|t| t.kind == *kind && !assigned.iter().any(|a| a.id == t.id))
            .cloned();
        if let Some(t) = &track {
            assigned.push(t.clone());
        }
        let mut pull = Pull::new(*mid, *kind, track, Some(stream.clone()));
        pull.set_layers_from(tracks);
        pulls.push(pull);
    }
    (pulls, assigned)
}

/// A session that pulls a stream's current tracks and follows the stream across republishes.
pub async fn pull_stream(node: &Node, stream: Arc<str>, offer: &str) -> Result<Created, Refusal> {
    pull_stream_resumed(node, stream, offer, None).await
}

/// `pull_stream`, or a viewer resumed from another gateway: its m-lines keep their SSRCs, and
/// each continues its numbering past what the old holder sent (`replica::SEQ_JUMP`).
pub async fn pull_stream_resumed(
    node: &Node,
    stream: Arc<str>,
    offer: &str,
    resumed: Option<crate::resume_streams::Resumed>,
) -> Result<Created, Refusal> {
    check_capacity(node)?;
    let Some(tracks) = live_tracks(node, &stream).await else {
        return Err(
            Refusal::conflict(format!("stream {stream:?} has no publisher yet")).retry_after(2),
        );
    };
    // A simulcast m-line is one track to the viewer: its top layer stands for the group.
    let primary: Vec<Arc<TrackInfo>> = tracks.iter().filter(|t| t.is_primary()).cloned().collect();
    let mut peer = node.peers.viewer_resumed(
        offer,
        &primary,
        Instant::now(),
        resumed.as_ref().map(|r| &r.peer),
    )?;
    let (mut pulls, assigned) = viewer_pulls(&peer, &primary, &tracks, &stream);
    if let Some(r) = &resumed {
        crate::resume_streams::continue_streams(&mut peer.rtc, &mut pulls, r);
    }
    let id = resumed.as_ref().map_or_else(SessionId::random, |r| r.id);
    let etag = session_etag(resumed.as_ref());
    let (replication, announced) = replicate(
        node,
        id,
        (&Role::Whep, Some(&stream)),
        (offer, &etag),
        &mut peer,
        resumed.as_ref(),
    );
    let worker = node.pick_worker();
    start_session(
        node,
        SessionEntry::new(
            worker,
            Role::Whep,
            Some(stream.clone()),
            None,
            etag.clone(),
            crate::sdp_info::ice_ufrag(offer),
            vec![],
        ),
        peer.ice,
        Adopt {
            id,
            rtc: peer.rtc,
            same_ssrc_repair: peer.same_ssrc_repair,
            pushed: vec![],
            pulls,
            requested: crate::join_metrics::RequestContext::now(),
            replication,
        },
    );
    tracing::info!(%stream, session = %id, "playing");
    Ok(Created {
        id,
        answer: crate::sdp_info::unify_msid(&peer.answer, &stream),
        etag,
        tracks: assigned,
        announced,
    })
}

/// WHEP counter-offer (the WHEP draft's 406): a viewer session of `stream` whose offer is ours,
/// for a player whose own offer could not be served as is (none of the stream's codecs). The
/// player answers with `PATCH` `application/sdp`. Returns the offer in `Created::answer`.
pub async fn counter_offer(node: &Node, stream: Arc<str>) -> Result<Created, Refusal> {
    check_capacity(node)?;
    let tracks = live_tracks(node, &stream)
        .await
        .ok_or_else(|| Refusal::conflict("the stream ended"))?;
    let primary: Vec<Arc<TrackInfo>> = tracks.iter().filter(|t| t.is_primary()).cloned().collect();
    let (rtc, ice) = node.peers.offering_viewer(&primary, Instant::now());
    let id = SessionId::random();
    let worker = node.pick_worker();
    let etag = random_token(16);
    start_session(
        node,
        SessionEntry::new(
            worker,
            Role::Whep,
            Some(stream.clone()),
            None,
            etag.clone(),
            None,
            vec![],
        ),
        ice,
        Adopt {
            id,
            rtc,
            same_ssrc_repair: false,
            pushed: vec![],
            pulls: vec![],
            requested: crate::join_metrics::RequestContext::now(),
            replication: None,
        },
    );
    let offered = negotiate(node, id, Negotiation::Pull { tracks: primary }).await;
    let Ok(Negotiated::Offer { sdp, pulls, .. }) = offered else {
        close(node, id);
        return Err(offered
            .err()
            .unwrap_or_else(|| Refusal::internal("expected an offer")));
    };
    tracing::info!(%stream, session = %id, "playing (our counter-offer)");
    Ok(Created {
        id,
        answer: crate::sdp_info::unify_msid(&sdp, &stream),
        etag,
        tracks: pulls.into_iter().map(|(_, t)| t).collect(),
        announced: None,
    })
}

/// The tracks of `stream`, published here or elsewhere in the cluster; None when it is not live.
async fn live_tracks(node: &Node, stream: &str) -> Option<Vec<Arc<TrackInfo>>> {
    match node.registry.stream(stream) {
        Some((_, tracks)) => Some(tracks),
        None => resolve_in_cluster(node, stream).await,
    }
}

/// A stream published on another gateway of the cluster: its tracks, found through the stream's
/// home node and described by the tree (None when there is no cluster or no such stream).
async fn resolve_in_cluster(node: &Node, stream: &str) -> Option<Vec<Arc<TrackInfo>>> {
    let cluster = node.cluster.as_ref()?;
    let lookup = async {
        let (reply, rx) = oneshot::channel();
        cluster
            .bridge
            .send(BridgeRequest::Resolve {
                stream: stream.to_string(),
                reply,
            })
            .ok()?;
        tokio::time::timeout(RESOLVE_TIMEOUT, rx).await.ok()?.ok()?
    };
    let tracks = cluster.remote_streams.get_or_lookup(stream, lookup).await?;
    Some(tracks.as_ref().clone())
}

/// The media tracks of a session another gateway of the cluster holds, as this node's pulls take
/// them (the bridge lists every local session's tracks in the directory, `media:{id}`); None
/// without a cluster or when no gateway lists the session. Not cached: a session may push more
/// tracks at any time.
pub async fn session_tracks_elsewhere(
    node: &Node,
    session: SessionId,
) -> Option<Vec<Arc<TrackInfo>>> {
    let cluster = node.cluster.as_ref()?;
    let (reply, rx) = oneshot::channel();
    cluster
        .bridge
        .send(BridgeRequest::Resolve {
            stream: crate::cluster_bridge::media_directory_name(session),
            reply,
        })
        .ok()?;
    tokio::time::timeout(RESOLVE_TIMEOUT, rx).await.ok()?.ok()?
}

/// Where `publisher`'s data channel `name` is served from: its session's worker on this node,
/// or the cluster bridge when another gateway publishes it (asked of the directory). None when
/// nobody publishes it.
pub async fn channel_source(node: &Node, publisher: SessionId, name: &str) -> Option<usize> {
    if let Some(worker) = node.registry.channel_worker(publisher, name) {
        return Some(worker);
    }
    let cluster = node.cluster.as_ref()?;
    if node.registry.session(publisher).is_some() {
        // A session of this node that does not publish the channel.
        return None;
    }
    let (reply, rx) = oneshot::channel();
    cluster
        .bridge
        .send(BridgeRequest::FindChannel {
            publisher,
            name: name.to_string(),
            reply,
        })
        .ok()?;
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, rx).await.ok()?.ok()?;
    found.then_some(cluster.bridge_peer)
}

/// A session that pulls given tracks, each on the offer's m-line with the given mid (the
/// session/track API's remote tracks, when the client makes the offer).
pub fn pull_tracks(
    node: &Node,
    app: String,
    offer: &str,
    wanted: Vec<(String, Arc<TrackInfo>)>,
) -> Result<Created, Refusal> {
    check_capacity(node)?;
    let tracks: Vec<Arc<TrackInfo>> = wanted.iter().map(|(_, t)| t.clone()).collect();
    let peer = node.peers.viewer(offer, &tracks, Instant::now())?;
    let mut pulls = Vec::new();
    for (mid, kind) in &peer.media {
        let track = wanted
            .iter()
            .find(|(m, t)| m.as_str() == &**mid && t.kind == *kind)
            .map(|(_, t)| t.clone());
        let mut pull = Pull::new(*mid, *kind, track, None);
        pull.set_layers_for_api(&node.registry);
        pulls.push(pull);
    }
    if pulls.iter().all(|p| p.track.is_none()) {
        return Err(Refusal::unprocessable(
            "no offered m-line matches a requested track's mid and kind",
        ));
    }
    let id = SessionId::random();
    let worker = node.pick_worker();
    let etag = random_token(16);
    let assigned = pulls.iter().filter_map(|p| p.track.clone()).collect();
    start_session(
        node,
        SessionEntry::new(
            worker,
            Role::Api,
            None,
            Some(app),
            etag.clone(),
            crate::sdp_info::ice_ufrag(offer),
            vec![],
        ),
        peer.ice,
        Adopt {
            id,
            rtc: peer.rtc,
            same_ssrc_repair: peer.same_ssrc_repair,
            pushed: vec![],
            pulls,
            requested: crate::join_metrics::RequestContext::now(),
            replication: None,
        },
    );
    Ok(Created {
        id,
        answer: peer.answer,
        etag,
        tracks: assigned,
        announced: None,
    })
}

/// A session with nothing negotiated yet (session/track API); tracks come with renegotiation.
pub fn create_empty(node: &Node, app: String) -> Result<SessionId, Refusal> {
    check_capacity(node)?;
    let (rtc, ice) = node.peers.empty(Instant::now());
    let id = SessionId::random();
    let worker = node.pick_worker();
    start_session(
        node,
        SessionEntry::new(
            worker,
            Role::Api,
            None,
            Some(app),
            random_token(16),
            None,
            vec![],
        ),
        ice,
        Adopt {
            id,
            rtc,
            same_ssrc_repair: false,
            pushed: vec![],
            pulls: vec![],
            requested: crate::join_metrics::RequestContext::now(),
            replication: None,
        },
    );
    Ok(id)
}

/// Renegotiate a session on its worker.
pub async fn negotiate(node: &Node, id: SessionId, n: Negotiation) -> Result<Negotiated, Refusal> {
    let entry = node.registry.session(id).ok_or_else(Refusal::no_session)?;
    let (tx, rx) = oneshot::channel();
    node.send(
        entry.worker,
        WorkerMsg::Command(Command::Negotiate {
            session: id,
            negotiation: n,
            reply: tx,
        }),
    );
    rx.await.map_err(|_| Refusal::not_found("session ended"))?
}

/// Pin a viewer's m-line (`mid`, or every simulcast pull when None) to layer `rid`, or back to
/// automatic choice (None), on the session's worker.
pub async fn select_layer(
    node: &Node,
    worker: usize,
    id: SessionId,
    mid: Option<String>,
    rid: Option<String>,
) -> Result<(), Refusal> {
    let (reply, rx) = oneshot::channel();
    node.send(
        worker,
        WorkerMsg::Command(Command::SelectLayer {
            session: id,
            mid,
            rid,
            reply,
        }),
    );
    rx.await.map_err(|_| Refusal::no_session())?
}

/// End a session. False if there was none.
pub fn close(node: &Node, id: SessionId) -> bool {
    let Some(entry) = node.registry.remove_session(id) else {
        return false;
    };
    node.send(
        entry.worker,
        WorkerMsg::Command(Command::Close { session: id }),
    );
    true
}

/// ICE restart: new remote credentials in, new local credentials and ETag out. `if_match` is the
/// request's ETag without quotes (`None` for `*`); a stale one fails without touching the session.
pub async fn ice_restart(
    node: &Node,
    id: SessionId,
    if_match: Option<&str>,
    ufrag: String,
    pwd: String,
) -> Result<(String, String, String), Refusal> {
    let entry = node.registry.session(id).ok_or_else(Refusal::no_session)?;
    let etag = random_token(16);
    match node
        .registry
        .restart_ice(id, if_match, etag.clone(), ufrag.clone())
    {
        Ok(()) => {}
        Err(EtagError::NoSession) => return Err(Refusal::no_session()),
        Err(EtagError::Stale) => {
            return Err(Refusal::stale("the ICE session changed (stale ETag)"));
        }
    }
    let (tx, rx) = oneshot::channel();
    let remote = str0m::IceCreds { ufrag, pass: pwd };
    let replica_remote = remote.clone();
    node.send(
        entry.worker,
        WorkerMsg::Command(Command::IceRestart {
            session: id,
            remote,
            reply: tx,
        }),
    );
    let local = rx
        .await
        .ok()
        .flatten()
        .ok_or_else(|| Refusal::not_found("session ended"))?;
    if let Some(tx) = node.replication.as_ref() {
        let _ = tx.send(crate::replication::ReplicationMsg::IceRestarted {
            id,
            local: local.clone(),
            remote: replica_remote,
            etag: etag.clone(),
        });
    }
    Ok((local.ufrag, local.pass, etag))
}

/// Hands trickled ICE candidates (`candidate:…` lines) to the session's worker.
pub fn trickle(node: &Node, id: SessionId, candidates: Vec<String>) -> Result<(), Refusal> {
    let entry = node.registry.session(id).ok_or_else(Refusal::no_session)?;
    node.send(
        entry.worker,
        WorkerMsg::Command(Command::Trickle {
            session: id,
            candidates,
        }),
    );
    Ok(())
}
