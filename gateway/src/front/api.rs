//! The session/track API, shaped like Cloudflare Calls' published API, so an app written for it
//! can point here: an app creates sessions, pushes local tracks from its offers, pulls remote
//! tracks by (session id, track name) through offers we make (`requiresImmediateRenegotiation`),
//! answers them with `renegotiate`, and closes tracks by mid.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::problem::Problem;
use super::{AppState, Peer, admitted, bearer, read_body};
use crate::auth::Verdict;
use crate::control;
use crate::ids::SessionId;
use crate::negotiation::{CloseHow, Negotiated, Negotiation};
use crate::node::Node;
use crate::registry::Role;
use crate::registry::TrackInfo;

/// Longest track name: it names a track in the cluster, whose names are at most 255 bytes.
const MAX_TRACK_NAME_BYTES: usize = 200;

/// A track name a client may choose: not empty, bounded, no control characters (which keep
/// the cluster's data tracks apart from media tracks, `relay_proto::data_track`).
pub(super) fn valid_track_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TRACK_NAME_BYTES && !name.chars().any(char::is_control)
}

/// An SDP offer or answer as the API carries it (`sessionDescription`).
#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct SessionDescription {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP.
    pub sdp: String,
}

/// One track in a `tracks/*` request or answer (Calls' `TrackObject`).
#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrackObject {
    /// `local` (pushed by this session) or `remote` (pulled from another session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The m-line carrying it in this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// The track's name (a remote one: its name in `sessionId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    /// `audio` or `video`: needed for a local track when we make the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Remote tracks: the session that publishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Remote simulcast tracks: `{"preferredRid": "…"}` pulls (and pins) that layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulcast: Option<SimulcastPreference>,
    /// `GET …/sessions/{id}`: `active` or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why this track failed (the request as a whole may succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// … in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Which simulcast layer a remote track's pull wants.
#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SimulcastPreference {
    /// The layer (rid) to pull and pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_rid: Option<String>,
    /// `none` or `asciibetical`: rids in ASCII order are in priority order (f > h > q).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_ordering: Option<String>,
    /// When the publisher has no `preferredRid` layer: `none` (the pull fails in its item) or
    /// `asciibetical` / `nextPriority` (the next layer in priority order is pulled instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid_not_available: Option<String>,
    /// The current OpenAPI's name for `ridNotAvailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid_unavailable_strategy: Option<String>,
}

impl SimulcastPreference {
    /// Whether a missing preferred layer falls back to the next one in priority order.
    fn falls_back(&self) -> bool {
        self.rid_not_available
            .as_deref()
            .or(self.rid_unavailable_strategy.as_deref())
            .is_some_and(|s| s == "asciibetical" || s == "nextPriority")
    }
}

/// The layer a pull gets when the publisher has no `preferred` one: the first after it in
/// ASCII (priority) order, else the last before it.
fn next_priority<'a>(
    layers: impl Iterator<Item = &'a Arc<TrackInfo>>,
    preferred: &str,
) -> Option<Arc<TrackInfo>> {
    let mut by_rid: Vec<&Arc<TrackInfo>> = layers.filter(|l| l.rid.is_some()).collect();
    by_rid.sort_by(|a, b| a.rid.cmp(&b.rid));
    by_rid
        .iter()
        .find(|l| l.rid.as_deref().is_some_and(|r| r > preferred))
        .or_else(|| by_rid.last())
        .map(|l| Arc::clone(l))
}

/// The body of `tracks/new`, `tracks/close`, `renegotiate` and the like.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TracksRequest {
    /// The client's offer or answer, when it sends one.
    #[serde(default)]
    pub session_description: Option<SessionDescription>,
    /// The tracks to push, pull or close.
    #[serde(default)]
    pub tracks: Vec<TrackObject>,
    /// `tracks/close`: close without renegotiating.
    #[serde(default)]
    pub force: bool,
    /// `tracks/new`: push every track the offer sends, named by its MediaStreamTrack id.
    #[serde(default)]
    pub auto_discover: bool,
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct TracksResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_description: Option<SessionDescription>,
    tracks: Vec<TrackObject>,
    requires_immediate_renegotiation: bool,
}

