//! What the media core and the session operations refuse, in their own words. The HTTP layer
//! alone turns a refusal into a response (`front::problem`): the engine knows nothing of status
//! codes or problem+json, so it depends on no part of the HTTP front.

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request itself is malformed (an SDP that does not parse, a bad candidate).
    Malformed,
    /// No such session, track, mid or channel (or it ended meanwhile).
    NotFound,
    /// The request conflicts with the state it meets (an offer already pending, no publisher
    /// yet, the stream ended).
    Conflict,
    /// The caller's view of the ICE session is stale (a PATCH with an old ETag).
    Stale,
    /// Well formed, but cannot be served as asked (no common codec, no such layer).
    Unprocessable,
    /// The node cannot take it now (at its session limit): try again later.
    Unavailable,
    /// A state the code did not expect; a bug, not the client's fault.
    Internal,
}

/// A refused request: what kind, and a detail for the human reading the client's log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    /// Why it was refused.
    pub kind: RefusalKind,
    /// For the human reading the client's log.
    pub detail: String,
    /// Seconds after which trying again may succeed.
    pub retry_after: Option<u32>,
    /// A WHEP offer refused only because it cannot be served as is (no codec of the stream):
    /// the endpoint may answer with a counter-offer instead.
    pub counter_offer: bool,
    /// The Calls `errorCode` when the kind alone does not say it.
    pub code: Option<&'static str>,
}

impl Refusal {
    /// A refusal of this kind.
    pub fn new(kind: RefusalKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
            retry_after: None,
            counter_offer: false,
            code: None,
        }
    }
    /// 400: the request is malformed.
    pub fn malformed(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Malformed, detail)
    }
    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NotFound, detail)
    }
    /// 404: no such session.
    pub fn no_session() -> Refusal {
        Refusal::not_found("no such session")
    }
    /// 409: conflicts with the state it meets.
    pub fn conflict(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Conflict, detail)
    }
    /// 412: the caller's view is stale.
    pub fn stale(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Stale, detail)
    }
    /// 422: cannot be served as asked.
    pub fn unprocessable(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unprocessable, detail)
    }
    /// 503: try again in 5 s.
    pub fn unavailable(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Unavailable, detail).retry_after(5)
    }
    /// 500: a bug.
    pub fn internal(detail: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Internal, detail)
    }
    /// Try again after `secs` seconds.
    pub fn retry_after(mut self, secs: u32) -> Refusal {
        self.retry_after = Some(secs);
        self
    }
    /// The Calls `errorCode` for this refusal on the session/track API.
    pub fn code(mut self, code: &'static str) -> Refusal {
        self.code = Some(code);
        self
    }
    /// Refused only because the offer cannot be served as is (see `counter_offer`).
    pub fn with_counter_offer(mut self) -> Refusal {
        self.counter_offer = true;
        self
    }
}
