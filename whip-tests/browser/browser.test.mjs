// End-to-end test of the gateway's own pages in a real browser (Debian's headless Chromium):
// /publish/NAME publishes the fake camera via WHIP, /watch/NAME plays it back via WHEP, / lists it.
//
//   GATEWAY_BIN=/path/to/gateway npm test      (default: ../../target/debug/gateway)
//   CHROMIUM_BIN=/usr/bin/chromium             (default)
//
// The browser only ever talks to 127.0.0.1: the gateway listens there, its only ICE candidate is
// 127.0.0.1, other host names do not resolve, and page requests to any other host are aborted.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const GATEWAY_BIN = path.resolve(HERE, process.env.GATEWAY_BIN || "../../target/debug/gateway");
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const STREAM = "browsertest";
const OVERALL_MS = 60_000;
const MIN_FRAMES = 30;

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-domain-reliability",
  "--disable-breakpad",
  "--no-default-browser-check",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
  // No DNS at all: every host name fails to resolve (the rules match IP literals too, hence the
  // EXCLUDE for the one address the test uses).
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  // Chromium honours only the last --disable-features, so this repeats Playwright's own list and adds
  // the features that talk to the network on their own (mDNS for WebRTC host candidates, media
  // router's SSDP/DIAL discovery, translation, autofill, CT updates).
  "--disable-features=" + [
    // Playwright's defaults (playwright-core 1.65)
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
    "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
    // ours
    "WebRtcHideLocalIpsWithMdns", "DialMediaRouteProvider", "GlobalMediaControls", "Translate",
    "AutofillServerCommunication", "CertificateTransparencyComponentUpdater", "InterestFeedContentSuggestions",
  ].join(","),
];

// ---------------------------------------------------------------------------------------------
// State shared by the hooks and tests, and the diagnostics printed on failure.

let gateway = null; // child process
let gatewayExited = null; // { code, signal } once it exits
const gatewayStderr = []; // tail of its stderr (and stdout after READY)
let base = ""; // http://127.0.0.1:PORT
let context = null; // Playwright persistent context (one fresh user-data-dir)
let userDataDir = null;
const consoleLogs = []; // "[page] type: text"
const pages = {}; // label -> Page

function remember(buf, line, max = 300) {
  buf.push(line);
  if (buf.length > max) buf.splice(0, buf.length - max);
}

async function pageState(label, page) {
  try {
    return await page.evaluate(() => {
      const s = (o) => (o ? { state: o.state, connectionState: o.pc && o.pc.connectionState,
        iceConnectionState: o.pc && o.pc.iceConnectionState, location: o.location, codec: o.codec } : undefined);
      const st = document.getElementById("status");
      return JSON.stringify({ url: location.href, status: st && st.textContent, whip: s(window.whip), whep: s(window.whep) });
    });
  } catch (e) {
    return `(${label}: cannot evaluate: ${e.message})`;
  }
}

async function dumpDiagnostics(why) {
  const out = [];
  out.push(`\n===== browser test failure: ${why} =====`);
  out.push(`gateway: ${GATEWAY_BIN} base=${base || "(not ready)"} exited=${JSON.stringify(gatewayExited)}`);
  out.push("----- gateway stderr (tail) -----");
  out.push(...gatewayStderr.slice(-80));
  out.push("----- page states -----");
  for (const [label, page] of Object.entries(pages)) {
    if (!page.isClosed()) out.push(`${label}: ${await pageState(label, page)}`);
  }
  out.push("----- page console -----");
  out.push(...consoleLogs.slice(-150));
  out.push("===== end =====\n");
  console.error(out.join("\n"));
}

/** Runs a test body; on failure prints the gateway's stderr and the pages' consoles, then rethrows. */
async function withDiagnostics(name, fn) {
  try {
    await fn();
  } catch (e) {
    await dumpDiagnostics(`${name}: ${e && e.message ? e.message : e}`);
    throw e;
  }
}

function killGateway() {
  if (gateway && gatewayExited === null) {
    try { gateway.kill("SIGKILL"); } catch (_) {}
  }
}

// Last resort: never leave the gateway behind, never hang past the overall budget.
process.on("exit", killGateway);
const guard = setTimeout(async () => {
  await dumpDiagnostics(`overall timeout of ${OVERALL_MS + 30_000} ms`);
  killGateway();
  process.exit(1);
}, OVERALL_MS + 30_000);
guard.unref();

