//! Replays every fuzz corpus and regression input (`fuzz/corpus/<target>/*`,
//! `fuzz/regressions/<target>/*`) through the same harness the cargo-fuzz targets run, on the
//! stable toolchain, so CI catches a parser that starts panicking on an input fuzzing once
//! found or kept. Fuzzing itself: `FUZZING.md`.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    for (target, run) in harness::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(data) = std::fs::read(&path) else {
                    continue;
                };
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target}: {} panics", path.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no corpus for fuzz target {target}");
        ran += inputs;
    }
    println!("{ran} inputs replayed");
}

/// Writes one seed input: `fuzz/corpus/<target>/<name>`.
fn put(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("seed");
}

/// Writes the seed corpora (valid inputs each target starts from) into `fuzz/corpus/`. Run by
/// hand after a format change: `cargo test -p gateway --test fuzz_replay -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpora() {
    use std::sync::Arc;
    // A WebSocket adapter's PCM message, one with fields a newer service may add.
    let pcm = gateway::adapters::packet::Packet {
        sequence_number: 1,
        timestamp: 960,
        payload: (0..=255u8).cycle().take(3840).collect(),
    };
    put("adapter_packet", "pcm-frame", &pcm.encode());
    let mut unknown = vec![0x18, 0x05, 0x25, 0, 0, 0, 0];
    unknown.extend(pcm.encode());
    put("adapter_packet", "unknown-fields", &unknown);
    // TURN: an Allocate (what every client sends first) and a ChannelData message.
    use gateway::turn::message::{Builder, Class, attr};
    let allocate = Builder::new(gateway::turn::message::ALLOCATE, Class::Request, [3; 12])
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::LIFETIME, &600u32.to_be_bytes())
        .finish();
    put("turn_server", "allocate", &allocate);
    put(
        "turn_server",
        "channel-data",
        &gateway::turn::message::channel_data(0x4001, b"media"),
    );
    let offers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../whip-tests/fixtures/offers");
    for name in [
        "obs30-h264.sdp",
        "obs32-simulcast-h264.sdp",
        "chrome-whep-recvonly.sdp",
        "firefox-publish.sdp",
        "ffmpeg8-h264-opus.sdp",
        "player-whep-datachannel.sdp",
    ] {
        let sdp = std::fs::read(offers.join(name)).expect("fixture");
        put("sdp", name, &sdp);
        put(
            "config_and_api",
            &format!("{name}.json"),
            &serde_json::to_vec(&serde_json::json!({
                "sessionDescription": {"type": "offer", "sdp": String::from_utf8_lossy(&sdp)},
                "tracks": [{"location": "local", "mid": "0", "trackName": "a"}]
            }))
            .expect("json"),
        );
    }
    put("config_and_api", "gateway.toml", b"max_sessions = 10\nconnect_timeout = 5\n[limits]\npending = 3\n[[tokens]]\ntoken = \"abcdefgh12\"\nplay = [\"live-*\"]\n");
    put(
        "config_and_api",
        "layer.json",
        br#"{"mediaId":"1","encodingId":"h"}"#,
    );
    put("trickle_patch", "trickle", b"\"etag0\"\na=ice-ufrag:live\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n");
    put(
        "trickle_patch",
        "restart",
        b"*\na=ice-ufrag:new1\r\na=ice-pwd:0123456789abcdefghijkl\r\n",
    );
    put(
        "trickle_patch",
        "list",
        b"W/\"x\", \"etag0\"\na=ice-ufrag:old1\r\na=candidate:2 1 udp 1 ::1 9 typ host\r\n",
    );
    // STUN: a binding request naming the harness's session, with the right integrity.
    let stun = str0m::ice::StunMessage::binding_request(
        "fuzzufrag:peer",
        str0m::ice::TransId::new(),
        true,
        1,
        1,
        true,
    );
    let mut buf = vec![0u8; 512];
    let hmac = |key: &[u8], parts: &[&[u8]]| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    };
    let n = stun
        .to_bytes(Some(b"fuzzpasswordfuzzpassword"), &mut buf, hmac)
        .expect("stun");
    put(
        "demux",
        "stun-then-rtp",
        &[&buf[..n], &[0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1][..]].concat(),
    );
    put("demux", "stun", &buf[..n]);
    // One address: a client's STUN naming another gateway's ufrag, then a tunnel frame from it.
    let one = harness::one_address();
    let other = gateway::owner_tag::OwnerTags::new(
        &gateway::owner_tag::ClusterSecrets::derive(b"fuzz cluster key").tag_key,
        gateway::owner_tag::Owner {
            ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
            udp_port: 8189,
            http_port: 8080,
        },
    )
    .expect("tags");
    let username = format!("{}:theirs", other.ufrag());
    let named = str0m::ice::StunMessage::binding_request(
        &username,
        str0m::ice::TransId::new(),
        true,
        1,
        1,
        false,
    );
    let mut named_buf = vec![0u8; 512];
    let m = named
        .to_bytes(Some(b"somebody's password"), &mut named_buf, hmac)
        .expect("stun");
    let tunnel = gateway::peer_tunnel::Tunnel::new(&one.tunnel_key);
    let frame = tunnel.wrap(
        gateway::peer_tunnel::Kind::Reply,
        "198.51.100.1:5000".parse().expect("addr"),
        &[0x80, 96, 0, 1],
    );
    let mut seed = vec![0u8];
    seed.extend_from_slice(&named_buf[..m]);
    put("peer_tunnel", "stun-naming-another-gateway", &seed);
    let mut seed = vec![1u8];
    seed.extend_from_slice(&frame);
    put("peer_tunnel", "reply-frame", &seed);
    // Session replicas: a batch as a gateway sends it, once opened.
    let batch = serde_json::json!({
        "from": {"ip": "10.0.0.2", "udp_port": 8189, "http_port": 8080},
        "replicas": [{
            "id": "0123456789abcdef0123456789abcdef",
            "holder": {"ip": "10.0.0.2", "udp_port": 8189, "http_port": 8080},
            "role": "Viewer", "stream": "live", "offer": "v=0\r\n",
            "ufrag": "0123456789abcdef0123456789abcdef", "pwd": "secret",
            "keying_material": "00112233", "profile": 7, "peer_cert": "3082"
        }],
        "progress": [{
            "id": "0123456789abcdef0123456789abcdef",
            "sent": [{"mid": "0", "ssrc": 1, "rtx": 2, "seq": 18446744073709551615u64, "time": 90000}],
            "received": [{"ssrc": 3, "mid": "1", "seq": 65535}],
            "srtcp": 2147483647
        }],
        "gone": [],
        "leaving": true
    });
    put(
        "replica_batch",
        "batch",
        serde_json::to_string(&batch).expect("json").as_bytes(),
    );
    put(
        "demux",
        "dtls",
        &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
    );
    // Node link: control messages and a media datagram.
    let key = relay_proto::link::TrackKey {
        origin: "node-a".into(),
        session: [3; 16],
        name: "video".into(),
    };
    let mut control = bytes::BytesMut::new();
    for msg in [
        relay_proto::link::ControlMessage::HelloAck,
        relay_proto::link::ControlMessage::Ping { t: 42 },
        relay_proto::link::ControlMessage::Subscribe { track: key.clone() },
        relay_proto::link::ControlMessage::Unsubscribe { track: key },
    ] {
        msg.encode(&mut control).expect("encode");
    }
    put("link_control", "messages", &control);
    let packet = relay_proto::MediaPacket {
        seq: 7,
        rtp_time: 90_000,
        marker: true,
        pt: 96,
        payload: Arc::from(vec![0x65u8, 0x88, 0x84, 0x00]),
        keyframe_start: true,
        received: std::time::Instant::now(),
    };
    let dg = relay_proto::link::encode_datagram(&packet, 1, false, 1200).expect("datagram");
    put("link_datagram", "h264", &dg);
    // Depacketizer input: length-prefixed RTP payloads (STAP-A SPS/PPS, FU-A IDR, a P slice).
    let sps = [
        0x67u8, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40,
    ];
    let pps = [0x68u8, 0xce, 0x3c, 0x80];
    let mut stap = vec![24u8];
    for nal in [&sps[..], &pps[..]] {
        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        stap.extend_from_slice(nal);
    }
    let mut depack = Vec::new();
    for p in [
        &stap[..],
        &[0x7c, 0x85, 1, 2, 3][..],
        &[0x7c, 0x45, 4, 5][..],
        &[0x41, 0x9a, 1][..],
    ] {
        depack.push(p.len() as u8);
        depack.extend_from_slice(p);
    }
    put("depacketize", "h264", &depack);
    put(
        "parameter_sets",
        "h264-sps-pps",
        &[&sps[..], &sps[..], &pps[..]].concat(),
    );
    put(
        "parameter_sets",
        "av1-sequence-header",
        &[
            0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xcf, 0x7f, 0x0d, 0xbf, 0xff, 0x30, 0x08,
        ],
    );
}

