#!/usr/bin/env bash
# Installs Debian's coturn if missing; safe to run again. The TURN test runs its `turnserver`
# (its own flags and ports, never the package's service) as the TURN server our credentials are
# for, and its `turnutils_uclient` as an independent TURN client. Run as root (or with sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_uclient >/dev/null 2>&1; then
  echo "setup-coturn: installing Debian coturn" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends coturn >/dev/null
  # Where init runs, the package starts its own server on 3478: the test starts its own.
  $SUDO systemctl stop coturn >/dev/null 2>&1 || true
  $SUDO pkill -x turnserver >/dev/null 2>&1 || true
fi
turnserver --version 2>&1 | head -1 || true