pub(super) fn app_auth(node: &Node, app: &str, headers: &HeaderMap) -> Result<(), Problem> {
    match node.auth.check_app(app, bearer(headers)) {
        Verdict::Allowed => Ok(()),
        _ => Err(Problem::unauthorized()),
    }
}

fn own_session(node: &Node, app: &str, id: &str) -> Result<SessionId, Problem> {
    let missing = || Problem::not_found("no such session");
    let id: SessionId = id.parse().map_err(|_| missing())?;
    match node.registry.api_call(id, app, std::time::Instant::now()) {
        None => Err(missing()),
        Some(Ok(())) => Ok(id),
        Some(Err(wait)) => Err(Problem::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {} API calls per second on this session",
                crate::registry::API_CALLS_PER_SECOND
            ),
        )
        .retry_after(wait.as_secs_f64().ceil().max(1.0) as u32)),
    }
}

pub(super) async fn json_body<T: for<'de> Deserialize<'de> + Default>(
    node: &Node,
    body: Body,
) -> Result<T, Problem> {
    let bytes = read_body(body, node.config.max_body_bytes).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    // Whatever the Content-Type says: Calls reads JSON either way, and its clients post with
    // `fetch(url, {body: JSON.stringify(..)})`, i.e. `text/plain;charset=UTF-8`.
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")).code("decoding_error"))
}

/// `autoDiscover`: a local track for every m-line the offer sends on, named as Calls names them,
/// by the sender's MediaStreamTrack id (`a=msid`), else by its mid.
fn discovered(offer: &str) -> Vec<TrackObject> {
    crate::sdp_info::mlines(offer)
        .into_iter()
        .filter(|m| m.is_media() && !m.rejected())
        .filter(|m| {
            matches!(
                m.direction,
                crate::sdp_info::Direction::SendOnly | crate::sdp_info::Direction::SendRecv
            )
        })
        .filter_map(|m| {
            let mid = m.mid?;
            Some(TrackObject {
                location: Some("local".into()),
                track_name: Some(
                    m.msid_track
                        .filter(|n| valid_track_name(n))
                        .unwrap_or_else(|| mid.clone()),
                ),
                mid: Some(mid),
                ..TrackObject::default()
            })
        })
        .collect()
}

/// Calls takes 1 to 64 tracks per request.
fn check_track_count(tracks: &[TrackObject]) -> Result<(), Problem> {
    const MAX_TRACKS: usize = 64;
    if tracks.is_empty() {
        return Err(Problem::bad_request("tracks must not be empty"));
    }
    if tracks.len() > MAX_TRACKS {
        return Err(Problem::bad_request(format!(
            "at most {MAX_TRACKS} tracks per request ({} given)",
            tracks.len()
        )));
    }
    Ok(())
}

