//! HTTP conformance of the real gateway process against WHIP (RFC 9725) and WHEP, as collected in
//! `INTEROP.md`: status codes, header shapes (`Location`, `ETag`, `Link`, CORS), RFC 9457 problem
//! bodies, the resource lifecycle (PATCH trickle / ICE restart, DELETE twice), bearer tokens, and
//! that a pile of bad input leaves the server healthy.
//!
//! Signalling only: offers are made by str0m and never connect, so these tests are light on CPU.
//! Each test runs its own gateway on ephemeral ports (see `whip_tests::harness`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use whip_tests::Gateway;
use whip_tests::harness::HARNESS_ADMIN_TOKEN;
use whip_tests::signaling::http_client;

// ---------------------------------------------------------------------------------------------
// Helpers (kept local: this file is self-contained on purpose).

const SDP: &str = "application/sdp";
const FRAG: &str = "application/trickle-ice-sdpfrag";
const PROBLEM: &str = "application/problem+json";

/// Config with two ICE servers: a TURN server with credentials, a STUN server without.
const ICE_CONFIG: &str = r#"
[[ice_servers]]
url = "turn:127.0.0.1:3478?transport=udp"
username = "u"
credential = "c"

[[ice_servers]]
url = "stun:127.0.0.1:3479"
"#;

async fn start(toml: Option<&str>, args: &[&str]) -> Result<Gateway> {
    let toml = toml.map(str::to_owned);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    // Starting may run `cargo build`; keep that off the async workers.
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match toml {
            Some(t) => Gateway::start_with_config(&t, &args),
            None => Gateway::start_with_args(&args),
        }
    })
    .await
    .context("gateway start panicked")?
}

/// A str0m offer with one m-line per entry, carrying a host candidate (str0m needs one).
fn offer(media: &[(MediaKind, Direction)]) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let cand =
        Candidate::host("127.0.0.1:9".parse().expect("addr"), "udp").expect("host candidate");
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    for (kind, dir) in media {
        api.add_media(*kind, *dir, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("str0m made an offer");
    offer.to_sdp_string()
}

/// What OBS publishes: audio + video, sendonly.
fn publish_offer() -> String {
    offer(&[
        (MediaKind::Audio, Direction::SendOnly),
        (MediaKind::Video, Direction::SendOnly),
    ])
}

/// What a player sends: audio + video, recvonly.
fn play_offer() -> String {
    offer(&[
        (MediaKind::Audio, Direction::RecvOnly),
        (MediaKind::Video, Direction::RecvOnly),
    ])
}

/// An offer with only a data channel: no audio, no video.
fn datachannel_offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let cand =
        Candidate::host("127.0.0.1:9".parse().expect("addr"), "udp").expect("host candidate");
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_channel("chat".into());
    let (offer, _pending) = api.apply().expect("str0m made an offer");
    offer.to_sdp_string()
}

/// A response, fully read.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

async fn send(req: RequestBuilder) -> Result<Resp> {
    let resp = req.send().await.context("sending request")?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.context("reading body")?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

async fn post_sdp(c: &Client, url: &str, token: Option<&str>, sdp: &str) -> Result<Resp> {
    let mut req = c
        .post(url)
        .header(header::CONTENT_TYPE, SDP)
        .body(sdp.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

async fn patch(
    c: &Client,
    url: &str,
    if_match: Option<&str>,
    ct: &str,
    body: &str,
) -> Result<Resp> {
    let mut req = c
        .patch(url)
        .header(header::CONTENT_TYPE, ct)
        .body(body.to_owned());
    if let Some(m) = if_match {
        req = req.header(header::IF_MATCH, m);
    }
    send(req).await
}

/// CORS headers the gateway puts on every response.
#[track_caller]
fn assert_cors(r: &Resp, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{what}: CORS origin missing: {r:?}"
    );
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in [
        "location",
        "etag",
        "link",
        "accept-patch",
        "accept-post",
        "retry-after",
    ] {
        assert!(
            expose.contains(h),
            "{what}: Access-Control-Expose-Headers lacks {h}: {expose:?}"
        );
    }
}

/// An RFC 9457 problem with the given status, `title`, `detail`, and CORS.
#[track_caller]
fn assert_problem(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(
        r.status, status,
        "{what}: expected {status}, got {}: {}",
        r.status, r.body
    );
    assert!(
        r.content_type().starts_with(PROBLEM),
        "{what}: error Content-Type is {:?}, expected {PROBLEM}",
        r.content_type()
    );
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{what}: problem body is not JSON ({e}): {}", r.body));
    assert_eq!(
        v["status"].as_u64(),
        Some(u64::from(status)),
        "{what}: problem status field: {v}"
    );
    assert!(
        v["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: problem without title: {v}"
    );
    assert!(
        v["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: problem without detail: {v}"
    );
    assert!(v["type"].is_string(), "{what}: problem without type: {v}");
    assert_cors(r, what);
    v
}

/// `Location` must be `/{prefix}/{stream}/{32 lowercase hex}`: an absolute path, no query.
#[track_caller]
fn session_id(r: &Resp, prefix: &str, stream: &str) -> String {
    let loc = r
        .header("location")
        .unwrap_or_else(|| panic!("201 without Location: {r:?}"));
    let want = format!("/{prefix}/{stream}/");
    let id = loc
        .strip_prefix(&want)
        .unwrap_or_else(|| panic!("Location {loc:?} does not start with {want:?}"));
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "Location {loc:?}: session id is not 32 lowercase hex digits"
    );
    assert!(
        !loc.contains('?') && !loc.contains('#'),
        "Location {loc:?} has a query or fragment"
    );
    id.to_owned()
}

/// A strong, quoted ETag.
#[track_caller]
fn etag(r: &Resp) -> String {
    let e = r
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag: {r:?}"))
        .to_owned();
    assert!(
        e.len() > 2 && e.starts_with('"') && e.ends_with('"') && !e[1..e.len() - 1].contains('"'),
        "ETag {e:?} is not a quoted strong entity tag"
    );
    assert!(!e.starts_with("W/"), "ETag {e:?} is weak");
    e
}

/// The ICE-server `Link` headers as (url, params), checking their shape: `<url>` then
/// `; key="value"` parameters, every value quoted.
#[track_caller]
fn ice_links(r: &Resp) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for v in r.headers.get_all(header::LINK) {
        let v = v.to_str().expect("Link is ASCII");
        assert!(
            !v.contains(", <"),
            "several servers folded into one Link header: {v:?}"
        );
        let rest = v
            .strip_prefix('<')
            .unwrap_or_else(|| panic!("Link {v:?} does not start with <"));
        let (url, params) = rest
            .split_once('>')
            .unwrap_or_else(|| panic!("Link {v:?} has no >"));
        let mut kv = Vec::new();
        for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, val) = p
                .split_once('=')
                .unwrap_or_else(|| panic!("Link parameter {p:?} has no value"));
            assert!(
                val.len() >= 2 && val.starts_with('"') && val.ends_with('"'),
                "Link parameter {k} is not quoted: {v:?}"
            );
            kv.push((k.to_owned(), val[1..val.len() - 1].to_owned()));
        }
        if kv.iter().any(|(k, v)| k == "rel" && v == "ice-server") {
            out.push((url.to_owned(), kv));
        }
    }
    out
}

