//! Client side of the gateway's tests: a WHIP publisher and a WHEP player built on str0m, MP4
//! media to publish and to verify against, a harness that runs the real gateway, and the CLIs.
//!
//! ```text
//! cargo run -p whip-tests --bin whip-publish -- --url http://127.0.0.1:8080/whip/demo \
//!     --ignore-pli --duration 60 whip-tests/fixtures/long-gop.mp4
//! cargo run -p whip-tests --bin whep-play -- --url http://127.0.0.1:8080/whep/demo \
//!     --duration 10 --fixture whip-tests/fixtures/long-gop.mp4
//! ```
//!
//! The fixtures are made by `fixtures/make-fixtures.sh`; the player identifies each received
//! frame by a hash of its slice data (see [`annexb::vcl_hash`]), so its report can say whether
//! the stream arrived whole and in order.

#![warn(missing_docs)]

pub mod annexb;
pub mod gateway_probe;
pub mod harness;
pub mod latency;
pub mod light_client;
pub mod media_source;
pub mod rtc_loop;
pub mod rtp_counter;
pub mod sample_entry;
pub mod sequence_check;
pub mod signaling;
pub mod synthetic;
pub mod whep_client;
pub mod whip_client;

pub use harness::Gateway;
pub use latency::LatencyStats;
pub use media_source::{FrameCatalog, Kind, MediaSample, MediaSource, SourceOptions};
pub use sequence_check::SequenceStats;
pub use signaling::{HttpStatusError, http_status};
pub use whep_client::{PlayOptions, PlayReport, WhepPlayer, play};
pub use whip_client::{PublishOptions, PublishStats, WhipPublisher};

/// The CLIs' logging: `RUST_LOG` filters, and logs go to stderr (stdout carries reports).
pub fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}
