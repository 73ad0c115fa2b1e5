//! The node's directory: which sessions exist, on which worker, and which session currently
//! publishes each stream. It is the control plane only — touched when sessions come and go,
//! never per packet — so one mutex is enough.

use crate::token_bucket::TokenBucket;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid};

use crate::admission::{Admission, Limits, Throttled};
use crate::ids::{SessionId, TrackId};

/// A pushed track, addressed globally by (session id, track name).
#[derive(Debug)]
pub struct TrackInfo {
    /// The track's node-local handle.
    pub id: TrackId,
    /// The publishing session.
    pub session: SessionId,
    /// The track's name, unique within its session.
    pub name: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's m-line carrying it.
    pub mid: Mid,
    /// Payload types the publisher may send on it, as negotiated with the publisher.
    pub params: Vec<PayloadParams>,
    /// The worker that owns the publishing session, where every packet of the track enters.
    pub origin_worker: usize,
    /// Simulcast: the layer's rid (`a=rid`), one track per (mid, rid).
    pub rid: Option<String>,
    /// Simulcast: the layers of one m-line share this id (the first layer's track id).
    pub layer_group: Option<TrackId>,
    /// Measured by the origin worker: bits/s over the last second (simulcast layer order).
    pub rate_bps: AtomicU64,
    /// Counted by the origin worker: packets received, keyframes received and cached.
    pub packets: AtomicU64,
    /// … keyframes received and cached.
    pub keyframes: AtomicU64,
    /// The publisher's latest sender report for this track (simulcast switches compare layers by it).
    pub sender_clock: crate::sender_clock::SenderClock,
}

impl TrackInfo {
    /// A track as negotiated with its publisher; what is measured and learned later starts empty.
    pub fn new(
        id: TrackId,
        session: SessionId,
        name: String,
        kind: MediaKind,
        mid: Mid,
        params: Vec<PayloadParams>,
        origin_worker: usize,
    ) -> TrackInfo {
        TrackInfo {
            id,
            session,
            name,
            kind,
            mid,
            params,
            origin_worker,
            rid: None,
            layer_group: None,
            rate_bps: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            sender_clock: Default::default(),
        }
    }

    /// Simulcast: this track is the layer `rid` of the group `group`.
    pub fn layer(mut self, rid: String, group: TrackId) -> TrackInfo {
        self.rid = Some(rid);
        self.layer_group = Some(group);
        self
    }

    /// Not a secondary simulcast layer: what a viewer's m-line is matched against.
    pub fn is_primary(&self) -> bool {
        self.layer_group.is_none_or(|g| g == self.id)
    }
}

/// What a session was created for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A WHIP publisher.
    Whip,
    /// A WHEP viewer.
    Whep,
    /// A session of the session/track API (Calls-style), which may push and pull.
    Api,
}

/// Registry view of one session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The worker the session runs on.
    pub worker: usize,
    /// What the session was created for.
    pub role: Role,
    /// The stream it publishes or plays (WHIP/WHEP); none for an API session.
    pub stream: Option<Arc<str>>,
    /// The app that created it (API sessions).
    pub app: Option<String>,
    /// Strong ETag of the ICE session (changes on ICE restart).
    pub etag: String,
    /// The client's ICE ufrag of the live generation (its offer's, then each restart's): a PATCH
    /// naming another one is a restart (`front::ice_patch`).
    pub remote_ufrag: Option<String>,
    /// The client's ufrags of generations an ICE restart replaced (the last few).
    pub old_ufrags: Vec<String>,
    /// Where the session's POST came from, while it has not connected (`admission`).
    pub pending_from: Option<IpAddr>,
    /// STUN naming this session's ufrag that failed MESSAGE-INTEGRITY (counted by the demux).
    pub stun_integrity_failures: Arc<AtomicU64>,
    /// The tracks it pushes.
    pub pushed: Vec<Arc<TrackInfo>>,
    /// Names of the data channels it publishes (subscribers find its worker by them).
    pub published_channels: Vec<String>,
    /// Its session/track API calls (Calls allows 50 per second per session).
    pub api_calls: TokenBucket,
}

/// API calls per second one session may make, and its burst.
pub const API_CALLS_PER_SECOND: f64 = 50.0;

