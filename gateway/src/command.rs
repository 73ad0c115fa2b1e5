//! What the control plane (the HTTP front through `control`) tells a worker about its sessions,
//! with a channel for the answer where there is one. The worker's shell answers; the engine
//! (`engine`) only computes what to answer.

use std::sync::Arc;

use str0m::IceCreds;
use tokio::sync::oneshot;

use crate::engine::Adopt;
use crate::ids::SessionId;
use crate::negotiation::{Negotiated, Negotiation};
use crate::refusal::Refusal;
use crate::registry::TrackInfo;
use crate::session::SessionView;

/// One command for a worker, with a channel for the answer where there is one.
pub enum Command {
    /// Take over a new session.
    Adopt(Box<Adopt>),
    /// End the session (RTCP BYE and DTLS close_notify first).
    Close {
        /// The session it is about.
        session: SessionId,
    },
    /// Another gateway serves this session too (both resumed or adopted it): drop it here,
    /// when `when` says so, without a word to the client (no BYE, no close_notify: the client
    /// goes on with the other gateway) and without a tombstone.
    Release {
        /// The session it is about.
        session: SessionId,
        /// On what condition.
        when: crate::replica::ReleaseWhen,
    },
    /// Trickled ICE candidates (`a=candidate` lines).
    Trickle {
        /// The session it is about.
        session: SessionId,
        /// The `a=candidate` lines.
        candidates: Vec<String>,
    },
    /// An ICE restart: the client's new credentials; the answer is ours (None: no session).
    IceRestart {
        /// The session it is about.
        session: SessionId,
        /// The client's new ICE credentials.
        remote: IceCreds,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<IceCreds>>,
    },
    /// The session/track API renegotiates a session.
    Negotiate {
        /// The session it is about.
        session: SessionId,
        /// What the client asked for.
        negotiation: Negotiation,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Negotiated, Refusal>>,
    },
    /// Simulcast: pin a viewer's m-line (`mid`, or every simulcast pull when None) to the layer
    /// `rid`, or back to automatic choice (None).
    SelectLayer {
        /// The session it is about.
        session: SessionId,
        /// The m-line, or every simulcast pull when None.
        mid: Option<String>,
        /// The layer to pin, or None to let the bandwidth estimate choose again.
        rid: Option<String>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// The session/track API's `GET …/sessions/{id}`: what the session pushes and pulls.
    Describe {
        /// The session it is about.
        session: SessionId,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<SessionView>>,
    },
    /// A stream has a (new) publisher: viewers following it re-attach.
    StreamLive {
        /// The WHIP stream name.
        stream: Arc<str>,
        /// The stream's tracks, from its new publisher.
        tracks: Vec<Arc<TrackInfo>>,
    },
}