#[track_caller]
fn assert_ice_links(r: &Resp, what: &str) {
    let links = ice_links(r);
    assert_eq!(
        links.len(),
        2,
        "{what}: expected one Link per ICE server (2), got {links:?}"
    );
    let (turn, p) = &links[0];
    assert_eq!(
        turn, "turn:127.0.0.1:3478?transport=udp",
        "{what}: first Link URL"
    );
    let get = |k: &str| p.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str());
    assert_eq!(get("username"), Some("u"), "{what}: TURN username: {p:?}");
    assert_eq!(
        get("credential"),
        Some("c"),
        "{what}: TURN credential: {p:?}"
    );
    assert_eq!(
        get("credential-type"),
        Some("password"),
        "{what}: credential-type: {p:?}"
    );
    let (stun, p) = &links[1];
    assert_eq!(stun, "stun:127.0.0.1:3479", "{what}: second Link URL");
    assert!(
        !p.iter().any(|(k, _)| k == "username" || k == "credential"),
        "{what}: STUN link has credentials: {p:?}"
    );
}

async fn stats(c: &Client, gw: &Gateway) -> Result<Value> {
    let r = send(
        c.get(format!("{}/v1/stats", gw.base_url()))
            .bearer_auth(HARNESS_ADMIN_TOKEN),
    )
    .await?;
    ensure!(r.status == 200, "GET /v1/stats: {} {}", r.status, r.body);
    ensure!(
        r.content_type().starts_with("application/json"),
        "stats Content-Type {:?}",
        r.content_type()
    );
    let v: Value = serde_json::from_str(&r.body).context("stats are not JSON")?;
    for k in [
        "sessions",
        "worker_sessions",
        "tracks",
        "streams",
        "packets_in",
        "packets_out",
    ] {
        ensure!(!v[k].is_null(), "stats lack {k}: {v}");
    }
    Ok(v)
}

