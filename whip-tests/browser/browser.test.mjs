// End-to-end test of the gateway's own pages in a real browser (Debian's headless Chromium):
// /publish/NAME publishes the fake camera via WHIP, /watch/NAME plays it back via WHEP, / lists it.
//
//   scripts/setup-browser.sh && cargo build -p gateway && (cd whip-tests/browser && npm test)
//   GATEWAY_BIN=/path/to/gateway npm test      (default ../../target/debug/gateway; a relative
//                                               path is taken from this folder)
//   CHROMIUM_BIN=/usr/bin/chromium             (default)
//
// Two suites, each against its own gateway: the open one (publish, watch, list, stop, waiting
// player) and one started with --publish-token/--play-token (pages take ?token=).
// The browser only ever talks to 127.0.0.1: the gateway listens there, its only ICE candidate is
// 127.0.0.1, other host names do not resolve, and page requests to any other host are aborted.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromium, pageState, publishStats, waitConnected,
  waitFrames, watchStats } from "./lib.mjs";

const STREAM = "browsertest";
const OVERALL_MS = 75_000; // hard stop for the whole file (a normal run takes ~15 s)
const MIN_FRAMES = 30;

// ---------------------------------------------------------------------------------------------
// State shared by the hooks and tests, and the diagnostics printed on failure.

let context = null; // Playwright persistent context (one fresh user-data-dir), shared by both suites
let userDataDir = null;
const diag = new Diagnostics("browser test", OVERALL_MS);
const { consoleLogs, pages } = diag;
const withDiagnostics = (name, fn) => diag.run(name, fn);

const openPage = (label, url) => diag.open(context, label, url);

/** Closes the open pages (so none keeps retrying against a gateway that is about to stop). */
async function closePages() {
  for (const [label, page] of Object.entries(pages)) {
    await page.close().catch(() => {});
    delete pages[label];
  }
}

// ---------------------------------------------------------------------------------------------

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-browser-profile-"));
  context = await launchChromium(userDataDir, consoleLogs);
}, { timeout: 25_000 });

after(async () => {
  diag.stop();
  if (context) {
    await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }
  await Promise.all(gateways.map((g) => g.stop()));
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 15_000 });

