//! OTLP export, received by the test's own OTLP/HTTP receiver (an axum server decoding the
//! protobuf bodies with OpenTelemetry's generated messages): an origin gateway, a relay and an
//! edge gateway push metrics every 300 ms; a WHIP publisher sends to the origin, a WHEP viewer
//! with a W3C `traceparent` plays from the edge. The receiver must see the counters and
//! histograms under OpenTelemetry's names, the viewer's setup span under the viewer's own trace
//! and parent with its four phases, and the edge's cluster subscribe span.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use whip_tests::{MediaSource, PlayOptions, PublishOptions, WhipPublisher};

mod common;
use common::*;

/// What the receiver decoded: per service, metric name → latest value (sums and gauges: the
/// sum over series; histograms: the count), and every span.
#[derive(Default)]
struct Received {
    metrics: BTreeMap<(String, String), f64>,
    spans: Vec<(String, Span)>,
    bad_bodies: usize,
}

type Shared = Arc<Mutex<Received>>;

fn service(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

async fn metrics(State(r): State<Shared>, body: Bytes) -> &'static str {
    let Ok(req) = ExportMetricsServiceRequest::decode(body) else {
        r.lock().expect("lock").bad_bodies += 1;
        return "";
    };
    let mut r = r.lock().expect("lock");
    for rm in &req.resource_metrics {
        let svc = service(rm.resource.as_ref());
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let value = match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.iter().map(number).sum(),
                Some(metric::Data::Gauge(g)) => g.data_points.iter().map(number).sum(),
                Some(metric::Data::Histogram(h)) => {
                    h.data_points.iter().map(|p| p.count as f64).sum()
                }
                _ => f64::NAN,
            };
            r.metrics.insert((svc.clone(), m.name.clone()), value);
        }
    }
    ""
}

fn number(p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

async fn traces(State(r): State<Shared>, body: Bytes) -> &'static str {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        r.lock().expect("lock").bad_bodies += 1;
        return "";
    };
    let mut r = r.lock().expect("lock");
    for rs in &req.resource_spans {
        let svc = service(rs.resource.as_ref());
        for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            r.spans.push((svc.clone(), s.clone()));
        }
    }
    ""
}

async fn wait_until(what: &str, r: &Shared, ok: impl Fn(&Received) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if ok(&r.lock().expect("lock")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let r = r.lock().expect("lock");
            bail!(
                "{what}: not received; metrics {:?}; spans {:?}",
                r.metrics.keys().collect::<Vec<_>>(),
                r.spans
                    .iter()
                    .map(|(s, sp)| (s, &sp.name))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_a_relay_push_metrics_and_setup_spans_over_otlp() -> Result<()> {
    let received: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/metrics", post(metrics))
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let c = cluster_with_otlp(&endpoint).await?;
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(
        media.clone(),
        PublishOptions::new(c.gateways[0].whip_url("otlp")),
    )
    .await?;
    publisher
        .wait_for_frames(15, Duration::from_secs(10))
        .await?;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let opts = PlayOptions {
        duration: Duration::from_secs(2),
        traceparent: Some(format!("00-{trace}-{parent}-01")),
        ..PlayOptions::new(c.gateways[1].whep_url("otlp"))
    };
    let report = whip_tests::play(media.catalog(), opts).await?;
    ensure!(
        report.error.is_none() && report.video_frames > 10,
        "viewer: {report:?}"
    );

    let has = |svc: &'static str, name: &'static str, min: f64| {
        move |r: &Received| {
            r.metrics
                .get(&(svc.to_string(), name.to_string()))
                .is_some_and(|v| *v >= min)
        }
    };
    wait_until(
        "origin packets",
        &received,
        has("wish-gateway", "gateway_rtp_packets_received", 50.0),
    )
    .await?;
    wait_until(
        "edge join histogram",
        &received,
        has("wish-gateway", "gateway_join_seconds", 1.0),
    )
    .await?;
    wait_until(
        "relay forwarding",
        &received,
        has("wish-relay", "tree_datagrams_sent", 50.0),
    )
    .await?;
    wait_until(
        "relay hop histogram",
        &received,
        has("wish-relay", "tree_hop_duration_seconds", 50.0),
    )
    .await?;

    // The viewer's setup, under the viewer's trace and span.
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    let parent_bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&parent[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    wait_until("viewer join span", &received, |r| {
        r.spans
            .iter()
            .any(|(_, s)| s.name == "viewer join" && s.trace_id == trace_bytes)
    })
    .await?;
    wait_until("cluster subscribe span", &received, |r| {
        r.spans.iter().any(|(_, s)| s.name == "cluster subscribe")
    })
    .await?;
    let r = received.lock().expect("lock");
    ensure!(r.bad_bodies == 0, "{} bodies did not decode", r.bad_bodies);
    let join = r
        .spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "viewer join" && s.trace_id == trace_bytes)
        .context("viewer join")?;
    ensure!(
        join.parent_span_id == parent_bytes,
        "parent {:?}",
        join.parent_span_id
    );
    let phases: Vec<&Span> = r
        .spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == join.span_id)
        .collect();
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    ensure!(
        names == ["answer", "ice", "dtls", "first_packet"],
        "phases {names:?}"
    );
    for p in &phases {
        ensure!(
            p.start_time_unix_nano >= join.start_time_unix_nano
                && p.end_time_unix_nano <= join.end_time_unix_nano
                && p.start_time_unix_nano <= p.end_time_unix_nano,
            "phase {} outside its join",
            p.name
        );
    }
    let total_ms = (join.end_time_unix_nano - join.start_time_unix_nano) as f64 / 1e6;
    println!(
        "otlp: {} metrics, {} spans; viewer join {total_ms:.1} ms ({})",
        r.metrics.len(),
        r.spans.len(),
        phases
            .iter()
            .map(|p| format!(
                "{} {:.1}",
                p.name,
                (p.end_time_unix_nano - p.start_time_unix_nano) as f64 / 1e6
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(publisher);
    Ok(())
}

/// An origin, one edge and one relay, all pushing to `endpoint` every 300 ms.
async fn cluster_with_otlp(endpoint: &str) -> Result<Cluster> {
    let otlp = ["--otlp-endpoint", endpoint, "--otlp-interval-ms", "300"];
    cluster_with_node_args(1, 1, 0.0, &otlp, &otlp).await
}
