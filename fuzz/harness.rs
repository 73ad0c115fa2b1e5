#![allow(dead_code)] // each target uses one of these functions
//! What every fuzz target runs, shared with the stable replay test
//! (`gateway/tests/fuzz_replay.rs`, which feeds it `fuzz/corpus/*` and `fuzz/regressions/*`).
//! Each function takes arbitrary bytes from the network's point of view and must neither panic
//! nor allocate beyond what its input justifies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A target: its corpus directory name and what it runs.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// The targets, by directory name under `fuzz/corpus/`.
pub(crate) const TARGETS: &[Target] = &[
    ("sdp", sdp),
    ("trickle_patch", trickle_patch),
    ("demux", demux),
    ("link_control", link_control),
    ("link_datagram", link_datagram),
    ("depacketize", depacketize),
    ("parameter_sets", parameter_sets),
    ("config_and_api", config_and_api),
    ("offer", offer),
    ("answer", answer),
    ("trickle_candidates", trickle_candidates),
    ("keyframe", keyframe),
    ("dtls", dtls),
    ("rtcp", rtcp),
    ("recording", recording),
    ("adapter_packet", adapter_packet),
    ("turn_server", turn_server),
    ("peer_tunnel", peer_tunnel),
    ("replica_batch", replica_batch),
];

/// One address's state for `peer_tunnel`: this gateway 10.0.0.1, another 10.0.0.2, under a
/// fixed cluster key (the seed corpus is made with the same, so it reaches past the HMAC).
pub(crate) fn one_address() -> &'static gateway::owner_tag::OneAddress {
    use gateway::owner_tag::{ClusterSecrets, GatewaySet, OneAddress, Owner, OwnerTags};
    static ONE: std::sync::OnceLock<OneAddress> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let secrets = ClusterSecrets::derive(b"fuzz cluster key");
        let gateways = GatewaySet::default();
        gateways.update(["10.0.0.1:7000", "10.0.0.2:7000"]);
        let own = Owner {
            ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 8189,
            http_port: 8080,
        };
        OneAddress {
            tags: OwnerTags::new(&secrets.tag_key, own).expect("tags"),
            gateways,
            tunnel_key: secrets.tunnel_key,
            replica_key: secrets.replica_key,
        }
    })
}

/// One address's UDP side (`forwarding`, `peer_tunnel`): datagrams from clients this gateway does
/// not know and tunnel frames from another gateway, interleaved (first byte of each 1500-byte
/// chunk: even = from a client, odd = a frame from 10.0.0.2). Nothing panics, what goes out goes
/// only to gateways of the cluster or (a reply) to the frame's client, and every frame that is
/// not ours is refused.
pub(crate) fn peer_tunnel(data: &[u8]) {
    use gateway::forwarding::{Forwarding, FrameAction};
    let one = one_address();
    let mut f = Forwarding::new(one, Default::default());
    let now = Instant::now();
    let peer = SocketAddr::from(([10, 0, 0, 2], 8189));
    for (i, chunk) in data.chunks(1500).enumerate() {
        let at = now + Duration::from_millis(i as u64);
        let Some((&first, rest)) = chunk.split_first() else {
            continue;
        };
        let client = SocketAddr::from(([198, 51, 100, first], 40000 + i as u16));
        if first % 2 == 0 {
            for (to, _) in f.on_unknown(at, client, rest) {
                assert!(
                    one.gateways.contains(to.ip())
                        && to.ip() != std::net::IpAddr::from([10, 0, 0, 1]),
                    "sent to {to}, not another gateway"
                );
            }
        } else if let FrameAction::Deliver { client, .. } = f.on_frame(at, peer, rest) {
            let _ = f.delivered(at, client, peer, false);
        }
    }
}

