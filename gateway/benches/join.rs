//! What building one session costs the gateway, before any packet flows: the CPU an HTTP handler
//! spends between reading a WHIP/WHEP offer and having the `Rtc` and the SDP answer in hand
//! (`gateway::peer::PeerFactory`), and its parts.
//!
//! * `viewer`: `PeerFactory::viewer` on a captured Chrome WHEP offer against an OBS 30 stream's
//!   tracks (H264 + Opus) — the whole per-join cost of a WHEP POST's negotiation.
//! * `publisher`: `PeerFactory::publisher` on the OBS 30 offer (it builds two `Rtc`s: a probe to
//!   pick the codecs, then the real one).
//! * `rtc_build/str0m_default_provider`: `RtcConfig::build` configured as the gateway does, but
//!   with str0m's stock AWS-LC provider (what the gateway used before `peer::CachedDtls`);
//!   `rtc_build/node`: the same through `PeerFactory::empty` (the node's provider).
//! * parts: `dimpl::Config::build` (dimpl validates the crypto provider with known-answer tests
//!   and a key exchange in every group on each call: str0m's stock provider calls it once per
//!   `Rtc`), `sdp_parse` (the offer), `answer` (`accept_offer` + answer text on a fresh `Rtc`).
//!
//! After criterion, a fixed-iteration pass prints one machine-readable line for BENCHMARKS.md:
//!
//! ```text
//! JOIN viewer_us=… publisher_us=… rtc_build_stock_us=… rtc_build_node_us=… dimpl_config_us=…
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gateway::config::Config;
use gateway::ids::{SessionId, TrackId};
use gateway::peer::{PeerFactory, negotiated_params, parse_offer};
use gateway::registry::TrackInfo;
use str0m::Rtc;
use str0m::change::SdpOffer;

const OBS_OFFER: &str = include_str!("../../whip-tests/fixtures/offers/obs30-h264.sdp");
const CHROME_WHEP_OFFER: &str =
    include_str!("../../whip-tests/fixtures/offers/chrome-whep-recvonly.sdp");

fn factory() -> PeerFactory {
    let config = Config {
        candidate_ips: vec!["127.0.0.1".parse().expect("ip")],
        ..Config::default()
    };
    let udp: SocketAddr = "127.0.0.1:8189".parse().expect("addr");
    PeerFactory::new(&config, udp).expect("peer factory")
}

/// The tracks an OBS 30 publisher's session registers, as `control::push` builds them.
fn obs_tracks(peers: &PeerFactory) -> Vec<Arc<TrackInfo>> {
    let publisher = peers
        .publisher(OBS_OFFER, Instant::now())
        .expect("OBS offer accepted");
    let session = SessionId::random();
    publisher
        .media
        .iter()
        .enumerate()
        .map(|(i, (mid, kind))| {
            Arc::new(TrackInfo::new(
                TrackId(i as u64 + 1),
                session,
                format!("{kind:?}").to_lowercase(),
                *kind,
                *mid,
                negotiated_params(&publisher.rtc, *mid),
                0,
            ))
        })
        .collect()
}

/// An `Rtc` configured like `PeerFactory`'s, on str0m's stock provider (a new dimpl config, and
/// so a provider self-test, per `Rtc`).
fn stock_build(
    provider: &Arc<str0m::config::CryptoProvider>,
    cert: &str0m::config::DtlsCert,
) -> Rtc {
    Rtc::builder()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .set_crypto_provider(provider.clone())
        .set_dtls_cert(cert.clone())
        .build(Instant::now())
}

fn dimpl_config() -> dimpl::Config {
    dimpl::Config::builder()
        .use_server_cookie(false)
        .build()
        .expect("dimpl config")
}

/// Mean time of `f` over `n` calls, in microseconds.
fn mean_us(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let peers = factory();
    let tracks = obs_tracks(&peers);
    let stock = Arc::new(str0m::crypto::from_feature_flags());
    let cert = stock
        .dtls_provider
        .generate_certificate()
        .expect("certificate");

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("join");
        g.bench_function("viewer", |b| {
            b.iter(|| {
                black_box(
                    peers
                        .viewer(CHROME_WHEP_OFFER, &tracks, Instant::now())
                        .expect("viewer"),
                )
            })
        });
        g.bench_function("publisher", |b| {
            b.iter(|| {
                black_box(
                    peers
                        .publisher(OBS_OFFER, Instant::now())
                        .expect("publisher"),
                )
            })
        });
        g.bench_function("rtc_build/str0m_default_provider", |b| {
            b.iter(|| black_box(stock_build(&stock, &cert)))
        });
        g.bench_function("rtc_build/node", |b| {
            b.iter(|| black_box(peers.empty(Instant::now())))
        });
        g.bench_function("dimpl_config_build", |b| {
            b.iter(|| black_box(dimpl_config()))
        });
        g.bench_function("sdp_parse", |b| {
            b.iter(|| black_box(SdpOffer::from_sdp_string(CHROME_WHEP_OFFER).expect("sdp")))
        });
        g.bench_function("answer_on_fresh_rtc", |b| {
            b.iter_batched(
                || {
                    (
                        peers.empty(Instant::now()).0,
                        parse_offer(CHROME_WHEP_OFFER).expect("offer"),
                    )
                },
                |(mut rtc, offer)| black_box(gateway::peer::answer_offer(&mut rtc, offer).is_ok()),
                criterion::BatchSize::SmallInput,
            )
        });
        g.finish();
    }
    c.final_summary();

    // One line to copy: fixed iterations, after criterion's warm-up of the same code.
    let n = 500;
    let viewer = mean_us(n, || {
        black_box(
            peers
                .viewer(CHROME_WHEP_OFFER, &tracks, Instant::now())
                .is_ok(),
        );
    });
    let publisher = mean_us(n, || {
        black_box(peers.publisher(OBS_OFFER, Instant::now()).is_ok());
    });
    let stock_us = mean_us(n, || {
        black_box(stock_build(&stock, &cert));
    });
    let node_us = mean_us(n, || {
        black_box(peers.empty(Instant::now()));
    });
    let dimpl_us = mean_us(n, || {
        black_box(dimpl_config());
    });
    println!(
        "JOIN viewer_us={viewer:.1} publisher_us={publisher:.1} rtc_build_stock_us={stock_us:.1} \
         rtc_build_node_us={node_us:.1} dimpl_config_us={dimpl_us:.1}"
    );
}
