//! Issue 12: the session/track API answers the way a client written for Cloudflare Calls expects
//! (`../shared/CALLS-API.md`), over raw HTTP as a browser page on another origin sends it: CORS
//! preflights per app, JSON bodies whatever their Content-Type, errors as `{errorCode,
//! errorDescription}`, the routes also without `/v1`. Media through the API: `calls_api.rs`.

use anyhow::{Context, Result};
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, ORIGIN, VARY,
};
use reqwest::{Client, Method, Response};
use serde_json::Value;
use whip_tests::Gateway;
use whip_tests::signaling::http_client;

const SECRET: &str = "0123456789abcdef0123";
const CONFIG: &str = r#"
[[apps]]
id = "open"
secret = "0123456789abcdef0123"

[[apps]]
id = "strict"
secret = "0123456789abcdef0123"
allowed_origins = ["https://good.example"]
"#;

async fn start() -> Result<Gateway> {
    tokio::task::spawn_blocking(|| Gateway::start_with_config(CONFIG, &[]))
        .await
        .context("gateway start panicked")?
}

async fn preflight(c: &Client, url: &str, origin: &str) -> Result<Response> {
    Ok(c.request(Method::OPTIONS, url)
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await?)
}

fn header(r: &Response, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The body of an error answer, checked to be the Calls shape.
async fn calls_error(r: Response, status: u16, code: &str, what: &str) -> Result<Value> {
    assert_eq!(r.status().as_u16(), status, "{what}");
    assert_eq!(
        header(&r, CONTENT_TYPE),
        Some("application/json"),
        "{what}: Calls errors are plain JSON"
    );
    let v: Value = serde_json::from_str(&r.text().await?).context("error body")?;
    assert_eq!(v["errorCode"], code, "{what}: {v}");
    assert!(
        v["errorDescription"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}: no errorDescription: {v}"
    );
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_page_on_another_origin_gets_what_it_expects() -> Result<()> {
    let gw = start().await?;
    let c = http_client()?;
    let base = gw.base_url();

    // Preflights: 204 with CORS for every API route, with and without `/v1`; `Vary: Origin`.
    for path in [
        "/v1/apps/open/sessions/new",
        "/apps/open/sessions/new",
        "/v1/apps/open/sessions/abc/tracks/new",
        "/v1/apps/open/sessions/abc/renegotiate",
        "/v1/apps/open/sessions/abc/tracks/close",
        "/v1/apps/open/sessions/abc",
    ] {
        let r = preflight(&c, &format!("{base}{path}"), "https://page.example").await?;
        assert_eq!(r.status(), 204, "preflight of {path}");
        assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"), "{path}");
        assert!(
            header(&r, ACCESS_CONTROL_ALLOW_HEADERS).is_some_and(|h| h.contains("Authorization")),
            "{path}: Authorization not allowed"
        );
        assert_eq!(header(&r, VARY), Some("Origin"), "{path}");
    }
    // An app that lists its origins: the listed one is echoed, another gets no CORS grant.
    let strict = format!("{base}/v1/apps/strict/sessions/new");
    let r = preflight(&c, &strict, "https://good.example").await?;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("https://good.example")
    );
    let r = preflight(&c, &strict, "https://evil.example").await?;
    assert_eq!(
        header(&r, ACCESS_CONTROL_ALLOW_ORIGIN),
        None,
        "unlisted origin"
    );
    let r = c
        .post(&strict)
        .header(ORIGIN, "https://evil.example")
        .bearer_auth(SECRET)
        .send()
        .await?;
    assert_eq!(
        r.status(),
        201,
        "the secret authorises; CORS only hides the answer"
    );
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), None);

    // JSON whatever the Content-Type: `fetch(url, {body: JSON.stringify(..)})` sends text/plain.
    for (path, content_type) in [
        ("/apps/open/sessions/new", Some("text/plain;charset=UTF-8")),
        ("/v1/apps/open/sessions/new", None),
    ] {
        let mut req = c
            .post(format!("{base}{path}"))
            .header(ORIGIN, "https://page.example")
            .bearer_auth(SECRET)
            .body("{}");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let r = req.send().await?;
        assert_eq!(r.status(), 201, "{path} with {content_type:?}");
        assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        let v: Value = serde_json::from_str(&r.text().await?)?;
        let id = v["sessionId"].as_str().context("no sessionId")?;
        let r = c
            .get(format!("{base}/apps/open/sessions/{id}"))
            .bearer_auth(SECRET)
            .send()
            .await?;
        assert_eq!(r.status(), 200, "the session, found without /v1");
    }

    // Errors as Calls clients read them.
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new"))
        .send()
        .await?;
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    calls_error(r, 401, "unauthorized", "no secret").await?;
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new"))
        .bearer_auth(SECRET)
        .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body("{\"sessionDescription\": ")
        .send()
        .await?;
    calls_error(r, 400, "decoding_error", "truncated JSON").await?;
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new"))
        .bearer_auth(SECRET)
        .body(r#"{"sessionDescription": {"type": "answer", "sdp": "v=0"}}"#)
        .send()
        .await?;
    calls_error(
        r,
        400,
        "invalid_session_description",
        "an answer where an offer belongs",
    )
    .await?;
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new"))
        .bearer_auth(SECRET)
        .body(r#"{"sessionDescription": {"type": "offer", "sdp": "v=0"}, "tracks": [{"location": "local", "trackName": "a"}, {"location": "remote", "sessionId": "x", "trackName": "b"}]}"#)
        .send()
        .await?;
    calls_error(r, 406, "invalid_params", "local and remote tracks mixed").await?;
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new"))
        .bearer_auth(SECRET)
        .send()
        .await?;
    let v: Value = serde_json::from_str(&r.text().await?)?;
    let sid = v["sessionId"].as_str().context("sessionId")?;
    // Calls' query: a correlationId label is taken; a thirdparty (ICE-lite) peer is refused,
    // as two ICE-lite ends never connect.
    let r = c
        .post(format!(
            "{base}/v1/apps/open/sessions/new?correlationId=room-7"
        ))
        .bearer_auth(SECRET)
        .send()
        .await?;
    assert_eq!(r.status(), 201, "sessions/new with a correlationId");
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/new?thirdparty=true"))
        .bearer_auth(SECRET)
        .send()
        .await?;
    calls_error(r, 406, "invalid_params", "a thirdparty session").await?;
    let many: Vec<Value> = (0..65)
        .map(|i| serde_json::json!({"location": "remote", "sessionId": sid, "trackName": format!("t{i}")}))
        .collect();
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/{sid}/tracks/new"))
        .bearer_auth(SECRET)
        .body(serde_json::json!({ "tracks": many }).to_string())
        .send()
        .await?;
    calls_error(r, 406, "invalid_params", "65 tracks in one request").await?;
    // A track name with a control character (they keep the cluster's data tracks apart).
    let r = c
        .post(format!("{base}/v1/apps/open/sessions/{sid}/tracks/new"))
        .bearer_auth(SECRET)
        .body(
            serde_json::json!({"tracks": [{"location": "local", "trackName": "a\u{1}b",
                                           "kind": "audio"}]})
            .to_string(),
        )
        .send()
        .await?;
    calls_error(
        r,
        406,
        "invalid_params",
        "a trackName with a control character",
    )
    .await?;
    let r = c
        .get(format!(
            "{base}/v1/apps/open/sessions/00000000000000000000000000000000"
        ))
        .bearer_auth(SECRET)
        .send()
        .await?;
    calls_error(r, 404, "not_found", "unknown session").await?;
    let r = c
        .put(format!("{base}/v1/apps/open/sessions/nope/tracks/close"))
        .bearer_auth(SECRET)
        .body("{}")
        .send()
        .await?;
    calls_error(r, 404, "not_found", "tracks/close on an unknown session").await?;

    // WHIP and WHEP keep problem+json (RFC 9725) and their own CORS.
    let r = c
        .post(gw.whip_url("x"))
        .header(CONTENT_TYPE, "text/plain")
        .body("v=0")
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    assert_eq!(header(&r, CONTENT_TYPE), Some("application/problem+json"));
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
    Ok(())
}