/// The prelude of every call on one session: the app's secret, the session (of this app), the
/// body.
async fn session_request(
    node: &Node,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(SessionId, TracksRequest), Problem> {
    session_request_as(node, app, id, headers, body).await
}

/// [`session_request`] for a body of another shape.
pub(super) async fn session_request_as<T: for<'de> Deserialize<'de> + Default>(
    node: &Node,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(SessionId, T), Problem> {
    app_auth(node, app, headers)?;
    let id = own_session(node, app, id)?;
    Ok((id, json_body(node, body).await?))
}

fn description(kind: &str, sdp: String) -> Option<SessionDescription> {
    Some(SessionDescription {
        kind: kind.into(),
        sdp,
    })
}

fn local(mid: &str, name: &str, session: SessionId) -> TrackObject {
    TrackObject {
        location: Some("local".into()),
        mid: Some(mid.into()),
        track_name: Some(name.into()),
        session_id: Some(session.to_string()),
        ..TrackObject::default()
    }
}

fn is_remote(t: &TrackObject) -> bool {
    t.location.as_deref() == Some("remote")
}

/// Look up requested remote tracks, here or (a session on another gateway of the cluster) in the
/// cluster's directory; unknown ones come back with an error code.
async fn resolve_remote(
    node: &Node,
    requested: &[TrackObject],
) -> (
    Vec<(TrackObject, std::sync::Arc<crate::registry::TrackInfo>)>,
    Vec<TrackObject>,
) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    // Each session elsewhere is asked of the cluster once per request.
    let mut elsewhere: std::collections::HashMap<
        SessionId,
        Option<Vec<std::sync::Arc<crate::registry::TrackInfo>>>,
    > = std::collections::HashMap::new();
    for t in requested {
        let sid = t
            .session_id
            .as_deref()
            .and_then(|s| s.parse::<SessionId>().ok());
        let mut track = match (sid, &t.track_name) {
            (Some(sid), Some(name)) => node.registry.track(sid, name),
            _ => None,
        };
        if let (None, Some(sid), Some(name)) = (&track, sid, &t.track_name)
            && node.registry.session(sid).is_none()
        {
            if let std::collections::hash_map::Entry::Vacant(e) = elsewhere.entry(sid) {
                e.insert(crate::control::session_tracks_elsewhere(node, sid).await);
            }
            track = elsewhere
                .get(&sid)
                .and_then(Option::as_ref)
                .and_then(|tracks| tracks.iter().find(|i| i.name == *name).cloned());
        }
        let preferred = t
            .simulcast
            .as_ref()
            .and_then(|s| s.preferred_rid.as_deref());
        let track = match (track, preferred) {
            (Some(track), Some(rid)) => {
                let layer = node.registry.session(track.session).and_then(|e| {
                    let group = || {
                        e.pushed.iter().filter(|l| {
                            l.layer_group.is_some() && l.layer_group == track.layer_group
                        })
                    };
                    group()
                        .find(|l| l.rid.as_deref() == Some(rid))
                        .cloned()
                        .or_else(|| {
                            t.simulcast
                                .as_ref()
                                .filter(|s| s.falls_back())
                                .and_then(|_| next_priority(group(), rid))
                        })
                });
                if layer.is_none() {
                    let mut t = t.clone();
                    t.error_code = Some("not_found_track_error".into());
                    t.error_description =
                        Some(format!("the track has no simulcast layer with rid {rid:?}"));
                    missing.push(t);
                    continue;
                }
                layer
            }
            (track, _) => track,
        };
        match track {
            Some(track) => found.push((t.clone(), track)),
            None => {
                let mut t = t.clone();
                t.error_code = Some("not_found_track_error".into());
                t.error_description =
                    Some("no such track: sessionId and trackName must name a pushed track".into());
                missing.push(t);
            }
        }
    }
    (found, missing)
}

/// `sessions/new`'s query: Calls' `correlationId` (a label the app chooses, logged with the
/// session) and `thirdparty` (the peer is ICE-lite, e.g. another SFU).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewSessionQuery {
    correlation_id: Option<String>,
    thirdparty: Option<String>,
}

/// `POST /v1/apps/{app}/sessions/new`. Without a body: an empty session. With an offer: the
/// session pushes the offer's tracks, or — when `tracks` lists remote tracks with the mids of
/// the offer's recvonly m-lines — pulls those.
pub async fn new_session(
    State(node): State<AppState>,
    Path(app): Path<String>,
    query: Result<axum::extract::Query<NewSessionQuery>, axum::extract::rejection::QueryRejection>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let query = query
        .map_err(|e| Problem::bad_request(format!("query: {e}")))?
        .0;
    if query.thirdparty.as_deref().is_some_and(|t| t == "true") {
        // Two ICE-lite ends never connect: neither sends a connectivity check.
        return Err(Problem::unprocessable(
            "thirdparty sessions (an ICE-lite peer) are not supported: this gateway is ICE-lite too",
        ));
    }
    let correlation = query.correlation_id.unwrap_or_default();
    if correlation.len() > 256 || correlation.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "correlationId: at most 256 bytes, no control characters",
        ));
    }
    let req: TracksRequest = json_body(&node, body).await?;
    // Admission as for a WHIP/WHEP POST: an API session is a PeerConnection waiting for ICE too.
    let create = create_session(&node, app.clone(), req);
    let (id, response) = admitted(&node, &peer, create, |(id, _)| *id).await?;
    tracing::info!(session = %id, %app, correlation_id = %correlation, "API session created");
    Ok(response)
}

