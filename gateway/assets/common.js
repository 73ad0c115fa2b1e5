// Shared helpers for the gateway's pages (index, watch, publish). Plain browser JS, no build step.
// Served by the gateway at /assets/common.js.
"use strict";

const gw = (() => {
  /** Stream name = last non-empty path segment of the page URL, e.g. /watch/concert -> "concert". */
  function streamName() {
    const parts = location.pathname.split("/").filter((p) => p.length > 0);
    if (parts.length < 2) return "";
    try {
      return decodeURIComponent(parts[parts.length - 1]);
    } catch (_) {
      return parts[parts.length - 1];
    }
  }

  /** Bearer token from ?token= in the page URL, or null. */
  function token() {
    const t = new URLSearchParams(location.search).get("token");
    return t ? t : null;
  }

  /** Headers with Authorization when the page has a token. */
  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    const t = token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  }

  /** Appends ?token=... to a same-site link when the current page carries one. */
  function withToken(path) {
    const t = token();
    return t ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(t) : path;
  }

  /**
   * The ICE servers the endpoint announces (WHIP/WHEP `Link: <url>; rel="ice-server"` on its
   * OPTIONS answer; TURN ones with short-lived credentials), as RTCPeerConnection wants them.
   * Nothing when the request fails: the gateway is reachable directly in the common case.
   */
  async function iceServers(endpoint) {
    let header = "";
    try {
      const res = await fetch(endpoint, { method: "OPTIONS", headers: authHeaders() });
      header = res.headers.get("link") || "";
    } catch (_) {
      return [];
    }
    const servers = [];
    // Values are joined with ", " by fetch; a URL never contains ", <".
    for (const part of header.split(/,\s*(?=<)/)) {
      const m = part.match(/^<([^>]+)>(.*)$/);
      if (!m || !/rel="?ice-server"?/.test(m[2])) continue;
      const param = (name) => {
        const p = m[2].match(new RegExp(name + '="([^"]*)"'));
        return p ? p[1] : undefined;
      };
      const server = { urls: m[1] };
      const username = param("username");
      const credential = param("credential");
      if (username !== undefined && credential !== undefined) {
        server.username = username;
        server.credential = credential;
      }
      servers.push(server);
    }
    return servers;
  }

  /**
   * The RTCPeerConnection configuration for `endpoint`: its ICE servers, and with ?relay=1 in the
   * page URL only relayed (TURN) paths — to check that a network that blocks UDP still works.
   */
  async function peerConfig(endpoint) {
    const relayOnly = new URLSearchParams(location.search).get("relay") === "1";
    return {
      bundlePolicy: "max-bundle",
      iceServers: await iceServers(endpoint),
      iceTransportPolicy: relayOnly ? "relay" : "all",
    };
  }

  /** Resolves once ICE gathering is complete, or after maxMs, whichever comes first. */
  function waitIceGathering(pc, maxMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onChange);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve();
      };
      const onChange = () => {
        if (pc.iceGatheringState === "complete") finish();
      };
      const onCandidate = (ev) => {
        if (!ev.candidate) finish(); // null candidate = end of gathering
      };
      const timer = setTimeout(finish, maxMs === undefined ? 1000 : maxMs);
      pc.addEventListener("icegatheringstatechange", onChange);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  /** Retry-After header in seconds (integer or HTTP date), falling back to dflt. */
  function retryAfterSeconds(resp, dflt) {
    const v = resp.headers.get("Retry-After");
    if (!v) return dflt;
    const n = Number(v.trim());
    if (Number.isFinite(n) && n >= 0) return Math.min(n, 60);
    const d = Date.parse(v);
    if (!Number.isNaN(d)) return Math.max(0, Math.min(60, (d - Date.now()) / 1000));
    return dflt;
  }

  /**
   * POSTs an SDP offer to a WHIP/WHEP endpoint.
   * Returns { status, ok, answer, location, etag, retryAfter, text }.
   * `location` is absolute, resolved against the URL that answered (the request URL after any
   * redirect, as HTTP says), which equals the page's origin for the usual absolute-path Location.
   */
  async function postOffer(endpoint, sdp) {
    const resp = await fetch(endpoint, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/sdp" }),
      body: sdp,
      cache: "no-store",
    });
    const text = await resp.text();
    const loc = resp.headers.get("Location");
    let location = null;
    if (loc) {
      try {
        location = new URL(loc, resp.url || window.location.href).href;
      } catch (_) {
        location = null;
      }
    }
    return {
      status: resp.status,
      ok: resp.status === 201 || resp.status === 200,
      answer: text,
      location,
      etag: resp.headers.get("ETag"),
      retryAfter: retryAfterSeconds(resp, 2),
      text,
    };
  }

  /** DELETEs a WHIP/WHEP session; keepalive so it still goes out while the page unloads. */
  function deleteSession(url) {
    if (!url) return Promise.resolve();
    return fetch(url, { method: "DELETE", headers: authHeaders(), keepalive: true, cache: "no-store" })
      .then(() => undefined)
      .catch(() => undefined);
  }

  /** Shows a status line; kind is "ok", "wait", "err" or "" (neutral). */
  function setStatus(el, text, kind) {
    if (!el) return;
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
  }

  function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
  }

  /** Short human-readable error text for an HTTP failure. */
  function httpError(res) {
    let detail = (res.text || "").trim();
    if (detail.length > 200) detail = detail.slice(0, 200) + "…";
    return "HTTP " + res.status + (detail ? ": " + detail : "");
  }

  return {
    streamName,
    token,
    authHeaders,
    withToken,
    waitIceGathering,
    iceServers,
    peerConfig,
    retryAfterSeconds,
    postOffer,
    deleteSession,
    setStatus,
    sleep,
    httpError,
  };
})();
