// Headless Chromium through one address when the gateway holding its sessions goes (issue 13):
// scripts/vip-cluster.sh (three gateways, two relays, in network namespaces behind the VIP), the
// publish and watch pages both on gateway 1 (`vip-rig.sh pin 1`), then gateway 1 is killed
// (SIGKILL), or drained past its drain timeout (SIGTERM with a 2 s timeout: it hands its sessions
// off), and the balancer spreads its flows over gateways 2 and 3 (`vip-rig.sh drop 1`). The
// gateways their packets now reach resume both sessions from their replicas
// (`gateway/src/resume.rs`): same ICE credentials, same SRTP keys. Both pages keep their first
// RTCPeerConnection (no new POST), stay connected, and the viewer decodes video again. Needs root.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, VIP_BASE, launchChromiumViaVip, vipCluster, vipClusterLogs, vipGatewayLog,
  vipGatewayPid, vipRig, waitConnected, waitFrames, watchStats } from "./lib.mjs";

// The stream's directory entry lives on its home node: the rendezvous choice among the gateways a
// node can reach (relay_proto::placement::home_node over their cluster ids). "vipresume" is homed
// on gateway 1, the one that goes: the survivors choose another home, the publisher's gateway
// announces there, and a viewer resumed on the other survivor finds it there.
// VIP_RESUME_STREAM=vipresumed (homed on gateway 3, which survives) is the easier case.
const STREAM = process.env.VIP_RESUME_STREAM || "vipresume";
// Frames the viewer must decode after the kill, on its first PeerConnection.
const MIN_FRAMES_AFTER = 60;
const AFTER_KILL_MS = 20_000;

const diag = new Diagnostics("vip resume test", 90_000);
const { consoleLogs } = diag;
let context = null;
let userDataDir = null;
let clusterUp = false;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// The page's PeerConnection: its state, and whether it is still the first one.
const pcState = (page, which) => page.evaluate((w) => {
  const s = window[w];
  return s && s.pc ? { state: s.pc.connectionState, first: s.pc.__first === true } : null;
}, which);

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  assert.equal(process.getuid(), 0, "the one-address rig needs root (network namespaces, nftables)");
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-vip-resume-profile-"));
  context = await launchChromiumViaVip(userDataDir, consoleLogs);
}, { timeout: 60_000 });

after(async () => {
  diag.stop();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  if (clusterUp) vipCluster("down");
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 20_000 });

/** Both pages on gateway 1, then gateway 1 gets `signal`; asserts both sessions went on elsewhere. */
async function survive(t, signal, env) {
  vipCluster("up", env);
  clusterUp = true;
  try {
    await surviveOnCluster(t, signal);
  } finally {
    for (const page of context.pages()) await page.close().catch(() => {});
    // The nodes' logs, kept for a look after the run (vipCluster("down") removes /tmp/vip-cluster).
    const keep = path.join(os.tmpdir(), `vip-resume-logs${signal}`);
    fs.rmSync(keep, { recursive: true, force: true });
    if (fs.existsSync("/tmp/vip-cluster")) fs.cpSync("/tmp/vip-cluster", keep, { recursive: true });
    vipCluster("down");
    clusterUp = false;
  }
}

async function surviveOnCluster(t, signal) {
    vipRig("pin", "1");
    const publisher = await context.newPage();
    await publisher.goto(`${VIP_BASE}/publish/${STREAM}`);
    await waitConnected(publisher, "whip", 20_000);
    const viewer = await context.newPage();
    await viewer.goto(`${VIP_BASE}/watch/${STREAM}`);
    await waitConnected(viewer, "whep", 20_000);
    await waitFrames(viewer, 30, 20_000);
    await publisher.evaluate(() => { window.whip.pc.__first = true; });
    await viewer.evaluate(() => { window.whep.pc.__first = true; });
    const before = (await watchStats(viewer)).framesDecoded;

    const killedAt = Date.now();
    execFileSync("kill", [signal, vipGatewayPid(1)]);
    vipRig("drop", "1");
    const events = [];
    let last = { pub: "connected", view: "connected" };
    let frames = before;
    let lastFrameAt = Date.now();
    let longestGap = 0;
    while (Date.now() - killedAt < AFTER_KILL_MS) {
      await sleep(100);
      const pub = await pcState(publisher, "whip");
      const view = await pcState(viewer, "whep");
      const now = Date.now();
      const label = (s) => (s ? `${s.state}${s.first ? "" : " (a new PeerConnection)"}` : "none");
      if (label(pub) !== last.pub) { events.push(`${now - killedAt} ms publisher ${label(pub)}`); last.pub = label(pub); }
      if (label(view) !== last.view) { events.push(`${now - killedAt} ms viewer ${label(view)}`); last.view = label(view); }
      const decoded = (await watchStats(viewer)).framesDecoded;
      if (decoded > frames) {
        longestGap = Math.max(longestGap, now - lastFrameAt);
        lastFrameAt = now;
        frames = decoded;
      }
    }
    console.log(`${signal}: gateway 1 signalled and dropped by the balancer at 0 ms`);
    for (const e of events) console.log(`  ${e}`);
    console.log(`  viewer: ${frames - before} frames decoded in ${AFTER_KILL_MS} ms after; longest time without a new frame ${longestGap} ms`);
    t.diagnostic(`${signal}: after it ${frames - before} frames decoded in ${AFTER_KILL_MS} ms; longest time without a new frame ${longestGap} ms; ${events.join("; ") || "no state change"}`);
    const resumed = [2, 3].map((i) => (vipGatewayLog(i).match(/resumed a session of another gateway/g) || []).length)
      .reduce((a, b) => a + b, 0);
    const pub = await pcState(publisher, "whip");
    const view = await pcState(viewer, "whep");
    assert.ok(pub && pub.first && pub.state === "connected", `publisher: ${JSON.stringify(pub)}; ${events.join("; ")}`);
    assert.ok(view && view.first && view.state === "connected", `viewer: ${JSON.stringify(view)}; ${events.join("; ")}`);
    assert.ok(frames - before >= MIN_FRAMES_AFTER,
      `the viewer decoded ${frames - before} frames after the kill (wanted ${MIN_FRAMES_AFTER})\n${vipClusterLogs()}`);
    assert.ok(resumed >= 2, `gateways 2 and 3 resumed ${resumed} sessions\n${vipClusterLogs()}`);
}

describe("Chromium through the VIP when its gateway goes", { timeout: 180_000 }, () => {
  it("is killed: publisher and viewer go on, resumed elsewhere, without a new POST", async (t) => {
    await survive(t, "-KILL", {});
  });
  it("drains past its timeout: its sessions are handed off and go on elsewhere", async (t) => {
    await survive(t, "-TERM", { GATEWAY_DRAIN_TIMEOUT_MS: "2000" });
  });
});