// ---------------------------------------------------------------------------------------------

function startGateway() {
  return new Promise((resolve, reject) => {
    if (!fs.existsSync(GATEWAY_BIN)) {
      reject(new Error(`gateway binary not found at ${GATEWAY_BIN} (build it with \`cargo build -p gateway\` or set GATEWAY_BIN)`));
      return;
    }
    const args = ["--http-listen", "127.0.0.1:0", "--udp-listen", "127.0.0.1:0", "--candidate-ip", "127.0.0.1"];
    const env = { ...process.env };
    if (!env.RUST_LOG) env.RUST_LOG = "info";
    gateway = spawn(GATEWAY_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env });
    let ready = false;
    const timer = setTimeout(() => {
      if (!ready) reject(new Error("gateway printed no READY line within 20 s"));
    }, 20_000);

    let outBuf = "";
    gateway.stdout.setEncoding("utf8");
    gateway.stdout.on("data", (chunk) => {
      outBuf += chunk;
      let nl;
      while ((nl = outBuf.indexOf("\n")) >= 0) {
        const line = outBuf.slice(0, nl).trimEnd();
        outBuf = outBuf.slice(nl + 1);
        const m = /^READY http=(\S+) udp=(\S+)/.exec(line);
        if (!ready && m) {
          ready = true;
          clearTimeout(timer);
          base = `http://${m[1]}`;
          resolve({ http: m[1], udp: m[2] });
        } else {
          remember(gatewayStderr, `[stdout] ${line}`);
        }
      }
    });
    let errBuf = "";
    gateway.stderr.setEncoding("utf8");
    gateway.stderr.on("data", (chunk) => {
      errBuf += chunk;
      let nl;
      while ((nl = errBuf.indexOf("\n")) >= 0) {
        remember(gatewayStderr, errBuf.slice(0, nl).trimEnd());
        errBuf = errBuf.slice(nl + 1);
      }
    });
    gateway.on("error", (e) => { clearTimeout(timer); reject(e); });
    gateway.on("exit", (code, signal) => {
      gatewayExited = { code, signal };
      if (!ready) {
        clearTimeout(timer);
        reject(new Error(`gateway exited before READY (code ${code}, signal ${signal}):\n${gatewayStderr.slice(-30).join("\n")}`));
      }
    });
  });
}

async function stopGateway() {
  if (!gateway || gatewayExited !== null) return;
  const exited = new Promise((r) => gateway.once("exit", r));
  gateway.kill("SIGTERM");
  const t = setTimeout(() => killGateway(), 3000);
  await exited;
  clearTimeout(t);
}

async function openPage(label, urlPath) {
  const page = await context.newPage();
  pages[label] = page;
  page.on("console", (m) => remember(consoleLogs, `[${label}] ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => remember(consoleLogs, `[${label}] PAGE ERROR: ${e.message}`));
  page.on("requestfailed", (r) => remember(consoleLogs, `[${label}] request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  const resp = await page.goto(base + urlPath, { waitUntil: "load", timeout: 10_000 });
  assert.ok(resp, `no response for ${urlPath}`);
  assert.equal(resp.status(), 200, `GET ${urlPath} -> ${resp.status()}`);
  return page;
}

/** Inbound video stats of the watch page, plus the <video> element's size. */
function watchStats(page) {
  return page.evaluate(async () => {
    const pc = window.whep && window.whep.pc;
    const v = document.querySelector("video");
    const r = { state: window.whep && window.whep.state, framesDecoded: 0, frameWidth: 0, frameHeight: 0,
      videoWidth: v ? v.videoWidth : 0, videoHeight: v ? v.videoHeight : 0, codec: null, bytes: 0 };
    if (!pc) return r;
    const stats = await pc.getStats();
    const codecs = new Map();
    stats.forEach((s) => { if (s.type === "codec") codecs.set(s.id, s.mimeType); });
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        r.framesDecoded = s.framesDecoded || 0;
        r.frameWidth = s.frameWidth || 0;
        r.frameHeight = s.frameHeight || 0;
        r.bytes = s.bytesReceived || 0;
        r.codec = codecs.get(s.codecId) || null;
      }
    });
    return r;
  });
}

// ---------------------------------------------------------------------------------------------

