//! ICE-TCP (RFC 6544) on the gateway, at the wire: its answers carry a passive TCP host candidate
//! beside the UDP one, and a TCP connection to it speaks RFC 4571 (a 16-bit length before each
//! STUN, DTLS or SRTP packet). A binding request signed with the session's ICE password is
//! answered on the same connection, with the connection's address as XOR-MAPPED-ADDRESS. What a
//! hostile client sends is dropped and counted: forged STUN naming a live session, garbage in
//! full-size frames, a connection that never proves a session (closed after 10 s). The other
//! session on the node keeps being answered throughout. A session that ends closes its
//! connections.
//!
//! Chromium publishing and playing over ICE-TCP alone: `whip-tests/browser/ice_tcp.test.mjs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use str0m::ice::{StunMessage, TransId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whip_tests::Gateway;
use whip_tests::signaling::{http_client, post_offer};

/// The gateway's side of one answered session.
struct Session {
    ufrag: String,
    pwd: String,
    /// The offer's own ufrag (the second half of USERNAME).
    remote_ufrag: String,
    tcp: SocketAddr,
    /// The WHIP resource, to end the session.
    resource: whip_tests::signaling::Resource,
}

fn fixture(name: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/offers")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("a={name}:")))
}

/// Publishes Chrome's offer to `stream` and reads what ICE-TCP needs from the answer.
async fn session(gw: &Gateway, stream: &str) -> Result<Session> {
    let offer = fixture("chrome-publish.sdp")?;
    let answer = post_offer(&http_client()?, &gw.whip_url(stream), None, &offer).await?;
    let (sdp, resource) = (answer.sdp, answer.resource);
    let tcp: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" tcp "))
        .collect();
    ensure!(tcp.len() == 1, "one passive TCP candidate expected: {sdp}");
    let fields: Vec<&str> = tcp[0].split_whitespace().collect();
    ensure!(
        tcp[0].contains(" typ host tcptype passive"),
        "not passive: {}",
        tcp[0]
    );
    let addr: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse()?;
    ensure!(
        sdp.lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains(" udp ")),
        "the UDP candidate is still there: {sdp}"
    );
    Ok(Session {
        ufrag: attribute(&sdp, "ice-ufrag").context("no ice-ufrag")?.into(),
        pwd: attribute(&sdp, "ice-pwd").context("no ice-pwd")?.into(),
        remote_ufrag: attribute(&offer, "ice-ufrag")
            .context("offer ufrag")?
            .into(),
        tcp: addr,
        resource,
    })
}

/// A binding request over RFC 4571 framing: signed with `pwd` or, when `None`, with a made-up HMAC.
fn framed_request(s: &Session, pwd: Option<&str>) -> Result<(Vec<u8>, TransId)> {
    let username = format!("{}:{}", s.ufrag, s.remote_ufrag);
    let id = TransId::new();
    let msg = StunMessage::binding_request(&username, id, true, 12345, 1_845_501_695, false);
    let mut buf = vec![0u8; 512];
    let n = match pwd {
        Some(p) => msg.to_bytes(Some(p.as_bytes()), &mut buf, hmac_sha1),
        None => msg.to_bytes(Some(b"wrong".as_slice()), &mut buf, |_, _| [7u8; 20]),
    }
    .map_err(|e| anyhow::anyhow!("serialising STUN: {e:?}"))?;
    let mut frame = (n as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf[..n]);
    Ok((frame, id))
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(&ctx.sign().as_ref()[..20]);
    out
}

/// The next RFC 4571 frame on `conn`, or `None` if it closed or nothing came in `wait`.
async fn read_frame(conn: &mut TcpStream, wait: Duration) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match tokio::time::timeout(wait, conn.read_exact(&mut len)).await {
        Err(_) => return Ok(None),
        Ok(Err(_)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
    tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut packet))
        .await
        .context("half a frame")??;
    Ok(Some(packet))
}

/// A success response to `id` that names `mapped` in XOR-MAPPED-ADDRESS.
fn check_success(packet: &[u8], id: TransId, mapped: SocketAddr) -> Result<()> {
    let msg = StunMessage::parse(packet).map_err(|e| anyhow::anyhow!("not STUN: {e:?}"))?;
    ensure!(
        msg.is_successful_binding_response(),
        "not a success: {msg:?}"
    );
    ensure!(msg.trans_id() == id, "another transaction");
    ensure!(
        msg.mapped_address() == Some(mapped),
        "mapped {:?}, connection from {mapped}",
        msg.mapped_address()
    );
    Ok(())
}

