//! The HTTP front: routes, CORS, body limits, and serving over plain TCP or rustls.

pub mod adapters;
pub mod api;
pub mod body;
pub mod calls;
pub mod datachannels;
pub mod draining;
pub mod endpoint;
pub mod forward;
pub mod ice_patch;
pub mod pages;
pub mod problem;
pub mod recording;
pub mod replicas;
pub mod resource;
pub mod timing;
pub mod turn;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::auth::{self, Action, Verdict};
use crate::node::Node;
use problem::Problem;

/// What every handler gets: the node.
pub type AppState = Arc<Node>;

/// The HTTP API: WHIP/WHEP, the session/track API, TURN credentials, stats, pages, with CORS and
/// timing.
pub fn router(node: Arc<Node>) -> Router {
    let mut router = Router::new();
    // The session/track API, where Calls apps look for it: under `/v1` and, as Orange Meets
    // calls it, without.
    for prefix in ["/v1", ""] {
        let at = |path: &str| format!("{prefix}/apps/{{app}}/sessions{path}");
        router = router
            .route(&at("/new"), post(api::new_session))
            .route(
                &at("/{id}"),
                get(api::get_session).delete(api::delete_session),
            )
            .route(&at("/{id}/tracks/new"), post(api::new_tracks))
            .route(&at("/{id}/renegotiate"), put(api::renegotiate))
            .route(&at("/{id}/tracks/close"), put(api::close_tracks))
            .route(&at("/{id}/tracks/update"), put(api::update_tracks))
            .route(
                &at("/{id}/datachannels/establish"),
                post(datachannels::establish),
            )
            .route(&at("/{id}/datachannels/new"), post(datachannels::new))
            .route(&at("/{id}/datachannels/update"), put(datachannels::update))
            .route(&at("/{id}/datachannels/close"), put(datachannels::close));
        let turn = |path: &str| format!("{prefix}/turn/keys/{{key}}/credentials{path}");
        router = router
            .route(
                &turn("/generate-ice-servers"),
                post(turn::generate_ice_servers),
            )
            .route(&turn("/generate"), post(turn::generate))
            .route(&turn("/{username}/revoke"), post(turn::revoke));
        router = router
            .route(
                &format!("{prefix}/apps/{{app}}/adapters/websocket/new"),
                post(adapters::new),
            )
            .route(
                &format!("{prefix}/apps/{{app}}/adapters/websocket/close"),
                post(adapters::close),
            );
    }
    router
        .route("/", get(pages::index))
        .route("/watch/{stream}", get(pages::watch))
        .route("/publish/{stream}", get(pages::publish))
        .route("/calls", get(pages::calls))
        .route("/assets/{file}", get(pages::asset))
        .route("/healthz", get(draining::healthz))
        .route("/v1/streams", get(pages::streams))
        .route("/v1/stats", get(pages::stats))
        .route("/metrics", get(pages::metrics))
        .route(
            "/v1/streams/{stream}/recording",
            post(recording::start).delete(recording::stop),
        )
        .route(
            "/whip/{stream}",
            post(endpoint::whip_post)
                .options(endpoint::options)
                .get(endpoint::probe)
                .head(endpoint::probe),
        )
        .route(
            "/whep/{stream}",
            post(endpoint::whep_post)
                .options(endpoint::options)
                .get(endpoint::probe)
                .head(endpoint::whep_head),
        )
        .route(
            "/whip/{stream}/{session}",
            get(resource::get)
                .patch(resource::patch)
                .delete(resource::delete)
                .options(resource::options),
        )
        .route(
            "/whep/{stream}/{session}",
            get(resource::get)
                .patch(resource::patch)
                .delete(resource::delete)
                .options(resource::options),
        )
        .route("/whep/{stream}/{session}/layer", post(endpoint::whep_layer))
        .fallback(|| async { Problem::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here",
            )
        })
        .layer(middleware::from_fn_with_state(
            node.config.max_body_bytes,
            body::read_first,
        ))
        // After the body limit: a batch of replicas is larger than any client's request.
        .route(crate::replication::PATH, post(replicas::take))
        .route_layer(middleware::from_fn(timing::tag_route))
        .layer(middleware::from_fn_with_state(
            node.clone(),
            draining::refuse_new_sessions,
        ))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn_with_state(node.clone(), calls::front))
        .layer(middleware::from_fn_with_state(
            node.clone(),
            forward::to_owner,
        ))
        .layer(middleware::from_fn_with_state(node.clone(), timing::time))
        .with_state(node)
}

