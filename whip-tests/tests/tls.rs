//! HTTPS: browsers only capture a camera on a secure origin, so the gateway serves its pages and
//! endpoints over rustls from PEM files (`--tls-cert`, `--tls-key`).

use anyhow::{Context, Result, ensure};
use whip_tests::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_endpoints_are_served_over_https() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;

    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let gw = tokio::task::spawn_blocking(move || {
        Gateway::start_with_args(&["--tls-cert", &c, "--tls-key", &k])
    })
    .await
    .context("start panicked")??;
    let port = gw.http_addr().port();

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes())?)
        .resolve("localhost", gw.http_addr())
        .build()?;
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await?;
    ensure!(
        health.status() == 200,
        "healthz over TLS: {}",
        health.status()
    );
    let page = client
        .get(format!("https://localhost:{port}/watch/x"))
        .send()
        .await?;
    ensure!(
        page.status() == 200 && page.text().await?.contains("<video"),
        "watch page over TLS"
    );
    let options = client
        .request(
            reqwest::Method::OPTIONS,
            format!("https://localhost:{port}/whip/x"),
        )
        .send()
        .await?;
    ensure!(
        options.headers().get("accept-post").is_some(),
        "WHIP OPTIONS over TLS"
    );

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    ensure!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP was answered on the TLS port"
    );

    // A bad key is refused at start-up with a clear message, not a panic.
    std::fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )?;
    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let bad = tokio::task::spawn_blocking(move || {
        Gateway::start_with_args(&["--tls-cert", &c, "--tls-key", &k])
    })
    .await?;
    ensure!(bad.is_err(), "a gateway with a broken key started");
    Ok(())
}