/// Polls `/v1/stats` until `sessions`, `tracks` and `streams` are the given values.
async fn wait_counts(
    c: &Client,
    gw: &Gateway,
    sessions: u64,
    tracks: u64,
    streams: u64,
    within: Duration,
) -> Result<Value> {
    let until = Instant::now() + within;
    loop {
        let v = stats(c, gw).await?;
        let got = (
            v["sessions"].as_u64(),
            v["tracks"].as_u64(),
            v["streams"].as_u64(),
        );
        if got == (Some(sessions), Some(tracks), Some(streams)) {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!(
                "stats never reached sessions={sessions} tracks={tracks} streams={streams} within {within:?}: {v}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn random_hex_id() -> String {
    let mut s = String::new();
    for _ in 0..4 {
        s.push_str(&format!("{:08x}", rand::random::<u32>()));
    }
    s
}

// ---------------------------------------------------------------------------------------------

/// WHIP POST shape, then the resource: GET, OPTIONS, trickle PATCH, ICE restart with its
/// preconditions, DELETE twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_session_lifecycle_and_headers() -> Result<()> {
    let gw = start(Some(ICE_CONFIG), &[]).await?;
    let c = http_client()?;
    let url = gw.whip_url("studio");

    // --- POST: 201 with answer, Location, ETag, Accept-Patch, Links, CORS.
    let offer = publish_offer();
    let r = post_sdp(&c, &url, None, &offer).await?;
    assert_eq!(r.status, 201, "WHIP POST: {}", r.body);
    assert!(
        r.content_type().starts_with(SDP),
        "answer Content-Type {:?}",
        r.content_type()
    );
    let id = session_id(&r, "whip", "studio");
    let etag0 = etag(&r);
    assert_eq!(r.header("accept-patch"), Some(FRAG));
    assert_ice_links(&r, "WHIP 201");
    assert_cors(&r, "WHIP 201");
    // The answer: CRLF line ends, one BUNDLE, rtcp-mux, recvonly everywhere, nothing rejected, and
    // the gateway's host candidate (it gathers before answering).
    let sdp = &r.body;
    assert!(
        sdp.starts_with("v=0\r\n"),
        "answer does not start with v=0 CRLF: {sdp:.80}"
    );
    assert!(sdp.ends_with("\r\n"), "answer does not end with CRLF");
    assert!(
        !sdp.replace("\r\n", "").contains('\n'),
        "answer has bare LF line ends"
    );
    assert!(sdp.contains("a=group:BUNDLE"), "answer without BUNDLE");
    assert!(sdp.contains("a=rtcp-mux"), "answer without rtcp-mux");
    let mlines: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(mlines.len(), 2, "answer m-lines: {mlines:?}");
    assert!(
        mlines.iter().all(|m| m.split(' ').nth(1) != Some("0")),
        "answer rejects an m-line: {mlines:?}"
    );
    assert_eq!(
        sdp.matches("a=recvonly").count(),
        2,
        "WHIP answer must be recvonly per m-line:\n{sdp}"
    );
    assert!(
        !sdp.contains("a=sendonly") && !sdp.contains("a=sendrecv"),
        "WHIP answer sends:\n{sdp}"
    );
    let udp_port = gw.udp_addr().port();
    assert!(
        sdp.lines().any(|l| l.starts_with("a=candidate:")
            && l.contains(&format!("127.0.0.1 {udp_port} typ host"))),
        "answer lacks the host candidate 127.0.0.1:{udp_port}:\n{sdp}"
    );

    let res = format!("{}/whip/studio/{id}", gw.base_url());
    let s = stats(&c, &gw).await?;
    assert_eq!(s["sessions"].as_u64(), Some(1), "{s}");
    assert_eq!(s["streams"].as_u64(), Some(1), "{s}");

    // --- GET and OPTIONS on the resource.
    let r = send(c.get(&res)).await?;
    assert_eq!(r.status, 204, "GET resource: {}", r.body);
    assert!(r.body.is_empty());
    let r = send(c.request(Method::OPTIONS, &res)).await?;
    assert_eq!(r.status, 200, "OPTIONS resource");
    assert_eq!(r.header("accept-patch"), Some(FRAG));
    assert_cors(&r, "OPTIONS resource");

    // --- Trickle: 204. Bad fragments 400, wrong type 415, the resource must exist.
    let trickle =
        "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
    let r = patch(&c, &res, None, FRAG, trickle).await?;
    assert_eq!(r.status, 204, "trickle PATCH: {}", r.body);
    assert!(r.body.is_empty());
    // RFC 8840 fragments carry the client's own ice-ufrag/ice-pwd: still trickle (204), with or
    // without If-Match; only a *different* ufrag is a restart (RFC 9725 §4.3).
    let cred = |name: &str| {
        offer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("a=ice-{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (own_ufrag, own_pwd) = (cred("ufrag"), cred("pwd"));
    let rfc8840 = format!(
        "a=ice-ufrag:{own_ufrag}\r\na=ice-pwd:{own_pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 50001 typ host\r\n"
    );
    for if_match in [None, Some("*"), Some(etag0.as_str())] {
        let r = patch(&c, &res, if_match, FRAG, &rfc8840).await?;
        assert_eq!(
            r.status, 204,
            "RFC 8840 trickle with the client's own credentials, If-Match {if_match:?}: {}",
            r.body
        );
    }
    let r = patch(&c, &res, None, "application/sdp", trickle).await?;
    assert_problem(&r, 415, "PATCH with application/sdp");
    let r = patch(&c, &res, None, "text/plain", trickle).await?;
    assert_problem(&r, 415, "PATCH with text/plain");
    let r = patch(&c, &res, None, FRAG, "this is not a fragment\r\n").await?;
    assert_problem(&r, 400, "PATCH with garbage fragment");
    let r = patch(&c, &res, None, FRAG, "a=ice-ufrag:abcd\r\n").await?;
    assert_problem(&r, 400, "PATCH with ufrag but no pwd");
    let r = patch(
        &c,
        &format!("{}/whip/studio/{}", gw.base_url(), random_hex_id()),
        None,
        FRAG,
        trickle,
    )
    .await?;
    assert_problem(&r, 404, "PATCH unknown session");
    let r = patch(
        &c,
        &format!("{}/whip/studio/not-an-id", gw.base_url()),
        None,
        FRAG,
        trickle,
    )
    .await?;
    assert_problem(&r, 404, "PATCH malformed session id");
    // The same id under the wrong stream or the wrong protocol is not the resource.
    let r = patch(
        &c,
        &format!("{}/whip/other/{id}", gw.base_url()),
        None,
        FRAG,
        trickle,
    )
    .await?;
    assert_problem(&r, 404, "PATCH under another stream");
    let r = patch(
        &c,
        &format!("{}/whep/studio/{id}", gw.base_url()),
        None,
        FRAG,
        trickle,
    )
    .await?;
    assert_problem(&r, 404, "PATCH a WHIP session through /whep");

    // --- ICE restart: If-Match required (428), must match (412), then 200 + new ETag.
    let restart = |ufrag: &str| format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{}\r\n", "p".repeat(24));
    let r = patch(&c, &res, None, FRAG, &restart("rst1")).await?;
    assert_problem(&r, 428, "ICE restart without If-Match");
    let r = patch(&c, &res, Some("\"not-the-etag\""), FRAG, &restart("rst1")).await?;
    assert_problem(&r, 412, "ICE restart with a wrong If-Match");
    // A failed restart leaves the session alone.
    assert_eq!(
        send(c.get(&res)).await?.status,
        204,
        "session gone after a refused restart"
    );

    let r = patch(&c, &res, Some(&etag0), FRAG, &restart("rst1")).await?;
    assert_eq!(
        r.status, 200,
        "ICE restart with the current ETag: {}",
        r.body
    );
    assert!(
        r.content_type().starts_with(FRAG),
        "restart answer Content-Type {:?}",
        r.content_type()
    );
    let etag1 = etag(&r);
    assert_ne!(etag1, etag0, "ICE restart must change the ETag");
    let body = &r.body;
    let ufrag = body
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(str::trim);
    let pwd = body
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-pwd:"))
        .map(str::trim);
    assert!(
        ufrag.is_some_and(|u| u.len() >= 4),
        "restart answer without a=ice-ufrag: {body}"
    );
    assert!(
        pwd.is_some_and(|p| p.len() >= 22),
        "restart answer without a proper a=ice-pwd: {body}"
    );
    let old_ufrag = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(str::trim);
    assert_ne!(ufrag, old_ufrag, "ICE restart kept the server's ufrag");
    assert!(
        body.lines().any(|l| l.starts_with("a=candidate:")
            && l.contains(&format!("127.0.0.1 {udp_port} typ host"))),
        "restart answer lacks the host candidate: {body}"
    );
    assert!(
        body.contains("a=end-of-candidates"),
        "restart answer without end-of-candidates: {body}"
    );
    assert_cors(&r, "restart 200");

    // The old ETag is now stale, for restarts and for trickles that send it.
    let r = patch(&c, &res, Some(&etag0), FRAG, &restart("rst2")).await?;
    assert_problem(&r, 412, "ICE restart with the previous ETag");
    let r = patch(&c, &res, Some(&etag0), FRAG, trickle).await?;
    assert_problem(&r, 412, "trickle with a stale If-Match");
    let r = patch(&c, &res, Some(&etag1), FRAG, trickle).await?;
    assert_eq!(
        r.status, 204,
        "trickle with the current If-Match: {}",
        r.body
    );

    // After a restart, the new ufrag trickles (204) and the replaced generation's late
    // candidates are dropped, not taken for another restart.
    let r = patch(
        &c,
        &res,
        None,
        FRAG,
        &format!("{}{trickle}", restart("rst1")),
    )
    .await?;
    assert_eq!(
        r.status, 204,
        "trickle with the restarted ufrag: {}",
        r.body
    );
    assert_eq!(
        patch(&c, &res, None, FRAG, &rfc8840).await?.status,
        204,
        "late trickle of the replaced ICE generation"
    );

    // `*` and `"*"` match whatever the current ETag is.
    let r = patch(&c, &res, Some("*"), FRAG, &restart("rst3")).await?;
    assert_eq!(r.status, 200, "ICE restart with If-Match: *: {}", r.body);
    let etag2 = etag(&r);
    assert!(
        etag2 != etag1 && etag2 != etag0,
        "ETag did not change on the second restart"
    );
    let r = patch(&c, &res, Some("\"*\""), FRAG, &restart("rst4")).await?;
    assert_eq!(
        r.status, 200,
        "ICE restart with If-Match: \"*\": {}",
        r.body
    );
    let etag3 = etag(&r);
    let r = patch(&c, &res, Some(&etag2), FRAG, &restart("rst5")).await?;
    assert_problem(&r, 412, "ICE restart with the ETag before last");
    let r = patch(&c, &res, Some(&etag3), FRAG, &restart("rst5")).await?;
    assert_eq!(
        r.status, 200,
        "ICE restart with the newest ETag: {}",
        r.body
    );

    // --- DELETE: 200 (any ETag ignored), then 404 for everything.
    let r = send(c.delete(&res).header(header::IF_MATCH, "\"stale\"")).await?;
    assert_eq!(r.status, 200, "DELETE: {}", r.body);
    assert_cors(&r, "DELETE 200");
    let r = send(c.delete(&res)).await?;
    assert_problem(&r, 404, "second DELETE");
    let r = patch(&c, &res, None, FRAG, trickle).await?;
    assert_problem(&r, 404, "PATCH after DELETE");
    let r = send(c.get(&res)).await?;
    assert_problem(&r, 404, "GET after DELETE");
    wait_counts(&c, &gw, 0, 0, 0, Duration::from_secs(5)).await?;
    Ok(())
}

/// OPTIONS / GET / HEAD probes, WHEP before and after a publisher, `/v1/streams`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_probes_and_whep() -> Result<()> {
    let gw = start(Some(ICE_CONFIG), &[]).await?;
    let c = http_client()?;
    let base = gw.base_url();

    // --- Preflight and discovery.
    for ep in ["whip", "whep"] {
        let url = format!("{base}/{ep}/live");
        let r = send(
            c.request(Method::OPTIONS, &url)
                .header("origin", "https://player.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
        )
        .await?;
        assert_eq!(r.status, 200, "OPTIONS {ep}: {}", r.body);
        assert_eq!(
            r.header("accept-post"),
            Some(SDP),
            "OPTIONS {ep}: Accept-Post"
        );
        assert_cors(&r, "OPTIONS");
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        for m in ["POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                methods.contains(m),
                "OPTIONS {ep}: Allow-Methods lacks {m}: {methods:?}"
            );
        }
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        for h in ["authorization", "content-type", "if-match"] {
            assert!(
                allowed.contains(h),
                "OPTIONS {ep}: Allow-Headers lacks {h}: {allowed:?}"
            );
        }
        assert_ice_links(&r, "OPTIONS");

        let r = send(c.get(&url)).await?;
        assert_eq!(r.status, 204, "GET {ep} endpoint: {}", r.body);
        assert!(r.body.is_empty(), "GET {ep} endpoint has a body");
        assert_cors(&r, "GET endpoint");
    }
    let r = send(c.head(format!("{base}/whep/live"))).await?;
    assert_eq!(r.status, 200, "HEAD /whep");
    assert!(
        r.content_type().starts_with(SDP),
        "HEAD /whep Content-Type {:?}",
        r.content_type()
    );
    let r = send(c.get(format!("{base}/whep/bad%20name"))).await?;
    assert_problem(&r, 400, "GET endpoint with an invalid stream name");

    // --- WHEP before any publisher: 409 + Retry-After.
    let r = post_sdp(&c, &gw.whep_url("live"), None, &play_offer()).await?;
    assert_problem(&r, 409, "WHEP before publisher");
    let retry = r.header("retry-after").context("409 without Retry-After")?;
    assert!(
        retry.parse::<u32>().is_ok_and(|s| s > 0),
        "Retry-After {retry:?} is not delta-seconds"
    );
    assert_eq!(
        stats(&c, &gw).await?["sessions"].as_u64(),
        Some(0),
        "a refused WHEP left a session"
    );

    // --- Publish, then play.
    let r = post_sdp(&c, &gw.whip_url("live"), None, &publish_offer()).await?;
    assert_eq!(r.status, 201, "WHIP POST: {}", r.body);
    let pub_id = session_id(&r, "whip", "live");

    let r = post_sdp(&c, &gw.whep_url("live"), None, &play_offer()).await?;
    assert_eq!(r.status, 201, "WHEP POST: {}", r.body);
    assert!(r.content_type().starts_with(SDP));
    let play_id = session_id(&r, "whep", "live");
    assert_ne!(play_id, pub_id);
    etag(&r);
    assert_eq!(r.header("accept-patch"), Some(FRAG));
    assert_ice_links(&r, "WHEP 201");
    assert_cors(&r, "WHEP 201");
    assert!(
        r.body.contains("a=sendonly"),
        "WHEP answer must send:\n{}",
        r.body
    );
    assert!(
        !r.body.contains("a=recvonly"),
        "WHEP answer receives:\n{}",
        r.body
    );

    // A player offering to send is refused, and leaves nothing behind.
    let r = post_sdp(&c, &gw.whep_url("live"), None, &publish_offer()).await?;
    assert_problem(&r, 422, "WHEP offer that is sendonly");

    let r = send(c.get(format!("{base}/v1/streams"))).await?;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body)?;
    let streams = v["streams"].as_array().context("streams is not an array")?;
    assert_eq!(streams.len(), 1, "{v}");
    assert_eq!(streams[0]["name"], "live", "{v}");
    assert_eq!(streams[0]["viewers"].as_u64(), Some(1), "{v}");
    assert!(
        !r.body.contains(&pub_id) && !r.body.contains(&play_id),
        "/v1/streams lists a session id: {v}"
    );
    let mut tracks: Vec<&str> = streams[0]["tracks"]
        .as_array()
        .context("tracks")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tracks.sort_unstable();
    assert_eq!(tracks, ["audio", "video"], "{v}");
    let s = stats(&c, &gw).await?;
    assert_eq!(s["sessions"].as_u64(), Some(2), "{s}");
    assert_eq!(s["streams"].as_u64(), Some(1), "{s}");

    // --- Ending: the viewer, then the publisher; the stream goes away, WHEP is 409 again.
    let r = send(c.delete(format!("{base}/whep/live/{play_id}"))).await?;
    assert_eq!(r.status, 200, "WHEP DELETE: {}", r.body);
    let r = send(c.delete(format!("{base}/whep/live/{play_id}"))).await?;
    assert_problem(&r, 404, "second WHEP DELETE");
    // A WHIP session is not reachable as a WHEP resource.
    let r = send(c.delete(format!("{base}/whep/live/{pub_id}"))).await?;
    assert_problem(&r, 404, "DELETE a WHIP session through /whep");
    let r = send(c.delete(format!("{base}/whip/live/{pub_id}"))).await?;
    assert_eq!(r.status, 200, "WHIP DELETE: {}", r.body);
    wait_counts(&c, &gw, 0, 0, 0, Duration::from_secs(5)).await?;
    let r = send(c.get(format!("{base}/v1/streams"))).await?;
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["streams"].as_array().map(Vec::len), Some(0), "{v}");
    let r = post_sdp(&c, &gw.whep_url("live"), None, &play_offer()).await?;
    assert_problem(&r, 409, "WHEP after the publisher left");
    Ok(())
}

/// Bearer tokens: 401 (with a Bearer challenge) without or with an unknown token, 403 with a
/// token for the other action, 201 with the right one; preflight needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_401_403_201() -> Result<()> {
    const PUB: &str = "publish-token-0123";
    const PLAY: &str = "play-token-4567";
    let gw = start(None, &["--publish-token", PUB, "--play-token", PLAY]).await?;
    let c = http_client()?;
    let whip = gw.whip_url("secure");
    let whep = gw.whep_url("secure");

    #[track_caller]
    fn unauthorized(r: &Resp, what: &str) {
        assert_problem(r, 401, what);
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.to_ascii_lowercase().starts_with("bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }

    unauthorized(
        &post_sdp(&c, &whip, None, &publish_offer()).await?,
        "WHIP without token",
    );
    unauthorized(
        &post_sdp(&c, &whip, Some("not-a-known-token"), &publish_offer()).await?,
        "WHIP unknown token",
    );
    let r = send(
        c.post(&whip)
            .header(header::CONTENT_TYPE, SDP)
            .header(header::AUTHORIZATION, format!("Basic {PUB}"))
            .body(publish_offer()),
    )
    .await?;
    unauthorized(&r, "WHIP with Basic instead of Bearer");
    // Authentication comes before looking at the body.
    unauthorized(
        &post_sdp(&c, &whip, None, "garbage").await?,
        "WHIP without token, garbage body",
    );
    assert_problem(
        &post_sdp(&c, &whip, Some(PLAY), &publish_offer()).await?,
        403,
        "WHIP with the play token",
    );

    let r = post_sdp(&c, &whip, Some(PUB), &publish_offer()).await?;
    assert_eq!(r.status, 201, "WHIP with the publish token: {}", r.body);
    let pub_id = session_id(&r, "whip", "secure");

    unauthorized(
        &post_sdp(&c, &whep, None, &play_offer()).await?,
        "WHEP without token",
    );
    unauthorized(
        &post_sdp(&c, &whep, Some("not-a-known-token"), &play_offer()).await?,
        "WHEP unknown token",
    );
    assert_problem(
        &post_sdp(&c, &whep, Some(PUB), &play_offer()).await?,
        403,
        "WHEP with the publish token",
    );
    let r = post_sdp(&c, &whep, Some(PLAY), &play_offer()).await?;
    assert_eq!(r.status, 201, "WHEP with the play token: {}", r.body);
    let play_id = session_id(&r, "whep", "secure");

    // Monitoring: a node with tokens shows its counters to admin tokens only, and its streams
    // to tokens that may play them.
    let base = gw.base_url();
    unauthorized(
        &send(c.get(format!("{base}/v1/stats"))).await?,
        "/v1/stats without token",
    );
    assert_problem(
        &send(c.get(format!("{base}/v1/stats")).bearer_auth(PLAY)).await?,
        403,
        "/v1/stats with the play token",
    );
    unauthorized(
        &send(c.get(format!("{base}/v1/streams"))).await?,
        "/v1/streams without token",
    );
    unauthorized(
        &send(
            c.get(format!("{base}/v1/streams"))
                .bearer_auth("not-a-known-token"),
        )
        .await?,
        "/v1/streams with an unknown token",
    );
    for token in [PLAY, HARNESS_ADMIN_TOKEN] {
        let r = send(c.get(format!("{base}/v1/streams")).bearer_auth(token)).await?;
        assert_eq!(r.status, 200, "/v1/streams with {token}: {}", r.body);
        assert!(r.body.contains("\"secure\""), "{token}: {}", r.body);
    }
    let r = send(c.get(format!("{base}/v1/streams")).bearer_auth(PUB)).await?;
    assert_eq!(
        r.status, 200,
        "/v1/streams with the publish token: {}",
        r.body
    );
    assert!(
        !r.body.contains("secure"),
        "a publish token lists streams: {}",
        r.body
    );

    // Preflight works without a token.
    let r = send(
        c.request(Method::OPTIONS, &whip)
            .header("origin", "https://x.example"),
    )
    .await?;
    assert_eq!(r.status, 200, "OPTIONS without token");
    assert_cors(&r, "OPTIONS without token");

    // On the resource, a token that is sent must be right (the URL itself is the capability).
    let pub_res = format!("{}/whip/secure/{pub_id}", gw.base_url());
    let play_res = format!("{}/whep/secure/{play_id}", gw.base_url());
    unauthorized(
        &send(c.delete(&pub_res).bearer_auth("not-a-known-token")).await?,
        "DELETE with an unknown token",
    );
    assert_problem(
        &send(c.delete(&pub_res).bearer_auth(PLAY)).await?,
        403,
        "DELETE WHIP with the play token",
    );
    assert_problem(
        &send(c.delete(&play_res).bearer_auth(PUB)).await?,
        403,
        "DELETE WHEP with the publish token",
    );
    assert_eq!(
        stats(&c, &gw).await?["sessions"].as_u64(),
        Some(2),
        "a refused DELETE ended a session"
    );
    let r = send(c.delete(&play_res).bearer_auth(PLAY)).await?;
    assert_eq!(r.status, 200, "DELETE WHEP with the play token: {}", r.body);
    let r = send(c.delete(&pub_res).bearer_auth(PUB)).await?;
    assert_eq!(
        r.status, 200,
        "DELETE WHIP with the publish token: {}",
        r.body
    );
    wait_counts(&c, &gw, 0, 0, 0, Duration::from_secs(5)).await?;
    Ok(())
}

/// `max_sessions`: the next POST gets 503 + Retry-After, and room frees up after a DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_with_retry_after() -> Result<()> {
    let gw = start(Some("max_sessions = 2\n"), &[]).await?;
    let c = http_client()?;
    let a = post_sdp(&c, &gw.whip_url("one"), None, &publish_offer()).await?;
    assert_eq!(a.status, 201, "{}", a.body);
    let b = post_sdp(&c, &gw.whip_url("two"), None, &publish_offer()).await?;
    assert_eq!(b.status, 201, "{}", b.body);
    let r = post_sdp(&c, &gw.whip_url("three"), None, &publish_offer()).await?;
    assert_problem(&r, 503, "third session over max_sessions = 2");
    let retry = r.header("retry-after").context("503 without Retry-After")?;
    assert!(retry.parse::<u32>().is_ok(), "Retry-After {retry:?}");
    let r = post_sdp(&c, &gw.whep_url("one"), None, &play_offer()).await?;
    assert_problem(&r, 503, "WHEP over max_sessions");
    let loc = a.header("location").context("Location")?;
    assert_eq!(
        send(c.delete(format!("{}{loc}", gw.base_url())))
            .await?
            .status,
        200
    );
    let r = post_sdp(&c, &gw.whip_url("three"), None, &publish_offer()).await?;
    assert_eq!(
        r.status, 201,
        "POST after a DELETE freed a slot: {}",
        r.body
    );
    Ok(())
}

/// Every kind of bad input, sequentially and concurrently, then proof the server is healthy:
/// nothing was left behind, a good WHIP POST gets 201, stats answer, the process lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_server_stays_healthy() -> Result<()> {
    let mut gw = start(None, &[]).await?;
    let c = http_client()?;
    let whip = gw.whip_url("health");
    let base = gw.base_url();
    let good = publish_offer();

    // Content type.
    assert_problem(
        &send(c.post(&whip).body(good.clone())).await?,
        415,
        "no Content-Type",
    );
    assert_problem(
        &send(
            c.post(&whip)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(good.clone()),
        )
        .await?,
        415,
        "text/plain",
    );
    assert_problem(
        &send(
            c.post(&whip)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{}"),
        )
        .await?,
        415,
        "application/json",
    );
    // Garbage and malformed SDP.
    assert_problem(
        &post_sdp(&c, &whip, None, "hello world").await?,
        400,
        "garbage SDP",
    );
    assert_problem(&post_sdp(&c, &whip, None, "").await?, 400, "empty body");
    assert_problem(
        &post_sdp(&c, &whip, None, "v=0\r\n").await?,
        400,
        "only v=0",
    );
    let r = send(
        c.post(&whip)
            .header(header::CONTENT_TYPE, SDP)
            .body(vec![0xffu8, 0xfe, 0x00, 0x80]),
    )
    .await?;
    assert_problem(&r, 400, "non-UTF-8 body");
    let half = &good[..good.len() / 2];
    let r = post_sdp(&c, &whip, None, half).await?;
    assert!(
        (400..500).contains(&r.status),
        "truncated offer got {}: {}",
        r.status,
        r.body
    );
    assert_problem(&r, r.status, "truncated offer");
    // Valid SDP the gateway cannot use.
    assert_problem(
        &post_sdp(&c, &whip, None, &datachannel_offer()).await?,
        422,
        "offer without audio/video",
    );
    assert_problem(
        &post_sdp(
            &c,
            &whip,
            None,
            &offer(&[
                (MediaKind::Audio, Direction::RecvOnly),
                (MediaKind::Video, Direction::RecvOnly),
            ]),
        )
        .await?,
        422,
        "recvonly WHIP offer",
    );
    assert_problem(
        &post_sdp(
            &c,
            &whip,
            None,
            &offer(&[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::RecvOnly),
            ]),
        )
        .await?,
        422,
        "WHIP offer with one recvonly m-line",
    );
    // Size: just over 64 KiB is 413, just under is parsed (and then refused as garbage).
    let mut huge = good.clone();
    while huge.len() <= 64 * 1024 + 512 {
        huge.push_str(
            "a=x-padding:0123456789012345678901234567890123456789012345678901234567890123\r\n",
        );
    }
    assert_problem(
        &post_sdp(&c, &whip, None, &huge).await?,
        413,
        "offer over 64 KiB",
    );
    assert_problem(
        &post_sdp(&c, &whip, None, &"x".repeat(200 * 1024)).await?,
        413,
        "200 KiB of garbage",
    );
    assert_problem(
        &post_sdp(&c, &whip, None, &"x".repeat(60 * 1024)).await?,
        400,
        "60 KiB of garbage",
    );
    // Stream names.
    assert_problem(
        &post_sdp(&c, &format!("{base}/whip/a%2Fb"), None, &good).await?,
        400,
        "stream name with /",
    );
    assert_problem(
        &post_sdp(&c, &format!("{base}/whip/a%20b"), None, &good).await?,
        400,
        "stream name with space",
    );
    assert_problem(
        &post_sdp(&c, &format!("{base}/whip/{}", "a".repeat(129)), None, &good).await?,
        400,
        "129-char stream name",
    );
    assert_problem(
        &post_sdp(&c, &format!("{base}/whip/%C3%A9t%C3%A9"), None, &good).await?,
        400,
        "non-ASCII stream name",
    );
    assert_problem(
        &post_sdp(&c, &format!("{base}/whep/a%2Fb"), None, &play_offer()).await?,
        400,
        "WHEP bad name",
    );
    // Routing.
    assert_problem(
        &send(c.get(format!("{base}/no/such/thing"))).await?,
        404,
        "unknown path",
    );
    assert_problem(
        &send(c.put(&whip).body("x")).await?,
        405,
        "PUT on the endpoint",
    );
    assert_problem(
        &send(c.post(format!("{base}/whip/health/{}", random_hex_id()))).await?,
        405,
        "POST on a resource",
    );
    assert_problem(
        &send(c.delete(format!("{base}/whip/health/{}", random_hex_id()))).await?,
        404,
        "DELETE unknown",
    );

    // Below HTTP: a chunked body past the limit (no Content-Length to refuse up front), and bytes
    // that are not HTTP at all.
    let chunk = "x".repeat(8 * 1024);
    let mut raw = format!(
        "POST /whip/health HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.http_addr()
    );
    for _ in 0..12 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let head = raw_exchange(&gw, raw.as_bytes()).await?;
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "chunked 96 KiB body: {head:.200}"
    );
    let head = raw_exchange(&gw, b"\x16\x03\x01\x02\x00GARBAGE\r\n\r\n").await?;
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 400"),
        "non-HTTP bytes: {head:.200}"
    );
    let head = raw_exchange(
        &gw,
        b"POST /whip/health HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    )
    .await?;
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 400"),
        "bad Content-Length: {head:.200}"
    );

    // The same garbage, 40 requests at once.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        let whip = whip.clone();
        let body = match i % 4 {
            0 => "garbage".to_owned(),
            1 => "x".repeat(70 * 1024),
            2 => datachannel_offer(),
            _ => format!("v=0\r\no=- {i} 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video"),
        };
        tasks.push(tokio::spawn(async move {
            post_sdp(&c, &whip, None, &body).await.map(|r| r.status)
        }));
    }
    for t in tasks {
        let status = t.await.context("request task panicked")??;
        assert!(
            (400..500).contains(&status),
            "concurrent bad request got {status}"
        );
    }

    // Nothing was created by any of that.
    assert!(gw.is_running(), "the gateway exited during bad input");
    let s = stats(&c, &gw).await?;
    assert_eq!(
        s["sessions"].as_u64(),
        Some(0),
        "refused requests left sessions: {s}"
    );
    assert_eq!(
        s["streams"].as_u64(),
        Some(0),
        "refused requests left streams: {s}"
    );

    // And it still does its job: parameters on the media type are fine, `~ . _ -` are legal.
    let r = post_sdp(&c, &whip, None, &good).await?;
    assert_eq!(r.status, 201, "good WHIP POST after bad input: {}", r.body);
    let r2 = send(
        c.post(format!("{base}/whip/a-b_c.d~e"))
            .header(header::CONTENT_TYPE, "application/sdp; charset=utf-8")
            .body(good.clone()),
    )
    .await?;
    assert_eq!(
        r2.status, 201,
        "POST with Content-Type parameters and a name using - _ . ~: {}",
        r2.body
    );
    session_id(&r2, "whip", "a-b_c.d~e");
    let s = stats(&c, &gw).await?;
    assert_eq!(s["sessions"].as_u64(), Some(2), "{s}");
    assert_eq!(send(c.get(format!("{base}/healthz"))).await?.status, 200);
    for r in [&r, &r2] {
        let loc = r.header("location").context("Location")?;
        assert_eq!(send(c.delete(format!("{base}{loc}"))).await?.status, 200);
    }
    wait_counts(&c, &gw, 0, 0, 0, Duration::from_secs(5)).await?;
    assert!(gw.is_running(), "the gateway exited");
    Ok(())
}

