#![allow(dead_code)] // each target uses one of these functions
//! What every fuzz target runs, shared with the stable replay test
//! (`gateway/tests/fuzz_replay.rs`, which feeds it `fuzz/corpus/*` and `fuzz/regressions/*`).
//! Each function takes arbitrary bytes from the network's point of view and must neither panic
//! nor allocate beyond what its input justifies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The targets, by directory name under `fuzz/corpus/`.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("sdp", sdp),
    ("trickle_patch", trickle_patch),
    ("demux", demux),
    ("link_control", link_control),
    ("link_datagram", link_datagram),
    ("depacketize", depacketize),
    ("parameter_sets", parameter_sets),
    ("config_and_api", config_and_api),
];

/// SDP inspection of offers (`sdp_info`): m-lines, ufrag, msid rewriting.
pub fn sdp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = gateway::sdp_info::mlines(&text);
    assert!(lines.len() <= text.lines().count() + 1);
    for m in &lines {
        let _ = (m.is_media(), m.rejected(), m.rtx_for(96));
    }
    let _ = gateway::sdp_info::ice_ufrag(&text);
    let unified = gateway::sdp_info::unify_msid(&text, "stream");
    assert!(unified.len() <= text.len() * 4 + 1024);
}

/// A trickle/restart PATCH body and its If-Match header (`sdp_info::sdpfrag`, `ice_patch`).
pub fn trickle_patch(data: &[u8]) {
    let (header, body) = split_at_newline(data);
    let header = String::from_utf8_lossy(header);
    let body = String::from_utf8_lossy(body);
    let if_match = gateway::http::ice_patch::IfMatch::parse(Some(&header));
    if let Ok(frag) = gateway::sdp_info::sdpfrag(&body) {
        assert!(frag.candidates.len() <= body.lines().count());
        let old = vec!["old1".to_string()];
        let state = gateway::http::ice_patch::IceState {
            etag: "etag0",
            remote_ufrag: Some("live"),
            old_ufrags: &old,
        };
        let _ = gateway::http::ice_patch::decide(frag.ufrag.as_deref(), &if_match, state);
    }
}

/// A datagram at the UDP demux with one live session (first two bytes: the source port).
pub fn demux(data: &[u8]) {
    use gateway::demux::{Demux, DemuxUpdate, Route};
    let mut d = Demux::default();
    let route = Route {
        worker: 0,
        session: gateway::ids::SessionId::from_bytes([1; 16]),
    };
    d.apply(DemuxUpdate::Ufrag {
        ufrag: "fuzzufrag".into(),
        pwd: "fuzzpasswordfuzzpassword".into(),
        route,
        failures: None,
    });
    let now = Instant::now();
    for (i, chunk) in data.chunks(1500).enumerate() {
        let port = u16::from_be_bytes([chunk.first().copied().unwrap_or(0), i as u8]);
        let source = SocketAddr::from(([127, 0, 0, 1], port));
        let _ = d.route(now + Duration::from_millis(i as u64), source, chunk);
    }
    assert!(d.addrs() <= 8, "an unverified datagram bound an address");
}

/// The node-link control stream decoder, fed in pieces as a QUIC stream delivers it.
pub fn link_control(data: &[u8]) {
    let mut dec = relay::link::ControlDecoder::new();
    let mut out = Vec::new();
    let cut = data.first().map_or(1, |b| usize::from(*b).max(1));
    for chunk in data.chunks(cut) {
        if dec.decode(chunk, &mut out).is_err() {
            break;
        }
    }
    let _ = dec.finish();
    assert!(out.len() <= data.len());
}

/// A node-link media datagram.
pub fn link_datagram(data: &[u8]) {
    if let Ok(d) = relay::link::decode_datagram(data, Instant::now()) {
        let _ = d;
    }
}

/// The recorder's depacketizers (H264, H265, AV1): packets are length-prefixed (one byte).
pub fn depacketize(data: &[u8]) {
    use gateway::depacketize::{Assembler, VideoCodec};
    for codec in [VideoCodec::H264, VideoCodec::H265, VideoCodec::Av1] {
        let mut a = Assembler::new(codec);
        let now = Instant::now();
        let mut rest = data;
        let mut seq = 0u64;
        while let Some((&len, tail)) = rest.split_first() {
            let n = usize::from(len).min(tail.len());
            let (payload, next) = tail.split_at(n);
            rest = next;
            let p = relay::MediaPacket {
                seq,
                rtp_time: seq / 3,
                marker: len & 1 == 1,
                pt: 96,
                payload: payload.into(),
                keyframe_start: relay::is_keyframe_start(relay::Codec::H264, payload),
                received: now,
            };
            seq += 1;
            let units = a.push(&p);
            let bytes: usize = units.iter().map(|u| u.data.len()).sum();
            assert!(
                bytes <= data.len() * 2 + 64,
                "an access unit larger than its input"
            );
        }
        let _ = a.parameter_sets();
    }
    let mut inspector = relay::H264Inspector::new();
    for (i, chunk) in data.chunks(64).enumerate() {
        inspector.push(i as u64, chunk);
    }
    let units = relay::aggregation_units(data).take(data.len() + 1).count();
    assert!(units <= data.len());
}

/// SPS (H264, H265) and AV1 sequence header parsers behind the recorder's sample entries.
pub fn parameter_sets(data: &[u8]) {
    use gateway::depacketize::VideoCodec;
    use gateway::fmp4::TrackKind;
    let (a, b) = data.split_at(data.len() / 2);
    let (b, c) = b.split_at(b.len() / 2);
    let _ = TrackKind::video(VideoCodec::H264, &[a.to_vec(), b.to_vec()]);
    let _ = TrackKind::video(VideoCodec::H265, &[a.to_vec(), b.to_vec(), c.to_vec()]);
    let _ = TrackKind::video(VideoCodec::Av1, &[data.to_vec()]);
}

/// The TOML config file and the session/track API's JSON bodies.
pub fn config_and_api(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = toml::from_str::<gateway::config::Config>(&text);
    let _ = serde_json::from_slice::<gateway::http::api::TracksRequest>(data);
    let _ = serde_json::from_slice::<gateway::http::endpoint::LayerRequest>(data);
}

fn split_at_newline(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
