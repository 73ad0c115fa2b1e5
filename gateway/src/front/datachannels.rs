//! The session/track API's data channel calls, as Calls has them: `datachannels/establish` gives
//! a session its SCTP association (our offer with an application m-line, answered with
//! `renegotiate`; or our answer to the client's offer that has one), `datachannels/new`
//! publishes (`location: local`) or subscribes to (`location: remote`, by `sessionId` +
//! `dataChannelName`) named channels, answering the SCTP stream id the client opens with
//! `createDataChannel(name, {negotiated: true, id})`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::{SessionDescription, session_request_as};
use super::problem::Problem;
use crate::control;
use crate::data_channel::{ChannelOptions, Subscription};
use crate::ids::SessionId;
use crate::negotiation::{Negotiated, Negotiation};

/// Longest channel name: it names a track in the cluster, whose names are at most 255 bytes.
const MAX_NAME_BYTES: usize = 200;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_control)
}

/// One data channel in a `datachannels/*` request or answer (Calls' `DataChannelObject`).
#[derive(Debug, Deserialize, Serialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataChannelObject {
    /// `local` (publish) or `remote` (subscribe to another session's channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The channel's name (a remote one: its name in `sessionId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_channel_name: Option<String>,
    /// Remote channels: the publishing session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The SCTP stream id the client opens the channel with (answered; for `close`, given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    /// Deliver in order (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Retransmissions at most before a message is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
    /// How long a message is retransmitted at most, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    /// Remote channels: whether the subscriber may reply to the publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_reply: Option<bool>,
    /// Remote channels: hold delivery until the subscriber's first message (consumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_ack: Option<bool>,
    /// Why this channel failed (the request as a whole may succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// … in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// The body of the `datachannels/*` calls.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataChannelsRequest {
    /// `establish`: the channel to negotiate with the association (default `server-events`).
    #[serde(default)]
    pub data_channel: Option<DataChannelObject>,
    /// `new` and `close`: the channels, 1 to 64.
    #[serde(default)]
    pub data_channels: Vec<DataChannelObject>,
    /// `establish`: the client's offer with an application m-line, if it sends one.
    #[serde(default)]
    pub session_description: Option<SessionDescription>,
}

/// `POST …/sessions/{id}/datachannels/establish`.
pub async fn establish(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, req): (SessionId, DataChannelsRequest) =
        session_request_as(&node, &app, &id, &headers, body).await?;
    let client_offer = match req.session_description {
        Some(d) if d.kind == "offer" && d.sdp.contains("m=application") => Some(d.sdp),
        Some(_) => {
            return Err(Problem::bad_request(
                "establish takes the client's offer with an application m-line, or no \
                 sessionDescription (then we offer)",
            )
            .code("invalid_session_description"));
        }
        None => None,
    };
    let name = req
        .data_channel
        .and_then(|d| d.data_channel_name)
        .unwrap_or_else(|| "server-events".into());
    let Negotiated::Channel {
        stream_id,
        offer,
        answer,
    } = control::negotiate(
        &node,
        id,
        Negotiation::EstablishChannels {
            name: name.clone(),
            offer: client_offer,
        },
    )
    .await?
    else {
        return Err(Problem::internal("unexpected negotiation result"));
    };
    Ok(Json(serde_json::json!({
        "requiresImmediateRenegotiation": offer.is_some(),
        "dataChannel": {"dataChannelName": name, "id": stream_id},
        "sessionDescription": offer
            .map(|sdp| SessionDescription { kind: "offer".into(), sdp })
            .or(answer.map(|sdp| SessionDescription { kind: "answer".into(), sdp })),
    }))
    .into_response())
}

/// `POST …/sessions/{id}/datachannels/new`: each item published or subscribed; items that
/// cannot be done carry their `errorCode`.
pub async fn new(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, items) = items(&node, &app, &id, &headers, body).await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut result = open(&node, id, &item).await;
        if let (Ok(_), Some(true), Some("remote"), Some(name)) = (
            &result,
            item.can_reply,
            item.location.as_deref(),
            item.data_channel_name.clone(),
        ) {
            let publisher = publisher_of(&item)?;
            result = reply(&node, id, publisher, name, true).await;
        }
        out.push((item, result));
    }
    Ok(answer(out))
}