/// Seeds of the targets that reach str0m's negotiation (`offer`, `answer`,
/// `trickle_candidates`), DTLS (`dtls`) and RTCP (`rtcp`), and of `keyframe` and `recording`: `cargo test -p gateway --test fuzz_replay -- --ignored`.
#[test]
#[ignore]
fn write_negotiation_seeds() {
    use std::time::Instant;
    // `recording`: the depacketizer's corpus (valid H264/H265/AV1 packet runs among them) behind
    // each codec selector byte.
    let depacketize = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/depacketize");
    let mut runs: Vec<_> = std::fs::read_dir(&depacketize)
        .expect("depacketize corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    runs.sort();
    for path in runs.iter().take(40) {
        let run = std::fs::read(path).expect("corpus input");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        for selector in 0u8..3 {
            let mut input = vec![selector];
            input.extend_from_slice(&run);
            put(
                "recording",
                &format!("{selector}-{}", name.clone().unwrap_or_default()),
                &input,
            );
        }
    }
    let offers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../whip-tests/fixtures/offers");
    for entry in std::fs::read_dir(&offers).expect("fixtures").flatten() {
        let sdp = std::fs::read(entry.path()).expect("fixture");
        put("offer", &entry.file_name().to_string_lossy(), &sdp);
    }
    // Answers to the gateway's counter-offer (its mids written `@mid0`, `@mid1`, as the
    // harness expects): a browser taking every codec, a player with VP8 and Opus only.
    for (name, config) in [
        ("browser", str0m::Rtc::builder()),
        (
            "vp8-only",
            str0m::Rtc::builder()
                .clear_codecs()
                .enable_vp8(true)
                .enable_opus(true, false),
        ),
    ] {
        let (_, offer, _, mids) = harness::with_peers(harness::counter_offer);
        let mut player = config.build(Instant::now());
        let answer = player
            .sdp_api()
            .accept_offer(offer)
            .expect("answer")
            .to_sdp_string();
        let token = |t: &str| match mids.iter().position(|m| m == t) {
            Some(i) => format!("@mid{i}"),
            None => t.to_string(),
        };
        let answer: Vec<String> = answer
            .lines()
            .map(|line| {
                let line = match line.strip_prefix("a=mid:") {
                    Some(mid) => format!("a=mid:{}", token(mid)),
                    None if line.starts_with("a=group:") => {
                        line.split(' ').map(token).collect::<Vec<_>>().join(" ")
                    }
                    None => line.to_string(),
                };
                line + "\r\n"
            })
            .collect();
        put("answer", name, answer.concat().as_bytes());
    }
    put(
        "trickle_candidates",
        "host-srflx-tcp",
        b"Bearer abcdefgh12\n\
          a=ice-ufrag:live\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
          a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
          a=candidate:2 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 10.0.0.2 rport 5000\r\n\
          a=candidate:3 1 tcp 1518280447 ::1 9 typ host tcptype active\r\n\
          a=candidate:4 1 UDP 2122260223 2001:db8::1 5001 typ host generation 0 ufrag live network-id 1\r\n\
          a=end-of-candidates\r\n",
    );
    put(
        "trickle_candidates",
        "mdns",
        b"bearer  tok\na=candidate:5 1 udp 2113937151 0b4e7d2c-1f.local 54321 typ host\r\n",
    );
    // DTLS: what a client sends in a whole handshake with a gateway-made server, each datagram
    // length-prefixed; and its first flight alone (the ClientHello).
    let (mut client, mut server) = (harness::dtls_engine(true), harness::dtls_engine(false));
    let mut flights = Vec::new();
    for _ in 0..6 {
        let sent = harness::dtls_drain(&mut *client);
        for packet in &sent {
            let _ = server.handle_packet(packet);
        }
        for packet in harness::dtls_drain(&mut *server) {
            let _ = client.handle_packet(&packet);
        }
        flights.push(sent);
    }
    let framed = |flights: &[Vec<Vec<u8>>]| -> Vec<u8> {
        let mut out = Vec::new();
        for packet in flights.iter().flatten() {
            out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            out.extend_from_slice(packet);
        }
        out
    };
    put("dtls", "client-hello", &framed(&flights[..1]));
    put("dtls", "client-handshake", &framed(&flights));
    // RTCP: SR + SDES (a sender's compound packet), RR, NACK, PLI, TWCC, BYE.
    let ssrc = [0x11, 0x22, 0x33, 0x44];
    let media = [0x55, 0x66, 0x77, 0x88];
    let sr = [&[0x80, 200, 0, 6][..], &ssrc, &[0; 20]].concat();
    let sdes = [&[0x81, 202, 0, 3][..], &ssrc, &[1, 4], b"abcd", &[0, 0]].concat();
    put("rtcp", "sr-sdes", &[sr, sdes].concat());
    let block = [&media[..], &[0, 0, 0, 1, 0, 0, 0x10, 0], &[0; 12]].concat();
    put(
        "rtcp",
        "rr",
        &[&[0x81, 201, 0, 7][..], &ssrc, &block].concat(),
    );
    put(
        "rtcp",
        "nack",
        &[&[0x81, 205, 0, 3][..], &ssrc, &media, &[0, 7, 0, 5]].concat(),
    );
    put(
        "rtcp",
        "pli",
        &[&[0x81, 206, 0, 2][..], &ssrc, &media].concat(),
    );
    put(
        "rtcp",
        "twcc",
        &[
            &[0x8f, 205, 0, 5][..],
            &ssrc,
            &media,
            &[0, 1, 0, 1, 0, 0, 1, 0, 0x20, 0x01, 0x04, 0],
        ]
        .concat(),
    );
    put("rtcp", "bye", &[&[0x81, 203, 0, 1][..], &ssrc].concat());
    // RTP payloads: H264 STAP-A SPS/PPS, FU-A IDR start, H265 IDR, VP8 and VP9 keyframe
    // starts, AV1 aggregation header of a new coded video sequence.
    for (name, payload) in [
        (
            "h264-stap-a",
            &[24u8, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 2, 0x68, 0xce][..],
        ),
        ("h264-fu-a-idr", &[0x7c, 0x85, 0x88, 0x84][..]),
        ("h265-idr", &[0x26, 0x01, 0xaf, 0x06][..]),
        ("vp8-key", &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02][..]),
        ("vp9-key", &[0x88, 0x00, 0x00, 0x00][..]),
        ("av1-new-sequence", &[0x18, 0x0a, 0x0b, 0x00][..]),
    ] {
        put("keyframe", name, payload);
    }
}
