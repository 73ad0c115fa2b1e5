//! Data channels across the cluster, the bridge's part: a channel published here becomes a data
//! track of the per-track trees (`relay_proto::data_track`) and is listed in the directory under its
//! session (`session:{id}`, beside the WHIP stream names); a session here that subscribes to a
//! channel published on another gateway finds it there, and the bridge subscribes to its track,
//! reassembles its messages and hands them to the subscribers' workers — standing in for the
//! publisher's worker, so the workers treat local and remote publishers alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_proto::data_track::{DataTrackParams, Fragmenter, channel_of_key_name, data_key_name};
use relay_proto::link::{StreamOrigin, StreamTrack, SubscribeOk, TrackKey, TrackKind};
use relay_proto::{Reassembly, ReassemblyLimits, SharedPacket};
use relay_shell::cluster::{ClusterHandle, Local};
use tokio::sync::oneshot;

use crate::channel_link::ChannelMsg;
use crate::data_channel::Subscriber;
use crate::ids::SessionId;
use crate::mailbox::Mailbox;

/// Fragment payload: below any link's datagram limit (QUIC's is ~1,200 bytes before MTU
/// discovery) with room for the link header.
const FRAGMENT_BYTES: usize = 1100;
/// Publishers whose origin node was looked up and not (yet) subscribed to, remembered at most
/// this long.
const FOUND_TTL: Duration = Duration::from_secs(60);
/// Lookups in flight and origins remembered at most: beyond, the oldest are dropped.
const MAX_PENDING: usize = 4096;
/// A channel the directory does not list is asked for again for this long: its publisher's
/// announcement may still be on its way to the home node (an app publishes, then tells another
/// client to subscribe, within milliseconds).
const FIND_PATIENCE: Duration = Duration::from_secs(1);
const FIND_RETRY: Duration = Duration::from_millis(100);

/// The directory name under which a session's data channels are listed.
pub fn directory_name(session: SessionId) -> String {
    format!("session:{session}")
}

fn session_of(name: &str) -> Option<SessionId> {
    name.strip_prefix("session:")?.parse().ok()
}

struct Published {
    key: TrackKey,
    fragmenter: Fragmenter,
}

struct Remote {
    subscribers: Vec<Subscriber>,
    /// Set once the tree has described the track.
    reassembly: Option<Reassembly>,
}

struct Lookup {
    publisher: SessionId,
    name: String,
    reply: oneshot::Sender<bool>,
    asked: Instant,
    /// Not listed at the last answer: ask again then.
    retry_at: Option<Instant>,
}

/// The bridge's data channel state.
pub struct ClusterChannels {
    node_id: String,
    published: HashMap<(SessionId, String), Published>,
    /// Per publishing session here: its channels as listed in the directory.
    listed: HashMap<SessionId, Vec<String>>,
    lookups: Vec<Lookup>,
    /// Publishers elsewhere: their origin node, as the directory said, and when.
    origins: HashMap<SessionId, (String, Instant)>,
    remote: HashMap<TrackKey, Remote>,
}

impl ClusterChannels {
    /// No channels yet; `node_id` is this node's id in the cluster (it names the tracks).
    pub fn new(node_id: String) -> ClusterChannels {
        ClusterChannels {
            node_id,
            published: HashMap::new(),
            listed: HashMap::new(),
            lookups: Vec::new(),
            origins: HashMap::new(),
            remote: HashMap::new(),
        }
    }

    fn key(&self, session: SessionId, name: &str) -> TrackKey {
        TrackKey {
            origin: self.node_id.clone(),
            session: session.to_bytes(),
            name: data_key_name(name),
        }
    }

    fn announce(&self, cluster: &ClusterHandle, session: SessionId) {
        let stream = directory_name(session);
        match self.listed.get(&session) {
            Some(names) if !names.is_empty() => {
                let origin = StreamOrigin {
                    node: self.node_id.clone(),
                    session: session.to_bytes(),
                    tracks: names
                        .iter()
                        .map(|n| StreamTrack {
                            name: n.clone(),
                            kind: TrackKind::Data,
                        })
                        .collect(),
                };
                cluster.send(Local::Announce(stream, origin));
            }
            _ => cluster.send(Local::Withdraw(stream, session.to_bytes())),
        }
    }