/// Session replicas as another gateway sends them (`replica`), once opened: any JSON into the
/// store, then what a resume reads from it. The batch is authenticated by the cluster key before
/// this, but nothing a peer sends is trusted: no panic, no overflow.
pub(crate) fn replica_batch(data: &[u8]) {
    use gateway::replica::{Batch, ReplicaStore, extend_from, open, seal};
    let Ok(batch) = serde_json::from_slice::<Batch>(data) else {
        return;
    };
    let key = [9u8; 32];
    let reopened = open(&key, &seal(&key, &batch)).expect("a sealed batch opens");
    assert_eq!(reopened.replicas.len(), batch.replicas.len());
    let mut store = ReplicaStore::default();
    let now = Instant::now();
    store.apply(batch.clone(), now);
    for r in &batch.replicas {
        if let Some(s) = store.by_ufrag(&r.ufrag) {
            let _ = s.replica.dtls();
            for p in &s.progress.received {
                let _ = extend_from(p.seq, (p.ssrc & 0xffff) as u16);
            }
            for p in &s.progress.sent {
                let _ =
                    relay_proto::Rewriter::resumed(90_000, p.seq, p.time, Duration::from_secs(1))
                        .rewrite(p.seq, p.time);
            }
        }
    }
    store.apply(Batch::default(), now + Duration::from_secs(3600));
    assert!(store.is_empty(), "stale replicas are dropped");
}

/// The TURN service (`turn`): a datagram from a client and the same from a peer, into a server
/// with one allocation's worth of state reachable only with credentials; nothing panics, and
/// whatever goes out goes to the client that sent or to nobody (never to a peer unasked).
pub(crate) fn turn_server(data: &[u8]) {
    use gateway::turn::message::{TurnMessage, parse_channel_data};
    use gateway::turn::server::{TurnConfig, TurnOutput, TurnServer};
    if let Some(m) = TurnMessage::parse(data) {
        let _ = (
            m.unknown_required(),
            m.get(0x0012).map(|v| m.xor_address(v)),
        );
    }
    let _ = parse_channel_data(data);
    let client: std::net::SocketAddr = "192.0.2.1:5000".parse().expect("addr");
    let mut s = TurnServer::new(TurnConfig {
        allowed_peers: vec![("127.0.0.0".parse().expect("ip"), 8)],
        ..TurnConfig::default()
    });
    let now = std::time::Instant::now();
    s.handle_client(now, 1_000, client, data, &|_| Some("pw".to_string()));
    s.handle_peer(
        now,
        "127.0.0.1:40000".parse().expect("addr"),
        "127.0.0.1:1".parse().expect("addr"),
        data,
    );
    s.handle_timeout(now);
    while let Some(o) = s.poll_output() {
        match o {
            TurnOutput::ToClient { to, .. } => assert_eq!(to, client),
            other => panic!("unauthenticated input made {other:?}"),
        }
    }
}

/// A WebSocket adapter's message from a service (`adapters::packet`): decoded or refused, and
/// what decodes encodes back to a message that decodes the same.
pub(crate) fn adapter_packet(data: &[u8]) {
    use gateway::adapters::packet::Packet;
    if let Ok(p) = Packet::decode(data) {
        assert!(p.payload.len() <= data.len());
        assert_eq!(Packet::decode(&p.encode()).as_ref(), Ok(&p));
    }
}

