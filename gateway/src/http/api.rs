//! The session/track API, shaped like Cloudflare Calls: an app creates sessions, pushes local
//! tracks from an offer, and pulls remote tracks by (session id, track name).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::problem::Problem;
use super::{AppState, bearer, read_body};
use crate::auth::Verdict;
use crate::ids::SessionId;
use crate::node::Node;
use crate::registry::Role;
use crate::sessions;

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrackObject {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TracksRequest {
    #[serde(default)]
    pub session_description: Option<SessionDescription>,
    #[serde(default)]
    pub tracks: Vec<TrackObject>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TracksResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_description: Option<SessionDescription>,
    tracks: Vec<TrackObject>,
    requires_immediate_renegotiation: bool,
}

fn app_auth(node: &Node, app: &str, headers: &HeaderMap) -> Result<(), Problem> {
    match node.auth.check_app(app, bearer(headers)) {
        Verdict::Allowed => Ok(()),
        _ => Err(Problem::unauthorized()),
    }
}

fn own_session(node: &Node, app: &str, id: &str) -> Result<SessionId, Problem> {
    let missing = || Problem::not_found("no such session");
    let id: SessionId = id.parse().map_err(|_| missing())?;
    let entry = node.registry.session(id).ok_or_else(missing)?;
    if entry.app.as_deref() != Some(app) {
        return Err(missing());
    }
    Ok(id)
}

async fn json_body<T: for<'de> Deserialize<'de> + Default>(
    node: &Node,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Problem> {
    let bytes = read_body(body, node.config.max_body_bytes).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !ct.starts_with("application/json") {
        return Err(Problem::unsupported_media_type("application/json"));
    }
    serde_json::from_slice(&bytes).map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))
}

/// `POST /v1/apps/{app}/sessions/new`, optionally with an offer whose tracks are pushed at once.
pub async fn new_session(
    State(node): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let req: TracksRequest = json_body(&node, &headers, body).await?;
    let Some(desc) = req.session_description else {
        return Err(Problem::unprocessable(
            "this node creates a session together with its first offer: send sessionDescription",
        ));
    };
    if desc.kind != "offer" {
        return Err(Problem::bad_request(
            "sessionDescription.type must be \"offer\"",
        ));
    }
    let remote: Vec<&TrackObject> = req
        .tracks
        .iter()
        .filter(|t| t.location.as_deref() == Some("remote"))
        .collect();
    if remote.is_empty() {
        let c = sessions::push(&node, None, Role::Api, Some(app), &desc.sdp)?;
        let body = serde_json::json!({
            "sessionId": c.id.to_string(),
            "sessionDescription": { "type": "answer", "sdp": c.answer },
            "tracks": c.tracks.iter().map(|t| TrackObject {
                location: Some("local".into()),
                mid: Some(t.mid.to_string()),
                track_name: Some(t.name.clone()),
                session_id: Some(c.id.to_string()),
                ..TrackObject::default()
            }).collect::<Vec<_>>(),
        });
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    if remote.len() != req.tracks.len() {
        return Err(Problem::unprocessable(
            "a session either pushes its offer's tracks or pulls remote ones, not both yet",
        ));
    }
    // Remote tracks are pulled by their global address; each names the m-line (mid) of the offer.
    let mut wanted = Vec::new();
    let mut results = Vec::new();
    for t in remote {
        let mut out = t.clone();
        let found = match (&t.session_id, &t.track_name, &t.mid) {
            (Some(sid), Some(name), Some(mid)) => sid
                .parse::<SessionId>()
                .ok()
                .and_then(|sid| node.registry.track(sid, name))
                .map(|track| (mid.clone(), track)),
            _ => None,
        };
        match found {
            Some(w) => wanted.push(w),
            None => {
                out.error_code = Some("not_found".into());
                out.error_description =
                    Some("no such track (sessionId, trackName, mid are required)".into());
            }
        }
        results.push(out);
    }
    if wanted.is_empty() {
        return Err(Problem::not_found(
            "none of the requested remote tracks exists",
        ));
    }
    let c = sessions::pull_tracks(&node, app, &desc.sdp, wanted)?;
    let body = serde_json::json!({
        "sessionId": c.id.to_string(),
        "sessionDescription": { "type": "answer", "sdp": c.answer },
        "tracks": results,
        "requiresImmediateRenegotiation": false,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/apps/{app}/sessions/{id}`: the session's pushed tracks.
pub async fn get_session(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let id = own_session(&node, &app, &id)?;
    let entry = node
        .registry
        .session(id)
        .ok_or_else(|| Problem::not_found("no such session"))?;
    let tracks: Vec<TrackObject> = entry
        .pushed
        .iter()
        .map(|t| TrackObject {
            location: Some("local".into()),
            mid: Some(t.mid.to_string()),
            track_name: Some(t.name.clone()),
            session_id: Some(id.to_string()),
            ..TrackObject::default()
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessionId": id.to_string(), "tracks": tracks })).into_response())
}

/// `POST …/tracks/new`. Pulling remote tracks into an existing session needs renegotiation of
/// that session, which this node does not do yet: the request is refused per track, in the API's
/// own error shape, instead of pretending.
pub async fn new_tracks(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    own_session(&node, &app, &id)?;
    let req: TracksRequest = json_body(&node, &headers, body).await?;
    let tracks = req
        .tracks
        .into_iter()
        .map(|mut t| {
            t.error_code = Some("not_supported".into());
            t.error_description =
                Some("adding tracks to an existing session is not implemented yet".into());
            t
        })
        .collect();
    let resp = TracksResponse {
        session_description: None,
        tracks,
        requires_immediate_renegotiation: false,
    };
    Ok((StatusCode::NOT_IMPLEMENTED, Json(resp)).into_response())
}

/// `PUT …/renegotiate`: see `new_tracks`.
pub async fn renegotiate(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    own_session(&node, &app, &id)?;
    Err(Problem::new(
        StatusCode::NOT_IMPLEMENTED,
        "renegotiation is not implemented yet",
    ))
}

/// `PUT …/tracks/close`: closing every track of the session ends it.
pub async fn close_tracks(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let id = own_session(&node, &app, &id)?;
    sessions::close(&node, id);
    Ok(
        Json(serde_json::json!({ "tracks": [], "requiresImmediateRenegotiation": false }))
            .into_response(),
    )
}
