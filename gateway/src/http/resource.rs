//! Session resources (`Location` of a WHIP/WHEP POST): DELETE ends the session; PATCH trickles
//! candidates (204) or restarts ICE (200 with the new credentials and a new strong ETag).
//!
//! The resource URL holds a 128-bit random id and is the capability; a bearer token, when one is
//! sent, must still be valid for the stream (some players PATCH without one).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::{AppState, authorize, bearer, empty, read_text};
use crate::auth::Action;
use crate::ids::SessionId;
use crate::node::Node;
use crate::registry::{Role, SessionEntry};
use crate::sdp_info;
use crate::sessions;

fn find(
    node: &Node,
    stream: &str,
    session: &str,
    headers: &HeaderMap,
    kind: &str,
) -> Result<(SessionId, SessionEntry), Problem> {
    let missing = || Problem::not_found("no such session");
    let id: SessionId = session.parse().map_err(|_| missing())?;
    let entry = node.registry.session(id).ok_or_else(missing)?;
    let (role, action) = if kind == "whip" {
        (Role::Whip, Action::Publish)
    } else {
        (Role::Whep, Action::Play)
    };
    if entry.role != role || entry.stream.as_deref() != Some(stream) {
        return Err(missing());
    }
    if bearer(headers).is_some() {
        authorize(node, headers, action, stream)?;
    }
    Ok((id, entry))
}

fn kind_of(uri: &axum::http::Uri) -> &'static str {
    if uri.path().starts_with("/whip/") {
        "whip"
    } else {
        "whep"
    }
}

pub async fn delete(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (id, _) = find(&node, &stream, &session, &headers, kind_of(&uri))?;
    if !sessions::close(&node, id) {
        return Err(Problem::not_found("no such session"));
    }
    Ok(empty(StatusCode::OK))
}

pub async fn get(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    find(&node, &stream, &session, &headers, kind_of(&uri))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn options() -> Response {
    let mut r = empty(StatusCode::OK);
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, GET, PATCH, DELETE"),
    );
    r.headers_mut().insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    r
}

pub async fn patch(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, entry) = find(&node, &stream, &session, &headers, kind_of(&uri))?;
    let text = read_text(
        &headers,
        body,
        "application/trickle-ice-sdpfrag",
        node.config.max_body_bytes,
    )
    .await?;
    let frag = sdp_info::sdpfrag(&text).map_err(Problem::bad_request)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let current = format!("\"{}\"", entry.etag);
    let matches = |v: &str| v == "*" || v == "\"*\"" || v == current;
    match (frag.ufrag, frag.pwd) {
        (Some(ufrag), Some(pwd)) => {
            let Some(v) = if_match else {
                return Err(Problem::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "an ICE restart needs If-Match",
                ));
            };
            if !matches(v) {
                return Err(Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the ICE session changed (stale ETag)",
                ));
            }
            let expected = (v != "*" && v != "\"*\"").then_some(entry.etag.as_str());
            let (lufrag, lpwd, etag) =
                sessions::ice_restart(&node, id, expected, ufrag, pwd).await?;
            let mut body = format!("a=ice-ufrag:{lufrag}\r\na=ice-pwd:{lpwd}\r\n");
            for (i, addr) in node.peers.candidates().iter().enumerate() {
                body.push_str(&format!(
                    "a=candidate:{} 1 udp {} {} {} typ host\r\n",
                    i + 1,
                    2_130_706_431u32.saturating_sub(i as u32),
                    addr.ip(),
                    addr.port()
                ));
            }
            body.push_str("a=end-of-candidates\r\n");
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/trickle-ice-sdpfrag"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        _ => {
            if let Some(v) = if_match
                && !matches(v)
            {
                return Err(Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the ICE session changed (stale ETag)",
                ));
            }
            sessions::trickle(&node, id, frag.candidates)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}
