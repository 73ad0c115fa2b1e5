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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc;
use str0m::{IceCreds, Rtc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::Resumed;
use crate::ids::SessionId;
use crate::node::Node;
use crate::refusal::RefusalKind;
use crate::replica::{ReceivedStream, ReplicaRole, ReplicaStore, SEQ_JUMP, Stored};
use crate::session::Pull;

/// A request from the receive loop.
pub struct ResumeRequest {
    /// The replica, as stored when the request was made.
    pub stored: Stored,
    /// The client.
    pub client: SocketAddr,
    /// Our address it sent to.
    pub destination: SocketAddr,
    /// The datagram that asked (a STUN check): the new session answers it.
    pub first: Vec<u8>,
}

/// What the receive loop needs to ask for resumes.
pub struct ResumeHook {
    /// Replicas of the other gateways' sessions.
    pub replicas: Arc<Mutex<ReplicaStore>>,
    /// Where requests go.
    pub requests: mpsc::UnboundedSender<ResumeRequest>,
    /// This gateway's DTLS fingerprint: sessions answered with the same one can be adopted
    /// before their handshake.
    pub fingerprint: String,
}

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

/// A stream a resumed session receives: its rollover counter, from the first packet that arrives
/// here (`seq`) and the highest sequence number the old holder reported (`replica::extend_from`).
pub fn set_rollover(rtc: &mut Rtc, stream: &ReceivedStream, seq: u16) {
    let ssrc = Ssrc::from(stream.ssrc);
    let roc = crate::replica::extend_from(stream.seq, seq) >> 16;
    let mid = Mid::from(stream.mid.as_str());
    // The mid comes from another process: str0m panics on a mid it does not have.
    let known = rtc.media(mid).is_some();
    let mut api = rtc.direct_api();
    if api.stream_rx(&ssrc).is_none() && known {
        api.expect_stream_rx(ssrc, None, mid, None);
    }
    if let Some(rx) = api.stream_rx(&ssrc) {
        rx.reset_roc(roc);
    }
}

/// A resumed viewer's m-lines: the SSRCs its receivers are bound to, and numbering that
/// continues past the old holder's (`SEQ_JUMP` on, and the RTP time since its last report).
/// An adopted viewer (no handshake yet, nothing sent) only takes the SSRCs of the answer.
pub fn continue_streams(rtc: &mut Rtc, pulls: &mut [Pull], resumed: &Resumed) {
    let adopted = resumed.peer.dtls.is_none();
    for sent in &resumed.progress.sent {
        let mid = Mid::from(sent.mid.as_str());
        if rtc.media(mid).is_none() {
            continue;
        }
        let mut api = rtc.direct_api();
        if let Some(ssrc) = api.stream_tx_by_mid(mid, None).map(|tx| tx.ssrc()) {
            api.remove_stream_tx(ssrc);
        }
        api.declare_stream_tx(Ssrc::from(sent.ssrc), sent.rtx.map(Ssrc::from), mid, None);
        if adopted {
            continue;
        }
        if let Some(pull) = pulls.iter_mut().find(|p| p.mid == mid) {
            let clock = if pull.kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            };
            pull.resumed = true;
            pull.rewriter = relay_proto::Rewriter::resumed(
                clock,
                sent.seq.saturating_add(SEQ_JUMP),
                sent.time,
                resumed.progress_age,
            );
        }
    }
}
