//! `POST /internal/v1/replicas`: the other gateways' session replicas (`replication` sends them).
//! On the public HTTP port, so a batch counts only when it opens under the cluster's replica key
//! (`replica::open`); anything else is refused with 403 and never looked into.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;
use crate::command::Command;
use crate::mailbox::WorkerMsg;
use crate::owner_tag::Owner;
use crate::replica::ReleaseWhen;
use crate::replica::{self, BatchError, MAX_BATCH_BYTES};
use crate::replication::ReplicationMsg;

/// Takes a sealed batch into the node's replica store.
pub async fn take(State(node): State<AppState>, body: Body) -> Response {
    let (Some(one), Some(_)) = (crate::owner_tag::installed(), &node.replication) else {
        return Problem::not_found("no such resource").into_response();
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BATCH_BYTES).await else {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "batch too large").into_response();
    };
    let batch = match replica::open(&one.replica_key, &bytes) {
        Ok(b) => b,
        Err(BatchError::Unsealed) => {
            tracing::warn!(
                bytes = bytes.len(),
                "refused session replicas not sealed under the cluster's key"
            );
            return Problem::new(StatusCode::FORBIDDEN, "not sealed under this cluster's key")
                .into_response();
        }
        Err(BatchError::Malformed) => {
            return Problem::bad_request("malformed batch").into_response();
        }
    };
    let own = one.tags.own();
    if batch.replicas.iter().any(|r| r.holder == own) {
        // Our own sessions come back only through a misconfigured peer list; never stored.
        return Problem::bad_request("replicas of this gateway's own sessions").into_response();
    }
    settle_double_resumes(&node, own, &batch);
    let taken = node
        .replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .apply(batch, Instant::now());
    tracing::debug!(taken, "session replicas");
    StatusCode::NO_CONTENT.into_response()
}

/// Sessions this gateway serves that the batch's sender serves too: it resumed them as well
/// (two checks of one client reached two gateways in one turn), or adopted them before their
/// handshake. Who keeps a session: the gateway that finished its handshake; between two that
/// did, the lower address; a session adopted before its handshake, by the adopter, unless the
/// client reached this one first. The loser drops it without a word to the client
/// (`Command::Release`); a keeper sends its replica again, so that every store names it.
fn settle_double_resumes(node: &AppState, own: Owner, batch: &replica::Batch) {
    let rank = |o: &Owner| (o.ip, o.udp_port);
    let Some(tx) = &node.replication else {
        return;
    };
    for r in &batch.replicas {
        if r.holder == own {
            continue;
        }
        let Some(entry) = node.registry.session(r.id) else {
            continue;
        };
        let when = if r.is_pending() {
            ReleaseWhen::Untouched
        } else if rank(&r.holder) < rank(&own) {
            ReleaseWhen::Always
        } else {
            ReleaseWhen::NotConnected
        };
        tracing::info!(session = %r.id, other = %r.holder.http(), ?when, "another gateway serves a session this one serves too");
        // Should this one keep it, every store must name it again.
        let _ = tx.send(ReplicationMsg::Reclaim(r.id));
        node.send(
            entry.worker,
            WorkerMsg::Command(Command::Release {
                session: r.id,
                when,
            }),
        );
    }
}
