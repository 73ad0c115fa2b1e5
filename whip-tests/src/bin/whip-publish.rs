//! Publishes an MP4 file (H264, H265 or AV1 without B-frames + Opus) to a WHIP endpoint at real
//! pace, looping, the way OBS would: `whip-publish --url http://127.0.0.1:8080/whip/concert fixtures/long-gop.mp4`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use whip_tests::media_source::describe;
use whip_tests::{MediaSource, PublishOptions, WhipPublisher};

#[derive(Parser, Debug)]
#[command(about = "Publish an MP4 file to a WHIP endpoint at real pace")]
struct Args {
    /// The MP4 file (H264, H265 or AV1 without B-frames, Opus).
    file: PathBuf,
    /// WHIP endpoint URL.
    #[arg(long, env = "WHIP_URL")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "WHIP_TOKEN")]
    token: Option<String>,
    /// Stop after this many seconds (default: run until the loops are done or Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Play the file this many times (default: forever).
    #[arg(long)]
    loops: Option<u32>,
    /// Never act on PLI/FIR, like OBS. Without it, a keyframe request makes the video jump to the
    /// file's next keyframe.
    #[arg(long)]
    ignore_pli: bool,
    /// Local UDP address to send from.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<()> {
    whip_tests::init_cli_logging();
    let args = Args::parse();
    eprintln!("publishing {}", describe(&args.file)?);
    let media = Arc::new(MediaSource::open(&args.file)?);
    let duration = match args.duration {
        Some(s) => Some(Duration::try_from_secs_f64(s).context("invalid --duration")?),
        None => None,
    };
    let opts = PublishOptions {
        token: args.token,
        ignore_keyframe_requests: args.ignore_pli,
        loops: args.loops,
        duration,
        bind: args.bind,
        ..PublishOptions::new(args.url)
    };
    let publisher = WhipPublisher::start(media, opts).await?;
    eprintln!("session {}", publisher.resource_url());

    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                eprintln!("{}", serde_json::to_string(&publisher.stats())?);
                if publisher.is_finished() {
                    break;
                }
            }
        }
    }
    let stats = publisher.stop().await?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
