// Shared by the browser tests (browser.test.mjs: Chromium; firefox.test.mjs: Firefox, and Chromium
// next to it): the gateway binary as a child process, Chromium's flags, what a failing test prints
// (Diagnostics), and the getStats readers of the gateway's /watch/ and /publish/ pages
// (window.whep.pc, window.whip.pc). They only call page.evaluate(fn), page.on(…) and
// page.isClosed(), which Playwright and Puppeteer pages both have.

import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const GATEWAY_BIN = path.resolve(HERE, process.env.GATEWAY_BIN || "../../target/debug/gateway");
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

export const gateways = []; // every Gateway started in this process, for diagnostics and cleanup

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-domain-reliability",
  "--disable-breakpad",
  "--no-default-browser-check",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
  // No DNS at all: every host name fails to resolve (the rules match IP literals too, hence the
  // EXCLUDE for the one address the test uses).
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
  // Chromium honours only the last --disable-features, so this repeats Playwright's own list and adds
  // the features that talk to the network on their own (mDNS for WebRTC host candidates, media
  // router's SSDP/DIAL discovery, translation, autofill, CT updates).
  "--disable-features=" + [
    // Playwright's defaults (playwright-core 1.65)
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
    "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
    // ours
    "WebRtcHideLocalIpsWithMdns", "DialMediaRouteProvider", "GlobalMediaControls", "Translate",
    "AutofillServerCommunication", "CertificateTransparencyComponentUpdater", "InterestFeedContentSuggestions",
  ].join(","),
];

export function remember(buf, line, max = 300) {
  buf.push(line);
  if (buf.length > max) buf.splice(0, buf.length - max);
}

/**
 * Debian's Chromium, headless, with a fake camera and microphone allowed, in a persistent
 * context at `userDataDir` (`extraArgs` after CHROMIUM_ARGS). Belt and braces: its pages may only
 * fetch from `hosts` (127.0.0.1; the rig's VIP in vip.test.mjs); anything else is blocked and
 * noted in `logs`.
 */
export async function launchChromium(userDataDir, logs, extraArgs = [], hosts = ["127.0.0.1"]) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1000, height: 700 },
    permissions: ["camera", "microphone"],
    timeout: 20_000,
  });
  context.setDefaultTimeout(10_000);
  await context.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (hosts.includes(u.hostname) || u.protocol === "data:" || u.protocol === "blob:") return route.continue();
    remember(logs, `[route] blocked ${u.href}`);
    return route.abort("blockedbyclient");
  });
  return context;
}

/** Chromium as launchChromium starts it but without its context.route(): Playwright would answer
 *  every CORS preflight itself, so a page on another origin would never meet the gateway's own
 *  CORS answers. Nothing leaves the machine all the same: no host name resolves (CHROMIUM_ARGS),
 *  the pages name only 127.0.0.1 and nothing configures a STUN/TURN server. */
export async function launchChromiumCrossOrigin(userDataDir) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 800, height: 600 },
    permissions: ["camera", "microphone"],
    timeout: 20_000,
  });
  context.setDefaultTimeout(10_000);
  return context;
}

/** The state of the gateway's page in `page` (its WHIP/WHEP client and status line), as JSON. */
export async function pageState(label, page) {
  try {
    return await page.evaluate(() => {
      const s = (o) => (o ? { state: o.state, connectionState: o.pc && o.pc.connectionState,
        iceConnectionState: o.pc && o.pc.iceConnectionState, location: o.location, codec: o.codec,
        offered: o.offered } : undefined);
      const st = document.getElementById("status");
      return JSON.stringify({ url: location.href, status: st && st.textContent, whip: s(window.whip), whep: s(window.whep) });
    });
  } catch (e) {
    return `(${label}: cannot evaluate: ${e.message})`;
  }
}

/** One test file's diagnostics: what a failing test prints (every gateway's log tail, the state of
 *  each open page, the pages' console), and the file's last resort: never leave a gateway behind,
 *  never hang past overallMs. */