/// Writes `bytes` on a fresh TCP connection and returns what comes back until the server closes
/// (at most 5 s), as lossy text.
async fn raw_exchange(gw: &Gateway, bytes: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.http_addr()).await?;
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Opens `n` pooled connections to `url` at once, so that `n` requests sent next really run
/// concurrently on the server instead of queueing behind TCP handshakes.
async fn warm_connections(c: &Client, url: &str, n: usize) -> Result<()> {
    let mut warm = Vec::new();
    for _ in 0..n {
        let (c, url) = (c.clone(), url.to_owned());
        warm.push(tokio::spawn(async move {
            send(c.get(&url)).await.map(|r| r.status)
        }));
    }
    for t in warm {
        let status = t.await.context("warm-up task panicked")??;
        ensure!(status == 204, "warm-up GET {url}: {status}");
    }
    Ok(())
}

/// Republishing replaces the old publisher (its resource is gone), and of concurrent DELETEs on
/// one resource exactly one wins (200), the rest get 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_and_concurrent_deletes() -> Result<()> {
    let gw = start(None, &[]).await?;
    let c = http_client()?;
    let base = gw.base_url();

    let first = post_sdp(&c, &gw.whip_url("race"), None, &publish_offer()).await?;
    assert_eq!(first.status, 201, "{}", first.body);
    let r = post_sdp(&c, &gw.whip_url("race"), None, &publish_offer()).await?;
    assert_eq!(
        r.status, 201,
        "second publisher on the same stream: {}",
        r.body
    );
    let old = format!("{base}{}", first.header("location").context("Location")?);
    assert_problem(
        &send(c.delete(&old)).await?,
        404,
        "DELETE of a replaced publisher",
    );
    wait_counts(&c, &gw, 1, 2, 1, Duration::from_secs(5)).await?;

    let id = session_id(&r, "whip", "race");
    let res = format!("{base}/whip/race/{id}");
    warm_connections(&c, &res, 8).await?;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, res) = (c.clone(), res.clone());
        tasks.push(tokio::spawn(async move {
            send(c.delete(&res)).await.map(|r| r.status)
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.context("delete task panicked")??);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 404, 404, 404, 404, 404, 404, 404],
        "concurrent DELETEs"
    );
    wait_counts(&c, &gw, 0, 0, 0, Duration::from_secs(5)).await?;
    Ok(())
}

