//! The node task: the one owner of a node's `TreeNode`, driven by tokio. It feeds the tree what
//! happens (local commands from the gateway, link events from `links.rs`, membership from static
//! config and DNS, time) and carries out what the tree asks (dial, send control, send datagrams,
//! deliver to the gateway). One task, no locks on the packet path: the tree is sans-IO and every
//! input is followed by draining its outputs, exactly as `tests/tree_sim.rs` wires it in memory.
//!
//! Membership is the static list plus, for each DNS name (a Kubernetes headless Service), the
//! addresses it resolves to, re-resolved every `dns_refresh`. A failed lookup keeps the last answer:
//! a DNS hiccup must not make every track re-parent; a successful answer without a member removes
//! it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::cluster_tls::{ClusterIdentity, LinkTiming};
use crate::links::{LinkEvent, LinkHandle, LinkStats, Links, LossShaper};
use relay_proto::SharedPacket;
use relay_proto::histogram::{HOP_BUCKETS, Histogram, HistogramSnapshot};
use relay_proto::link::{CloseCode, Hello, StreamOrigin, SubscribeOk, TrackKey};
use relay_proto::tree::{LinkId, TreeConfig, TreeNode, TreeOutput, TreeStats};

/// The tree's timers are asked for at least this often, so nothing waits on a missed wake-up.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// How often the stats snapshot and the links' RTTs are refreshed.
const STATS_EVERY: Duration = Duration::from_millis(200);
/// Inputs handled per wake-up before the outputs are drained (bounds latency under load).
const BATCH: usize = 256;

/// How to run one node of the cluster.
pub struct ClusterConfig {
    /// This node's cluster address as peers dial it, e.g. "127.0.0.1:7001".
    pub node_id: String,
    /// 0 gateway, 1.. relay tiers.
    pub tier: u8,
    /// Cluster name, checked in Hello.
    pub cluster: String,
    /// The UDP address the node's QUIC endpoint binds.
    pub listen: SocketAddr,
    /// The cluster certificate and key, which every link's mutual TLS pins.
    pub identity: ClusterIdentity,
    /// Static members: (tier, node id); may include this node.
    pub members: Vec<(u8, String)>,
    /// (tier, "name:port") re-resolved every `dns_refresh`; each resolved "ip:port" is a member id.
    pub dns: Vec<(u8, String)>,
    /// How often the `dns` names are resolved again.
    pub dns_refresh: Duration,
    /// Keep-alive and idle timeout of the links: how fast a dead peer is noticed.
    pub timing: LinkTiming,
    /// `node_id` and `tier` in it must equal the above.
    pub tree: TreeConfig,
    /// TEST-ONLY loss shaper: fraction of outgoing media datagrams dropped (seeded).
    pub drop_datagrams: f64,
    /// TEST-ONLY: seed of the loss shaper, so a lossy run can be repeated.
    pub drop_seed: u64,
}

/// Gateway → node.
#[derive(Debug, Clone)]
pub enum Local {
    /// A track published on this gateway, with its codec description.
    Publish(SubscribeOk),
    /// A packet of a track published here.
    Packet(TrackKey, SharedPacket),
    /// A track published here ended.
    Unpublish(TrackKey),
    /// Local viewers want this track.
    Subscribe(TrackKey),
    /// One more local viewer starts on this track: answered by one `ClusterEvent::Run`.
    Replay(TrackKey),
    /// Local viewers no longer want this track.
    Unsubscribe(TrackKey),
    /// A local viewer needs a keyframe of this track.
    KeyframeRequest(TrackKey),
    /// A stream published here (name, origin), to register at its home node.
    Announce(String, StreamOrigin),
    /// The publisher of this stream (name, session) left.
    Withdraw(String, [u8; 16]),
    /// Where is this stream published? Answered with `ClusterEvent::StreamLocation`.
    Lookup(String),
    /// Leave without a lost packet: children move first (`TreeNode::drain`); `ClusterEvent::Drained`
    /// says when none is left.
    Drain,
}

