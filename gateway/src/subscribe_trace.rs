//! A span per cluster subscribe: from the bridge asking the tree for a remote track to the
//! track's first packet arriving on this node, with a child for the wait until its description
//! (`SubscribeOk`) came down the tree. Where a remote viewer's first frame time goes, per node.
//! Only instants are kept on the packet path; spans are built when a subscribe completes.

use std::collections::HashMap;
use std::time::Instant;

use relay_proto::link::TrackKey;
use relay_shell::otlp::SpanRecord;
use relay_shell::otlp_push::{SpanSink, wall_time};

use crate::trace_context::trace_id;

/// Subscribes in flight at most; a tree that never answers cannot grow this without bound.
const MAX_PENDING: usize = 4096;

#[derive(Debug)]
struct Pending {
    asked: Instant,
    ready: Option<Instant>,
}

/// The cluster subscribes in flight, by track, until their first packet makes their span.
#[derive(Debug)]
pub struct SubscribeTrace {
    sink: SpanSink,
    node: String,
    pending: HashMap<TrackKey, Pending>,
}

impl SubscribeTrace {
    /// Spans go to `sink`, attributed to node `node`.
    pub fn new(sink: SpanSink, node: String) -> SubscribeTrace {
        SubscribeTrace {
            sink,
            node,
            pending: HashMap::new(),
        }
    }

    /// The bridge asked the tree for `key` (the span starts; only while spans are exported).
    pub fn asked(&mut self, key: &TrackKey, now: Instant) {
        if self.sink.enabled() && self.pending.len() < MAX_PENDING {
            self.pending.entry(key.clone()).or_insert(Pending {
                asked: now,
                ready: None,
            });
        }
    }

    /// `key`'s description (`SubscribeOk`) came down the tree.
    pub fn ready(&mut self, key: &TrackKey, now: Instant) {
        if let Some(p) = self.pending.get_mut(key) {
            p.ready.get_or_insert(now);
        }
    }

    /// A packet of `key` arrived: the first one ends its subscribe.
    pub fn delivered(&mut self, key: &TrackKey, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let Some(p) = self.pending.remove(key) else {
            return;
        };
        for span in self.spans(key, p, now) {
            self.sink.send(span);
        }
    }

    /// The track ended before a packet came: no span (nothing was delivered).
    pub fn ended(&mut self, key: &TrackKey) {
        self.pending.remove(key);
    }

    fn spans(&self, key: &TrackKey, p: Pending, now: Instant) -> Vec<SpanRecord> {
        let trace_id = trace_id();
        let root: [u8; 8] = rand::random();
        let attributes = vec![
            (
                "wish.track".to_string(),
                relay_shell::cluster::track_label(key),
            ),
            ("wish.node".to_string(), self.node.clone()),
        ];
        let mut spans = vec![SpanRecord {
            trace_id,
            span_id: root,
            parent_span_id: None,
            name: "cluster subscribe".into(),
            server: false,
            start: wall_time(p.asked),
            end: wall_time(now),
            attributes: attributes.clone(),
        }];
        if let Some(ready) = p.ready {
            spans.push(SpanRecord {
                trace_id,
                span_id: rand::random(),
                parent_span_id: Some(root),
                name: "track description".into(),
                server: false,
                start: wall_time(p.asked),
                end: wall_time(ready),
                attributes,
            });
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key() -> TrackKey {
        TrackKey {
            origin: "n1".into(),
            session: [1; 16],
            name: "video".into(),
        }
    }

    #[test]
    fn a_subscribe_becomes_spans_at_its_first_packet_only() {
        let (sink, mut queue) = relay_shell::otlp_push::span_queue();
        let mut t = SubscribeTrace::new(sink, "edge".into());
        let t0 = Instant::now();
        t.asked(&key(), t0);
        t.ready(&key(), t0 + Duration::from_millis(3));
        t.delivered(&key(), t0 + Duration::from_millis(9));
        t.delivered(&key(), t0 + Duration::from_millis(12));
        let spans = queue.drain();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "cluster subscribe");
        let took = spans[0]
            .end
            .duration_since(spans[0].start)
            .expect("ordered");
        assert_eq!(took, Duration::from_millis(9));
        assert_eq!(spans[1].parent_span_id, Some(spans[0].span_id));
    }

    #[test]
    fn without_an_endpoint_nothing_is_kept() {
        let mut t = SubscribeTrace::new(SpanSink::disabled(), "edge".into());
        t.asked(&key(), Instant::now());
        assert!(t.pending.is_empty());
    }
}