/// If-Match is a compare-and-set (RFC 9110 §13.1.1, RFC 9725 §4.3.2): of concurrent ICE
/// restarts conditional on the same ETag, exactly one may succeed, the others must get 412.
/// Otherwise several clients each hold "the" new ufrag/pwd and ETag while only the restart the
/// worker applied last is in effect. Ten rounds on fresh sessions, eight racers each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ice_restarts_with_one_etag_succeed_once() -> Result<()> {
    let gw = start(None, &[]).await?;
    let c = http_client()?;
    let base = gw.base_url();
    let mut bad_rounds = Vec::new();
    for round in 0..10 {
        let r = post_sdp(&c, &gw.whip_url("restart-race"), None, &publish_offer()).await?;
        assert_eq!(r.status, 201, "{}", r.body);
        let res = format!(
            "{base}/whip/restart-race/{}",
            session_id(&r, "whip", "restart-race")
        );
        let tag = etag(&r);
        warm_connections(&c, &res, 8).await?;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (c, res, tag) = (c.clone(), res.clone(), tag.clone());
            let body = format!("a=ice-ufrag:race{i}\r\na=ice-pwd:{}\r\n", "q".repeat(24));
            tasks.push(tokio::spawn(async move {
                patch(&c, &res, Some(&tag), FRAG, &body)
                    .await
                    .map(|r| r.status)
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.context("restart task panicked")??);
        }
        statuses.sort_unstable();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 412),
            "round {round}: {statuses:?}"
        );
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!(ok >= 1, "round {round}: no restart succeeded: {statuses:?}");
        if ok > 1 {
            bad_rounds.push(format!("round {round}: {ok} of 8 succeeded"));
        }
        assert_eq!(send(c.delete(&res)).await?.status, 200);
    }
    assert!(
        bad_rounds.is_empty(),
        "concurrent ICE restarts with the same If-Match ETag all passed the precondition: {bad_rounds:?}"
    );
    Ok(())
}

