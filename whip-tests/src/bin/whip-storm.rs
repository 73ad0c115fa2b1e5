//! Join storms, join/leave churn and memory per session against a running gateway
//! (benchmarks 4 and 6 of `BENCHMARKS.md`).
//!
//! ```text
//! whip-storm --base http://127.0.0.1:8080 --server-pid 1234 storm --rates 100,200,500,1000,2000
//! whip-storm --base http://127.0.0.1:8080 --server-pid 1234 churn --cycles 10000 --parallel 4
//! whip-storm --base http://127.0.0.1:8080 --server-pid 1234 --publish silent memory --sessions 500
//! ```
//!
//! Every mode first starts the stream's publisher (`--publish`): an MP4 looped at real pace
//! (default `fixtures/short-gop.mp4`), `silent` (a WHIP session that connects and never sends:
//! the stream exists, no media flows) or `none` (someone else publishes `--stream`).
//!
//! * `storm`: for each rate in `--rates` (joins/s), `rate × --step-secs` viewers join on an open
//!   schedule; a join is WHEP POST → ICE + DTLS connected → first RTP packet (connected only with
//!   a silent publisher), and the viewer leaves (DELETE) right after it, so the storm measures
//!   joins, not fan-out. Per step: p50/p95/p99/max join times from the POST, failures, the rate
//!   achieved, gateway and client CPU. Steps stop at the first one with p99 > `--max-p99-ms` or
//!   any failure; the last one within limits is the sustained rate.
//! * `churn`: `--cycles` joins (to the first packet) and leaves, `--parallel` at a time; the
//!   gateway's RSS (`--server-pid`) and `/v1/stats` sessions every `--sample-every` cycles and
//!   after the sessions are back to their baseline; growth per 1,000 cycles.
//! * `memory`: RSS with no session, with the publisher, and with `--sessions` viewers joined and
//!   held (kept alive, receiving whatever flows) for `--settle-secs`; bytes per session. With
//!   `--publish silent` these are idle sessions; with a file they are viewers of a playing stream.
//!
//! Viewers are [`whip_tests::light_client`] peers (shared DTLS certificate and configuration,
//! RTP mode, no frame checks), so the client needs far less CPU per join than `whip-load`'s
//! full players; the report still gives this process's CPU next to the gateway's, because on
//! one machine they share the cores. JSON report (`--report`), one `RESULT` line on stdout,
//! progress on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use whip_tests::gateway_probe::{
    CpuMeter, node_stats, rss_bytes, session_count, wait_for_sessions,
};
use whip_tests::light_client::{Goal, JoinTimes, Joined, Role, SharedCrypto, join};
use whip_tests::media_source::fixture_path;
use whip_tests::signaling::{Resource, http_client};
use whip_tests::{LatencyStats, MediaSource, PublishOptions, WhipPublisher};

#[derive(Parser, Debug)]
#[command(about = "Join storm, join/leave churn and memory per session against a gateway")]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(ClapArgs, Debug, Clone)]
struct Common {
    /// Gateway base URL (WHIP at BASE/whip/STREAM, WHEP at BASE/whep/STREAM).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Stream name.
    #[arg(long, global = true, default_value = "storm")]
    stream: String,
    /// MP4 (H264 + Opus) to publish in a loop; `silent` (connected, sends nothing) or `none`
    /// (someone else publishes). Default: fixtures/short-gop.mp4.
    #[arg(long, global = true)]
    publish: Option<String>,
    /// The gateway's pid, for its CPU and RSS (only when it runs on this machine).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Write the JSON report here.
    #[arg(long, global = true)]
    report: Option<PathBuf>,
    /// Bearer token for WHIP and WHEP.
    #[arg(long, global = true, env = "WHIP_LOAD_TOKEN")]
    token: Option<String>,
    /// A join that has not reached its goal this long after its POST fails.
    #[arg(long, global = true, default_value_t = 10.0)]
    join_timeout_secs: f64,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Viewers join at stepped rates and leave after their first packet.
    Storm {
        /// Joins per second, one step each, in order.
        #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000,2000")]
        rates: Vec<f64>,
        /// Seconds of joins per step (at least 20 joins).
        #[arg(long, default_value_t = 3.0)]
        step_secs: f64,
        /// A step is within limits when p99 join time (POST → first packet) is at most this.
        #[arg(long, default_value_t = 500.0)]
        max_p99_ms: f64,
        /// Run every step even after one failed.
        #[arg(long)]
        keep_going: bool,
    },
    /// Join → connected → first packet → leave, many times; RSS every `--sample-every` cycles.
    Churn {
        #[arg(long, default_value_t = 10_000)]
        cycles: u64,
        /// Cycles in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        #[arg(long, default_value_t = 1_000)]
        sample_every: u64,
    },
    /// RSS with no session, with the publisher and with `--sessions` held viewers.
    Memory {
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        /// Viewers joining per second.
        #[arg(long, default_value_t = 100.0)]
        ramp_per_sec: f64,
        /// Seconds to hold every viewer before measuring (a playing viewer's str0m buffers fill
        /// for about 10 s).
        #[arg(long, default_value_t = 15.0)]
        settle_secs: f64,
    },
}