/// Node → gateway: the tree's outputs that are local.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    /// A packet of a track subscribed here.
    Deliver(TrackKey, SharedPacket),
    /// The answer to each `Local::Subscribe` and `Local::Replay`, in order with the `Deliver`s:
    /// the keyframe run a new viewer starts from (empty when this node has none yet), and the
    /// H264 track's latest SPS and PPS when this node has seen them.
    Run(
        TrackKey,
        Vec<SharedPacket>,
        Option<relay_proto::ParameterSets>,
    ),
    /// A track subscribed here is flowing; its codec description.
    TrackReady(TrackKey, SubscribeOk),
    /// A track subscribed here is gone.
    TrackEnded(TrackKey),
    /// A track published here: a viewer somewhere in the tree needs a keyframe.
    KeyframeRequest(TrackKey),
    /// The answer to `Local::Lookup`: where the stream is published; `None` when it is not live or its
    /// home could not be reached.
    StreamLocation(String, Option<StreamOrigin>),
    /// After `Local::Drain`: every child has moved to another parent; the links may close.
    Drained,
}

/// The gateway's (or the binary's) handle on a running node.
#[derive(Clone)]
pub struct ClusterHandle {
    tx: UnboundedSender<Local>,
    stats: Arc<Mutex<ClusterStats>>,
    local_addr: SocketAddr,
    members: tokio::sync::watch::Receiver<BTreeMap<u8, Vec<String>>>,
}

