//! Calls' TURN credential API, against an independent TURN implementation: the gateway issues
//! credentials (`POST /v1/turn/keys/{key}/credentials/generate-ice-servers`) in the TURN REST API
//! scheme, Debian's coturn (`turnserver --use-auth-secret`, started here with the key's secret)
//! checks them, and coturn's own client (`turnutils_uclient`) allocates and relays with them over
//! UDP and TCP. Expired and forged credentials are refused by coturn; the API's status codes are
//! Calls'. The same client runs against the gateway's own TURN service over UDP, TCP and TLS.
//! `scripts/setup-coturn.sh` installs coturn; without it the coturn tests fail.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use whip_tests::Gateway;

const KEY: &str = "k1";
const SECRET: &str = "turn-key-secret-0123456789";

/// A port free for both UDP and TCP on 127.0.0.1, below the ephemeral range.
fn free_port() -> Result<u16> {
    for _ in 0..200 {
        let port = 10_000 + rand::random::<u16>() % 20_000;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port")
}

struct Coturn {
    child: Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    fn start() -> Result<Coturn> {
        let port = free_port()?;
        let relay_low = 30_000 + (rand::random::<u16>() % 100) * 20;
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1",
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
                "--realm=wish",
                "--allow-loopback-peers",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                &format!("--min-port={relay_low}"),
                &format!("--max-port={}", relay_low + 19),
                "--log-file=stdout",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting coturn's turnserver (scripts/setup-coturn.sh)")?;
        // It listens within a few milliseconds; a TCP connect says when.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Coturn { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("turnserver did not listen on {port}")
    }
}

/// coturn's client against the TURN server on `port`, relaying to itself through an allocation
/// (`-y`): (messages sent, received, lost), or the errors it printed.
fn uclient(port: u16, tcp: bool, username: &str, password: &str) -> Result<(u64, u64, u64)> {
    uclient_with(port, if tcp { &["-t"] } else { &[] }, username, password)
}

/// As [`uclient`], with more flags (`-t` TCP, `-s` Send indications instead of channels).
fn uclient_with(
    port: u16,
    flags: &[&str],
    username: &str,
    password: &str,
) -> Result<(u64, u64, u64)> {
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "turnutils_uclient"]);
    cmd.args(flags);
    let out = cmd
        .args(["-u", username, "-w", password, "-p", &port.to_string()])
        // -c: no RTCP allocation pair (EVEN-PORT's reservation, which browsers never ask for).
        .args([
            "-c",
            "-y",
            "-n",
            "20",
            "-m",
            "1",
            "-l",
            "120",
            "-z",
            "5",
            "127.0.0.1",
        ])
        .output()
        .context("running turnutils_uclient")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("Cannot complete Allocation") || text.contains("ERROR") {
        bail!(
            "uclient: {}",
            text.lines()
                .filter(|l| l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let number_after = |key: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|l| l.split(key).nth(1))
            .and_then(|rest| {
                rest.trim_start_matches('=')
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|n| n.parse().ok())
    };
    let sent = number_after("tot_send_msgs=").context("no tot_send_msgs")?;
    let received = number_after("tot_recv_msgs=").context("no tot_recv_msgs")?;
    let lost = number_after("Total lost packets ").context("no lost count")?;
    Ok((sent, received, lost))
}

fn gateway() -> Result<Gateway> {
    Gateway::start_with_args(&[
        "--turn-key",
        &format!("{KEY}:{SECRET}"),
        "--turn-url",
        "turn:127.0.0.1:3478?transport=udp",
        "--turn-url",
        "turn:127.0.0.1:3478?transport=tcp",
    ])
}

async fn post(g: &Gateway, path: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
    let mut req = whip_tests::signaling::http_client()?
        .post(format!("{}{path}", g.base_url()))
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

/// (username, credential) from `generate-ice-servers`.
async fn generate(g: &Gateway, ttl: u64) -> Result<(String, String, Value)> {
    let (status, body) = post(
        g,
        &format!("/v1/turn/keys/{KEY}/credentials/generate-ice-servers"),
        Some(SECRET),
        &format!("{{\"ttl\": {ttl}}}"),
    )
    .await?;
    ensure!(status == 201, "generate-ice-servers: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let turn = v["iceServers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["username"].is_string()))
        .context("no TURN entry")?;
    Ok((
        turn["username"].as_str().unwrap_or("").to_string(),
        turn["credential"].as_str().unwrap_or("").to_string(),
        v,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_api_answers_as_calls_does() -> Result<()> {
    let g = tokio::task::spawn_blocking(gateway).await??;
    let path = format!("/v1/turn/keys/{KEY}/credentials/generate-ice-servers");
    // Shape: a STUN entry (derived from the turn: URLs) and a TURN entry with credentials.
    let (user, cred, v) = generate(&g, 600).await?;
    let servers = v["iceServers"].as_array().context("iceServers array")?;
    ensure!(servers.len() == 2, "{v}");
    ensure!(
        servers[0]["urls"] == serde_json::json!(["stun:127.0.0.1:3478"]),
        "{v}"
    );
    ensure!(
        servers[1]["urls"].as_array().is_some_and(|u| u.len() == 2),
        "{v}"
    );
    ensure!(
        user.contains(&format!(":{KEY}:")) && !cred.is_empty(),
        "{v}"
    );
    // The older `generate`: one object.
    let (status, body) = post(
        &g,
        &format!("/v1/turn/keys/{KEY}/credentials/generate"),
        Some(SECRET),
        "",
    )
    .await?;
    ensure!(status == 201, "generate: {status} {body}");
    let old: Value = serde_json::from_str(&body)?;
    ensure!(
        old["iceServers"]["username"].is_string() && old["iceServers"]["urls"].is_array(),
        "{old}"
    );
    // Refusals.
    for (token, key, body, want) in [
        (None, KEY, "{}", 401),
        (Some("wrong-token-wrong-token"), KEY, "{}", 401),
        (Some(SECRET), "nope", "{}", 404),
        (Some(SECRET), KEY, "{not json", 400),
        (Some(SECRET), KEY, "{\"ttl\": 0}", 400),
        (Some(SECRET), KEY, "{\"ttl\": 999999}", 400),
    ] {
        let p = path.replace(KEY, key);
        let (status, text) = post(&g, &p, token, body).await?;
        ensure!(
            status == want,
            "{key} {body} with {token:?}: {status} {text}, want {want}"
        );
    }
    // Revoke: 204 for a username the key issued, 404 otherwise, 401 without the token.
    let revoke = |u: &str| format!("/v1/turn/keys/{KEY}/credentials/{u}/revoke");
    ensure!(post(&g, &revoke(&user), None, "").await?.0 == 401);
    ensure!(post(&g, &revoke(&user), Some(SECRET), "").await?.0 == 204);
    ensure!(post(&g, &revoke("someone-else"), Some(SECRET), "").await?.0 == 404);
    // WHIP answers carry the TURN servers with fresh credentials.
    let client = whip_tests::signaling::http_client()?;
    let r = client
        .request(reqwest::Method::OPTIONS, g.whip_url("turn"))
        .send()
        .await?;
    let links: Vec<String> = r
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    ensure!(
        links
            .iter()
            .any(|l| l.starts_with("<turn:127.0.0.1:3478?transport=udp>")
                && l.contains("username=\"")
                && l.contains("credential=\"")),
        "no TURN Link with credentials: {links:?}"
    );
    ensure!(
        links.iter().any(|l| l.starts_with("<stun:127.0.0.1:3478>")),
        "{links:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_relays_with_our_credentials_and_refuses_expired_ones() -> Result<()> {
    let g = tokio::task::spawn_blocking(gateway).await??;
    let coturn = Coturn::start()?;
    let (user, cred, _) = generate(&g, 600).await?;
    let (short_user, short_cred, _) = generate(&g, 1).await?;
    let coturn = std::sync::Arc::new(coturn);
    let c = coturn.clone();
    let results = tokio::task::spawn_blocking(move || -> Result<_> {
        let udp = uclient(c.port, false, &user, &cred)?;
        let tcp = uclient(c.port, true, &user, &cred)?;
        let forged = uclient(c.port, false, &user, "not-the-password");
        std::thread::sleep(Duration::from_millis(2200));
        let expired = uclient(c.port, false, &short_user, &short_cred);
        Ok((udp, tcp, forged, expired))
    })
    .await??;
    let (udp, tcp, forged, expired) = results;
    println!("coturn with our credentials: UDP (sent, received, lost) {udp:?}, TCP {tcp:?}");
    for (name, (sent, received, lost)) in [("UDP", udp), ("TCP", tcp)] {
        ensure!(
            sent >= 20 && received == sent && lost == 0,
            "{name}: {sent} sent, {received} received, {lost} lost"
        );
    }
    ensure!(
        forged.is_err(),
        "coturn accepted a wrong password: {forged:?}"
    );
    ensure!(
        expired.is_err(),
        "coturn accepted an expired credential: {expired:?}"
    );
    Ok(())
}

/// The `Link` headers of an OPTIONS on `url`, with `token` as bearer.
async fn option_links(url: &str, token: Option<&str>) -> Result<Vec<String>> {
    let mut req = whip_tests::signaling::http_client()?.request(reqwest::Method::OPTIONS, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    Ok(r.headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_go_only_to_clients_that_may_publish() -> Result<()> {
    let g = tokio::task::spawn_blocking(|| {
        Gateway::start_with_args(&[
            "--publish-token",
            "publish-token-0123",
            "--turn-key",
            &format!("{KEY}:{SECRET}"),
            "--turn-url",
            "turn:127.0.0.1:3478?transport=udp",
        ])
    })
    .await??;
    let has_turn = |links: &[String]| links.iter().any(|l| l.contains("credential=\""));
    let anonymous = option_links(&g.whip_url("cam"), None).await?;
    ensure!(
        !has_turn(&anonymous),
        "TURN credentials for anyone: {anonymous:?}"
    );
    let wrong = option_links(&g.whip_url("cam"), Some("not-a-token")).await?;
    ensure!(
        !has_turn(&wrong),
        "TURN credentials for a wrong token: {wrong:?}"
    );
    let publisher = option_links(&g.whip_url("cam"), Some("publish-token-0123")).await?;
    ensure!(
        has_turn(&publisher),
        "no TURN credentials for the publisher: {publisher:?}"
    );
    Ok(())
}

/// A gateway with the test's TURN key and `args` (its TURN listeners and URLs).
async fn our_turn(args: &[&str]) -> Result<Gateway> {
    let mut all = vec!["--turn-key".to_string(), format!("{KEY}:{SECRET}")];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        Gateway::start_with_args(&all.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await?
}

/// The gateway's own TURN service, with coturn's client as the independent implementation:
/// allocations with the API's credentials relay every message; wrong and expired credentials
/// are refused; a peer outside the allowed networks is refused (403) and nothing is sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_turn_server_relays_for_coturns_client_and_refuses_strangers() -> Result<()> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let url = format!("turn:127.0.0.1:{port}?transport=udp");
    let g = our_turn(&[
        "--turn-url",
        &url,
        "--turn-listen",
        &listen,
        "--turn-listen-tcp",
        &listen,
    ])
    .await?;
    let (user, cred, _) = generate(&g, 600).await?;
    let (short_user, short_cred, _) = generate(&g, 1).await?;
    let (relayed, by_send, over_tcp, forged, expired, outside) =
        tokio::task::spawn_blocking(move || {
            let relayed = uclient(port, false, &user, &cred);
            let by_send = uclient_with(port, &["-s"], &user, &cred);
            let over_tcp = uclient(port, true, &user, &cred);
            let forged = uclient(port, false, &user, "not-the-password");
            // A peer in a network nobody allowed: CreatePermission must fail.
            let outside = Command::new("timeout")
                .args([
                    "20",
                    "turnutils_uclient",
                    "-u",
                    &user,
                    "-w",
                    &cred,
                    "-p",
                    &port.to_string(),
                ])
                .args([
                    "-c",
                    "-e",
                    "10.255.255.1",
                    "-n",
                    "3",
                    "-m",
                    "1",
                    "127.0.0.1",
                ])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                });
            std::thread::sleep(Duration::from_millis(2200));
            let expired = uclient(port, false, &short_user, &short_cred);
            (relayed, by_send, over_tcp, forged, expired, outside)
        })
        .await?;
    let (sent, received, lost) = relayed?;
    println!(
        "our TURN over UDP with coturn's client: sent {sent}, received {received}, lost {lost}"
    );
    ensure!(
        sent >= 20 && received == sent && lost == 0,
        "{sent} sent, {received} received, {lost} lost"
    );
    let (sent, received, lost) = by_send?;
    ensure!(
        sent >= 20 && received == sent && lost == 0,
        "Send/Data indications: {sent} sent, {received} received, {lost} lost"
    );
    let (sent, received, lost) = over_tcp?;
    ensure!(
        sent >= 20 && received == sent && lost == 0,
        "over TCP: {sent} sent, {received} received, {lost} lost"
    );
    ensure!(forged.is_err(), "a wrong password was accepted: {forged:?}");
    ensure!(
        expired.is_err(),
        "an expired credential was accepted: {expired:?}"
    );
    let outside = outside?;
    ensure!(
        outside.contains("403") || outside.contains("Forbidden"),
        "a peer outside the allowed networks was not refused: {}",
        outside
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    Ok(())
}

/// A self-signed certificate for `localhost`, written to `dir`: (certificate path, key path, the
/// certificate as DER for a client's roots).
fn self_signed(dir: &std::path::Path) -> Result<(String, String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("turn-cert.pem"), dir.join("turn-key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((
        cert_path.display().to_string(),
        key_path.display().to_string(),
        cert.der().to_vec(),
    ))
}

/// A STUN Binding request (no attributes) with transaction id `txid`.
fn binding_request(txid: [u8; 12]) -> Vec<u8> {
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&txid);
    request
}

/// A STUN Binding request over TLS to `port` with `version` and `alpn` offered (none: no ALPN),
/// the server checked against `root` as `localhost`: (the TLS version and ALPN agreed, the
/// answer's message type).
fn binding_over_tls(
    port: u16,
    root: &[u8],
    version: &'static rustls::SupportedProtocolVersion,
    alpn: Option<&[u8]>,
) -> Result<(rustls::ProtocolVersion, Option<Vec<u8>>, u16)> {
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root.to_vec()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let txid: [u8; 12] = rand::random();
    tls.write_all(&binding_request(txid))?;
    tls.flush()?;
    let mut header = [0u8; 20];
    tls.read_exact(&mut header)?;
    ensure!(header[8..20] == txid, "an answer to another transaction");
    let agreed = tls.conn.protocol_version().context("no TLS version")?;
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((agreed, alpn, u16::from_be_bytes([header[0], header[1]])))
}

/// The gateway's own TURN service over TLS (`turns:`), with coturn's client over TCP + TLS
/// (`-t -S`): an allocation relays every message, a wrong password is refused; TLS 1.2 and 1.3
/// are served with `stun.turn` or no ALPN offered; a client that speaks no TLS fails its handshake,
/// is counted, and the listener serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_turn_server_relays_over_tls() -> Result<()> {
    let (port, tls_port) = (free_port()?, free_port()?);
    let dir = tempfile::tempdir()?;
    let (cert, key, der) = self_signed(dir.path())?;
    let g = our_turn(&[
        "--turn-url",
        &format!("turns:127.0.0.1:{tls_port}?transport=tcp"),
        "--turn-listen",
        &format!("127.0.0.1:{port}"),
        "--turn-listen-tls",
        &format!("127.0.0.1:{tls_port}"),
        "--turn-tls-cert",
        &cert,
        "--turn-tls-key",
        &key,
    ])
    .await?;
    let (user, cred, _) = generate(&g, 600).await?;
    let (plain, handshakes, relayed, forged) = tokio::task::spawn_blocking(move || {
        // A STUN Binding in the clear where TLS is expected: the handshake fails.
        let plain = std::net::TcpStream::connect(("127.0.0.1", tls_port)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(&binding_request([7; 12]))?;
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            Ok(answer)
        });
        let mut handshakes = Vec::new();
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            for alpn in [None, Some(&b"stun.turn"[..])] {
                handshakes.push((
                    version.version,
                    alpn.is_some(),
                    binding_over_tls(tls_port, &der, version, alpn),
                ));
            }
        }
        let relayed = uclient_with(tls_port, &["-t", "-S"], &user, &cred);
        let forged = uclient_with(tls_port, &["-t", "-S"], &user, "not-the-password");
        (plain, handshakes, relayed, forged)
    })
    .await?;
    let plain = plain?;
    ensure!(
        !plain.starts_with(&[0x01, 0x01]),
        "a cleartext Binding was answered on the TLS port"
    );
    for (version, offered, result) in handshakes {
        let (agreed, alpn, kind) =
            result.with_context(|| format!("{version:?}, ALPN offered: {offered}"))?;
        ensure!(agreed == version, "asked for {version:?}, got {agreed:?}");
        ensure!(
            alpn.as_deref() == offered.then_some(&b"stun.turn"[..]),
            "{version:?}: ALPN {alpn:?}"
        );
        ensure!(
            kind == 0x0101,
            "{version:?}: a Binding answered with {kind:#06x}"
        );
    }
    let (sent, received, lost) = relayed?;
    println!(
        "our TURN over TLS with coturn's client: sent {sent}, received {received}, lost {lost}"
    );
    ensure!(
        sent >= 20 && received == sent && lost == 0,
        "over TLS: {sent} sent, {received} received, {lost} lost"
    );
    ensure!(
        forged.is_err(),
        "a wrong password was accepted over TLS: {forged:?}"
    );
    let failures = g.stats().await?["turn_tls_handshake_failures"].as_u64();
    ensure!(
        failures.is_some_and(|n| n >= 1),
        "the cleartext client's failed handshake was not counted: {failures:?}"
    );
    Ok(())
}