/// SDP inspection of offers (`sdp_info`): m-lines, ufrag, msid rewriting.
pub(crate) fn sdp(data: &[u8]) {
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
pub(crate) fn trickle_patch(data: &[u8]) {
    let (header, body) = split_at_newline(data);
    let header = String::from_utf8_lossy(header);
    let body = String::from_utf8_lossy(body);
    let if_match = gateway::front::ice_patch::IfMatch::parse(Some(&header));
    if let Ok(frag) = gateway::sdp_info::sdpfrag(&body) {
        assert!(frag.candidates.len() <= body.lines().count());
        let old = vec!["old1".to_string()];
        let state = gateway::front::ice_patch::IceState {
            etag: "etag0",
            remote_ufrag: Some("live"),
            old_ufrags: &old,
        };
        let _ = gateway::front::ice_patch::decide(frag.ufrag.as_deref(), &if_match, state);
    }
}

/// A datagram at the UDP demux with one live session (first two bytes: the source port).
pub(crate) fn demux(data: &[u8]) {
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
pub(crate) fn link_control(data: &[u8]) {
    let mut dec = relay_proto::link::ControlDecoder::new();
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
pub(crate) fn link_datagram(data: &[u8]) {
    if let Ok(d) = relay_proto::link::decode_datagram(data, Instant::now()) {
        let _ = d;
    }
}

/// The recorder's depacketizers (H264, H265, AV1): packets are length-prefixed (one byte).
pub(crate) fn depacketize(data: &[u8]) {
    use gateway::depacketize::{Assembler, VideoCodec};
    for codec in [VideoCodec::H264, VideoCodec::H265, VideoCodec::Av1] {
        let mut a = Assembler::new(codec);
        let now = Instant::now();
        for (seq, len, payload) in length_prefixed(data) {
            let p = relay_proto::MediaPacket {
                seq,
                rtp_time: seq / 3,
                marker: len & 1 == 1,
                pt: 96,
                payload: payload.into(),
                keyframe_start: relay_proto::is_keyframe_start(relay_proto::Codec::H264, payload),
                received: now,
            };
            let units = a.push(&p);
            let bytes: usize = units.iter().map(|u| u.data.len()).sum();
            assert!(
                bytes <= data.len() * 2 + 64,
                "an access unit larger than its input"
            );
        }
        let _ = a.parameter_sets();
    }
    let mut inspector = relay_proto::H264Inspector::new();
    for (i, chunk) in data.chunks(64).enumerate() {
        inspector.push(i as u64, chunk);
    }
    let units = relay_proto::aggregation_units(data)
        .take(data.len() + 1)
        .count();
    assert!(units <= data.len());
}

/// SPS (H264, H265) and AV1 sequence header parsers behind the recorder's sample entries.
pub(crate) fn parameter_sets(data: &[u8]) {
    use gateway::depacketize::VideoCodec;
    use gateway::fmp4::TrackConfig;
    let (a, b) = data.split_at(data.len() / 2);
    let (b, c) = b.split_at(b.len() / 2);
    let _ = TrackConfig::video(VideoCodec::H264, &[a.to_vec(), b.to_vec()]);
    let _ = TrackConfig::video(VideoCodec::H265, &[a.to_vec(), b.to_vec(), c.to_vec()]);
    let _ = TrackConfig::video(VideoCodec::Av1, &[data.to_vec()]);
}

/// The recorder's path from packets to file bytes: depacketized access units become samples
/// (durations and sync flags from the input), the parameter sets the assembler saw become the
/// sample entry, and `fmp4::init_segment` / `fmp4::fragment` write them. Every box the writer
/// emits must be well-formed: sizes that add up, an `mdat` holding exactly the samples.
pub(crate) fn recording(data: &[u8]) {
    use gateway::depacketize::{Assembler, VideoCodec};
    use gateway::fmp4::{self, Sample, TrackConfig, TrackDesc, TrackRun};
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let codec = match selector % 3 {
        0 => VideoCodec::H264,
        1 => VideoCodec::H265,
        _ => VideoCodec::Av1,
    };
    let mut a = Assembler::new(codec);
    let now = Instant::now();
    let mut samples = Vec::new();
    let mut packets = 0u64;
    for (seq, len, payload) in length_prefixed(data) {
        packets = seq + 1;
        let p = relay_proto::MediaPacket {
            seq,
            rtp_time: seq / 2,
            marker: len & 1 == 1,
            pt: 96,
            payload: payload.into(),
            keyframe_start: false,
            received: now,
        };
        for unit in a.push(&p) {
            samples.push(Sample {
                duration: u32::from(len) * 1000,
                sync: unit.keyframe,
                data: unit.data,
            });
        }
    }
    if let Some(params) = a.parameter_sets()
        && let Ok(kind) = TrackConfig::video(codec, &params)
    {
        let init = fmp4::init_segment(&[TrackDesc {
            id: 1,
            timescale: fmp4::VIDEO_TIMESCALE,
            kind,
        }]);
        assert_boxes(&init);
    }
    let run = TrackRun {
        track_id: 1,
        base_time: u64::from(selector) << 32,
        samples: &samples,
    };
    let bytes = fmp4::fragment(packets as u32, &[run]);
    let boxes = assert_boxes(&bytes);
    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    if !samples.is_empty() {
        let mdat = boxes.iter().find(|(kind, _)| kind == b"mdat");
        assert_eq!(
            mdat.map(|(_, size)| size - 8),
            Some(payload),
            "mdat != samples"
        );
    }
}

/// Packets cut out of `data` by a one-byte length before each: (index, that byte, the payload).
fn length_prefixed(data: &[u8]) -> impl Iterator<Item = (u64, u8, &[u8])> {
    let mut rest = data;
    let mut seq = 0u64;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let (payload, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        seq += 1;
        Some((seq - 1, len, payload))
    })
}

/// Walks top-level ISO BMFF boxes; panics unless their sizes tile `bytes` exactly.
fn assert_boxes(bytes: &[u8]) -> Vec<([u8; 4], usize)> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes.get(at..at + 8).expect("a truncated box header");
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        assert!(
            size >= 8 && at + size <= bytes.len(),
            "box size {size} at {at}"
        );
        boxes.push(([head[4], head[5], head[6], head[7]], size));
        at += size;
    }
    boxes
}

