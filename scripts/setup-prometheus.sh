#!/usr/bin/env bash
# Installs Debian's Prometheus server if missing; safe to run again. The metrics test starts it
# (its own config, data dir and port) to scrape a gateway and a relay, then queries its HTTP API.
# Run as root (or with sudo available). Non-interactive; the package's own service is not used.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if ! command -v prometheus >/dev/null 2>&1; then
  echo "setup-prometheus: installing Debian prometheus" >&2
  $SUDO apt-get update -qq
  # If the package started its own server (it does where init runs), stop it: the test starts its own.
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
  $SUDO pkill -x prometheus >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1 || true
