//! Errors as RFC 9457 `application/problem+json` responses: every refusal the HTTP API makes goes
//! through here, so the status, the body shape and the log line are the same everywhere.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A refused request: status, a short title, a detail for the human reading the client's log.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The response status.
    pub status: StatusCode,
    /// What was wrong, for the human reading the client's log.
    pub detail: String,
    /// Seconds for `Retry-After` (409 before a publisher exists, 503 when full).
    pub retry_after: Option<u32>,
    /// `WWW-Authenticate: Bearer` on 401.
    pub challenge: bool,
    /// A WHEP offer refused only because it cannot be served as is (no codec of the stream): the
    /// endpoint may answer 406 with a counter-offer instead (`front::endpoint::whep_post`).
    pub counter_offer: bool,
    /// The Calls `errorCode` when the status alone does not say it (`front::calls`).
    pub code: Option<&'static str>,
}

/// What a refusal was, kept in the response's extensions so that the session/track API can
/// render it the way Calls clients read errors (`front::calls`) instead of as problem+json.
#[derive(Debug, Clone)]
pub struct Refused {
    /// What was wrong.
    pub detail: String,
    /// The Calls `errorCode`, when the status alone does not say it.
    pub code: Option<&'static str>,
}

impl Problem {
    /// A refusal with `status` and `detail`, nothing else set.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
            retry_after: None,
            challenge: false,
            counter_offer: false,
            code: None,
        }
    }
    /// The Calls `errorCode` for this refusal on the session/track API.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    /// 404: no such session, stream or track.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    /// 422: well-formed but cannot be carried out.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    /// 415: the body is not of the `expected` Content-Type.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {expected}"),
        )
    }
    /// 401 with `WWW-Authenticate: Bearer`: no valid bearer token.
    pub fn unauthorized() -> Self {
        Problem {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
        }
    }
    /// 403: the token may not do this on this stream.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "this token may not do that on this stream",
        )
    }
    /// 503 with `Retry-After: 5`: the node cannot take it now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }
    /// 500: a bug or an internal failure.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
    /// Sets `Retry-After`, seconds.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// The HTTP face of a refusal from the media core or the session operations.
impl From<crate::refusal::Refusal> for Problem {
    fn from(r: crate::refusal::Refusal) -> Problem {
        use crate::refusal::RefusalKind;
        let status = match r.kind {
            RefusalKind::Malformed => StatusCode::BAD_REQUEST,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Conflict => StatusCode::CONFLICT,
            RefusalKind::Stale => StatusCode::PRECONDITION_FAILED,
            RefusalKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Problem {
            retry_after: r.retry_after,
            counter_offer: r.counter_offer,
            code: r.code,
            ..Problem::new(status, r.detail)
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), detail = %self.detail, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), detail = %self.detail, "request refused");
        }
        let body = Body {
            kind: "about:blank",
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(Refused {
            detail: self.detail,
            code: self.code,
        });
        response
    }
}