/// A batch call's session and items (1 to 64).
async fn items(
    node: &AppState,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(SessionId, Vec<DataChannelObject>), Problem> {
    let (id, req): (SessionId, DataChannelsRequest) =
        session_request_as(node, app, id, headers, body).await?;
    if req.data_channels.is_empty() || req.data_channels.len() > 64 {
        return Err(Problem::bad_request("dataChannels: 1 to 64 per request"));
    }
    Ok((id, req.data_channels))
}

/// A batch call's answer: each item with its SCTP stream id, or with the `errorCode` of why it
/// could not be done.
fn answer(results: Vec<(DataChannelObject, Result<u16, Problem>)>) -> Response {
    let out: Vec<DataChannelObject> = results
        .into_iter()
        .map(|(item, result)| match result {
            Ok(stream_id) => DataChannelObject {
                id: Some(stream_id),
                ..item
            },
            Err(p) => DataChannelObject {
                error_code: Some(
                    if p.status == axum::http::StatusCode::NOT_FOUND {
                        "not_found_datachannel_error"
                    } else {
                        "datachannel_error"
                    }
                    .into(),
                ),
                error_description: Some(p.detail),
                ..item
            },
        })
        .collect();
    Json(serde_json::json!({ "dataChannels": out })).into_response()
}

/// `PUT …/sessions/{id}/datachannels/update`: `dataChannels[{location: "remote", sessionId,
/// dataChannelName, canReply}]` on channels the session receives.
pub async fn update(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, items) = items(&node, &app, &id, &headers, body).await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let result = match (publisher_of(&item), item.data_channel_name.clone()) {
            (Ok(publisher), Some(name)) => {
                reply(&node, id, publisher, name, item.can_reply.unwrap_or(false)).await
            }
            (Err(p), _) => Err(p),
            (_, None) => Err(Problem::bad_request("each item needs its dataChannelName")),
        };
        out.push((item, result));
    }
    Ok(answer(out))
}

fn publisher_of(item: &DataChannelObject) -> Result<SessionId, Problem> {
    item.session_id
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Problem::not_found("a remote data channel needs the sessionId that publishes it")
        })
}

/// Sets `canReply` on the session's subscription; its stream id.
async fn reply(
    node: &AppState,
    id: SessionId,
    publisher: SessionId,
    name: String,
    can_reply: bool,
) -> Result<u16, Problem> {
    match control::negotiate(
        node,
        id,
        Negotiation::UpdateChannel {
            publisher,
            name,
            can_reply,
        },
    )
    .await?
    {
        Negotiated::Channel { stream_id, .. } => Ok(stream_id),
        _ => Err(Problem::internal("unexpected negotiation result")),
    }
}

/// `PUT …/sessions/{id}/datachannels/close`: `dataChannels[{id}]`; an id the session does not
/// have comes back with `errorCode`.
pub async fn close(
    State(node): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let (id, req): (SessionId, DataChannelsRequest) =
        session_request_as(&node, &app, &id, &headers, body).await?;
    let stream_ids: Vec<u16> = req.data_channels.iter().filter_map(|c| c.id).collect();
    if stream_ids.is_empty() {
        return Err(Problem::bad_request(
            "name the data channels to close by id",
        ));
    }
    let Negotiated::ChannelsClosed { closed } =
        control::negotiate(&node, id, Negotiation::CloseChannels { stream_ids }).await?
    else {
        return Err(Problem::internal("unexpected negotiation result"));
    };
    let out: Vec<DataChannelObject> = req
        .data_channels
        .into_iter()
        .map(|c| {
            let found = c.id.is_some_and(|i| closed.contains(&i));
            DataChannelObject {
                error_code: (!found).then(|| "not_found_datachannel_error".into()),
                error_description: (!found).then(|| "no open data channel with this id".into()),
                ..c
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "dataChannels": out })).into_response())
}

async fn open(node: &AppState, id: SessionId, item: &DataChannelObject) -> Result<u16, Problem> {
    let Some(name) = item.data_channel_name.clone().filter(|n| valid_name(n)) else {
        return Err(Problem::bad_request(format!(
            "each data channel needs a dataChannelName of 1 to {MAX_NAME_BYTES} bytes without \
             control characters"
        )));
    };
    let options = ChannelOptions {
        ordered: item.ordered.unwrap_or(true),
        max_retransmits: item.max_retransmits,
        max_packet_life_time: item.max_packet_life_time,
    };
    if !options.valid() {
        return Err(Problem::bad_request(
            "maxRetransmits and maxPacketLifeTime cannot both be set",
        ));
    }
    let negotiation = match item.location.as_deref() {
        Some("local") => Negotiation::PublishChannel { name, options },
        Some("remote") => {
            let publisher = publisher_of(item)?;
            let publisher_worker = control::channel_source(node, publisher, &name)
                .await
                .ok_or_else(|| {
                    Problem::not_found(format!(
                        "session {publisher} publishes no data channel {name:?}"
                    ))
                })?;
            let elsewhere = node.cluster.as_ref().map(|c| c.bridge_peer) == Some(publisher_worker);
            if item.can_reply == Some(true) && elsewhere {
                return Err(Problem::unprocessable(
                    "canReply reaches a publisher on this gateway only; this one is on another",
                ));
            }
            Negotiation::SubscribeChannel(Subscription {
                publisher,
                name,
                publisher_worker,
                options,
                wait_for_ack: item.wait_for_ack == Some(true),
            })
        }
        _ => {
            return Err(Problem::bad_request(
                "location must be \"local\" or \"remote\"",
            ));
        }
    };
    match control::negotiate(node, id, negotiation).await? {
        Negotiated::Channel { stream_id, .. } => Ok(stream_id),
        _ => Err(Problem::internal("unexpected negotiation result")),
    }
}
