#!/usr/bin/env bash
# Installs what the one-address rig (scripts/vip-rig.sh, whip-tests/tests/one_address.rs) needs:
# iproute2 for network namespaces and veth pairs, nftables for the L4 balancer. Safe to run
# again. Run as root (the rig itself needs root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  echo "setup-netns: installing Debian nftables and iproute2" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nftables iproute2 >/dev/null
fi
nft --version