/// The TOML config file and the session/track API's JSON bodies.
pub(crate) fn config_and_api(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = toml::from_str::<gateway::config::Config>(&text);
    let _ = serde_json::from_slice::<gateway::front::api::TracksRequest>(data);
    let _ = serde_json::from_slice::<gateway::front::endpoint::LayerRequest>(data);
}

/// A WHIP or WHEP offer all the way through what one POST reaches: the gateway's checks,
/// str0m's SDP parser and `accept_offer` (`PeerFactory::publisher`, `PeerFactory::viewer`
/// against the tracks of an OBS publisher).
pub(crate) fn offer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = gateway::peer::parse_offer(&text);
    with_peers(|peers, tracks| {
        let now = Instant::now();
        for peer in [
            peers.publisher(&text, now),
            peers.viewer(&text, tracks, now),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                peer.answer.len() <= text.len() * 2 + 16 * 1024,
                "an answer out of proportion to its offer"
            );
            assert!(
                peer.media.len() <= 16,
                "more m-lines than the gateway takes"
            );
        }
    });
}

/// A WHEP player's answer to the gateway's counter-offer (`negotiation::accept_client_answer`):
/// str0m's `SdpAnswer` parser and `accept_answer` on a pending offer of the OBS tracks. str0m
/// picks the offer's mids at random, so `@mid0`, `@mid1` in the input stand for them.
pub(crate) fn answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    with_peers(|peers, tracks| {
        let (mut rtc, _, pending, mids) = counter_offer(peers, tracks);
        let mut text = text.into_owned();
        for (i, mid) in mids.iter().enumerate() {
            text = text.replace(&format!("@mid{i}"), mid);
        }
        let Ok(answer) = str0m::change::SdpAnswer::from_sdp_string(&text) else {
            return;
        };
        if rtc.sdp_api().accept_answer(pending, answer).is_ok() {
            let media = gateway::peer::accepted_media(&text);
            assert!(media.len() <= mids.len());
        }
    });
}