/// What every join needs.
#[derive(Clone)]
struct Ctx {
    crypto: Arc<SharedCrypto>,
    http: reqwest::Client,
    base: String,
    whep_url: String,
    token: Option<String>,
    goal: Goal,
    timeout: Duration,
    server_pid: Option<String>,
}

impl Ctx {
    async fn join_viewer(&self) -> Result<Joined, (anyhow::Error, JoinTimes)> {
        join(
            &self.crypto,
            &self.http,
            &self.whep_url,
            self.token.as_deref(),
            Role::Viewer,
            self.goal,
            self.timeout,
        )
        .await
    }

    fn rss(&self) -> Option<u64> {
        self.server_pid.as_deref().and_then(rss_bytes)
    }

    async fn sessions(&self) -> Option<u64> {
        session_count(&self.http, &self.base).await
    }

    /// Starts measuring the gateway's and this process's CPU.
    fn cpu_meters(&self) -> CpuMeters {
        CpuMeters {
            gateway: self.server_pid.as_deref().map(CpuMeter::start),
            client: CpuMeter::start("self"),
        }
    }

    /// Waits until the node's sessions are back to `baseline` (at most `timeout`); the last
    /// count read.
    async fn back_to(&self, baseline: Option<u64>, timeout: Duration) -> Option<u64> {
        wait_for_sessions(&self.http, &self.base, baseline?, timeout).await
    }
}

/// Gateway and client CPU over one phase of a run.
struct CpuMeters {
    gateway: Option<CpuMeter>,
    client: CpuMeter,
}

impl CpuMeters {
    /// (gateway cores, client cores) since the start.
    fn cores(&self) -> (Option<f64>, Option<f64>) {
        (
            self.gateway.as_ref().and_then(|m| m.cores()),
            self.client.cores(),
        )
    }
}

/// The stream's publisher for the whole run.
enum Publisher {
    Media(WhipPublisher),
    Silent {
        stop: watch::Sender<bool>,
        task: JoinHandle<Result<()>>,
        resource: Resource,
    },
    External,
}

impl Publisher {
    async fn start(common: &Common, ctx: &Ctx) -> Result<Self> {
        let whip_url = format!("{}/whip/{}", ctx.base, common.stream);
        match common.publish.as_deref() {
            Some("none") => Ok(Publisher::External),
            Some("silent") => {
                let joined = join(
                    &ctx.crypto,
                    &ctx.http,
                    &whip_url,
                    ctx.token.as_deref(),
                    Role::SilentPublisher,
                    Goal::Connected,
                    ctx.timeout,
                )
                .await
                .map_err(|(e, _)| e)
                .context("starting the silent publisher")?;
                let (stop, mut stop_rx) = watch::channel(false);
                let mut peer = joined.peer;
                let task = tokio::spawn(async move { peer.hold(&mut stop_rx).await });
                Ok(Publisher::Silent {
                    stop,
                    task,
                    resource: joined.resource,
                })
            }
            file => {
                let path = file.map_or_else(|| fixture_path("short-gop.mp4"), PathBuf::from);
                let media = Arc::new(MediaSource::open(&path)?);
                let opts = PublishOptions {
                    token: ctx.token.clone(),
                    ..PublishOptions::new(whip_url)
                };
                let p = WhipPublisher::start(media, opts)
                    .await
                    .context("starting the publisher")?;
                p.wait_for_frames(10, Duration::from_secs(15)).await?;
                Ok(Publisher::Media(p))
            }
        }
    }

    /// Silent publishers have no media: viewers can only get as far as connected.
    fn viewer_goal(&self) -> Goal {
        match self {
            Publisher::Silent { .. } => Goal::Connected,
            _ => Goal::FirstRtp,
        }
    }

