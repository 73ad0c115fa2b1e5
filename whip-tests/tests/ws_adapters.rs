//! Issue 12: Calls' WebSocket adapters against a service of the test's own, a WebSocket server on
//! loopback (so the gateway runs with `--adapters-allow-private`; without it, the same endpoint
//! is refused). Egress: a WHIP publisher's Opus audio (the fixture's 440 Hz tone) reaches the
//! service as 48 kHz stereo PCM in Calls' protobuf `Packet`s, 20 ms each. Ingest: the service
//! sends two seconds of a tone at once (Calls' buffer mode); a WebRTC client pulls the adapter's
//! track by `(sessionId, trackName)` and decodes the tone, paced at real time. The protobuf
//! and Opus here are the test's own (hand-encoded fields, opus-rs), not the gateway's code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Event, Rtc};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use whip_tests::rtc_loop::RtcLoop;
use whip_tests::signaling::{ApiTrack, http_client, post_api_offer};
use whip_tests::{Gateway, MediaSource, PublishOptions, WhipPublisher};

const APP: &str = "ws";
const SECRET: &str = "0123456789abcdef0123";
/// 20 ms of 48 kHz stereo s16le.
const FRAME_BYTES: usize = 3840;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `Packet { sequenceNumber = 1; timestamp = 2; payload = 5 }`, encoded field by field.
fn packet(seq: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08];
    varint(&mut out, seq.into());
    out.push(0x10);
    varint(&mut out, ts.into());
    out.push(0x2a);
    varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// The payload (field 5) of a `Packet`, reading only what this test's gateway sends.
fn payload_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    let read = |at: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while at < bytes.len() {
        let key = read(&mut at)?;
        match key & 7 {
            0 => {
                read(&mut at)?;
            }
            2 => {
                let len = read(&mut at)? as usize;
                let value = bytes.get(at..at + len)?;
                at += len;
                if key >> 3 == 5 {
                    return Some(value.to_vec());
                }
            }
            _ => return None,
        }
    }
    None
}

fn rms(pcm: &[u8]) -> f64 {
    let n = pcm.len() / 2;
    let sum: f64 = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
        .sum();
    (sum / n.max(1) as f64).sqrt()
}

