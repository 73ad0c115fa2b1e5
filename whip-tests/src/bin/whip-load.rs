//! Load generator: one or more WHIP publishers (an MP4 or a synthetic stream at a chosen bitrate,
//! looped at real pace; or none when something else publishes) and N WHEP viewers in this one
//! process, against any gateway base URL. With `--publishers N` the streams are `STREAM-0` …
//! `STREAM-{N-1}`, all publishing the same media, and viewer i watches stream i mod N.
//!
//! ```text
//! whip-load --base http://127.0.0.1:8080 --stream load --publish fixtures/short-gop.mp4 \
//!     --viewers 200 --full-viewers 5 --ramp-per-sec 20 --duration 10 --report out.json \
//!     --server-pid 1234
//! ```
//!
//! Viewers join at `--ramp-per-sec`; the run goes on `--duration` seconds after the last one has
//! joined (the *steady window*), then every viewer DELETEs. A progress line goes to stderr every
//! second; the JSON report goes to `--report` (and a one-line summary to stdout).
//!
//! Every viewer does real ICE and DTLS through str0m and keeps consent alive. `--full-viewers K`
//! of them (spread evenly over the ramp) are *full*: SRTP decryption of every packet, NACK and
//! PLI like a browser, each video frame checked against the fixture (`--fixture`, default the
//! published file), latency. The others are *thin*: their RTP datagrams are counted from the
//! clear RTP header and never decrypted (`whip_tests::rtp_counter`), so they cost the client a
//! fraction of a full viewer; they send **no NACK and no PLI**, so the gateway sees them as
//! viewers on a perfect network. The report gives this process's CPU too.
//!
//! Figures and where they come from:
//! * join times per viewer, from the WHEP POST (p50/p95/p99/max over viewers): 201 (`http`), ICE
//!   connected (`ice`), DTLS done (`dtls`), first RTP datagram (`first_packet`), all viewers;
//!   first frame and first keyframe (= first decodable picture), full viewers only (a thin viewer
//!   cannot see the payload);
//! * loss per viewer: thin viewers, RTP sequence gaps on media SSRCs (RTX apart); full viewers,
//!   frames missing from the fixture sequence (after NACK repair), frames str0m flagged
//!   non-contiguous, unknown frames, and the sequence gaps before repair; NACK messages each full
//!   viewer sent (str0m's stats), p50/max and total, and the gateway's `nacks_received` (sequence
//!   numbers it repaired on the media SSRC) and `nacks_rtx` (NACK messages str0m repaired by RTX);
//! * end-to-end latency per frame (publisher write → full viewer receive, same process clock) as
//!   each viewer's p50/p99 over its whole run (the verdict's figure) and over the steady window
//!   alone (`latency_ms.steady_window`, without the join), summarised over viewers; only with
//!   `--publish`;
//! * server CPU from `/proc/<server-pid>/stat` (utime + stime) over the steady window;
//! * packets and bits forwarded per second over the steady window, measured at the viewers (RTP
//!   datagrams and their UDP payload bytes received, all viewers), and from `/v1/stats` deltas
//!   (`packets_out`: RTP written to viewers; `udp_sent`, `udp_sent_bytes`: every datagram, STUN
//!   and RTCP included); server CPU-ns per forwarded packet;
//! * the host's UDP `RcvbufErrors` (`/proc/net/snmp`) over the run and the steady window: drops
//!   in full socket buffers, which with a local gateway are this machine's loss, not the path's.
//!   The counters are per network namespace: run in another one (`ip netns exec`, `--bind-ip`),
//!   they are the viewers' drops alone, not the gateway's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use whip_tests::gateway_probe::{cpu_ns, node_stats as stats};
use whip_tests::media_source::fixture_path;
use whip_tests::rtp_counter::RtpCounts;
use whip_tests::{
    FrameCatalog, LatencyStats, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer,
    WhipPublisher,
};

