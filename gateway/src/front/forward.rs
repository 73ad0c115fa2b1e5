//! HTTP anywhere: a request for a session another gateway of the cluster holds (its id names the
//! owner, `owner_tag`) is sent on to that gateway and its answer returned as it is, so a client
//! behind one load-balanced address may PATCH, DELETE or add tracks wherever its request lands.
//!
//! Outermost but for timing: the owner applies its own CORS, Calls error shapes, auth and limits,
//! and this gateway adds nothing to its answer. A forwarded request carries `X-Wish-Forwarded`
//! and is never forwarded again (ids that name a gateway that no longer holds the session get the
//! owner's 404, not a loop). The body is read here under the same limit as everywhere. Gateways
//! that serve HTTPS forward over HTTPS, trusting exactly the certificate they all serve
//! (`cluster_http`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

use super::AppState;
use super::problem::Problem;
use crate::ids::SessionId;

/// Marks a request one gateway sent another.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-wish-forwarded");
/// How long the owner has to answer.
const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

/// The session a request's path names: `/whip|whep/{stream}/{session}[/…]` and
/// `[/v1]/apps/{app}/sessions/{session}[/…]`.
pub fn session_in_path(path: &str) -> Option<SessionId> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = match segments.as_slice() {
        ["whip" | "whep", _stream, id, ..] => id,
        ["v1", "apps", _app, "sessions", id, ..] | ["apps", _app, "sessions", id, ..] => id,
        _ => return None,
    };
    id.parse().ok()
}

/// The other gateway that holds session `id`: none when it is here (made or resumed here); the
/// gateway that resumed it, when its replica says so; else the one its id names.
fn holder_elsewhere(node: &AppState, id: SessionId) -> Option<crate::owner_tag::Owner> {
    if node.registry.session(id).is_some() {
        return None;
    }
    let resumed = node
        .replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .map(|s| s.replica.holder);
    resumed.or_else(|| id.owner_elsewhere())
}

/// Sends a request for a session held elsewhere to its owner; runs everything else here.
pub async fn to_owner(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let owner = match session_in_path(request.uri().path()) {
        Some(id) if !request.headers().contains_key(&FORWARDED) => holder_elsewhere(&node, id),
        _ => None,
    };
    let Some(owner) = owner else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, node.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let scheme = crate::cluster_http::scheme();
    let Ok(uri) = format!("{scheme}://{}{path}", owner.http()).parse::<Uri>() else {
        return Problem::bad_request("bad request path").into_response();
    };
    parts.uri = uri;
    // Hop-by-hop headers describe the client's connection to us, not ours to the owner.
    for h in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        parts.headers.remove(h);
    }
    parts.headers.remove("keep-alive");
    // The owner's own address: it may serve several names, none of which is the VIP's.
    if let Ok(host) = HeaderValue::from_str(&owner.http().to_string()) {
        parts.headers.insert(header::HOST, host);
    }
    parts
        .headers
        .insert(FORWARDED, HeaderValue::from_static("1"));
    let method = parts.method.clone();
    let forwarded = hyper::Request::from_parts(parts, Full::new(body));
    let sent = crate::cluster_http::request(forwarded);
    match tokio::time::timeout(OWNER_TIMEOUT, sent).await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(owner = %owner.http(), %method, %path, error = %e, "the session's gateway did not answer a forwarded request");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "the gateway that holds this session cannot be reached",
            )
            .into_response()
        }
        Err(_) => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the gateway that holds this session did not answer in time",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_found_where_routes_put_them() {
        let id = "0123456789abcdef0123456789abcdef";
        let parsed: SessionId = id.parse().expect("id");
        for path in [
            format!("/whip/live/{id}"),
            format!("/whep/live/{id}/layer"),
            format!("/v1/apps/app1/sessions/{id}/tracks/new"),
            format!("/apps/app1/sessions/{id}"),
        ] {
            assert_eq!(session_in_path(&path), Some(parsed), "{path}");
        }
        for path in [
            "/whip/live".to_string(),
            "/v1/apps/app1/sessions/new".to_string(),
            format!("/v1/streams/{id}/recording"),
            "/whip/live/NOT-AN-ID".to_string(),
        ] {
            assert_eq!(session_in_path(&path), None, "{path}");
        }
    }
}
