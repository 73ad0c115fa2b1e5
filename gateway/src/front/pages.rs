//! The small pages the gateway serves itself (no CDN): the stream list, a WHEP player, a
//! camera publisher, the session/track API demo; and the JSON the list page and monitoring read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use axum::http::HeaderMap;

use super::problem::Problem;
use super::{AppState, allowed, bearer};
use crate::auth::{Action, Listing, Verdict};

const INDEX: &str = include_str!("../../assets/index.html");
const WATCH: &str = include_str!("../../assets/watch.html");
const PUBLISH: &str = include_str!("../../assets/publish.html");
const COMMON_JS: &str = include_str!("../../assets/common.js");
const CALLS: &str = include_str!("../../assets/calls.html");

/// `/`: the stream list page.
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// `/watch/{stream}`: the WHEP player page.
pub async fn watch(Path(_stream): Path<String>) -> Html<&'static str> {
    Html(WATCH)
}

/// `/publish/{stream}`: the WHIP publisher page (camera and microphone).
pub async fn publish(Path(_stream): Path<String>) -> Html<&'static str> {
    Html(PUBLISH)
}

/// The session/track API demo: publish, pull by session id, a data channel chat.
pub async fn calls() -> Html<&'static str> {
    Html(CALLS)
}

/// `/assets/{file}`: the pages' shared script.
pub async fn asset(Path(file): Path<String>) -> Result<Response, Problem> {
    let (body, ct) = match file.as_str() {
        "common.js" => (COMMON_JS, "text/javascript; charset=utf-8"),
        _ => return Err(Problem::not_found("no such asset")),
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

/// Live streams, for the index page and monitoring. Never a session id: a resource URL is the
/// capability to end a session. Behind tokens when the node has them (`auth::Auth::listing`).
pub async fn streams(
    State(node): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let token = bearer(&headers);
    let mut list = node.registry.streams();
    match node.auth.listing(token) {
        Listing::All => {}
        Listing::Playable => {
            list.retain(|s| node.auth.check(token, Action::Play, &s.name) == Verdict::Allowed)
        }
        Listing::Refused => return Err(Problem::unauthorized()),
    }
    Ok(Json(serde_json::json!({ "streams": list })).into_response())
}

/// Node counters; an admin token's once the node has tokens or apps.
pub async fn stats(State(node): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    allowed(node.auth.check_admin(bearer(&headers)))?;
    Ok(Json(node.stats()).into_response())
}

/// `GET /metrics`: Prometheus text, behind the same admin token as `/v1/stats` (Prometheus
/// sends it with `authorization: {credentials: …}`).
pub async fn metrics(
    State(node): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    allowed(node.auth.check_admin(bearer(&headers)))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            relay_proto::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(&node),
    )
        .into_response())
}
