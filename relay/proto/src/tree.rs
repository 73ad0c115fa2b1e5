//! One node's part in the per-track cascading trees — sans-IO, like quinn-proto: links, control
//! messages, datagrams and time go in; control messages, datagrams and local deliveries come out.
//!
//! For each track a node touches it keeps a packet cache, a keyframe cache and a gap tracker, its
//! parent (the track's origin, or the rendezvous choice among the live members of the nearest tier
//! above) and its children. Every hop repairs its own link (NACKs to its parent, retried by RTT)
//! and answers its children's NACKs from its caches — the NACK shield — so the origin hears one
//! NACK per lost packet per child link, however many viewers sit below. A child that joins gets
//! the keyframe run at once; a parent that dies is replaced by the next rendezvous choice, whose
//! keyframe run fills the gap without any viewer reconnecting. Tracks nobody wants any more are
//! pruned upward after a grace period.
//!
//! Streams are found through a directory with no central database: a stream's home node is the
//! rendezvous choice among the tier-0 members (the gateways) this node can reach; the origin
//! announces there and any gateway looks it up there. A gateway whose link failed drops out of
//! every node's choice as each notices (its links time out within a second), so its streams'
//! origins announce at the next choice and lookups go there; failed gateways are dialled again
//! every `failed_peer_backoff`, and one that answers is home again.
//!
//! The shell (QUIC) exchanges `Hello`s before reporting a link up, measures RTT, and carries the
//! outputs; this type never sees a socket or a clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Codec;
use crate::data_track::DataTrackParams;
use crate::directory::{Answer, Asker, Directory};
use crate::gap_tracker::{Arrival, GapTracker, RepairConfig};
use crate::h264_stream::H264Inspector;
use crate::keyframe_cache::KeyframeCache;
use crate::keyframe_request::KeyframeRequests;
use crate::link::{
    ControlMessage, StreamOrigin, SubscribeOk, TrackKey, decode_datagram, encode_datagram,
    nack_messages,
};
use crate::packet::{MediaPacket, SharedPacket};
use crate::packet_cache::{CacheLimits, PacketCache};
use crate::placement;

/// The shell's handle for one link (one QUIC connection to one peer).
pub type LinkId = u64;

/// Settings of a node's tree behaviour.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// This node's id: its cluster address, as peers dial it and as membership lists and `Hello` name it.
    pub node_id: String,
    /// 0 for gateways (origins and edges), 1.. for relay tiers (higher is nearer the origins).
    pub tier: u8,
    /// Limits of each track's packet cache, which answers children's NACKs.
    pub cache: CacheLimits,
    /// Payload bytes each track's keyframe cache holds at most; a longer GOP is dropped and the cache waits
    /// for the next keyframe.
    pub keyframe_cache_bytes: usize,
    /// How this node repairs each track's link from its parent.
    pub repair: RepairConfig,
    /// A track nobody below wants is kept this long before the node unsubscribes upward.
    pub prune_grace: Duration,
    /// Keyframe requests for one track go upstream at most once per this interval; the rest ride along.
    pub keyframe_request_interval: Duration,
    /// Largest datagram the links carry.
    pub max_datagram: usize,
    /// A peer whose link failed is not chosen as a parent again for this long.
    pub failed_peer_backoff: Duration,
    /// Children one node feeds for one track at most; further children are redirected to the
    /// next rendezvous choice of the tier (an origin, with nowhere to redirect to, takes all).
    pub fanout_limit: usize,
}

impl TreeConfig {
    /// The defaults for node `node_id` in `tier`.
    pub fn new(node_id: impl Into<String>, tier: u8) -> Self {
        TreeConfig {
            node_id: node_id.into(),
            tier,
            cache: CacheLimits::default(),
            keyframe_cache_bytes: 16 * 1024 * 1024,
            // A re-parent takes about a link idle timeout; missing packets stay worth asking for.
            repair: RepairConfig {
                give_up_after: Duration::from_secs(3),
                ..RepairConfig::default()
            },
            prune_grace: Duration::from_secs(5),
            keyframe_request_interval: Duration::from_millis(500),
            max_datagram: 1400,
            failed_peer_backoff: Duration::from_secs(10),
            fanout_limit: 100,
        }
    }
}

/// What the node asks its shell (or its gateway) to do.
#[derive(Debug, Clone)]
pub enum TreeOutput {
    /// Open a link to this peer (its node id is its cluster address).
    Connect {
        /// The peer's node id.
        peer: String,
    },
    /// Send a control message on a link.
    Send {
        /// The link to send on.
        link: LinkId,
        /// The message.
        msg: ControlMessage,
    },
    /// Send a media datagram on a link.
    Datagram {
        /// The link to send on.
        link: LinkId,
        /// The encoded datagram.
        bytes: Bytes,
    },
    /// A packet of a track subscribed locally (the gateway's viewers).
    Deliver {
        /// The track.
        track: TrackKey,
        /// The packet.
        packet: SharedPacket,
    },
    /// The answer to every `subscribe` and `replay`: the track's keyframe run as a new local
    /// viewer starts from it (empty when this node has none yet: live packets bring the next).
    Run {
        /// The track.
        track: TrackKey,
        /// The run, parameter sets first where needed.
        packets: Vec<SharedPacket>,
        /// H264: the latest SPS and PPS this hop saw, for a viewer that must start at a later
        /// live keyframe sent without them (the run may be empty).
        parameter_sets: Option<crate::ParameterSets>,
    },
    /// A locally subscribed track is flowing; its codec description.
    TrackReady {
        /// The track.
        track: TrackKey,
        /// The track's codec description.
        info: SubscribeOk,
    },
    /// A locally subscribed track is gone (its publisher left or its origin is unreachable).
    TrackEnded {
        /// The track.
        track: TrackKey,
    },
    /// Origin only: ask the local publisher for a keyframe.
    KeyframeRequest {
        /// The track.
        track: TrackKey,
    },
    /// The answer to a local `lookup`.
    StreamLocation {
        /// The stream asked about.
        stream: String,
        /// Where it is published; `None` when it is not live or its home could not be reached.
        origin: Option<StreamOrigin>,
    },
}

