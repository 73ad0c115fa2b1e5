//! HTTP between the gateways of a cluster: requests forwarded to a session's holder
//! (`front::forward`) and session replicas (`replication`). Plain HTTP, or HTTPS when the gateways
//! serve HTTPS themselves, trusting exactly the certificate they all serve (no CA, no name).

use std::net::SocketAddr;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use axum::http::{StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn tcp() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.enforce_http(false);
    connector
}

static CLIENT: LazyLock<Client<HttpConnector, Full<Bytes>>> = LazyLock::new(|| {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(tcp())
});

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Set when the gateways serve HTTPS themselves: forwarded requests go over HTTPS, and the owner
/// must present the very certificate this gateway serves (every gateway has the same one), so
/// no CA and no name is trusted, only that certificate and its key.
static TLS_CLIENT: OnceLock<HttpsClient> = OnceLock::new();

/// Forward over HTTPS to peers presenting `cert` (this gateway's own leaf certificate).
pub fn use_tls(cert: rustls_pki_types::CertificateDer<'static>) -> Result<(), String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(relay_shell::cluster_tls::pinned_server_verifier(cert))
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(tcp());
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let _ = TLS_CLIENT.set(client);
    Ok(())
}

/// "https" when the gateways talk HTTPS to each other, else "http".
pub fn scheme() -> &'static str {
    if TLS_CLIENT.get().is_some() {
        "https"
    } else {
        "http"
    }
}

/// Send `request` to another gateway, over HTTPS when the gateways serve it.
pub async fn request(
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
    request_to(request).await
}

async fn request_to(
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
    match TLS_CLIENT.get() {
        Some(tls) => tls.request(request).await,
        None => CLIENT.request(request).await,
    }
}

/// POST `body` to `path` on another gateway of the cluster (HTTPS when the gateways serve it):
/// the session replicas (`replication`). Returns the status.
pub async fn post(peer: SocketAddr, path: &str, body: Bytes) -> Result<StatusCode, String> {
    let scheme = scheme();
    let uri: Uri = format!("{scheme}://{peer}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let request = hyper::Request::post(uri)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("x-wish-forwarded", "1")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    request_to(request)
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}
