//! OTLP/HTTP push: every interval, the node's metrics (gathered by the same function `/metrics`
//! uses) to `{endpoint}/v1/metrics`, and the spans finished since to `{endpoint}/v1/traces`, as
//! protobuf (`relay_shell::otlp`). Off unless an endpoint is configured. A collector that is down costs
//! a logged warning per failure streak, never a blocked caller: spans wait in a bounded queue and
//! are dropped (counted) when it is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::otlp::{SpanRecord, metrics_request, traces_request};
use relay_proto::metrics::Exposition;

/// An `Instant` as wall-clock time, through one anchor taken at the first call: spans are
/// built after the fact from the instants code recorded, and OTLP wants Unix times.
pub fn wall_time(t: std::time::Instant) -> SystemTime {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, SystemTime)> =
        std::sync::OnceLock::new();
    let (i, w) = *ANCHOR.get_or_init(|| (std::time::Instant::now(), SystemTime::now()));
    if t >= i { w + (t - i) } else { w - (i - t) }
}

/// Spans waiting for the next push at most; beyond, new ones are dropped.
const SPAN_QUEUE: usize = 4096;
/// A push that takes longer is abandoned (the next one carries the totals anyway).
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how often [`run`] pushes.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://otel-collector:4318`.
    pub endpoint: String,
    /// Time between pushes.
    pub interval: Duration,
    /// `service.name` of the resource.
    pub service: String,
    /// `service.instance.id` of the resource.
    pub instance: String,
}

/// Where finished spans go. Cloned freely; never blocks.
#[derive(Debug, Clone)]
pub struct SpanSink {
    tx: Option<mpsc::Sender<SpanRecord>>,
    dropped: Arc<AtomicU64>,
}

impl SpanSink {
    /// A sink that drops everything (no endpoint configured).
    pub fn disabled() -> SpanSink {
        SpanSink {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// False for a [`SpanSink::disabled`] sink, so callers can skip building spans.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a finished span for the next push without waiting; when the queue is full the span is dropped
    /// and counted. A disabled sink ignores it.
    pub fn send(&self, span: SpanRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Gathers the node's metrics for one push (the same function `/metrics` uses).
pub type Gather = Arc<dyn Fn() -> Exposition + Send + Sync>;

/// The spans' queue: a sink for the code that finishes spans, the receiving end for [`run`]
/// (made first, so that what produces spans can exist before what gathers metrics does).
pub fn span_queue() -> (SpanSink, SpanQueue) {
    let (tx, rx) = mpsc::channel(SPAN_QUEUE);
    let sink = SpanSink {
        tx: Some(tx),
        dropped: Arc::default(),
    };
    (sink, SpanQueue(rx))
}

/// Receiving end of [`span_queue`].
#[derive(Debug)]
pub struct SpanQueue(mpsc::Receiver<SpanRecord>);

impl SpanQueue {
    /// Every span queued now.
    pub fn drain(&mut self) -> Vec<SpanRecord> {
        let mut spans = Vec::new();
        while let Ok(s) = self.0.try_recv() {
            spans.push(s);
        }
        spans
    }
}

/// The pusher (spawn it); it pushes once more when `shutdown` fires, then ends.
pub async fn run(
    config: OtlpConfig,
    gather: Gather,
    mut spans: SpanQueue,
    shutdown: CancellationToken,
) {
    // reqwest is built without a default crypto provider; an https endpoint needs one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(PUSH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "OTLP: no HTTP client; export disabled");
            return;
        }
    };
    let base = config.endpoint.trim_end_matches('/').to_string();
    let resource = [
        ("service.name", config.service.as_str()),
        ("service.instance.id", config.instance.as_str()),
    ];
    let started = SystemTime::now();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let body = metrics_request(&gather(), &resource, started, SystemTime::now());
        let mut ok = post(&client, &format!("{base}/v1/metrics"), body).await;
        let batch = spans.drain();
        if !batch.is_empty() {
            let body = traces_request(&batch, &resource);
            ok &= post(&client, &format!("{base}/v1/traces"), body).await;
        }
        match (ok, failing) {
            (false, false) => {
                tracing::warn!(endpoint = %base, "OTLP export failing (metrics or spans dropped)")
            }
            (true, true) => tracing::info!(endpoint = %base, "OTLP export working again"),
            _ => {}
        }
        failing = !ok;
        if last {
            break;
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    let sent = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::debug!(url, status = %r.status(), "OTLP push refused");
            false
        }
        Err(e) => {
            tracing::debug!(url, error = %e, "OTLP push failed");
            false
        }
    }
}