/// `ms` of a 440 Hz tone, 16000 peak, stereo s16le.
fn tone(ms: usize) -> Vec<u8> {
    let n = 48 * ms;
    let mut out = Vec::with_capacity(n * 4);
    for i in 0..n {
        let v = ((i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 16000.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

async fn call(c: &reqwest::Client, gw: &Gateway, path: &str, body: Value) -> Result<(u16, Value)> {
    let r = c
        .post(format!(
            "{}/v1/apps/{APP}/adapters/websocket/{path}",
            gw.base_url()
        ))
        .bearer_auth(SECRET)
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((
        status,
        serde_json::from_str(&r.text().await?).unwrap_or(Value::Null),
    ))
}

/// `adapters/websocket/close` of one adapter.
async fn close(c: &reqwest::Client, gw: &Gateway, adapter: &str) -> Result<(u16, Value)> {
    call(c, gw, "close", json!({"tracks": [{"adapterId": adapter}]})).await
}

async fn start(args: &'static [&'static str]) -> Result<Gateway> {
    tokio::task::spawn_blocking(move || {
        let app = format!("{APP}:{SECRET}");
        let mut all = vec!["--app", app.as_str()];
        all.extend_from_slice(args);
        Gateway::start_with_args(&all)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_sends_pcm_and_ingest_publishes_a_track() -> Result<()> {
    let gw = start(&["--adapters-allow-private"]).await?;
    let c = http_client()?;

    // Egress: the publisher's audio to the service, as PCM.
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let publisher = WhipPublisher::start(media, PublishOptions::new(gw.whip_url("talk"))).await?;
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;
    let sid = publisher.session_id().context("session id")?;
    let service = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/egress", service.local_addr()?);
    let received = tokio::spawn(async move {
        let (tcp, _) = service.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        let mut payloads = Vec::new();
        let until = Instant::now() + Duration::from_secs(3);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until.into(), ws.next()).await {
            if let Message::Binary(b) = m {
                payloads.push(payload_of(&b).context("not a Packet")?);
            }
        }
        // The service stays connected: the adapter lives until it is closed (or this goes).
        anyhow::Ok((payloads, ws))
    });
    let (status, v) = call(
        &c,
        &gw,
        "new",
        json!({"tracks": [{"location": "remote", "sessionId": sid, "trackName": "audio",
                           "endpoint": url, "outputCodec": "pcm", "mode": "stream"}]}),
    )
    .await?;
    ensure!(status == 200, "egress: {status} {v}");
    let egress_id = v["tracks"][0]["adapterId"]
        .as_str()
        .context("adapterId")?
        .to_owned();
    let (payloads, _service_side) = received.await??;
    println!("egress: {} packets in 3 s", payloads.len());
    ensure!(
        payloads.len() >= 100,
        "{} PCM packets in 3 s",
        payloads.len()
    );
    ensure!(
        payloads.iter().all(|p| p.len() == FRAME_BYTES),
        "packet sizes {:?}",
        payloads.iter().map(Vec::len).take(5).collect::<Vec<_>>()
    );
    let level = rms(&payloads[payloads.len() / 2..].concat());
    ensure!(level > 1000.0, "the fixture's tone is missing: rms {level}");
    let (status, v) = close(&c, &gw, &egress_id).await?;
    ensure!(
        status == 200 && v["tracks"][0]["bytesProcessed"].as_u64() > Some(0),
        "close: {status} {v}"
    );
    let (status, v) = close(&c, &gw, &egress_id).await?;
    ensure!(
        status == 503 && v["tracks"][0]["errorCode"] == "adapter_not_found",
        "close again: {status} {v}"
    );

    // Ingest: two seconds of tone at once; a WebRTC client pulls the track and hears it.
    let service = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ingest", service.local_addr()?);
    let (done_tx, mut done) = watch::channel(false);
    let sender = tokio::spawn(async move {
        let (tcp, _) = service.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        for (i, chunk) in tone(2000).chunks(5 * FRAME_BYTES).enumerate() {
            ws.send(Message::Binary(
                packet(i as u32, (i * 4800) as u32, chunk).into(),
            ))
            .await?;
        }
        let _ = done.changed().await;
        anyhow::Ok(())
    });
    let (status, v) = call(
        &c,
        &gw,
        "new",
        json!({"tracks": [{"location": "local", "trackName": "tts", "endpoint": url,
                           "inputCodec": "pcm", "mode": "buffer"}]}),
    )
    .await?;
    ensure!(status == 200, "ingest: {status} {v}");
    let session = v["tracks"][0]["sessionId"]
        .as_str()
        .context("sessionId")?
        .to_owned();
    let ingest_id = v["tracks"][0]["adapterId"]
        .as_str()
        .context("adapterId")?
        .to_owned();

    let rtc = Rtc::builder().build(Instant::now());
    let mut lp = RtcLoop::bind(rtc, "127.0.0.1:0".parse()?).await?;
    let mut api = lp.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let track = ApiTrack {
        session_id: session.clone(),
        track_name: "tts".into(),
        preferred_rid: None,
    };
    let answer = post_api_offer(
        &c,
        &format!("{}/v1/apps/{APP}", gw.base_url()),
        Some(SECRET),
        &offer.to_sdp_string(),
        &track,
        &mid.to_string(),
    )
    .await?;
    lp.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp)?)?;
    let (_stop_tx, mut stop) = watch::channel(false);
    let mut decoder = opus_rs::OpusDecoder::new(48_000, 2).map_err(anyhow::Error::msg)?;
    let mut pcm = Vec::new();
    let mut frames = 0;
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        lp.wait(Some(until), &mut stop).await?;
        lp.drain(&mut events).await?;
        for e in events.drain(..) {
            if let Event::MediaData(d) = e {
                frames += 1;
                let mut out = vec![0f32; 5760 * 2];
                let n = decoder
                    .decode(&d.data, 5760, &mut out)
                    .map_err(anyhow::Error::msg)?;
                for s in &out[..n * 2] {
                    pcm.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
                }
            }
        }
    }
    println!("ingest: {frames} Opus frames pulled");
    ensure!(
        frames >= 80,
        "only {frames} of the 100 frames in 2 s of tone"
    );
    let level = rms(&pcm[pcm.len() / 4..pcm.len() / 2]);
    ensure!(level > 5000.0, "the service's tone is missing: rms {level}");
    let (status, v) = close(&c, &gw, &ingest_id).await?;
    ensure!(status == 200, "close ingest: {status} {v}");
    ensure!(
        v["tracks"][0]["bytesProcessed"].as_u64() == Some(2000 * 48 * 4),
        "bytes: {v}"
    );
    let _ = done_tx.send(true);
    sender.await??;
    publisher.stop().await?;
    Ok(())
}

/// What an app gets wrong, and what a deployment refuses: one item's `errorCode` each, 503
/// when no item succeeded, 406 for a request with too many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_calls_error_codes() -> Result<()> {
    let gw = start(&[]).await?;
    let c = http_client()?;
    let closed = TcpListener::bind("127.0.0.1:0").await?;
    let loopback = format!("ws://{}/x", closed.local_addr()?);
    let cases = [
        (
            json!({"location": "local", "trackName": "t", "endpoint": loopback}),
            "websocket_localhost_not_allowed",
        ),
        (
            json!({"location": "local", "trackName": "t", "endpoint": "http://example.com/"}),
            "invalid_params",
        ),
        (
            json!({"location": "remote", "sessionId": "00000000000000000000000000000000",
                "trackName": "audio", "endpoint": "wss://example.com/"}),
            "not_found_track_error",
        ),
        (
            json!({"location": "up", "endpoint": "wss://example.com/"}),
            "invalid_params",
        ),
    ];
    for (item, code) in cases {
        let (status, v) = call(&c, &gw, "new", json!({ "tracks": [item] })).await?;
        ensure!(
            status == 503 && v["tracks"][0]["errorCode"] == code,
            "{item}: {status} {v}"
        );
    }
    let five: Vec<Value> = (0..5).map(|_| json!({"adapterId": "x"})).collect();
    let (status, v) = call(&c, &gw, "close", json!({ "tracks": five })).await?;
    ensure!(
        status == 406 && v["errorCode"] == "invalid_params",
        "{status} {v}"
    );
    drop(closed);
    Ok(())
}