export class Diagnostics {
  constructor(title, overallMs) {
    this.title = title;
    this.consoleLogs = []; // "[page] type: text"
    this.pages = {}; // label -> Playwright or Puppeteer page
    process.on("exit", () => gateways.forEach((g) => g.kill()));
    this.guard = setTimeout(async () => {
      await this.dump(`overall timeout of ${overallMs} ms`);
      gateways.forEach((g) => g.kill());
      process.exit(1);
    }, overallMs);
    this.guard.unref();
  }

  /** Keeps `page` under `label`, with its console, errors and failed requests. */
  watch(label, page) {
    this.pages[label] = page;
    const log = (line) => remember(this.consoleLogs, `[${label}] ${line}`);
    page.on("console", (m) => log(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`PAGE ERROR: ${e.message}`));
    page.on("requestfailed", (r) => log(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  }

  async dump(why) {
    const out = [`\n===== ${this.title} failure: ${why} =====`];
    for (const g of gateways) {
      out.push(`----- gateway "${g.label}" ${GATEWAY_BIN} base=${g.base || "(not ready)"} ice=${g.iceIp} exited=${JSON.stringify(g.exited)}; log tail -----`);
      out.push(...g.log.slice(-60));
    }
    out.push("----- page states -----");
    for (const [label, page] of Object.entries(this.pages)) {
      if (!page.isClosed()) out.push(`${label}: ${await pageState(label, page)}`);
    }
    out.push("----- page console -----");
    out.push(...this.consoleLogs.slice(-150));
    out.push("===== end =====\n");
    console.error(out.join("\n"));
  }

  /** A new page of `context` (a browser context, or a browser), watched under `label`, at `url`,
   *  which must load with status 200. */
  async open(context, label, url, timeout = 10_000) {
    const page = await context.newPage();
    this.watch(label, page);
    const resp = await page.goto(url, { waitUntil: "load", timeout });
    if (!resp) throw new Error(`no response for ${url}`);
    if (resp.status() !== 200) throw new Error(`GET ${url} -> ${resp.status()}`);
    return page;
  }

  /** Runs a test body; on failure prints the diagnostics, then rethrows. */
  async run(name, fn) {
    try {
      await fn();
    } catch (e) {
      await this.dump(`${name}: ${e && e.message ? e.message : e}`);
      throw e;
    }
  }

  /** The file is done: no overall timeout any more. */
  stop() {
    clearTimeout(this.guard);
  }
}

/** The gateway binary as a child process, on ephemeral loopback ports. */
export class Gateway {
  /** iceIp: the address the gateway's UDP socket binds and advertises as its one host candidate
   *  (HTTP always stays on 127.0.0.1). */
  constructor(label, extraArgs = [], iceIp = "127.0.0.1", netns = null) {
    this.label = label;
    // In a network namespace (`ip netns exec`, root only) the listen addresses and candidates are
    // all in extraArgs, and `base` is the caller's to set.
    this.netns = netns;
    this.extraArgs = extraArgs;
    this.iceIp = iceIp;
    this.proc = null;
    this.exited = null; // { code, signal } once it exits
    this.log = []; // tail of stderr (and stdout other than READY)
    this.base = ""; // http://127.0.0.1:PORT
    gateways.push(this);
  }

  start() {
    return new Promise((resolve, reject) => {
      if (!fs.existsSync(GATEWAY_BIN)) {
        reject(new Error(`gateway binary not found at ${GATEWAY_BIN} (build it with \`cargo build -p gateway\` or set GATEWAY_BIN)`));
        return;
      }
      const udp = this.iceIp.includes(":") ? `[${this.iceIp}]:0` : `${this.iceIp}:0`;
      const args = this.netns ? this.extraArgs : ["--http-listen", "127.0.0.1:0", "--udp-listen", udp,
        "--candidate-ip", this.iceIp, ...this.extraArgs];
      const env = { ...process.env };
      if (!env.RUST_LOG) env.RUST_LOG = "info";
      if (!env.NO_COLOR) env.NO_COLOR = "1";
      const proc = this.netns
        ? spawn("ip", ["netns", "exec", this.netns, GATEWAY_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"], env })
        : spawn(GATEWAY_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env });
      this.proc = proc;
      let ready = false;
      const timer = setTimeout(() => {
        if (!ready) reject(new Error(`gateway (${this.label}) printed no READY line within 20 s`));
      }, 20_000);
      const lines = (stream, onLine) => {
        let buf = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk) => {
          buf += chunk;
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            onLine(buf.slice(0, nl).trimEnd());
            buf = buf.slice(nl + 1);
          }
        });
      };
      lines(proc.stdout, (line) => {
        const m = /^READY http=(\S+) udp=(\S+)/.exec(line);
        if (!ready && m) {
          ready = true;
          clearTimeout(timer);
          if (!this.base) this.base = `http://${m[1]}`;
          resolve(this);
        } else {
          remember(this.log, `[stdout] ${line}`);
        }
      });
      lines(proc.stderr, (line) => remember(this.log, line));
      proc.on("error", (e) => { clearTimeout(timer); reject(e); });
      proc.on("exit", (code, signal) => {
        this.exited = { code, signal };
        if (!ready) {
          clearTimeout(timer);
          reject(new Error(`gateway (${this.label}) exited before READY (code ${code}, signal ${signal}):\n` +
            this.log.slice(-30).join("\n")));
        }
      });
    });
  }

