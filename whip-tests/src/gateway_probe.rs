//! What a load tool reads about the gateway under test while it runs: the process's CPU time and
//! resident memory from `/proc` (only when it runs on this machine), and the node's counters
//! from `/v1/stats`.

use std::time::{Duration, Instant};

use serde_json::Value;

/// utime + stime of a process (`"self"` or a pid), in nanoseconds.
pub fn cpu_ns(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields after the command: state is field 3 of the line, utime 14, stime 15.
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
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

/// Resident set size (`VmRSS`) of a process, in bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU used by a process between two readings, as cores (1.0 = one core busy all the time).
pub struct CpuMeter {
    pid: String,
    start_ns: Option<u64>,
    start: Instant,
}

impl CpuMeter {
    /// Start measuring process `pid`'s CPU time (from `/proc/PID/stat`) from now.
    pub fn start(pid: &str) -> Self {
        CpuMeter {
            pid: pid.to_owned(),
            start_ns: cpu_ns(pid),
            start: Instant::now(),
        }
    }

    /// Cores used since `start` (None when the process cannot be read).
    pub fn cores(&self) -> Option<f64> {
        let used = cpu_ns(&self.pid)?.checked_sub(self.start_ns?)?;
        Some(used as f64 / 1e9 / self.start.elapsed().as_secs_f64().max(1e-9))
    }
}

/// `GET {base}/v1/stats` as JSON (None when it fails: the figures are then missing, not fatal).
pub async fn node_stats(client: &reqwest::Client, base: &str) -> Option<Value> {
    let resp = client
        .get(format!("{base}/v1/stats"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

/// The node's session count from `/v1/stats`.
pub async fn session_count(client: &reqwest::Client, base: &str) -> Option<u64> {
    node_stats(client, base).await?.get("sessions")?.as_u64()
}

/// Polls `/v1/stats` until the session count is at most `target` or `timeout` passes; the last
/// count read.
pub async fn wait_for_sessions(
    client: &reqwest::Client,
    base: &str,
    target: u64,
    timeout: Duration,
) -> Option<u64> {
    let until = Instant::now() + timeout;
    loop {
        let n = session_count(client, base).await;
        if n.is_some_and(|n| n <= target) || Instant::now() >= until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