/// `0x` followed by 8 or more hex digits: a pointer, not an offset into a short offer.
fn has_address(text: &str) -> bool {
    text.match_indices("0x").any(|(i, _)| {
        text[i + 2..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count()
            >= 8
    })
}

/// A malformed offer's problem `detail` is shown to whoever sent it: it must not carry process
/// memory addresses (str0m's parser error prints `PointerOffset(0x7f…)`, which reveals the ASLR
/// layout to any anonymous client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problem_details_do_not_leak_memory_addresses() -> Result<()> {
    let gw = start(None, &[]).await?;
    let c = http_client()?;
    for body in [
        "hello world",
        "v=0\r\n",
        "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x",
    ] {
        let r = post_sdp(&c, &gw.whip_url("leak"), None, body).await?;
        let v = assert_problem(&r, 400, "malformed offer");
        let detail = v["detail"].as_str().unwrap_or("");
        assert!(
            !has_address(detail),
            "problem detail for {body:?} leaks a memory address: {detail:?}"
        );
    }
    Ok(())
}

/// Issue 10: a resource URL is the capability to end a session, so nothing an anonymous client
/// can fetch may contain a session id, an ETag or our ICE credentials. Publishes and plays, then
/// walks every route that needs no token (pages, assets, probes, monitoring, error answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_unauthenticated_route_reveals_a_capability() -> Result<()> {
    let gw = start(None, &[]).await?;
    let c = http_client()?;
    let base = gw.base_url();
    let r = post_sdp(&c, &gw.whip_url("live"), None, &publish_offer()).await?;
    assert_eq!(r.status, 201, "WHIP: {}", r.body);
    let mut secrets = vec![session_id(&r, "whip", "live")];
    secrets.extend(r.header("etag").map(|e| e.trim_matches('"').to_owned()));
    secrets.extend(answer_ice(&r.body));
    let r = post_sdp(&c, &gw.whep_url("live"), None, &play_offer()).await?;
    assert_eq!(r.status, 201, "WHEP: {}", r.body);
    secrets.push(session_id(&r, "whep", "live"));
    secrets.extend(r.header("etag").map(|e| e.trim_matches('"').to_owned()));
    secrets.extend(answer_ice(&r.body));
    assert!(
        secrets.len() >= 8,
        "ids, ETags, ufrags and passwords: {secrets:?}"
    );

    let routes: Vec<(Method, String)> = [
        (Method::GET, "/"),
        (Method::GET, "/watch/live"),
        (Method::GET, "/publish/live"),
        (Method::GET, "/assets/common.js"),
        (Method::GET, "/assets/nope.js"),
        (Method::GET, "/healthz"),
        (Method::GET, "/v1/streams"),
        (Method::GET, "/v1/stats"),
        (Method::GET, "/whip/live"),
        (Method::HEAD, "/whip/live"),
        (Method::OPTIONS, "/whip/live"),
        (Method::GET, "/whep/live"),
        (Method::HEAD, "/whep/live"),
        (Method::OPTIONS, "/whep/live"),
        (Method::GET, "/whip/live/00000000000000000000000000000000"),
        (Method::DELETE, "/whep/live/not-an-id"),
        (Method::GET, "/no/such/route"),
        (Method::POST, "/v1/streams/live/recording"),
        (Method::GET, "/v1/apps/app/sessions/x"),
    ]
    .into_iter()
    .map(|(m, p)| (m, format!("{base}{p}")))
    .collect();
    let mut checked = 0;
    for (method, url) in &routes {
        let r = send(c.request(method.clone(), url)).await?;
        checked += 1;
        leak_check(&r, &secrets, &format!("{method} {url}"));
    }
    // Error answers to bad offers and a second publisher on the same stream.
    for (url, body) in [
        (gw.whip_url("live"), publish_offer()),
        (gw.whep_url("live"), "v=0 garbage".to_owned()),
        (gw.whep_url("nobody"), play_offer()),
    ] {
        let r = post_sdp(&c, &url, None, &body).await?;
        checked += 1;
        leak_check(&r, &secrets, &format!("POST {url}"));
    }
    println!(
        "{checked} anonymous answers checked for {} secrets",
        secrets.len()
    );
    Ok(())
}