    /// A session here publishes channel `name`.
    pub fn publish(
        &mut self,
        cluster: &ClusterHandle,
        publisher: SessionId,
        name: String,
        params: DataTrackParams,
    ) {
        let key = self.key(publisher, &name);
        let names = self.listed.entry(publisher).or_default();
        if names.len() >= relay_proto::link::MAX_STREAM_TRACKS {
            // The directory lists this many per session; the channel stays local to this node.
            tracing::warn!(session = %publisher, %name, "too many data channels to list in the cluster");
            return;
        }
        names.push(name.clone());
        tracing::info!(session = %publisher, channel = %name, "data channel published to the cluster");
        cluster.send(Local::Publish(params.describe(key.clone())));
        self.published.insert(
            (publisher, name),
            Published {
                key,
                fragmenter: Fragmenter::new(),
            },
        );
        self.announce(cluster, publisher);
    }

    /// A channel published to the cluster from here ends: unpublished from the tree.
    pub fn unpublish(&mut self, cluster: &ClusterHandle, publisher: SessionId, name: &str) {
        let Some(p) = self.published.remove(&(publisher, name.to_string())) else {
            return;
        };
        cluster.send(Local::Unpublish(p.key));
        if let Some(names) = self.listed.get_mut(&publisher) {
            names.retain(|n| n != name);
            if names.is_empty() {
                self.listed.remove(&publisher);
            }
        }
        self.announce(cluster, publisher);
        crate::heap_trim::shrink_map(&mut self.published);
        crate::heap_trim::shrink_map(&mut self.listed);
    }

    /// A message of a channel published here, into its tree.
    pub fn send(
        &mut self,
        cluster: &ClusterHandle,
        publisher: SessionId,
        name: String,
        binary: bool,
        data: &[u8],
        now: Instant,
    ) {
        let Some(p) = self.published.get_mut(&(publisher, name)) else {
            return;
        };
        let Some(fragments) = p.fragmenter.fragment(binary, data, FRAGMENT_BYTES, now) else {
            return;
        };
        for f in fragments {
            cluster.send(Local::Packet(p.key.clone(), Arc::new(f)));
        }
    }

    /// Does another gateway publish `publisher`'s channel `name`? Asked of the directory.
    pub fn find(
        &mut self,
        cluster: &ClusterHandle,
        publisher: SessionId,
        name: String,
        reply: oneshot::Sender<bool>,
        now: Instant,
    ) {
        self.lookups.retain(|l| !l.reply.is_closed());
        if self.lookups.len() >= MAX_PENDING {
            let _ = reply.send(false);
            return;
        }
        self.lookups.push(Lookup {
            publisher,
            name,
            reply,
            asked: now,
            retry_at: None,
        });
        cluster.send(Local::Lookup(directory_name(publisher)));
    }

