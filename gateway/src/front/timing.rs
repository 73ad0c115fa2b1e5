//! How long HTTP requests take, per route and method (the route as the router matched it, e.g.
//! `/whep/{stream}`, so label sets are bounded by the route table), and the request's arrival
//! time and trace parent made available to whatever it creates (`join_metrics::REQUEST`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use relay_proto::histogram::{Histogram, HistogramSnapshot, JOIN_BUCKETS};

use super::AppState;
use crate::join_metrics::{REQUEST, RequestContext};

/// Route label of requests no route matched (scanners, typos): one series for all of them.
const UNMATCHED: &str = "unmatched";

/// Per (method, route): the durations.
#[derive(Debug, Default)]
pub struct HttpTiming {
    by_route: Mutex<BTreeMap<(String, String), Arc<Histogram>>>,
}

impl HttpTiming {
    fn histogram(&self, method: &str, route: &str) -> Arc<Histogram> {
        let mut map = match self.by_route.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((method.to_string(), route.to_string()))
            .or_insert_with(|| Arc::new(Histogram::new(JOIN_BUCKETS)))
            .clone()
    }

    /// (method, route, durations), sorted.
    pub fn snapshot(&self) -> Vec<(String, String, HistogramSnapshot)> {
        let map = match self.by_route.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|((m, r), h)| (m.clone(), r.clone(), h.snapshot()))
            .collect()
    }
}

/// The matched route, carried out on the response for [`time`] (which runs before routing).
#[derive(Clone)]
struct RouteTag(MatchedPath);

/// Inside the router (a route layer): tag the response with the route that served it.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(RouteTag(m));
    }
    response
}

/// Outermost: start the clock, run the request with its arrival time in scope, record it.
pub async fn time(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let context = RequestContext {
        started,
        parent: crate::trace_context::extract(request.headers()),
    };
    let response = REQUEST.scope(context, next.run(request)).await;
    let route = response
        .extensions()
        .get::<RouteTag>()
        .map(|t| t.0.as_str())
        .unwrap_or(UNMATCHED);
    // Only the methods the routes use: anything else would be a label an attacker chooses.
    let method = match method.as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method.as_str(),
        _ => "other",
    };
    node.http_timing
        .histogram(method, route)
        .observe(started.elapsed());
    response
}