impl ClusterHandle {
    /// A handle whose commands go to `tx` and nowhere else: for testing what a user of the
    /// cluster (the gateway's bridge) asks of it, without a node.
    pub fn detached(tx: UnboundedSender<Local>) -> ClusterHandle {
        ClusterHandle {
            tx,
            stats: Arc::default(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            members: tokio::sync::watch::channel(BTreeMap::new()).1,
        }
    }

    /// Never blocks (unbounded). After shutdown the command is dropped.
    pub fn send(&self, local: Local) {
        let _ = self.tx.send(local);
    }

    /// A snapshot, at most `STATS_EVERY` old.
    pub fn stats(&self) -> ClusterStats {
        match self.stats.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The membership, per tier (0 gateways, 1.. relay tiers), this node included: static
    /// members and the latest DNS answers, as the tree has them.
    pub fn members(&self) -> tokio::sync::watch::Receiver<BTreeMap<u8, Vec<String>>> {
        self.members.clone()
    }

    /// The address the cluster endpoint is bound to (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Counters and state of one node, for its stats endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterStats {
    /// This node's id.
    pub node_id: String,
    /// This node's tier (0 gateway, 1.. relay tiers).
    pub tier: u8,
    /// The tree's counters.
    #[serde(serialize_with = "serialize_tree_stats")]
    pub tree: TreeStats,
    /// Each link that is up.
    pub links: Vec<LinkStats>,
    /// Each track the node holds.
    pub tracks: Vec<TrackStats>,
    /// The membership the tree works with, static and from DNS: (tier, node id).
    pub members: Vec<(u8, String)>,
    /// Handshakes that failed on TLS or Hello, either side (a stranger shows up here).
    pub refused_handshakes: u64,
    /// What this node adds to a media datagram (arrival on a link → handed on).
    pub hop_latency: HistogramSnapshot,
}

/// One track this node holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrackStats {
    /// "origin/sessionhex/name"
    pub key: String,
    /// Children this node feeds the track to.
    pub children: usize,
    /// The node the track comes from; `None` at its origin or while it has no parent.
    pub parent: Option<String>,
}

/// `TreeStats` lives in the sans-IO core, which has no serde; its fields are listed here (a unit
/// test compares this list with the struct, so a new counter cannot go missing silently).
fn serialize_tree_stats<S: serde::Serializer>(t: &TreeStats, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let fields = [
        ("packets_in", t.packets_in),
        ("datagrams_out", t.datagrams_out),
        ("delivered", t.delivered),
        ("duplicates", t.duplicates),
        ("nacks_received", t.nacks_received),
        ("nacks_answered", t.nacks_answered),
        ("nacks_waiting", t.nacks_waiting),
        ("nacks_missed", t.nacks_missed),
        ("nacks_forwarded", t.nacks_forwarded),
        ("nacks_sent", t.nacks_sent),
        ("keyframe_requests_received", t.keyframe_requests_received),
        ("keyframe_requests_sent", t.keyframe_requests_sent),
        (
            "keyframe_requests_aggregated",
            t.keyframe_requests_aggregated,
        ),
        ("reparents", t.reparents),
        ("redirects_sent", t.redirects_sent),
        ("pruned", t.pruned),
        ("bad_datagrams", t.bad_datagrams),
        ("oversized", t.oversized),
    ];
    let mut st = s.serialize_struct("TreeStats", fields.len())?;
    for (name, value) in fields {
        st.serialize_field(name, &value)?;
    }
    st.end()
}

/// "origin/sessionhex/name", the form tracks take in stats and logs.
pub fn track_label(key: &TrackKey) -> String {
    let hex: String = key.session.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/{}/{}", key.origin, hex, key.name)
}

/// Binds the cluster endpoint and starts the node task. The returned receiver yields the node's
/// local events, and `None` once the node has shut down (after `shutdown` is cancelled and the
/// links are closed).
pub async fn start(
    config: ClusterConfig,
    shutdown: CancellationToken,
) -> Result<(ClusterHandle, UnboundedReceiver<ClusterEvent>), String> {
    if config.tree.node_id != config.node_id || config.tree.tier != config.tier {
        return Err(format!(
            "tree config is for {:?} tier {}, the node is {:?} tier {}",
            config.tree.node_id, config.tree.tier, config.node_id, config.tier
        ));
    }
    if config.node_id.is_empty() {
        return Err("node id is empty".into());
    }
    let (link_tx, link_rx) = unbounded_channel();
    let hello = Hello::new(config.node_id.clone(), config.tier, config.cluster.clone());
    let links = Links::bind(
        config.listen,
        &config.identity,
        config.timing,
        hello,
        link_tx,
        shutdown.clone(),
    )?;
    let local_addr = links.local_addr()?;
    let (local_tx, local_rx) = unbounded_channel();
    let (event_tx, event_rx) = unbounded_channel();
    let (dns_tx, dns_rx) = unbounded_channel();
    if !config.dns.is_empty() {
        tokio::spawn(resolve_members(
            config.dns.clone(),
            config.dns_refresh,
            dns_tx,
            shutdown.clone(),
        ));
    }
    let (members_tx, members) = tokio::sync::watch::channel(BTreeMap::new());
    let stats = Arc::new(Mutex::new(ClusterStats {
        node_id: config.node_id.clone(),
        tier: config.tier,
        ..ClusterStats::default()
    }));
    let mut node = NodeTask {
        node_id: config.node_id.clone(),
        tier: config.tier,
        tree: TreeNode::new(config.tree),
        links,
        handles: HashMap::new(),
        events: event_tx,
        shaper: LossShaper::new(config.drop_datagrams, config.drop_seed),
        static_members: config.members,
        dns_members: HashMap::new(),
        applied: BTreeMap::new(),
        members: members_tx,
        stats: stats.clone(),
        hop_latency: Histogram::new(HOP_BUCKETS),
        drained_told: false,
    };
    node.apply_members(Instant::now());
    node.publish_stats();
    tracing::info!(node = node.node_id, tier = node.tier, %local_addr, "cluster node listening");
    tokio::spawn(node.run(local_rx, link_rx, dns_rx, shutdown));
    Ok((
        ClusterHandle {
            tx: local_tx,
            stats,
            local_addr,
            members,
        },
        event_rx,
    ))
}

/// One DNS name's latest answer.
struct DnsAnswer {
    tier: u8,
    name: String,
    members: Vec<String>,
}

async fn resolve_members(
    names: Vec<(u8, String)>,
    every: Duration,
    tx: UnboundedSender<DnsAnswer>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (tier, name) in &names {
            let lookup = tokio::time::timeout(
                every.max(Duration::from_secs(1)),
                tokio::net::lookup_host(name.as_str()),
            );
            match lookup.await {
                Ok(Ok(addrs)) => {
                    let members = addrs.map(|a| a.to_string()).collect();
                    let answer = DnsAnswer {
                        tier: *tier,
                        name: name.clone(),
                        members,
                    };
                    if tx.send(answer).is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(name, error = %e, "member lookup failed; keeping the last answer")
                }
                Err(_) => tracing::warn!(name, "member lookup timed out; keeping the last answer"),
            }
        }
    }
}