    /// The directory's answer for a `session:` name; false if the name is not one.
    pub fn on_location(
        &mut self,
        stream: &str,
        origin: Option<&StreamOrigin>,
        now: Instant,
    ) -> bool {
        let Some(session) = session_of(stream) else {
            return false;
        };
        if let Some(o) = origin {
            self.origins
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < FOUND_TTL);
            if self.origins.len() < MAX_PENDING {
                self.origins.insert(session, (o.node.clone(), now));
            }
        }
        let (answered, rest): (Vec<Lookup>, Vec<Lookup>) = std::mem::take(&mut self.lookups)
            .into_iter()
            .partition(|l| l.publisher == session && l.retry_at.is_none());
        self.lookups = rest;
        for mut l in answered {
            let listed = origin.is_some_and(|o| {
                o.tracks
                    .iter()
                    .any(|t| t.kind == TrackKind::Data && t.name == l.name)
            });
            if !listed && now.saturating_duration_since(l.asked) < FIND_PATIENCE {
                l.retry_at = Some(now + FIND_RETRY);
                self.lookups.push(l);
                continue;
            }
            tracing::info!(session = %session, channel = %l.name, listed, "data channel looked up in the cluster");
            let _ = l.reply.send(listed);
        }
        true
    }

    fn remote_key(
        &self,
        publisher: SessionId,
        name: &str,
        origin: Option<String>,
    ) -> Option<TrackKey> {
        let node = self
            .origins
            .get(&publisher)
            .map(|(node, _)| node.clone())
            .or(origin)?;
        Some(TrackKey {
            origin: node,
            session: publisher.to_bytes(),
            name: data_key_name(name),
        })
    }

    /// A worker's session subscribes to a channel published elsewhere.
    pub fn subscribe(
        &mut self,
        cluster: &ClusterHandle,
        publisher: SessionId,
        name: &str,
        subscriber: Subscriber,
        origin: Option<String>,
    ) {
        let Some(key) = self.remote_key(publisher, name, origin) else {
            return;
        };
        let remote = self.remote.entry(key.clone()).or_insert_with(|| {
            cluster.send(Local::Subscribe(key.clone()));
            Remote {
                subscribers: Vec::new(),
                reassembly: None,
            }
        });
        if !remote.subscribers.contains(&subscriber) {
            remote.subscribers.push(subscriber);
        }
    }

    /// A worker's session stops receiving a channel published elsewhere; the last one unsubscribes.
    pub fn unsubscribe(
        &mut self,
        cluster: &ClusterHandle,
        publisher: SessionId,
        name: &str,
        gone: Subscriber,
    ) {
        let Some(key) = self.remote_key(publisher, name, None).or_else(|| {
            self.remote
                .iter()
                .find(|(k, r)| {
                    k.session == publisher.to_bytes()
                        && channel_of_key_name(&k.name) == Some(name)
                        && r.subscribers.contains(&gone)
                })
                .map(|(k, _)| k.clone())
        }) else {
            return;
        };
        let Some(remote) = self.remote.get_mut(&key) else {
            return;
        };
        remote.subscribers.retain(|s| *s != gone);
        if remote.subscribers.is_empty() {
            self.remote.remove(&key);
            cluster.send(Local::Unsubscribe(key));
            crate::heap_trim::shrink_map(&mut self.remote);
        }
    }

    /// The tree described a track; true if it is one of ours (a data track).
    pub fn on_track_ready(&mut self, key: &TrackKey, ok: &SubscribeOk) -> bool {
        let Some(remote) = self.remote.get_mut(key) else {
            return channel_of_key_name(&key.name).is_some();
        };
        if remote.reassembly.is_none() {
            let params = DataTrackParams::from_fmtp(&ok.fmtp).unwrap_or_default();
            remote.reassembly = Some(Reassembly::new(params, ReassemblyLimits::default()));
        }
        true
    }

    /// A fragment the tree delivered; true if it was a data track's.
    pub fn on_deliver(
        &mut self,
        workers: &[Mailbox],
        key: &TrackKey,
        packet: &SharedPacket,
        now: Instant,
    ) -> bool {
        let Some(remote) = self.remote.get_mut(key) else {
            return channel_of_key_name(&key.name).is_some();
        };
        if let Some(r) = remote.reassembly.as_mut() {
            r.push(packet, now);
        }
        hand_over(remote, workers);
        true
    }

    /// The track ended upstream (publisher gone): its subscribers' channels go silent.
    pub fn on_track_ended(&mut self, key: &TrackKey) -> bool {
        if self.remote.remove(key).is_some() {
            crate::heap_trim::shrink_map(&mut self.remote);
            return true;
        }
        channel_of_key_name(&key.name).is_some()
    }

    /// Asks the directory again for channels it did not list yet; gives up gaps that were
    /// never repaired.
    pub fn handle_timeout(&mut self, cluster: &ClusterHandle, workers: &[Mailbox], now: Instant) {
        let mut asked = Vec::new();
        for l in &mut self.lookups {
            if l.retry_at.is_some_and(|at| at <= now) {
                l.retry_at = None;
                if !asked.contains(&l.publisher) {
                    asked.push(l.publisher);
                    cluster.send(Local::Lookup(directory_name(l.publisher)));
                }
            }
        }
        for remote in self.remote.values_mut() {
            if let Some(r) = remote.reassembly.as_mut() {
                r.handle_timeout(now);
            }
            hand_over(remote, workers);
        }
    }
}

/// Every whole message to every subscriber's worker.
fn hand_over(remote: &mut Remote, workers: &[Mailbox]) {
    let Some(r) = remote.reassembly.as_mut() else {
        return;
    };
    while let Some(m) = r.poll_message() {
        for to in &remote.subscribers {
            if let Some(w) = workers.get(to.worker) {
                w.channel(ChannelMsg::Message {
                    to: *to,
                    binary: m.binary,
                    data: m.data.clone(),
                });
            }
        }
    }
}
