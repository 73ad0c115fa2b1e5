// Headless Chromium through one address (issue 13's rig, scripts/vip-rig.sh): a gateway in
// network namespace vip-g1 behind the virtual IP 10.210.0.1, which a stateless nftables balancer
// in vip-lb forwards to it (`pin 1`: every flow to gateway 1, HTTP and UDP alike). Chromium, in
// this (root) namespace, reaches nothing but the VIP: it publishes its fake camera from
// /publish/ and plays it back from /watch/, ICE, DTLS and SRTP all through the balancer.
//
// Needs root (namespaces, nftables; scripts/setup-netns.sh installs nft). The gateway advertises
// the VIP as its public address and its own (unreachable from here) as a second candidate: str0m
// matches a datagram's destination, which after the balancer's DNAT is the gateway's own address.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, VIP, VIP_BASE, launchChromiumViaVip, pageState, vipGateway, vipRig,
  waitConnected, waitFrames } from "./lib.mjs";

const STREAM = "viptest";
const MIN_FRAMES = 30;

const diag = new Diagnostics("vip test", 75_000);
const { consoleLogs, pages } = diag;
let context = null;
let userDataDir = null;
let rigUp = false;
const gw = vipGateway(1);
const openPage = (label, url) => diag.open(context, label, url);

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  assert.equal(process.getuid(), 0, "the one-address rig needs root (network namespaces, nftables)");
  vipRig("up", "1", "0");
  rigUp = true;
  vipRig("pin", "1");
  await gw.start();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-vip-profile-"));
  context = await launchChromiumViaVip(userDataDir, consoleLogs);
}, { timeout: 40_000 });

after(async () => {
  diag.stop();
  for (const page of Object.values(pages)) await page.close().catch(() => {});
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  await gw.stop();
  if (rigUp) vipRig("down");
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 20_000 });

describe("Chromium through the VIP", { timeout: 50_000 }, () => {
  it("publishes its camera via WHIP through the balancer", async (t) => {
    await diag.run("publish", async () => {
      const page = await openPage("publish", `${VIP_BASE}/publish/${STREAM}`);
      await waitConnected(page, "whip", 20_000);
      t.diagnostic(`publisher connected: ${await pageState("publish", page)}`);
    });
  });

  it("plays it back via WHEP through the balancer", async (t) => {
    await diag.run("watch", async () => {
      const page = await openPage("watch", `${VIP_BASE}/watch/${STREAM}`);
      await waitConnected(page, "whep", 15_000);
      const s = await waitFrames(page, MIN_FRAMES, 20_000);
      t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} ${s.frameWidth}x${s.frameHeight} codec=${s.codec}`);
      assert.ok(s.framesDecoded > MIN_FRAMES, `framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`);
      const selected = await page.evaluate(async () => {
        const stats = await window.whep.pc.getStats();
        for (const r of stats.values()) {
          if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
            return stats.get(r.remoteCandidateId)?.address ?? null;
          }
        }
        return null;
      });
      assert.equal(selected, VIP, `the selected pair's remote candidate is ${selected}, not the VIP`);
    });
  });
});
