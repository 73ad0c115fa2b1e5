//! Runs the real gateway binary as a child process for integration tests: builds it if needed,
//! starts it on ephemeral loopback ports, learns those ports from its `READY` line, keeps its
//! stderr in a file for post-mortems, and kills it on drop.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::signaling::http_client;

/// How long the gateway may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the gateway binary is.
///
/// `GATEWAY_BIN` wins. Otherwise `cargo build -p gateway --bin gateway` runs once per test process
/// (a no-op when up to date) so that `cargo test` and `cargo nextest` never test a stale binary;
/// set `WHIP_TESTS_NO_BUILD=1` to skip that and use whatever is in `target/debug`.
pub fn gateway_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("GATEWAY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("GATEWAY_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_gateway().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the `relay` binary (mid-tier nodes) is: `RELAY_BIN`, else built like the gateway.
pub fn relay_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RELAY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binary("relay", "relay").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_gateway() -> Result<PathBuf> {
    build_binary("gateway", "gateway")
}

fn build_binary(package: &str, name: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join(name);
    if std::env::var_os("WHIP_TESTS_NO_BUILD").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name, "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running cargo build -p {package}"))?;
        if !out.status.success() {
            bail!(
                "cargo build -p {package} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if !bin.is_file() {
        bail!("no {name} binary at {}", bin.display());
    }
    Ok(bin)
}

/// A running gateway.
pub struct Gateway {
    child: Child,
    http: SocketAddr,
    udp: SocketAddr,
    log_path: PathBuf,
    _config: Option<tempfile::NamedTempFile>,
}

/// The admin token the harness gives a gateway that has other tokens or apps, so that
/// [`Gateway::stats`] can still read `/v1/stats` (which such a node closes to everyone else).
pub const HARNESS_ADMIN_TOKEN: &str = "harness-admin-token-0123456789";

/// `--admin-token` for a command line that configures tokens or apps (and has no admin token).
fn admin_args(args: &[&str]) -> &'static [&'static str] {
    let auth = args
        .iter()
        .any(|a| matches!(*a, "--app" | "--publish-token" | "--play-token"));
    if auth && !args.contains(&"--admin-token") {
        &["--admin-token", HARNESS_ADMIN_TOKEN]
    } else {
        &[]
    }
}

impl Gateway {
    /// Starts the gateway with only the listening flags. Blocks (it may run `cargo build` and
    /// waits for `READY`): from async tests call it through `tokio::task::spawn_blocking`.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts the gateway with a config file holding `toml`, plus `args`.
    pub fn start_with_config(toml: &str, args: &[&str]) -> Result<Self> {
        let mut config = tempfile::Builder::new()
            .prefix("gateway-")
            .suffix(".toml")
            .tempfile()
            .context("creating config file")?;
        config
            .write_all(toml.as_bytes())
            .context("writing config file")?;
        config.flush()?;
        let path = config.path().to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        // A node with tokens or apps closes `/v1/stats` to all but admin tokens.
        if toml.contains("[[tokens]]") || toml.contains("[[apps]]") {
            all.extend_from_slice(&["--admin-token", HARNESS_ADMIN_TOKEN]);
        }
        all.extend_from_slice(args);
        let mut gw = Self::start_with_args(&all)?;
        gw._config = Some(config);
        Ok(gw)
    }

    /// Starts the gateway on ephemeral loopback ports with extra `args`.
    pub fn start_with_args(args: &[&str]) -> Result<Self> {
        let loopback = [
            "--http-listen",
            "127.0.0.1:0",
            "--udp-listen",
            "127.0.0.1:0",
            "--candidate-ip",
            "127.0.0.1",
        ];
        Self::spawn(None, &loopback, args)
    }

    /// Starts the gateway inside network namespace `netns` (`ip netns exec`, root only) with
    /// only `args`: listen addresses and candidates are the caller's.
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(Some(netns), &[], args)
    }

    fn spawn(netns: Option<&str>, defaults: &[&str], args: &[&str]) -> Result<Self> {
        let bin = gateway_binary()?;
        let log_path = next_log_path()?;
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(defaults)
            .args(args)
            .args(admin_args(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;

        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        let stdout_log = log_path.with_extension("stdout");
        // Keeps reading after READY so that a chatty gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut copy = File::create(stdout_log).ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(addrs) = parse_ready(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addrs);
                }
            }
        });

        let ready = rx.recv_timeout(READY_TIMEOUT);
        let mut gw = Gateway {
            child,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            log_path,
            _config: None,
        };
        match ready {
            Ok((http, udp)) => {
                gw.http = http;
                gw.udp = udp;
                Ok(gw)
            }
            Err(_) => {
                let status = gw.child.try_wait().ok().flatten();
                bail!(
                    "gateway printed no READY line within {READY_TIMEOUT:?} (exit: {status:?}); \
                     args {args:?}; stderr tail:\n{}",
                    gw.log_tail(4000)
                )
            }
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The WHIP endpoint of `stream`.
    pub fn whip_url(&self, stream: &str) -> String {
        format!("{}/whip/{stream}", self.base_url())
    }

    /// The WHEP endpoint of `stream`.
    pub fn whep_url(&self, stream: &str) -> String {
        format!("{}/whep/{stream}", self.base_url())
    }

    /// The HTTP listening address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The media (UDP) listening address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The file holding the gateway's stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `max_bytes` of the gateway's stderr.
    /// The gateway process id (for /proc readings and for killing it in failure tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `max_bytes` of the gateway's stderr (its log), for failure messages and for
    /// tests that read what it logged.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let Ok(mut f) = File::open(&self.log_path) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// `GET /v1/stats` as JSON (its shape belongs to the gateway), with the harness's admin token
    /// ([`HARNESS_ADMIN_TOKEN`]).
    pub async fn stats(&self) -> Result<serde_json::Value> {
        let url = format!("{}/v1/stats", self.base_url());
        let resp = http_client()?
            .get(&url)
            .bearer_auth(HARNESS_ADMIN_TOKEN)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}");
        }
        let body = resp.text().await.context("reading stats")?;
        serde_json::from_str(&body).with_context(|| format!("stats are not JSON: {body:.200}"))
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- gateway stderr ({}), last 8 kB ---\n{}",
                self.log_path.display(),
                self.log_tail(8000)
            );
        }
    }
}

/// Parses `READY http=127.0.0.1:PORT udp=127.0.0.1:PORT` (extra fields are allowed).
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("READY")?;
    let mut http = None;
    let mut udp = None;
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("http=") {
            http = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("udp=") {
            udp = v.parse().ok();
        }
    }
    Some((http?, udp?))
}

fn next_log_path() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("whip-tests");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("gateway-{}-{n}.stderr", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let (h, u) =
            parse_ready("READY http=127.0.0.1:8080 udp=127.0.0.1:5000").unwrap_or_else(|| {
                panic!("READY line not parsed");
            });
        assert_eq!(h.port(), 8080);
        assert_eq!(u.port(), 5000);
        assert!(parse_ready("INFO starting").is_none());
        assert!(parse_ready("READY http=127.0.0.1:8080").is_none());
    }
}
