// Headless Chromium publishing and playing through TURN only (`?relay=1` on the gateway's pages:
// `iceTransportPolicy: "relay"`), with the short-lived credentials the gateway puts in its WHIP/WHEP
// `Link` headers: against Debian's coturn (started here with the TURN key's secret,
// `use-auth-secret`) over UDP and over TCP only (a network that blocks UDP), and against the
// gateway's own TURN service over UDP, over TCP only and over TLS only (`turns:`, with a
// self-signed certificate made here by openssl). The selected candidate pair must be a relayed
// one, over that protocol, and frames must play.
//
//   scripts/setup-coturn.sh && scripts/setup-browser.sh && (cd whip-tests/browser && npm test)

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { CHROMIUM_BIN, Diagnostics, Gateway, gateways, launchChromium, waitFrames } from "./lib.mjs";

const OVERALL_MS = 90_000;
const SECRET = "turn-key-secret-browser-0123";
const diag = new Diagnostics("turn test", OVERALL_MS);
let context = null;
let userDataDir = null;
let coturn = null;
let certs = null; // { dir, cert, key }: the TLS listener's self-signed certificate

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A port free for TCP and for UDP on 127.0.0.1 (the gateway's TURN listens on both). */
async function freeUdpPort() {
  for (let i = 0; i < 50; i++) {
    const port = await freeTcpPort();
    const ok = await new Promise((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => resolve(false));
      s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no port free for both TCP and UDP");
}

async function startCoturn() {
  const port = await freeTcpPort();
  const low = 30_000 + Math.floor(Math.random() * 100) * 20;
  const proc = spawn("turnserver", ["-n", "--listening-ip=127.0.0.1", `--listening-port=${port}`,
    "--relay-ip=127.0.0.1", "--use-auth-secret", `--static-auth-secret=${SECRET}`, "--realm=wish",
    "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", `--min-port=${low}`,
    `--max-port=${low + 19}`, "--log-file=stdout"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((r) => {
      const c = net.connect(port, "127.0.0.1", () => { c.destroy(); r(true); });
      c.on("error", () => r(false));
    });
    if (up) return { proc, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill("SIGKILL");
  throw new Error("turnserver did not listen");
}

/** A self-signed certificate for localhost and 127.0.0.1 (openssl's CLI) in a new directory. */
function selfSigned() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-turn-cert-"));
  const [cert, key] = [path.join(dir, "cert.pem"), path.join(dir, "key.pem")];
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout", key, "-out", cert], { stdio: "ignore" });
  return { dir, cert, key };
}

/** The selected candidate pair's local candidate: { candidateType, relayProtocol }. */
async function selectedLocal(page, which) {
  return page.evaluate(async (w) => {
    const stats = await window[w].pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
    const local = pair && stats.get(pair.localCandidateId);
    return local ? { candidateType: local.candidateType, relayProtocol: local.relayProtocol } : null;
  }, which);
}

function waitConnected(page, which, timeout) {
  return page.waitForFunction(
    (w) => window[w] && window[w].pc && window[w].pc.connectionState === "connected",
    which, { timeout, polling: 200 });
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM_BIN), `${CHROMIUM_BIN} missing: run scripts/setup-browser.sh`);
  coturn = await startCoturn();
  certs = selfSigned();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "whip-turn-profile-"));
  // Chromium checks a `turns:` server's certificate (the handshake ends in a CertificateUnknown
  // alert for the self-signed one); this flag reaches its WebRTC TLS sockets too, so no test CA is
  // needed. The other cases here are plain HTTP and TURN over UDP/TCP, which it does not touch.
  context = await launchChromium(userDataDir, diag.consoleLogs, ["--ignore-certificate-errors"]);
}, { timeout: 25_000 });

after(async () => {
  diag.stop();
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  await Promise.all(gateways.map((g) => g.stop()));
  if (coturn) coturn.proc.kill("SIGKILL");
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
}, { timeout: 15_000 });

