//! Resuming a session another gateway held, when that gateway died or handed its sessions off
//! at shutdown, and the client's packets now reach this one (behind one load-balanced address).
//!
//! The replica (`replica`) has everything the client and we agreed on: the offer, our ICE
//! credentials, the DTLS-SRTP keys and the client's certificate. The session is built again from
//! the offer, exactly as the first gateway built it, but with those credentials and with a DTLS
//! engine that starts where the handshake ended (`peer::dtls_outcome`): the client sees the same
//! ICE agent answer its checks and the same SRTP keys, and carries on without a new POST, a new
//! handshake or an ICE restart. Its streams continue past whatever the old holder may have sent
//! (`replica::SEQ_JUMP`, `SRTCP_JUMP`), a viewer's with the SSRCs its receivers are bound to.
//!
//! The receive loop asks for a resume (`ResumeHook`) when a datagram for a replicated session
//! reaches it and the session's holder is gone: left the membership, said it was leaving, stopped
//! its heartbeat, or did not answer the previous check forwarded to it (`forwarding`). The
//! client's check (that one, or its last one, kept by the way in) is handed to the new session,
//! which answers it: consent from this gateway, at once.
//!
//! The same path adopts a session before its handshake (`Replica::is_pending`): when every gateway
//! has the cluster's DTLS certificate, the gateway a session's first check reaches builds it from
//! the offer and does the handshake itself, instead of tunnelling it to the gateway that answered
//! the POST.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::IceCreds;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ids::SessionId;
use crate::node::Node;
use crate::refusal::RefusalKind;
use crate::replica::ReplicaRole;
use crate::resume_hook::ResumeRequest;
use crate::resume_streams::Resumed;

/// How long a viewer's resume waits for its stream's publisher to be resumed too (the viewer's
/// check may come first; the publisher's own check comes within a few seconds).
const PUBLISHER_WAIT: Duration = Duration::from_secs(4);

/// Runs the resumes the receive loop asks for, each in a task of its own (a viewer's may wait
/// for its publisher), until `shutdown`.
pub async fn run(
    node: Arc<Node>,
    mut requests: mpsc::UnboundedReceiver<ResumeRequest>,
    shutdown: CancellationToken,
) {
    let busy: Arc<Mutex<HashSet<SessionId>>> = Arc::default();
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let id = request.stored.replica.id;
        if node.registry.session(id).is_some() || node.draining.is_on() {
            continue;
        }
        if !busy.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            continue;
        }
        let (node, busy, shutdown) = (node.clone(), busy.clone(), shutdown.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                done = resume(&node, request) => match done {
                    Ok(true) => tracing::info!(session = %id, took_us = started.elapsed().as_micros() as u64, "adopted a session another gateway negotiated"),
                    Ok(false) => tracing::info!(session = %id, took_us = started.elapsed().as_micros() as u64, "resumed a session of another gateway"),
                    Err(e) => tracing::warn!(session = %id, error = %e.detail, "cannot resume session"),
                },
            }
            busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

/// Resumes (or, before its handshake, adopts: true) the session of `request`.
async fn resume(node: &Node, request: ResumeRequest) -> Result<bool, crate::refusal::Refusal> {
    let ResumeRequest {
        stored,
        client,
        destination,
        first,
    } = request;
    let replica = stored.replica;
    // Adopted before its handshake: no keys, the handshake is done here.
    let dtls = match replica.is_pending() {
        true => None,
        false => Some(
            replica
                .dtls()
                .ok_or_else(|| crate::refusal::Refusal::unprocessable("unknown SRTP profile"))?,
        ),
    };
    let adopted = dtls.is_none();
    let resumed = Resumed {
        id: replica.id,
        peer: crate::peer::Resume {
            ice: IceCreds {
                ufrag: replica.ufrag.clone(),
                pass: replica.pwd.clone(),
            },
            dtls,
        },
        progress: stored.progress,
        progress_age: stored.progress_at.elapsed(),
        etag: replica.etag.clone(),
    };
    let stream: Arc<str> = replica.stream.as_str().into();
    match replica.role {
        ReplicaRole::Publisher => {
            crate::control::push_resumed(
                node,
                Some(stream),
                crate::registry::Role::Whip,
                None,
                &replica.offer,
                Some(resumed),
            )?;
        }
        ReplicaRole::Viewer => {
            // Its stream's publisher may be resumed a moment later, elsewhere or here.
            let deadline = Instant::now() + PUBLISHER_WAIT;
            loop {
                let attempt = crate::control::pull_stream_resumed(
                    node,
                    stream.clone(),
                    &replica.offer,
                    Some(resumed.clone()),
                )
                .await;
                match attempt {
                    Ok(_) => break,
                    Err(e) if e.kind == RefusalKind::Conflict && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    node.replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(replica.id);
    // The check that asked: routed again behind the session's ufrag (sent to the receive loop
    // first), which binds the client's address here, and answered by the new session.
    node.replay_datagram(client, destination, first);
    Ok(adopted)
}
