//! A stream home's directory: where each stream it is home of is published, and the lookups it
//! holds back while it cannot yet be sure a stream is not published.
//!
//! Per stream it keeps what each node announced, the latest first. One stream may be announced
//! by two nodes for a moment (a session resumed or adopted elsewhere keeps its id; the old node's
//! announcement may arrive after the new one's): a lookup gets the latest, and a withdraw removes
//! only the withdrawing node's, so the other's is found again at once.
//!
//! ## Not found, for sure
//! A node becomes a stream's home when the gateway that was dies or comes back (each node's
//! choice is among the gateways it can reach). The origins then announce at the new home as soon
//! as they notice, and all of them within [`SETTLE`] (they re-announce every 2 s), but a lookup
//! may come first. So "not found" is held back while the view is unsettled: for [`SETTLE`] after
//! this node's view of the gateways changed, and whenever the asker's choice of home is not this
//! node's (the asker noticed first). A held lookup is answered by the announcement that arrives,
//! or "not found" at its deadline. In a settled cluster a lookup for an unknown stream is
//! answered at once.
//!
//! Sans-IO: time comes in as `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::link::StreamOrigin;

/// How long after the gateways changed "not found" is held back: every origin re-announces
/// within 2 s, plus a margin for the link.
pub const SETTLE: Duration = Duration::from_millis(2500);
/// Lookups held at most; beyond, "not found" is answered at once (names are chosen by clients).
pub const MAX_HELD: usize = 4096;

/// Who asked: this node, or the peer on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker<L> {
    /// This node (a gateway's own WHEP request).
    Local,
    /// The peer on this link.
    Peer(L),
}

/// A lookup's answer, for the tree to deliver.
#[derive(Debug, PartialEq)]
pub struct Answer<L> {
    /// Whom to answer.
    pub asker: Asker<L>,
    /// The stream asked for.
    pub stream: String,
    /// Where it is published; `None`: nowhere.
    pub origin: Option<StreamOrigin>,
}

#[derive(Debug)]
struct Held<L> {
    asker: Asker<L>,
    stream: String,
    until: Instant,
}

/// The directory of the streams this node is home of, and the lookups it holds; `L` names a link.
#[derive(Debug)]
pub struct Directory<L> {
    entries: HashMap<String, Vec<StreamOrigin>>,
    held: Vec<Held<L>>,
    /// When this node's view of the gateways last changed.
    changed: Option<Instant>,
}

impl<L> Default for Directory<L> {
    fn default() -> Self {
        Directory {
            entries: HashMap::new(),
            held: Vec::new(),
            changed: None,
        }
    }
}

impl<L: Copy + PartialEq> Directory<L> {
    /// `origin` announced `stream`; answers the lookups held for it.
    pub fn insert(&mut self, stream: String, origin: StreamOrigin) -> Vec<Answer<L>> {
        let list = self.entries.entry(stream.clone()).or_default();
        list.retain(|o| o.node != origin.node);
        list.insert(0, origin.clone());
        // Bounded: a stream has one publisher, two for a moment.
        list.truncate(4);
        self.release(|h| h.stream == stream, Some(origin))
    }

    /// Where `stream` is published, if anyone announced it.
    pub fn get(&self, stream: &str) -> Option<StreamOrigin> {
        self.entries.get(stream).and_then(|l| l.first()).cloned()
    }

    /// A lookup: answered now, or held (`None`) while "not found" is not yet sure. `asker_agrees`
    /// says whether the asker's choice of home is this node's own choice too.
    pub fn lookup(
        &mut self,
        stream: &str,
        asker: Asker<L>,
        asker_agrees: bool,
        now: Instant,
    ) -> Option<Answer<L>> {
        let origin = self.get(stream);
        let settled = self
            .changed
            .is_none_or(|t| now.saturating_duration_since(t) >= SETTLE);
        if origin.is_none() && !(settled && asker_agrees) && self.held.len() < MAX_HELD {
            // The asker noticed a change this node has not: its origins may need all of SETTLE.
            let from = match self.changed {
                Some(t) if asker_agrees => t,
                _ => now,
            };
            self.held.push(Held {
                asker,
                stream: stream.to_string(),
                until: from + SETTLE,
            });
            return None;
        }
        Some(Answer {
            asker,
            stream: stream.to_string(),
            origin,
        })
    }

