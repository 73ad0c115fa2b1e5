// Cloudflare's own client library for its Calls / Realtime SFU API, `partytracks` 0.0.54 from npm,
// in headless Chromium against the gateway's session/track API, unchanged: a page on another
// origin (a static server of this file on its own loopback port) points the library's `prefix`
// at `<gateway>/v1/apps/<app>` and gives it the app secret as a header, as its README allows for
// cross-domain use. One PartyTracks instance pushes the fake camera (tracks/new with its offer),
// a second one, in another page, pulls the pushed track by the metadata the first emitted
// (tracks/new remote, our offer, renegotiate), and the test waits for decoded frames. Every
// request is cross-origin with an Authorization header, so each one goes through a CORS
// preflight the gateway must answer (Chromium refuses the request otherwise), and the library
// posts its JSON without a Content-Type (text/plain). Unsubscribing the pull then closes it the
// library's way (the transceiver stopped, tracks/close with its offer, our answer applied). The
// library's request history must show no `errorCode`.
//
//   scripts/setup-browser.sh && cargo build -p gateway && (cd whip-tests/browser && npm test)
//   node --test partytracks.test.mjs      (just this file; GATEWAY_BIN, CHROMIUM_BIN as in lib.mjs)
//
// Nothing leaves the machine: no host name resolves (CHROMIUM_ARGS), the pages name only
// 127.0.0.1, `iceServers: []` (the library would otherwise fetch `<prefix>/generate-ice-servers`)
// and the gateway's only ICE candidate is 127.0.0.1.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromiumCrossOrigin } from "./lib.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_MS = 60_000;
const MIN_FRAMES = 20;
const APP = "ptdemo";
const SECRET = "partytracks-secret-0123456789";

let context = null;
let userDataDir = null;
let site = null;
const diag = new Diagnostics("partytracks test", OVERALL_MS);
const { pages } = diag;

const PAGE = `<!doctype html><meta charset="utf-8"><title>partytracks against the gateway</title>
<video autoplay muted playsinline style="width:320px"></video>`;

async function startSite() {
  // The library and the one rxjs helper the page needs, bundled as an application's build would.
  const bundle = await esbuild.build({
    stdin: {
      contents: 'export { PartyTracks, setLogLevel } from "partytracks/client"; export { of } from "rxjs";',
      resolveDir: HERE, loader: "js",
    },
    bundle: true, format: "esm", platform: "browser", write: false, logLevel: "silent",
  });
  const files = {
    "/": ["text/html; charset=utf-8", PAGE],
    "/lib/partytracks.js": ["text/javascript; charset=utf-8", bundle.outputFiles[0].text],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, "http://x").pathname];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": f[0], "cache-control": "no-store" }).end(f[1]);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

/** Runs in a page: a PartyTracks instance on the gateway's API, kept as window.pt. */
async function setUp([prefix, secret]) {
  const { PartyTracks, of, setLogLevel } = await import("/lib/partytracks.js");
  window.of = of;
  // The library's own log, kept for the test's diagnostics.
  window.logs = [];
  for (const level of ["log", "debug", "info", "warn", "error"]) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      window.logs.push(`${level}: ${args.map((a) => (typeof a === "string" ? a : String(a))).join(" ")}`);
      original(...args);
    };
  }
  setLogLevel("debug");
  window.addEventListener("unhandledrejection", (e) => window.logs.push(`unhandled: ${e.reason}`));
  window.pt = new PartyTracks({
    prefix,
    headers: new Headers({ Authorization: `Bearer ${secret}` }),
    iceServers: [],
  });
  window.errors = [];
}

/** Runs in the pushing page: the fake camera's video track; resolves to its metadata. */
async function push() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  const metadata$ = window.pt.push(window.of(stream.getVideoTracks()[0]));
  return new Promise((resolve, reject) => {
    window.pushSub = metadata$.subscribe({ next: resolve, error: (e) => reject(String(e)) });
  });
}

/** Runs in the pulling page: pulls the track named by `metadata` into the <video>. */
function pull(metadata) {
  // An app keeps its session while it pulls and unpulls tracks (its UI subscribes to it); with
  // no other subscriber, unsubscribing the last pull would tear the session down instead.
  window.sessionSub = window.pt.peerConnection$.subscribe(() => {});
  const track$ = window.pt.pull(window.of(metadata));
  window.pullSub = track$.subscribe({
    next: (track) => { document.querySelector("video").srcObject = new MediaStream([track]); },
    error: (e) => window.errors.push(String(e)),
  });
}

