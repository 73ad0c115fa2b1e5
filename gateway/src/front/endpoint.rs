//! WHIP (RFC 9725) and WHEP endpoints: `POST /whip/{stream}` creates a session pushing the
//! stream, `POST /whep/{stream}` one pulling it; OPTIONS, GET and HEAD let clients probe.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::{AppState, Peer, admitted, authorize, empty, read_text, with_links};
use crate::auth::Action;
use crate::control::{self, Created};
use crate::ids::valid_stream_name;
use crate::registry::Role;

fn stream_name(stream: &str) -> Result<Arc<str>, Problem> {
    if valid_stream_name(stream) {
        Ok(stream.into())
    } else {
        Err(Problem::bad_request(
            "stream names are 1-128 characters of A-Z a-z 0-9 - _ . ~",
        ))
    }
}

fn created(node: &crate::node::Node, prefix: &str, stream: &str, c: Created) -> Response {
    let location = format!("/{prefix}/{stream}/{}", c.id);
    let mut r = (StatusCode::CREATED, c.answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", c.etag)) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    // The POST was authorised: the client may have TURN credentials.
    with_links(r, node, true)
}

/// What WHIP and WHEP POSTs share: a valid stream name, permission, an SDP offer within limits.
async fn offer_for(
    node: &crate::node::Node,
    stream: &str,
    action: Action,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arc<str>, String), Problem> {
    let name = stream_name(stream)?;
    authorize(node, headers, action, &name)?;
    let offer = read_text(headers, body, "application/sdp", node.config.max_body_bytes).await?;
    Ok((name, offer))
}

/// How long an answer waits for the other gateways to have its session's replica: a round trip
/// in the cluster, normally; never long, should a gateway be slow (the session is then tunnelled,
/// as before replicas).
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Wait (at most `ANNOUNCE_WAIT`) until the other gateways know the new session.
async fn announced(c: &mut control::Created) {
    if let Some(rx) = c.announced.take() {
        let _ = tokio::time::timeout(ANNOUNCE_WAIT, rx).await;
    }
}

/// `POST /whip/{stream}`: a publisher's SDP offer; 201 with our answer and the session resource.
pub async fn whip_post(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (name, offer) = offer_for(&node, &stream, Action::Publish, &headers, body).await?;
    let push = async { control::push(&node, Some(name), Role::Whip, None, &offer) };
    let mut c = admitted(&node, &peer, push, |c| c.id).await?;
    announced(&mut c).await;
    Ok(created(&node, "whip", &stream, c))
}

/// `POST /whep/{stream}`: a viewer's SDP offer; 201 with our answer and the session resource.
pub async fn whep_post(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (name, offer) = offer_for(&node, &stream, Action::Play, &headers, body).await?;
    let pull = control::pull_stream(&node, name.clone(), &offer);
    let c = match admitted(&node, &peer, pull, |c| c.id).await {
        Ok(c) => c,
        // The WHEP draft's counter-offer: we offer what the stream has, the player answers
        // with PATCH application/sdp. A player that does not know it sees a 4xx either way.
        Err(p) if p.counter_offer => {
            let ours = control::counter_offer(&node, name);
            let c = admitted(&node, &peer, ours, |c| c.id).await?;
            let mut r = created(&node, "whep", &stream, c);
            *r.status_mut() = StatusCode::NOT_ACCEPTABLE;
            r.headers_mut().insert(
                "accept-patch",
                HeaderValue::from_static("application/sdp, application/trickle-ice-sdpfrag"),
            );
            return Ok(r);
        }
        Err(p) => return Err(p),
    };
    let mut c = c;
    announced(&mut c).await;
    let simulcast = c.tracks.iter().any(|t| t.layer_group.is_some());
    let layer = format!("/whep/{stream}/{}/layer", c.id);
    let mut r = created(&node, "whep", &stream, c);
    // WHEP layer-selection extension, offered when the stream is simulcast.
    if simulcast
        && let Ok(v) = HeaderValue::from_str(&format!(
            "<{layer}>; rel=\"urn:ietf:params:whep:ext:core:layer\""
        ))
    {
        r.headers_mut().append(header::LINK, v);
    }
    Ok(r)
}

/// Body of `POST <session>/layer` (WHEP extensions draft): `mediaId` is the viewer's mid
/// (optional: every simulcast m-line), `encodingId` the layer's rid; without `encodingId` the
/// choice goes back to automatic.
#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LayerRequest {
    /// The viewer's mid; none: every simulcast m-line.
    #[serde(default)]
    pub media_id: Option<String>,
    /// The layer's rid; none: back to automatic.
    #[serde(default)]
    pub encoding_id: Option<String>,
}

/// `POST /whep/{stream}/{session}/layer`: pin the viewer to a simulcast layer (204).
pub async fn whep_layer(
    State(node): State<AppState>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let missing = || Problem::not_found("no such session");
    let id: crate::ids::SessionId = session.parse().map_err(|_| missing())?;
    let entry = node.registry.session(id).ok_or_else(missing)?;
    if entry.role != Role::Whep || entry.stream.as_deref() != Some(stream.as_str()) {
        return Err(missing());
    }
    if super::bearer(&headers).is_some() {
        authorize(&node, &headers, Action::Play, &stream)?;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(Problem::unsupported_media_type("application/json"));
    }
    let bytes = super::read_body(body, node.config.max_body_bytes).await?;
    let req: LayerRequest = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?;
    control::select_layer(&node, entry.worker, id, req.media_id, req.encoding_id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// CORS preflight and ICE-server discovery (some players read the `Link`s from OPTIONS).
/// The endpoint's OPTIONS: what it accepts, and its ICE servers (RFC 9725 §4.6); TURN
/// credentials only for a client that may publish (WHIP) or play (WHEP) this stream.
pub async fn options(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let action = if uri.path().starts_with("/whip/") {
        crate::auth::Action::Publish
    } else {
        crate::auth::Action::Play
    };
    let may =
        node.auth.check(super::bearer(&headers), action, &stream) == crate::auth::Verdict::Allowed;
    let mut r = empty(StatusCode::OK);
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, GET, HEAD"),
    );
    with_links(r, &node, may)
}

/// RFC 9725 allows GET on the endpoint; answer 2xx with no body.
pub async fn probe(Path(stream): Path<String>) -> Result<Response, Problem> {
    stream_name(&stream)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// The WHEP editor's copy: HEAD tells a player the endpoint speaks SDP.
pub async fn whep_head(Path(stream): Path<String>) -> Result<Response, Problem> {
    stream_name(&stream)?;
    let mut r = empty(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    Ok(r)
}
