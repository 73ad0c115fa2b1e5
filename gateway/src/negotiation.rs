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
        /// The client's SDP offer.
        sdp: String,
        /// (mid, track name) for the pushed tracks it adds.
        names: Vec<(String, String)>,
    },
    /// Add sendonly m-lines pulling these tracks; we make the offer.
    Pull {
        /// The published tracks to pull.
        tracks: Vec<Arc<TrackInfo>>,
    },
    /// Add recvonly m-lines for tracks the client will push, named (Calls: local tracks without
    /// an offer); we make the offer, the tracks exist once the client answers.
    Receive {
        /// (track name, kind) of each track the client will push.
        tracks: Vec<(String, MediaKind)>,
    },
    /// The client's answer to our pending offer.
    Answer {
        /// The client's SDP answer.
        sdp: String,
    },
    /// Calls' `datachannels/establish`: the session's SCTP association, with the negotiated
    /// channel `name` (e.g. "server-events") on it; we offer the application m-line unless the
    /// session has one.
    EstablishChannels {
        /// The channel's label.
        name: String,
        /// The client's SDP offer, if it sent one; else we offer.
        offer: Option<String>,
    },
    /// Publish a data channel by this name (Calls: `location: local`).
    PublishChannel {
        /// The channel's label.
        name: String,
        /// Ordered/reliable delivery settings.
        options: crate::data_channel::ChannelOptions,
    },
    /// Receive another session's channel.
    SubscribeChannel(crate::data_channel::Subscription),
    /// Calls' `canReply` on the session's subscription to `publisher`'s channel `name`.
    UpdateChannel {
        /// The publishing session.
        publisher: SessionId,
        /// The channel's label.
        name: String,
        /// Whether the subscriber may send on the channel back to the publisher.
        can_reply: bool,
    },
    /// Close the session's data channels with these SCTP stream ids; returns those it had.
    CloseChannels {
        /// SCTP stream ids of the channels to close.
        stream_ids: Vec<u16>,
    },
    /// Re-use a pulled m-line for another track of its kind (Calls' `tracks/update`); no SDP.
    Update {
        /// The pulled m-line to re-use.
        mid: String,
        /// The track it carries from now on.
        track: Arc<TrackInfo>,
    },
    /// Stop these m-lines (pushed or pulled); unknown mids are reported, not refused.
    Close {
        /// The mids to stop.
        mids: Vec<String>,
        /// Who sends the SDP, if anyone.
        how: CloseHow,
    },
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
    /// Our answer to a client offer.
    Answer {
        /// The SDP answer.
        sdp: String,
        /// The tracks the offer added to the session's pushes.
        pushed: Vec<Arc<TrackInfo>>,
    },
    /// Our offer adding pulled m-lines; the pulls start when the client answers.
    Offer {
        /// The SDP offer.
        sdp: String,
        /// The m-lines added and the track each will carry.
        pulls: Vec<(Mid, Arc<TrackInfo>)>,
        /// Requested tracks found already ended (the engine leaves it empty so far).
        ended: Vec<Arc<TrackInfo>>,
    },
    /// Done, no SDP for the client (the answer was applied, or nothing needed negotiating).
    Done {
        /// Tracks found already ended (the engine leaves it empty so far).
        ended: Vec<Arc<TrackInfo>>,
    },
    /// Our offer for tracks the client will push: their mids, names and kinds.
    Receiving {
        /// The SDP offer.
        sdp: String,
        /// (mid, track name, kind) of each m-line the client will push on.
        pushes: Vec<(Mid, String, MediaKind)>,
    },
    /// A data channel opened on the session: its SCTP stream id, and our offer when the session
    /// needs its application m-line negotiated first, or our answer to the client's offer.
    Channel {
        /// The channel's SCTP stream id.
        stream_id: u16,
        /// Our offer, when the application m-line has to be negotiated first.
        offer: Option<String>,
        /// Our answer, when the client sent an offer.
        answer: Option<String>,
    },
    /// The data channels `CloseChannels` found and closed.
    ChannelsClosed {
        /// Their SCTP stream ids.
        closed: Vec<u16>,
    },
    /// A `tracks/close`: our offer or our answer (by `CloseHow`), and the mids that named no track.
    Closed {
        /// Our offer with the m-lines stopped (`CloseHow::ServerOffer`).
        offer: Option<String>,
        /// Our answer to the client's offer (`CloseHow::ClientOffer`).
        answer: Option<String>,
        /// Mids that named no track.
        unknown: Vec<String>,
    },
}

/// A server offer waiting for its answer, with the pulls it will start.
pub struct PendingOffer {
    /// str0m's pending offer, to apply the client's answer to.
    pub offer: SdpPendingOffer,
    /// The m-lines being added for pulls, with the track each will carry.
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
