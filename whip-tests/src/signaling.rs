//! The HTTP half of WHIP and WHEP as a client sees it: POST an SDP offer, get 201 + answer +
//! `Location`, DELETE that resource when done. Both protocols are identical at this level.

use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Client, StatusCode, Url};

/// The server said something other than what the protocol requires (kept as a typed error so
/// tests can assert on the status, e.g. WHEP's 409 before any publisher).
#[derive(Debug, Clone)]
pub struct HttpStatusError {
    /// What was being done, e.g. "POST offer".
    pub action: &'static str,
    /// Status code received.
    pub status: u16,
    /// Response body (truncated), often the server's reason.
    pub body: String,
    /// `Retry-After`, if the server sent one.
    pub retry_after: Option<String>,
}

impl std::fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: HTTP {}", self.action, self.status)?;
        if !self.body.is_empty() {
            write!(f, ": {}", self.body)?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpStatusError {}

/// The HTTP status of an error chain, if it came from [`HttpStatusError`].
pub fn http_status(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|e| e.downcast_ref::<HttpStatusError>())
        .map(|e| e.status)
}

/// Builds the HTTP client used for signaling.
///
/// The workspace builds reqwest with rustls but without a built-in crypto provider, so one has to
/// be installed process-wide before the first client exists, even for plain http URLs.
pub fn http_client() -> Result<Client> {
    client_builder().build().context("building HTTP client")
}

/// As [`http_client`], sending `name: value` with every request.
pub fn http_client_with_header(name: &'static str, value: &str) -> Result<Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, value.parse().context("header value")?);
    client_builder()
        .default_headers(headers)
        .build()
        .context("building HTTP client")
}

/// As [`http_client`], its connections from local address `local` (a client in a test network
/// whose other addresses must not be used).
pub fn http_client_from(local: std::net::IpAddr) -> Result<Client> {
    client_builder()
        .local_address(local)
        .build()
        .context("building HTTP client")
}

/// An offer with one send-only video m-line from a fresh str0m `Rtc`: enough for a gateway to
/// create a WHIP session and answer, for tests that read the answer or see which gateway gave
/// it. Nothing connects.
pub fn bare_video_offer() -> Result<String> {
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().context("an offer")?;
    Ok(offer.to_sdp_string())
}

fn client_builder() -> reqwest::ClientBuilder {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if something else installed one first, which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
    Client::builder()
        // OBS gives up after 8 s; a test client should not be more patient than real ones.
        .timeout(Duration::from_secs(8))
        .user_agent(concat!("whip-tests/", env!("CARGO_PKG_VERSION")))
}

/// A session resource created by a successful POST.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Absolute URL of the session (the `Location`, resolved against the endpoint).
    pub url: Url,
    /// `ETag` of the session, if the server sent one (needed for ICE restarts).
    pub etag: Option<String>,
    client: Client,
    token: Option<String>,
}

impl Resource {
    /// Ends the session. Returns the status; anything but 200 is an error, because the WHIP RFC
    /// says DELETE answers 200.
    pub async fn delete(&self) -> Result<u16> {
        let req = with_bearer(self.client.delete(self.url.clone()), self.token.as_deref());
        let resp = req
            .send()
            .await
            .with_context(|| format!("DELETE {}", self.url))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(status_error("DELETE session", resp).await.into());
        }
        Ok(status.as_u16())
    }

    /// An ICE restart (RFC 9725 §4.3): PATCHes our new credentials with `If-Match` (the ETag we
    /// hold), insists on 200, keeps the new ETag and returns the server's new credentials. On a
    /// connection of its own: a restart usually follows a network change, which leaves the old
    /// keep-alive connection dead.
    pub async fn ice_restart(&mut self, ours: &str0m::IceCreds) -> Result<str0m::IceCreds> {
        let etag = self.etag.clone().context("the server sent no ETag")?;
        let req = http_client()?
            .patch(self.url.clone())
            .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
            .header(
                reqwest::header::IF_MATCH,
                format!("\"{}\"", etag.trim_matches('"')),
            )
            .body(format!(
                "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                ours.ufrag, ours.pass
            ));
        let resp = with_bearer(req, self.token.as_deref())
            .send()
            .await
            .with_context(|| format!("PATCH {}", self.url))?;
        if resp.status() != StatusCode::OK {
            return Err(status_error("ICE restart", resp).await.into());
        }
        self.etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await?;
        let line = |key: &str| {
            sdp_attribute(&body, key)
                .map(str::to_string)
                .with_context(|| format!("no {key} in the ICE restart answer: {body}"))
        };
        Ok(str0m::IceCreds {
            ufrag: line("ice-ufrag")?,
            pass: line("ice-pwd")?,
        })
    }
}