/// Request headers a cross-origin page may send. `ETag` too: @eyevinn/whip-web-client puts the
/// session's ETag in an `ETag` request header on its trickle PATCHes (instead of `If-Match`); the
/// header means nothing to us, but a preflight that refused it would fail every such PATCH.
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match, If-None-Match, ETag";

/// Response headers a cross-origin page may read. `Access-Control-Allow-Methods` too:
/// @eyevinn/whip-web-client sends OPTIONS to the endpoint and trickles only if that header of the
/// answer lists PATCH.
const CORS_EXPOSE_HEADERS: &str =
    "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After, Access-Control-Allow-Methods";

/// CORS on every response, done here rather than by a layer that answers preflights itself,
/// because WHIP wants the OPTIONS answer to carry `Accept-Post` and the ICE-server `Link`s too.
async fn cors(request: Request, next: Next) -> Response {
    if calls::api_app(request.uri().path()).is_some() {
        return next.run(request).await; // per app, in `calls::front`
    }
    let mut response = next.run(request).await;
    grant_cors(
        response.headers_mut(),
        HeaderValue::from_static("*"),
        "GET, HEAD, POST, PATCH, PUT, DELETE, OPTIONS",
        CORS_EXPOSE_HEADERS,
    );
    response
}

/// The CORS headers that let a page on `origin` make these calls and read these headers.
pub(crate) fn grant_cors(
    h: &mut HeaderMap,
    origin: HeaderValue,
    methods: &'static str,
    expose: &'static str,
) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let fixed = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_ALLOW_HEADERS),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, expose),
        (header::ACCESS_CONTROL_MAX_AGE, "86400"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
}

/// The request body, refused with 413 past the configured limit.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )
    })
}

/// The request's media type: its `Content-Type` without parameters ("" when absent).
pub fn media_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
}

/// The body as UTF-8 text of the expected media type.
pub async fn read_text(
    headers: &HeaderMap,
    body: Body,
    expected: &str,
    limit: usize,
) -> Result<String, Problem> {
    if !media_type(headers).eq_ignore_ascii_case(expected) {
        return Err(Problem::unsupported_media_type(expected));
    }
    let bytes = read_body(body, limit).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Problem::bad_request("body is not UTF-8"))
}

/// The token of an `Authorization: Bearer` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    auth::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// 401/403 unless the request may do `action` on `stream`.
pub fn authorize(
    node: &Node,
    headers: &HeaderMap,
    action: Action,
    stream: &str,
) -> Result<(), Problem> {
    allowed(node.auth.check(bearer(headers), action, stream))
}

/// A token check's verdict as the HTTP answer: go on, 401 (with the challenge) or 403.
pub fn allowed(verdict: Verdict) -> Result<(), Problem> {
    match verdict {
        Verdict::Allowed => Ok(()),
        Verdict::Unauthenticated => Err(Problem::unauthorized()),
        Verdict::Forbidden => Err(Problem::forbidden()),
    }
}

/// The client's address as the TCP connection shows it (IPv4-mapped IPv6 as IPv4).
pub type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn peer_ip(peer: &Peer) -> Option<std::net::IpAddr> {
    Some(crate::udp::normalise(peer.as_ref()?.0.0).ip())
}

