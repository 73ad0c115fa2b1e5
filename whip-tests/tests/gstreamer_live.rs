//! A live GStreamer publisher against the real gateway: Debian's `simple-whip-client`
//! (`whip-client`, Meetecho's WHIP client on GStreamer's webrtcbin) encodes test patterns with
//! x264/vp8 and Opus and publishes them over WHIP, trickling its candidates with PATCH.
//!
//! GStreamer's `dtls` element (gst-plugins-bad, OpenSSL) always generates a self-signed RSA-2048
//! certificate, and it offers `a=setup:actpass`, so the gateway is the DTLS server and must
//! accept an RSA client certificate. Upstream dimpl 0.9 (str0m 0.25's DTLS) is ECDSA-only and
//! ended that handshake with `handshake_failure` after ICE; the workspace uses a vendored dimpl
//! patched to ask for and verify RSA client certificates (`vendor/dimpl/PATCHES.md`). These
//! tests are the live proof:
//!
//! - `gstreamer_publishes_h264_and_opus_live`: x264 + Opus; a str0m WHEP player must get
//!   decodable H264 (keyframes, SPS/PPS/IDR first, no loss) and Opus. Prints the publisher's
//!   connect time and the viewer's POST → first keyframe (the join).
//! - `gstreamer_publishes_vp8_live`: VP8 + Opus up to DTLS connected on both sides (the str0m
//!   WHEP player offers H264 only, so there is no viewer here).
//!
//! `whip-client` needs `scripts/setup-gstreamer.sh` (run by `scripts/test.sh`): it installs the
//! package and builds the two shims in `/usr/local/lib/whip-client-compat` that this test loads
//! into the client — one so the packaged client can start at all on bookworm (libsoup 2/3
//! clash), one so libnice gathers on 127.0.0.1 and every datagram stays on loopback. A missing
//! client or shim fails the test; it never skips.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use whip_tests::{FrameCatalog, Gateway, PlayOptions, WhepPlayer};

/// Where `scripts/setup-gstreamer.sh` puts the shims.
const COMPAT_DIR: &str = "/usr/local/lib/whip-client-compat";
const GUPNP_STUB: &str = "libgupnp-igd-1.0.so.4";
const LOOPBACK_SHIM: &str = "libloopback-ifaddrs.so";

/// The client appends `! sendonly.` (its webrtcbin) to each pipeline, so each must end in RTP
/// caps naming media, encoding and payload type.
const VIDEO_H264: &str = "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 \
    ! rtph264pay config-interval=-1 pt=96 \
    ! application/x-rtp,media=video,encoding-name=H264,payload=96";
const VIDEO_VP8: &str = "videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 \
    ! vp8enc deadline=1 ! rtpvp8pay pt=96 \
    ! application/x-rtp,media=video,encoding-name=VP8,payload=96";
const AUDIO_OPUS: &str = "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc \
    ! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111";

/// Lines the client prints (log level 4, `-o`: no colours) as its PeerConnection moves on.
const ANSWERED: &str = "Resource URL:";
const ICE_DONE: &str = "ICE completed";
const DTLS_OK: &str = "DTLS connected";
const DTLS_FAILED: &str = "DTLS failed";

async fn start_gateway() -> Result<Gateway> {
    // Starting may run `cargo build`; keep that off the async workers.
    tokio::task::spawn_blocking(Gateway::start)
        .await
        .context("gateway start panicked")?
}

/// `whip-client` from PATH plus the shims, or an error that says how to get them.
fn whip_client_command() -> Result<Command> {
    let setup = "run `bash scripts/setup-gstreamer.sh` (scripts/test.sh runs it)";
    let bin = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("whip-client"))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("whip-client (Debian simple-whip-client) is not installed: {setup}")
        })?;
    let compat = Path::new(COMPAT_DIR);
    for lib in [GUPNP_STUB, LOOPBACK_SHIM] {
        ensure!(
            compat.join(lib).is_file(),
            "{} is missing (whip-client cannot start or would leave loopback without it): {setup}",
            compat.join(lib).display()
        );
    }
    let mut cmd = Command::new(bin);
    let mut lib_path = std::ffi::OsString::from(COMPAT_DIR);
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        lib_path.push(":");
        lib_path.push(old);
    }
    cmd.env("LD_LIBRARY_PATH", lib_path)
        .env("LD_PRELOAD", compat.join(LOOPBACK_SHIM));
    Ok(cmd)
}

/// A running `whip-client`, killed on drop so that no test leaves one behind.
struct WhipClient {
    child: Child,
    log_path: PathBuf,
}