describe("gateway pages in headless Chromium", { timeout: OVERALL_MS }, () => {
  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
    await startGateway();
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-browser-profile-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_BIN,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1000, height: 700 },
      permissions: ["camera", "microphone"],
      timeout: 20_000,
    });
    context.setDefaultTimeout(10_000);
    // Belt and braces: the pages may only fetch from 127.0.0.1.
    await context.route("**/*", (route) => {
      const u = new URL(route.request().url());
      if (u.hostname === "127.0.0.1" || u.protocol === "data:" || u.protocol === "blob:") return route.continue();
      remember(consoleLogs, `[route] blocked ${u.href}`);
      return route.abort("blockedbyclient");
    });
  }, { timeout: 40_000 });

  after(async () => {
    clearTimeout(guard);
    if (context) {
      await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    }
    await stopGateway();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  }, { timeout: 15_000 });

  it("publish page connects via WHIP", async (t) => {
    await withDiagnostics("publish", async () => {
      const page = await openPage("publish", `/publish/${STREAM}`);
      await page.waitForFunction(
        () => window.whip && window.whip.pc && window.whip.pc.connectionState === "connected",
        null, { timeout: 20_000, polling: 200 });
      t.diagnostic(`publisher connected: ${await pageState("publish", page)}`);
    });
  });

  it("watch page plays the stream via WHEP", async (t) => {
    await withDiagnostics("watch", async () => {
      const page = await openPage("watch", `/watch/${STREAM}`);
      await page.waitForFunction(
        () => window.whep && window.whep.pc && window.whep.pc.connectionState === "connected",
        null, { timeout: 15_000, polling: 200 });
      const deadline = Date.now() + 20_000;
      let s = await watchStats(page);
      while (Date.now() < deadline && !(s.framesDecoded > MIN_FRAMES && s.frameWidth > 0 && s.videoWidth > 0)) {
        await new Promise((r) => setTimeout(r, 500));
        s = await watchStats(page);
      }
      t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} frame=${s.frameWidth}x${s.frameHeight} ` +
        `video=${s.videoWidth}x${s.videoHeight} codec=${s.codec} bytes=${s.bytes}`);
      assert.ok(s.framesDecoded > MIN_FRAMES, `framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`);
      assert.ok(s.frameWidth > 0 && s.frameHeight > 0, `frame size ${s.frameWidth}x${s.frameHeight}`);
      assert.ok(s.videoWidth > 0 && s.videoHeight > 0, `<video> size ${s.videoWidth}x${s.videoHeight}`);
      // Frames keep coming.
      await new Promise((r) => setTimeout(r, 1000));
      const later = await watchStats(page);
      assert.ok(later.framesDecoded > s.framesDecoded, `framesDecoded stalled at ${later.framesDecoded}`);
    });
  });

  it("index page lists the live stream", async (t) => {
    await withDiagnostics("index", async () => {
      const page = await openPage("index", "/");
      const row = page.locator(`tr[data-stream="${STREAM}"]`);
      await row.waitFor({ state: "visible", timeout: 6_000 });
      const link = row.locator(`a[href="/watch/${STREAM}"]`).first();
      assert.equal(await link.count(), 1, "row has no link to the watch page");
      t.diagnostic(`index row: ${(await row.innerText()).replace(/\s+/g, " ")}`);
    });
  });

  it("Stop on the publish page ends the stream", async () => {
    await withDiagnostics("stop", async () => {
      const publish = pages.publish;
      assert.ok(publish && pages.index, "needs the publish and index pages of the tests before");
      await publish.click("#stop");
      await publish.waitForFunction(() => window.whip.state === "stopped", null, { timeout: 2_000 });
      // The index refreshes every 2 s; the row goes once the gateway has dropped the stream.
      await pages.index.locator(`tr[data-stream="${STREAM}"]`).waitFor({ state: "detached", timeout: 8_000 });
    });
  });

  it("index form leads to a player that waits for a stream without publisher", async (t) => {
    await withDiagnostics("form", async () => {
      const page = pages.index;
      assert.ok(page, "needs the index page of the tests before");
      await page.fill("#stream", "not live yet");
      await Promise.all([
        page.waitForURL((u) => u.pathname === "/watch/not%20live%20yet", { timeout: 5_000 }),
        page.click('button[value="watch"]'),
      ]);
      assert.equal((await page.textContent("#name")).trim(), "not live yet");
      await page.waitForFunction(() => window.whep && window.whep.state === "waiting", null, { timeout: 8_000 });
      const status = await page.textContent("#status");
      assert.match(status, /waiting for the stream/i);
      t.diagnostic(`player status: ${status}`);
    });
  });
});
