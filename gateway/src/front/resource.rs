//! Session resources (`Location` of a WHIP/WHEP POST): DELETE ends the session; PATCH trickles
//! candidates (204) or restarts ICE (200 with the new credentials and a new strong ETag);
//! `ice_patch` tells the two apart.
//!
//! The resource URL holds a 128-bit random id and is the capability; a bearer token, when one is
//! sent, must still be valid for the stream (some players PATCH without one).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ice_patch::{self, IceState, IfMatch, PatchAction};
use super::problem::Problem;
use super::{AppState, authorize, bearer, empty, media_type, read_text};
use crate::auth::Action;
use crate::control;
use crate::ids::SessionId;
use crate::node::Node;
use crate::registry::{Role, SessionEntry};
use crate::sdp_info;

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

/// `DELETE` on a session resource: ends the session (200).
pub async fn delete(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let kind = kind_of(&uri);
    let id = match find(&node, &stream, &session, &headers, kind) {
        Ok((id, _)) => id,
        // The client closed its PeerConnection first and the DTLS close_notify beat its DELETE:
        // the session ended a moment ago and the DELETE is still the client's own.
        Err(missing) => {
            let role = if kind == "whip" {
                Role::Whip
            } else {
                Role::Whep
            };
            return match session.parse() {
                Ok(id) if node.registry.take_ended(id, &role, &stream) => Ok(empty(StatusCode::OK)),
                _ => Err(missing),
            };
        }
    };
    if !control::close(&node, id) {
        return Err(Problem::not_found("no such session"));
    }
    Ok(empty(StatusCode::OK))
}

/// `GET` on a session resource: 204 if it exists and the request may see it.
pub async fn get(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    find(&node, &stream, &session, &headers, kind_of(&uri))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `OPTIONS` on a session resource: the methods and PATCH body types it accepts.
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

/// `PATCH` `application/sdp` on a WHEP session we answered with a 406 counter-offer: the
/// player's SDP answer (204). Anywhere else it is the wrong media type.
async fn answer_to_counter_offer(
    node: &crate::node::Node,
    id: crate::ids::SessionId,
    entry: &crate::registry::SessionEntry,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    if entry.role != Role::Whep {
        return Err(Problem::unsupported_media_type(
            "application/trickle-ice-sdpfrag",
        ));
    }
    let if_match = IfMatch::parse(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()));
    if !if_match.holds_for(&entry.etag) {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match does not name this session's ETag",
        ));
    }
    let sdp = read_text(headers, body, "application/sdp", node.config.max_body_bytes).await?;
    let ufrag = sdp_info::ice_ufrag(&sdp);
    control::negotiate(node, id, crate::negotiation::Negotiation::Answer { sdp }).await?;
    // Its ufrag is the client's live ICE generation: a PATCH naming it is trickle.
    node.registry.set_remote_ufrag(id, ufrag);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `PATCH` on a session resource: trickle, ICE restart, or the answer to a WHEP counter-offer.
pub async fn patch(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, entry) = find(&node, &stream, &session, &headers, kind_of(&uri))?;
    if media_type(&headers).eq_ignore_ascii_case("application/sdp") {
        return answer_to_counter_offer(&node, id, &entry, &headers, body).await;
    }
    let text = read_text(
        &headers,
        body,
        "application/trickle-ice-sdpfrag",
        node.config.max_body_bytes,
    )
    .await?;
    let frag = sdp_info::sdpfrag(&text).map_err(Problem::bad_request)?;
    let if_match = IfMatch::parse(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()));
    let state = IceState {
        etag: &entry.etag,
        remote_ufrag: entry.remote_ufrag.as_deref(),
        old_ufrags: &entry.old_ufrags,
    };
    match ice_patch::decide(frag.ufrag.as_deref(), &if_match, state)? {
        PatchAction::Trickle => {
            control::trickle(&node, id, frag.candidates)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        PatchAction::StaleTrickle => {
            tracing::debug!(session = %id, "dropped candidates of a replaced ICE generation");
            Ok(empty(StatusCode::NO_CONTENT))
        }
        PatchAction::Restart { expected } => {
            let (Some(ufrag), Some(pwd)) = (frag.ufrag, frag.pwd) else {
                return Err(Problem::bad_request(
                    "an ICE restart needs ice-ufrag and ice-pwd",
                ));
            };
            let (lufrag, lpwd, etag) =
                control::ice_restart(&node, id, expected.as_deref(), ufrag, pwd).await?;
            // The restart's own fragment may already carry the client's new candidates.
            control::trickle(&node, id, frag.candidates)?;
            Ok(restarted(&node, &lufrag, &lpwd, &etag))
        }
    }
}

/// 200 to an ICE restart: our new credentials and candidates, and the new ETag.
fn restarted(node: &Node, ufrag: &str, pwd: &str, etag: &str) -> Response {
    let mut body = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    for c in node.peers.local_candidates() {
        body.push_str(&format!("a={}\r\n", c.to_sdp_string()));
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
    r
}