/// `req` with `Authorization: Bearer …` when there is a token.
fn with_bearer(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
        None => req,
    }
}

/// The value of the first `a=<key>:` line of an SDP or SDP fragment (`key` like `ice-ufrag`).
pub fn sdp_attribute<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| {
        l.trim()
            .strip_prefix("a=")?
            .strip_prefix(key)?
            .strip_prefix(':')
    })
}

/// What the endpoint answered.
#[derive(Debug)]
pub struct Answer {
    /// The SDP answer text.
    pub sdp: String,
    /// The session to DELETE later.
    pub resource: Resource,
}

/// POSTs `offer` to a WHIP or WHEP endpoint and insists on 201 with an SDP answer and a
/// `Location`, as RFC 9725 requires (OBS accepts nothing else either).
pub async fn post_offer(
    client: &Client,
    endpoint: &str,
    token: Option<&str>,
    offer: &str,
) -> Result<Answer> {
    let url = Url::parse(endpoint).with_context(|| format!("invalid endpoint URL {endpoint:?}"))?;
    let req = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.to_owned());
    let resp = with_bearer(req, token)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if resp.status() != StatusCode::CREATED {
        return Err(status_error("POST offer", resp).await.into());
    }
    let location = resp
        .headers()
        .get(LOCATION)
        .context("201 without a Location header")?
        .to_str()
        .context("Location is not ASCII")?
        .to_owned();
    let resource_url = url
        .join(&location)
        .with_context(|| format!("unusable Location {location:?}"))?;
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sdp = resp.text().await.context("reading SDP answer")?;
    if !content_type.starts_with("application/sdp") {
        anyhow::bail!("answer has Content-Type {content_type:?}, expected application/sdp");
    }
    Ok(Answer {
        sdp,
        resource: Resource {
            url: resource_url,
            etag,
            client: client.clone(),
            token: token.map(str::to_owned),
        },
    })
}

/// The session/track API's way of playing: `POST {app_url}/sessions/new` with the offer and
/// one remote track on the offer's m-line `mid` (`simulcast.preferredRid` when given). The
/// resource is the API session (`DELETE` ends it).
pub async fn post_api_offer(
    client: &Client,
    app_url: &str,
    token: Option<&str>,
    offer: &str,
    track: &ApiTrack,
    mid: &str,
) -> Result<Answer> {
    let url = Url::parse(&format!("{app_url}/sessions/new"))
        .with_context(|| format!("invalid app URL {app_url:?}"))?;
    let mut remote = serde_json::json!({
        "location": "remote",
        "sessionId": track.session_id,
        "trackName": track.track_name,
        "mid": mid,
    });
    if let Some(rid) = &track.preferred_rid {
        remote["simulcast"] = serde_json::json!({ "preferredRid": rid });
    }
    let body = serde_json::json!({
        "sessionDescription": { "type": "offer", "sdp": offer },
        "tracks": [remote],
    });
    let req = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let resp = with_bearer(req, token)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if resp.status() != StatusCode::CREATED {
        return Err(status_error("POST sessions/new", resp).await.into());
    }
    let text = resp.text().await.context("reading sessions/new")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("sessions/new: not JSON")?;
    let sdp = v["sessionDescription"]["sdp"]
        .as_str()
        .context("sessions/new: no answer")?
        .to_owned();
    let id = v["sessionId"]
        .as_str()
        .context("sessions/new: no sessionId")?;
    let resource_url = Url::parse(&format!("{app_url}/sessions/{id}"))?;
    Ok(Answer {
        sdp,
        resource: Resource {
            url: resource_url,
            etag: None,
            client: client.clone(),
            token: token.map(str::to_owned),
        },
    })
}

/// A remote track to pull through the session/track API.
#[derive(Debug, Clone)]
pub struct ApiTrack {
    /// The publishing session's id.
    pub session_id: String,
    /// The track's name in that session.
    pub track_name: String,
    /// The simulcast layer wanted, by rid (Calls' `simulcast.preferredRid`).
    pub preferred_rid: Option<String>,
}

async fn status_error(action: &'static str, resp: reqwest::Response) -> HttpStatusError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.text().await.unwrap_or_default();
    if body.len() > 500 {
        let cut = (0..=500)
            .rev()
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(0);
        body.truncate(cut);
    }
    HttpStatusError {
        action,
        status,
        body,
        retry_after,
    }
}