struct NodeTask {
    node_id: String,
    tier: u8,
    tree: TreeNode,
    links: Links,
    handles: HashMap<LinkId, LinkHandle>,
    events: UnboundedSender<ClusterEvent>,
    shaper: LossShaper,
    static_members: Vec<(u8, String)>,
    dns_members: HashMap<(u8, String), Vec<String>>,
    /// Member lists as last given to the tree, per tier.
    applied: BTreeMap<u8, Vec<String>>,
    /// The membership as applied, for the gateway (`ClusterHandle::members`).
    members: tokio::sync::watch::Sender<BTreeMap<u8, Vec<String>>>,
    stats: Arc<Mutex<ClusterStats>>,
    hop_latency: Histogram,
    /// `ClusterEvent::Drained` was emitted.
    drained_told: bool,
}

impl NodeTask {
    async fn run(
        mut self,
        mut local_rx: UnboundedReceiver<Local>,
        mut link_rx: UnboundedReceiver<LinkEvent>,
        mut dns_rx: UnboundedReceiver<DnsAnswer>,
        shutdown: CancellationToken,
    ) {
        let mut stats_tick = tokio::time::interval(STATS_EVERY);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The handles may all be dropped (a relay has no local users); the node keeps serving.
        let mut local_open = true;
        // The tree's housekeeping runs at least every MAX_WAIT: a deadline computed afresh from
        // "now" on every wake-up would move ahead forever under a steady flow of messages (a
        // publisher's packets every few ms), and the timers behind it would never run.
        let mut housekeeping = Instant::now() + MAX_WAIT;
        loop {
            let deadline = self
                .tree
                .poll_timeout(Instant::now(), MAX_WAIT)
                .min(housekeeping);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                e = link_rx.recv() => {
                    // Never None: `links` holds a sender.
                    if let Some(e) = e {
                        let now = Instant::now();
                        self.on_link(e, now);
                        for _ in 0..BATCH {
                            match link_rx.try_recv() {
                                Ok(e) => self.on_link(e, now),
                                Err(_) => break,
                            }
                        }
                    }
                }
                l = local_rx.recv(), if local_open => match l {
                    Some(l) => {
                        let now = Instant::now();
                        self.on_local(l, now);
                        for _ in 0..BATCH {
                            match local_rx.try_recv() {
                                Ok(l) => self.on_local(l, now),
                                Err(_) => break,
                            }
                        }
                    }
                    None => local_open = false,
                },
                Some(answer) = dns_rx.recv() => {
                    self.dns_members.insert((answer.tier, answer.name), answer.members);
                    self.apply_members(Instant::now());
                }
                _ = stats_tick.tick() => {
                    for (id, h) in &self.handles {
                        self.tree.set_rtt(*id, h.rtt());
                    }
                    self.publish_stats();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Timers are checked after every wake-up, so a busy link cannot starve repair.
            let now = Instant::now();
            if now >= deadline {
                self.tree.handle_timeout(now);
                housekeeping = now + MAX_WAIT;
            }
            self.drain();
            if !self.drained_told && self.tree.is_drained() {
                self.drained_told = true;
                self.emit(ClusterEvent::Drained);
            }
        }
        self.close().await;
    }

    fn on_local(&mut self, local: Local, now: Instant) {
        let tree = &mut self.tree;
        match local {
            Local::Publish(info) => tree.publish(info),
            Local::Packet(track, packet) => tree.local_packet(&track, packet, now),
            Local::Unpublish(track) => tree.unpublish(&track),
            Local::Subscribe(track) => tree.subscribe(&track, now),
            Local::Replay(track) => tree.replay(&track),
            Local::Unsubscribe(track) => tree.unsubscribe(&track, now),
            Local::KeyframeRequest(track) => tree.request_keyframe(&track, now),
            Local::Announce(stream, origin) => tree.announce(stream, origin),
            Local::Withdraw(stream, session) => tree.withdraw(&stream, session),
            Local::Lookup(stream) => tree.lookup(&stream, now),
            Local::Drain => tree.drain(),
        }
        // Outputs are drained per input: the tree queues them, but a long batch of packets
        // should not hold a keyframe run's worth of datagrams back.
        self.drain();
    }

    fn on_link(&mut self, e: LinkEvent, now: Instant) {
        match e {
            LinkEvent::Up { link, peer, handle } => {
                self.handles.insert(link, handle);
                self.tree.link_up(link, peer, now);
            }
            LinkEvent::Down { link } => {
                self.handles.remove(&link);
                self.tree.link_down(link, now);
            }
            LinkEvent::ConnectFailed { peer } => {
                // Both ends may dial at once; if the peer's own dial already gave us a link, our
                // failed attempt says nothing about the peer.
                if self.handles.values().any(|h| h.peer() == peer) {
                    tracing::debug!(peer, "dial failed but a link to the peer is up");
                } else {
                    self.tree.connect_failed(&peer, now);
                }
            }
            LinkEvent::Control { link, msg } => self.tree.on_control(link, msg, now),
            LinkEvent::Datagram { link, bytes, at } => {
                self.tree.on_datagram(link, &bytes, at);
                self.drain();
                self.hop_latency.observe(at.elapsed());
                return;
            }
        }
        self.drain();
    }

    /// Carry out everything the tree asked for.
    fn drain(&mut self) {
        while let Some(o) = self.tree.poll_output() {
            match o {
                TreeOutput::Connect { peer } => self.links.dial(peer),
                TreeOutput::Send { link, msg } => {
                    if let Some(h) = self.handles.get(&link) {
                        h.send_control(msg);
                    }
                }
                TreeOutput::Datagram { link, bytes } => {
                    if let Some(h) = self.handles.get(&link) {
                        h.send_datagram(bytes, &mut self.shaper);
                    }
                }
                TreeOutput::Deliver { track, packet } => {
                    self.emit(ClusterEvent::Deliver(track, packet))
                }
                TreeOutput::Run {
                    track,
                    packets,
                    parameter_sets,
                } => self.emit(ClusterEvent::Run(track, packets, parameter_sets)),
                TreeOutput::TrackReady { track, info } => {
                    self.emit(ClusterEvent::TrackReady(track, info))
                }
                TreeOutput::TrackEnded { track } => self.emit(ClusterEvent::TrackEnded(track)),
                TreeOutput::KeyframeRequest { track } => {
                    self.emit(ClusterEvent::KeyframeRequest(track))
                }
                TreeOutput::StreamLocation { stream, origin } => {
                    self.emit(ClusterEvent::StreamLocation(stream, origin))
                }
            }
        }
    }

    fn emit(&self, e: ClusterEvent) {
        // Nobody listening (a relay, or a gateway shutting down): nothing to do.
        let _ = self.events.send(e);
    }

    /// Static members, DNS answers and this node, per tier; only tiers that changed go to the
    /// tree (a tier-0 update re-announces streams).
    fn apply_members(&mut self, now: Instant) {
        let mut tiers: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        tiers
            .entry(self.tier)
            .or_default()
            .push(self.node_id.clone());
        for (tier, id) in &self.static_members {
            tiers.entry(*tier).or_default().push(id.clone());
        }
        for ((tier, _), ids) in &self.dns_members {
            tiers.entry(*tier).or_default().extend(ids.iter().cloned());
        }
        for ids in tiers.values_mut() {
            ids.sort();
            ids.dedup();
        }
        // Tiers that lost every member become empty lists, not stale ones.
        for tier in self.applied.keys() {
            tiers.entry(*tier).or_default();
        }
        for (tier, ids) in &tiers {
            if self.applied.get(tier) != Some(ids) {
                tracing::info!(tier, members = ?ids, "members");
                self.tree.set_members(*tier, ids.clone(), now);
            }
        }
        if self.applied != tiers {
            self.members.send_replace(tiers.clone());
        }
        self.applied = tiers;
        self.drain();
    }

    fn publish_stats(&self) {
        let mut links: Vec<LinkStats> = self.handles.iter().map(|(id, h)| h.stats(*id)).collect();
        links.sort_by_key(|l| l.id);
        let mut tracks: Vec<TrackStats> = self
            .tree
            .tracks()
            .into_iter()
            .map(|(key, children, parent)| TrackStats {
                key: track_label(&key),
                children,
                parent,
            })
            .collect();
        tracks.sort_by(|a, b| a.key.cmp(&b.key));
        let members = self
            .applied
            .iter()
            .flat_map(|(tier, ids)| ids.iter().map(|id| (*tier, id.clone())))
            .collect();
        let snapshot = ClusterStats {
            node_id: self.node_id.clone(),
            tier: self.tier,
            tree: self.tree.stats(),
            links,
            tracks,
            members,
            refused_handshakes: self.links.refused(),
            hop_latency: self.hop_latency.snapshot(),
        };
        match self.stats.lock() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Close every link with code 0 and wait briefly for the close frames to leave.
    async fn close(mut self) {
        for h in self.handles.values() {
            h.close(CloseCode::Shutdown, "shutdown");
        }
        self.links.close().await;
        self.handles.clear();
        self.publish_stats();
        tracing::info!(node = self.node_id, "cluster node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_labels_are_origin_session_hex_name() {
        let key = TrackKey {
            origin: "10.0.0.1:7000".into(),
            session: [0xab; 16],
            name: "video".into(),
        };
        assert_eq!(
            track_label(&key),
            format!("10.0.0.1:7000/{}/video", "ab".repeat(16))
        );
    }

    #[test]
    fn stats_serialize_with_tree_counters() {
        let stats = ClusterStats {
            node_id: "n".into(),
            tree: TreeStats {
                nacks_received: 3,
                ..TreeStats::default()
            },
            ..ClusterStats::default()
        };
        let v = serde_json::to_value(&stats).expect("serializes");
        assert_eq!(v["tree"]["nacks_received"], 3);
        assert_eq!(v["node_id"], "n");
    }

    /// Every `TreeStats` counter reaches /v1/stats: the Debug form names all the struct's
    /// fields, the JSON must have the same ones. Failing here means a field was added to
    /// `TreeStats`: add it to `serialize_tree_stats`.
    #[test]
    fn every_tree_counter_is_serialized() {
        let debug = format!("{:?}", TreeStats::default());
        let inner = debug
            .trim_start_matches("TreeStats {")
            .trim_end_matches('}');
        let mut fields: Vec<&str> = inner
            .split(',')
            .filter_map(|f| f.split(':').next())
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        fields.sort_unstable();
        let v = serde_json::to_value(ClusterStats::default()).expect("serializes");
        let mut keys: Vec<&str> = v["tree"]
            .as_object()
            .expect("tree object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, fields);
    }
}