/// Counters for the node's stats endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Packets taken into a track for the first time, from the local publisher or a parent (repairs
    /// included, duplicates not).
    pub packets_in: u64,
    /// Media datagrams handed to the shell for children: live packets, keyframe runs, repairs and resends.
    pub datagrams_out: u64,
    /// Packets handed to local subscribers, keyframe runs included.
    pub delivered: u64,
    /// Packets from the parent that repair did not need (already held, or given up), asked for by no child.
    pub duplicates: u64,
    /// Sequence numbers children NACKed.
    pub nacks_received: u64,
    /// NACKed packets answered from this node's caches.
    pub nacks_answered: u64,
    /// NACKed packets this node misses too: its own repair brings them, once, to everyone.
    pub nacks_waiting: u64,
    /// NACKed packets this node does not hold, is not repairing and cannot ask its parent for.
    pub nacks_missed: u64,
    /// NACKed packets older than this node's own first packet, asked of the parent once for
    /// however many children wanted them.
    pub nacks_forwarded: u64,
    /// Sequence numbers NACKed to parents: this node's own repair and the forwarded ones.
    pub nacks_sent: u64,
    /// Keyframe requests from local viewers and children.
    pub keyframe_requests_received: u64,
    /// Keyframe requests sent upstream (to the parent, or at the origin to the local publisher).
    pub keyframe_requests_sent: u64,
    /// Keyframe requests that rode along with one already waiting to go upstream.
    pub keyframe_requests_aggregated: u64,
    /// Times a track chose its parent again because the old one died, could not be reached or is leaving.
    pub reparents: u64,
    /// Children sent to the next choice because this node was at its fan-out limit.
    pub redirects_sent: u64,
    /// Tracks dropped after nobody wanted them for the prune grace.
    pub pruned: u64,
    /// Datagrams from links that did not decode, or that overflowed the buffer for unknown channels.
    pub bad_datagrams: u64,
    /// Packets too large for a datagram, not sent.
    pub oversized: u64,
}

/// A link's view of one track: a child's, or the parent's.
#[derive(Debug)]
struct Link {
    peer: String,
    next_channel: u32,
    /// Channels we assigned for tracks we send on this link.
    out: HashMap<u32, TrackKey>,
    /// Channels the peer assigned for tracks it sends us.
    inbound: HashMap<u32, TrackKey>,
    /// Datagrams that overtook their channel's `SubscribeOk` (QUIC does not order datagrams
    /// against stream data), replayed when it arrives.
    early: Vec<(u32, SharedPacket, bool)>,
    rtt: Duration,
}

/// Early datagrams kept per link at most (a keyframe run is a few hundred packets).
const MAX_EARLY: usize = 4096;
/// When a reliable data track's newest packet is sent to the children again, after it was
/// taken in: a lost last fragment is then repaired within about the second probe.
const TAIL_PROBES: [Duration; 2] = [Duration::from_millis(60), Duration::from_millis(300)];
/// Child NACKs forwarded upstream and not yet answered, per track at most.
const MAX_UPSTREAM: usize = 4096;
/// How often a node sends all its stream announcements to their homes again.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct NodeTrack {
    hash_key: Vec<u8>,
    info: Option<SubscribeOk>,
    origin: bool,
    parent: Option<String>,
    parent_link: Option<LinkId>,
    parent_channel: Option<u32>,
    subscribed: bool,
    /// The link of a parent that is draining, which keeps feeding the track until the new
    /// parent's first datagram arrives (then it is unsubscribed): no packet falls between.
    leaving: Option<LinkId>,
    /// Parents that redirected this track away (full); skipped when choosing.
    redirected_by: Vec<String>,
    cache: PacketCache,
    keyframes: KeyframeCache,
    gaps: GapTracker,
    children: Vec<(LinkId, u32)>,
    waiting_children: Vec<LinkId>,
    /// Packets asked of the parent on behalf of children: seq → (asked at, who asked).
    upstream: BTreeMap<u64, (Instant, Vec<LinkId>)>,
    local: bool,
    idle_since: Option<Instant>,
    keyframe_requests: KeyframeRequests,
    /// Data channel tracks: how their messages are delivered (None for media).
    data: Option<DataTrackParams>,
    /// Highest sequence number this node has taken in.
    highest_seq: Option<u64>,
    /// Reliable data tracks: when to send children the newest packet again, and how often it
    /// has been sent again. A lost last fragment is otherwise noticed only when the next message
    /// comes (a gap is seen from the packet after it), and chat may pause for minutes.
    tail_probe: Option<(Instant, u8)>,
    /// H264 only: the latest in-band SPS/PPS, so that a run replayed to a new subscriber can be
    /// preceded by them when its keyframe came without (encoders that send them only at start
    /// would otherwise leave every later subscriber unable to decode).
    h264: Option<H264Inspector>,
}

impl NodeTrack {
    fn new(key: &TrackKey, config: &TreeConfig) -> NodeTrack {
        NodeTrack {
            hash_key: hash_key(key),
            info: None,
            origin: false,
            parent: None,
            parent_link: None,
            parent_channel: None,
            subscribed: false,
            leaving: None,
            redirected_by: Vec::new(),
            cache: PacketCache::new(config.cache),
            keyframes: KeyframeCache::new(config.keyframe_cache_bytes),
            gaps: GapTracker::new(config.repair),
            children: Vec::new(),
            waiting_children: Vec::new(),
            upstream: BTreeMap::new(),
            local: false,
            idle_since: None,
            keyframe_requests: KeyframeRequests::new(config.keyframe_request_interval),
            data: None,
            highest_seq: None,
            tail_probe: None,
            h264: None,
        }
    }

    /// Learn from a packet of the track (parameter sets, for `replay`).
    fn inspect(&mut self, packet: &MediaPacket) {
        if self
            .info
            .as_ref()
            .is_some_and(|i| i.codec == crate::Codec::H264)
        {
            self.h264
                .get_or_insert_with(H264Inspector::new)
                .push(packet.rtp_time, &packet.payload);
        }
    }

    /// The keyframe run as a new subscriber gets it: behind a STAP-A of the latest SPS and PPS
    /// when its first frame carries no SPS (sequence number just before the run, same
    /// timestamp, so every hop and viewer places it in front of the keyframe).
    fn replay(&self) -> Vec<SharedPacket> {
        let sets = self.h264.as_ref().and_then(|h| h.parameter_sets());
        self.keyframes.start_run(sets)
    }

    fn parameter_sets(&self) -> Option<crate::ParameterSets> {
        let (sps, pps) = self.h264.as_ref()?.parameter_sets()?;
        Some((sps.into(), pps.into()))
    }

    fn wanted(&self) -> bool {
        self.local || !self.children.is_empty() || !self.waiting_children.is_empty()
    }