impl SessionEntry {
    /// A session as it starts: no ICE restart yet, no forged STUN, not (yet) pending admission.
    pub fn new(
        worker: usize,
        role: Role,
        stream: Option<Arc<str>>,
        app: Option<String>,
        etag: String,
        remote_ufrag: Option<String>,
        pushed: Vec<Arc<TrackInfo>>,
    ) -> Self {
        SessionEntry {
            worker,
            role,
            stream,
            app,
            etag,
            remote_ufrag,
            old_ufrags: vec![],
            pending_from: None,
            stun_integrity_failures: Default::default(),
            pushed,
            published_channels: vec![],
            api_calls: TokenBucket::new(API_CALLS_PER_SECOND, API_CALLS_PER_SECOND),
        }
    }
}

#[derive(Debug)]
struct StreamEntry {
    publisher: SessionId,
    tracks: Vec<Arc<TrackInfo>>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, SessionEntry>,
    streams: HashMap<Arc<str>, StreamEntry>,
    viewers: HashMap<Arc<str>, usize>,
    /// Sessions the node ended on its own, newest last (`end_session`, `take_ended`).
    ended: VecDeque<Ended>,
    admission: Admission,
}

/// A session the node ended without a DELETE, kept for `ENDED_GRACE`.
#[derive(Debug)]
struct Ended {
    id: SessionId,
    role: Role,
    stream: Option<Arc<str>>,
    at: Instant,
}

/// How long a session the node ended on its own still answers its client's DELETE with 200.
pub const ENDED_GRACE: Duration = Duration::from_secs(10);
/// At most this many of them are remembered.
const ENDED_MAX: usize = 4096;

/// One per node, shared by the HTTP handlers and the workers.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_track: AtomicU64,
}

/// Why an ETag could not be replaced.
#[derive(Debug, PartialEq, Eq)]
pub enum EtagError {
    /// No such session.
    NoSession,
    /// The ETag is not the session's current one (`If-Match` failed).
    Stale,
}

/// A live stream as listed on `/` and `/v1/streams`.
#[derive(Debug, Serialize)]
pub struct StreamSummary {
    /// The stream's name.
    pub name: String,
    /// WHEP viewers playing it on this node.
    pub viewers: usize,
    /// Names of the publisher's tracks.
    pub tracks: Vec<String>,
    /// STUN naming the publisher's session that failed MESSAGE-INTEGRITY (forged or broken).
    /// The session id itself is never listed: its resource URL is the capability to end it.
    pub publisher_stun_integrity_failures: u64,
    /// Per track: simulcast rid and layer group, measured bitrate, packets and keyframes received.
    pub track_stats: Vec<TrackSummary>,
}

/// One track of a listed stream, with what its origin worker measured.
#[derive(Debug, Serialize)]
pub struct TrackSummary {
    /// The track's name.
    pub name: String,
    /// Simulcast: the layer's rid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Simulcast: the id its layers share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_group: Option<u64>,
    /// Bits/s over the last second.
    pub bitrate_bps: u64,
    /// RTP packets received.
    pub packets: u64,
    /// Keyframes received and cached.
    pub keyframes: u64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in a few lines of map code; the maps
        // are still consistent enough to keep serving, so recover rather than cascade.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh node-local track id (never 0, never reused).
    pub fn next_track_id(&self) -> TrackId {
        TrackId(self.next_track.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// A registry admitting new sessions within `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Registry {
            inner: Mutex::new(Inner {
                admission: Admission::new(limits),
                ..Inner::default()
            }),
            next_track: AtomicU64::new(0),
        }
    }

    /// May `source` open another session now? On success the caller must report the outcome:
    /// `pending` with the session it created, or `settled` if it created none.
    pub fn admit(&self, now: Instant, source: IpAddr) -> Result<(), Throttled> {
        self.lock().admission.admit(now, source)
    }

    /// The admitted session `id` from `source` exists and counts as pending until it connects
    /// or ends (if it is already gone, the slot is freed at once).
    pub fn pending(&self, id: SessionId, source: IpAddr) {
        let inner = &mut *self.lock();
        match inner.sessions.get_mut(&id) {
            Some(e) => e.pending_from = Some(source),
            None => inner.admission.settled(source),
        }
    }

    /// An admission that created no session.
    pub fn settled(&self, source: IpAddr) {
        self.lock().admission.settled(source);
    }

