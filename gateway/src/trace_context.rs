//! The W3C trace context of a request: the caller's span from its `traceparent` (so a player's or
//! an encoder's own trace continues through the gateway), and fresh trace and span ids for work
//! no caller traced. The spans themselves are built where their instants are known
//! (`join_metrics::setup_spans`, `subscribe_trace`).

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The caller's span, from its `traceparent` (and `tracestate`) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the caller's span belongs to.
    pub trace_id: [u8; 16],
    /// The caller's span, parent of ours.
    pub span_id: [u8; 8],
    /// The caller's sampling flag.
    pub sampled: bool,
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The request's parent span, if it named a valid one (a malformed header is no parent).
pub fn extract(headers: &HeaderMap) -> Option<TraceParent> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// A span id (never the invalid all-zero one).
pub fn span_id() -> [u8; 8] {
    // Never all zeros (an invalid id); the chance is 2^-64, the loop costs nothing.
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A trace id for a setup no caller traced.
pub fn trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", traceparent.parse().expect("header value"));
        h
    }

    #[test]
    fn a_valid_traceparent_is_the_parent_and_junk_is_none() {
        let p = extract(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .expect("valid");
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id[7], 0xb7);
        assert!(p.sampled);
        for junk in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35",
            "",
        ] {
            assert_eq!(extract(&headers(junk)), None, "{junk:?}");
        }
        assert_eq!(extract(&HeaderMap::new()), None);
    }
}