#[derive(Parser, Debug)]
#[command(about = "Run a WHIP publisher and many WHEP viewers against a gateway; JSON report")]
struct Args {
    /// Gateway base URL (WHIP at BASE/whip/STREAM, WHEP at BASE/whep/STREAM, stats at
    /// BASE/v1/stats).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Stream name (with several publishers: `STREAM-0`, `STREAM-1`, …).
    #[arg(long, default_value = "load")]
    stream: String,
    /// MP4 (H264 + Opus) to publish, looping at real pace; `none` when the stream is published by
    /// someone else.
    #[arg(long, default_value = "none")]
    publish: String,
    /// Publish a synthetic stream at this video bitrate (kbit/s) instead of `--publish`: 720p30
    /// test pattern, H264 baseline CBR, keyframe every second, Opus 64 kbit/s; made once with
    /// ffmpeg (`whip_tests::synthetic`) and cached in the temp directory.
    #[arg(long, conflicts_with = "publish")]
    synthetic_kbps: Option<u32>,
    /// Publishers (streams), each publishing the same media; viewer i watches stream i mod N.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// The MP4 being published, to identify frames (default: the `--publish` file, else
    /// fixtures/short-gop.mp4).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Viewers to run.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Of which full (decrypt, check frames, NACK/PLI, latency), spread evenly over the ramp; the
    /// rest are thin (count SRTP datagrams only, no NACK/PLI).
    #[arg(long, default_value_t = 5)]
    full_viewers: usize,
    /// Viewers started per second.
    #[arg(long, default_value_t = 20.0)]
    ramp_per_sec: f64,
    /// Seconds to keep going after the last viewer joined (the steady window).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The gateway's pid, for its CPU time (only when it runs on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for WHIP and WHEP.
    #[arg(long, env = "WHIP_LOAD_TOKEN")]
    token: Option<String>,
    /// Publisher acts on PLI (jumps to the next keyframe); default: ignores it, like OBS.
    #[arg(long)]
    publisher_honours_pli: bool,
    /// Full viewers never send PLI.
    #[arg(long)]
    no_pli: bool,
    /// Limits for the verdict in the report: loss fraction (frames of full viewers, packets of
    /// thin ones) and p99 latency (ms).
    #[arg(long, default_value_t = 0.01)]
    max_loss: f64,
    #[arg(long, default_value_t = 200.0)]
    max_p99_ms: f64,
    /// Include every viewer's full report in the JSON.
    #[arg(long)]
    per_viewer_full: bool,
    /// Every viewer drops every Nth incoming RTP datagram before anything else sees it: checks
    /// that the loss and NACK figures see loss (full viewers NACK and get repairs, thin ones
    /// count gaps).
    #[arg(long)]
    drop_every: Option<u32>,
    /// Address the publishers' and viewers' UDP sockets bind (their ICE host candidate): this
    /// host's address on the path to the gateway. 127.0.0.1 for a gateway on loopback; e.g.
    /// 10.201.0.2 inside `scripts/netns.sh`'s namespace.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: std::net::IpAddr,
}

/// `RcvbufErrors` of the host's UDP counters (`/proc/net/snmp`): datagrams dropped because a
/// socket's receive buffer was full. Per network namespace: with everything on one host the
/// gateway's socket, our viewers', anyone's; in a namespace of our own, our sockets' only.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn counter(v: &Option<Value>, key: &str) -> Option<u64> {
    v.as_ref()?.get(key)?.as_u64()
}

fn delta(a: &Option<Value>, b: &Option<Value>, key: &str) -> Option<u64> {
    Some(counter(b, key)?.saturating_sub(counter(a, key)?))
}

/// Nearest-rank percentiles.
fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = v.len();
        v[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    json!({
        "n": v.len(),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": v[v.len() - 1],
    })
}

/// Frame loss of a full viewer: missing and damaged frames over those expected.
fn frame_loss(r: &PlayReport) -> f64 {
    let s = &r.sequence;
    let expected = s.frames + s.missing;
    if expected == 0 {
        return 0.0;
    }
    (s.missing + s.unknown) as f64 / expected as f64
}

