// The gateway's /publish/ and /watch/ pages in Debian's headless Firefox ESR, driven over WebDriver
// BiDi by puppeteer-core, with Chromium (playwright-core, as in browser.test.mjs) on the other end
// of the cross-browser cases:
//   Firefox publishes (VP8: Firefox has no H264 without the OpenH264 download) -> Firefox watches
//                                                                               -> Chromium watches
//   Chromium publishes with ?codec=vp8 -> Firefox watches
//   Chromium publishes H264 (the page's default) -> Firefox's offer has no H264 (no OpenH264
//   plugin offline): the gateway answers 406 with a counter-offer of H264; Firefox would accept
//   it in an answer yet decode nothing, so the page checks RTCRtpReceiver.getCapabilities and
//   says "Cannot play: this browser cannot decode the stream (…H264)"
//
//   scripts/setup-browser.sh && cargo build -p gateway && (cd whip-tests/browser && npm test)
//   FIREFOX_BIN=/usr/bin/firefox-esr   (default)
//   FIREFOX_ICE_IP=192.0.2.2           (default: the first non-loopback IPv4 address of this machine)
//
// Why not 127.0.0.1 for the media, as in the Chromium test: Firefox ESR 153 never gathers a loopback
// host candidate (media.peerconnection.ice.loopback is read, but the interface list is filtered
// before it applies), so it cannot pair with a gateway whose only candidate is 127.0.0.1 and ICE
// stays "new". The gateway here binds its UDP socket to, and advertises, this machine's own
// non-loopback address instead; the packets still never leave the machine (the kernel delivers
// traffic to a local address over lo). HTTP stays on 127.0.0.1 (a secure context, so getUserMedia
// works without TLS). Without such an address the Firefox suite is skipped.
// No other network: Firefox's HTTP(S) goes to a dead proxy (127.0.0.1:9) except for 127.0.0.1, and
// its update, telemetry, captive-portal, DoH and OpenH264-download services are switched off.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromium, publishStats, waitFrames,
  watchStats } from "./lib.mjs";

const FIREFOX_BIN = process.env.FIREFOX_BIN || "/usr/bin/firefox-esr";
const OVERALL_MS = 150_000; // hard stop for the whole file (a normal run takes ~25 s)
const MIN_FRAMES = 30;
const MAX_LOSS = 0.05; // lost / (received + lost) of the viewer's video; on one machine it is 0

const FIREFOX_PREFS = {
  // Fake camera and microphone, no permission prompt.
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  // Real host addresses in candidates, not mDNS names (the gateway does not resolve .local).
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  // Never fetch OpenH264 (or any other plugin).
  "media.gmp-gmpopenh264.enabled": false,
  "media.gmp-gmpopenh264.autoupdate": false,
  "media.gmp-manager.updateEnabled": false,
  // No network but 127.0.0.1: every proxied request fails, localhost is never proxied.
  "network.proxy.type": 1,
  "network.proxy.http": "127.0.0.1",
  "network.proxy.http_port": 9,
  "network.proxy.ssl": "127.0.0.1",
  "network.proxy.ssl_port": 9,
  "network.proxy.share_proxy_settings": true,
  "network.trr.mode": 5,
  "network.dns.disablePrefetch": true,
  "network.prefetch-next": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.unified": false,
  "app.update.enabled": false,
  "app.update.auto": false,
  "extensions.systemAddon.update.enabled": false,
  "browser.safebrowsing.update.enabled": false,
  "browser.topsites.contile.enabled": false,
};

/** The address the gateway's media uses for this file (see the header). */
function iceAddress() {
  if (process.env.FIREFOX_ICE_IP) return process.env.FIREFOX_ICE_IP;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list || []) {
      if (a.family === "IPv4" && !a.internal && !a.address.startsWith("169.254.")) return a.address;
    }
  }
  return null;
}

const ICE_IP = iceAddress();
const SKIP = !fs.existsSync(FIREFOX_BIN) ? `${FIREFOX_BIN} missing: run scripts/setup-browser.sh`
  : !ICE_IP ? "no non-loopback IPv4 address (Firefox gathers no loopback candidate); set FIREFOX_ICE_IP"
  : false;

