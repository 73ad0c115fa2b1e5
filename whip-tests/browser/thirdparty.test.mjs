// WHIP/WHEP client libraries we did not write, from npm, in headless Chromium against the gateway,
// each with its own default trickle ICE (candidates sent by PATCH):
//   whip-whep 1.2.0 (medooze's whip.js/whep.js)  WHIPClient publishes, WHEPClient plays
//   @eyevinn/whip-web-client 1.1.7                WHIPClient publishes (whip-whep's WHEPClient plays)
// Each case: publish the fake camera, play it in a second page until the <video> shows decoded
// frames, check every trickle PATCH the libraries sent was answered 204, then end both sessions
// with the libraries' own stop and check the gateway answered the DELETEs with 200.
// README.md ("Third-party clients") says what the libraries do that our own pages do not.
//
//   scripts/setup-browser.sh && cargo build -p gateway && (cd whip-tests/browser && npm test)
//   node --test thirdparty.test.mjs      (just this file; GATEWAY_BIN, CHROMIUM_BIN as in lib.mjs)
//
// The pages come from a small static server of this file on another loopback port than the
// gateway, as a real application's would: every WHIP/WHEP request is cross-origin and goes through
// the gateway's CORS (preflights included). That is also why this file launches Chromium with
// lib.mjs's launchChromiumCrossOrigin, without the context.route() of launchChromium (with it
// Playwright answers every CORS preflight itself, so a preflight the gateway would refuse passed).
// Nothing leaves the machine all the same: no host name resolves (CHROMIUM_ARGS), the pages name
// only 127.0.0.1, no STUN/TURN server is configured and the gateway's only ICE candidate is
// 127.0.0.1.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromiumCrossOrigin, publishStats, watchStats } from "./lib.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OVERALL_MS = 60_000; // hard stop for the whole file (a normal run takes ~10 s)
const MIN_FRAMES = 20;

let context = null;
let userDataDir = null;
let site = null; // { server, base }
const diag = new Diagnostics("third-party client test", OVERALL_MS);
const { consoleLogs, pages } = diag;

// ---------------------------------------------------------------------------------------------
// The application: one blank page with a <video>, and the libraries as browser ES modules.

const PAGE = `<!doctype html><meta charset="utf-8"><title>third-party WHIP/WHEP client</title>
<video autoplay muted playsinline style="width:320px"></video>`;