  kill() {
    if (this.proc && this.exited === null) {
      try { this.proc.kill("SIGKILL"); } catch (_) {}
    }
  }

  async stop() {
    if (!this.proc || this.exited !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.kill(), 3000);
    await exited;
    clearTimeout(t);
  }
}

// The one-address rig (scripts/vip-rig.sh; root only): gateways in network namespaces behind the
// VIP, which this (root) namespace reaches through an nftables balancer, and nothing else of theirs.
export const VIP = "10.210.0.1";
export const VIP_BASE = `http://${VIP}:8080`;
const VIP_RIG = path.resolve(HERE, "../../scripts/vip-rig.sh");

/** Runs `scripts/vip-rig.sh ARGS…` (up, pin, down, …). */
export function vipRig(...args) {
  execFileSync("bash", [VIP_RIG, ...args], { stdio: ["ignore", "ignore", "inherit"] });
}

const VIP_CLUSTER = path.resolve(HERE, "../../scripts/vip-cluster.sh");
const VIP_CLUSTER_LOGS = "/tmp/vip-cluster";

/** scripts/vip-cluster.sh `arg` ("up" or "down") with GATEWAY_BIN's directory for the binaries and
 *  `env` on top (e.g. `{ DTLS_SHARED: "1" }`). */
export function vipCluster(arg, env = {}) {
  execFileSync("bash", [VIP_CLUSTER, arg], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, ...env, BIN: path.dirname(GATEWAY_BIN) },
  });
}

/** Gateway `i`'s log in the vip-cluster ("" when there is none). */
export function vipGatewayLog(i) {
  const log = `${VIP_CLUSTER_LOGS}/gateway-${i}.log`;
  return fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "";
}

/** The last 4000 characters of each vip-cluster gateway's log, for a failure message. */
export function vipClusterLogs() {
  return [1, 2, 3].map((i) => `----- gateway ${i} -----\n${(vipGatewayLog(i) || "(no log)").slice(-4000)}`)
    .join("\n");
}

/** The pid of gateway `i` of the rig (the first process in its namespace). */
export const vipGatewayPid = (i) => execFileSync("ip", ["netns", "pids", `vip-g${i}`]).toString().trim().split("\n")[0];

