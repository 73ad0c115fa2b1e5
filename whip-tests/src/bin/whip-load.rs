//! Load generator: one WHIP publisher (an MP4 looped at real pace, or none when something else
//! publishes) and N WHEP viewers in this one process, against any gateway base URL.
//!
//! ```text
//! whip-load --base http://127.0.0.1:8080 --stream load --publish fixtures/short-gop.mp4 \
//!     --viewers 200 --ramp-per-sec 20 --duration 10 --report out.json --server-pid 1234
//! ```
//!
//! Viewers join at `--ramp-per-sec`; the run goes on `--duration` seconds after the last one has
//! joined (the *steady window*), then every viewer DELETEs. A progress line goes to stderr every
//! second; the JSON report goes to `--report` (and a one-line summary to stdout).
//!
//! Every viewer is a full str0m peer: real ICE, DTLS, SRTP decryption of every packet, consent
//! freshness, and each video frame checked against the fixture (`--fixture`, default the published
//! file). There is no "thin" viewer mode yet, so the client side (this process) usually runs out of
//! CPU before a gateway does: the report gives this process's CPU too.
//!
//! Figures and where they come from:
//! * join times per viewer (`PlayReport`): POST → 201 (`answer_ms`), POST → ICE + DTLS done
//!   (`connected_ms`; ICE and DTLS are not split yet), POST → first frame, POST → first keyframe;
//!   p50/p95/p99/max over viewers;
//! * loss per viewer: frames missing from the fixture sequence, frames str0m flagged
//!   non-contiguous, unknown (damaged) frames; NACKs only as the gateway's `nacks_received` total
//!   (the player does not count the NACKs it sends);
//! * end-to-end latency per frame (publisher write → viewer receive, same process clock) as each
//!   viewer's p50/p99, summarised over viewers; only with `--publish`;
//! * server CPU from `/proc/<server-pid>/stat` (utime + stime) over the steady window;
//! * packets forwarded per second from `/v1/stats` deltas (`packets_out`: RTP written to viewers;
//!   `udp_sent`: every datagram) over the steady window, and server CPU-ns per forwarded packet;
//!   bits per second are estimated as the fixture's media bitrate × viewers playing (the gateway
//!   counts no bytes).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use whip_tests::media_source::fixture_path;
use whip_tests::{
    FrameCatalog, MediaSource, PlayOptions, PlayReport, PublishOptions, WhepPlayer, WhipPublisher,
};

#[derive(Parser, Debug)]
#[command(about = "Run a WHIP publisher and many WHEP viewers against a gateway; JSON report")]
struct Args {
    /// Gateway base URL (WHIP at BASE/whip/STREAM, WHEP at BASE/whep/STREAM, stats at
    /// BASE/v1/stats).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Stream name.
    #[arg(long, default_value = "load")]
    stream: String,
    /// MP4 (H264 + Opus) to publish, looping at real pace; `none` when the stream is published by
    /// someone else.
    #[arg(long, default_value = "none")]
    publish: String,
    /// The MP4 being published, to identify frames (default: the `--publish` file, else
    /// fixtures/short-gop.mp4).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Viewers to run.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
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
    /// Viewers never send PLI.
    #[arg(long)]
    no_pli: bool,
    /// Limits for the verdict in the report: loss fraction and p99 latency (ms).
    #[arg(long, default_value_t = 0.01)]
    max_loss: f64,
    #[arg(long, default_value_t = 200.0)]
    max_p99_ms: f64,
    /// Include every viewer's full report in the JSON.
    #[arg(long)]
    per_viewer_full: bool,
}

/// utime + stime of a process (`"self"` or a pid), in nanoseconds.
fn cpu_ns(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let ticks = |i: usize| rest.get(i - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) * (1_000_000_000 / clock_ticks()))
}

fn clock_ticks() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