/// The gateway's WHEP counter-offer of `tracks` (`negotiation`'s `offer_pulls`): the `Rtc`, the
/// offer, its pending state and its mids in track order.
pub(crate) fn counter_offer(
    peers: &gateway::peer::PeerFactory,
    tracks: &[std::sync::Arc<gateway::registry::TrackInfo>],
) -> (
    str0m::Rtc,
    str0m::change::SdpOffer,
    str0m::change::SdpPendingOffer,
    Vec<String>,
) {
    let (mut rtc, _) = peers.offering_viewer(tracks, Instant::now());
    let mut api = rtc.sdp_api();
    let mids: Vec<String> = tracks
        .iter()
        .map(|t| {
            api.add_media(
                t.kind,
                str0m::media::Direction::SendOnly,
                Some(t.session.to_string()),
                Some(t.name.clone()),
                None,
            )
            .to_string()
        })
        .collect();
    let (offer, pending) = api.apply().expect("an offer of the tracks");
    (rtc, offer, pending, mids)
}

/// A trickle PATCH as the worker takes it: the `Authorization` header (first line,
/// `auth::bearer`), then each `a=candidate` of the sdpfrag body through str0m's candidate
/// parser into a live `Rtc` (`worker`'s `WorkerMsg::Trickle`).
pub(crate) fn trickle_candidates(data: &[u8]) {
    let (header, body) = split_at_newline(data);
    let header = String::from_utf8_lossy(header);
    if let Some(token) = gateway::auth::bearer(Some(&header)) {
        assert!(token.len() < header.len());
    }
    let body = String::from_utf8_lossy(body);
    let Ok(frag) = gateway::sdp_info::sdpfrag(&body) else {
        return;
    };
    with_peers(|peers, _| {
        let (mut rtc, _) = peers.empty(Instant::now());
        for c in &frag.candidates {
            if let Ok(c) = str0m::Candidate::from_sdp_string(c) {
                rtc.add_remote_candidate(c);
            }
        }
    });
}

/// The per-packet inspection of every publisher's RTP payload in the relay: keyframe
/// detection for each codec, H264 parameter-set detection, the codec name from SDP, and the
/// STAP-A of parameter sets rebuilt from what the inspector kept.
pub(crate) fn keyframe(data: &[u8]) {
    use relay_proto::Codec::{self, *};
    for codec in [H264, H265, Vp8, Vp9, Av1, Opus, Other] {
        let _ = relay_proto::is_keyframe_start(codec, data);
    }
    let _ = relay_proto::h264_parameter_sets(data);
    let _ = Codec::from_name(&String::from_utf8_lossy(data));
    let (sps, pps) = data.split_at(data.len() / 2);
    if let Some(stap) = relay_proto::h264_parameter_sets_stap_a(sps, pps) {
        assert!(stap.len() <= data.len() + 5);
        let _ = relay_proto::h264_parameter_sets(&stap);
        assert!(relay_proto::aggregation_units(&stap[1..]).count() <= 2);
    }
}

/// Datagrams, each prefixed by its length (two bytes, big-endian), into a server-side DTLS 1.2
/// engine as the gateway makes one for every session (`peer::cached_dtls`: the vendored,
/// patched dimpl, no cookie exchange): what a peer's first DTLS flights reach after ICE.
pub(crate) fn dtls(data: &[u8]) {
    let mut server = dtls_engine(false);
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        let _ = server.handle_packet(packet);
        let sent: usize = dtls_drain(&mut *server).iter().map(Vec::len).sum();
        assert!(sent <= 64 * 1024, "a DTLS flight out of proportion");
    }
}

/// A compound RTCP packet as str0m parses a peer's (after SRTCP, so any player with a session):
/// split as str0m's `Rtcp::read_packet` splits it (header length, padding), each packet through
/// the public `Rtcp::try_from`; for a viewer without RTX the worker reads its NACKs from these.
pub(crate) fn rtcp(data: &[u8]) {
    let mut buf = data;
    while let [first, _, hi, lo, ..] = *buf {
        let full = (usize::from(u16::from_be_bytes([hi, lo])) + 1) * 4;
        if full > buf.len() {
            break;
        }
        let pad = if first & 0x20 != 0 {
            usize::from(buf[full - 1])
        } else {
            0
        };
        let Some(len) = full.checked_sub(pad) else {
            break;
        };
        if let Ok(str0m::rtp::rtcp::Rtcp::Nack(nack)) =
            str0m::rtp::rtcp::Rtcp::try_from(&buf[..len])
        {
            assert!(nack.reports.len() <= len);
        }
        buf = &buf[full..];
    }
}

