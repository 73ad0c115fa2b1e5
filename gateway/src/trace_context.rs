//! Traces of what clients wait for: a session's setup (request → answer → ICE → DTLS → first
//! media packet) as a span with one child per phase, under the W3C `traceparent` the request
//! carried (so a player's or an encoder's own trace continues through the gateway), or in a new
//! trace when it carried none. A parent that says "not sampled" is obeyed: nothing is exported.

use std::time::Instant;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use relay_shell::otlp::SpanRecord;
use relay_shell::otlp_push::wall_time;

use crate::join_metrics::{PHASES, Role};

/// The caller's span, from its `traceparent` (and `tracestate`) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
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

fn span_id() -> [u8; 8] {
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

/// A session's setup spans: the whole (`marks[0]` → `marks[4]`) and one per phase, or nothing
/// when the caller's trace is not sampled.
pub fn setup_spans(
    parent: Option<TraceParent>,
    session: &str,
    role: Role,
    marks: [Instant; 5],
) -> Vec<SpanRecord> {
    if parent.is_some_and(|p| !p.sampled) {
        return Vec::new();
    }
    let trace_id = parent.map_or_else(trace_id, |p| p.trace_id);
    let root = span_id();
    let attributes = vec![
        ("wish.session".to_string(), session.to_string()),
        ("wish.role".to_string(), role.label().to_string()),
    ];
    let mut spans = vec![SpanRecord {
        trace_id,
        span_id: root,
        parent_span_id: parent.map(|p| p.span_id),
        name: format!("{} join", role.label()),
        server: true,
        start: wall_time(marks[0]),
        end: wall_time(marks[4]),
        attributes: attributes.clone(),
    }];
    for (phase, w) in PHASES.iter().zip(marks.windows(2)) {
        spans.push(SpanRecord {
            trace_id,
            span_id: span_id(),
            parent_span_id: Some(root),
            name: (*phase).to_string(),
            server: false,
            start: wall_time(w[0]),
            end: wall_time(w[1]),
            attributes: attributes.clone(),
        });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn setup_spans_hang_under_the_parent_and_cover_the_phases() {
        let t0 = Instant::now();
        let marks = [0, 2, 30, 80, 95].map(|ms| t0 + Duration::from_millis(ms));
        let parent = TraceParent {
            trace_id: [7; 16],
            span_id: [9; 8],
            sampled: true,
        };
        let spans = setup_spans(Some(parent), "abc", Role::Viewer, marks);
        assert_eq!(spans.len(), 5);
        assert_eq!(spans[0].parent_span_id, Some([9; 8]));
        assert!(spans.iter().all(|s| s.trace_id == [7; 16]));
        assert!(
            spans[1..]
                .iter()
                .all(|s| s.parent_span_id == Some(spans[0].span_id))
        );
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["viewer join", "answer", "ice", "dtls", "first_packet"]
        );
        let dtls = spans[3]
            .end
            .duration_since(spans[3].start)
            .expect("ordered");
        assert_eq!(dtls, Duration::from_millis(50));
        let unsampled = TraceParent {
            sampled: false,
            ..parent
        };
        assert!(setup_spans(Some(unsampled), "abc", Role::Viewer, marks).is_empty());
        assert_ne!(
            setup_spans(None, "abc", Role::Viewer, marks)[0].trace_id,
            [0; 16]
        );
    }
}