/**
 * One relay-only case: a gateway started with `gatewayArgs()` (it hands the TURN URLs out in its
 * Link headers), the /publish/ and /watch/ pages with ?relay=1, both selected candidate pairs
 * relayed over `protocol` (the candidate's relayProtocol: udp, tcp or tls), and frames decoded.
 */
function relayedCase(title, testTitle, label, gatewayArgs, protocol) {
  describe(title, { timeout: 40_000 }, () => {
    let gw = null;
    before(async () => {
      gw = new Gateway(`turn-${label}`, await gatewayArgs());
      await gw.start();
    }, { timeout: 25_000 });
    after(async () => {
      for (const [name, page] of Object.entries(diag.pages)) {
        await page.close().catch(() => {});
        delete diag.pages[name];
      }
      await gw.stop();
    }, { timeout: 10_000 });

    it(testTitle, async () => diag.run(`turn ${label}`, async () => {
      const stream = `turn${label.replace(/[^a-z]/g, "")}`;
      const pub = await context.newPage();
      diag.watch(`publish-${label}`, pub);
      await pub.goto(`${gw.base}/publish/${stream}?relay=1`, { waitUntil: "load", timeout: 10_000 });
      await waitConnected(pub, "whip", 20_000);
      const viewer = await context.newPage();
      diag.watch(`watch-${label}`, viewer);
      await viewer.goto(`${gw.base}/watch/${stream}?relay=1`, { waitUntil: "load", timeout: 10_000 });
      await waitConnected(viewer, "whep", 20_000);
      const frames = await waitFrames(viewer, 20, 15_000);
      const pubLocal = await selectedLocal(pub, "whip");
      const viewLocal = await selectedLocal(viewer, "whep");
      console.log(`TURN ${label}: publisher ${JSON.stringify(pubLocal)}, viewer ${JSON.stringify(viewLocal)}, ${JSON.stringify(frames)}`);
      assert.ok(frames.framesDecoded > 20 && frames.frameWidth > 0, `frames: ${JSON.stringify(frames)}`);
      for (const [who, local] of [["publisher", pubLocal], ["viewer", viewLocal]]) {
        assert.equal(local?.candidateType, "relay", `${who} is not relayed: ${JSON.stringify(local)}`);
        assert.equal(local?.relayProtocol, protocol, `${who} relays over ${local?.relayProtocol}`);
      }
    }));
  });
}

// coturn over UDP and over TCP, and the gateway's own TURN service over UDP and over TCP.
for (const [server, transport] of [["coturn", "udp"], ["coturn", "tcp"], ["gateway", "udp"], ["gateway", "tcp"]]) {
  relayedCase(`publish and play through ${server}'s TURN over ${transport.toUpperCase()} only`,
    "relayed publish and play", `${server}-${transport}`, async () => {
      const own = server === "gateway" ? await freeUdpPort() : null;
      const port = own ?? coturn.port;
      return ["--turn-key", `k1:${SECRET}`, "--turn-url", `turn:127.0.0.1:${port}?transport=${transport}`,
        ...(own ? ["--turn-listen", `127.0.0.1:${own}`, "--turn-listen-tcp", `127.0.0.1:${own}`] : [])];
    }, transport);
}

// The gateway's own TURN service over TLS only (`turns:`), with the test certificate.
relayedCase("publish and play through gateway's TURN over TLS only",
  "publishes and plays through our TURN over TLS only", "gateway-tls", async () => {
    const [udp, tls] = [await freeUdpPort(), await freeTcpPort()];
    return ["--turn-key", `k1:${SECRET}`, "--turn-url", `turns:127.0.0.1:${tls}?transport=tcp`,
      "--turn-listen", `127.0.0.1:${udp}`, "--turn-listen-tls", `127.0.0.1:${tls}`,
      "--turn-tls-cert", certs.cert, "--turn-tls-key", certs.key];
  }, "tls");
