#!/usr/bin/env bash
# The project's test command: sets up what a fresh Debian machine lacks (Chromium, the browser
# test's npm packages), builds the gateway, runs every Rust test, then the headless-browser test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup-browser.sh
# The live GStreamer publisher test drives Debian's simple-whip-client.
bash scripts/setup-gstreamer.sh
# ffmpeg/ffprobe: the recording test reads its files back with them; whip-load's synthetic stream.
bash scripts/setup-media-tools.sh
# The metrics test starts a real Prometheus server to scrape a gateway and a relay.
bash scripts/setup-prometheus.sh
# The TURN test: coturn as the TURN server our credentials are for, and its test client.
bash scripts/setup-coturn.sh
# The one-address rig: gateways in network namespaces behind an nftables load balancer.
bash scripts/setup-netns.sh

# A fresh clone builds once: the incremental cache would only double target/ on CI's disk.
export CARGO_INCREMENTAL=0

# The integration tests start this binary as a real process.
cargo build -p gateway --bin gateway -p relay --bin relay

# Integration tests start gateways and WebRTC peers; two at a time fit a 2-core machine.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2
else
  cargo test --workspace --no-fail-fast -- --test-threads 2
fi

# The vendored, patched dimpl (str0m's DTLS) is no workspace member: its unit tests run here.
bash scripts/test-vendored-dimpl.sh

# The vendored str0m's patch is small (vendor/str0m/PATCHES.md); the committed diff must match it.
bash scripts/str0m-patch.sh --check

# Real browser: headless Chromium publishes through /publish/… and plays through /watch/….
(cd whip-tests/browser && GATEWAY_BIN="$ROOT/target/debug/gateway" npm test)
