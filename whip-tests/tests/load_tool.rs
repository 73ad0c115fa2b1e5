//! The load tool itself, end to end: `whip-load` with two publishers of a synthetic stream (made
//! by ffmpeg at a chosen bitrate) and viewers spread over both streams, against a real gateway.
//! Its report must show both publishers, every viewer playing without loss, and the gateway must
//! have carried two streams.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use whip_tests::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_load_runs_two_synthetic_publishers() -> Result<()> {
    let gw = tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")??;
    let report = tempfile_path("whip-load-report.json");
    let base = gw.base_url();
    let pid = gw.pid().to_string();
    let report_arg = report.to_string_lossy().into_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_whip-load"))
            .args(["--base", &base, "--stream", "two", "--publishers", "2"])
            .args([
                "--synthetic-kbps",
                "400",
                "--viewers",
                "8",
                "--full-viewers",
                "4",
            ])
            .args([
                "--ramp-per-sec",
                "8",
                "--duration",
                "3",
                "--server-pid",
                &pid,
            ])
            .args(["--report", &report_arg])
            .output()
    });
    // Both streams exist while the viewers play.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = gw.stats().await?;
    let out = run
        .await
        .context("whip-load task")?
        .context("running whip-load")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "whip-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    ensure!(
        stats["streams"].as_u64() == Some(2),
        "the gateway should carry two streams: {stats}"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let publishers = r["publishers"].as_array().map(Vec::len);
    ensure!(
        publishers == Some(2),
        "report lists {publishers:?} publishers"
    );
    let v = &r["viewers"];
    ensure!(
        v["playing_at_end"].as_u64() == Some(8) && v["full"].as_u64() == Some(4),
        "viewers: {v}"
    );
    ensure!(
        r["within_limits"] == Value::Bool(true),
        "not within limits: {stdout}"
    );
    ensure!(
        r["latency_ms"]["steady_window"]["median_viewer_p99"].is_number(),
        "no steady-window latency: {}",
        r["latency_ms"]
    );
    // Full viewers identified frames of the synthetic stream: first keyframe times exist.
    ensure!(
        r["join_ms"]["first_keyframe"]["n"].as_u64() == Some(4),
        "full viewers found no keyframe: {}",
        r["join_ms"]
    );
    Ok(())
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}
