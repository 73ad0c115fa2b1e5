//! What makes the session/track API answer the way Cloudflare Calls does, for pages and servers
//! written for Calls (`../shared/CALLS-API.md`): its routes under `/v1/apps/{app}/…` and, as Orange
//! Meets calls them, `/apps/{app}/…`; CORS per app, preflights answered here (Calls apps call the
//! API from pages on other origins); errors as `{errorCode, errorDescription}` instead of the
//! problem+json that WHIP and WHEP keep.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::problem::Refused;
use super::{AppState, grant_cors};

/// The app a session/track API path belongs to: `/v1/apps/{app}/…` or `/apps/{app}/…`.
pub fn api_app(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let rest = rest.strip_prefix("/apps/")?;
    let (app, tail) = rest.split_once('/')?;
    (!app.is_empty() && !tail.is_empty()).then_some(app)
}

/// The `Access-Control-Allow-Origin` value for a request from `origin` to `app`, if any: `*`
/// when the app allows every origin, the origin itself when it is listed, none otherwise (the
/// browser then refuses the answer to the page; other clients do not care).
fn allowed_origin(node: &AppState, app: &str, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    let origins = &node
        .config
        .apps
        .iter()
        .find(|a| a.id == app)?
        .allowed_origins;
    if origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let origin = origin?;
    let text = origin.to_str().ok()?;
    origins.iter().any(|o| o == text).then(|| origin.clone())
}

/// The front of every session/track API route (the router sends only those here).
pub async fn front(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let Some(app) = api_app(request.uri().path()).map(str::to_owned) else {
        return next.run(request).await;
    };
    let allow = allowed_origin(&node, &app, request.headers().get(header::ORIGIN));
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        calls_errors(next.run(request).await)
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allow {
        grant_cors(h, origin, "GET, POST, PUT, DELETE, OPTIONS", "Retry-After");
    }
    response
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallsError<'a> {
    error_code: &'a str,
    error_description: &'a str,
}

/// A refusal rendered for Calls clients (they test `res.errorCode`). Statuses follow Calls where
/// it differs: JSON that does not parse is `400 decoding_error`, a body that parses but asks for
/// something invalid is `406 invalid_params`, a wrong session description `400
/// invalid_session_description`.
fn calls_errors(response: Response) -> Response {
    let Some(refused) = response.extensions().get::<Refused>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let (status, default_code) = match parts.status {
        StatusCode::BAD_REQUEST if refused.code.is_some() => (StatusCode::BAD_REQUEST, ""),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (parts.status, "unauthorized"),
        StatusCode::NOT_FOUND => (StatusCode::NOT_FOUND, "not_found"),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_ACCEPTABLE => {
            (StatusCode::NOT_ACCEPTABLE, "invalid_params")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => (parts.status, "session_error"),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            (parts.status, "retryable_transient_error")
        }
        StatusCode::SERVICE_UNAVAILABLE => (parts.status, "temporarily_unavailable_error"),
        s if s.is_server_error() => (s, "internal_error"),
        s => (s, "invalid_params"),
    };
    let body = CallsError {
        error_code: refused.code.unwrap_or(default_code),
        error_description: &refused.detail,
    };
    parts.status = status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(json))
}

#[cfg(test)]
mod tests {
    use super::api_app;

    #[test]
    fn api_paths_name_their_app() {
        assert_eq!(api_app("/v1/apps/a1/sessions/new"), Some("a1"));
        assert_eq!(api_app("/apps/a1/sessions/x/tracks/new"), Some("a1"));
        assert_eq!(api_app("/v1/apps//sessions/new"), None);
        assert_eq!(api_app("/v1/apps/a1"), None);
        assert_eq!(api_app("/v1/streams"), None);
        assert_eq!(api_app("/whip/apps/x"), None);
    }
}
