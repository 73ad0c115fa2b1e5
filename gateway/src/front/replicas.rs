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
use crate::replica::{self, BatchError, MAX_BATCH_BYTES};

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
    let taken = node
        .replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .apply(batch, Instant::now());
    tracing::debug!(taken, "session replicas");
    StatusCode::NO_CONTENT.into_response()
}