/// Our ufrag and password from an answer.
fn answer_ice(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| {
            l.strip_prefix("a=ice-ufrag:")
                .or_else(|| l.strip_prefix("a=ice-pwd:"))
        })
        .map(|v| v.trim().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[track_caller]
fn leak_check(r: &Resp, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !r.body.contains(s.as_str()),
            "{what}: body reveals {s}: {}",
            r.body
        );
        for (name, value) in &r.headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !v.contains(s.as_str()),
                "{what}: header {name} reveals {s}: {v}"
            );
        }
    }
}

/// Issue 10: an oversized body gets a 413 the client can read — on WHEP as on WHIP, on the API,
/// and for refusals that never needed the body (401) — instead of a connection reset while the
/// client is still sending. Both an ordinary client (reqwest) and raw TCP that writes everything
/// before it reads; the connection stays usable afterwards (the body was read and discarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_readable_413() -> Result<()> {
    const PLAY: &str = "play-token-4567";
    let gw = start(None, &["--play-token", PLAY]).await?;
    let c = http_client()?;
    let base = gw.base_url();
    let big = "x".repeat(6 * 1024 * 1024);
    // No publisher on "nobody": WHEP still reads and refuses the body first.
    for url in [
        gw.whip_url("big"),
        gw.whep_url("nobody"),
        format!("{base}/v1/apps/app/sessions/new"),
    ] {
        let r = send(
            c.post(&url)
                .header(header::CONTENT_TYPE, SDP)
                .bearer_auth(PLAY)
                .body(big.clone()),
        )
        .await
        .with_context(|| format!("POST 6 MiB to {url}: no answer"))?;
        if url.contains("/v1/apps/") {
            // The session/track API answers as Calls does (`calls_fidelity.rs`).
            assert_eq!(r.status, 413, "6 MiB to {url}: {}", r.body);
            let v: Value = serde_json::from_str(&r.body)?;
            assert_eq!(v["errorCode"], "payload_too_large", "{}", r.body);
        } else {
            assert_problem(&r, 413, &format!("6 MiB to {url}"));
        }
    }
    // A refusal that does not depend on the body (no token for WHEP) is readable too.
    let r = send(
        c.post(gw.whep_url("nobody"))
            .header(header::CONTENT_TYPE, SDP)
            .body(big.clone()),
    )
    .await
    .context("POST 6 MiB without a token: no answer")?;
    assert_problem(&r, 413, "6 MiB without a token");
    let r = send(
        c.post(gw.whep_url("nobody"))
            .header(header::CONTENT_TYPE, SDP)
            .body("x".repeat(32 * 1024)),
    )
    .await
    .context("POST 32 KiB without a token: no answer")?;
    assert_problem(&r, 401, "32 KiB without a token");

    // Raw: the whole request written before anything is read, then a second request on the same
    // connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.http_addr()).await?;
    let n = 2 * 1024 * 1024;
    let mut req = format!(
        "POST /whep/nobody HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Authorization: Bearer {PLAY}\r\nContent-Length: {n}\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + n, b'v');
    req.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (mut rd, mut wr) = tcp.split();
    let write = async {
        wr.write_all(&req)
            .await
            .context("the gateway stopped reading")?;
        anyhow::Ok(())
    };
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&out).contains("\r\n\r\nok") {
            match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(k)) => out.extend_from_slice(&buf[..k]),
                Ok(Err(e)) => bail!("read: {e} after {:.200}", String::from_utf8_lossy(&out)),
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let (w, text) = tokio::join!(write, read);
    w?;
    let text = text?;
    assert!(text.starts_with("HTTP/1.1 413"), "raw 2 MiB: {text:.300}");
    assert!(
        text.contains("HTTP/1.1 200") && text.ends_with("ok"),
        "the connection did not serve the next request: {text:.600}"
    );
    Ok(())
}