function videoStats(page) {
  return page.evaluate(() => {
    const v = document.querySelector("video");
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
    return { frames: q.totalVideoFrames, width: v.videoWidth, height: v.videoHeight, errors: window.errors };
  });
}

/** The library's own record of its API calls, and the responses that carried an errorCode. */
function history(page) {
  return page.evaluate(() => {
    const entries = window.pt.history.entries ?? window.pt.history.log ?? [];
    const list = Array.isArray(entries) ? entries : [];
    return {
      calls: list.filter((e) => e.type === "request").map((e) => `${e.method} ${new URL(e.endpoint).pathname}`),
      failed: list.filter((e) => e.type === "response" && e.body && e.body.errorCode),
    };
  });
}

async function openPage(label) {
  const page = await context.newPage();
  diag.watch(label, page);
  const resp = await page.goto(`${site.base}/`, { waitUntil: "load" });
  assert.equal(resp && resp.status(), 200, "the test's own page did not load");
  return page;
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  site = await startSite();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-partytracks-profile-"));
  context = await launchChromiumCrossOrigin(userDataDir);
}, { timeout: 25_000 });

after(async () => {
  diag.stop();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  await Promise.all(gateways.map((g) => g.stop()));
  if (site) site.server.close();
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 15_000 });

describe("Cloudflare's partytracks client against the session/track API", { timeout: 50_000 }, () => {
  const gw = new Gateway("partytracks", ["--app", `${APP}:${SECRET}`]);
  before(() => gw.start(), { timeout: 25_000 });
  after(() => gw.stop(), { timeout: 10_000 });

  it("pushes the camera from one page and pulls it in another, cross-origin", async (t) => {
    await diag.run("partytracks push -> pull", async () => {
      const prefix = `${gw.base}/v1/apps/${APP}`;
      const pusher = await openPage("partytracks push");
      await pusher.evaluate(setUp, [prefix, SECRET]);
      const metadata = await pusher.evaluate(push);
      t.diagnostic(`pushed: ${JSON.stringify(metadata)}`);
      assert.equal(metadata.location, "remote", "the metadata others pull by");
      assert.ok(metadata.sessionId && metadata.trackName, JSON.stringify(metadata));

      const puller = await openPage("partytracks pull");
      await puller.evaluate(setUp, [prefix, SECRET]);
      // The puller pushes its camera too: closing a pull must leave an m-line behind, since
      // Chrome refuses its own offer with every m-line stopped under max-bundle ("no BUNDLE
      // group") — with Calls just the same.
      await puller.evaluate(push);
      await puller.evaluate(pull, metadata);
      const deadline = Date.now() + 20_000;
      let s = await videoStats(puller);
      while (Date.now() < deadline && !(s.frames > MIN_FRAMES && s.width > 0) && !s.errors.length) {
        await new Promise((r) => setTimeout(r, 250));
        s = await videoStats(puller);
      }
      const [ph, qh] = [await history(pusher), await history(puller)];
      t.diagnostic(`pusher's calls: ${ph.calls.join("; ")}`);
      t.diagnostic(`puller's calls: ${qh.calls.join("; ")}`);
      assert.deepEqual(s.errors, [], "the pull failed");
      assert.ok(s.frames > MIN_FRAMES && s.width > 0,
        `the pulled <video> shows ${s.frames} frames at ${s.width}x${s.height}`);
      assert.deepEqual([...ph.failed, ...qh.failed], [], "API responses with an errorCode");
      t.diagnostic(`pulled video: ${s.frames} frames, ${s.width}x${s.height}`);

      // Unsubscribing closes the pull: the library stops the transceiver and sends
      // tracks/close with its offer; our answer must be one it accepts.
      await puller.evaluate(() => window.pullSub.unsubscribe());
      const closeBy = Date.now() + 10_000;
      let after = await history(puller);
      while (Date.now() < closeBy && !after.calls.some((c) => c.endsWith("/tracks/close"))) {
        await new Promise((r) => setTimeout(r, 250));
        after = await history(puller);
      }
      t.diagnostic(`puller's calls after unsubscribing: ${after.calls.join("; ")}`);
      assert.ok(after.calls.some((c) => c.endsWith("/tracks/close")), "no tracks/close");
      await new Promise((r) => setTimeout(r, 1000));
      after = await history(puller);
      assert.deepEqual(after.failed, [], "tracks/close answered with an errorCode");
      const errors = await puller.evaluate(() => window.errors);
      assert.deepEqual(errors, [], "errors after closing");
      const logs = await puller.evaluate(() => window.logs);
      assert.deepEqual(logs.filter((l) => l.startsWith("unhandled")), [],
        "our answer to the close offer was refused");
    });
  });
});
