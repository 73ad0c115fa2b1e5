//! Calls' WebSocket adapter routes: `POST …/adapters/websocket/new` (1–4 tracks: `local` ingest
//! from a service's PCM, `remote` egress of a track as PCM) and `…/close`. Each item connects
//! (or closes) on its own and carries its `errorCode` if it could not; the answer is 200 when
//! any item succeeded, 503 when all failed, as Calls answers.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::AppState;
use super::api::{app_auth, json_body, valid_track_name};
use super::problem::Problem;
use crate::adapters::AdapterRequest;
use crate::adapters::endpoint;
use crate::ids::SessionId;

/// One track in a WebSocket adapter request or answer.
#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdapterTrack {
    /// `local` (ingest: the service's PCM becomes a track) or `remote` (egress: a track to the
    /// service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Ingest: the new track's name; egress: the track's name in `sessionId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    /// Egress: the session pushing the track; ingest: answered, the new session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The service's WebSocket URL, which the gateway dials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Ingest: what the service sends; only `pcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_codec: Option<String>,
    /// Egress: what the service receives; only `pcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_codec: Option<String>,
    /// `buffer` (ingest) or `stream` (egress): the only modes each direction has; echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Answered: the adapter's id, for `close`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_id: Option<String>,
    /// `close`: the bytes the adapter carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_processed: Option<u64>,
    /// Why this item failed (the request as a whole may succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// … in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// The body of `adapters/websocket/new` and `…/close`.
#[derive(Debug, Deserialize, Default)]
pub struct AdaptersRequest {
    /// 1 to 4 tracks.
    #[serde(default)]
    pub tracks: Vec<AdapterTrack>,
}

/// Why an item failed: Calls' code and a description.
type ItemError = (&'static str, String);

fn invalid(detail: impl Into<String>) -> ItemError {
    ("invalid_params", detail.into())
}

async fn items(
    node: &AppState,
    app: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<AdapterTrack>, Problem> {
    app_auth(node, app, headers)?;
    let req: AdaptersRequest = json_body(node, body).await?;
    if req.tracks.is_empty() || req.tracks.len() > 4 {
        return Err(Problem::bad_request("tracks: 1 to 4 per request"));
    }
    Ok(req.tracks)
}

/// 200 with every item when any succeeded, 503 when none did.
fn answer(out: Vec<AdapterTrack>) -> Response {
    let status = if out.iter().any(|t| t.error_code.is_none()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({ "tracks": out }))).into_response()
}

/// `POST …/adapters/websocket/new`.
pub async fn new(
    State(node): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let tracks = items(&node, &app, &headers, body).await?;
    let mut out = Vec::with_capacity(tracks.len());
    for item in tracks {
        out.push(match start(&node, &app, &item).await {
            Ok(done) => done,
            Err((code, detail)) => {
                tracing::info!(%app, code, %detail, "WebSocket adapter refused");
                AdapterTrack {
                    error_code: Some(code.into()),
                    error_description: Some(detail),
                    ..item
                }
            }
        });
    }
    Ok(answer(out))
}

async fn start(node: &AppState, app: &str, item: &AdapterTrack) -> Result<AdapterTrack, ItemError> {
    let Some(url) = item.endpoint.clone() else {
        return Err(invalid("each track needs the endpoint to connect to"));
    };
    let allow_private = node.config.adapters.allow_private_endpoints;
    match item.location.as_deref() {
        Some("local") => {
            let name = item
                .track_name
                .clone()
                .filter(|n| valid_track_name(n))
                .ok_or_else(|| invalid("a local track needs a trackName (1-200 bytes)"))?;
            if item.input_codec.as_deref().is_some_and(|c| c != "pcm") {
                return Err(invalid("inputCodec: pcm is the one there is"));
            }
            let socket = endpoint::connect(&url, allow_private)
                .await
                .map_err(|e| (e.code(), e.to_string()))?;
            let (reply, rx) = oneshot::channel();
            let _ = node.adapters.send(AdapterRequest::Ingest {
                app: app.to_string(),
                track_name: name,
                socket,
                reply,
            });
            let (adapter, session) = rx.await.map_err(|_| unavailable())?;
            Ok(AdapterTrack {
                adapter_id: Some(adapter),
                session_id: Some(session.to_string()),
                ..item.clone()
            })
        }
        Some("remote") => {
            let session: SessionId = item
                .session_id
                .as_deref()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid("a remote track needs the sessionId that pushes it"))?;
            let name = item
                .track_name
                .as_deref()
                .ok_or_else(|| invalid("a remote track needs its trackName"))?;
            let track = node
                .registry
                .session(session)
                .filter(|e| e.app.as_deref() == Some(app) || e.app.is_none())
                .and_then(|_| node.registry.track(session, name))
                .ok_or_else(|| {
                    (
                        "not_found_track_error",
                        format!("session {session} pushes no track {name:?} here"),
                    )
                })?;
            let is_opus = track
                .params
                .first()
                .is_some_and(|p| p.spec().codec == str0m::format::Codec::Opus);
            match item.output_codec.as_deref().unwrap_or("pcm") {
                "pcm" if is_opus => {}
                "pcm" => return Err(invalid("pcm output takes an Opus audio track")),
                "jpeg" => {
                    return Err(invalid(
                        "jpeg output is not supported by this gateway (it would decode video)",
                    ));
                }
                other => return Err(invalid(format!("outputCodec {other:?}: pcm or jpeg"))),
            }
            let socket = endpoint::connect(&url, allow_private)
                .await
                .map_err(|e| (e.code(), e.to_string()))?;
            let (reply, rx) = oneshot::channel();
            let _ = node.adapters.send(AdapterRequest::Egress {
                app: app.to_string(),
                track,
                socket,
                reply,
            });
            let adapter = rx.await.map_err(|_| unavailable())?;
            Ok(AdapterTrack {
                adapter_id: Some(adapter),
                ..item.clone()
            })
        }
        _ => Err(invalid("location must be \"local\" or \"remote\"")),
    }
}

fn unavailable() -> ItemError {
    (
        "temporarily_unavailable_error",
        "this gateway has as many adapters as it may".into(),
    )
}

/// `POST …/adapters/websocket/close`: `tracks[{adapterId}]`.
pub async fn close(
    State(node): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let tracks = items(&node, &app, &headers, body).await?;
    let mut out = Vec::with_capacity(tracks.len());
    for item in tracks {
        let bytes = match item.adapter_id.clone() {
            Some(adapter) => {
                let (reply, rx) = oneshot::channel();
                let _ = node.adapters.send(AdapterRequest::Close {
                    app: app.clone(),
                    adapter,
                    reply,
                });
                rx.await.ok().flatten()
            }
            None => None,
        };
        out.push(match bytes {
            Some(b) => AdapterTrack {
                bytes_processed: Some(b),
                ..item
            },
            None => AdapterTrack {
                error_code: Some("adapter_not_found".into()),
                error_description: Some("no open adapter with this adapterId".into()),
                ..item
            },
        });
    }
    Ok(answer(out))
}