    /// A packet by sequence number, from the recent-packet cache or the keyframe run (which
    /// reaches further back, so a hop that lost its parent for a second can still be repaired).
    fn find(&self, seq: u64) -> Option<&SharedPacket> {
        self.cache
            .get(seq)
            .or_else(|| self.keyframes.run().find(|p| p.seq == seq))
    }
}

fn hash_key(key: &TrackKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.origin.len() + key.name.len() + 18);
    v.extend_from_slice(key.origin.as_bytes());
    v.push(b'/');
    v.extend_from_slice(&key.session);
    v.push(b'/');
    v.extend_from_slice(key.name.as_bytes());
    v
}

/// One node's tree state.
#[derive(Debug)]
pub struct TreeNode {
    config: TreeConfig,
    links: HashMap<LinkId, Link>,
    by_peer: HashMap<String, LinkId>,
    members: BTreeMap<u8, Vec<String>>,
    failed: HashMap<String, Instant>,
    connecting: HashSet<String>,
    /// When every announcement was last sent to its home again (`REANNOUNCE_EVERY`).
    reannounced: Option<Instant>,
    tracks: HashMap<TrackKey, NodeTrack>,
    /// As a stream's home node: where its publisher is.
    directory: Directory<LinkId>,
    /// As an origin: what we announced, re-sent when a home link comes (back) up.
    announced: HashMap<String, StreamOrigin>,
    lookups: HashSet<String>,
    /// This node is leaving: children are asked to move, new ones are turned away.
    draining: bool,
    /// Peers that said they are leaving: chosen as parent for nothing.
    draining_peers: HashSet<String>,
    out: VecDeque<TreeOutput>,
    stats: TreeStats,
}

impl TreeNode {
    /// A node with no links, no members and no tracks.
    pub fn new(config: TreeConfig) -> TreeNode {
        TreeNode {
            config,
            links: HashMap::new(),
            by_peer: HashMap::new(),
            members: BTreeMap::new(),
            failed: HashMap::new(),
            connecting: HashSet::new(),
            reannounced: None,
            tracks: HashMap::new(),
            directory: Directory::default(),
            announced: HashMap::new(),
            lookups: HashSet::new(),
            draining: false,
            draining_peers: HashSet::new(),
            out: VecDeque::new(),
            stats: TreeStats::default(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The node's counters so far.
    pub fn stats(&self) -> TreeStats {
        self.stats
    }

    /// The next thing the shell must do; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<TreeOutput> {
        self.out.pop_front()
    }

    /// Tracks this node holds, with their child count and parent.
    pub fn tracks(&self) -> Vec<(TrackKey, usize, Option<String>)> {
        self.tracks
            .iter()
            .map(|(k, t)| (k.clone(), t.children.len(), t.parent.clone()))
            .collect()
    }

    /// The node the track comes from; `None` when the track is not held here, is published here, or has no
    /// parent yet.
    pub fn parent_of(&self, track: &TrackKey) -> Option<&str> {
        self.tracks.get(track).and_then(|t| t.parent.as_deref())
    }

    // ----- membership and links -----

    /// The live members of one tier (ids include this node when it is in that tier).
    pub fn set_members(&mut self, tier: u8, mut ids: Vec<String>, now: Instant) {
        ids.sort();
        ids.dedup();
        let changed = self.members.get(&tier) != Some(&ids);
        self.members.insert(tier, ids);
        if tier == 0 && changed {
            self.directory.view_changed(now);
            // A stream's home may have moved.
            let streams: Vec<String> = self.announced.keys().cloned().collect();
            for s in streams {
                self.send_announce(&s);
            }
        }
    }

    /// The shell connected to `peer` (Hellos exchanged).
    pub fn link_up(&mut self, link: LinkId, peer: String, now: Instant) {
        self.connecting.remove(&peer);
        if self.failed.remove(&peer).is_some() && self.is_gateway(&peer) {
            // A gateway back from the dead is a stream home again.
            self.directory.view_changed(now);
        }
        self.by_peer.insert(peer.clone(), link);
        self.links.insert(
            link,
            Link {
                peer: peer.clone(),
                next_channel: 1,
                out: HashMap::new(),
                inbound: HashMap::new(),
                early: Vec::new(),
                rtt: Duration::from_millis(20),
            },
        );
        let waiting: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.parent.as_deref() == Some(peer.as_str()) && !t.subscribed)
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.subscribe_upstream(&key, now);
        }
        let home_streams: Vec<String> = self
            .announced
            .keys()
            .filter(|s| self.home(s).as_deref() == Some(peer.as_str()))
            .cloned()
            .collect();
        for s in home_streams {
            self.send_announce(&s);
        }
        let lookups: Vec<String> = self
            .lookups
            .iter()
            .filter(|s| self.home(s).as_deref() == Some(peer.as_str()))
            .cloned()
            .collect();
        for s in lookups {
            self.out.push_back(TreeOutput::Send {
                link,
                msg: ControlMessage::StreamLookup { stream: s },
            });
        }
    }

    /// A connection attempt to `peer` failed.
    pub fn connect_failed(&mut self, peer: &str, now: Instant) {
        self.connecting.remove(peer);
        if self.by_peer.contains_key(peer) {
            // The peer dialled us meanwhile: there is a link, nothing failed.
            return;
        }
        self.unreachable(peer, now);
    }

    /// `peer` cannot be reached: it is no stream's home any more (announcements and lookups homed
    /// there go to the next choice, rather than wait for it or be answered "not found"), and its
    /// tracks re-parent.
    fn unreachable(&mut self, peer: &str, now: Instant) {
        let homed = |s: &&String| self.home(s).as_deref() == Some(peer);
        let lookups: Vec<String> = self.lookups.iter().filter(homed).cloned().collect();
        let announced: Vec<String> = self.announced.keys().filter(homed).cloned().collect();
        if self.failed.insert(peer.to_string(), now).is_none() && self.is_gateway(peer) {
            self.directory.view_changed(now);
        }
        for stream in lookups {
            self.lookups.remove(&stream);
            self.lookup(&stream, now);
        }
        for stream in announced {
            self.send_announce(&stream);
        }
        self.reparent_from(peer, now);
    }

