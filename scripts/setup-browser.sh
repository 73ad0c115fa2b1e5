#!/usr/bin/env bash
# Installs what the browser test (whip-tests/browser) needs; safe to run again.
#   - Debian's chromium at /usr/bin/chromium (the test drives it with playwright-core; Playwright's
#     own browser downloads are not used)
#   - the test's npm dependencies (npm ci, from package-lock.json)
# Run as root (or with sudo available) on Debian/Ubuntu. Non-interactive.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEST_DIR="$ROOT/whip-tests/browser"
export DEBIAN_FRONTEND=noninteractive
# playwright-core must never try to download browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

if [ ! -x /usr/bin/chromium ]; then
  echo "setup-browser: installing Debian chromium" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-browser: npm not found; install Node.js 20+ first" >&2
  exit 1
fi

if [ ! -d "$TEST_DIR/node_modules/playwright-core" ]; then
  echo "setup-browser: npm ci in $TEST_DIR" >&2
  (cd "$TEST_DIR" && npm ci --no-audit --no-fund)
fi
echo "setup-browser: ready (run: cd whip-tests/browser && npm test)" >&2
