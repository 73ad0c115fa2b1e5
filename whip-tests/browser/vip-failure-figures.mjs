// What Chromium sees when its gateway is drained or killed behind one address (issue 13: "say
// exactly what breaks"). BENCHMARKS.md 11; run by hand as root, not a test:
//
//   cargo build -p gateway -p relay && (cd whip-tests/browser && node vip-failure-figures.mjs)
//
// scripts/vip-cluster.sh (3 gateways, 2 relays behind the VIP), every flow pinned to gateway 1;
// Chromium's /publish/ page and a /watch/ page, both sessions on gateway 1. Then, for each case,
// gateway 1 gets SIGTERM (drain) or SIGKILL and the balancer drops it (`vip-rig.sh drop 1`:
// every flow to gateways 2 and 3). Sampled every 100 ms: each page's connectionState, and the
// watch page's decoded frames (the longest time without a new one is the viewer's interruption).
// The pages reconnect by themselves (a new POST) after 5 s `disconnected` or on `failed`.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { VIP_BASE, launchChromiumViaVip, vipCluster, vipGatewayPid, vipRig, waitConnected, waitFrames,
  watchStats } from "./lib.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(signal, seconds, env = {}) {
  vipCluster("up", env);
  vipRig("pin", "1");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-vip-failure-"));
  const context = await launchChromiumViaVip(dir, []);
  try {
    const publisher = await context.newPage();
    await publisher.goto(`${VIP_BASE}/publish/failure`);
    await waitConnected(publisher, "whip", 20_000);
    const viewer = await context.newPage();
    await viewer.goto(`${VIP_BASE}/watch/failure`);
    await waitConnected(viewer, "whep", 20_000);
    await waitFrames(viewer, 30, 20_000);
    // Tag both PeerConnections: a page that reconnects (a new POST) makes a new, untagged one.
    await publisher.evaluate(() => { window.whip.pc.__first = true; });
    await viewer.evaluate(() => { window.whep.pc.__first = true; });
    const t0 = Date.now();
    execFileSync("kill", [signal, vipGatewayPid(1)]);
    vipRig("drop", "1");
    const events = [];
    const last = { pub: "connected", view: "connected" };
    let frames = (await watchStats(viewer)).framesDecoded;
    let lastFrameAt = Date.now();
    let longestGap = 0;
    let framesAfter = 0;
    while (Date.now() - t0 < seconds * 1000) {
      await sleep(100);
      const pub = await publisher.evaluate(() => { const w = window.whip; return w && w.pc && `${w.pc.connectionState}${w.pc.__first ? "" : " (a new POST)"}`; });
      const s = await watchStats(viewer);
      const view = await viewer.evaluate(() => { const w = window.whep; return w && w.pc && `${w.pc.connectionState}${w.pc.__first ? "" : " (a new POST)"}`; });
      const now = Date.now();
      if (pub !== last.pub) { events.push(`${now - t0} ms publisher ${pub}`); last.pub = pub; }
      if (view !== last.view) { events.push(`${now - t0} ms viewer ${view}`); last.view = view; }
      if (s.framesDecoded !== frames) {
        // A reconnect starts a new PeerConnection whose count starts again.
        if (s.framesDecoded > frames || s.framesDecoded > 0) {
          longestGap = Math.max(longestGap, now - lastFrameAt);
          lastFrameAt = now;
          framesAfter += Math.max(0, s.framesDecoded - frames);
        }
        frames = s.framesDecoded;
      }
    }
    console.log(`${signal} ${JSON.stringify(env)}: gateway 1 signalled and dropped by the balancer at 0 ms`);
    for (const e of events) console.log(`  ${e}`);
    console.log(`  viewer: ${framesAfter} frames decoded in ${seconds} s after; longest time without a new frame ${longestGap} ms`);
  } finally {
    await context.close().catch(() => {});
    // The nodes' logs, kept for a look after the run.
    const keep = path.join(os.tmpdir(), `vip-failure-logs${signal}${Object.keys(env).length ? "-timeout" : ""}`);
    fs.rmSync(keep, { recursive: true, force: true });
    fs.cpSync("/tmp/vip-cluster", keep, { recursive: true });
    vipCluster("down");
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const only = process.argv[2];
// A drain whose sessions end before its timeout (30 s in a cluster): nothing moves.
if (!only || only === "drain") await run("-TERM", 15);
// A drain that reaches its timeout: the sessions are handed off and resumed elsewhere.
if (!only || only === "handoff") await run("-TERM", 15, { GATEWAY_DRAIN_TIMEOUT_MS: "2000" });
// A kill: the sessions are resumed from their replicas.
if (!only || only === "kill") await run("-KILL", 20);