/// Issue 10: admission of new sessions. Per source address, a burst of POSTs then 429 with
/// Retry-After (problem+json); per source, a cap on sessions that have not connected (429); per
/// node, a cap on them (503). A session that connects, is deleted or is reaped frees its slot.
/// Sources are distinct loopback addresses (127.0.0.2, .3), as distinct hosts would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_limits_per_source_and_node() -> Result<()> {
    const LIMITS: &str = "connect_timeout = 2\n\
        [limits]\n\
        posts_per_second_per_source = 1000.0\n\
        post_burst_per_source = 1000.0\n\
        pending_per_source = 3\n\
        pending = 5\n";
    let gw = start(Some(LIMITS), &[]).await?;
    let from = |last: u8| -> Result<Client> {
        let _ = http_client()?; // installs the rustls provider
        Ok(Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()?)
    };
    let (a, b) = (from(2)?, from(3)?);
    let c = http_client()?;
    // A real publisher connects: it no longer counts as pending.
    let media = std::sync::Arc::new(whip_tests::MediaSource::fixture("short-gop.mp4")?);
    let publisher = whip_tests::WhipPublisher::start(
        media,
        whip_tests::PublishOptions::new(gw.whip_url("real")),
    )
    .await?;
    publisher
        .wait_for_frames(5, Duration::from_secs(10))
        .await?;
    assert_eq!(stats(&c, &gw).await?["pending_sessions"].as_u64(), Some(0));

    let mut held = Vec::new();
    for i in 0..3 {
        let r = post_sdp(&a, &gw.whip_url(&format!("a{i}")), None, &publish_offer()).await?;
        assert_eq!(r.status, 201, "source a, POST {i}: {}", r.body);
        held.push(r);
    }
    let r = post_sdp(&a, &gw.whip_url("a3"), None, &publish_offer()).await?;
    assert_problem(&r, 429, "fourth unconnected session from one source");
    let retry = r.header("retry-after").context("429 without Retry-After")?;
    assert!(
        retry.parse::<u32>().is_ok_and(|s| s >= 1),
        "Retry-After {retry:?}"
    );
    for i in 0..2 {
        let r = post_sdp(&b, &gw.whep_url("real"), None, &play_offer()).await?;
        assert_eq!(r.status, 201, "source b, POST {i}: {}", r.body);
    }
    let r = post_sdp(&b, &gw.whep_url("real"), None, &play_offer()).await?;
    assert_problem(&r, 503, "sixth unconnected session on the node");
    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
    assert_eq!(stats(&c, &gw).await?["pending_sessions"].as_u64(), Some(5));

    // A DELETE frees the source's slot at once.
    let loc = held[0].header("location").context("Location")?;
    let r = send(a.delete(format!("{}{loc}", gw.base_url()))).await?;
    assert_eq!(r.status, 200);
    let r = post_sdp(&a, &gw.whip_url("a4"), None, &publish_offer()).await?;
    assert_eq!(r.status, 201, "after a DELETE: {}", r.body);
    // Sessions that never connect are reaped (connect_timeout = 2 s) and free theirs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&c, &gw).await?["pending_sessions"].as_u64() != Some(0) {
        ensure!(
            Instant::now() < deadline,
            "pending sessions were not reaped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = post_sdp(&b, &gw.whep_url("real"), None, &play_offer()).await?;
    assert_eq!(r.status, 201, "after the reaping: {}", r.body);
    publisher.stop().await?;

    // The POST rate: a burst of 3, then 1 per second.
    // The session API's `sessions/new` draws from the same bucket.
    let gw = start(
        Some("[limits]\nposts_per_second_per_source = 1.0\npost_burst_per_source = 3.0\n"),
        &["--app", "ratelimited:s3cret-s3cret-s3cret"],
    )
    .await?;
    let api_new = |client: &Client| {
        client
            .post(format!(
                "{}/v1/apps/ratelimited/sessions/new",
                gw.base_url()
            ))
            .bearer_auth("s3cret-s3cret-s3cret")
            .send()
    };
    for i in 0..2 {
        let r = post_sdp(&a, &gw.whip_url(&format!("r{i}")), None, &publish_offer()).await?;
        assert_eq!(r.status, 201, "burst POST {i}: {}", r.body);
    }
    let r = api_new(&a).await?;
    assert_eq!(r.status(), 201, "the API's POST is the burst's third");
    let r = post_sdp(&a, &gw.whip_url("r3"), None, &publish_offer()).await?;
    assert_problem(&r, 429, "POST over the burst");
    assert_eq!(r.header("retry-after"), Some("1"), "one token a second");
    let r = api_new(&a).await?;
    assert_eq!(r.status(), 429, "sessions/new over the burst");
    assert!(r.headers().contains_key("retry-after"));
    let r = post_sdp(&b, &gw.whip_url("other"), None, &publish_offer()).await?;
    assert_eq!(
        r.status, 201,
        "another source has its own bucket: {}",
        r.body
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post_sdp(&a, &gw.whip_url("r4"), None, &publish_offer()).await?;
    assert_eq!(r.status, 201, "a second later: {}", r.body);
    Ok(())
}