    /// This node's view of the gateways changed (one failed, came back, joined or left).
    pub fn view_changed(&mut self, now: Instant) {
        self.changed = Some(now);
    }

    /// `node`'s announcement of `stream` for `session`, if that is what it announced.
    pub fn withdraw(&mut self, stream: &str, node: &str, session: [u8; 16]) {
        if let Some(list) = self.entries.get_mut(stream) {
            list.retain(|o| !(o.node == node && o.session == session));
            if list.is_empty() {
                self.entries.remove(stream);
            }
        }
    }

    /// A node that went away: its announcements go with it.
    pub fn forget_node(&mut self, node: &str) {
        self.entries.retain(|_, list| {
            list.retain(|o| o.node != node);
            !list.is_empty()
        });
    }

    /// A link that closed: its held lookups have nobody to answer.
    pub fn forget_link(&mut self, link: L) {
        self.held.retain(|h| h.asker != Asker::Peer(link));
    }

    /// Held lookups whose deadline passed: "not found".
    pub fn expire(&mut self, now: Instant) -> Vec<Answer<L>> {
        self.release(|h| h.until <= now, None)
    }

    /// The held lookups `which` picks, answered with `origin`.
    fn release(
        &mut self,
        which: impl Fn(&Held<L>) -> bool,
        origin: Option<StreamOrigin>,
    ) -> Vec<Answer<L>> {
        let (due, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(which);
        self.held = held;
        due.into_iter()
            .map(|h| Answer {
                asker: h.asker,
                stream: h.stream,
                origin: origin.clone(),
            })
            .collect()
    }

    /// The earliest held deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(node: &str) -> StreamOrigin {
        StreamOrigin {
            node: node.into(),
            session: [1; 16],
            tracks: Vec::new(),
        }
    }

    fn answer(asker: Asker<u32>, stream: &str, node: Option<&str>) -> Answer<u32> {
        Answer {
            asker,
            stream: stream.into(),
            origin: node.map(origin),
        }
    }

    #[test]
    fn a_settled_home_answers_at_once() {
        let t0 = Instant::now();
        let mut d = Directory::<u32>::default();
        d.insert("a".into(), origin("g1"));
        assert_eq!(
            d.lookup("a", Asker::Peer(3), true, t0),
            Some(answer(Asker::Peer(3), "a", Some("g1")))
        );
        assert_eq!(
            d.lookup("b", Asker::Local, true, t0),
            Some(answer(Asker::Local, "b", None))
        );
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn not_found_waits_for_the_view_to_settle_and_an_announcement_answers_it() {
        let t0 = Instant::now();
        let mut d = Directory::<u32>::default();
        d.view_changed(t0);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(d.lookup("a", Asker::Peer(3), true, t1), None);
        assert_eq!(d.lookup("b", Asker::Local, true, t1), None);
        assert_eq!(d.poll_timeout(), Some(t0 + SETTLE));
        assert_eq!(
            d.insert("a".into(), origin("g2")),
            vec![answer(Asker::Peer(3), "a", Some("g2"))]
        );
        assert!(d.expire(t0 + SETTLE - Duration::from_millis(1)).is_empty());
        assert_eq!(d.expire(t0 + SETTLE), vec![answer(Asker::Local, "b", None)]);
        // Settled: at once.
        assert!(d.lookup("b", Asker::Local, true, t0 + SETTLE).is_some());
    }

    #[test]
    fn an_asker_that_chose_differently_is_given_time() {
        let t0 = Instant::now();
        let mut d = Directory::<u32>::default();
        assert_eq!(d.lookup("a", Asker::Peer(3), false, t0), None);
        assert_eq!(d.poll_timeout(), Some(t0 + SETTLE));
        d.forget_link(3);
        assert_eq!(d.poll_timeout(), None, "nobody left to answer");
    }

    #[test]
    fn held_lookups_are_bounded() {
        let t0 = Instant::now();
        let mut d = Directory::<u32>::default();
        for i in 0..MAX_HELD {
            assert_eq!(d.lookup(&format!("s{i}"), Asker::Local, false, t0), None);
        }
        assert_eq!(
            d.lookup("one-more", Asker::Local, false, t0),
            Some(answer(Asker::Local, "one-more", None))
        );
    }
}