    async fn stop(self) -> Value {
        match self {
            Publisher::Media(p) => match p.stop().await {
                Ok(stats) => serde_json::to_value(stats).unwrap_or(Value::Null),
                Err(e) => json!({ "error": format!("{e:#}") }),
            },
            Publisher::Silent {
                stop,
                task,
                resource,
            } => {
                let _ = stop.send(true);
                let held = task.await.map_err(anyhow::Error::from).and_then(|r| r);
                let deleted = resource.delete().await;
                json!({
                    "silent": true,
                    "error": held.err().map(|e| format!("{e:#}")),
                    "delete_error": deleted.err().map(|e| format!("{e:#}")),
                })
            }
            Publisher::External => Value::Null,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    whip_tests::init_cli_logging();
    let args = Args::parse();
    let common = args.common;
    let base = common.base.trim_end_matches('/').to_owned();
    let mut ctx = Ctx {
        crypto: Arc::new(SharedCrypto::new()?),
        http: http_client()?,
        whep_url: format!("{base}/whep/{}", common.stream),
        base,
        token: common.token.clone(),
        goal: Goal::FirstRtp,
        timeout: Duration::from_secs_f64(common.join_timeout_secs.max(0.1)),
        server_pid: common.server_pid.map(|p| p.to_string()),
    };
    let rss_before_publisher = ctx.rss();
    let sessions_before_publisher = ctx.sessions().await;
    let publisher = Publisher::start(&common, &ctx).await?;
    ctx.goal = publisher.viewer_goal();

    let (mode, result, line) = match args.mode {
        Mode::Storm {
            rates,
            step_secs,
            max_p99_ms,
            keep_going,
        } => {
            let (r, line) = storm(&ctx, &rates, step_secs, max_p99_ms, keep_going).await;
            ("storm", r, line)
        }
        Mode::Churn {
            cycles,
            parallel,
            sample_every,
        } => {
            let (r, line) = churn(&ctx, cycles, parallel.max(1), sample_every.max(1)).await;
            ("churn", r, line)
        }
        Mode::Memory {
            sessions,
            ramp_per_sec,
            settle_secs,
        } => {
            let (r, line) = memory(
                &ctx,
                rss_before_publisher,
                sessions,
                ramp_per_sec,
                settle_secs,
            )
            .await;
            ("memory", r, line)
        }
    };
    let publisher_stats = publisher.stop().await;
    let report = json!({
        "mode": mode,
        "args": {
            "base": ctx.base, "stream": common.stream, "publish": common.publish,
            "server_pid": common.server_pid, "join_timeout_secs": common.join_timeout_secs,
            "viewer_goal": format!("{:?}", ctx.goal),
        },
        "rss_before_publisher": rss_before_publisher,
        "sessions_before_publisher": sessions_before_publisher,
        "result": result,
        "publisher": publisher_stats,
    });
    if let Some(path) = &common.report {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("RESULT mode={mode} {line}");
    Ok(())
}

/// One join of a storm step.
struct Outcome {
    times: JoinTimes,
    error: Option<String>,
    /// How late the client started the POST against the schedule.
    lag_ms: f64,
}

fn stats_of(v: impl Iterator<Item = f64>) -> Option<LatencyStats> {
    LatencyStats::from_samples(&v.collect::<Vec<_>>())
}

fn p99(s: &Option<LatencyStats>) -> Option<f64> {
    s.as_ref().map(|s| s.p99)
}

/// The figure a join is judged by: to the first packet, or to connected with a silent publisher.
fn join_ms(ctx: &Ctx, t: &JoinTimes) -> Option<f64> {
    match ctx.goal {
        Goal::FirstRtp => t.first_rtp_ms,
        Goal::Connected => t.connected_ms,
    }
}

async fn storm(
    ctx: &Ctx,
    rates: &[f64],
    step_secs: f64,
    max_p99_ms: f64,
    keep_going: bool,
) -> (Value, String) {
    let mut steps = Vec::new();
    let mut sustained: Option<(f64, f64)> = None;
    let mut summary = Vec::new();
    for &rate in rates.iter().filter(|r| **r > 0.0) {
        let count = ((rate * step_secs).round() as usize).max(20);
        let step = storm_step(ctx, rate, count, max_p99_ms).await;
        let pass = step["within_limits"].as_bool().unwrap_or(false);
        let p99 = step["join_ms"]["p99"].as_f64();
        eprintln!(
            "storm {rate}/s: {} of {count} joined, p99 {:?} ms, achieved {:.0}/s, gateway {:.2} cores, client {:.2} cores{}",
            step["joined"],
            p99,
            step["achieved_joins_per_sec"].as_f64().unwrap_or(0.0),
            step["gateway_cores"].as_f64().unwrap_or(f64::NAN),
            step["client_cores"].as_f64().unwrap_or(f64::NAN),
            if pass { "" } else { "  ← over the limit" },
        );
        summary.push(format!(
            "{rate}:{}:p99={}",
            if pass { "ok" } else { "over" },
            p99.map_or("-".into(), |p| format!("{p:.1}"))
        ));
        steps.push(step);
        if pass {
            sustained = Some((rate, p99.unwrap_or(f64::NAN)));
        } else if !keep_going {
            break;
        }
    }
    let line = format!(
        "max_sustained_joins_per_sec={} p99_ms_at_max={} steps={}",
        sustained.map_or("none".into(), |s| format!("{}", s.0)),
        sustained.map_or("-".into(), |s| format!("{:.1}", s.1)),
        summary.join(",")
    );
    let result = json!({
        "max_p99_ms": max_p99_ms,
        "step_secs": step_secs,
        "max_sustained_joins_per_sec": sustained.map(|s| s.0),
        "p99_ms_at_max": sustained.map(|s| s.1),
        "steps": steps,
    });
    (result, line)
}

async fn storm_step(ctx: &Ctx, rate: f64, count: usize, max_p99_ms: f64) -> Value {
    let baseline = ctx.sessions().await;
    let cpu = ctx.cpu_meters();
    let t0 = tokio::time::Instant::now();
    let mut joins = JoinSet::new();
    for i in 0..count {
        let at = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let ctx = ctx.clone();
        joins.spawn(async move {
            let lag_ms = at.elapsed().as_secs_f64() * 1000.0;
            match ctx.join_viewer().await {
                Ok(joined) => {
                    // Leave at once: the storm measures joins, not fan-out.
                    drop(joined.peer);
                    let left = joined.resource.delete().await;
                    Outcome {
                        times: joined.times,
                        error: left.err().map(|e| format!("leaving: {e:#}")),
                        lag_ms,
                    }
                }
                Err((e, times)) => Outcome {
                    times,
                    error: Some(format!("{e:#}")),
                    lag_ms,
                },
            }
        });
    }
    let launched_secs = t0.elapsed().as_secs_f64();
    let mut outcomes = Vec::with_capacity(count);
    while let Some(o) = joins.join_next().await {
        if let Ok(o) = o {
            outcomes.push(o);
        }
    }
    let all_done_secs = t0.elapsed().as_secs_f64();
    let (gateway_cores, client_cores) = cpu.cores();
    let left = ctx.back_to(baseline, Duration::from_secs(10)).await;

    let joined = outcomes
        .iter()
        .filter(|o| o.error.is_none() && join_ms(ctx, &o.times).is_some())
        .count();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let join = stats_of(outcomes.iter().filter_map(|o| join_ms(ctx, &o.times)));
    let within =
        failed.is_empty() && joined == count && p99(&join).is_some_and(|p| p <= max_p99_ms);
    json!({
        "rate": rate,
        "count": count,
        "joined": joined,
        "failed": failed.len(),
        "first_error": failed.first(),
        "join_ms": join,
        "answer_ms": stats_of(outcomes.iter().filter_map(|o| o.times.answer_ms)),
        "connected_ms": stats_of(outcomes.iter().filter_map(|o| o.times.connected_ms)),
        "first_rtp_ms": stats_of(outcomes.iter().filter_map(|o| o.times.first_rtp_ms)),
        "launch_lag_ms": stats_of(outcomes.iter().map(|o| o.lag_ms)),
        "launch_secs": launched_secs,
        "achieved_joins_per_sec": joined as f64 / all_done_secs.max(1e-9),
        "launched_joins_per_sec": count as f64 / launched_secs.max(1e-9),
        "gateway_cores": gateway_cores,
        "client_cores": client_cores,
        "sessions_baseline": baseline,
        "sessions_after": left,
        "within_limits": within,
        "note": "join_ms: POST -> first RTP packet (connected with a silent publisher); achieved: joins completed / time from the first launch to the last completion; launch_lag: client start of the POST behind its schedule",
    })
}

/// One RSS reading in a churn.
#[derive(serde::Serialize)]
struct Sample {
    cycles: u64,
    secs: f64,
    rss: Option<u64>,
    sessions: Option<u64>,
}

async fn churn(ctx: &Ctx, cycles: u64, parallel: usize, sample_every: u64) -> (Value, String) {
    let baseline = ctx.sessions().await;
    let start = Instant::now();
    let mut samples = vec![Sample {
        cycles: 0,
        secs: 0.0,
        rss: ctx.rss(),
        sessions: baseline,
    }];
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let cpu = ctx.cpu_meters();
    let mut workers = JoinSet::new();
    for _ in 0..parallel {
        let (ctx, claimed, done) = (ctx.clone(), claimed.clone(), done.clone());
        let (failures, first_error) = (failures.clone(), first_error.clone());
        workers.spawn(async move {
            while claimed.fetch_add(1, Ordering::Relaxed) < cycles {
                let error = match ctx.join_viewer().await {
                    Ok(joined) => {
                        drop(joined.peer);
                        joined.resource.delete().await.err()
                    }
                    Err((e, _)) => Some(e),
                };
                if let Some(e) = error {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| format!("{e:#}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut next_mark = sample_every;
    while !workers.is_empty() {
        tokio::select! {
            _ = workers.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let n = done.load(Ordering::Relaxed);
        if n >= next_mark {
            samples.push(Sample {
                cycles: n,
                secs: start.elapsed().as_secs_f64(),
                rss: ctx.rss(),
                sessions: ctx.sessions().await,
            });
            eprintln!(
                "churn {n} cycles, {:.1} s: gateway RSS {:.1} MiB, sessions {:?}, failures {}",
                start.elapsed().as_secs_f64(),
                ctx.rss().unwrap_or(0) as f64 / 1048576.0,
                samples.last().and_then(|s| s.sessions),
                failures.load(Ordering::Relaxed),
            );
            next_mark = (n / sample_every + 1) * sample_every;
        }
    }
    let churn_secs = start.elapsed().as_secs_f64();
    let (gateway_cores, client_cores) = cpu.cores();
    let after = ctx.back_to(baseline, Duration::from_secs(30)).await;
    // Let the workers finish tearing down before the last reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let done_n = done.load(Ordering::Relaxed);
    samples.push(Sample {
        cycles: done_n,
        secs: start.elapsed().as_secs_f64(),
        rss: ctx.rss(),
        sessions: after,
    });

    // Growth after the first mark (allocator arenas and caches fill during the first cycles).
    let warm: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.cycles >= sample_every)
        .filter_map(|s| Some((s.cycles as f64, s.rss? as f64)))
        .collect();
    let growth = match (warm.first(), warm.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => Some(b.1 - a.1),
        _ => None,
    };
    let slope_per_1000 = slope(&warm).map(|s| s * 1000.0);
    let failures = failures.load(Ordering::Relaxed);
    let back_to_baseline = matches!((baseline, after), (Some(b), Some(a)) if a == b);
    let line = format!(
        "cycles={done_n} failures={failures} secs={churn_secs:.1} rss_first={} rss_at_{sample_every}={} rss_last={} growth_after_warmup_bytes={} slope_bytes_per_1000_cycles={} sessions_baseline={} sessions_after={} back_to_baseline={back_to_baseline}",
        opt(samples.first().and_then(|s| s.rss)),
        opt(warm.first().map(|w| w.1 as u64)),
        opt(samples.last().and_then(|s| s.rss)),
        growth.map_or("-".into(), |g| format!("{g:.0}")),
        slope_per_1000.map_or("-".into(), |s| format!("{s:.0}")),
        opt(baseline),
        opt(after),
    );
    let result = json!({
        "cycles": done_n,
        "parallel": parallel,
        "failures": failures,
        "first_error": first_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "seconds": churn_secs,
        "cycles_per_sec": done_n as f64 / churn_secs.max(1e-9),
        "gateway_cores": gateway_cores,
        "client_cores": client_cores,
        "sessions_baseline": baseline,
        "sessions_after": after,
        "back_to_baseline": back_to_baseline,
        "samples": samples,
        "rss_growth_after_warmup_bytes": growth,
        "rss_slope_bytes_per_1000_cycles": slope_per_1000,
        "note": "samples every sample_every cycles, then one after the sessions are back to baseline; growth and slope from the first mark on",
    });
    (result, line)
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A viewer being held.
struct Held {
    task: JoinHandle<Result<u64>>,
    resource: Resource,
}

async fn memory(
    ctx: &Ctx,
    rss_before_publisher: Option<u64>,
    sessions: usize,
    ramp_per_sec: f64,
    settle_secs: f64,
) -> (Value, String) {
    // The publisher's session settles (keyframe cache filled) before the reference reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_publisher = ctx.rss();
    let baseline = ctx.sessions().await;
    let (stop, stop_rx) = watch::channel(false);
    let cpu = ctx.cpu_meters();
    let interval = Duration::from_secs_f64(1.0 / ramp_per_sec.max(1e-3));
    let t0 = tokio::time::Instant::now();
    let mut joins = JoinSet::new();
    for i in 0..sessions {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let ctx = ctx.clone();
        let mut stop_rx = stop_rx.clone();
        joins.spawn(async move {
            let joined = ctx.join_viewer().await.map_err(|(e, _)| e)?;
            let mut peer = joined.peer;
            let task = tokio::spawn(async move {
                peer.hold(&mut stop_rx).await?;
                Ok(peer.rtp_packets)
            });
            Ok::<Held, anyhow::Error>(Held {
                task,
                resource: joined.resource,
            })
        });
    }
    let mut held = Vec::with_capacity(sessions);
    let mut failed = Vec::new();
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(h)) => held.push(h),
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(format!("{e}")),
        }
    }
    eprintln!(
        "memory: {} viewers held, {} failed; settling {settle_secs} s",
        held.len(),
        failed.len()
    );
    // RSS every second while held: per-viewer send buffers fill with time while media flows.
    let settle_start = Instant::now();
    let mut rss_while_held = Vec::new();
    while settle_start.elapsed().as_secs_f64() < settle_secs {
        let left = settle_secs - settle_start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(left.clamp(0.0, 1.0))).await;
        rss_while_held.push((settle_start.elapsed().as_secs_f64(), ctx.rss()));
    }
    let rss_held = ctx.rss();
    let stats_held = node_stats(&ctx.http, &ctx.base).await;
    let sessions_held = stats_held
        .as_ref()
        .and_then(|s| s.get("sessions")?.as_u64());
    let (gateway_cores, client_cores) = cpu.cores();

    // Leave: stop every viewer, then DELETE, a few at a time.
    let _ = stop.send(true);
    let n_held = held.len();
    let mut died = 0usize;
    let mut rtp_packets = 0u64;
    let mut leaving = JoinSet::new();
    for h in held {
        leaving.spawn(async move {
            let run = h.task.await.map_err(anyhow::Error::from).and_then(|r| r);
            let _ = h.resource.delete().await;
            run
        });
    }
    while let Some(r) = leaving.join_next().await {
        match r {
            Ok(Ok(n)) => rtp_packets += n,
            _ => died += 1,
        }
    }
    let after = ctx.back_to(baseline, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = ctx.rss();

    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if n_held > 0 => Some((a as f64 - b as f64) / n_held as f64),
        _ => None,
    };
    let per_session = per(rss_held, rss_publisher);
    let line = format!(
        "viewer_goal={:?} sessions={n_held} failed={} died_while_held={died} rss_empty={} rss_publisher={} rss_held={} rss_after_leave={} bytes_per_session={}",
        ctx.goal,
        failed.len(),
        opt(rss_before_publisher),
        opt(rss_publisher),
        opt(rss_held),
        opt(rss_after),
        per_session.map_or("-".into(), |b| format!("{b:.0}")),
    );
    let result = json!({
        "requested": sessions,
        "held": n_held,
        "failed": failed.len(),
        "first_error": failed.first(),
        "died_while_held": died,
        "settle_secs": settle_secs,
        "rss_empty": rss_before_publisher,
        "rss_publisher": rss_publisher,
        "rss_held": rss_held,
        "rss_while_held": rss_while_held,
        "rss_after_leave": rss_after,
        "bytes_per_session": per_session,
        "publisher_bytes": rss_publisher.zip(rss_before_publisher).map(|(a, b)| a as i64 - b as i64),
        "sessions_reported_while_held": sessions_held,
        "sessions_after": after,
        "rtp_packets_received": rtp_packets,
        "gateway_cores": gateway_cores,
        "client_cores": client_cores,
        "stats_while_held": stats_held,
        "note": "bytes_per_session = (rss_held - rss_publisher) / held; idle sessions with --publish silent, viewers of a playing stream otherwise",
    });
    (result, line)
}