/// Sends `s`'s check signed with its password on `conn` and insists on a success for it.
async fn check_answered(conn: &mut TcpStream, s: &Session) -> Result<()> {
    let (frame, id) = framed_request(s, Some(&s.pwd))?;
    conn.write_all(&frame).await?;
    let packet = read_frame(conn, Duration::from_secs(5))
        .await?
        .context("no answer over TCP")?;
    check_success(&packet, id, conn.local_addr()?)
}

async fn ice_tcp_stats(gw: &Gateway) -> Result<serde_json::Value> {
    let stats = gw.stats().await?;
    stats
        .get("ice_tcp")
        .cloned()
        .context("no ice_tcp in /v1/stats")
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

#[tokio::test]
async fn a_check_signed_with_the_session_password_is_answered_over_tcp() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let s = session(&gw, "icetcp-answer").await?;
    let mut conn = TcpStream::connect(s.tcp).await?;
    for _ in 0..3 {
        check_answered(&mut conn, &s).await?;
    }
    let t = ice_tcp_stats(&gw).await?;
    ensure!(count(&t, "frames_received") >= 3, "{t}");
    ensure!(count(&t, "frames_sent") >= 3, "{t}");
    ensure!(count(&t, "connections") == 1, "{t}");

    // The session ends: its connection goes with it.
    ensure!(s.resource.delete().await? == 200, "DELETE");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut b = [0u8; 64];
        while let Ok(n) = conn.read(&mut b).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    ensure!(
        closed.is_ok(),
        "the ended session's connection is still open"
    );
    Ok(())
}

#[tokio::test]
async fn forged_checks_garbage_and_silent_connections_are_dropped_and_closed() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start).await??;
    let s = session(&gw, "icetcp-hostile").await?;

    // Forged STUN naming the live session, then garbage in a full-size frame and a short one.
    let mut hostile = TcpStream::connect(s.tcp).await?;
    for _ in 0..5 {
        hostile.write_all(&framed_request(&s, None)?.0).await?;
    }
    let mut garbage = vec![0xFF, 0xFF];
    garbage.extend(std::iter::repeat_n(0x17u8, 65_535));
    garbage.extend([0x00, 0x03, 1, 2, 3]);
    hostile.write_all(&garbage).await?;
    if let Some(p) = read_frame(&mut hostile, Duration::from_secs(1)).await? {
        bail!("a forged check or garbage got an answer: {p:?}");
    }

    // Meanwhile the session answers its real client on another connection.
    let mut real = TcpStream::connect(s.tcp).await?;
    check_answered(&mut real, &s)
        .await
        .context("the real client")?;

    let t = ice_tcp_stats(&gw).await?;
    ensure!(
        count(&t, "dropped") >= 7,
        "5 forged + 2 garbage frames: {t}"
    );

    // The hostile connection proved nothing: closed within the 10 s it is given (+ the tick).
    let closed = tokio::time::timeout(Duration::from_secs(14), async {
        let mut b = [0u8; 64];
        loop {
            match hostile.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ensure!(closed.is_ok(), "the unverified connection is still open");
    let t = ice_tcp_stats(&gw).await?;
    ensure!(count(&t, "refused") >= 1, "{t}");
    // The verified one stays, and is still answered.
    check_answered(&mut real, &s)
        .await
        .context("the real client was cut off")
}

#[tokio::test]
async fn no_ice_tcp_means_no_tcp_candidate() -> Result<()> {
    let gw = tokio::task::spawn_blocking(|| Gateway::start_with_args(&["--no-ice-tcp"])).await??;
    let offer = fixture("chrome-publish.sdp")?;
    let answer = post_offer(&http_client()?, &gw.whip_url("icetcp-off"), None, &offer).await?;
    ensure!(
        !answer
            .sdp
            .lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains(" tcp ")),
        "{}",
        answer.sdp
    );
    ensure!(gw.stats().await?.get("ice_tcp").is_none());
    Ok(())
}