async fn create_session(
    node: &Node,
    app: String,
    req: TracksRequest,
) -> Result<(SessionId, Response), Problem> {
    let Some(desc) = req.session_description else {
        let id = control::create_empty(node, app)?;
        let resp = TracksResponse {
            session_id: Some(id.to_string()),
            ..TracksResponse::default()
        };
        return Ok((id, (StatusCode::CREATED, Json(resp)).into_response()));
    };
    if desc.kind != "offer" {
        return Err(
            Problem::bad_request("sessionDescription.type must be \"offer\"")
                .code("invalid_session_description"),
        );
    }
    if !req.tracks.iter().any(is_remote) {
        let c = control::push(node, None, Role::Api, Some(app), &desc.sdp)?;
        let resp = TracksResponse {
            session_id: Some(c.id.to_string()),
            session_description: description("answer", c.answer),
            tracks: c
                .tracks
                .iter()
                .map(|t| local(&t.mid, &t.name, c.id))
                .collect(),
            requires_immediate_renegotiation: false,
        };
        return Ok((c.id, (StatusCode::CREATED, Json(resp)).into_response()));
    }
    if !req.tracks.iter().all(is_remote) {
        return Err(Problem::unprocessable(
            "a new session either pushes its offer's tracks or pulls remote ones, not both",
        ));
    }
    let (found, mut results) = resolve_remote(node, &req.tracks).await;
    let wanted: Vec<_> = found
        .iter()
        .filter_map(|(t, track)| Some((t.mid.clone()?, track.clone())))
        .collect();
    if wanted.is_empty() {
        return Err(Problem::not_found(
            "none of the requested remote tracks exists (each needs sessionId, trackName and mid)",
        ));
    }
    let c = control::pull_tracks(node, app, &desc.sdp, wanted)?;
    // `preferredRid` pins the layer, the top one included (the pull already starts on it).
    if let Some(entry) = node.registry.session(c.id) {
        for (t, _) in &found {
            if let (Some(mid), Some(rid)) = (
                &t.mid,
                t.simulcast.as_ref().and_then(|s| s.preferred_rid.clone()),
            ) {
                let (reply, _) = tokio::sync::oneshot::channel();
                node.send(
                    entry.worker,
                    crate::mailbox::WorkerMsg::Command(crate::command::Command::SelectLayer {
                        session: c.id,
                        mid: Some(mid.clone()),
                        rid: Some(rid),
                        reply,
                    }),
                );
            }
        }
    }
    results.extend(found.into_iter().map(|(t, _)| t));
    let resp = TracksResponse {
        session_id: Some(c.id.to_string()),
        session_description: description("answer", c.answer),
        tracks: results,
        requires_immediate_renegotiation: false,
    };
    Ok((c.id, (StatusCode::CREATED, Json(resp)).into_response()))
}

/// What session `id`'s worker shows of it.
async fn describe(node: &Node, id: SessionId) -> Result<crate::session::SessionView, Problem> {
    let entry = node
        .registry
        .session(id)
        .ok_or_else(|| Problem::not_found("no such session"))?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    node.send(
        entry.worker,
        crate::mailbox::WorkerMsg::Command(crate::command::Command::Describe {
            session: id,
            reply,
        }),
    );
    rx.await
        .ok()
        .flatten()
        .ok_or_else(|| Problem::not_found("no such session"))
}

/// Orange Meets names a transceiver by its track: `mid: "#<trackName>"` is the m-line of the
/// session's pushed track of that name, or of its pull of a track of that name. Such mids are
/// replaced by the real ones; a name that matches nothing is left, and fails as an unknown mid.
async fn resolve_named_mids(
    node: &Node,
    id: SessionId,
    tracks: &mut [TrackObject],
) -> Result<(), Problem> {
    if !tracks
        .iter()
        .any(|t| t.mid.as_deref().is_some_and(|m| m.starts_with('#')))
    {
        return Ok(());
    }
    let view = describe(node, id).await?;
    for t in tracks.iter_mut() {
        let Some(name) = t.mid.as_deref().and_then(|m| m.strip_prefix('#')) else {
            continue;
        };
        let mid = view
            .pushed
            .iter()
            .find(|(_, n)| n == name)
            .map(|(mid, _)| *mid)
            .or_else(|| {
                view.pulls
                    .iter()
                    .find(|p| p.source.as_ref().is_some_and(|(_, n)| n == name))
                    .map(|p| p.mid)
            });
        if let Some(mid) = mid {
            t.mid = Some(mid.to_string());
        }
    }
    Ok(())
}