async fn stats(client: &reqwest::Client, base: &str) -> Option<Value> {
    let resp = client
        .get(format!("{base}/v1/stats"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&resp.text().await.ok()?).ok()
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

fn loss_of(r: &PlayReport) -> f64 {
    let s = &r.sequence;
    let expected = s.frames + s.missing;
    if expected == 0 {
        return 0.0;
    }
    (s.missing + s.unknown) as f64 / expected as f64
}

/// When the steady window began: the instant, `/v1/stats`, server CPU ns, our CPU ns.
type SteadyStart = (Instant, Option<Value>, Option<u64>, Option<u64>);

struct Viewers {
    players: Mutex<Vec<WhepPlayer>>,
    refused: Mutex<Vec<String>>,
    started: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let base = args.base.trim_end_matches('/').to_owned();
    let whip_url = format!("{base}/whip/{}", args.stream);
    let whep_url = format!("{base}/whep/{}", args.stream);
    let client = whip_tests::signaling::http_client()?;
    let server_pid = args.server_pid.map(|p| p.to_string());

    // Media: the file we publish, or the one someone else publishes.
    let publish_path = (args.publish != "none").then(|| PathBuf::from(&args.publish));
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

    let publisher = match &publish_path {
        Some(_) => {
            let opts = PublishOptions {
                token: args.token.clone(),
                ignore_keyframe_requests: !args.publisher_honours_pli,
                ..PublishOptions::new(whip_url.clone())
            };
            let p = WhipPublisher::start(media.clone(), opts)
                .await
                .context("starting the publisher")?;
            p.wait_for_frames(10, Duration::from_secs(15)).await?;
            Some(p)
        }
        None => None,
    };

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

    // Ramp: each POST in its own task, so that a slow answer does not slow the ramp.
    let ramp = {
        let viewers = viewers.clone();
        let catalog = catalog.clone();
        let opts = PlayOptions {
            token: args.token.clone(),
            duration: play_for,
            request_keyframes: !args.no_pli,
            ..PlayOptions::new(whep_url.clone())
        };
        let n = args.viewers;
        let interval = Duration::from_secs_f64(1.0 / args.ramp_per_sec.max(1e-3));
        tokio::spawn(async move {
            let mut joins = Vec::with_capacity(n);
            let t0 = tokio::time::Instant::now();
            for i in 0..n {
                tokio::time::sleep_until(t0 + interval * i as u32).await;
                let viewers = viewers.clone();
                let catalog = catalog.clone();
                let opts = opts.clone();
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
    let mut last_frames = 0u64;
    let mut last_tick = Instant::now();
    let mut steady: Option<SteadyStart> = None;
    // (frames received, frames missing) summed over viewers at the start and end of the window.
    let mut steady_frames0 = (0u64, 0u64);
    let steady_frames1;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (connected, frames, missing, errors, playing) = {
            let players = viewers.players.lock().await;
            let mut c = (0u64, 0u64, 0u64, 0u64, players.len() as u64);
            for p in players.iter() {
                let r = p.report();
                c.0 += u64::from(r.connected_ms.is_some());
                c.1 += r.video_frames;
                c.2 += r.sequence.missing;
                c.3 += u64::from(r.error.is_some());
            }
            c
        };
        let refused = viewers.refused.lock().await.len();
        let now = Instant::now();
        let fps = (frames.saturating_sub(last_frames)) as f64
            / now.duration_since(last_tick).as_secs_f64();
        (last_frames, last_tick) = (frames, now);
        let server_cpu = server_pid.as_deref().and_then(cpu_ns);
        eprintln!(
            "[{:6.1}s] viewers started {} playing {playing} connected {connected} refused {refused} \
             errors {errors} | video frames/s {fps:.0} | missing frames {missing} ({:.2} %){}",
            run_start.elapsed().as_secs_f64(),
            viewers.started.load(Ordering::Relaxed),
            100.0 * missing as f64 / (frames + missing).max(1) as f64,
            match (server_cpu, cpu_start.0) {
                (Some(a), Some(b)) => format!(
                    " | server CPU {:.0} % avg",
                    100.0 * (a - b) as f64 / run_start.elapsed().as_nanos() as f64
                ),
                _ => String::new(),
            },
        );
        if steady.is_none() && ramp.is_finished() {
            steady_frames0 = (frames, missing);
            steady = Some((
                Instant::now(),
                stats(&client, &base).await,
                server_pid.as_deref().and_then(cpu_ns),
                cpu_ns("self"),
            ));
        }
        if let Some((t, ..)) = &steady
            && t.elapsed().as_secs_f64() >= args.duration
        {
            steady_frames1 = (frames, missing);
            break;
        }
        if let Some(p) = &publisher
            && p.is_finished()
        {
            bail!("the publisher stopped: {:?}", p.stats());
        }
    }
    let (steady_t0, stats_s0, server_cpu_s0, self_cpu_s0) = steady.context("no steady window")?;
    let stats_end = stats(&client, &base).await;
    let server_cpu_end = server_pid.as_deref().and_then(cpu_ns);
    let self_cpu_end = cpu_ns("self");
    let steady_secs = steady_t0.elapsed().as_secs_f64();

    // Stop everyone (DELETE), a few at a time.
    let players = std::mem::take(&mut *viewers.players.lock().await);
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
    let publisher_stats = match publisher {
        Some(p) => Some(p.stop().await.context("stopping the publisher")?),
        None => None,
    };
    let refused = std::mem::take(&mut *viewers.refused.lock().await);

    // Figures.
    let pick = |f: fn(&PlayReport) -> Option<f64>| reports.iter().filter_map(f).collect::<Vec<_>>();
    let losses: Vec<f64> = reports.iter().map(loss_of).collect();
    let total_missing: u64 = reports.iter().map(|r| r.sequence.missing).sum();
    let total_frames: u64 = reports.iter().map(|r| r.sequence.frames).sum();
    let loss = total_missing as f64 / (total_frames + total_missing).max(1) as f64;
    let lat_p50 = pick(|r| r.latency_ms.as_ref().map(|l| l.p50));
    let lat_p99 = pick(|r| r.latency_ms.as_ref().map(|l| l.p99));
    let lat_max = pick(|r| r.latency_ms.as_ref().map(|l| l.max));
    let worst_p99 = lat_p99.iter().copied().fold(f64::NAN, f64::max);
    // The verdict uses the median viewer's p99: a player's samples cover its whole run, join
    // included (the keyframe-run burst delays the first live frames behind it), and PlayReport
    // keeps percentiles only, so a steady-window p99 over all frames is not available yet.
    let median_p99 = {
        let mut v = lat_p99.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2).copied()
    };
    let failed = reports.iter().filter(|r| r.error.is_some()).count();

    let d_out = delta(&stats_s0, &stats_end, "packets_out");
    let d_udp = delta(&stats_s0, &stats_end, "udp_sent");
    let d_in = delta(&stats_s0, &stats_end, "packets_in");
    let d_nacks = delta(&stats_start, &stats_end, "nacks_received");
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
    let steady_loss = {
        let got = steady_frames1.0.saturating_sub(steady_frames0.0);
        let lost = steady_frames1.1.saturating_sub(steady_frames0.1);
        lost as f64 / (got + lost).max(1) as f64
    };
    let within_limits = refused.is_empty()
        && failed == 0
        && steady_loss <= args.max_loss
        && median_p99.is_none_or(|p| p <= args.max_p99_ms);

    let per_viewer: Vec<Value> = reports
        .iter()
        .map(|r| {
            if args.per_viewer_full {
                serde_json::to_value(r).unwrap_or(Value::Null)
            } else {
                json!({
                    "answer_ms": r.answer_ms,
                    "connected_ms": r.connected_ms,
                    "first_frame_ms": r.first_frame_ms,
                    "first_keyframe_ms": r.first_keyframe_ms,
                    "video_frames": r.video_frames,
                    "missing_frames": r.sequence.missing,
                    "unknown_frames": r.sequence.unknown,
                    "non_contiguous": r.non_contiguous,
                    "undecodable": r.sequence.undecodable,
                    "plis_sent": r.keyframe_requests_sent,
                    "loss": loss_of(r),
                    "latency_ms": r.latency_ms,
                    "error": r.error,
                })
            }
        })
        .collect();

    let report = json!({
        "args": {
            "base": base, "stream": args.stream, "publish": args.publish,
            "fixture": fixture.display().to_string(), "viewers": args.viewers,
            "ramp_per_sec": args.ramp_per_sec, "duration": args.duration,
            "server_pid": args.server_pid,
        },
        "media_bits_per_sec": media_bits_per_sec,
        "viewers": {
            "requested": args.viewers,
            "playing_at_end": playing_at_end,
            "refused": refused.len(),
            "refused_first": refused.first(),
            "failed_while_playing": failed,
            "reports": reports.len(),
        },
        "join_ms": {
            "http_answer": percentiles(pick(|r| r.answer_ms)),
            "ice_dtls_connected": percentiles(pick(|r| r.connected_ms)),
            "first_frame": percentiles(pick(|r| r.first_frame_ms)),
            "first_keyframe": percentiles(pick(|r| r.first_keyframe_ms)),
            "note": "all from the WHEP POST; ICE and DTLS are one figure (connected_ms), first packet is not measured separately",
        },
        "loss": {
            "frames_received": total_frames,
            "frames_missing": total_missing,
            "fraction": loss,
            "steady_window_fraction": steady_loss,
            "note": "fraction: whole run incl. joins; steady_window_fraction (the verdict): frames missing / expected after the last join",
            "per_viewer_fraction": percentiles(losses),
            "non_contiguous_total": reports.iter().map(|r| r.non_contiguous).sum::<u64>(),
            "plis_sent_total": reports.iter().map(|r| r.keyframe_requests_sent).sum::<u64>(),
            "gateway_nacks_received": d_nacks,
        },
        "latency_ms": {
            "per_viewer_p50": percentiles(lat_p50),
            "per_viewer_p99": percentiles(lat_p99.clone()),
            "per_viewer_max": percentiles(lat_max),
            "worst_viewer_p99": (!lat_p99.is_empty()).then_some(worst_p99),
            "median_viewer_p99": median_p99,
            "note": "per viewer over its whole run incl. the join; the verdict uses median_viewer_p99",
        },
        "steady_window": {
            "seconds": steady_secs,
            "server_cpu_ns": server_cpu_ns,
            "server_cpu_cores": server_cpu_ns.map(|c| c as f64 / 1e9 / steady_secs),
            "client_cpu_cores": client_cpu_ns.map(|c| c as f64 / 1e9 / steady_secs),
            "packets_in_per_sec": per_sec(d_in),
            "rtp_packets_out_per_sec": per_sec(d_out),
            "udp_datagrams_sent_per_sec": per_sec(d_udp),
            "est_media_bits_out_per_sec": media_bits_per_sec * playing_at_end as f64,
            "server_cpu_ns_per_rtp_packet_out": cpu_per_pkt(d_out),
            "server_cpu_ns_per_udp_datagram_sent": cpu_per_pkt(d_udp),
        },
        "publisher": publisher_stats,
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
        "RESULT viewers={} playing={} refused={} failed={failed} loss={:.4} steady_loss={steady_loss:.4} worst_p99_ms={} median_p99_ms={} \
         first_keyframe_p50={} p99={} rtp_out_per_sec={} server_cores={} client_cores={} \
         cpu_ns_per_rtp_out={} within_limits={within_limits}",
        args.viewers,
        playing_at_end,
        refused.len(),
        loss,
        report["latency_ms"]["worst_viewer_p99"],
        report["latency_ms"]["median_viewer_p99"],
        j["first_keyframe"]["p50"],
        j["first_keyframe"]["p99"],
        s["rtp_packets_out_per_sec"],
        s["server_cpu_cores"],
        s["client_cpu_cores"],
        s["server_cpu_ns_per_rtp_packet_out"],
    );
    Ok(())
}
