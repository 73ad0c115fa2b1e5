//! Half-open session flood against a running gateway (benchmark 6c of `BENCHMARKS.md`): WHIP and
//! WHEP POSTs whose sessions never do ICE, then the gateway's resident memory per pending session
//! and after the gateway has reaped them.
//!
//! ```text
//! whip-flood --base http://127.0.0.1:8080 --server-pid 1234 --sessions 3000 --sources 64
//! ```
//!
//! Offers are made by str0m (a distinct ufrag each, a host candidate on a port nobody listens
//! on). The POSTs come from `--sources` loopback addresses (127.0.0.2, 127.0.0.3, …) so that the
//! gateway's per-source limits shape the flood the way they would shape one from many hosts;
//! refusals (429, 503) are counted, not fatal. Half the sessions are WHIP publishers of their own
//! streams, half WHEP viewers of the first one. Progress on stderr, one `RESULT` line on stdout,
//! the JSON report with `--report`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use tokio::task::JoinSet;
use whip_tests::gateway_probe::{rss_bytes, session_count, wait_for_sessions};

#[derive(Parser, Debug)]
#[command(about = "Half-open WHIP/WHEP session flood: RSS per pending session and after reaping")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// The gateway's pid (it must run on this machine: RSS is read from /proc).
    #[arg(long)]
    server_pid: u32,
    /// POSTs to send.
    #[arg(long, default_value_t = 3000)]
    sessions: u64,
    /// Loopback source addresses (127.0.0.2 …) the POSTs are spread over.
    #[arg(long, default_value_t = 64)]
    sources: u8,
    /// POSTs in flight at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// How long to wait for the gateway to reap the sessions (its `connect_timeout` + slack).
    #[arg(long, default_value_t = 40.0)]
    reap_timeout_secs: f64,
    /// After the sessions are gone, wait this long before the last RSS reading: the gateway
    /// remembers ended sessions for 10 s (a DELETE right after still answers 200) and trims its
    /// heap on a 5 s tick.
    #[arg(long, default_value_t = 20.0)]
    settle_secs: f64,
    /// Before the baseline: this many sessions created and deleted, so the baseline is a gateway
    /// that has served sessions (code paged in, thread stacks and caches touched), not a fresh one.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    #[arg(long)]
    report: Option<PathBuf>,
}

fn offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    if let Ok(c) = Candidate::host(([127, 0, 0, 1], 9).into(), "udp") {
        rtc.add_local_candidate(c);
    }
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    match api.apply() {
        Some((offer, _)) => offer.to_sdp_string(),
        None => String::new(),
    }
}

#[derive(Default)]
struct Tally {
    created: AtomicU64,
    too_many: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let pid = args.server_pid.to_string();
    let base = args.base.trim_end_matches('/').to_owned();
    // Installs the process-wide rustls provider the other clients need.
    let probe = whip_tests::signaling::http_client()?;
    let rss = || rss_bytes(&pid).context("cannot read the gateway's RSS");
    let clients: Vec<reqwest::Client> = (0..args.sources.max(1))
        .map(|i| {
            reqwest::Client::builder()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
                .build()
                .context("HTTP client")
        })
        .collect::<Result<_>>()?;

    let sessions_before = session_count(&probe, &base).await.unwrap_or(0);
    let fresh = rss()?;
    warm_up(&clients[0], &base, args.warmup).await?;
    // The gateway trims its heap a few seconds after sessions end.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let baseline = rss()?;
    eprintln!(
        "fresh process: RSS {:.1} MB; after {} sessions came and went:",
        mb(fresh),
        args.warmup
    );
    eprintln!(
        "baseline: {} sessions, RSS {:.1} MB",
        sessions_before,
        mb(baseline)
    );

    // The stream the WHEP half watches: a WHIP session that never connects publishes it.
    let first = clients[0]
        .post(format!("{base}/whip/flood-pub"))
        .header("content-type", "application/sdp")
        .body(offer(Direction::SendOnly))
        .send()
        .await?;
    if first.status() != 201 {
        bail!("the first WHIP POST got {}", first.status());
    }

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.sessions {
        while tasks.len() >= args.parallel {
            let _ = tasks.join_next().await;
        }
        let client = clients[(i % clients.len() as u64) as usize].clone();
        let (url, sdp) = if i % 2 == 0 {
            (format!("{base}/whip/flood-{i}"), offer(Direction::SendOnly))
        } else {
            (format!("{base}/whep/flood-pub"), offer(Direction::RecvOnly))
        };
        let tally = tally.clone();
        tasks.spawn(async move {
            let status = client
                .post(url)
                .header("content-type", "application/sdp")
                .body(sdp)
                .send()
                .await
                .map(|r| r.status().as_u16());
            let counter = match status {
                Ok(201) => &tally.created,
                Ok(429) => &tally.too_many,
                Ok(503) => &tally.unavailable,
                _ => &tally.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
    let post_secs = started.elapsed().as_secs_f64();
    // The flood is over: its connections close (an idle keep-alive connection holds the
    // gateway's HTTP buffers), as when the clients that sent it go away.
    drop(clients);
    let pending = session_count(&probe, &base).await.unwrap_or(0);
    let flooded = rss()?;
    let created = tally.created.load(Ordering::Relaxed) + 1;
    let per_session = flooded.saturating_sub(baseline) as f64 / created as f64;
    eprintln!(
        "flooded: {created} created in {post_secs:.1} s, {pending} pending, RSS {:.1} MB ({:.1} KB per session)",
        mb(flooded),
        per_session / 1024.0
    );

    let left = wait_for_sessions(
        &probe,
        &base,
        sessions_before,
        Duration::from_secs_f64(args.reap_timeout_secs),
    )
    .await;
    let reaped_in = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let after = rss()?;
    let ratio = after as f64 / baseline as f64;
    eprintln!(
        "reaped: {left:?} sessions left after {reaped_in:.1} s, RSS {:.1} MB ({:.3} of baseline)",
        mb(after),
        ratio
    );

    let report = json!({
        "sessions_posted": args.sessions + 1,
        "created": created,
        "refused_429": tally.too_many.load(Ordering::Relaxed),
        "refused_503": tally.unavailable.load(Ordering::Relaxed),
        "other": tally.other.load(Ordering::Relaxed),
        "sources": args.sources,
        "post_secs": post_secs,
        "pending_sessions": pending,
        "rss_fresh_bytes": fresh,
        "warmup_sessions": args.warmup,
        "rss_baseline_bytes": baseline,
        "rss_flooded_bytes": flooded,
        "rss_per_pending_session_bytes": per_session,
        "sessions_left": left,
        "rss_after_reap_bytes": after,
        "rss_after_reap_ratio": ratio,
    });
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    println!(
        "RESULT mode=flood created={created} refused_429={} refused_503={} rss_baseline_mb={:.1} rss_flooded_mb={:.1} kb_per_pending_session={:.1} rss_after_reap_mb={:.1} after_reap_ratio={ratio:.3}",
        tally.too_many.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        mb(baseline),
        mb(flooded),
        per_session / 1024.0,
        mb(after),
    );
    Ok(())
}

/// `n` WHIP sessions created and deleted at once.
async fn warm_up(client: &reqwest::Client, base: &str, n: u64) -> Result<()> {
    for i in 0..n {
        let r = client
            .post(format!("{base}/whip/warmup-{i}"))
            .header("content-type", "application/sdp")
            .body(offer(Direction::SendOnly))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("warm-up POST {i}: {}", r.status());
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("warm-up: no Location")?
            .to_owned();
        client.delete(format!("{base}{location}")).send().await?;
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
