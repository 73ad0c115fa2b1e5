//! Calls' TURN credential API: `POST /v1/turn/keys/{keyId}/credentials/generate-ice-servers`
//! (`{ttl}` → 201 `{iceServers: [{urls: [stun…]}, {urls: [turn…], username, credential}]}`), the
//! older `…/credentials/generate` (201 `{iceServers: {urls, username, credential}}`), and
//! `POST …/credentials/{username}/revoke` (204). The bearer token is the key's secret, checked in
//! constant time. Credentials follow the TURN REST API scheme (`turn_credentials`), so any TURN
//! server holding the key's secret (coturn's `static-auth-secret`) accepts them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::{AppState, bearer};
use crate::turn_credentials::{Credential, RevokeError, unix_now};

/// The TTL when the request names none (Calls' examples use a day).
const DEFAULT_TTL_SECS: u64 = 86_400;

#[derive(Debug, Default, Deserialize)]
struct GenerateRequest {
    ttl: Option<u64>,
}

/// The key's secret must be the bearer token.
fn authorised(node: &AppState, key_id: &str, headers: &HeaderMap) -> Result<(), Problem> {
    let turn = node.turn_credentials();
    let Some(key) = turn.key(key_id) else {
        return Err(Problem::not_found("no such TURN key"));
    };
    let given = bearer(headers).unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(key.secret.as_bytes())) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "the TURN key's API token is required",
        ))
    }
}

fn issue(
    node: &AppState,
    key_id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Credential, Problem> {
    authorised(node, key_id, headers)?;
    if node.config.turn.urls.is_empty() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no TURN server is configured (turn.urls)",
        ));
    }
    let request: GenerateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        GenerateRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?
    };
    let ttl = request.ttl.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > crate::turn_credentials::MAX_TTL_SECS {
        return Err(Problem::bad_request("ttl must be 1 to 172800 seconds"));
    }
    let turn = node.turn_credentials();
    turn.issue(key_id, ttl, unix_now())
        .ok_or_else(|| Problem::not_found("no such TURN key"))
}

/// `…/credentials/generate-ice-servers`.
pub async fn generate_ice_servers(
    State(node): State<AppState>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let c = issue(&node, &key_id, &headers, &body)?;
    let mut servers = Vec::new();
    let stun = node.config.turn.stun();
    if !stun.is_empty() {
        servers.push(json!({ "urls": stun }));
    }
    servers.push(json!({
        "urls": node.config.turn.urls,
        "username": c.username,
        "credential": c.password,
    }));
    Ok((StatusCode::CREATED, Json(json!({ "iceServers": servers }))).into_response())
}

/// `…/credentials/generate` (Calls' first shape: one object).
pub async fn generate(
    State(node): State<AppState>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let c = issue(&node, &key_id, &headers, &body)?;
    let mut urls = node.config.turn.stun();
    urls.extend(node.config.turn.urls.iter().cloned());
    let server = json!({ "urls": urls, "username": c.username, "credential": c.password });
    Ok((StatusCode::CREATED, Json(json!({ "iceServers": server }))).into_response())
}

/// `…/credentials/{username}/revoke`.
pub async fn revoke(
    State(node): State<AppState>,
    Path((key_id, username)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorised(&node, &key_id, &headers)?;
    let mut turn = node.turn_credentials();
    match turn.revoke(&key_id, &username, unix_now()) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RevokeError::NotIssued) => Err(Problem::not_found("not a username this key issued")),
        Err(RevokeError::Full) => Err(Problem::unavailable("too many revoked usernames")),
    }
}

/// Fresh credentials for WHIP/WHEP `Link` headers, when TURN is configured: (urls, username,
/// password) from the first key.
pub fn link_credentials(node: &crate::node::Node) -> Option<(Vec<String>, Credential)> {
    let turn_cfg = &node.config.turn;
    let key = turn_cfg.keys.first()?;
    if turn_cfg.urls.is_empty() {
        return None;
    }
    let turn = node.turn_credentials();
    let c = turn.issue(&key.id, turn_cfg.link_ttl_secs.max(60), unix_now())?;
    Some((turn_cfg.urls.clone(), c))
}
