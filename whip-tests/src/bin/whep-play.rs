//! Plays a WHEP endpoint for a while and prints a JSON report; when the stream is one of our
//! fixtures (`--fixture`), every frame is checked against it:
//! `whep-play --url http://127.0.0.1:8080/whep/concert --duration 10 --fixture fixtures/long-gop.mp4`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use whip_tests::media_source::fixture_path;
use whip_tests::{MediaSource, PlayOptions, WhepPlayer};

#[derive(Parser, Debug)]
#[command(about = "Play a WHEP endpoint and report what arrived")]
struct Args {
    /// WHEP endpoint URL.
    #[arg(long, env = "WHEP_URL")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "WHEP_TOKEN")]
    token: Option<String>,
    /// Seconds to play.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many video frames (1 measures just the join).
    #[arg(long)]
    frames: Option<u64>,
    /// Stop at the first keyframe (measures the join to the first decodable picture).
    #[arg(long)]
    until_keyframe: bool,
    /// The MP4 being published, to identify frames (default: fixtures/short-gop.mp4).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Never send PLI.
    #[arg(long)]
    no_pli: bool,
    /// Local UDP address to receive on.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    whip_tests::init_cli_logging();
    let args = Args::parse();
    let fixture = args
        .fixture
        .unwrap_or_else(|| fixture_path("short-gop.mp4"));
    let catalog = MediaSource::open(&fixture)?.catalog();
    let opts = PlayOptions {
        token: args.token,
        bind: args.bind,
        duration: Duration::try_from_secs_f64(args.duration).context("invalid --duration")?,
        stop_after_frames: args.frames,
        stop_at_first_keyframe: args.until_keyframe,
        request_keyframes: !args.no_pli,
        ..PlayOptions::new(args.url)
    };
    let player = WhepPlayer::start(Arc::clone(&catalog), opts).await?;
    eprintln!("session {}", player.resource_url());
    let report = tokio::select! {
        r = player.finish() => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