describe("gateway pages in headless Chromium", { timeout: 40_000 }, () => {
  const gw = new Gateway("open");
  before(() => gw.start(), { timeout: 25_000 });
  after(async () => { await closePages(); await gw.stop(); }, { timeout: 10_000 });

  it("publish page connects via WHIP", async (t) => {
    await withDiagnostics("publish", async () => {
      const page = await openPage("publish", `${gw.base}/publish/${STREAM}`);
      await waitConnected(page, "whip", 20_000);
      t.diagnostic(`publisher connected: ${await pageState("publish", page)}`);
    });
  });

  it("watch page plays the stream via WHEP", async (t) => {
    await withDiagnostics("watch", async () => {
      const page = await openPage("watch", `${gw.base}/watch/${STREAM}`);
      await waitConnected(page, "whep", 15_000);
      const s = await waitFrames(page, MIN_FRAMES, 20_000);
      t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} frame=${s.frameWidth}x${s.frameHeight} ` +
        `video=${s.videoWidth}x${s.videoHeight} codec=${s.codec} bytes=${s.bytes} ${JSON.stringify(s.more)}`);
      if (pages.publish && !pages.publish.isClosed()) {
        t.diagnostic(`publisher: ${JSON.stringify(await publishStats(pages.publish).catch((e) => e.message))}`);
      }
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
      const page = await openPage("index", `${gw.base}/`);
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
      await publish.waitForFunction(() => window.whip.state === "stopped", null, { timeout: 5_000 });
      // The index refreshes every 2 s; the row goes once the gateway has dropped the stream.
      await pages.index.locator(`tr[data-stream="${STREAM}"]`).waitFor({ state: "detached", timeout: 8_000 });
    });
  });

  it("index form leads to a player that waits for a stream without publisher", async (t) => {
    await withDiagnostics("form", async () => {
      const page = pages.index;
      assert.ok(page, "needs the index page of the tests before");
      await page.fill("#stream", "not-live-yet");
      await Promise.all([
        page.waitForURL((u) => u.pathname === "/watch/not-live-yet", { timeout: 5_000 }),
        page.click('button[value="watch"]'),
      ]);
      assert.equal((await page.textContent("#name")).trim(), "not-live-yet");
      await page.waitForFunction(() => window.whep && window.whep.state === "waiting", null, { timeout: 8_000 });
      const status = await page.textContent("#status");
      assert.match(status, /waiting for the stream/i);
      t.diagnostic(`player status: ${status}`);
    });
  });
});

describe("pages with bearer tokens (?token=)", { timeout: 30_000 }, () => {
  const PUB = "pub-secret-browser";
  const PLAY = "play-secret-browser";
  const gw = new Gateway("tokens", ["--publish-token", PUB, "--play-token", PLAY]);
  before(() => gw.start(), { timeout: 25_000 });
  after(async () => { await closePages(); await gw.stop(); }, { timeout: 10_000 });

  it("without a token the publish page says it is not allowed", async () => {
    await withDiagnostics("publish without token", async () => {
      const page = await openPage("publish-notoken", `${gw.base}/publish/secured`);
      await page.waitForFunction(() => window.whip && window.whip.state === "error", null, { timeout: 8_000 });
      assert.match(await page.textContent("#status"), /not allowed/i);
      await page.close();
    });
  });

  it("publish and watch with tokens from the page URL", async (t) => {
    await withDiagnostics("tokens", async () => {
      const pub = await openPage("publish-token", `${gw.base}/publish/secured?token=${PUB}`);
      await waitConnected(pub, "whip", 15_000);
      const watch = await openPage("watch-token", `${gw.base}/watch/secured?token=${PLAY}`);
      await waitConnected(watch, "whep", 10_000);
      const s = await waitFrames(watch, 10, 10_000);
      t.diagnostic(`viewer with token: framesDecoded=${s.framesDecoded} frame=${s.frameWidth}x${s.frameHeight}`);
      assert.ok(s.framesDecoded > 10, `framesDecoded ${s.framesDecoded} <= 10`);
      // The links on the pages carry the token along.
      assert.equal(await watch.getAttribute("#home", "href"), `/?token=${PLAY}`);
      // Leaving the pages ends both sessions (pagehide: DELETE with the token, and the peer
      // connections close) and the stream goes away.
      await watch.goto("about:blank");
      await pub.goto("about:blank");
      const deadline = Date.now() + 5_000;
      let names = null;
      while (Date.now() < deadline) {
        const r = await fetch(`${gw.base}/v1/streams`, { headers: { Authorization: `Bearer ${PLAY}` } });
        names = r.ok ? (await r.json()).streams.map((x) => x.name) : `HTTP ${r.status}`;
        if (Array.isArray(names) && !names.includes("secured")) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.ok(Array.isArray(names) && !names.includes("secured"), `stream still listed after pagehide: ${names}`);
    });
  });
});

describe("session/track API demo page (/calls): publish, pull by session id, data channel chat", { timeout: 40_000 }, () => {
  const APP = "demo";
  const SECRET = "demo-secret-0123456789";
  const gw = new Gateway("calls demo", ["--app", `${APP}:${SECRET}`]);
  before(() => gw.start(), { timeout: 25_000 });
  after(async () => { await closePages(); await gw.stop(); }, { timeout: 10_000 });

  it("a viewer pulls the publisher's camera and gets its chat messages", async (t) => {
    await withDiagnostics("calls demo", async () => {
      const url = `${gw.base}/calls?app=${APP}&secret=${SECRET}`;
      const ready = (page) => page.waitForFunction(
        () => window.calls.error || (window.calls.channel && window.calls.channel.readyState === "open"),
        null, { timeout: 15_000, polling: 200 });
      const pub = await openPage("calls publish", url);
      await ready(pub);
      assert.equal(await pub.evaluate(() => window.calls.error), null);
      const sessionId = await pub.evaluate(() => window.calls.sessionId);

      const view = await openPage("calls watch", `${url}&pull=${sessionId}`);
      await ready(view);
      assert.equal(await view.evaluate(() => window.calls.error), null);
      const frames = () => view.evaluate(() => document.getElementById("video").getVideoPlaybackQuality().totalVideoFrames);
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && (await frames()) <= MIN_FRAMES) await new Promise((r) => setTimeout(r, 250));
      assert.ok((await frames()) > MIN_FRAMES, `the viewer shows ${await frames()} frames`);

      const sent = ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"];
      for (const m of sent) await pub.evaluate((m) => window.calls.send(m), m);
      await view.waitForFunction((n) => window.calls.messages.length >= n, sent.length, { timeout: 5_000 });
      assert.deepEqual(await view.evaluate(() => window.calls.messages), sent);
      t.diagnostic(`viewer: ${await frames()} frames, messages ${JSON.stringify(sent)}`);
    });
  });
});