// ---------------------------------------------------------------------------------------------

let firefox = null; // Puppeteer Browser (Firefox over WebDriver BiDi)
let chromiumContext = null; // Playwright persistent context
let userDataDir = null;
const diag = new Diagnostics("firefox test", OVERALL_MS);
const { consoleLogs, pages } = diag;
const kinds = {}; // label -> "firefox" | "chromium"
const withDiagnostics = (name, fn) => diag.run(name, fn);

/** Opens url in a new tab of Firefox (Puppeteer) or Chromium (Playwright). */
function openPage(kind, label, url) {
  kinds[label] = kind;
  return diag.open(kind === "firefox" ? firefox : chromiumContext, label, url, 15_000);
}

/** page.waitForFunction with one argument, in either library's signature. */
function waitFor(label, fn, arg, timeout) {
  const [page, kind] = [pages[label], kinds[label]];
  return kind === "firefox"
    ? page.waitForFunction(fn, { timeout, polling: 200 }, arg)
    : page.waitForFunction(fn, arg, { timeout, polling: 200 });
}

function waitConnected(label, which, timeout) {
  return waitFor(label, (w) => window[w] && window[w].pc && window[w].pc.connectionState === "connected",
    which, timeout);
}

/** Milliseconds from now until the watch page has decoded its first frame (bounded by ms). */
async function timeToFirstFrame(page, since, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const s = await watchStats(page);
    if (s.framesDecoded > 0) return Date.now() - since;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

/** Watches `stream` in a new tab and checks it plays: frames decoded, a size, low loss, progress. */
async function assertPlays(t, kind, label, url, codec) {
  const t0 = Date.now();
  const page = await openPage(kind, label, url);
  await waitConnected(label, "whep", 20_000);
  const ttff = await timeToFirstFrame(page, t0, 20_000);
  const s = await waitFrames(page, MIN_FRAMES, 25_000);
  const lost = s.more.packetsLost || 0;
  const received = s.more.packetsReceived || 0;
  const loss = received + lost > 0 ? Math.max(0, lost) / (received + lost) : 0;
  t.diagnostic(`${label}: first frame ${ttff} ms after opening the page; framesDecoded=${s.framesDecoded} ` +
    `frame=${s.frameWidth}x${s.frameHeight} video=${s.videoWidth}x${s.videoHeight} codec=${s.codec} ` +
    `bytes=${s.bytes} loss=${(loss * 100).toFixed(2)}% ${JSON.stringify(s.more)}`);
  assert.ok(s.framesDecoded > MIN_FRAMES, `framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`);
  assert.ok(s.frameWidth > 0 && s.frameHeight > 0, `frame size ${s.frameWidth}x${s.frameHeight}`);
  assert.ok(s.videoWidth > 0 && s.videoHeight > 0, `<video> size ${s.videoWidth}x${s.videoHeight}`);
  assert.equal((s.codec || "").toLowerCase(), codec.toLowerCase(), `codec ${s.codec}`);
  assert.ok(loss <= MAX_LOSS, `video loss ${(loss * 100).toFixed(2)}% (${lost} of ${received + lost})`);
  await new Promise((r) => setTimeout(r, 1000));
  const later = await watchStats(page);
  assert.ok(later.framesDecoded > s.framesDecoded, `framesDecoded stalled at ${later.framesDecoded}`);
  return page;
}

/** Waits until the publish page's outbound video has encoded frames; returns its stats. */
async function publisherSending(page, ms) {
  const deadline = Date.now() + ms;
  let s = await publishStats(page);
  while (Date.now() < deadline && !(s.codec && s.framesEncoded > 0 && s.packetsSent > 0)) {
    await new Promise((r) => setTimeout(r, 250));
    s = await publishStats(page);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------

describe("gateway pages in headless Firefox", { skip: SKIP, timeout: 120_000 }, () => {
  const gw = new Gateway("firefox", [], ICE_IP || "127.0.0.1");

  before(async () => {
    await gw.start();
    firefox = await puppeteer.launch({
      browser: "firefox",
      executablePath: FIREFOX_BIN,
      protocol: "webDriverBiDi",
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
      timeout: 30_000,
    });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-firefox-test-chromium-"));
    chromiumContext = await launchChromium(userDataDir, consoleLogs);
  }, { timeout: 60_000 });

  after(async () => {
    diag.stop();
    for (const [label, page] of Object.entries(pages)) {
      await Promise.race([page.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
      delete pages[label];
    }
    const closing = [];
    if (firefox) closing.push(firefox.close().catch(() => {}));
    if (chromiumContext) closing.push(chromiumContext.close().catch(() => {}));
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 8000))]);
    if (firefox) {
      const proc = firefox.process();
      if (proc && proc.exitCode === null) try { proc.kill("SIGKILL"); } catch (_) {}
    }
    await Promise.all(gateways.map((g) => g.stop()));
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  }, { timeout: 20_000 });

  it("Firefox publishes the fake camera via /publish/ (VP8)", async (t) => {
    await withDiagnostics("firefox publish", async () => {
      const t0 = Date.now();
      const page = await openPage("firefox", "ff-publish", `${gw.base}/publish/ff`);
      await waitConnected("ff-publish", "whip", 25_000);
      const connectedMs = Date.now() - t0;
      const s = await publisherSending(page, 10_000);
      const offered = await page.evaluate(() => window.whip.offered);
      t.diagnostic(`Firefox publisher connected ${connectedMs} ms after opening the page; offered: ${offered}; ` +
        JSON.stringify(s));
      assert.equal(s.codec, "video/VP8", `publisher codec ${s.codec}`);
      assert.ok(s.framesEncoded > 0, `framesEncoded ${s.framesEncoded}`);
    });
  });

  it("Firefox plays the Firefox stream via /watch/", async (t) => {
    await withDiagnostics("firefox watch firefox", async () => {
      assert.ok(pages["ff-publish"], "needs the Firefox publisher of the test before");
      await assertPlays(t, "firefox", "ff-watch-ff", `${gw.base}/watch/ff`, "video/VP8");
    });
  });

  it("Chromium plays the Firefox stream via /watch/", async (t) => {
    await withDiagnostics("chromium watch firefox", async () => {
      assert.ok(pages["ff-publish"], "needs the Firefox publisher of the test before");
      await assertPlays(t, "chromium", "ch-watch-ff", `${gw.base}/watch/ff`, "video/VP8");
    });
  });

  it("Firefox plays a Chromium publisher that sends VP8 (?codec=vp8)", async (t) => {
    await withDiagnostics("firefox watch chromium vp8", async () => {
      const pub = await openPage("chromium", "ch-publish-vp8", `${gw.base}/publish/chvp8?codec=vp8`);
      await waitConnected("ch-publish-vp8", "whip", 20_000);
      const s = await publisherSending(pub, 10_000);
      t.diagnostic(`Chromium publisher: ${JSON.stringify(s)}`);
      assert.equal(s.codec, "video/VP8", `publisher codec ${s.codec}`);
      await assertPlays(t, "firefox", "ff-watch-chvp8", `${gw.base}/watch/chvp8`, "video/VP8");
    });
  });

  it("Firefox cannot play a Chromium H264 stream: the gateway counter-offers H264 (406), the page sees Firefox cannot decode it and says so", async (t) => {
    await withDiagnostics("firefox watch chromium h264", async () => {
      const pub = await openPage("chromium", "ch-publish-h264", `${gw.base}/publish/chh264`);
      await waitConnected("ch-publish-h264", "whip", 20_000);
      const s = await publisherSending(pub, 10_000);
      assert.equal(s.codec, "video/H264", `publisher codec ${s.codec}`);
      const page = await openPage("firefox", "ff-watch-chh264", `${gw.base}/watch/chh264`);
      await waitFor("ff-watch-chh264", () => window.whep && window.whep.state === "error", null, 15_000);
      const status = await page.evaluate(() => document.getElementById("status").textContent);
      t.diagnostic(`Firefox player: ${status}`);
      assert.match(status, /Cannot play: this browser cannot decode the stream \(.*H264/);
    });
  });
});