/// Whether viewer `i` of `n` is full when `k` of them are: `k` viewers spread evenly over the
/// ramp, the first one included (exactly `k`: `i·k mod n` takes each multiple of gcd(k, n) below
/// `n` equally often).
fn is_full(i: usize, n: usize, k: usize) -> bool {
    k >= n || (i * k) % n < k
}

/// Counters summed over the viewers playing, at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    playing: u64,
    connected: u64,
    errors: u64,
    /// Full viewers: video frames received and missing from the fixture sequence.
    frames: u64,
    missing: u64,
    /// All viewers: RTP datagrams and their bytes.
    datagrams: u64,
    bytes: u64,
    /// Thin viewers: media sequence numbers expected and never received.
    thin_expected: u64,
    thin_lost: u64,
}

impl Totals {
    fn of(reports: &[PlayReport]) -> Self {
        let mut t = Totals {
            playing: reports.len() as u64,
            ..Totals::default()
        };
        for r in reports {
            t.connected += u64::from(r.connected_ms.is_some());
            t.errors += u64::from(r.error.is_some());
            t.frames += r.video_frames;
            t.missing += r.sequence.missing;
            t.datagrams += r.rtp.datagrams;
            t.bytes += r.rtp.bytes;
            if r.thin {
                t.thin_expected += r.rtp.media_expected;
                t.thin_lost += r.rtp.media_lost;
            }
        }
        t
    }

    /// Frames missing over expected between `self` (earlier) and `later`.
    fn frame_loss_until(&self, later: &Totals) -> f64 {
        let got = later.frames.saturating_sub(self.frames);
        let lost = later.missing.saturating_sub(self.missing);
        lost as f64 / (got + lost).max(1) as f64
    }

    /// Thin viewers' media packets lost over expected between `self` and `later`.
    fn thin_loss_until(&self, later: &Totals) -> f64 {
        let expected = later.thin_expected.saturating_sub(self.thin_expected);
        let lost = later.thin_lost.saturating_sub(self.thin_lost);
        lost as f64 / expected.max(1) as f64
    }
}

/// When the steady window began: the instant, `/v1/stats`, server CPU ns, our CPU ns, viewers,
/// host UDP receive-buffer drops.
type SteadyStart = (
    Instant,
    Option<Value>,
    Option<u64>,
    Option<u64>,
    Totals,
    Option<u64>,
);

struct Viewers {
    players: Mutex<Vec<WhepPlayer>>,
    refused: Mutex<Vec<String>>,
    started: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    whip_tests::init_cli_logging();
    let args = Args::parse();
    let base = args.base.trim_end_matches('/').to_owned();
    let publishers_n = args.publishers.max(1);
    let stream = |i: usize| {
        if publishers_n == 1 {
            args.stream.clone()
        } else {
            format!("{}-{i}", args.stream)
        }
    };
    let whep_urls: Vec<String> = (0..publishers_n)
        .map(|i| format!("{base}/whep/{}", stream(i)))
        .collect();
    let client = whip_tests::signaling::http_client()?;
    let server_pid = args.server_pid.map(|p| p.to_string());

    // Media: the file we publish, or the one someone else publishes.
    let publish_path = match args.synthetic_kbps {
        Some(kbps) => {
            Some(whip_tests::synthetic::fixture(kbps).context("making the synthetic stream")?)
        }
        None => (args.publish != "none").then(|| PathBuf::from(&args.publish)),
    };
    let fixture = args
        .fixture
        .clone()
        .or_else(|| publish_path.clone())
        .unwrap_or_else(|| fixture_path("short-gop.mp4"));
    let media = Arc::new(MediaSource::open(&fixture)?);
    let catalog: Arc<FrameCatalog> = media.catalog();
    let media_bits_per_sec = {
        let bytes: usize = media
            .video()
            .iter()
            .chain(media.audio())
            .map(|s| s.data.len())
            .sum();
        bytes as f64 * 8.0 / media.period().as_secs_f64().max(1e-3)
    };

