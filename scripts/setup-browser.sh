#!/usr/bin/env bash
# Installs what the browser tests (whip-tests/browser) need; safe to run again.
#   - Debian's chromium at /usr/bin/chromium (browser.test.mjs drives it with playwright-core;
#     Playwright's own browser downloads are not used)
#   - Debian's openssl (turn.test.mjs makes a certificate for the gateway's TURN over TLS)
#   - Debian's firefox-esr at /usr/bin/firefox-esr (firefox.test.mjs drives it over WebDriver BiDi
#     with puppeteer-core; Puppeteer's own browser downloads are not used)
#   - the tests' npm dependencies (npm ci, from package-lock.json), among them the third-party
#     WHIP/WHEP client libraries thirdparty.test.mjs runs (whip-whep, @eyevinn/whip-web-client),
#     Cloudflare's partytracks (partytracks.test.mjs, with its rxjs) and esbuild, which bundles
#     the Eyevinn client and partytracks for the pages
# Run as root (or with sudo available) on Debian/Ubuntu. Non-interactive.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEST_DIR="$ROOT/whip-tests/browser"
export DEBIAN_FRONTEND=noninteractive
# playwright-core and puppeteer-core must never try to download browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PUPPETEER_SKIP_DOWNLOAD=1

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -E"; fi

MISSING=()
[ -x /usr/bin/chromium ] || MISSING+=(chromium)
[ -x /usr/bin/firefox-esr ] || MISSING+=(firefox-esr)
command -v openssl >/dev/null 2>&1 || MISSING+=(openssl)
if [ "${#MISSING[@]}" -gt 0 ]; then
  echo "setup-browser: installing Debian ${MISSING[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true
echo "$(/usr/bin/firefox-esr --version 2>/dev/null)"

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-browser: npm not found; install Node.js 20+ first" >&2
  exit 1
fi

NEED_NPM=0
for pkg in playwright-core puppeteer-core esbuild whip-whep @eyevinn/whip-web-client partytracks rxjs; do
  [ -d "$TEST_DIR/node_modules/$pkg" ] || NEED_NPM=1
done
if [ "$NEED_NPM" -eq 1 ]; then
  echo "setup-browser: npm ci in $TEST_DIR" >&2
  (cd "$TEST_DIR" && npm ci --no-audit --no-fund)
fi
echo "setup-browser: ready (run: cd whip-tests/browser && npm test)" >&2
