//! What a PATCH on a WHIP/WHEP session resource asks for — trickle or ICE restart — decided from
//! the fragment, `If-Match` and the session's current ICE state, with no IO (RFC 9725 §4.3).
//!
//! RFC 8840 fragments always carry `a=ice-ufrag`/`a=ice-pwd`, so their presence says nothing:
//! a restart is a fragment whose ufrag **differs** from the client's current one. The same ufrag
//! is trickle; a ufrag the session used before a restart is a late trickle of a dead ICE
//! generation, whose candidates are dropped (RFC 8838 §4.4) but which is not an error.

use axum::http::StatusCode;

use super::problem::Problem;

/// The `If-Match` precondition of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header.
    Absent,
    /// `*`: any current representation (RFC 9725 has clients send this for a restart).
    Any,
    /// One or more entity tags, quotes removed.
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parse the header value; a weak tag (`W/"…"`) never matches a strong comparison.
    pub fn parse(value: Option<&str>) -> IfMatch {
        let Some(v) = value.map(str::trim) else {
            return IfMatch::Absent;
        };
        if v == "*" || v == "\"*\"" {
            return IfMatch::Any;
        }
        IfMatch::Tags(
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.starts_with("W/"))
                .map(|t| t.trim_matches('"').to_string())
                .collect(),
        )
    }

    /// Whether the condition holds for a session whose ETag is `etag` (absent: it does).
    pub fn holds_for(&self, etag: &str) -> bool {
        match self {
            IfMatch::Absent | IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The session's ICE state as the HTTP layer knows it.
#[derive(Debug, Clone, Copy)]
pub struct IceState<'a> {
    /// The session's current strong ETag.
    pub etag: &'a str,
    /// The client's ufrag of the live ICE generation (from its offer or last restart).
    pub remote_ufrag: Option<&'a str>,
    /// Ufrags of generations replaced by restarts.
    pub old_ufrags: &'a [String],
}

/// What to do with the PATCH.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchAction {
    /// Add the fragment's candidates (204).
    Trickle,
    /// Candidates of a replaced ICE generation: accepted and ignored (204).
    StaleTrickle,
    /// New remote credentials: restart ICE (200 with ours). `expected` is the ETag the restart
    /// must still find (None for `*`), checked again under the registry's lock.
    Restart {
        /// The ETag the restart must still find; None for `If-Match: *`.
        expected: Option<String>,
    },
}

/// Decide, or refuse with the status RFC 9725 and RFC 9110 give.
pub fn decide(
    frag_ufrag: Option<&str>,
    if_match: &IfMatch,
    state: IceState<'_>,
) -> Result<PatchAction, Problem> {
    if !if_match.holds_for(state.etag) {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "the ICE session changed (stale ETag)",
        ));
    }
    let Some(ufrag) = frag_ufrag else {
        return Ok(PatchAction::Trickle);
    };
    if state.remote_ufrag.is_none_or(|r| r == ufrag) {
        return Ok(PatchAction::Trickle);
    }
    if state.old_ufrags.iter().any(|o| o == ufrag) {
        return Ok(PatchAction::StaleTrickle);
    }
    match if_match {
        IfMatch::Absent => Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "an ICE restart (new ice-ufrag) needs If-Match: * or the session's ETag",
        )),
        IfMatch::Any => Ok(PatchAction::Restart { expected: None }),
        IfMatch::Tags(_) => Ok(PatchAction::Restart {
            expected: Some(state.etag.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state<'a>(old: &'a [String]) -> IceState<'a> {
        IceState {
            etag: "e1",
            remote_ufrag: Some("theirs"),
            old_ufrags: old,
        }
    }

    #[test]
    fn the_clients_own_ufrag_is_trickle_with_or_without_if_match() {
        for im in [
            IfMatch::Absent,
            IfMatch::Any,
            IfMatch::parse(Some("\"e1\"")),
        ] {
            assert_eq!(
                decide(Some("theirs"), &im, state(&[])).ok(),
                Some(PatchAction::Trickle)
            );
        }
        assert_eq!(
            decide(None, &IfMatch::Absent, state(&[])).ok(),
            Some(PatchAction::Trickle)
        );
    }

    #[test]
    fn a_new_ufrag_is_a_restart_that_needs_if_match() {
        let r = decide(Some("fresh"), &IfMatch::Absent, state(&[]));
        assert_eq!(
            r.err().map(|p| p.status),
            Some(StatusCode::PRECONDITION_REQUIRED)
        );
        assert_eq!(
            decide(Some("fresh"), &IfMatch::Any, state(&[])).ok(),
            Some(PatchAction::Restart { expected: None })
        );
        assert_eq!(
            decide(Some("fresh"), &IfMatch::parse(Some("\"e1\"")), state(&[])).ok(),
            Some(PatchAction::Restart {
                expected: Some("e1".into())
            })
        );
    }

    #[test]
    fn a_stale_etag_fails_both_trickle_and_restart() {
        let stale = IfMatch::parse(Some("\"e0\""));
        for ufrag in [Some("theirs"), Some("fresh"), None] {
            assert_eq!(
                decide(ufrag, &stale, state(&[])).err().map(|p| p.status),
                Some(StatusCode::PRECONDITION_FAILED)
            );
        }
        assert_eq!(
            decide(
                Some("theirs"),
                &IfMatch::parse(Some("W/\"e1\"")),
                state(&[])
            )
            .err()
            .map(|p| p.status),
            Some(StatusCode::PRECONDITION_FAILED),
            "weak tags never match"
        );
        assert_eq!(
            decide(
                Some("theirs"),
                &IfMatch::parse(Some("\"x\", \"e1\"")),
                state(&[])
            )
            .ok(),
            Some(PatchAction::Trickle),
            "a list matches if any tag does"
        );
    }

    #[test]
    fn a_replaced_generations_candidates_are_dropped() {
        let old = vec!["before".to_string()];
        assert_eq!(
            decide(Some("before"), &IfMatch::Absent, state(&old)).ok(),
            Some(PatchAction::StaleTrickle)
        );
    }
}