/// `GET /v1/apps/{app}/sessions/{id}`: the session's pushed tracks.
pub async fn get_session(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let id = own_session(&node, &app, &id)?;
    let view = describe(&node, id).await?;
    let status = |active: bool| Some(if active { "active" } else { "inactive" }.to_string());
    let pushed = view.pushed.iter().map(|(mid, name)| TrackObject {
        status: status(view.connected),
        ..local(mid, name, id)
    });
    let pulled = view.pulls.iter().map(|p| TrackObject {
        location: Some("remote".into()),
        mid: Some(p.mid.to_string()),
        session_id: p.source.as_ref().map(|(s, _)| s.to_string()),
        track_name: p.source.as_ref().map(|(_, n)| n.clone()),
        status: status(view.connected && p.source.is_some()),
        ..TrackObject::default()
    });
    let tracks: Vec<TrackObject> = pushed.chain(pulled).collect();
    let channels: Vec<serde_json::Value> = view
        .channels
        .iter()
        .map(|(publisher, name, stream_id)| {
            let status = if view.connected {
                "active"
            } else {
                "initializing"
            };
            match publisher {
                None => serde_json::json!({"location": "local", "dataChannelName": name,
                    "id": stream_id, "status": status}),
                Some(p) => serde_json::json!({"location": "remote", "sessionId": p.to_string(),
                    "dataChannelName": name, "id": stream_id, "status": status}),
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "sessionId": id.to_string(),
        "tracks": tracks,
        "dataChannels": channels,
    }))
    .into_response())
}

/// `POST …/tracks/new`: local tracks with the client's offer (answered at once), or remote
/// tracks without one (we offer; the client answers with `renegotiate`).
pub async fn new_tracks(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, mut req) = session_request(&node, &app, &id, &headers, body).await?;
    if req.auto_discover
        && req.tracks.is_empty()
        && let Some(desc) = &req.session_description
    {
        req.tracks = discovered(&desc.sdp);
    }
    check_track_count(&req.tracks)?;
    if req.tracks.iter().all(is_remote) {
        if req.session_description.is_some() {
            return Err(Problem::unprocessable(
                "remote tracks are offered by the server: send them without sessionDescription",
            ));
        }
        let (found, mut results) = resolve_remote(&node, &req.tracks).await;
        if found.is_empty() {
            // A batch call: 200, every item saying why; nothing to negotiate.
            let resp = TracksResponse {
                tracks: results,
                requires_immediate_renegotiation: false,
                ..TracksResponse::default()
            };
            return Ok(Json(resp).into_response());
        }
        let tracks = found.iter().map(|(_, t)| t.clone()).collect();
        let Negotiated::Offer { sdp, pulls, .. } =
            control::negotiate(&node, id, Negotiation::Pull { tracks }).await?
        else {
            return Err(Problem::internal("expected an offer"));
        };
        for ((mut t, _), (mid, _)) in found.into_iter().zip(pulls) {
            t.mid = Some(mid.to_string());
            results.push(t);
        }
        let resp = TracksResponse {
            session_description: description("offer", sdp),
            tracks: results,
            requires_immediate_renegotiation: true,
            ..TracksResponse::default()
        };
        return Ok(Json(resp).into_response());
    }
    if let Some(bad) = req
        .tracks
        .iter()
        .filter_map(|t| t.track_name.as_deref())
        .find(|n| !valid_track_name(n))
    {
        return Err(Problem::bad_request(format!(
            "trackName {bad:?}: 1 to {MAX_TRACK_NAME_BYTES} bytes, no control characters"
        )));
    }
    if req.tracks.iter().any(is_remote) {
        return Err(Problem::unprocessable(
            "push local tracks and pull remote ones in separate requests",
        ));
    }
    let Some(desc) = req.session_description else {
        return receive_local(&node, id, req.tracks).await;
    };
    if desc.kind != "offer" {
        return Err(
            Problem::bad_request("local tracks take a sessionDescription of type offer")
                .code("invalid_session_description"),
        );
    }
    let names = req
        .tracks
        .iter()
        .filter_map(|t| Some((t.mid.clone()?, t.track_name.clone()?)))
        .collect();
    let Negotiated::Answer { sdp, pushed } = control::negotiate(
        &node,
        id,
        Negotiation::Offer {
            sdp: desc.sdp,
            names,
        },
    )
    .await?
    else {
        return Err(Problem::internal("expected an answer"));
    };
    let resp = TracksResponse {
        session_description: description("answer", sdp),
        tracks: pushed.iter().map(|t| local(&t.mid, &t.name, id)).collect(),
        requires_immediate_renegotiation: false,
        ..TracksResponse::default()
    };
    Ok(Json(resp).into_response())
}

