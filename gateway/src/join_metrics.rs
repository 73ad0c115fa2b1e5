//! How long a client waits to join, in phases: the HTTP request that made its session (the
//! answer), ICE, DTLS, and the first media packet (sent to a viewer, or received from a
//! publisher); and the whole wait, request → first media packet. Each session keeps a
//! [`JoinClock`]; a worker reports it once per role into the node's [`JoinMetrics`].

use std::time::Instant;

use relay_proto::histogram::{Histogram, HistogramSnapshot, JOIN_BUCKETS};

use relay_shell::otlp::SpanRecord;
use relay_shell::otlp_push::wall_time;

use crate::trace_context::{TraceParent, span_id, trace_id};

tokio::task_local! {
    /// The HTTP request being handled (set by the router's timing layer), so that a session
    /// made deep inside a handler knows how long its client has been waiting, and in whose trace.
    pub static REQUEST: RequestContext;
}

/// When a request arrived and the span it came from.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// When the request arrived.
    pub started: Instant,
    /// The caller's span, from its `traceparent` header.
    pub parent: Option<TraceParent>,
}

impl RequestContext {
    /// No request: a session made by the node itself.
    pub fn now() -> RequestContext {
        RequestContext {
            started: Instant::now(),
            parent: None,
        }
    }

    /// The request being handled, or [`RequestContext::now`] outside one.
    pub fn current() -> RequestContext {
        REQUEST
            .try_with(|r| *r)
            .unwrap_or_else(|_| RequestContext::now())
    }
}

/// Which side of a stream a session joins as; each has its own histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A WHIP (or API) session pushing media: joined at its first packet received.
    Publisher,
    /// A WHEP (or API) session pulling media: joined at its first packet sent.
    Viewer,
}

impl Role {
    /// Both roles, in histogram order.
    pub const ALL: [Role; 2] = [Role::Publisher, Role::Viewer];

    /// The role as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Viewer => "viewer",
        }
    }
}

/// The phases, in order; each is measured from the end of the one before.
pub const PHASES: [&str; 4] = ["answer", "ice", "dtls", "first_packet"];

/// Join time histograms per role: each phase's and the whole wait's.
#[derive(Debug)]
pub struct JoinMetrics {
    /// Per role, per phase (`PHASES`).
    phases: [[Histogram; 4]; 2],
    /// Per role: request → first media packet.
    total: [Histogram; 2],
}

impl Default for JoinMetrics {
    fn default() -> Self {
        let h = || Histogram::new(JOIN_BUCKETS);
        JoinMetrics {
            phases: [[h(), h(), h(), h()], [h(), h(), h(), h()]],
            total: [h(), h()],
        }
    }
}

impl JoinMetrics {
    /// Per role: each phase's snapshot and the total's.
    pub fn snapshot(&self, role: Role) -> ([HistogramSnapshot; 4], HistogramSnapshot) {
        let i = role as usize;
        (
            [0, 1, 2, 3].map(|p| self.phases[i][p].snapshot()),
            self.total[i].snapshot(),
        )
    }
}

/// One session's milestones.
#[derive(Debug, Clone)]
pub struct JoinClock {
    /// The caller's span (`trace_context`).
    pub parent: Option<TraceParent>,
    requested: Instant,
    created: Instant,
    ice: Option<Instant>,
    dtls: Option<Instant>,
    reported: [bool; 2],
}

impl JoinClock {
    /// A session made for `request` at `created`; nothing reported yet.
    pub fn new(request: RequestContext, created: Instant) -> JoinClock {
        JoinClock {
            parent: request.parent,
            requested: request.started.min(created),
            created,
            ice: None,
            dtls: None,
            reported: [false; 2],
        }
    }

    /// ICE connected at `now` (the first time counts).
    pub fn ice_connected(&mut self, now: Instant) {
        self.ice.get_or_insert(now);
    }

    /// DTLS connected at `now` (the first time counts; ICE too if it was not seen).
    pub fn dtls_connected(&mut self, now: Instant) {
        // str0m may report DTLS before (or without) an ICE state change: ICE then ends here.
        self.ice.get_or_insert(now);
        self.dtls.get_or_insert(now);
    }

    /// Whether `role`'s first packet was reported already.
    pub fn reported(&self, role: Role) -> bool {
        self.reported[role as usize]
    }

    /// The first media packet for `role` at `at`: every phase observed once, the first time,
    /// whose milestones (request, answer, ICE, DTLS, first packet) are returned for its trace.
    pub fn first_media(
        &mut self,
        role: Role,
        at: Instant,
        metrics: &JoinMetrics,
    ) -> Option<[Instant; 5]> {
        let r = role as usize;
        if self.reported[r] {
            return None;
        }
        self.reported[r] = true;
        let dtls = self.dtls.unwrap_or(at);
        let ice = self.ice.unwrap_or(dtls);
        let marks = [self.requested, self.created, ice, dtls, at.max(dtls)];
        for (p, w) in marks.windows(2).enumerate() {
            metrics.phases[r][p].observe(w[1].saturating_duration_since(w[0]));
        }
        metrics.total[r].observe(at.saturating_duration_since(self.requested));
        Some(marks)
    }
}

/// A session's setup as spans, under the W3C `traceparent` its request carried or in a new
/// trace: the whole (`marks[0]` → `marks[4]`) and one child per phase, or nothing when the
/// caller's trace is not sampled (a parent's "not sampled" is obeyed).
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

    #[test]
    fn phases_add_up_to_the_total_and_are_reported_once_per_role() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let m = JoinMetrics::default();
        let request = RequestContext {
            started: t0,
            parent: None,
        };
        let mut c = JoinClock::new(request, ms(3));
        c.ice_connected(ms(40));
        c.ice_connected(ms(90)); // a later change does not move the milestone
        c.dtls_connected(ms(120));
        assert!(c.first_media(Role::Viewer, ms(130), &m).is_some());
        assert!(c.first_media(Role::Viewer, ms(900), &m).is_none());
        let (phases, total) = m.snapshot(Role::Viewer);
        let sums: Vec<f64> = phases.iter().map(|h| h.sum_seconds).collect();
        for (got, want) in sums.iter().zip([0.003, 0.037, 0.080, 0.010]) {
            assert!((got - want).abs() < 1e-9, "{sums:?}");
        }
        assert_eq!(total.count(), 1);
        assert!((total.sum_seconds - 0.130).abs() < 1e-9);
        assert_eq!(m.snapshot(Role::Publisher).1.count(), 0);
        assert!(c.reported(Role::Viewer) && !c.reported(Role::Publisher));
    }

    #[test]
    fn a_request_time_after_creation_counts_as_no_wait() {
        let t0 = Instant::now();
        let m = JoinMetrics::default();
        let later = RequestContext {
            started: t0 + Duration::from_secs(1),
            parent: None,
        };
        let mut c = JoinClock::new(later, t0);
        c.first_media(Role::Publisher, t0, &m);
        assert_eq!(m.snapshot(Role::Publisher).1.sum_seconds, 0.0);
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