/** Gateway `i` of the rig, reached at VIP_BASE. It advertises the VIP as its public address and
 *  its own (unreachable from here) as a second candidate: str0m matches a datagram's
 *  destination, which after the balancer's DNAT is the gateway's own address. */
export function vipGateway(i) {
  const gw = new Gateway(`vip-g${i}`, ["--http-listen", "0.0.0.0:8080", "--udp-listen", "0.0.0.0:8189",
    "--public-ip", VIP, "--candidate-ip", `10.210.2.${10 + i}`], "", `vip-g${i}`);
  gw.base = VIP_BASE;
  return gw;
}

/** Chromium as launchChromium starts it, its pages let through to the VIP only. */
export function launchChromiumViaVip(userDataDir, logs) {
  return launchChromium(userDataDir, logs, [
    // The last of a repeated switch wins: no host name resolves, the VIP is let through.
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${VIP}`,
    // getUserMedia needs a secure origin; the VIP is plain HTTP.
    `--unsafely-treat-insecure-origin-as-secure=${VIP_BASE}`,
  ], [VIP]);
}

/** Resolves once the page's WHIP or WHEP client (`which`: "whip" or "whep") is connected. */
export function waitConnected(page, which, timeout) {
  return page.waitForFunction(
    (w) => window[w] && window[w].pc && window[w].pc.connectionState === "connected",
    which, { timeout, polling: 200 });
}

/** Polls the watch page until it has decoded more than minFrames with a size, or the time is up. */
export async function waitFrames(page, minFrames, ms) {
  const deadline = Date.now() + ms;
  let s = await watchStats(page);
  while (Date.now() < deadline && !(s.framesDecoded > minFrames && s.frameWidth > 0 && s.videoWidth > 0)) {
    await new Promise((r) => setTimeout(r, 500));
    s = await watchStats(page);
  }
  return s;
}

/** Inbound video stats of the watch page, plus the <video> element's size. */
export function watchStats(page) {
  return page.evaluate(async () => {
    const pc = window.whep && window.whep.pc;
    const v = document.querySelector("video");
    const r = { state: window.whep && window.whep.state, framesDecoded: 0, frameWidth: 0, frameHeight: 0,
      videoWidth: v ? v.videoWidth : 0, videoHeight: v ? v.videoHeight : 0, codec: null, bytes: 0, more: {} };
    if (!pc) return r;
    const stats = await pc.getStats();
    const codecs = new Map();
    stats.forEach((s) => { if (s.type === "codec") codecs.set(s.id, s.mimeType); });
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        r.framesDecoded = s.framesDecoded || 0;
        r.frameWidth = s.frameWidth || 0;
        r.frameHeight = s.frameHeight || 0;
        r.bytes = s.bytesReceived || 0;
        r.codec = codecs.get(s.codecId) || null;
        for (const k of ["packetsReceived", "packetsLost", "framesReceived", "framesDropped", "keyFramesDecoded",
          "nackCount", "pliCount", "firCount", "freezeCount", "totalFreezesDuration", "decoderImplementation"]) {
          r.more[k] = s[k];
        }
      }
    });
    return r;
  });
}

/** Outbound video stats of the publish page (for diagnostics). */
export function publishStats(page) {
  return page.evaluate(async () => {
    const pc = window.whip && window.whip.pc;
    const r = {};
    if (!pc) return r;
    const stats = await pc.getStats();
    const codecs = new Map();
    stats.forEach((s) => { if (s.type === "codec") codecs.set(s.id, s.mimeType); });
    stats.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        r.codec = codecs.get(s.codecId) || null;
        for (const k of ["packetsSent", "framesEncoded", "keyFramesEncoded", "frameWidth", "frameHeight",
          "framesPerSecond", "nackCount", "pliCount", "firCount", "retransmittedPacketsSent",
          "qualityLimitationReason", "encoderImplementation"]) {
          r[k] = s[k];
        }
      }
    });
    return r;
  });
}
