//! The cluster's DTLS identity (`--dtls-cert`/`--dtls-key`, `dtls_cert.rs`), the first piece of
//! one address for a cluster: gateways given the same PEM pair answer with the same
//! `a=fingerprint` (the certificate's SHA-256), so a client's DTLS handshake may complete on any
//! of them. Real handshakes: a str0m publisher (which checks the fingerprint) on one gateway and
//! a player on another. A gateway without the pair has its own; a bad pair stops the start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use whip_tests::signaling::{bare_video_offer, http_client, post_offer};
use whip_tests::{Gateway, MediaSource, PlayOptions, PublishOptions, WhipPublisher, play};

async fn start(args: Vec<String>) -> Result<Gateway> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gateway::start_with_args(&args)
    })
    .await
    .context("start panicked")?
}

/// The fingerprint a gateway answers a WHIP offer with.
async fn fingerprint(gw: &Gateway, stream: &str) -> Result<String> {
    let offer = bare_video_offer()?;
    let answer = post_offer(&http_client()?, &gw.whip_url(stream), None, &offer).await?;
    answer
        .sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
        .context("no fingerprint in the answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_given_the_cluster_pair_share_one_fingerprint_and_handshake_with_it() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = rcgen::CertificateParams::new(vec!["cluster".to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.path().join("dtls.crt"), dir.path().join("dtls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let pair = vec![
        "--dtls-cert".to_string(),
        cert_path.display().to_string(),
        "--dtls-key".to_string(),
        key_path.display().to_string(),
    ];
    let a = start(pair.clone()).await?;
    let b = start(pair.clone()).await?;
    let own = start(Vec::new()).await?;

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
    let want: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let want = format!("sha-256 {}", want.join(":"));
    let (fa, fb, fown) = (
        fingerprint(&a, "fa").await?,
        fingerprint(&b, "fb").await?,
        fingerprint(&own, "fo").await?,
    );
    ensure!(
        fa == want,
        "gateway a answers {fa}, the certificate is {want}"
    );
    ensure!(
        fb == want,
        "gateway b answers {fb}, the certificate is {want}"
    );
    ensure!(
        fown != want,
        "a gateway without the pair used the cluster's"
    );

    // The loaded key signs real handshakes: a publisher on each, a player on b (str0m checks
    // the fingerprint against the certificate the gateway presents).
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();
    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(a.whip_url("s"))).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let on_b = WhipPublisher::start(media, PublishOptions::new(b.whip_url("s"))).await?;
    on_b.wait_for_frames(10, Duration::from_secs(10)).await?;
    let opts = PlayOptions {
        duration: Duration::from_secs(2),
        ..PlayOptions::new(b.whep_url("s"))
    };
    let report = play(catalog, opts).await?;
    ensure!(
        report.whole_in_order && report.video_frames >= 20,
        "the player on b: {} frames, whole and in order: {} ({:?})",
        report.video_frames,
        report.whole_in_order,
        report.error
    );

    // A key that is not the certificate's stops the start, with the reason in the log.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    std::fs::write(&key_path, other.serialize_pem())?;
    let bad = start(pair).await;
    let err = format!(
        "{:#}",
        bad.err()
            .context("a gateway with a mismatched pair started")?
    );
    ensure!(
        err.contains("is not the certificate of the key"),
        "the refusal does not say why: {err}"
    );
    Ok(())
}
