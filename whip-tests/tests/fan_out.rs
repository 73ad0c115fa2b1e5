//! How many viewers one node serves: one WHIP publisher (`short-gop.mp4`, looping, deaf to
//! keyframe requests like OBS) and N WHEP players started at the same moment against one gateway.
//! Every viewer must get the video whole and in order from a keyframe, and audio.
//!
//! `FANOUT_VIEWERS` sets N (default 40). One summary line reports frames per viewer, POST → first
//! frame latencies, the gateway's packet counters and the CPU time the gateway process and this
//! test process (the N clients) spent while the viewers played.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use whip_tests::{
    Gateway, MediaSource, PlayOptions, PlayReport, PublishOptions, WhipPublisher, play,
};

const DEFAULT_VIEWERS: usize = 40;

async fn start_gateway() -> Result<Gateway> {
    // Starting may run `cargo build`; keep that off the async workers.
    tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")?
}

/// utime + stime of a process (`"self"` or a pid), in seconds.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .context("odd stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        rest.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .context("odd stat field")
    };
    Ok((ticks(14)? + ticks(15)?) as f64 / clock_ticks())
}

/// USER_HZ; 100 on every Linux this runs on, but ask when we can.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn counter(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn viewers() -> Result<usize> {
    match std::env::var("FANOUT_VIEWERS") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("FANOUT_VIEWERS={v:?} is not a number")),
        Err(_) => Ok(DEFAULT_VIEWERS),
    }
}

/// What is wrong with one viewer's report, if anything.
fn verdict(r: &PlayReport) -> Option<String> {
    let mut bad = Vec::new();
    if let Some(e) = &r.error {
        bad.push(format!("error {e}"));
    }
    if !r.whole_in_order {
        bad.push(format!("not whole and in order: {:?}", r.sequence));
    }
    if r.video_frames < 30 {
        bad.push(format!("only {} video frames", r.video_frames));
    }
    if r.audio_packets == 0 || r.audio_unknown > 0 {
        bad.push(format!(
            "audio {} packets, {} unknown",
            r.audio_packets, r.audio_unknown
        ));
    }
    (!bad.is_empty()).then(|| bad.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_many_viewers() -> Result<()> {
    let n = viewers()?;
    ensure!(n > 0, "FANOUT_VIEWERS must be at least 1");
    let began = Instant::now();
    let gw = start_gateway().await?;
    let started = began.elapsed();
    let pid = gw.pid();
    let media = Arc::new(MediaSource::fixture("short-gop.mp4")?);
    let catalog = media.catalog();

    let publisher =
        WhipPublisher::start(media.clone(), PublishOptions::new(gw.whip_url("fan"))).await?;
    // A keyframe is cached once the first frame is out; a few more make it a steady state.
    publisher
        .wait_for_frames(10, Duration::from_secs(10))
        .await?;

    let stats0 = gw.stats().await?;
    let (gw_cpu0, me_cpu0, t0) = (
        cpu_seconds(&pid.to_string())?,
        cpu_seconds("self")?,
        Instant::now(),
    );

    let players: Vec<_> = (0..n)
        .map(|_| {
            let opts = PlayOptions {
                duration: Duration::from_secs(4),
                ..PlayOptions::new(gw.whep_url("fan"))
            };
            tokio::spawn(play(catalog.clone(), opts))
        })
        .collect();
    let mut reports = Vec::with_capacity(n);
    let until = Instant::now() + Duration::from_secs(30);
    for (i, p) in players.into_iter().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, p)
            .await
            .with_context(|| format!("viewer {i} still playing after 30 s"))?
            .with_context(|| format!("viewer {i} panicked"))?
            .with_context(|| format!("viewer {i} was refused"))?;
        reports.push(r);
    }
    let wall = t0.elapsed().as_secs_f64();
    let (gw_cpu, me_cpu) = (
        cpu_seconds(&pid.to_string())? - gw_cpu0,
        cpu_seconds("self")? - me_cpu0,
    );
    let stats1 = gw.stats().await?;
    let publisher_stats = publisher.stop().await?;

    let mut frames: Vec<f64> = reports.iter().map(|r| r.video_frames as f64).collect();
    frames.sort_by(f64::total_cmp);
    let mut first: Vec<f64> = reports.iter().filter_map(|r| r.first_frame_ms).collect();
    first.sort_by(f64::total_cmp);
    let d = |k: &str| counter(&stats1, k).saturating_sub(counter(&stats0, k));
    let failed: Vec<(usize, String)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, verdict(r)?)))
        .collect();
    let non_contiguous: u64 = reports.iter().map(|r| r.non_contiguous).sum();
    let plis: u64 = reports.iter().map(|r| r.keyframe_requests_sent).sum();

    println!(
        "fan-out: viewers {n} ok {}, frames/viewer min {:.0} median {:.0}, POST→first frame p50 {:.0} ms p95 {:.0} ms max {:.0} ms, \
         stats packets_in {} packets_out {} (+{} / +{} while playing, nacks rx {} answered {}, udp_send_errors {}), \
         gateway CPU {:.2} s over {:.1} s ({:.0}% of a core), clients CPU {:.2} s ({:.0}%), \
         non-contiguous frames {non_contiguous}, PLIs {plis}, publisher {} frames",
        n - failed.len(),
        frames.first().copied().unwrap_or(0.0),
        percentile(&frames, 50.0),
        percentile(&first, 50.0),
        percentile(&first, 95.0),
        first.last().copied().unwrap_or(f64::NAN),
        counter(&stats1, "packets_in"),
        counter(&stats1, "packets_out"),
        d("packets_in"),
        d("packets_out"),
        d("nacks_received"),
        d("nacks_answered"),
        counter(&stats1, "udp_send_errors"),
        gw_cpu,
        wall,
        100.0 * gw_cpu / wall,
        me_cpu,
        100.0 * me_cpu / wall,
        publisher_stats.video_frames_sent,
    );
    for (i, why) in &failed {
        println!("viewer {i}: {why}");
    }
    ensure!(
        failed.is_empty(),
        "{} of {n} viewers failed (first: viewer {} {})",
        failed.len(),
        failed[0].0,
        failed[0].1
    );
    ensure!(first.len() == n, "some viewers never saw a frame");
    println!(
        "fan-out test took {:?} ({started:?} of it starting the gateway)",
        began.elapsed()
    );
    Ok(())
}