/// `PUT …/renegotiate`: the client's answer to our last offer.
pub async fn renegotiate(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, req) = session_request(&node, &app, &id, &headers, body).await?;
    let Some(desc) = req.session_description.filter(|d| d.kind == "answer") else {
        return Err(
            Problem::bad_request("renegotiate takes a sessionDescription of type answer")
                .code("invalid_session_description"),
        );
    };
    control::negotiate(&node, id, Negotiation::Answer { sdp: desc.sdp }).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

/// `PUT …/tracks/close`: stop the listed mids; an offer comes back when the client must
/// renegotiate. Pushed tracks that close end for everyone pulling them.
pub async fn close_tracks(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, mut req) = session_request(&node, &app, &id, &headers, body).await?;
    resolve_named_mids(&node, id, &mut req.tracks).await?;
    let mids: Vec<String> = req.tracks.iter().filter_map(|t| t.mid.clone()).collect();
    if mids.is_empty() {
        return Err(Problem::bad_request("name the tracks to close by mid"));
    }
    let how = match (req.force, req.session_description) {
        (true, _) => CloseHow::Force,
        (false, Some(d)) if d.kind == "offer" => CloseHow::ClientOffer(d.sdp),
        (false, Some(_)) => {
            return Err(
                Problem::bad_request("tracks/close takes the client's offer")
                    .code("invalid_session_description"),
            );
        }
        // Not Calls' flow (its clients send their offer), kept for clients of ours that let
        // the gateway offer: the answer comes with `renegotiate`.
        (false, None) => CloseHow::ServerOffer,
    };
    let Negotiated::Closed {
        offer,
        answer,
        unknown,
    } = control::negotiate(
        &node,
        id,
        Negotiation::Close {
            mids: mids.clone(),
            how,
        },
    )
    .await?
    else {
        return Err(Problem::internal("unexpected negotiation result"));
    };
    let tracks = mids
        .iter()
        .map(|m| {
            let missing = unknown.contains(m);
            TrackObject {
                mid: Some(m.clone()),
                error_code: missing.then(|| "close_track_error".into()),
                error_description: missing.then(|| format!("no open track on mid {m}")),
                ..TrackObject::default()
            }
        })
        .collect();
    let resp = TracksResponse {
        requires_immediate_renegotiation: offer.is_some(),
        session_description: match (offer, answer) {
            (Some(sdp), _) => description("offer", sdp),
            (None, Some(sdp)) => description("answer", sdp),
            (None, None) => None,
        },
        tracks,
        ..TracksResponse::default()
    };
    Ok(Json(resp).into_response())
}

/// Local tracks without the client's offer: we offer a recvonly m-line per track (Calls:
/// `requiresImmediateRenegotiation`); the tracks exist once `renegotiate` brings the answer.
async fn receive_local(
    node: &Node,
    id: SessionId,
    requested: Vec<TrackObject>,
) -> Result<Response, Problem> {
    let mut tracks = Vec::with_capacity(requested.len());
    for t in &requested {
        let kind = match t.kind.as_deref() {
            Some("audio") => str0m::media::MediaKind::Audio,
            Some("video") => str0m::media::MediaKind::Video,
            _ => {
                return Err(Problem::bad_request(
                    "a local track without an offer needs kind \"audio\" or \"video\"",
                ));
            }
        };
        let Some(name) = t.track_name.clone() else {
            return Err(Problem::bad_request("each local track needs a trackName"));
        };
        tracks.push((name, kind));
    }
    let Negotiated::Receiving { sdp, pushes } =
        control::negotiate(node, id, Negotiation::Receive { tracks }).await?
    else {
        return Err(Problem::internal("expected an offer"));
    };
    let resp = TracksResponse {
        session_description: description("offer", sdp),
        tracks: pushes
            .iter()
            .map(|(mid, name, kind)| TrackObject {
                kind: Some(if kind.is_audio() { "audio" } else { "video" }.into()),
                ..local(mid, name, id)
            })
            .collect(),
        requires_immediate_renegotiation: true,
        ..TracksResponse::default()
    };
    Ok(Json(resp).into_response())
}

