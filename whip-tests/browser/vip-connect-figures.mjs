// How Chromium's connect time grows when its first STUN checks go unanswered: the price a
// gateway pays if it answers a check for a session it does not know yet only once a slow path
// (asking the owner over the cluster) has answered (issue 13: "the first STUN answer must not wait
// on a slow path"). BENCHMARKS.md 11; run by hand as root, not a test:
//
//   cargo build -p gateway && (cd whip-tests/browser && node vip-connect-figures.mjs [REPS=5])
//
// The one-address rig (scripts/vip-rig.sh) with one gateway, every flow pinned to it; Chromium's
// fake camera publishes through the VIP; then for K = 0, 1, 2, 3, 5, 8 a watch page is opened
// REPS times while the balancer drops the first K STUN binding requests to the VIP (an nftables
// rule counting them with `numgen inc`). Measured in the page: the WHEP answer applied
// (setRemoteDescription resolved) → ICE connected, and → connection (DTLS) connected.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { VIP, VIP_BASE, launchChromiumViaVip, vipGateway, vipRig, waitConnected } from "./lib.mjs";

const REPS = Number(process.argv[2] || 5);
const DROPS = [0, 1, 2, 3, 5, 8];

const nft = (rule) => execFileSync("ip", ["netns", "exec", "vip-lb", "nft", ...rule.split(" ")]);

/** Times, in the page, from the answer being applied to ICE and DTLS connected. */
const TIMING = `(() => {
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Orig(...args);
    const t = (window.__t = {});
    const srd = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = (d) => srd(d).then((r) => { t.answer = performance.now(); return r; });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc.iceConnectionState === "connected" && !t.ice) t.ice = performance.now();
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "connected" && !t.dtls) t.dtls = performance.now();
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = Orig.prototype;
})();`;

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

vipRig("up", "1", "0");
vipRig("pin", "1");
const gw = vipGateway(1);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-vip-figures-"));
let context = null;
try {
  await gw.start();
  context = await launchChromiumViaVip(dir, []);
  const publisher = await context.newPage();
  await publisher.goto(`${VIP_BASE}/publish/figures`);
  await waitConnected(publisher, "whip", 20_000);
  console.log("K dropped | ICE connected p50 (min–max) | DTLS connected p50 (min–max), ms after the answer");
  for (const k of DROPS) {
    const ice = [];
    const dtls = [];
    for (let i = 0; i < REPS; i++) {
      vipRig("pin", "1"); // a fresh table: the drop counter starts again
      if (k > 0) {
        nft(`insert rule ip vip raw_pre ip daddr ${VIP} udp dport 8189 @th,64,16 0x0001 numgen inc mod 1000000 < ${k} counter drop`);
      }
      const page = await context.newPage();
      await page.addInitScript(TIMING);
      await page.goto(`${VIP_BASE}/watch/figures`);
      await waitConnected(page, "whep", 30_000);
      const t = await page.evaluate(() => window.__t);
      if (process.env.SHOW_DROPS) {
        const rules = execFileSync("ip", ["netns", "exec", "vip-lb", "nft", "list", "chain", "ip", "vip", "raw_pre"]);
        const m = /counter packets (\d+)/.exec(rules.toString());
        console.log(`K=${k}: the rule dropped ${m ? m[1] : 0} binding requests`);
      }
      ice.push(t.ice - t.answer);
      dtls.push(t.dtls - t.answer);
      await page.close();
    }
    const f = (xs) => `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`;
    console.log(`${k} | ${f(ice)} | ${f(dtls)}`);
  }
} finally {
  if (context) await context.close().catch(() => {});
  await gw.stop();
  vipRig("down");
  fs.rmSync(dir, { recursive: true, force: true });
}
