#!/usr/bin/env bash
# Installs Debian's ffmpeg (ffmpeg + ffprobe) if missing; safe to run again. The recording test
# checks recorded files with ffprobe and decodes them with ffmpeg; `whip-load --synthetic-kbps`
# makes its stream with ffmpeg. Run as root (or with sudo available). Non-interactive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "setup-media-tools: installing Debian ffmpeg" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
ffmpeg -hide_banner -version 2>/dev/null | head -1 || true
