// ICE-TCP (RFC 6544) with headless Chromium: a network that lets no UDP through to the gateway.
// The gateway offers a passive TCP host candidate beside its UDP one; here the SDP answers reach
// the pages with the UDP candidates taken out (as if the UDP path were blocked), so Chromium can
// only connect by opening a TCP connection to the gateway's media port. The selected candidate
// pairs must be TCP on both sides, and frames must play.
//
//   scripts/setup-browser.sh && cargo build -p gateway && (cd whip-tests/browser && npm test)

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromium, waitConnected, waitFrames } from "./lib.mjs";

const OVERALL_MS = 60_000;
const diag = new Diagnostics("ICE-TCP test", OVERALL_MS);
let context = null;
let userDataDir = null;

/** Every SDP answer `page` receives from the gateway loses its UDP candidates. */
async function withoutUdpCandidates(page, counts) {
  await page.route(/\/(whip|whep)\//, async (route) => {
    const response = await route.fetch();
    const type = response.headers()["content-type"] || "";
    if (!type.startsWith("application/sdp")) return route.fulfill({ response });
    const sdp = await response.text();
    const kept = sdp.split("\r\n").filter((l) => !(l.startsWith("a=candidate:") && / udp /i.test(l)));
    counts.removed += sdp.split("\r\n").length - kept.length;
    counts.tcp += kept.filter((l) => l.startsWith("a=candidate:") && / tcp .* tcptype passive/.test(l)).length;
    return route.fulfill({ response, body: kept.join("\r\n") });
  });
}

/** The selected candidate pair of `window[which].pc`: both candidates' protocol and type. */
async function selectedPair(page, which) {
  return page.evaluate(async (w) => {
    const stats = await window[w].pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local && { protocol: local.protocol, type: local.candidateType, tcpType: local.tcpType },
      remote: remote && { protocol: remote.protocol, type: remote.candidateType, port: remote.port } };
  }, which);
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-icetcp-profile-"));
  context = await launchChromium(userDataDir, diag.consoleLogs);
}, { timeout: 25_000 });

after(async () => {
  diag.stop();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  await Promise.all(gateways.map((g) => g.stop()));
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 15_000 });

describe("publish and play over ICE-TCP only", { timeout: 45_000 }, () => {
  const gw = new Gateway("ice-tcp");
  before(() => gw.start(), { timeout: 25_000 });
  after(async () => {
    for (const [label, page] of Object.entries(diag.pages)) {
      await page.close().catch(() => {});
      delete diag.pages[label];
    }
    await gw.stop();
  }, { timeout: 10_000 });

  it("Chromium connects to the passive TCP candidate, and frames play", async () => diag.run("ice-tcp", async () => {
    const stream = "icetcp";
    const counts = { removed: 0, tcp: 0 };
    const pub = await context.newPage();
    diag.watch("publish", pub);
    await withoutUdpCandidates(pub, counts);
    await pub.goto(`${gw.base}/publish/${stream}`, { waitUntil: "load", timeout: 10_000 });
    await waitConnected(pub, "whip", 20_000);
    const viewer = await context.newPage();
    diag.watch("watch", viewer);
    await withoutUdpCandidates(viewer, counts);
    await viewer.goto(`${gw.base}/watch/${stream}`, { waitUntil: "load", timeout: 10_000 });
    await waitConnected(viewer, "whep", 20_000);
    const frames = await waitFrames(viewer, 20, 15_000);
    const pubPair = await selectedPair(pub, "whip");
    const viewPair = await selectedPair(viewer, "whep");
    const stats = await (await fetch(`${gw.base}/v1/stats`)).json();
    console.log(`ICE-TCP: publisher ${JSON.stringify(pubPair)}, viewer ${JSON.stringify(viewPair)}, ` +
      `${JSON.stringify(frames)}, gateway ${JSON.stringify(stats.ice_tcp)}, answers ${JSON.stringify(counts)}`);
    assert.ok(counts.removed >= 2, `UDP candidates were not in the answers: ${JSON.stringify(counts)}`);
    assert.ok(counts.tcp >= 2, `no passive TCP candidate in the answers: ${JSON.stringify(counts)}`);
    for (const [who, pair] of [["publisher", pubPair], ["viewer", viewPair]]) {
      assert.equal(pair?.local?.protocol, "tcp", `${who}: ${JSON.stringify(pair)}`);
      assert.equal(pair?.remote?.protocol, "tcp", `${who}: ${JSON.stringify(pair)}`);
    }
    assert.ok(frames.framesDecoded > 20 && frames.frameWidth > 0, `frames: ${JSON.stringify(frames)}`);
    assert.ok(stats.ice_tcp && stats.ice_tcp.connections >= 2, `gateway: ${JSON.stringify(stats.ice_tcp)}`);
    // Every decoded frame came in from the publisher and went out to the viewer over ICE-TCP (the
    // counters are read after the frames were, and only grow).
    assert.ok(stats.ice_tcp.frames_received >= frames.framesDecoded &&
      stats.ice_tcp.frames_sent >= frames.framesDecoded, `gateway: ${JSON.stringify(stats.ice_tcp)}`);
  }));
});
