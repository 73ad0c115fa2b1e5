//! Unit tests of the engine's own decisions (layer choice, paced runs, the panic guard).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use relay_proto::MediaPacket;
use str0m::media::{MediaKind, Mid};

use super::*;
use crate::config::{Cli, Config};
use crate::engine::Adopt;
use crate::ids::{SessionId, TrackId};
use crate::join_metrics::RequestContext;
use crate::peer::PeerFactory;
use crate::registry::{Registry, TrackInfo};
use crate::session::Pull;

fn worker() -> (Engine, PeerFactory) {
    let mut config = Config::load(Cli::default()).expect("defaults");
    config.udp_listen = "127.0.0.1:0".parse().expect("addr");
    // No socket: the engine never sends; the factory only needs an address for its candidates.
    let peers = PeerFactory::new(&config, config.udp_listen).expect("peers");
    let ctx = Arc::new(EngineCtx {
        registry: Arc::new(Registry::default()),
        config: Arc::new(config),
        stats: Arc::default(),
        join: Arc::default(),
        bridge: None,
        spans: false,
    });
    (Engine::new(0, ctx, Instant::now()), peers)
}

/// Session `id` on `w`, a fresh `Rtc` with `pulls`.
fn adopt(w: &mut Engine, peers: &PeerFactory, id: SessionId, pulls: Vec<Pull>, now: Instant) {
    let (rtc, _) = peers.empty(now);
    w.adopt_session(
        Adopt {
            id,
            rtc,
            same_ssrc_repair: false,
            pushed: vec![],
            pulls,
            requested: RequestContext::now(),
            replication: None,
        },
        now,
    );
}

fn layer(id: u64, rid: &str, bps: u64) -> Arc<TrackInfo> {
    let info = TrackInfo::new(
        TrackId(id),
        SessionId::from_bytes([1; 16]),
        format!("video.{rid}"),
        MediaKind::Video,
        str0m::media::Mid::from("1"),
        vec![],
        0,
    )
    .layer(rid.into(), TrackId(1));
    info.rate_bps.store(bps, Ordering::Relaxed);
    Arc::new(info)
}

#[test]
fn layer_choice_follows_the_estimate_with_hysteresis() {
    // Offered low first (some browsers): the order comes from the measured bitrates.
    let layers = vec![
        layer(3, "l", 300_000),
        layer(2, "m", 1_000_000),
        layer(1, "h", 3_000_000),
    ];
    let pick =
        |cur: u64, est: Option<u64>| pick_layer(&layers, Some(TrackId(cur)), est).map(|t| t.0);
    // No estimate (loopback, no TWCC yet): the top layer.
    assert_eq!(pick(3, None), Some(1));
    // Plenty: top. Just enough for h at 0.9 but not at 0.75: stay on h, do not go up to it.
    assert_eq!(pick(2, Some(10_000_000)), Some(1));
    assert_eq!(pick(1, Some(3_500_000)), Some(1));
    assert_eq!(pick(2, Some(3_500_000)), Some(2));
    // Too little for the current layer: down.
    assert_eq!(pick(1, Some(1_200_000)), Some(2));
    assert_eq!(pick(1, Some(100_000)), Some(3));
    // A layer not measured yet (not sent): keep the current one.
    let unmeasured = vec![layer(1, "h", 3_000_000), layer(2, "m", 0)];
    assert_eq!(
        pick_layer(&unmeasured, Some(TrackId(2)), Some(1)).map(|t| t.0),
        Some(2)
    );
}

/// Issue 10: a paced keyframe run must survive an earlier m-line of its session closing
/// (`tracks/close` removes that pull and shifts the later ones).
#[test]
fn a_paced_run_survives_an_earlier_pull_closing() {
    let (mut w, peers) = worker();
    let now = Instant::now();
    let id = SessionId::random();
    let pull = |mid: &str| Pull::new(Mid::from(mid), MediaKind::Video, None, None);
    adopt(&mut w, &peers, id, vec![pull("0"), pull("1")], now);
    let mut pacer = crate::run_pacer::RunPacer::new(1_000_000, now);
    for seq in 0..3 {
        pacer.push(Arc::new(MediaPacket {
            seq,
            rtp_time: 0,
            marker: seq == 2,
            pt: 96,
            payload: vec![0u8; 1000].into(),
            keyframe_start: seq == 0,
            received: now,
        }));
    }
    let s = w.sessions.get_mut(&id).expect("adopted");
    s.pulls[1].pacer = Some(pacer);
    w.paced.push((id, Mid::from("1")));
    // The API closes mid 0: the run of mid 1 moves to index 0.
    s.pulls.remove(0);
    w.pace(now + Duration::from_secs(1));
    let s = w.sessions.get(&id).expect("session");
    assert!(
        s.pulls[0].pacer.is_none(),
        "the run of mid 1 was not worked through: its queue would only grow"
    );
}

#[test]
fn a_panic_inside_a_session_closes_that_session_only() {
    let (mut w, peers) = worker();
    let now = Instant::now();
    let (a, b) = (SessionId::random(), SessionId::random());
    for id in [a, b] {
        w.guarded(|w| adopt(w, &peers, id, vec![], now));
    }
    assert_eq!(w.sessions.len(), 2);
    w.guarded(|w| {
        w.touching = Some(a);
        panic!("a bug inside str0m");
    });
    assert!(
        !w.sessions.contains_key(&a),
        "the panicking session is gone"
    );
    assert!(w.sessions.contains_key(&b), "the other session lives on");
    assert_eq!(w.stats.panics.load(Ordering::Relaxed), 1);
    w.drive(now);
    assert!(
        w.sessions.contains_key(&b),
        "and the worker keeps driving it"
    );
}