    // All publishers start together: they write the same fixture, and the latency log matches
    // a received frame with the latest write of its index, so start skew is its error.
    let mut publishers = Vec::new();
    if publish_path.is_some() {
        let starts: Vec<_> = (0..publishers_n)
            .map(|i| {
                let opts = PublishOptions {
                    token: args.token.clone(),
                    bind: std::net::SocketAddr::new(args.bind_ip, 0),
                    ignore_keyframe_requests: !args.publisher_honours_pli,
                    ..PublishOptions::new(format!("{base}/whip/{}", stream(i)))
                };
                tokio::spawn(WhipPublisher::start(media.clone(), opts))
            })
            .collect();
        for p in starts {
            publishers.push(
                p.await
                    .context("publisher task")?
                    .context("starting a publisher")?,
            );
        }
        for p in &publishers {
            p.wait_for_frames(10, Duration::from_secs(15)).await?;
        }
    }

    let viewers = Arc::new(Viewers {
        players: Mutex::new(Vec::with_capacity(args.viewers)),
        refused: Mutex::new(Vec::new()),
        started: AtomicU64::new(0),
    });
    let ramp_secs = args.viewers as f64 / args.ramp_per_sec.max(1e-3);
    // Viewers are stopped by us; their own limit is only a safety net.
    let play_for = Duration::from_secs_f64(ramp_secs + args.duration + 120.0);
    let run_start = Instant::now();
    let stats_start = stats(&client, &base).await;
    let cpu_start = (server_pid.as_deref().and_then(cpu_ns), cpu_ns("self"));
    let rcvbuf_start = udp_rcvbuf_errors();

    // Ramp: each POST in its own task, so that a slow answer does not slow the ramp.
    let ramp = {
        let viewers = viewers.clone();
        let catalog = catalog.clone();
        let opts = PlayOptions {
            token: args.token.clone(),
            bind: std::net::SocketAddr::new(args.bind_ip, 0),
            duration: play_for,
            request_keyframes: !args.no_pli,
            drop_every: args.drop_every,
            ..PlayOptions::new(whep_urls[0].clone())
        };
        let whep_urls = whep_urls.clone();
        let (n, k) = (args.viewers, args.full_viewers);
        let interval = Duration::from_secs_f64(1.0 / args.ramp_per_sec.max(1e-3));
        tokio::spawn(async move {
            let mut joins = Vec::with_capacity(n);
            let t0 = tokio::time::Instant::now();
            for i in 0..n {
                tokio::time::sleep_until(t0 + interval * i as u32).await;
                let viewers = viewers.clone();
                let catalog = catalog.clone();
                let opts = PlayOptions {
                    thin: !is_full(i, n, k),
                    url: whep_urls[i % whep_urls.len()].clone(),
                    ..opts.clone()
                };
                viewers.started.fetch_add(1, Ordering::Relaxed);
                joins.push(tokio::spawn(async move {
                    match WhepPlayer::start(catalog, opts).await {
                        Ok(p) => viewers.players.lock().await.push(p),
                        Err(e) => viewers.refused.lock().await.push(format!("{e:#}")),
                    }
                }));
            }
            for j in joins {
                let _ = j.await;
            }
        })
    };

