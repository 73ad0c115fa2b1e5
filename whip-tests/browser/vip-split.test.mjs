// Headless Chromium through one address with a cluster behind it (issue 13): three gateways and
// two relays in network namespaces (scripts/vip-cluster.sh on scripts/vip-rig.sh), and every
// session's HTTP on one gateway and its UDP on another (`vip-rig.sh split H U`). Run twice:
// - **tunnelled**: each gateway has its own DTLS certificate. Chromium's ICE checks reach a
//   gateway that holds no session for them; it tunnels them, and everything after them, to the
//   gateway whose ufrag they name, and sends that gateway's answers on from the VIP.
// - **adopted**: the gateways share the cluster's DTLS certificate (as k8s/ deploys them:
//   `DTLS_SHARED=1 scripts/vip-cluster.sh`). The gateway a session's first ICE check reaches
//   adopts the session (its replica arrived with the answer) and serves the PeerConnection itself,
//   DTLS handshake included; the gateway that answered the POST gives it up.
//
// The publisher: HTTP to gateway 1, UDP to gateway 2. The player: HTTP to gateway 1 as well (its
// session is made there; Chromium reuses its keep-alive connection, which this stateless
// balancer would reset if the HTTP mapping changed), UDP to gateway 3. Needs root.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, VIP, VIP_BASE, launchChromiumViaVip, pageState, vipCluster, vipClusterLogs,
  vipGatewayLog, vipRig, waitConnected, waitFrames } from "./lib.mjs";

const MIN_FRAMES = 30;
const ADOPTED = "adopted a session another gateway negotiated";

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

for (const shared of [false, true]) {
  const how = shared ? "adopted" : "tunnelled";
  const stream = shared ? "vipadopt" : "vipsplit";

  describe(`Chromium through the VIP, HTTP and UDP on different gateways (${how})`, { timeout: 60_000 }, () => {
    // Made when this half starts: its overall timeout counts from then.
    let diag = null;
    let context = null;
    let userDataDir = null;
    let clusterUp = false;
    const openPage = (label, url) => diag.open(context, label, url);

    before(async () => {
      assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
      assert.equal(process.getuid(), 0, "the one-address rig needs root (network namespaces, nftables)");
      diag = new Diagnostics(`vip split test (${how})`, 75_000);
      vipCluster("up", { DTLS_SHARED: shared ? "1" : "" });
      clusterUp = true;
      userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `whip-vip-${how}-profile-`));
      context = await launchChromiumViaVip(userDataDir, diag.consoleLogs);
    }, { timeout: 60_000 });

    after(async () => {
      diag?.stop();
      for (const page of Object.values(diag?.pages ?? {})) await page.close().catch(() => {});
      if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
      if (clusterUp) vipCluster("down");
      if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    }, { timeout: 20_000 });

    it("publishes its camera: HTTP on gateway 1, UDP on gateway 2", async (t) => {
      await diag.run("publish", async () => {
        vipRig("split", "1", "2");
        const page = await openPage("publish", `${VIP_BASE}/publish/${stream}`);
        try {
          await waitConnected(page, "whip", 20_000);
        } catch (e) {
          throw new Error(`${e.message}\n${vipClusterLogs()}`);
        }
        t.diagnostic(`publisher connected: ${await pageState("publish", page)}`);
        assert.equal(await remoteCandidate(page, "whip"), VIP);
        assert.equal(vipGatewayLog(2).includes(ADOPTED), shared,
          `gateway 2 adopted the publisher's session: expected ${shared}\n${vipClusterLogs()}`);
        if (shared) assert.ok(vipGatewayLog(1).includes("released here"), "gateway 1 kept the publisher's session");
      });
    });

    it("plays it back: HTTP on gateway 1, UDP on gateway 3", async (t) => {
      await diag.run("watch", async () => {
        vipRig("split", "1", "3");
        const page = await openPage("watch", `${VIP_BASE}/watch/${stream}`);
        let s;
        try {
          await waitConnected(page, "whep", 15_000);
          s = await waitFrames(page, MIN_FRAMES, 20_000);
        } catch (e) {
          throw new Error(`${e.message}\n${vipClusterLogs()}`);
        }
        t.diagnostic(`viewer: framesDecoded=${s.framesDecoded} ${s.frameWidth}x${s.frameHeight} codec=${s.codec}`);
        assert.ok(s.framesDecoded > MIN_FRAMES, `framesDecoded ${s.framesDecoded} <= ${MIN_FRAMES}`);
        assert.equal(await remoteCandidate(page, "whep"), VIP);
        assert.equal(vipGatewayLog(3).includes(ADOPTED), shared,
          `gateway 3 adopted the player's session: expected ${shared}\n${vipClusterLogs()}`);
      });
    });
  });
}
