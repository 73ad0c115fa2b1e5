//! WHIP (RFC 9725) and WHEP endpoints: `POST /whip/{stream}` creates a session pushing the
//! stream, `POST /whep/{stream}` one pulling it; OPTIONS, GET and HEAD let clients probe.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::{AppState, authorize, empty, read_text, with_links};
use crate::auth::Action;
use crate::ids::valid_stream_name;
use crate::registry::Role;
use crate::sessions::{self, Created};

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
    with_links(r, node)
}

pub async fn whip_post(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let name = stream_name(&stream)?;
    authorize(&node, &headers, Action::Publish, &name)?;
    let offer = read_text(
        &headers,
        body,
        "application/sdp",
        node.config.max_body_bytes,
    )
    .await?;
    let c = sessions::push(&node, Some(name), Role::Whip, None, &offer)?;
    Ok(created(&node, "whip", &stream, c))
}

pub async fn whep_post(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let name = stream_name(&stream)?;
    authorize(&node, &headers, Action::Play, &name)?;
    let offer = read_text(
        &headers,
        body,
        "application/sdp",
        node.config.max_body_bytes,
    )
    .await?;
    let c = sessions::pull_stream(&node, name, &offer).await?;
    Ok(created(&node, "whep", &stream, c))
}

/// CORS preflight and ICE-server discovery (some players read the `Link`s from OPTIONS).
pub async fn options(State(node): State<AppState>) -> Response {
    let mut r = empty(StatusCode::OK);
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, GET, HEAD"),
    );
    with_links(r, &node)
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
