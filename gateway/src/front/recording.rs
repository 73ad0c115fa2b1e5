//! `POST /v1/streams/{name}/recording` starts recording a live stream, `DELETE` stops it (until
//! started again; config patterns no longer apply to it). Authorized like publishing the stream.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::problem::Problem;
use super::{AppState, authorize};
use crate::auth::Action;
use crate::ids::valid_stream_name;
use crate::recorder::RecorderRequest;

async fn ask(
    node: &AppState,
    headers: &HeaderMap,
    stream: &str,
    make: impl FnOnce(std::sync::Arc<str>, oneshot::Sender<bool>) -> RecorderRequest,
) -> Result<(), Problem> {
    if !valid_stream_name(stream) {
        return Err(Problem::not_found("no such stream"));
    }
    authorize(node, headers, Action::Publish, stream)?;
    let Some(recorder) = &node.recorder else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "recording is not configured on this node (set [recording] dir or --record-dir)",
        ));
    };
    let (tx, rx) = oneshot::channel();
    let _ = recorder.send(make(stream.into(), tx));
    match rx.await {
        Ok(true) => Ok(()),
        _ => Err(Problem::not_found("no such stream")),
    }
}

/// `POST /v1/streams/{name}/recording`: record the live stream from now on.
pub async fn start(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    ask(&node, &headers, &stream, |stream, reply| {
        RecorderRequest::Start { stream, reply }
    })
    .await?;
    Ok(Json(serde_json::json!({ "stream": stream, "recording": true })).into_response())
}

/// `DELETE /v1/streams/{name}/recording`: stop recording it.
pub async fn stop(
    State(node): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    ask(&node, &headers, &stream, |stream, reply| {
        RecorderRequest::Stop { stream, reply }
    })
    .await?;
    Ok(Json(serde_json::json!({ "stream": stream, "recording": false })).into_response())
}
