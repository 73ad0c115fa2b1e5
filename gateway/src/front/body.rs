//! Request bodies are read whole, within the configured limit, before any handler runs.
//!
//! A server that answers before it has read the body (a 413, or a 401 that never looks at it) and
//! then closes the connection makes the kernel reset it while the client is still sending: the
//! client sees "connection reset" instead of the answer. So every body is read here first — an
//! oversized one is read on and thrown away (up to `DRAIN_MAX` bytes and `DRAIN_TIME`) so that
//! the 413 reaches an ordinary HTTP client; past that, the 413 says `Connection: close`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::problem::Problem;

/// Bytes of an oversized body read and discarded so that its 413 can be read.
const DRAIN_MAX: u64 = 16 * 1024 * 1024;
/// Time a body (read or drained) may take: slow senders do not hold a task forever.
const BODY_TIME: Duration = Duration::from_secs(10);

/// Middleware: replaces the request body by its bytes, or answers 413 / 408.
pub async fn read_first(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return too_large(limit, false);
    }
    match tokio::time::timeout(BODY_TIME, collect(body, limit)).await {
        Ok(Read::Whole(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Read::TooLarge { drained }) => too_large(limit, drained),
        Ok(Read::Broken) => {
            Problem::bad_request("the request body could not be read").into_response()
        }
        Err(_) => {
            let mut r = Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body came too slowly",
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

enum Read {
    Whole(Bytes),
    /// Over the limit; `drained`: the rest was read too, so the connection can stay open.
    TooLarge {
        drained: bool,
    },
    Broken,
}

async fn collect(mut body: Body, limit: usize) -> Read {
    let mut buf = Vec::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Read::Broken;
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > DRAIN_MAX {
            return Read::TooLarge { drained: false };
        }
        if seen <= limit as u64 {
            buf.extend_from_slice(&data);
        } else if !buf.is_empty() {
            buf = Vec::new();
        }
    }
    if seen > limit as u64 {
        Read::TooLarge { drained: true }
    } else {
        Read::Whole(Bytes::from(buf))
    }
}

fn too_large(limit: usize, drained: bool) -> Response {
    let mut r = Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {limit} bytes"),
    )
    .into_response();
    if !drained {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}