    /// The client's ICE ufrag, learned from an answer to our offer.
    pub fn set_remote_ufrag(&self, id: SessionId, ufrag: Option<String>) {
        if let Some(e) = self.lock().sessions.get_mut(&id) {
            e.remote_ufrag = ufrag;
        }
    }

    /// The session connected (ICE + DTLS): it no longer counts as pending.
    pub fn connected(&self, id: SessionId) {
        let inner = &mut *self.lock();
        if let Some(source) = inner
            .sessions
            .get_mut(&id)
            .and_then(|e| e.pending_from.take())
        {
            inner.admission.settled(source);
        }
    }

    /// Unconnected sessions admitted with a source address.
    pub fn pending_count(&self) -> usize {
        self.lock().admission.pending()
    }

    /// WHEP viewers on this node per stream, wherever the stream is published (an edge's
    /// viewers of a remote stream count here, not at the origin).
    pub fn viewers_by_stream(&self) -> Vec<(String, usize)> {
        self.lock()
            .viewers
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect()
    }

    /// Sessions that push at least one media track.
    pub fn publisher_count(&self) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|e| !e.pushed.is_empty())
            .count()
    }

    /// Sessions on this node.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Adds a session; a WHEP one counts as a viewer of its stream.
    pub fn insert_session(&self, id: SessionId, entry: SessionEntry) {
        let mut inner = self.lock();
        if entry.role == Role::Whep
            && let Some(s) = &entry.stream
        {
            *inner.viewers.entry(s.clone()).or_default() += 1;
        }
        inner.sessions.insert(id, entry);
    }

    /// Forget a session. If it was a stream's current publisher, the stream goes offline.
    /// Returns the entry if it was still registered (so exactly one caller acts on a removal).
    pub fn remove_session(&self, id: SessionId) -> Option<SessionEntry> {
        Self::remove_in(&mut self.lock(), id)
    }

    fn remove_in(inner: &mut Inner, id: SessionId) -> Option<SessionEntry> {
        let entry = inner.sessions.remove(&id)?;
        if let Some(source) = entry.pending_from {
            inner.admission.settled(source);
        }
        if let Some(stream) = &entry.stream {
            match entry.role {
                Role::Whip => {
                    if inner.streams.get(stream).is_some_and(|s| s.publisher == id) {
                        inner.streams.remove(stream);
                    }
                }
                Role::Whep => {
                    if let Some(n) = inner.viewers.get_mut(stream) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            inner.viewers.remove(stream);
                        }
                    }
                }
                Role::Api => {}
            }
        }
        crate::heap_trim::shrink_map(&mut inner.sessions);
        crate::heap_trim::shrink_map(&mut inner.streams);
        crate::heap_trim::shrink_map(&mut inner.viewers);
        Some(entry)
    }

    /// `remove_session` for a session the node ends on its own (the peer closed its
    /// PeerConnection, ICE or DTLS failed, a new publisher replaced it), remembered for
    /// `ENDED_GRACE` so that `take_ended` can tell its client's DELETE right after from a DELETE of
    /// a session that never was. Clients do close first: whip-whep's `stop()` closes the
    /// PeerConnection, then sends DELETE, which races the DTLS close_notify to the gateway.
    pub fn end_session(&self, id: SessionId) -> Option<SessionEntry> {
        let mut inner = self.lock();
        let entry = Self::remove_in(&mut inner, id)?;
        let now = Instant::now();
        Self::forget_ended_in(&mut inner, now);
        if inner.ended.len() >= ENDED_MAX {
            inner.ended.pop_front();
        }
        inner.ended.push_back(Ended {
            id,
            role: entry.role.clone(),
            stream: entry.stream.clone(),
            at: now,
        });
        Some(entry)
    }

    /// A session publishes a data channel by this name; false if it already does (or is gone).
    pub fn publish_channel(&self, session: SessionId, name: &str) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(&session) else {
            return false;
        };
        if entry.published_channels.iter().any(|n| n == name) {
            return false;
        }
        entry.published_channels.push(name.to_string());
        true
    }

    /// A session/track API call on session `id` of `app` at `now`: None if `app` has no such
    /// session, else whether it is within the session's rate (how long to wait if not).
    pub fn api_call(
        &self,
        id: SessionId,
        app: &str,
        now: Instant,
    ) -> Option<Result<(), std::time::Duration>> {
        let mut inner = self.lock();
        let entry = inner.sessions.get_mut(&id)?;
        if entry.app.as_deref() != Some(app) {
            return None;
        }
        Some(entry.api_calls.take(now))
    }

    /// The session no longer publishes data channel `name`.
    pub fn unpublish_channel(&self, session: SessionId, name: &str) {
        if let Some(entry) = self.lock().sessions.get_mut(&session) {
            entry.published_channels.retain(|n| n != name);
        }
    }

    /// The worker of the session that publishes data channel `name`, if one does.
    pub fn channel_worker(&self, session: SessionId, name: &str) -> Option<usize> {
        self.lock()
            .sessions
            .get(&session)
            .filter(|e| e.published_channels.iter().any(|n| n == name))
            .map(|e| e.worker)
    }

    /// Drops the ended sessions older than `ENDED_GRACE`; returns how many went. `end_session`
    /// does it too, but after the last session of a flood ends nothing else would, and the
    /// remembered entries (with their stream names, allocated among the sessions' memory) would
    /// pin the flood's heap pages for good.
    pub fn forget_ended(&self, now: Instant) -> usize {
        Self::forget_ended_in(&mut self.lock(), now)
    }

    fn forget_ended_in(inner: &mut Inner, now: Instant) -> usize {
        let before = inner.ended.len();
        while inner
            .ended
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > ENDED_GRACE)
        {
            inner.ended.pop_front();
        }
        if inner.ended.is_empty() && inner.ended.capacity() > 64 {
            inner.ended.shrink_to_fit();
        }
        before - inner.ended.len()
    }

    /// Whether `id` is a session of this role and stream that the node ended on its own within
    /// `ENDED_GRACE`; true once only (a second DELETE finds nothing, as RFC 9725 wants).
    pub fn take_ended(&self, id: SessionId, role: &Role, stream: &str) -> bool {
        let mut inner = self.lock();
        let Some(i) = inner.ended.iter().position(|e| e.id == id) else {
            return false;
        };
        let e = &inner.ended[i];
        let fits =
            &e.role == role && e.stream.as_deref() == Some(stream) && e.at.elapsed() <= ENDED_GRACE;
        if fits {
            inner.ended.remove(i);
        }
        fits
    }

    /// The registry's view of a session, copied out.
    pub fn session(&self, id: SessionId) -> Option<SessionEntry> {
        self.lock().sessions.get(&id).cloned()
    }

    /// An ICE restart: replace the session's ETag if it still is `expected` (`None`: any, for
    /// `If-Match: *`) and make `remote_ufrag` the client's live one. Checking and replacing under
    /// one lock makes concurrent ICE restarts with the same ETag succeed exactly once.
    pub fn restart_ice(
        &self,
        id: SessionId,
        expected: Option<&str>,
        new_etag: String,
        remote_ufrag: String,
    ) -> Result<(), EtagError> {
        /// Late trickles of this many replaced generations are recognised and dropped.
        const OLD_UFRAGS: usize = 4;
        let mut inner = self.lock();
        let s = inner.sessions.get_mut(&id).ok_or(EtagError::NoSession)?;
        if expected.is_some_and(|e| e != s.etag) {
            return Err(EtagError::Stale);
        }
        s.etag = new_etag;
        if let Some(old) = s.remote_ufrag.replace(remote_ufrag) {
            s.old_ufrags.push(old);
            if s.old_ufrags.len() > OLD_UFRAGS {
                s.old_ufrags.remove(0);
            }
        }
        Ok(())
    }

    /// Adds tracks to the session's pushed ones.
    pub fn add_pushed(&self, id: SessionId, tracks: &[Arc<TrackInfo>]) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.pushed.extend(tracks.iter().cloned());
        }
    }

    /// Removes tracks (by id) from the session's pushed ones.
    pub fn remove_pushed(&self, id: SessionId, tracks: &[Arc<TrackInfo>]) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.pushed.retain(|t| !tracks.iter().any(|e| e.id == t.id));
        }
    }

    /// Make `publisher` the stream's publisher; returns the one it replaces, if any.
    pub fn publish(
        &self,
        stream: Arc<str>,
        publisher: SessionId,
        tracks: Vec<Arc<TrackInfo>>,
    ) -> Option<SessionId> {
        let mut inner = self.lock();
        let old = inner
            .streams
            .insert(stream, StreamEntry { publisher, tracks });
        old.map(|o| o.publisher).filter(|p| *p != publisher)
    }

    /// The stream's current publisher and tracks.
    pub fn stream(&self, name: &str) -> Option<(SessionId, Vec<Arc<TrackInfo>>)> {
        self.lock()
            .streams
            .get(name)
            .map(|s| (s.publisher, s.tracks.clone()))
    }

    /// A pushed track by its global address.
    pub fn track(&self, session: SessionId, name: &str) -> Option<Arc<TrackInfo>> {
        let inner = self.lock();
        inner
            .sessions
            .get(&session)?
            .pushed
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// The live streams, sorted by name, with their viewers and per-track stats.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let inner = self.lock();
        let mut list: Vec<StreamSummary> = inner
            .streams
            .iter()
            .map(|(name, s)| StreamSummary {
                name: name.to_string(),
                viewers: inner.viewers.get(name).copied().unwrap_or(0),
                tracks: s.tracks.iter().map(|t| t.name.clone()).collect(),
                publisher_stun_integrity_failures: inner
                    .sessions
                    .get(&s.publisher)
                    .map_or(0, |e| e.stun_integrity_failures.load(Ordering::Relaxed)),
                track_stats: s
                    .tracks
                    .iter()
                    .map(|t| TrackSummary {
                        name: t.name.clone(),
                        rid: t.rid.clone(),
                        layer_group: t.layer_group.map(|g| g.0),
                        bitrate_bps: t.rate_bps.load(Ordering::Relaxed),
                        packets: t.packets.load(Ordering::Relaxed),
                        keyframes: t.keyframes.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(role: Role, stream: &str) -> SessionEntry {
        SessionEntry::new(
            0,
            role,
            Some(stream.into()),
            None,
            String::new(),
            None,
            vec![],
        )
    }

    #[test]
    fn a_replaced_publisher_leaving_does_not_take_the_stream_down() {
        let r = Registry::default();
        let (a, b) = (SessionId::random(), SessionId::random());
        r.insert_session(a, entry(Role::Whip, "s"));
        assert_eq!(r.publish("s".into(), a, vec![]), None);
        r.insert_session(b, entry(Role::Whip, "s"));
        assert_eq!(r.publish("s".into(), b, vec![]), Some(a));
        assert!(r.remove_session(a).is_some());
        assert_eq!(r.stream("s").map(|s| s.0), Some(b));
        assert!(
            r.remove_session(a).is_none(),
            "second removal finds nothing"
        );
        r.remove_session(b);
        assert!(r.stream("s").is_none());
    }

    #[test]
    fn viewer_counts() {
        let r = Registry::default();
        let p = SessionId::random();
        r.insert_session(p, entry(Role::Whip, "s"));
        r.publish("s".into(), p, vec![]);
        let v: Vec<_> = (0..3).map(|_| SessionId::random()).collect();
        for id in &v {
            r.insert_session(*id, entry(Role::Whep, "s"));
        }
        assert_eq!(r.streams()[0].viewers, 3);
        r.remove_session(v[0]);
        assert_eq!(r.streams()[0].viewers, 2);
    }

    #[test]
    fn a_session_the_node_ended_answers_one_delete() {
        let r = Registry::default();
        let (a, b, c) = (
            SessionId::random(),
            SessionId::random(),
            SessionId::random(),
        );
        r.insert_session(a, entry(Role::Whep, "s"));
        r.insert_session(b, entry(Role::Whep, "s"));
        assert!(r.end_session(a).is_some(), "ended by the node");
        assert!(r.session(a).is_none());
        assert_eq!(r.streams().len(), 0, "no publisher, no stream");
        assert!(!r.take_ended(a, &Role::Whip, "s"), "other role");
        assert!(!r.take_ended(a, &Role::Whep, "t"), "other stream");
        assert!(r.take_ended(a, &Role::Whep, "s"));
        assert!(!r.take_ended(a, &Role::Whep, "s"), "once only");
        // Removed by a DELETE (remove_session) or never there: nothing to take.
        assert!(r.remove_session(b).is_some());
        assert!(r.end_session(b).is_none());
        assert!(!r.take_ended(b, &Role::Whep, "s"));
        assert!(!r.take_ended(c, &Role::Whep, "s"));
    }
}