async function startSite() {
  // @eyevinn/whip-web-client imports the npm packages "events" and "sdp-transform" (CommonJS):
  // bundled into one module, as an application's build would.
  const eyevinn = await esbuild.build({
    stdin: { contents: 'export { WHIPClient } from "@eyevinn/whip-web-client";', resolveDir: HERE, loader: "js" },
    bundle: true, format: "esm", platform: "browser", write: false, logLevel: "silent",
  });
  // whip-whep's files are plain ES modules without imports: served as they are.
  const lib = (f) => fs.readFileSync(path.join(HERE, "node_modules", f));
  const js = "text/javascript; charset=utf-8";
  const files = {
    "/": ["text/html; charset=utf-8", PAGE],
    "/lib/whip-whep/whip.js": [js, lib("whip-whep/whip.js")],
    "/lib/whip-whep/whep.js": [js, lib("whip-whep/whep.js")],
    "/lib/eyevinn-whip-web-client.js": [js, eyevinn.outputFiles[0].text],
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

// ---------------------------------------------------------------------------------------------
// What runs in the pages: the libraries' README examples, without STUN servers.

const PUBLISHERS = {
  // https://github.com/medooze/whip-whep-js#whipjs
  "whip-whep": async (url) => {
    const { WHIPClient } = await import("/lib/whip-whep/whip.js");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    const whip = new WHIPClient();
    window.whip = whip; // whip.pc: lib.mjs's publishStats and pageState read window.whip.pc
    window.stopPublishing = () => whip.stop();
    await whip.publish(pc, url);
  },
  // https://github.com/Eyevinn/whip/tree/main/packages/sdk
  "@eyevinn/whip-web-client": async (url) => {
    const { WHIPClient } = await import("/lib/eyevinn-whip-web-client.js");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const client = new WHIPClient({ endpoint: url, opts: { debug: true, iceServers: [] } });
    window.whip = { client, get pc() { return client.peer; } };
    window.stopPublishing = () => client.destroy();
    await client.ingest(stream);
  },
};

const PLAYERS = {
  // https://github.com/medooze/whip-whep-js#whepjs
  "whip-whep": async (url) => {
    const { WHEPClient } = await import("/lib/whip-whep/whep.js");
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    pc.addTransceiver("audio");
    pc.addTransceiver("video");
    const video = document.querySelector("video");
    pc.ontrack = (event) => {
      if (event.track.kind == "video") video.srcObject = event.streams[0];
    };
    const whep = new WHEPClient();
    window.whep = whep; // whep.pc: lib.mjs's watchStats reads window.whep.pc and the <video>
    window.stopPlaying = () => whep.stop();
    await whep.view(pc, url);
  },
};

// ---------------------------------------------------------------------------------------------

/** Every request the page sends to the gateway, with the answer's status (null while pending). */
function recordExchanges(page, gatewayBase) {
  const log = [];
  const byRequest = new Map();
  page.on("request", (req) => {
    if (!req.url().startsWith(gatewayBase + "/")) return;
    const h = req.headers();
    const e = { method: req.method(), path: new URL(req.url()).pathname, status: null, failure: null,
      contentType: h["content-type"], ifMatch: h["if-match"], etagHeader: h["etag"], body: req.postData() };
    byRequest.set(req, e);
    log.push(e);
  });
  page.on("response", (resp) => {
    const e = byRequest.get(resp.request());
    if (e) e.status = resp.status();
  });
  page.on("requestfailed", (req) => {
    // Chromium also reports a request whose answer came but whose body nobody read (the Eyevinn
    // client's OPTIONS) as failed with net::ERR_ABORTED: only a request without answer failed.
    const e = byRequest.get(req);
    if (e && e.status === null) e.failure = req.failure()?.errorText || "failed";
  });
  return log;
}

const short = (e) => `${e.method} ${e.path.replace(/\/[^/]{16,}$/, "/…")} -> ${e.status ?? e.failure}` +
  (e.method === "PATCH" ? ` (If-Match ${e.ifMatch ?? "none"}${e.etagHeader ? `, ETag ${e.etagHeader}` : ""})` : "");
const summary = (log) => log.map(short).join("; ") || "(none)";
const pending = (log) => log.filter((e) => e.status === null && e.failure === null);

async function settle(log, ms) {
  const deadline = Date.now() + ms;
  while (pending(log).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}

/** Trickle PATCHes: at least one, every one answered 204. */
function assertTrickled(log, who) {
  const patches = log.filter((e) => e.method === "PATCH");
  assert.ok(patches.length > 0, `${who} sent no trickle PATCH; its requests: ${summary(log)}`);
  const bad = patches.filter((e) => e.status !== 204);
  assert.equal(bad.length, 0, `${who}: trickle PATCH not answered 204: ${bad.map(short).join("; ")}` +
    `\nfirst refused fragment:\n${bad[0]?.body}\nall requests: ${summary(log)}`);
  return patches;
}

async function deleteAnswered(log, who, ms) {
  const deadline = Date.now() + ms;
  let del;
  while (!(del = log.find((e) => e.method === "DELETE" && (e.status !== null || e.failure))) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(del, `${who} sent no DELETE (or got no answer) within ${ms} ms; its requests: ${summary(log)}`);
  assert.equal(del.status, 200, `${who}: DELETE -> ${del.status ?? del.failure}; its requests: ${summary(log)}`);
}

function waitConnected(page, which, timeout, log) {
  return page.waitForFunction(
    (w) => window[w] && window[w].pc && window[w].pc.connectionState === "connected",
    which, { timeout, polling: 200 },
  ).catch((e) => {
    throw new Error(`${which} PeerConnection not connected within ${timeout} ms (${e.message.split("\n")[0]}); ` +
      `requests to the gateway: ${summary(log)}`);
  });
}

async function openPage(label, gatewayBase) {
  const page = await context.newPage();
  diag.watch(label, page);
  const log = recordExchanges(page, gatewayBase);
  const resp = await page.goto(`${site.base}/`, { waitUntil: "load" });
  assert.equal(resp && resp.status(), 200, "the test's own page did not load");
  return { page, log };
}

/** Describes the PATCHes for the test's output (what the library does, odd or not). */
function describePatches(patches) {
  const ifMatch = [...new Set(patches.map((e) => e.ifMatch ?? "none"))].join(", ");
  const etag = [...new Set(patches.map((e) => e.etagHeader).filter(Boolean))];
  const eocOnly = patches.filter((e) => /a=end-of-candidates/.test(e.body || "") && !/a=candidate:/.test(e.body || "")).length;
  const creds = patches.filter((e) => /a=ice-ufrag:/.test(e.body || "") && /a=ice-pwd:/.test(e.body || "")).length;
  const types = [...new Set(patches.map((e) => e.contentType))].join(", ");
  return `${patches.length} PATCH(es), Content-Type ${types}, If-Match ${ifMatch}` +
    (etag.length ? `, ETag request header ${etag.join(", ")}` : "") +
    `, ${creds} with ice-ufrag/ice-pwd, ${eocOnly} end-of-candidates only`;
}

// ---------------------------------------------------------------------------------------------

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  site = await startSite();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-thirdparty-profile-"));
  context = await launchChromiumCrossOrigin(userDataDir);
}, { timeout: 25_000 });

after(async () => {
  diag.stop();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  await Promise.all(gateways.map((g) => g.stop()));
  if (site) site.server.close();
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 15_000 });

describe("third-party WHIP/WHEP clients from npm in headless Chromium (trickle ICE)", { timeout: 50_000 }, () => {
  const gw = new Gateway("thirdparty");
  before(() => gw.start(), { timeout: 25_000 });
  after(async () => {
    for (const [label, page] of Object.entries(pages)) {
      await page.close().catch(() => {});
      delete pages[label];
    }
    await gw.stop();
  }, { timeout: 10_000 });

  for (const [publisher, player, stream] of [
    ["whip-whep", "whip-whep", "tp-medooze"],
    ["@eyevinn/whip-web-client", "whip-whep", "tp-eyevinn"],
  ]) {
    it(`${publisher} publishes, ${player} plays`, async (t) => {
      await diag.run(`${publisher} -> ${player}`, async () => {
        const pub = await openPage(`publish ${publisher}`, gw.base);
        await pub.page.evaluate(PUBLISHERS[publisher], `${gw.base}/whip/${stream}`);
        await waitConnected(pub.page, "whip", 15_000, pub.log);

        const view = await openPage(`play ${player}`, gw.base);
        await view.page.evaluate(PLAYERS[player], `${gw.base}/whep/${stream}`);
        await waitConnected(view.page, "whep", 10_000, view.log);

        // Decoded frames with a size, in the <video> the library's ontrack fed, and they keep coming.
        const deadline = Date.now() + 15_000;
        let s = await watchStats(view.page);
        while (Date.now() < deadline && !(s.framesDecoded > MIN_FRAMES && s.videoWidth > 0)) {
          await new Promise((r) => setTimeout(r, 250));
          s = await watchStats(view.page);
        }
        const t0 = await view.page.evaluate(() => document.querySelector("video").currentTime);
        t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} frame=${s.frameWidth}x${s.frameHeight} ` +
          `video=${s.videoWidth}x${s.videoHeight} codec=${s.codec} ${JSON.stringify(s.more)}`);
        assert.ok(s.framesDecoded > MIN_FRAMES, `viewer decoded ${s.framesDecoded} frames (<= ${MIN_FRAMES}); ` +
          `publisher ${JSON.stringify(await publishStats(pub.page).catch((e) => e.message))}`);
        assert.ok(s.videoWidth > 0 && s.videoHeight > 0, `<video> size ${s.videoWidth}x${s.videoHeight}`);
        await new Promise((r) => setTimeout(r, 700));
        const later = await watchStats(view.page);
        const t1 = await view.page.evaluate(() => document.querySelector("video").currentTime);
        assert.ok(later.framesDecoded > s.framesDecoded, `framesDecoded stalled at ${later.framesDecoded}`);
        assert.ok(t1 > t0, `<video> currentTime stalled at ${t1}`);

        // Trickle: the PATCHes both libraries sent (the last ones may still be in flight).
        await settle(pub.log, 3_000);
        await settle(view.log, 3_000);
        const pubPatches = assertTrickled(pub.log, `publisher ${publisher}`);
        const viewPatches = assertTrickled(view.log, `player ${player}`);
        t.diagnostic(`publisher ${publisher}: ${describePatches(pubPatches)}`);
        t.diagnostic(`player ${player}: ${describePatches(viewPatches)}`);
        t.diagnostic(`publisher's first PATCH: ${JSON.stringify(pubPatches[0].body)}`);
        t.diagnostic(`player's first PATCH: ${JSON.stringify(viewPatches[0].body)}`);

        // Stop with the libraries' own calls: DELETE -> 200.
        await view.page.evaluate(() => window.stopPlaying());
        await deleteAnswered(view.log, `player ${player}`, 5_000);
        await pub.page.evaluate(() => window.stopPublishing());
        await deleteAnswered(pub.log, `publisher ${publisher}`, 5_000);
        t.diagnostic(`publisher requests: ${summary(pub.log)}`);
        t.diagnostic(`player requests: ${summary(view.log)}`);
        for (const p of [view, pub]) {
          const label = Object.keys(pages).find((k) => pages[k] === p.page);
          await p.page.close();
          delete pages[label];
        }
      });
    });
  }
});
