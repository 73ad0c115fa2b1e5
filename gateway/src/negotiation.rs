//! Renegotiation requests and their answers (the session/track API): a client offer that pushes
//! more tracks, a server offer that adds pulled tracks, the client's answer to it, closing
//! tracks. The engine carries them out (`engine::negotiation`).

use std::sync::Arc;

use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::media::{MediaKind, Mid};

use crate::ids::SessionId;
use crate::peer;
use crate::registry::TrackInfo;

/// What a client asked for.
#[derive(Debug)]
pub enum Negotiation {
    /// A client offer: its new sending m-lines become pushed tracks, named by mid → name.
    Offer {
        sdp: String,
        names: Vec<(String, String)>,
    },
    /// Add sendonly m-lines pulling these tracks; we make the offer.
    Pull { tracks: Vec<Arc<TrackInfo>> },
    /// Add recvonly m-lines for tracks the client will push, named (Calls: local tracks without
    /// an offer); we make the offer, the tracks exist once the client answers.
    Receive { tracks: Vec<(String, MediaKind)> },
    /// The client's answer to our pending offer.
    Answer { sdp: String },
    /// Calls' `datachannels/establish`: the session's SCTP association, with the negotiated
    /// channel `name` (e.g. "server-events") on it; we offer the application m-line unless the
    /// session has one.
    EstablishChannels { name: String, offer: Option<String> },
    /// Publish a data channel by this name (Calls: `location: local`).
    PublishChannel {
        name: String,
        options: crate::data_channel::ChannelOptions,
    },
    /// Receive another session's channel.
    SubscribeChannel(crate::data_channel::Subscription),
    /// Calls' `canReply` on the session's subscription to `publisher`'s channel `name`.
    UpdateChannel {
        publisher: SessionId,
        name: String,
        can_reply: bool,
    },
    /// Close the session's data channels with these SCTP stream ids; returns those it had.
    CloseChannels { stream_ids: Vec<u16> },
    /// Re-use a pulled m-line for another track of its kind (Calls' `tracks/update`); no SDP.
    Update { mid: String, track: Arc<TrackInfo> },
    /// Stop these m-lines (pushed or pulled); unknown mids are reported, not refused.
    Close { mids: Vec<String>, how: CloseHow },
}

/// How a `tracks/close` renegotiates (Calls: `force`, and whether the client sent an offer).
#[derive(Debug)]
pub enum CloseHow {
    /// We stop the m-lines and offer; the client answers with `renegotiate`.
    ServerOffer,
    /// The client stopped its transceivers and offers; we answer.
    ClientOffer(String),
    /// No SDP at all (`force: true`): the media stops; the m-lines stay until the next
    /// negotiation.
    Force,
}

/// What the client gets back.
#[derive(Debug)]
pub enum Negotiated {
    Answer {
        sdp: String,
        pushed: Vec<Arc<TrackInfo>>,
    },
    Offer {
        sdp: String,
        pulls: Vec<(Mid, Arc<TrackInfo>)>,
        ended: Vec<Arc<TrackInfo>>,
    },
    Done {
        ended: Vec<Arc<TrackInfo>>,
    },
    /// Our offer for tracks the client will push: their mids, names and kinds.
    Receiving {
        sdp: String,
        pushes: Vec<(Mid, String, MediaKind)>,
    },
    /// A data channel opened on the session: its SCTP stream id, and our offer when the session
    /// needs its application m-line negotiated first, or our answer to the client's offer.
    Channel {
        stream_id: u16,
        offer: Option<String>,
        answer: Option<String>,
    },
    /// The data channels `CloseChannels` found and closed.
    ChannelsClosed {
        closed: Vec<u16>,
    },
    /// A `tracks/close`: our offer or our answer (by `CloseHow`), and the mids that named no track.
    Closed {
        offer: Option<String>,
        answer: Option<String>,
        unknown: Vec<String>,
    },
}

/// A server offer waiting for its answer, with the pulls it will start.
pub struct PendingOffer {
    pub offer: SdpPendingOffer,
    pub pulls: Vec<(Mid, Arc<TrackInfo>)>,
    /// Tracks the client will push on these mids once it answers (name, kind).
    pub pushes: Vec<(Mid, String, MediaKind)>,
}

impl PendingOffer {
    /// Keeps str0m's pending offer (what `SdpApi::apply` made) as the session's, with what
    /// starts once the client answers; our offer's SDP, or None when nothing needed negotiating.
    pub(crate) fn keep(
        slot: &mut Option<PendingOffer>,
        applied: Option<(SdpOffer, SdpPendingOffer)>,
        pulls: Vec<(Mid, Arc<TrackInfo>)>,
        pushes: Vec<(Mid, String, MediaKind)>,
    ) -> Option<String> {
        let (offer, pending) = applied?;
        *slot = Some(PendingOffer {
            offer: pending,
            pulls,
            pushes,
        });
        Some(peer::crlf(&offer.to_sdp_string()))
    }
}
