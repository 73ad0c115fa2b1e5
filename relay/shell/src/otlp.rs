//! OTLP, the OpenTelemetry protocol: a scrape's metrics (`metrics::Exposition`) and finished
//! spans turned into the protocol's own messages (`opentelemetry-proto`), encoded as the
//! protobuf bodies OTLP/HTTP carries. Pure functions: `shell::otlp_push` sends them.
//!
//! Names: OpenTelemetry's conventions, which Prometheus' OTLP ingestion maps back to the names
//! `/metrics` shows: a counter's `_total` is dropped (a monotonic cumulative Sum), the unit comes
//! from the name's suffix (`_seconds` → `s`, `_bytes` → `By`), everything else is unchanged.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message;

use relay_proto::metrics::{Exposition, Family, Kind, Value};

/// The instrumentation scope every export names.
const SCOPE: &str = "wish";

/// A finished span, as the code that timed it knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace the span belongs to.
    pub trace_id: [u8; 16],
    /// The span's own id.
    pub span_id: [u8; 8],
    /// The span this one is part of; `None` for a trace's root.
    pub parent_span_id: Option<[u8; 8]>,
    /// What was timed.
    pub name: String,
    /// A server span (it answers a client's request) rather than internal work.
    pub server: bool,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Attributes, as key and string value.
    pub attributes: Vec<(String, String)>,
}

/// Nanoseconds since the Unix epoch, as OTLP timestamps want (0 before the epoch).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes(pairs: &[(String, String)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn resource(pairs: &[(&str, &str)]) -> Resource {
    Resource {
        attributes: pairs.iter().map(|(k, v)| attribute(k, v)).collect(),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// OpenTelemetry's name and unit for a Prometheus-style name.
pub fn otel_name(name: &str, kind: Kind) -> (&str, &'static str) {
    let name = match kind {
        Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let unit = if name.ends_with("_seconds") {
        "s"
    } else if name.ends_with("_bytes") {
        "By"
    } else if name.ends_with("_bits_per_second") {
        "bit/s"
    } else {
        "1"
    };
    (name, unit)
}

fn metric(f: &Family, start: u64, now: u64) -> Metric {
    let (name, unit) = otel_name(&f.name, f.kind);
    let numbers = || {
        f.series
            .iter()
            .filter_map(|(labels, v)| match v {
                Value::Number(n) => Some(NumberDataPoint {
                    attributes: attributes(labels),
                    start_time_unix_nano: if f.kind == Kind::Counter { start } else { 0 },
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsDouble(*n)),
                    ..Default::default()
                }),
                Value::Histogram(_) => None,
            })
            .collect::<Vec<_>>()
    };
    let data = match f.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: numbers(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge => metric::Data::Gauge(Gauge {
            data_points: numbers(),
        }),
        Kind::Histogram => metric::Data::Histogram(Histogram {
            data_points: f
                .series
                .iter()
                .filter_map(|(labels, v)| match v {
                    Value::Histogram(h) => Some(HistogramDataPoint {
                        attributes: attributes(labels),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: h.count(),
                        sum: Some(h.sum_seconds),
                        bucket_counts: h.counts.clone(),
                        explicit_bounds: h.bounds.to_vec(),
                        ..Default::default()
                    }),
                    Value::Number(_) => None,
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    Metric {
        name: name.to_string(),
        description: f.help.clone(),
        unit: unit.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// One push of every metric: cumulative since `start` (the process's start), observed `now`.
pub fn metrics_request(
    e: &Exposition,
    resource_attributes: &[(&str, &str)],
    start: SystemTime,
    now: SystemTime,
) -> Vec<u8> {
    let (start, now) = (unix_nanos(start), unix_nanos(now));
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(resource_attributes)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: e.families.iter().map(|f| metric(f, start, now)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One push of finished spans.
pub fn traces_request(spans: &[SpanRecord], resource_attributes: &[(&str, &str)]) -> Vec<u8> {
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: if s.server {
                span::SpanKind::Server
            } else {
                span::SpanKind::Internal
            } as i32,
            start_time_unix_nano: unix_nanos(s.start),
            end_time_unix_nano: unix_nanos(s.end),
            attributes: attributes(&s.attributes),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(resource_attributes)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_proto::histogram::Histogram as Hist;
    use std::time::Duration;

    #[test]
    fn counters_lose_total_and_histograms_keep_their_buckets() {
        let mut e = Exposition::new();
        e.counter("x_packets_total", "Packets.", 7);
        e.gauge("x_sessions", "Sessions.", 2.0);
        let h = Hist::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(2));
        let snap = h.snapshot();
        e.histogram(
            "x_join_seconds",
            "Join.",
            [(vec![("role", "viewer")], &snap)],
        );
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let bytes = metrics_request(
            &e,
            &[("service.name", "t")],
            t0,
            t0 + Duration::from_secs(5),
        );
        let req = ExportMetricsServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<(&str, &str)> = metrics
            .iter()
            .map(|m| (m.name.as_str(), m.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("x_packets", "1"),
                ("x_sessions", "1"),
                ("x_join_seconds", "s")
            ]
        );
        match &metrics[0].data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(
                    s.data_points[0].value,
                    Some(number_data_point::Value::AsDouble(7.0))
                );
                assert_eq!(s.data_points[0].start_time_unix_nano, 1_000_000_000_000);
            }
            other => panic!("{other:?}"),
        }
        match &metrics[2].data {
            Some(metric::Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!((p.count, p.bucket_counts.clone()), (2, vec![1, 0, 1]));
                assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
                assert_eq!(p.attributes[0].key, "role");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spans_carry_their_parent_and_times() {
        let t0 = UNIX_EPOCH + Duration::from_secs(5);
        let s = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "whep".into(),
            server: true,
            start: t0,
            end: t0 + Duration::from_millis(250),
            attributes: vec![("stream".into(), "a".into())],
        };
        let bytes = traces_request(&[s], &[("service.name", "t")]);
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.parent_span_id, vec![3; 8]);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            250_000_000
        );
        assert_eq!(span.kind, span::SpanKind::Server as i32);
    }
}