/// Admission of a session-creating WHIP/WHEP POST (`admission`): 429 or 503 with Retry-After
/// when refused. On success, run `create` and hand its session to the registry as pending.
pub async fn admitted<T, E>(
    node: &Node,
    peer: &Peer,
    create: impl std::future::Future<Output = Result<T, E>>,
    id_of: impl Fn(&T) -> crate::ids::SessionId,
) -> Result<T, Problem>
where
    Problem: From<E>,
{
    use crate::admission::Throttled;
    let Some(ip) = peer_ip(peer) else {
        return create.await.map_err(Problem::from);
    };
    if let Err(refusal) = node.registry.admit(std::time::Instant::now(), ip) {
        let (status, retry, detail) = match refusal {
            Throttled::Rate { retry_after } => (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                "too many new sessions from this address; slow down",
            ),
            Throttled::SourcePending { retry_after } => (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                "too many sessions from this address have not connected yet",
            ),
            Throttled::NodePending { retry_after } => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                retry_after,
                "too many sessions on this node have not connected yet",
            ),
        };
        tracing::info!(source = %ip, ?refusal, "session refused by admission");
        return Err(Problem::new(status, detail).retry_after(retry));
    }
    let created = create.await.map_err(Problem::from);
    match &created {
        Ok(c) => node.registry.pending(id_of(c), ip),
        Err(_) => node.registry.settled(ip),
    }
    created
}

/// One `Link` header per ICE server, values quoted (OBS reads only that form): the configured
/// ones, then, when TURN keys and URLs are configured (`[turn]`), the STUN URLs and each TURN URL
/// with fresh short-lived credentials (only for a client allowed to publish or play there:
/// `with_turn`, so that TURN credentials are not handed to anyone who asks).
pub fn ice_server_links(node: &Node, with_turn: bool) -> Vec<HeaderValue> {
    let link = |url: &str, creds: Option<(&str, &str)>| {
        let mut v = format!("<{url}>; rel=\"ice-server\"");
        if let Some((u, c)) = creds {
            v.push_str(&format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        HeaderValue::from_str(&v).ok()
    };
    let mut links: Vec<HeaderValue> = node
        .config
        .ice_servers
        .iter()
        .filter_map(|s| link(&s.url, s.username.as_deref().zip(s.credential.as_deref())))
        .collect();
    if let Some((urls, c)) = turn::link_credentials(node).filter(|_| with_turn) {
        links.extend(node.config.turn.stun().iter().filter_map(|u| link(u, None)));
        links.extend(
            urls.iter()
                .filter_map(|u| link(u, Some((&c.username, &c.password)))),
        );
    }
    links
}

/// Adds the `Link` headers of [`ice_server_links`] to `response`.
pub fn with_links(mut response: Response, node: &Node, with_turn: bool) -> Response {
    for link in ice_server_links(node, with_turn) {
        response.headers_mut().append(header::LINK, link);
    }
    response
}

/// A response with `status` and no body.
pub fn empty(status: axum::http::StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// A CORS preflight.
pub fn is_options(method: &Method) -> bool {
    method == Method::OPTIONS
}

#[cfg(test)]
mod cors_tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, header};
    use axum::middleware;
    use axum::routing::options;
    use tower::ServiceExt;

    /// What third-party browser clients need of the CORS headers (whip-tests/browser/
    /// thirdparty.test.mjs runs them): @eyevinn/whip-web-client reads Access-Control-Allow-Methods
    /// from its OPTIONS answer to decide on trickle, and sends an `ETag` request header on PATCH.
    #[tokio::test]
    async fn cors_lets_pages_read_allowed_methods_and_send_etag() {
        let app = Router::new()
            .route("/whip/{stream}", options(|| async { "" }))
            .layer(middleware::from_fn(super::cors));
        let r = app
            .oneshot(
                Request::builder()
                    .method(Method::OPTIONS)
                    .uri("/whip/live")
                    .header(header::ORIGIN, "http://127.0.0.1:8000")
                    .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
                    .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type,etag")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let h = |n| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        let list = |n| {
            h(n).split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        };
        assert!(list(header::ACCESS_CONTROL_ALLOW_METHODS).contains(&"patch".into()));
        for want in ["content-type", "etag", "if-match", "authorization"] {
            assert!(
                list(header::ACCESS_CONTROL_ALLOW_HEADERS).contains(&want.into()),
                "Allow-Headers lacks {want}"
            );
        }
        for want in ["access-control-allow-methods", "location", "etag", "link"] {
            assert!(
                list(header::ACCESS_CONTROL_EXPOSE_HEADERS).contains(&want.into()),
                "Expose-Headers lacks {want}"
            );
        }
    }
}
