//! The middleware that times HTTP requests per route (`http_timing::HttpTiming` keeps the
//! histograms) and makes the request's arrival time and trace parent available to whatever it
//! creates (`join_metrics::REQUEST`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::http_timing::UNMATCHED;
use crate::join_metrics::{REQUEST, RequestContext};

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
