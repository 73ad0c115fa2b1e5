#!/usr/bin/env bash
# Installs what the live GStreamer publisher test (whip-tests/tests/gstreamer_live.rs) needs; safe
# to run again:
#   - Debian's simple-whip-client (Meetecho's WHIP client on GStreamer's webrtcbin, binary
#     /usr/bin/whip-client); it pulls in GStreamer's good/bad/ugly/libav plugins and libnice (bad
#     holds webrtcbin and the OpenSSL dtls element, ugly x264enc, good vp8enc and the payloaders)
#   - two shims in /usr/local/lib/whip-client-compat, built from scripts/gstreamer-compat/*.c,
#     which the test loads into the client only (see the .c files for why):
#       libgupnp-igd-1.0.so.4   bookworm's client aborts at start without it (libsoup 2/3 clash)
#       libloopback-ifaddrs.so  LD_PRELOAD: libnice gathers on 127.0.0.1 only
# Run as root (or with sudo available) on Debian/Ubuntu. Non-interactive.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/scripts/gstreamer-compat"
COMPAT=/usr/local/lib/whip-client-compat
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if [ ! -x /usr/bin/whip-client ]; then
  echo "setup-gstreamer: installing Debian simple-whip-client" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends simple-whip-client >/dev/null
fi

# Rebuilt when missing or older than their source.
build() { # build <output> <source> <extra cc args...>
  local out="$COMPAT/$1" src="$SRC/$2"
  shift 2
  if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
    echo "setup-gstreamer: building $out" >&2
    local tmp
    tmp="$(mktemp -d)"
    cc -shared -fPIC -O2 -Wall -o "$tmp/lib.so" "$src" "$@"
    $SUDO mkdir -p "$COMPAT"
    $SUDO install -m 0644 "$tmp/lib.so" "$out"
    rm -rf "$tmp"
  fi
}
build libgupnp-igd-1.0.so.4 gupnp-igd-stub.c -Wl,-soname,libgupnp-igd-1.0.so.4
build libloopback-ifaddrs.so loopback-ifaddrs.c -ldl

echo "setup-gstreamer: ready (/usr/bin/whip-client, shims in $COMPAT)" >&2