/// `PUT …/sessions/{id}/tracks/update`: remote tracks by `mid`, each re-pointed at the track
/// `(sessionId, trackName)` (a transceiver re-used for another track of its kind) and/or pinned
/// to `simulcast.preferredRid`. Items that cannot be done carry `update_track_error`; no SDP.
pub async fn update_tracks(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, mut req) = session_request(&node, &app, &id, &headers, body).await?;
    check_track_count(&req.tracks)?;
    resolve_named_mids(&node, id, &mut req.tracks).await?;
    let worker = node
        .registry
        .session(id)
        .ok_or_else(|| Problem::not_found("no such session"))?
        .worker;
    let mut results = Vec::with_capacity(req.tracks.len());
    for t in req.tracks {
        let outcome = update_one(&node, id, worker, &t).await;
        results.push(match outcome {
            Ok(()) => t,
            Err(p) => TrackObject {
                error_code: Some("update_track_error".into()),
                error_description: Some(p.detail),
                ..t
            },
        });
    }
    Ok(Json(TracksResponse {
        tracks: results,
        ..TracksResponse::default()
    })
    .into_response())
}

async fn update_one(
    node: &Node,
    id: SessionId,
    worker: usize,
    t: &TrackObject,
) -> Result<(), Problem> {
    let Some(mid) = t.mid.clone() else {
        return Err(Problem::bad_request("each track needs the mid to update"));
    };
    if t.session_id.is_some() || t.track_name.is_some() {
        let (found, _) = resolve_remote(node, std::slice::from_ref(t)).await;
        let Some((_, track)) = found.into_iter().next() else {
            return Err(Problem::not_found("no such remote track"));
        };
        let update = Negotiation::Update {
            mid: mid.clone(),
            track,
        };
        control::negotiate(node, id, update).await?;
    }
    if let Some(rid) = t.simulcast.as_ref().and_then(|s| s.preferred_rid.clone()) {
        control::select_layer(node, worker, id, Some(mid), Some(rid)).await?;
    }
    Ok(())
}

/// `DELETE /v1/apps/{app}/sessions/{id}` (an addition to the Calls shape): end the session.
pub async fn delete_session(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    app_auth(&node, &app, &headers)?;
    let id = own_session(&node, &app, &id)?;
    control::close(&node, id);
    Ok(super::empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn layers(rids: &[&str]) -> Vec<Arc<TrackInfo>> {
        let registry = Registry::default();
        let group = registry.next_track_id();
        rids.iter()
            .map(|rid| {
                Arc::new(
                    TrackInfo::new(
                        registry.next_track_id(),
                        SessionId::random(),
                        format!("video.{rid}"),
                        str0m::media::MediaKind::Video,
                        str0m::media::Mid::from("0"),
                        vec![],
                        0,
                    )
                    .layer(rid.to_string(), group),
                )
            })
            .collect()
    }

    fn rid(t: Option<Arc<TrackInfo>>) -> Option<String> {
        t.and_then(|t| t.rid.clone())
    }

    #[test]
    fn a_missing_preferred_layer_falls_to_the_next_in_ascii_order() {
        let l = layers(&["q", "f", "h"]);
        // "g" is missing: "h" comes next (f > g > h > q in priority).
        assert_eq!(rid(next_priority(l.iter(), "g")), Some("h".into()));
        // Nothing after "z": the last one.
        assert_eq!(rid(next_priority(l.iter(), "z")), Some("q".into()));
        assert_eq!(rid(next_priority(layers(&[]).iter(), "h")), None);
        let pref = |s: &str| SimulcastPreference {
            rid_not_available: Some(s.into()),
            ..SimulcastPreference::default()
        };
        assert!(pref("asciibetical").falls_back());
        assert!(!pref("none").falls_back());
        let current = SimulcastPreference {
            rid_unavailable_strategy: Some("nextPriority".into()),
            ..SimulcastPreference::default()
        };
        assert!(current.falls_back());
    }
}