impl WhipClient {
    fn start(url: &str, video: &str, audio: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join("whip-tests");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join(format!(
            "whip-client-{}-{}.log",
            std::process::id(),
            url.rsplit('/').next().unwrap_or("stream")
        ));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let err = log.try_clone().context("cloning the log handle")?;
        let child = whip_client_command()?
            .args(["-u", url, "-o", "-V", video, "-A", audio])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .context("starting whip-client")?;
        Ok(WhipClient { child, log_path })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds one of `lines` (returns it) or the client exits.
    async fn wait_for(
        &mut self,
        lines: &[&'static str],
        timeout: Duration,
    ) -> Result<&'static str> {
        let until = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(found) = lines.iter().find(|l| log.contains(**l)) {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("whip-client exited ({status}) before any of {lines:?}:\n{log}");
            }
            if Instant::now() > until {
                bail!("whip-client printed none of {lines:?} within {timeout:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The session id from the `Location` the client resolved.
    fn session_id(&self) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains(ANSWERED))?;
        Some(line.trim_end().rsplit('/').next()?.to_owned())
    }

    /// SIGINT, as Ctrl-C: the client DELETEs its resource and exits. Waits for that.
    async fn interrupt(&mut self, timeout: Duration) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            let status = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status()
                .context("running kill -INT")?;
            ensure!(status.success(), "kill -INT whip-client failed");
        }
        let until = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < until,
                "whip-client still running {timeout:?} after SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for WhipClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- whip-client ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// The gateway's stderr without its ANSI colours, so `key=value` fields can be searched.
fn gateway_log(gw: &Gateway) -> String {
    let raw = std::fs::read_to_string(gw.log_path()).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `whip-client` with `video` + Opus on `stream` and waits for DTLS connected on both
/// sides: the client's log and the gateway's. Prints the time from the client's start to its
/// "DTLS connected" (to 100 ms: the log is polled) and returns the client, still publishing.
async fn publish_until_connected(gw: &Gateway, stream: &str, video: &str) -> Result<WhipClient> {
    let began = Instant::now();
    let mut client = WhipClient::start(&gw.whip_url(stream), video, AUDIO_OPUS)?;
    client
        .wait_for(&[ANSWERED], Duration::from_secs(20))
        .await
        .context("the gateway did not answer GStreamer's offer")?;
    client
        .wait_for(&[ICE_DONE], Duration::from_secs(10))
        .await
        .context("ICE did not complete over loopback")?;
    let outcome = client
        .wait_for(&[DTLS_OK, DTLS_FAILED], Duration::from_secs(10))
        .await?;
    println!(
        "{stream}: whip-client start -> DTLS connected {} ms",
        began.elapsed().as_millis()
    );
    ensure!(
        outcome == DTLS_OK,
        "GStreamer's DTLS handshake (RSA-2048 client certificate) failed; the vendored dimpl \
         should accept it (vendor/dimpl/PATCHES.md):\n{}",
        client.log()
    );
    let session = client
        .session_id()
        .context("no session id in the Location")?;
    // The gateway logs the session as connected once str0m reports `Connected` (ICE + DTLS).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gateway_log(gw);
        if log
            .lines()
            .any(|l| l.contains(&format!("session={session}")) && l.contains(" connected"))
        {
            break;
        }
        ensure!(
            Instant::now() < until,
            "the gateway never logged the publisher as connected:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_publishes_vp8_live() -> Result<()> {
    let gw = start_gateway().await?;
    let mut client = publish_until_connected(&gw, "gst-vp8", VIDEO_VP8).await?;
    client.interrupt(Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_publishes_h264_and_opus_live() -> Result<()> {
    let gw = start_gateway().await?;
    let mut client = publish_until_connected(&gw, "gst-live", VIDEO_H264).await?;

    // Frames are not from a fixture: an empty catalog leaves every frame unrecognised, so the
    // checks below are the codec-level ones, and the player must not ask for keyframes (it
    // would for every unrecognised frame, and x264 would obey).
    let opts = PlayOptions {
        duration: Duration::from_secs(4),
        request_keyframes: false,
        ..PlayOptions::new(gw.whep_url("gst-live"))
    };
    let viewer = WhepPlayer::start(Arc::new(FrameCatalog::default()), opts).await?;
    let r = viewer.finish().await?;
    println!("viewer: {}", serde_json::to_string(&r)?);
    client.interrupt(Duration::from_secs(10)).await?;

    ensure!(r.error.is_none(), "viewer failed: {:?}", r.error);
    ensure!(r.keyframes > 0, "no keyframe in 4 s (key-int-max is 1 s)");
    ensure!(
        r.video_frames >= 60,
        "only {} video frames in 4 s",
        r.video_frames
    );
    let nals = &r.first_frame_nal_types;
    let pos = |t: u8| nals.iter().position(|n| *n == t);
    ensure!(
        matches!((pos(7), pos(8), pos(5)), (Some(s), Some(p), Some(i)) if s < i && p < i),
        "first frame is not SPS+PPS+IDR: NAL types {nals:?}"
    );
    ensure!(
        r.audio_packets >= 100,
        "only {} Opus packets",
        r.audio_packets
    );
    ensure!(
        r.non_contiguous == 0,
        "{} frames after a loss",
        r.non_contiguous
    );
    if let (Some(connected), Some(first)) = (r.connected_ms, r.first_keyframe_ms) {
        println!("viewer POST -> connected {connected:.0} ms, -> first keyframe {first:.0} ms");
    }
    Ok(())
}
