//! The HTTP face of a drain (`crate::drain`): not ready, and no new sessions on this gateway.
//! Requests for the sessions it still holds go on as usual.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;

/// `/healthz`: 200 `ok`, or 503 once draining, so that a load balancer's health check (and a
/// Kubernetes readiness probe) sends the gateway no new flows.
pub async fn healthz(State(node): State<AppState>) -> Response {
    if node.draining.is_on() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    "ok".into_response()
}

/// Whether a request would make a new session: a WHIP/WHEP POST to a stream, or the session
/// API's `sessions/new`.
pub fn creates_session(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["whip" | "whep", _])
        || matches!(segments.as_slice(), [.., "sessions", "new"])
}

/// While draining, a new session is refused with 503 and `Retry-After: 1` on a connection that
/// closes, so the client's retry opens a new one, which the balancer sends to another gateway.
pub async fn refuse_new_sessions(
    State(node): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !node.draining.is_on() || !creates_session(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    tracing::info!(path = %request.uri().path(), "draining: new session refused");
    let mut response =
        Problem::unavailable("this gateway is draining; retry (another one will answer)")
            .retry_after(1)
            .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_make_sessions_are_refused() {
        for path in [
            "/whip/live",
            "/whep/live",
            "/v1/apps/a/sessions/new",
            "/apps/a/sessions/new",
        ] {
            assert!(creates_session(&Method::POST, path), "{path}");
        }
        for (method, path) in [
            (Method::PATCH, "/whip/live/0123456789abcdef0123456789abcdef"),
            (
                Method::DELETE,
                "/whep/live/0123456789abcdef0123456789abcdef",
            ),
            (
                Method::POST,
                "/whep/live/0123456789abcdef0123456789abcdef/layer",
            ),
            (
                Method::POST,
                "/v1/apps/a/sessions/0123456789abcdef0123456789abcdef/tracks/new",
            ),
            (Method::GET, "/whip/live"),
        ] {
            assert!(!creates_session(&method, path), "{method} {path}");
        }
    }
}