    /// A link closed or timed out.
    pub fn link_down(&mut self, link: LinkId, now: Instant) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        for t in self.tracks.values_mut() {
            if t.leaving == Some(link) {
                t.leaving = None;
            }
        }
        if self.by_peer.get(&l.peer) == Some(&link) {
            self.by_peer.remove(&l.peer);
        }
        self.directory.forget_link(link);
        let other = self.by_peer.get(&l.peer).copied();
        // Children behind this link are gone.
        let keys: Vec<TrackKey> = self.tracks.keys().cloned().collect();
        for key in &keys {
            if let Some(t) = self.tracks.get_mut(key) {
                t.children.retain(|(c, _)| *c != link);
                t.waiting_children.retain(|c| *c != link);
                if !t.wanted() && !t.origin && t.idle_since.is_none() {
                    t.idle_since = Some(now);
                }
            }
        }
        if let Some(live) = other {
            // A spare link to a healthy peer closed (both sides had dialled): move what used it
            // to the link that is still up; the peer has not failed.
            let moved: Vec<TrackKey> = self
                .tracks
                .iter()
                .filter(|(_, t)| t.parent_link == Some(link))
                .map(|(k, _)| k.clone())
                .collect();
            for key in moved {
                if let Some(t) = self.tracks.get_mut(&key) {
                    t.parent_link = Some(live);
                    t.parent_channel = None;
                    t.subscribed = false;
                }
                self.subscribe_upstream(&key, now);
            }
            return;
        }
        self.directory.forget_node(&l.peer);
        self.unreachable(&l.peer, now);
    }

    /// The link's current round-trip time, which spaces NACK retries on it.
    pub fn set_rtt(&mut self, link: LinkId, rtt: Duration) {
        if let Some(l) = self.links.get_mut(&link) {
            l.rtt = rtt;
        }
    }

    fn reparent_from(&mut self, peer: &str, now: Instant) {
        let orphans: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.parent.as_deref() == Some(peer))
            .map(|(k, _)| k.clone())
            .collect();
        for key in orphans {
            if let Some(t) = self.tracks.get_mut(&key) {
                t.parent = None;
                t.parent_link = None;
                t.parent_channel = None;
                t.subscribed = false;
            }
            self.stats.reparents += 1;
            self.attach_upstream(&key, now);
        }
    }

    fn link_to(&mut self, peer: &str) -> Option<LinkId> {
        if let Some(l) = self.by_peer.get(peer) {
            return Some(*l);
        }
        if self.connecting.insert(peer.to_string()) {
            self.out.push_back(TreeOutput::Connect {
                peer: peer.to_string(),
            });
        }
        None
    }

    fn usable(&self, peer: &str, now: Instant) -> bool {
        peer != self.config.node_id
            && !self.draining_peers.contains(peer)
            && self.failed.get(peer).is_none_or(|t| {
                now.saturating_duration_since(*t) >= self.config.failed_peer_backoff
            })
    }

    /// The parent for a track: the rendezvous choice in the nearest tier above that has a
    /// usable member, else the origin itself.
    fn choose_parent(
        &self,
        key: &TrackKey,
        hash_key: &[u8],
        skip: &[String],
        now: Instant,
    ) -> Option<String> {
        for (_, members) in self.members.range(self.config.tier + 1..) {
            let live: Vec<&str> = members
                .iter()
                .map(String::as_str)
                .filter(|m| self.usable(m, now))
                .collect();
            // Rendezvous order; members that said they are full for this track are passed over.
            let choice = placement::ranked(&live, hash_key)
                .into_iter()
                .find(|m| !skip.iter().any(|s| s == m));
            if let Some(p) = choice {
                return Some(p.to_string());
            }
        }
        (key.origin != self.config.node_id && self.usable(&key.origin, now))
            .then(|| key.origin.clone())
    }

    fn attach_upstream(&mut self, key: &TrackKey, now: Instant) {
        let Some(t) = self.tracks.get(key) else {
            return;
        };
        if t.origin {
            return;
        }
        match self.choose_parent(key, &t.hash_key.clone(), &t.redirected_by.clone(), now) {
            Some(parent) => {
                if let Some(t) = self.tracks.get_mut(key) {
                    t.parent = Some(parent.clone());
                }
                if self.link_to(&parent).is_some() {
                    self.subscribe_upstream(key, now);
                }
            }
            None => self.end_track(key),
        }
    }

    fn subscribe_upstream(&mut self, key: &TrackKey, now: Instant) {
        let Some(t) = self.tracks.get_mut(key) else {
            return;
        };
        let Some(parent) = t.parent.clone() else {
            return;
        };
        let Some(link) = self.by_peer.get(&parent).copied() else {
            return;
        };
        t.parent_link = Some(link);
        t.subscribed = true;
        t.gaps.parent_changed(now);
        self.out.push_back(TreeOutput::Send {
            link,
            msg: ControlMessage::Subscribe { track: key.clone() },
        });
    }

    // ----- local (gateway) side -----

    /// This node's publisher has a track (we are its origin).
    pub fn publish(&mut self, info: SubscribeOk) {
        let key = info.track.clone();
        let t = self
            .tracks
            .entry(key)
            .or_insert_with_key(|k| NodeTrack::new(k, &self.config));
        t.origin = true;
        t.data = DataTrackParams::from_fmtp(&info.fmtp).filter(|_| info.codec == Codec::Other);
        t.info = Some(info);
        t.idle_since = None;
    }

    /// A packet of a published track, from the local publisher.
    pub fn local_packet(&mut self, track: &TrackKey, packet: SharedPacket, now: Instant) {
        self.ingest(track, packet, false, false, now);
    }

    /// The local publisher's track ended.
    pub fn unpublish(&mut self, track: &TrackKey) {
        self.end_track(track);
    }

    /// Local viewers want a track (published anywhere in the cluster).
    pub fn subscribe(&mut self, track: &TrackKey, now: Instant) {
        let created = !self.tracks.contains_key(track);
        let t = self
            .tracks
            .entry(track.clone())
            .or_insert_with_key(|k| NodeTrack::new(k, &self.config));
        t.local = true;
        t.idle_since = None;
        if let Some(info) = t.info.clone() {
            self.out.push_back(TreeOutput::TrackReady {
                track: track.clone(),
                info,
            });
        }
        self.replay(track);
        if created {
            if track.origin == self.config.node_id {
                self.end_track(track);
            } else {
                self.attach_upstream(track, now);
            }
        }
    }

    /// Another local viewer starts: answered by one `TreeOutput::Run`, in order with the
    /// track's `Deliver`s, so the run and the live packets after it neither overlap nor leave a
    /// gap. This node's keyframe cache is the only one the gateway on it needs.
    pub fn replay(&mut self, track: &TrackKey) {
        let (packets, parameter_sets) = self
            .tracks
            .get(track)
            .map(|t| (t.replay(), t.parameter_sets()))
            .unwrap_or_default();
        self.stats.delivered += packets.len() as u64;
        self.out.push_back(TreeOutput::Run {
            track: track.clone(),
            packets,
            parameter_sets,
        });
    }

    /// Local viewers no longer want the track: once no child wants it either, it is pruned after the prune
    /// grace (a track published here is kept).
    pub fn unsubscribe(&mut self, track: &TrackKey, now: Instant) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.local = false;
            if !t.wanted() && !t.origin {
                t.idle_since = Some(now);
            }
        }
    }

    /// A local viewer asked for a keyframe.
    pub fn request_keyframe(&mut self, track: &TrackKey, now: Instant) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.keyframe_requests.request(now);
            self.stats.keyframe_requests_received += 1;
        }
    }

    /// Register a stream published here at its home node.
    pub fn announce(&mut self, stream: String, origin: StreamOrigin) {
        self.announced.insert(stream.clone(), origin);
        self.send_announce(&stream);
    }

    /// The publisher of `stream` (session `session`) left: forget the announcement here and at the stream's
    /// home node. A withdraw for another session is ignored, so a stream republished meanwhile stays listed.
    pub fn withdraw(&mut self, stream: &str, session: [u8; 16]) {
        if self
            .announced
            .get(stream)
            .is_some_and(|o| o.session == session)
        {
            self.announced.remove(stream);
        }
        match self.home(stream) {
            Some(home) if home == self.config.node_id => {
                let own = self.config.node_id.clone();
                self.directory.withdraw(stream, &own, session);
            }
            Some(home) => {
                if let Some(link) = self.by_peer.get(&home).copied() {
                    let msg = ControlMessage::StreamWithdraw {
                        stream: stream.to_string(),
                        session,
                    };
                    self.out.push_back(TreeOutput::Send { link, msg });
                }
            }
            None => {}
        }
    }

    /// Where is this stream published? Answered with `TreeOutput::StreamLocation`.
    pub fn lookup(&mut self, stream: &str, now: Instant) {
        match self.home(stream) {
            Some(home) if home == self.config.node_id => {
                if let Some(a) = self.directory.lookup(stream, Asker::Local, true, now) {
                    self.answer(a);
                }
            }
            Some(home) => {
                self.lookups.insert(stream.to_string());
                if let Some(link) = self.link_to(&home) {
                    let msg = ControlMessage::StreamLookup {
                        stream: stream.to_string(),
                    };
                    self.out.push_back(TreeOutput::Send { link, msg });
                }
            }
            None => self.out.push_back(TreeOutput::StreamLocation {
                stream: stream.to_string(),
                origin: None,
            }),
        }
    }

    /// A directory lookup's answer, to this node or to the peer that asked.
    fn answer(&mut self, a: Answer<LinkId>) {
        let (stream, origin) = (a.stream, a.origin);
        match a.asker {
            Asker::Local => self
                .out
                .push_back(TreeOutput::StreamLocation { stream, origin }),
            Asker::Peer(link) => self.out.push_back(TreeOutput::Send {
                link,
                msg: ControlMessage::StreamLocation { stream, origin },
            }),
        }
    }

    fn is_gateway(&self, peer: &str) -> bool {
        self.members
            .get(&0)
            .is_some_and(|g| g.iter().any(|m| m == peer))
    }

    /// The stream's home: the rendezvous choice among the gateways not known to have failed.
    /// A failed gateway stays out until a link to it comes up again (not merely until its
    /// backoff ends), so that the choice does not flap while it is dead.
    fn home(&self, stream: &str) -> Option<String> {
        let gateways = self.members.get(&0)?;
        let reachable: Vec<&str> = gateways
            .iter()
            .map(String::as_str)
            .filter(|g| !self.failed.contains_key(*g))
            .collect();
        placement::home_node(stream, &reachable[..]).map(str::to_string)
    }

    fn send_announce(&mut self, stream: &str) {
        let Some(origin) = self.announced.get(stream).cloned() else {
            return;
        };
        match self.home(stream) {
            Some(home) if home == self.config.node_id => {
                for a in self.directory.insert(stream.to_string(), origin) {
                    self.answer(a);
                }
            }
            Some(home) => {
                if let Some(link) = self.link_to(&home) {
                    let msg = ControlMessage::StreamAnnounce {
                        stream: stream.to_string(),
                        origin,
                    };
                    self.out.push_back(TreeOutput::Send { link, msg });
                }
            }
            None => {}
        }
    }

    // ----- from links -----

    /// A control message from the peer on `link` (a link that is not up is ignored).
    pub fn on_control(&mut self, link: LinkId, msg: ControlMessage, now: Instant) {
        if !self.links.contains_key(&link) {
            return;
        }
        match msg {
            ControlMessage::Subscribe { track } => self.on_subscribe(link, track, now),
            ControlMessage::Unsubscribe { track } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.children.retain(|(c, _)| *c != link);
                    t.waiting_children.retain(|c| *c != link);
                    if !t.wanted() && !t.origin {
                        t.idle_since = Some(now);
                    }
                }
                if let Some(l) = self.links.get_mut(&link) {
                    l.out.retain(|_, k| *k != track);
                }
            }
            ControlMessage::SubscribeOk(ok) => self.on_subscribe_ok(link, ok, now),
            ControlMessage::Redirect { track } => {
                let from_parent = self
                    .tracks
                    .get(&track)
                    .is_some_and(|t| t.parent_link == Some(link));
                if from_parent {
                    let peer = self
                        .links
                        .get(&link)
                        .map(|l| l.peer.clone())
                        .unwrap_or_default();
                    if let Some(t) = self.tracks.get_mut(&track) {
                        t.redirected_by.push(peer);
                        t.parent = None;
                        t.parent_link = None;
                        t.parent_channel = None;
                        t.subscribed = false;
                    }
                    self.attach_upstream(&track, now);
                }
            }
            ControlMessage::TrackEnded { track } => {
                let from_parent = self
                    .tracks
                    .get(&track)
                    .is_some_and(|t| t.parent_link == Some(link));
                if from_parent {
                    self.end_track(&track);
                }
            }
            ControlMessage::Draining => self.on_peer_draining(link, now),
            ControlMessage::KeyframeRequest { channel } => {
                let key = self
                    .links
                    .get(&link)
                    .and_then(|l| l.out.get(&channel))
                    .cloned();
                if let Some(key) = key {
                    self.request_keyframe(&key, now);
                }
            }
            ControlMessage::Nack { channel, seqs } => self.on_nack(link, channel, &seqs, now),
            ControlMessage::StreamAnnounce { stream, origin } => {
                for a in self.directory.insert(stream, origin) {
                    self.answer(a);
                }
            }
            ControlMessage::StreamWithdraw { stream, session } => {
                // The session and the node: a session resumed on another gateway keeps its id,
                // and the old gateway's withdraw must not take the new one's announcement.
                if let Some(peer) = self.links.get(&link).map(|l| l.peer.clone()) {
                    self.directory.withdraw(&stream, &peer, session);
                }
            }
            ControlMessage::StreamLookup { stream } => {
                let agrees = self.home(&stream).as_deref() == Some(self.config.node_id.as_str());
                if let Some(a) = self
                    .directory
                    .lookup(&stream, Asker::Peer(link), agrees, now)
                {
                    self.answer(a);
                }
            }
            ControlMessage::StreamLocation { stream, origin } => {
                if self.lookups.remove(&stream) {
                    self.out
                        .push_back(TreeOutput::StreamLocation { stream, origin });
                }
            }
            // Handshake, keep-alive and close are the shell's business.
            ControlMessage::Hello(_)
            | ControlMessage::HelloAck
            | ControlMessage::Close { .. }
            | ControlMessage::Ping { .. }
            | ControlMessage::Pong { .. } => {}
        }
    }

    fn on_subscribe(&mut self, link: LinkId, track: TrackKey, now: Instant) {
        if self.draining && track.origin != self.config.node_id {
            // Leaving: the child's next rendezvous choice serves it instead.
            self.stats.redirects_sent += 1;
            self.out.push_back(TreeOutput::Send {
                link,
                msg: ControlMessage::Redirect { track },
            });
            return;
        }
        let exists = self.tracks.contains_key(&track);
        if !exists && track.origin == self.config.node_id {
            // Our publisher is gone (or never was).
            self.out.push_back(TreeOutput::Send {
                link,
                msg: ControlMessage::TrackEnded { track },
            });
            return;
        }
        let t = self
            .tracks
            .entry(track.clone())
            .or_insert_with_key(|k| NodeTrack::new(k, &self.config));
        t.idle_since = None;
        if t.children.iter().any(|(c, _)| *c == link) || t.waiting_children.contains(&link) {
            return;
        }
        if !t.origin && t.children.len() + t.waiting_children.len() >= self.config.fanout_limit {
            self.stats.redirects_sent += 1;
            self.out.push_back(TreeOutput::Send {
                link,
                msg: ControlMessage::Redirect { track },
            });
            return;
        }
        if t.info.is_some() {
            self.accept_child(&track, link);
        } else {
            t.waiting_children.push(link);
        }
        if !exists {
            self.attach_upstream(&track, now);
        }
    }

    /// Give a child the track: a channel, the codec description, then the keyframe run.
    fn accept_child(&mut self, key: &TrackKey, link: LinkId) {
        let (Some(t), Some(l)) = (self.tracks.get_mut(key), self.links.get_mut(&link)) else {
            return;
        };
        let Some(mut info) = t.info.clone() else {
            return;
        };
        let channel = l.next_channel;
        l.next_channel = l.next_channel.wrapping_add(1).max(1);
        l.out.insert(channel, key.clone());
        info.channel = channel;
        info.track = key.clone();
        let run = t.replay();
        info.first_seq = match (run.first(), t.data) {
            (Some(p), _) => p.seq,
            // A data track has no run: the child wants everything from the next packet on
            // (a track's fragmenter starts at 0), so that it can repair even the first.
            (None, Some(_)) => t.highest_seq.map_or(0, |h| h + 1),
            (None, None) => u64::MAX,
        };
        t.children.push((link, channel));
        self.out.push_back(TreeOutput::Send {
            link,
            msg: ControlMessage::SubscribeOk(info),
        });
        for p in &run {
            match encode_datagram(p, channel, false, self.config.max_datagram) {
                Ok(bytes) => {
                    self.stats.datagrams_out += 1;
                    self.out.push_back(TreeOutput::Datagram { link, bytes });
                }
                Err(_) => self.stats.oversized += 1,
            }
        }
    }

    fn on_subscribe_ok(&mut self, link: LinkId, ok: SubscribeOk, now: Instant) {
        let key = ok.track.clone();
        let Some(t) = self.tracks.get_mut(&key) else {
            return;
        };
        if t.parent_link != Some(link) {
            return;
        }
        t.parent_channel = Some(ok.channel);
        let first = t.info.is_none();
        t.data = DataTrackParams::from_fmtp(&ok.fmtp).filter(|_| ok.codec == Codec::Other);
        t.info = Some(ok.clone());
        t.gaps.parent_changed(now);
        if first && ok.first_seq != u64::MAX {
            // Everything from the run's start on is wanted, even if its first packets are lost.
            t.gaps.expect_from(ok.first_seq, now);
        }
        let mut early = Vec::new();
        if let Some(l) = self.links.get_mut(&link) {
            l.inbound.insert(ok.channel, key.clone());
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut l.early)
                .into_iter()
                .partition(|(c, ..)| *c == ok.channel);
            l.early = rest;
            early = mine;
        }
        for (_, packet, retransmission) in early {
            self.ingest(&key, packet, true, retransmission, now);
        }
        let Some(t) = self.tracks.get_mut(&key) else {
            return;
        };
        let waiting = std::mem::take(&mut t.waiting_children);
        let local = t.local;
        for child in waiting {
            self.accept_child(&key, child);
        }
        if first && local {
            self.out.push_back(TreeOutput::TrackReady {
                track: key,
                info: ok,
            });
        }
    }

    /// Answer a child's NACK from the caches; what this node misses too arrives through its own
    /// repair, to every child at once.
    fn on_nack(&mut self, link: LinkId, channel: u32, seqs: &[u64], now: Instant) {
        let Some(key) = self
            .links
            .get(&link)
            .and_then(|l| l.out.get(&channel))
            .cloned()
        else {
            return;
        };
        let Some(t) = self.tracks.get_mut(&key) else {
            return;
        };
        let mut forward = Vec::new();
        for seq in seqs {
            self.stats.nacks_received += 1;
            match t.find(*seq) {
                Some(p) => match encode_datagram(p, channel, true, self.config.max_datagram) {
                    Ok(bytes) => {
                        self.stats.nacks_answered += 1;
                        self.stats.datagrams_out += 1;
                        self.out.push_back(TreeOutput::Datagram { link, bytes });
                    }
                    Err(_) => self.stats.oversized += 1,
                },
                None if t.gaps.is_missing(*seq) => self.stats.nacks_waiting += 1,
                // Older than anything this node received (it joined the tree later): ask the
                // parent once, and hand the answer to everyone who asked.
                None if !t.origin
                    && t.parent_channel.is_some()
                    && t.gaps.highest().is_some_and(|h| *seq < h) =>
                {
                    let entry = t.upstream.entry(*seq).or_insert_with(|| (now, Vec::new()));
                    if entry.1.is_empty() {
                        forward.push(*seq);
                    }
                    if !entry.1.contains(&link) {
                        entry.1.push(link);
                    }
                }
                None => self.stats.nacks_missed += 1,
            }
        }
        while t.upstream.len() > MAX_UPSTREAM {
            t.upstream.pop_first();
        }
        if let (false, Some(parent), Some(pchannel)) =
            (forward.is_empty(), t.parent_link, t.parent_channel)
        {
            self.stats.nacks_forwarded += forward.len() as u64;
            self.stats.nacks_sent += forward.len() as u64;
            for msg in nack_messages(pchannel, &forward) {
                self.out.push_back(TreeOutput::Send { link: parent, msg });
            }
        }
    }

    /// A media datagram from the peer on `link`, arrived at `now`.
    pub fn on_datagram(&mut self, link: LinkId, bytes: &[u8], now: Instant) {
        let Ok(d) = decode_datagram(bytes, now) else {
            self.stats.bad_datagrams += 1;
            return;
        };
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let Some(key) = l.inbound.get(&d.channel).cloned() else {
            if l.early.len() < MAX_EARLY {
                l.early
                    .push((d.channel, std::sync::Arc::new(d.packet), d.retransmission));
            } else {
                self.stats.bad_datagrams += 1;
            }
            return;
        };
        let Some(t) = self.tracks.get_mut(&key) else {
            return;
        };
        let from_new_parent = t.parent_link == Some(link);
        if !from_new_parent && t.leaving != Some(link) {
            return;
        }
        // The new parent's first datagram: the leaving one can stop (anything it would still
        // have sent, the new parent's run and stream carry, or repair fetches from it).
        let done = match t.leaving {
            Some(old) if from_new_parent && old != link => {
                t.leaving = None;
                Some(old)
            }
            _ => None,
        };
        if let Some(old) = done {
            self.out.push_back(TreeOutput::Send {
                link: old,
                msg: ControlMessage::Unsubscribe { track: key.clone() },
            });
        }
        self.ingest(
            &key,
            std::sync::Arc::new(d.packet),
            true,
            d.retransmission,
            now,
        );
    }

    // ----- drain -----

    /// Leave the cluster without a lost packet: tell every peer, turn new children away, and
    /// keep serving the ones there are until they have moved ([`TreeNode::is_drained`]).
    pub fn drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        for link in self.links.keys() {
            self.out.push_back(TreeOutput::Send {
                link: *link,
                msg: ControlMessage::Draining,
            });
        }
    }

    /// Draining, and no child is left to serve.
    pub fn is_drained(&self) -> bool {
        self.draining
            && self
                .tracks
                .values()
                .all(|t| t.children.is_empty() && t.waiting_children.is_empty())
    }

    /// The peer behind `link` is leaving: each track it feeds subscribes at its next choice
    /// now, and keeps taking the leaving parent's packets until the new one's arrive.
    fn on_peer_draining(&mut self, link: LinkId, now: Instant) {
        let Some(peer) = self.links.get(&link).map(|l| l.peer.clone()) else {
            return;
        };
        self.draining_peers.insert(peer.clone());
        let fed: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.parent_link == Some(link) && !t.origin)
            .map(|(k, _)| k.clone())
            .collect();
        for key in fed {
            let Some(t) = self.tracks.get(&key) else {
                continue;
            };
            let Some(next) =
                self.choose_parent(&key, &t.hash_key.clone(), &t.redirected_by.clone(), now)
            else {
                // Nowhere else to go: stay until the link closes, then re-parent as ever.
                continue;
            };
            if let Some(t) = self.tracks.get_mut(&key) {
                t.leaving = Some(link);
                t.parent = Some(next.clone());
                // No parent link until the new one's is up (`link_up` subscribes then).
                t.parent_link = None;
                t.subscribed = false;
                t.parent_channel = None;
            }
            self.stats.reparents += 1;
            if self.link_to(&next).is_some() {
                self.subscribe_upstream(&key, now);
            }
        }
    }

    /// A packet enters this node: cache it once, send it to every child and local viewer.
    fn ingest(
        &mut self,
        key: &TrackKey,
        packet: SharedPacket,
        from_parent: bool,
        _retransmission: bool,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get_mut(key) else {
            return;
        };
        if from_parent {
            let requested = t.upstream.remove(&packet.seq);
            if t.gaps.on_packet(packet.seq, now) == Arrival::Duplicate {
                match requested {
                    // A repair fetched for children that asked: only they get it.
                    Some((_, askers)) => {
                        t.cache.insert(packet.clone(), now);
                        for link in askers {
                            let Some(channel) = t
                                .children
                                .iter()
                                .find(|(c, _)| *c == link)
                                .map(|(_, ch)| *ch)
                            else {
                                continue;
                            };
                            if let Ok(bytes) =
                                encode_datagram(&packet, channel, true, self.config.max_datagram)
                            {
                                self.stats.datagrams_out += 1;
                                self.out.push_back(TreeOutput::Datagram { link, bytes });
                            }
                        }
                    }
                    None => self.stats.duplicates += 1,
                }
                return;
            }
        }
        self.stats.packets_in += 1;
        t.highest_seq = Some(t.highest_seq.map_or(packet.seq, |h| h.max(packet.seq)));
        if t.data.is_some_and(|d| d.reliable) {
            t.tail_probe = Some((now + TAIL_PROBES[0], 0));
        }
        t.cache.insert(packet.clone(), now);
        t.keyframes.push(&packet);
        t.inspect(&packet);
        for (link, channel) in &t.children {
            match encode_datagram(&packet, *channel, false, self.config.max_datagram) {
                Ok(bytes) => {
                    self.stats.datagrams_out += 1;
                    self.out
                        .push_back(TreeOutput::Datagram { link: *link, bytes });
                }
                Err(_) => self.stats.oversized += 1,
            }
        }
        if t.local {
            self.stats.delivered += 1;
            self.out.push_back(TreeOutput::Deliver {
                track: key.clone(),
                packet,
            });
        }
    }

    fn end_track(&mut self, key: &TrackKey) {
        let Some(t) = self.tracks.remove(key) else {
            return;
        };
        for (link, _) in &t.children {
            self.out.push_back(TreeOutput::Send {
                link: *link,
                msg: ControlMessage::TrackEnded { track: key.clone() },
            });
        }
        for link in &t.waiting_children {
            self.out.push_back(TreeOutput::Send {
                link: *link,
                msg: ControlMessage::TrackEnded { track: key.clone() },
            });
        }
        for (link, _) in &t.children {
            if let Some(l) = self.links.get_mut(link) {
                l.out.retain(|_, k| k != key);
            }
        }
        if let Some(link) = t.parent_link {
            if let Some(l) = self.links.get_mut(&link) {
                l.inbound.retain(|_, k| k != key);
            }
            if !t.origin {
                self.out.push_back(TreeOutput::Send {
                    link,
                    msg: ControlMessage::Unsubscribe { track: key.clone() },
                });
            }
        }
        if t.local {
            self.out
                .push_back(TreeOutput::TrackEnded { track: key.clone() });
        }
    }

    // ----- time -----

    /// Does what is due by `now`: NACKs and their retries, keyframe requests, pruning of unwanted tracks,
    /// another try for tracks without a parent and for announcements not yet sent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<TrackKey> = self.tracks.keys().cloned().collect();
        let mut prune = Vec::new();
        let mut retry = Vec::new();
        for key in keys {
            let Some(t) = self.tracks.get_mut(&key) else {
                continue;
            };
            if let (Some(link), Some(channel)) = (t.parent_link, t.parent_channel) {
                let rtt = self
                    .links
                    .get(&link)
                    .map_or(Duration::from_millis(20), |l| l.rtt);
                let seqs = t.gaps.poll_nacks(now, rtt);
                // An unreliable data channel's datagrams are not asked for again.
                let repaired = t.data.is_none_or(|d| d.reliable);
                if repaired && !seqs.is_empty() {
                    self.stats.nacks_sent += seqs.len() as u64;
                    for msg in nack_messages(channel, &seqs) {
                        self.out.push_back(TreeOutput::Send { link, msg });
                    }
                }
            }
            if let Some((at, sent)) = t.tail_probe
                && at <= now
            {
                let next = TAIL_PROBES.get(usize::from(sent) + 1);
                t.tail_probe = next.map(|d| (now + *d - TAIL_PROBES[usize::from(sent)], sent + 1));
                if let Some(p) = t.highest_seq.and_then(|h| t.cache.get(h)) {
                    for (link, channel) in &t.children {
                        if let Ok(bytes) =
                            encode_datagram(p, *channel, true, self.config.max_datagram)
                        {
                            self.stats.datagrams_out += 1;
                            self.out
                                .push_back(TreeOutput::Datagram { link: *link, bytes });
                        }
                    }
                }
            }
            let give_up = self.config.repair.give_up_after;
            t.upstream
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < give_up);
            if t.keyframe_requests.poll(now) {
                if t.origin {
                    self.stats.keyframe_requests_sent += 1;
                    self.out
                        .push_back(TreeOutput::KeyframeRequest { track: key.clone() });
                } else if let (Some(link), Some(channel)) = (t.parent_link, t.parent_channel) {
                    self.stats.keyframe_requests_sent += 1;
                    self.out.push_back(TreeOutput::Send {
                        link,
                        msg: ControlMessage::KeyframeRequest { channel },
                    });
                }
            }
            if t.idle_since
                .is_some_and(|s| now.saturating_duration_since(s) >= self.config.prune_grace)
                && !t.wanted()
            {
                prune.push(key.clone());
            }
            if !t.origin && t.parent.is_none() {
                retry.push(key.clone());
            }
        }
        for key in prune {
            self.stats.pruned += 1;
            self.end_track(&key);
        }
        for key in retry {
            self.attach_upstream(&key, now);
        }
        // Announcements whose home could not be reached yet: try again once it is usable.
        let unsent: Vec<String> = self
            .announced
            .keys()
            .filter(|s| {
                self.home(s).is_some_and(|h| {
                    h != self.config.node_id
                        && !self.by_peer.contains_key(&h)
                        && !self.connecting.contains(&h)
                        && self.usable(&h, now)
                })
            })
            .cloned()
            .collect();
        for s in unsent {
            self.send_announce(&s);
        }
        for a in self.directory.expire(now) {
            self.answer(a);
        }
        // A gateway keeps a link to every other gateway (the one with the lower id dials, so a
        // pair makes one link): each then notices a gateway's death by its link's idle timeout,
        // all within about a second of each other, so they agree on the next stream homes before
        // the dead gateway's sessions are resumed; and a lookup never waits on a dial. A failed
        // gateway is dialled again every `failed_peer_backoff`: one that came back is a home again.
        let revived: Vec<String> = match self.config.tier {
            0 => self
                .members
                .get(&0)
                .into_iter()
                .flatten()
                .filter(|g| {
                    g.as_str() > self.config.node_id.as_str()
                        && !self.connecting.contains(*g)
                        && !self.by_peer.contains_key(*g)
                        && self.usable(g, now)
                })
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        for g in revived {
            self.link_to(&g);
        }
        // Every announcement again, now and then: the directory is soft state, and an
        // announcement lost on its way (a link that went down with it, two links racing) or
        // withdrawn by a session's old gateway after the session moved (a resumed or adopted
        // session keeps its id) must come back without a publisher reconnecting.
        if self
            .reannounced
            .is_none_or(|at| now.saturating_duration_since(at) >= REANNOUNCE_EVERY)
        {
            self.reannounced = Some(now);
            let streams: Vec<String> = self.announced.keys().cloned().collect();
            for s in streams {
                self.send_announce(&s);
            }
        }
        self.stats.keyframe_requests_aggregated = self
            .tracks
            .values()
            .map(|t| t.keyframe_requests.aggregated())
            .sum::<u64>()
            .max(self.stats.keyframe_requests_aggregated);
    }

    /// When `handle_timeout` should next run (at the latest every `max_wait`).
    pub fn poll_timeout(&self, now: Instant, max_wait: Duration) -> Instant {
        let mut at = now + max_wait;
        for t in self.tracks.values() {
            if let Some(g) = t.gaps.poll_timeout() {
                at = at.min(g);
            }
            if let Some(k) = t.keyframe_requests.poll_timeout() {
                at = at.min(k);
            }
            if let Some(s) = t.idle_since {
                at = at.min(s + self.config.prune_grace);
            }
            if let Some((probe, _)) = t.tail_probe {
                at = at.min(probe);
            }
        }
        if let Some(held) = self.directory.poll_timeout() {
            at = at.min(held);
        }
        at
    }
}
