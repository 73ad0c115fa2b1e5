//! The small pages the gateway serves itself (no CDN): the stream list, a WHEP player, a
//! camera publisher; and the JSON the list page and monitoring read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::problem::Problem;

const INDEX: &str = include_str!("../../assets/index.html");
const WATCH: &str = include_str!("../../assets/watch.html");
const PUBLISH: &str = include_str!("../../assets/publish.html");
const COMMON_JS: &str = include_str!("../../assets/common.js");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub async fn watch(Path(_stream): Path<String>) -> Html<&'static str> {
    Html(WATCH)
}

pub async fn publish(Path(_stream): Path<String>) -> Html<&'static str> {
    Html(PUBLISH)
}

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

pub async fn streams(State(node): State<AppState>) -> Response {
    Json(serde_json::json!({ "streams": node.registry.streams() })).into_response()
}

pub async fn stats(State(node): State<AppState>) -> Response {
    Json(node.stats()).into_response()
}
