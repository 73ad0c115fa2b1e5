// Headless Chromium through one address with a cluster behind it whose gateways share the
// cluster's DTLS certificate (as k8s/ deploys them: `DTLS_SHARED=1 scripts/vip-cluster.sh`), every
// session's HTTP on one gateway and its UDP on another. The gateway a session's first ICE check
// reaches adopts the session (its replica arrived with the answer) and serves the PeerConnection
// itself, DTLS handshake included; the gateway that answered the POST gives it up. (Without the
// shared certificate the checks are tunnelled instead: vip-split.test.mjs.)
//
// The publisher: HTTP to gateway 1, UDP to gateway 2. The player: HTTP to gateway 1 as well (its
// session is made there; Chromium reuses its keep-alive connection, which this stateless
// balancer would reset if the HTTP mapping changed), UDP to gateway 3. Needs root.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CHROMIUM_BIN, Diagnostics, GATEWAY_BIN, VIP, VIP_BASE, launchChromiumViaVip, pageState, vipRig,
  waitConnected, waitFrames } from "./lib.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const VIP_CLUSTER = path.resolve(HERE, "../../scripts/vip-cluster.sh");
const STREAM = "vipadopt";
const MIN_FRAMES = 30;

const diag = new Diagnostics("vip adopt test", 75_000);
const { consoleLogs, pages } = diag;
let context = null;
let userDataDir = null;
let clusterUp = false;
const openPage = (label, url) => diag.open(context, label, url);

function vipCluster(arg) {
  execFileSync("bash", [VIP_CLUSTER, arg], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, BIN: path.dirname(GATEWAY_BIN), DTLS_SHARED: "1" },
  });
}

function gatewayLog(i) {
  const log = `/tmp/vip-cluster/gateway-${i}.log`;
  return fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "";
}

function clusterLogs() {
  return [1, 2, 3].map((i) => {
    const log = `/tmp/vip-cluster/gateway-${i}.log`;
    const text = fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "(no log)";
    return `----- gateway ${i} -----\n${text.slice(-4000)}`;
  }).join("\n");
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  assert.equal(process.getuid(), 0, "the one-address rig needs root (network namespaces, nftables)");
  vipCluster("up");
  clusterUp = true;
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-vip-adopt-profile-"));
  context = await launchChromiumViaVip(userDataDir, consoleLogs);
}, { timeout: 60_000 });

after(async () => {
  diag.stop();
  for (const page of Object.values(pages)) await page.close().catch(() => {});
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  if (clusterUp) vipCluster("down");
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}, { timeout: 20_000 });

async function remoteCandidate(page, pcOf) {
  return page.evaluate(async (which) => {
    const stats = await window[which].pc.getStats();
    for (const r of stats.values()) {
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
        return stats.get(r.remoteCandidateId)?.address ?? null;
      }
    }
    return null;
  }, pcOf);
}

describe("Chromium through the VIP: the gateway its checks reach adopts the session", { timeout: 60_000 }, () => {
  it("publishes its camera: HTTP on gateway 1, UDP on gateway 2", async (t) => {
    await diag.run("publish", async () => {
      vipRig("split", "1", "2");
      const page = await openPage("publish", `${VIP_BASE}/publish/${STREAM}`);
      try {
        await waitConnected(page, "whip", 20_000);
      } catch (e) {
        throw new Error(`${e.message}\n${clusterLogs()}`);
      }
      t.diagnostic(`publisher connected: ${await pageState("publish", page)}`);
      assert.equal(await remoteCandidate(page, "whip"), VIP);
      assert.ok(gatewayLog(2).includes("adopted a session another gateway negotiated"),
        `gateway 2 did not adopt the publisher's session\n${clusterLogs()}`);
      assert.ok(gatewayLog(1).includes("released here"), "gateway 1 kept the publisher's session");
    });
  });

  it("plays it back: HTTP on gateway 1, UDP on gateway 3", async (t) => {
    await diag.run("watch", async () => {
      vipRig("split", "1", "3");
      const page = await openPage("watch", `${VIP_BASE}/watch/${STREAM}`);
      let s;
      try {
        await waitConnected(page, "whep", 15_000);
        s = await waitFrames(page, MIN_FRAMES, 20_000);
      } catch (e) {
        throw new Error(`${e.message}\n${clusterLogs()}`);
      }
      t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} ${s.frameWidth}x${s.frameHeight} codec=${s.codec}`);
      assert.ok(s.framesDecoded > MIN_FRAMES, `framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`);
      assert.equal(await remoteCandidate(page, "whep"), VIP);
      assert.ok(gatewayLog(3).includes("adopted a session another gateway negotiated"),
        `gateway 3 did not adopt the player's session\n${clusterLogs()}`);
    });
  });
});
