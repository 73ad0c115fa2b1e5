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

pub enum Command {
    Adopt(Box<Adopt>),
    /// End the session (RTCP BYE and DTLS close_notify first).
    Close {
        session: SessionId,
    },
    /// Trickled ICE candidates (`a=candidate` lines).
    Trickle {
        session: SessionId,
        candidates: Vec<String>,
    },
    /// An ICE restart: the client's new credentials; the answer is ours (None: no session).
    IceRestart {
        session: SessionId,
        remote: IceCreds,
        reply: oneshot::Sender<Option<IceCreds>>,
    },
    /// The session/track API renegotiates a session.
    Negotiate {
        session: SessionId,
        negotiation: Negotiation,
        reply: oneshot::Sender<Result<Negotiated, Refusal>>,
    },
    /// Simulcast: pin a viewer's m-line (`mid`, or every simulcast pull when None) to the layer
    /// `rid`, or back to automatic choice (None).
    SelectLayer {
        session: SessionId,
        mid: Option<String>,
        rid: Option<String>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// The session/track API's `GET …/sessions/{id}`: what the session pushes and pulls.
    Describe {
        session: SessionId,
        reply: oneshot::Sender<Option<SessionView>>,
    },
    /// A stream has a (new) publisher: viewers following it re-attach.
    StreamLive {
        stream: Arc<str>,
        tracks: Vec<Arc<TrackInfo>>,
    },
}