    // Progress until the ramp is done, then the steady window.
    let mut last = Totals::default();
    let mut last_tick = Instant::now();
    let mut steady: Option<SteadyStart> = None;
    let steady_end;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now_totals = {
            let players = viewers.players.lock().await;
            Totals::of(&players.iter().map(WhepPlayer::report).collect::<Vec<_>>())
        };
        let refused = viewers.refused.lock().await.len();
        let now = Instant::now();
        let secs = now.duration_since(last_tick).as_secs_f64().max(1e-3);
        let rate = |f: fn(&Totals) -> u64| f(&now_totals).saturating_sub(f(&last)) as f64 / secs;
        let server_cpu = server_pid.as_deref().and_then(cpu_ns);
        let t = &now_totals;
        eprintln!(
            "[{:6.1}s] viewers started {} playing {} connected {} refused {refused} errors {} | \
             rx {:.0} pkt/s {:.1} Mbit/s | thin packet loss {:.2} % | full: frames/s {:.0} \
             missing {} ({:.2} %){}",
            run_start.elapsed().as_secs_f64(),
            viewers.started.load(Ordering::Relaxed),
            t.playing,
            t.connected,
            t.errors,
            rate(|t| t.datagrams),
            rate(|t| t.bytes) * 8.0 / 1e6,
            100.0 * Totals::default().thin_loss_until(t),
            rate(|t| t.frames),
            t.missing,
            100.0 * Totals::default().frame_loss_until(t),
            match (server_cpu, cpu_start.0) {
                (Some(a), Some(b)) => format!(
                    " | server CPU {:.0} % avg",
                    100.0 * (a - b) as f64 / run_start.elapsed().as_nanos() as f64
                ),
                _ => String::new(),
            },
        );
        (last, last_tick) = (now_totals, now);
        if steady.is_none() && ramp.is_finished() {
            steady = Some((
                Instant::now(),
                stats(&client, &base).await,
                server_pid.as_deref().and_then(cpu_ns),
                cpu_ns("self"),
                now_totals,
                udp_rcvbuf_errors(),
            ));
        }
        if let Some((t, ..)) = &steady
            && t.elapsed().as_secs_f64() >= args.duration
        {
            steady_end = now_totals;
            break;
        }
        if let Some(p) = publishers.iter().find(|p| p.is_finished()) {
            bail!("a publisher stopped: {:?}", p.stats());
        }
    }
    let (steady_t0, stats_s0, server_cpu_s0, self_cpu_s0, steady_start, rcvbuf_s0) =
        steady.context("no steady window")?;
    let rcvbuf_end = udp_rcvbuf_errors();
    let stats_end = stats(&client, &base).await;
    let server_cpu_end = server_pid.as_deref().and_then(cpu_ns);
    let self_cpu_end = cpu_ns("self");
    let steady_secs = steady_t0.elapsed().as_secs_f64();

    // Stop everyone (DELETE), a few at a time; first each full viewer's latency over the steady
    // window alone (its whole-run figures include the join).
    let players = std::mem::take(&mut *viewers.players.lock().await);
    let steady_end_at = Instant::now();
    let steady_lat: Vec<LatencyStats> = players
        .iter()
        .filter_map(|p| p.latency_between(steady_t0, steady_end_at))
        .collect();
    let playing_at_end = players.len();
    let mut reports: Vec<PlayReport> = Vec::with_capacity(players.len());
    let mut stops = tokio::task::JoinSet::new();
    for p in players {
        stops.spawn(p.stop());
    }
    while let Some(r) = stops.join_next().await {
        if let Ok(Ok(r)) = r {
            reports.push(r);
        }
    }
    let mut publisher_stats = Vec::with_capacity(publishers.len());
    for p in publishers {
        publisher_stats.push(p.stop().await.context("stopping a publisher")?);
    }
    let refused = std::mem::take(&mut *viewers.refused.lock().await);

    // Figures. `full` and `thin` split the viewers; join figures come from both.
    let (full, thin): (Vec<&PlayReport>, Vec<&PlayReport>) = reports.iter().partition(|r| !r.thin);
    let pick = |of: &[&PlayReport], f: fn(&PlayReport) -> Option<f64>| {
        of.iter().copied().filter_map(f).collect::<Vec<_>>()
    };
    let all: Vec<&PlayReport> = reports.iter().collect();
    let sum =
        |of: &[&PlayReport], f: fn(&PlayReport) -> u64| of.iter().copied().map(f).sum::<u64>();
    let total_missing = sum(&full, |r| r.sequence.missing);
    let total_frames = sum(&full, |r| r.sequence.frames);
    let loss = total_missing as f64 / (total_frames + total_missing).max(1) as f64;
    let packet_loss = |of: &[&PlayReport]| {
        sum(of, |r| r.rtp.media_lost) as f64 / sum(of, |r| r.rtp.media_expected).max(1) as f64
    };
    let lat_p50 = pick(&full, |r| r.latency_ms.as_ref().map(|l| l.p50));
    let lat_p99 = pick(&full, |r| r.latency_ms.as_ref().map(|l| l.p99));
    let lat_max = pick(&full, |r| r.latency_ms.as_ref().map(|l| l.max));
    let worst_p99 = lat_p99.iter().copied().fold(f64::NAN, f64::max);
    // The verdict uses the median viewer's p99: a player's samples cover its whole run, join
    // included (the keyframe-run burst delays the first live frames behind it), and PlayReport
    // keeps percentiles only, so a steady-window p99 over all frames is not available yet.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2).copied()
    };
    let median_p99 = median(lat_p99.clone());
    let steady_p99: Vec<f64> = steady_lat.iter().map(|l| l.p99).collect();
    let steady_median_p99 = median(steady_p99.clone());
    let failed = reports.iter().filter(|r| r.error.is_some()).count();

    let d_out = delta(&stats_s0, &stats_end, "packets_out");
    let d_udp = delta(&stats_s0, &stats_end, "udp_sent");
    let d_in = delta(&stats_s0, &stats_end, "packets_in");
    let d_udp_bytes = delta(&stats_s0, &stats_end, "udp_sent_bytes");
    let d_messages = delta(&stats_s0, &stats_end, "udp_messages");
    let d_send_calls = delta(&stats_s0, &stats_end, "udp_send_calls");
    let d_nacks = delta(&stats_start, &stats_end, "nacks_received");
    let d_nacks_rtx = delta(&stats_start, &stats_end, "nacks_rtx");
    let server_cpu_ns = match (server_cpu_s0, server_cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let client_cpu_ns = match (self_cpu_s0, self_cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let per_sec = |v: Option<u64>| v.map(|v| v as f64 / steady_secs);
    let cpu_per_pkt = |pkts: Option<u64>| match (server_cpu_ns, pkts) {
        (Some(c), Some(p)) if p > 0 => Some(c as f64 / p as f64),
        _ => None,
    };
    let viewer_datagrams = steady_end.datagrams.saturating_sub(steady_start.datagrams);
    let viewer_bytes = steady_end.bytes.saturating_sub(steady_start.bytes);
    let steady_loss = steady_start.frame_loss_until(&steady_end);
    let steady_thin_loss = steady_start.thin_loss_until(&steady_end);
    let within_limits = refused.is_empty()
        && failed == 0
        && steady_loss <= args.max_loss
        && steady_thin_loss <= args.max_loss
        && median_p99.is_none_or(|p| p <= args.max_p99_ms);

    let per_viewer: Vec<Value> = reports
        .iter()
        .map(|r| {
            if args.per_viewer_full {
                serde_json::to_value(r).unwrap_or(Value::Null)
            } else {
                per_viewer_summary(r)
            }
        })
        .collect();

    let report = json!({
        "args": {
            "base": base, "stream": args.stream, "publish": args.publish,
            "fixture": fixture.display().to_string(), "viewers": args.viewers,
            "full_viewers": args.full_viewers,
            "ramp_per_sec": args.ramp_per_sec, "duration": args.duration,
            "server_pid": args.server_pid,
        },
        "media_bits_per_sec": media_bits_per_sec,
        "viewers": {
            "requested": args.viewers,
            "full": full.len(),
            "thin": thin.len(),
            "playing_at_end": playing_at_end,
            "refused": refused.len(),
            "refused_first": refused.first(),
            "failed_while_playing": failed,
            "reports": reports.len(),
        },
        "join_ms": {
            "http": percentiles(pick(&all, |r| r.answer_ms)),
            "ice": percentiles(pick(&all, |r| r.ice_connected_ms)),
            "dtls": percentiles(pick(&all, |r| r.connected_ms)),
            "first_packet": percentiles(pick(&all, |r| r.first_packet_ms)),
            "first_frame": percentiles(pick(&full, |r| r.first_frame_ms)),
            "first_keyframe": percentiles(pick(&full, |r| r.first_keyframe_ms)),
            "note": "from the WHEP POST to: 201, ICE connected, DTLS done, first RTP datagram (all viewers); first frame, first keyframe (full viewers only)",
        },
        "loss": {
            "frames_received": total_frames,
            "frames_missing": total_missing,
            "fraction": loss,
            "steady_window_fraction": steady_loss,
            "note": "frames of full viewers, after NACK repair. fraction: whole run incl. joins; steady_window_fraction (the verdict): frames missing / expected after the last join",
            "per_viewer_fraction": percentiles(full.iter().map(|r| frame_loss(r)).collect()),
            "non_contiguous_total": sum(&full, |r| r.non_contiguous),
            "plis_sent_total": sum(&full, |r| r.keyframe_requests_sent),
            "thin_packets": {
                "received": sum(&thin, |r| r.rtp.media_packets),
                "lost": sum(&thin, |r| r.rtp.media_lost),
                "fraction": packet_loss(&thin),
                "steady_window_fraction": steady_thin_loss,
                "per_viewer_fraction": percentiles(thin.iter().map(|r| r.rtp.media_loss()).collect()),
                "note": "RTP sequence gaps on media SSRCs of thin viewers, which never NACK; steady_window_fraction is in the verdict too",
            },
            "full_packets_before_repair": {
                "fraction": packet_loss(&full),
                "per_viewer_fraction": percentiles(full.iter().map(|r| r.rtp.media_loss()).collect()),
                "repair_packets": sum(&full, |r| r.rtp.repair_packets),
            },
            "nacks_sent_per_full_viewer": percentiles(full.iter().map(|r| r.nacks_sent as f64).collect()),
            "nacks_sent_total": sum(&full, |r| r.nacks_sent),
            "gateway_nacks_received": d_nacks,
            "gateway_nacks_rtx": d_nacks_rtx,
            "host_udp_rcvbuf_errors": {
                "run": rcvbuf_start.zip(rcvbuf_end).map(|(a, b)| b.saturating_sub(a)),
                "steady_window": rcvbuf_s0.zip(rcvbuf_end).map(|(a, b)| b.saturating_sub(a)),
                "note": "/proc/net/snmp RcvbufErrors: datagrams dropped by a full socket receive buffer anywhere in this network namespace (gateway, viewers, anyone when all share it; only ours when whip-load runs in a namespace of its own); loss the gateway did not cause when the server is local",
            },
        },
        "latency_ms": {
            "per_viewer_p50": percentiles(lat_p50),
            "per_viewer_p99": percentiles(lat_p99.clone()),
            "per_viewer_max": percentiles(lat_max),
            "worst_viewer_p99": (!lat_p99.is_empty()).then_some(worst_p99),
            "median_viewer_p99": median_p99,
            "note": "full viewers, each over its whole run incl. the join; the verdict uses median_viewer_p99; steady_window: the frames each full viewer received in the steady window only",
            "steady_window": {
                "per_viewer_p50": percentiles(steady_lat.iter().map(|l| l.p50).collect()),
                "per_viewer_p99": percentiles(steady_p99.clone()),
                "median_viewer_p99": steady_median_p99,
                "worst_viewer_p99": steady_p99.iter().copied().reduce(f64::max),
            },
        },
        "steady_window": {
            "seconds": steady_secs,
            "server_cpu_ns": server_cpu_ns,
            "server_cpu_cores": server_cpu_ns.map(|c| c as f64 / 1e9 / steady_secs),
            "client_cpu_cores": client_cpu_ns.map(|c| c as f64 / 1e9 / steady_secs),
            "client_cpu_ns_per_datagram_received": client_cpu_ns.filter(|_| viewer_datagrams > 0).map(|c| c as f64 / viewer_datagrams as f64),
            "viewer_rtp_packets_per_sec": viewer_datagrams as f64 / steady_secs,
            "viewer_rtp_bits_per_sec": viewer_bytes as f64 * 8.0 / steady_secs,
            "packets_in_per_sec": per_sec(d_in),
            "rtp_packets_out_per_sec": per_sec(d_out),
            "udp_datagrams_sent_per_sec": per_sec(d_udp),
            "udp_bits_sent_per_sec": per_sec(d_udp_bytes).map(|b| b * 8.0),
            "udp_messages_per_sec": per_sec(d_messages),
            "udp_send_calls_per_sec": per_sec(d_send_calls),
            "server_cpu_ns_per_rtp_packet_out": cpu_per_pkt(d_out),
            "server_cpu_ns_per_udp_datagram_sent": cpu_per_pkt(d_udp),
            "note": "viewer_*: RTP datagrams and their UDP payload bytes received by all viewers (measured here); the others from /v1/stats deltas (udp_*: every datagram the gateway sent, STUN and RTCP included; messages: GSO buffers and lone datagrams; send_calls: syscalls; null when the gateway has no such counter)",
        },
        "publishers": publisher_stats,
        "limits": { "max_loss": args.max_loss, "max_p99_ms": args.max_p99_ms },
        "within_limits": within_limits,
        "per_viewer": per_viewer,
    });
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    let j = &report["join_ms"];
    let s = &report["steady_window"];
    println!(
        "RESULT viewers={} full={} playing={} refused={} failed={failed} loss={:.4} steady_loss={steady_loss:.4} \
         steady_thin_packet_loss={steady_thin_loss:.4} worst_p99_ms={} median_p99_ms={} \
         steady_median_p99_ms={} \
         join_dtls_p50={} p99={} first_keyframe_p50={} p99={} rtp_out_per_sec={} viewer_rx_mbit_per_sec={:.1} \
         server_cores={} client_cores={} cpu_ns_per_rtp_out={} within_limits={within_limits}",
        args.viewers,
        full.len(),
        playing_at_end,
        refused.len(),
        loss,
        report["latency_ms"]["worst_viewer_p99"],
        report["latency_ms"]["median_viewer_p99"],
        report["latency_ms"]["steady_window"]["median_viewer_p99"],
        j["dtls"]["p50"],
        j["dtls"]["p99"],
        j["first_keyframe"]["p50"],
        j["first_keyframe"]["p99"],
        s["rtp_packets_out_per_sec"],
        viewer_bytes as f64 * 8.0 / steady_secs / 1e6,
        s["server_cpu_cores"],
        s["client_cpu_cores"],
        s["server_cpu_ns_per_rtp_packet_out"],
    );
    Ok(())
}

/// One viewer in the report (without `--per-viewer-full`).
fn per_viewer_summary(r: &PlayReport) -> Value {
    let RtpCounts {
        datagrams,
        bytes,
        media_expected,
        media_lost,
        repair_packets,
        ..
    } = r.rtp;
    json!({
        "thin": r.thin,
        "answer_ms": r.answer_ms,
        "ice_connected_ms": r.ice_connected_ms,
        "connected_ms": r.connected_ms,
        "first_packet_ms": r.first_packet_ms,
        "first_frame_ms": r.first_frame_ms,
        "first_keyframe_ms": r.first_keyframe_ms,
        "rtp_datagrams": datagrams,
        "rtp_bytes": bytes,
        "media_packets_expected": media_expected,
        "media_packets_lost": media_lost,
        "packet_loss": r.rtp.media_loss(),
        "repair_packets": repair_packets,
        "nacks_sent": r.nacks_sent,
        "video_frames": r.video_frames,
        "missing_frames": r.sequence.missing,
        "unknown_frames": r.sequence.unknown,
        "non_contiguous": r.non_contiguous,
        "undecodable": r.sequence.undecodable,
        "plis_sent": r.keyframe_requests_sent,
        "frame_loss": frame_loss(r),
        "latency_ms": r.latency_ms,
        "error": r.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_viewers_are_exactly_k_spread_over_the_ramp() {
        for (n, k) in [(200, 5), (10, 4), (7, 7), (7, 9), (5, 0), (1, 1), (12, 8)] {
            let full: Vec<usize> = (0..n).filter(|&i| is_full(i, n, k)).collect();
            assert_eq!(full.len(), k.min(n), "n={n} k={k}");
            if k > 0 {
                assert_eq!(full[0], 0, "the first viewer is full");
            }
        }
        let full: Vec<usize> = (0..200).filter(|&i| is_full(i, 200, 5)).collect();
        assert_eq!(full, [0, 40, 80, 120, 160]);
    }
}