/// A DTLS 1.2 engine from the gateway's crypto provider, with a certificate made once per
/// thread: the server (`active` false) as every session has it, or a client for seeds.
pub(crate) fn dtls_engine(active: bool) -> Box<dyn str0m::crypto::dtls::DtlsInstance> {
    use str0m::crypto::dtls::{DtlsCert, DtlsVersion};
    thread_local! {
        static CERT: DtlsCert = gateway::peer::cached_dtls::crypto_provider()
            .dtls_provider
            .generate_certificate()
            .expect("DTLS certificate");
    }
    let provider = gateway::peer::cached_dtls::crypto_provider();
    let mut engine = CERT
        .with(|cert| {
            provider
                .dtls_provider
                .new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, None)
        })
        .expect("DTLS engine");
    // As str0m's `init_dtls`: the role, then a timeout before any datagram (dimpl's server
    // draws its random there and unwraps it at the first ClientHello), and an empty datagram
    // that makes a client send its ClientHello.
    engine.set_active(active);
    let _ = engine.handle_timeout(Instant::now());
    if active {
        let _ = engine.handle_packet(&[]);
    }
    engine
}

/// What a DTLS engine has to send now (its datagrams), polled until it names its next timeout.
pub(crate) fn dtls_drain(engine: &mut dyn str0m::crypto::dtls::DtlsInstance) -> Vec<Vec<u8>> {
    use str0m::crypto::dtls::DtlsOutput;
    let mut buf = vec![0u8; 2048];
    let mut sent = Vec::new();
    for _ in 0..256 {
        match engine.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => sent.push(p.to_vec()),
            DtlsOutput::Timeout(_) => break,
            DtlsOutput::BufferTooSmall { needed } => {
                assert!(needed <= 64 * 1024, "a DTLS record out of proportion");
                break;
            }
            _ => {}
        }
    }
    sent
}

/// The OBS offer the `offer` and `answer` targets negotiate against.
pub(crate) const OBS_OFFER: &str = include_str!("../whip-tests/fixtures/offers/obs30-h264.sdp");

/// A node's `PeerFactory` and the tracks of one OBS publisher (audio + H264), built once per
/// thread: the DTLS certificate and the publisher's negotiation are not what is fuzzed.
pub(crate) fn with_peers<R>(
    f: impl FnOnce(&gateway::peer::PeerFactory, &[std::sync::Arc<gateway::registry::TrackInfo>]) -> R,
) -> R {
    use std::sync::Arc;
    thread_local! {
        static PEERS: (gateway::peer::PeerFactory, Vec<Arc<gateway::registry::TrackInfo>>) = {
            let config = gateway::config::Config::default();
            let peers = gateway::peer::PeerFactory::new(&config, SocketAddr::from(([127, 0, 0, 1], 8189)))
                .expect("peer factory");
            let publisher = peers.publisher(OBS_OFFER, Instant::now()).expect("the OBS offer");
            let session = gateway::ids::SessionId::from_bytes([2; 16]);
            let tracks = publisher
                .media
                .iter()
                .enumerate()
                .map(|(i, (mid, kind))| {
                    Arc::new(gateway::registry::TrackInfo::new(
                        gateway::ids::TrackId(i as u64),
                        session,
                        format!("track{i}"),
                        *kind,
                        *mid,
                        gateway::peer::negotiated_params(&publisher.rtc, *mid),
                        0,
                    ))
                })
                .collect();
            (peers, tracks)
        };
    }
    PEERS.with(|(peers, tracks)| f(peers, tracks))
}

fn split_at_newline(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
