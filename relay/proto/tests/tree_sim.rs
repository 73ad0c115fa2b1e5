//! A whole cluster of `TreeNode`s in one process: links are in-memory, with latency and a seeded
//! loss rate on media datagrams, and time is simulated, so every run is the same. Proves the tree
//! properties without sockets: delivery under loss on every hop, the NACK shield (the origin's
//! NACK count does not grow with the number of viewers), re-parenting after a relay dies, pruning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_proto::data_track::{DataTrackParams, Fragmenter, data_key_name};
use relay_proto::directory::SETTLE;
use relay_proto::link::{
    ControlMessage, StreamOrigin, StreamTrack, SubscribeOk, TrackKey, TrackKind,
};
use relay_proto::tree::{LinkId, TreeConfig, TreeNode, TreeOutput};
use relay_proto::{Codec, MediaPacket, Reassembly, ReassemblyLimits};

const LATENCY: Duration = Duration::from_millis(5);
const STEP: Duration = Duration::from_millis(1);
/// How long a dead peer takes to notice (the QUIC idle timeout of the real links).
const DEAD_AFTER: Duration = Duration::from_millis(1000);

enum Msg {
    Control(ControlMessage),
    Datagram(bytes::Bytes),
    Down,
}

struct Net {
    nodes: BTreeMap<String, TreeNode>,
    /// (node, link) → (peer node, peer's link id for the same connection)
    links: HashMap<(String, LinkId), (String, LinkId)>,
    next_link: LinkId,
    inflight: Vec<(Instant, String, LinkId, Msg)>,
    now: Instant,
    rng: u64,
    loss: f64,
    delivered: HashMap<String, Vec<u64>>,
    /// Every delivered packet per node, for tests that look inside (data channel messages).
    packets: HashMap<String, Vec<Arc<MediaPacket>>>,
    keyframe_requests_at_origin: u64,
    locations: HashMap<String, Vec<(String, Option<StreamOrigin>)>>,
}

impl Net {
    fn new(loss: f64, seed: u64) -> Net {
        Net {
            nodes: BTreeMap::new(),
            links: HashMap::new(),
            next_link: 1,
            inflight: Vec::new(),
            now: Instant::now(),
            rng: seed | 1,
            loss,
            delivered: HashMap::new(),
            packets: HashMap::new(),
            keyframe_requests_at_origin: 0,
            locations: HashMap::new(),
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: deterministic, good enough for loss decisions.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn add(&mut self, id: &str, tier: u8) {
        self.add_with(id, tier, 100);
    }

    fn add_with(&mut self, id: &str, tier: u8, fanout_limit: usize) {
        let mut config = TreeConfig::new(id, tier);
        config.prune_grace = Duration::from_secs(2);
        config.fanout_limit = fanout_limit;
        self.nodes.insert(id.to_string(), TreeNode::new(config));
    }

    fn set_members(&mut self, tiers: &[(u8, Vec<&str>)]) {
        let now = self.now;
        for node in self.nodes.values_mut() {
            for (tier, ids) in tiers {
                node.set_members(*tier, ids.iter().map(|s| s.to_string()).collect(), now);
            }
        }
    }

    fn lookup(&mut self, id: &str, stream: &str) {
        let now = self.now;
        self.node(id).lookup(stream, now);
    }

    /// `id` looks `stream` up and gets its answer (None: no answer yet; Some(None): not found).
    fn ask(&mut self, id: &str, stream: &str) -> Option<Option<StreamOrigin>> {
        self.lookup(id, stream);
        self.settle();
        last_location(self, id, stream)
    }

    fn node(&mut self, id: &str) -> &mut TreeNode {
        self.nodes.get_mut(id).expect("node exists")
    }

    fn connect(&mut self, from: &str, to: &str) {
        let now = self.now;
        if !self.nodes.contains_key(to) {
            self.node(from).connect_failed(to, now);
            return;
        }
        let (a, b) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        self.links
            .insert((from.to_string(), a), (to.to_string(), b));
        self.links
            .insert((to.to_string(), b), (from.to_string(), a));
        self.node(to).link_up(b, from.to_string(), now);
        self.node(from).link_up(a, to.to_string(), now);
    }

    /// Kill a node: its peers notice after `DEAD_AFTER`.
    fn kill(&mut self, id: &str) {
        self.nodes.remove(id);
        let at = self.now + DEAD_AFTER;
        let peers: Vec<((String, LinkId), (String, LinkId))> = self
            .links
            .iter()
            .filter(|(_, (p, _))| p == id)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((node, link), _) in peers {
            self.inflight.push((at, node.clone(), link, Msg::Down));
            self.links.remove(&(node, link));
        }
        self.links.retain(|(n, _), _| n != id);
    }

    /// Carry every node's outputs until nothing is left to do right now.
    fn pump(&mut self) {
        loop {
            let mut work = Vec::new();
            for (id, node) in self.nodes.iter_mut() {
                while let Some(o) = node.poll_output() {
                    work.push((id.clone(), o));
                }
            }
            if work.is_empty() {
                return;
            }
            for (id, o) in work {
                match o {
                    TreeOutput::Connect { peer } => self.connect(&id, &peer),
                    TreeOutput::Send { link, msg } => {
                        if let Some((peer, plink)) = self.links.get(&(id.clone(), link)).cloned() {
                            self.inflight.push((
                                self.now + LATENCY,
                                peer,
                                plink,
                                Msg::Control(msg),
                            ));
                        }
                    }
                    TreeOutput::Datagram { link, bytes } => {
                        if self.random() < self.loss {
                            continue;
                        }
                        if let Some((peer, plink)) = self.links.get(&(id.clone(), link)).cloned() {
                            self.inflight.push((
                                self.now + LATENCY,
                                peer,
                                plink,
                                Msg::Datagram(bytes),
                            ));
                        }
                    }
                    TreeOutput::Deliver { packet, .. } => {
                        self.delivered
                            .entry(id.clone())
                            .or_default()
                            .push(packet.seq);
                        self.packets.entry(id).or_default().push(packet);
                    }
                    // A subscribe's run: the gateway's viewers start from it, as from live packets.
                    TreeOutput::Run { packets, .. } => {
                        for packet in packets {
                            self.delivered
                                .entry(id.clone())
                                .or_default()
                                .push(packet.seq);
                            self.packets.entry(id.clone()).or_default().push(packet);
                        }
                    }
                    TreeOutput::KeyframeRequest { .. } => self.keyframe_requests_at_origin += 1,
                    TreeOutput::StreamLocation { stream, origin } => {
                        self.locations.entry(id).or_default().push((stream, origin))
                    }
                    TreeOutput::TrackReady { .. } | TreeOutput::TrackEnded { .. } => {}
                }
            }
        }
    }

    /// Carry what is queued and give it 50 ms (ten link latencies) to arrive and be answered.
    fn settle(&mut self) {
        self.pump();
        self.run(Duration::from_millis(50), |_| {});
    }

    /// Advance simulated time by `d`, delivering what is due and firing timers.
    fn run(&mut self, d: Duration, mut each_step: impl FnMut(&mut Net)) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            each_step(self);
            let now = self.now;
            // Stable: messages sent earlier are delivered first (control is ordered per link).
            let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inflight)
                .into_iter()
                .partition(|(t, ..)| *t <= now);
            self.inflight = later;
            // Control is ordered per link: deliver in send order (stable by time, then insertion).
            due.sort_by_key(|(t, ..)| *t);
            for (_, node, link, msg) in due {
                let Some(n) = self.nodes.get_mut(&node) else {
                    continue;
                };
                match msg {
                    Msg::Control(m) => n.on_control(link, m, now),
                    Msg::Datagram(b) => n.on_datagram(link, &b, now),
                    Msg::Down => n.link_down(link, now),
                }
            }
            for n in self.nodes.values_mut() {
                n.handle_timeout(now);
            }
            self.pump();
        }
    }
}

fn track() -> TrackKey {
    TrackKey {
        origin: "origin".into(),
        session: [7; 16],
        name: "video".into(),
    }
}

fn info() -> SubscribeOk {
    SubscribeOk {
        track: track(),
        channel: 0,
        first_seq: u64::MAX,
        codec: Codec::H264,
        clock_rate: 90_000,
        pt: 96,
        audio_channels: 0,
        fmtp: String::new(),
    }
}

/// The origin's publisher: a keyframe every 100 packets.
#[derive(Default)]
struct Publisher {
    seq: u64,
    /// Steps seen by `pace`.
    step: u64,
}

impl Publisher {
    /// One packet every fifth 1 ms step: 200 packets/s, a realistic video rate.
    fn pace(&mut self, net: &mut Net) {
        self.step += 1;
        if self.step.is_multiple_of(5) {
            self.tick(net);
        }
    }

    fn tick(&mut self, net: &mut Net) {
        let now = net.now;
        let Some(origin) = net.nodes.get_mut("origin") else {
            return;
        };
        if now.elapsed().as_millis() > 0 {
            // (Instant::now is only the base; simulated time is `net.now`.)
        }
        let seq = self.seq;
        self.seq += 1;
        let packet = Arc::new(MediaPacket {
            seq,
            rtp_time: seq * 450,
            marker: seq % 5 == 4,
            pt: 96,
            payload: Arc::from(vec![(seq % 251) as u8; 900]),
            keyframe_start: seq.is_multiple_of(100),
            received: now,
        });
        origin.local_packet(&track(), packet, now);
    }
}

fn cluster(edges: usize, loss: f64, seed: u64) -> Net {
    let mut net = Net::new(loss, seed);
    net.add("origin", 0);
    net.add("relay-a", 1);
    net.add("relay-b", 1);
    let edge_ids: Vec<String> = (0..edges).map(|i| format!("edge-{i}")).collect();
    for e in &edge_ids {
        net.add(e, 0);
    }
    let mut gateways: Vec<&str> = vec!["origin"];
    gateways.extend(edge_ids.iter().map(String::as_str));
    net.set_members(&[(0, gateways), (1, vec!["relay-a", "relay-b"])]);
    net.node("origin").publish(info());
    net
}

/// Run a publisher with `edges` edge gateways each subscribed; returns the net after `secs`.
fn play(edges: usize, loss: f64, secs: u64, seed: u64) -> (Net, Publisher) {
    let mut net = cluster(edges, loss, seed);
    let mut publisher = Publisher::default();
    // Half a second of publishing first, so edges join mid-GOP.
    net.run(Duration::from_millis(500), |n| publisher.tick(n));
    let now = net.now;
    for i in 0..edges {
        net.node(&format!("edge-{i}")).subscribe(&track(), now);
    }
    net.pump();
    net.run(Duration::from_secs(secs), |n| {
        if n.now.duration_since(now).as_millis() % 5 == 0 {
            publisher.tick(n);
        }
    });
    (net, publisher)
}

/// Fraction of the sequence numbers from an edge's first delivery to `last` that it delivered.
fn delivery_ratio(seqs: &[u64], last: u64) -> f64 {
    let Some(first) = seqs.iter().min().copied() else {
        return 0.0;
    };
    let mut unique: Vec<u64> = seqs.to_vec();
    unique.sort_unstable();
    unique.dedup();
    unique.len() as f64 / (last - first + 1) as f64
}

#[test]
fn every_edge_gets_everything_under_five_percent_loss_per_hop() {
    let (net, publisher) = play(3, 0.05, 5, 42);
    // The tail may still be in repair; judge up to half a second before the end.
    let last = publisher.seq.saturating_sub(100);
    for i in 0..3 {
        let id = format!("edge-{i}");
        let seqs: Vec<u64> = net
            .delivered
            .get(&id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| *s <= last)
            .collect();
        let ratio = delivery_ratio(&seqs, last);
        let first = seqs.iter().min().copied().unwrap_or(u64::MAX);
        println!("{id}: first seq {first}, delivery {:.4}", ratio);
        assert_eq!(
            first % 100,
            0,
            "{id} starts at a keyframe (the cached run), not mid-GOP: {first}"
        );
        assert!(
            ratio >= 0.995,
            "{id} delivered {ratio:.4} of packets under 5 % loss per hop"
        );
    }
    let origin = net.nodes["origin"].stats();
    println!("origin: {origin:?}");
    assert!(origin.nacks_answered > 0, "the origin repaired its links");
}

#[test]
fn the_origin_hears_no_more_nacks_for_thirty_edges_than_for_one() {
    // Same seed, same loss: NACKs at the origin come from relay links only.
    let (one, _) = play(1, 0.05, 4, 7);
    let (thirty, _) = play(30, 0.05, 4, 7);
    let (n1, n30) = (
        one.nodes["origin"].stats().nacks_received,
        thirty.nodes["origin"].stats().nacks_received,
    );
    let children = |net: &Net| {
        net.nodes["origin"]
            .tracks()
            .iter()
            .map(|(_, c, _)| *c)
            .sum::<usize>()
    };
    println!(
        "origin NACKs: 1 edge {n1} ({} relay children), 30 edges {n30} ({} relay children)",
        children(&one),
        children(&thirty)
    );
    let relays_30: u64 = ["relay-a", "relay-b"]
        .iter()
        .map(|r| thirty.nodes[*r].stats().nacks_received)
        .sum();
    println!("NACKs received by relays with 30 edges: {relays_30}");
    // Each relay child loses ~5 % independently; two relay children may at most double the count.
    assert!(
        n30 as f64 <= 2.5 * n1 as f64 + 20.0,
        "origin NACKs grew with viewers: {n1} → {n30}"
    );
    assert!(relays_30 > n30, "the relays absorbed the edges' NACKs");
}

/// Three edges subscribed after 300 ms of publishing and playing for a second since, the
/// publisher at 200 packets/s: the net, the publisher, and edge-0's parent (a relay).
fn three_edges_playing(seed: u64) -> (Net, Publisher, String) {
    let mut net = cluster(3, 0.0, seed);
    let mut publisher = Publisher::default();
    net.run(Duration::from_millis(300), |n| publisher.tick(n));
    let now = net.now;
    for i in 0..3 {
        net.node(&format!("edge-{i}")).subscribe(&track(), now);
    }
    net.pump();
    net.run(Duration::from_secs(1), |n| publisher.pace(n));
    let parent = net.nodes["edge-0"]
        .parent_of(&track())
        .map(str::to_string)
        .expect("edge-0 has a parent");
    assert!(
        parent.starts_with("relay-"),
        "edges hang below a relay, not the origin: {parent}"
    );
    (net, publisher, parent)
}

#[test]
fn viewers_resume_after_their_relay_dies() {
    let (mut net, mut publisher, parent) = three_edges_playing(3);
    let before = net.delivered["edge-0"].len();
    let killed_at = publisher.seq;
    net.kill(&parent);
    let killed_time = net.now;
    let mut resumed_after = None;
    let before_kill = net.delivered["edge-0"].len();
    net.run(Duration::from_secs(3), |n| {
        publisher.pace(n);
        if resumed_after.is_none() && n.delivered["edge-0"].len() > before_kill + 5 {
            resumed_after = Some(n.now.duration_since(killed_time));
        }
    });
    println!(
        "edge-0 resumed {resumed_after:?} after its relay was killed (dead peers are noticed after {DEAD_AFTER:?})"
    );
    let new_parent = net.nodes["edge-0"].parent_of(&track()).map(str::to_string);
    assert!(
        new_parent.as_deref().is_some_and(|p| p != parent),
        "edge-0 re-parented: {new_parent:?}"
    );
    let seqs = &net.delivered["edge-0"];
    assert!(
        seqs.len() > before + 400,
        "delivery continued after the relay died"
    );
    assert!(
        resumed_after.is_some_and(|d| d < DEAD_AFTER + Duration::from_millis(200)),
        "resumed within ~a second"
    );
    // Packets published while the relay was dead reach the edge through the new parent's
    // keyframe run and repair: nothing published after the kill is missing (up to the tail).
    let last = publisher.seq - 20;
    let mut got: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|s| *s >= killed_at && *s <= last)
        .collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got.len() as u64,
        last - killed_at + 1,
        "gap after re-parenting"
    );
    println!(
        "edge-0: parent {parent} died, new parent {new_parent:?}, stats {:?}",
        net.nodes["edge-0"].stats()
    );
}

#[test]
fn a_draining_relay_hands_its_children_over_without_a_gap() {
    let (mut net, mut publisher, parent) = three_edges_playing(5);
    let mut tick = |n: &mut Net| publisher.pace(n);
    let below: Vec<String> = (0..3)
        .map(|i| format!("edge-{i}"))
        .filter(|e| net.nodes[e].parent_of(&track()) == Some(parent.as_str()))
        .collect();
    let nacks_before: Vec<u64> = below
        .iter()
        .map(|e| net.nodes[e].stats().nacks_sent)
        .collect();
    let delivered_before: Vec<usize> = below.iter().map(|e| net.delivered[e].len()).collect();

    net.node(&parent).drain();
    net.pump();
    let started = net.now;
    let mut drained_after = None;
    net.run(Duration::from_millis(500), |n| {
        tick(n);
        if drained_after.is_none() && n.nodes[&parent].is_drained() {
            drained_after = Some(n.now.duration_since(started));
        }
    });
    let drained_after = drained_after.expect("every child moved within 500 ms");
    // Then it goes, as the binary does once drained; nobody should notice.
    net.kill(&parent);
    net.run(Duration::from_secs(2), &mut tick);

    for (i, edge) in below.iter().enumerate() {
        let new_parent = net.nodes[edge].parent_of(&track()).map(str::to_string);
        assert!(
            new_parent.as_deref().is_some_and(|p| p != parent),
            "{edge} moved off {parent}: {new_parent:?}"
        );
        let after = &net.delivered[edge][delivered_before[i]..];
        assert!(
            after.windows(2).all(|w| w[1] == w[0] + 1),
            "{edge}: every packet once and in order across the move"
        );
        assert!(
            after.len() >= 490,
            "{edge}: delivery went on ({})",
            after.len()
        );
        assert_eq!(
            net.nodes[edge].stats().nacks_sent,
            nacks_before[i],
            "{edge}: nothing needed repair"
        );
    }
    println!(
        "{parent} drained in {drained_after:?}: {} edges moved, no packet repaired or lost",
        below.len()
    );
}

#[test]
fn a_tree_is_pruned_after_its_viewers_leave() {
    let mut net = cluster(2, 0.0, 9);
    let mut publisher = Publisher::default();
    let now = net.now;
    for i in 0..2 {
        net.node(&format!("edge-{i}")).subscribe(&track(), now);
    }
    net.pump();
    net.run(Duration::from_secs(1), |n| publisher.tick(n));
    let holders = |net: &Net| {
        net.nodes
            .iter()
            .filter(|(_, n)| !n.tracks().is_empty())
            .count()
    };
    assert!(
        holders(&net) >= 3,
        "origin, a relay and the edges hold the track"
    );
    let now = net.now;
    for i in 0..2 {
        net.node(&format!("edge-{i}")).unsubscribe(&track(), now);
    }
    net.run(Duration::from_secs(5), |n| publisher.tick(n));
    assert_eq!(holders(&net), 1, "only the origin keeps the track");
    let origin_children: usize = net.nodes["origin"]
        .tracks()
        .iter()
        .map(|(_, c, _)| *c)
        .sum();
    assert_eq!(origin_children, 0);
}

/// A stream of one video track published on "origin" by `session`.
fn video_on_origin(session: [u8; 16]) -> StreamOrigin {
    StreamOrigin {
        node: "origin".into(),
        session,
        tracks: vec![StreamTrack {
            name: "video".into(),
            kind: TrackKind::Video,
        }],
    }
}

#[test]
fn streams_are_found_through_their_home_node() {
    let mut net = cluster(3, 0.0, 5);
    let origin = video_on_origin([7; 16]);
    net.node("origin")
        .announce("concert".into(), origin.clone());
    net.settle();
    for i in 0..3 {
        net.lookup(&format!("edge-{i}"), "concert");
        net.lookup(&format!("edge-{i}"), "nobody-publishes-this");
    }
    net.pump();
    // A home that just heard of its gateways is not yet sure what is not published.
    net.run(SETTLE + Duration::from_millis(50), |_| {});
    for i in 0..3 {
        let id = format!("edge-{i}");
        let answers = net.locations.get(&id).cloned().unwrap_or_default();
        assert!(
            answers.contains(&("concert".to_string(), Some(origin.clone()))),
            "{id}: {answers:?}"
        );
        assert!(
            answers.contains(&("nobody-publishes-this".to_string(), None)),
            "{id}: {answers:?}"
        );
    }
    // Withdrawn by the publishing session: gone, and in a settled cluster said at once.
    net.node("origin").withdraw("concert", [7; 16]);
    net.settle();
    assert_eq!(net.ask("edge-1", "concert"), Some(None));

    // The session resumed on edge-2 (same session id): the origin's late withdraw of its own
    // announcement leaves edge-2's in place.
    let moved = StreamOrigin {
        node: "edge-2".into(),
        ..origin.clone()
    };
    net.node("origin")
        .announce("concert".into(), origin.clone());
    net.settle();
    net.node("edge-2").announce("concert".into(), moved.clone());
    net.settle();
    net.node("origin").withdraw("concert", [7; 16]);
    net.settle();
    assert_eq!(net.ask("edge-1", "concert"), Some(Some(moved.clone())));

    // The other order: the old node's announcement arrives after the new one's (it was in
    // flight), then its withdraw: the new one's is found again at once.
    net.node("origin")
        .announce("concert".into(), origin.clone());
    net.settle();
    net.node("origin").withdraw("concert", [7; 16]);
    net.settle();
    assert_eq!(net.ask("edge-1", "concert"), Some(Some(moved)));
}

#[test]
fn a_full_relay_redirects_children_to_the_next_choice() {
    // Two relays that feed at most 2 edges each, and 5 edges: 2 + 2 on the relays, the fifth
    // on the origin, which has nowhere to redirect to.
    let mut net = Net::new(0.0, 11);
    net.add("origin", 0);
    net.add_with("relay-a", 1, 2);
    net.add_with("relay-b", 1, 2);
    let edges: Vec<String> = (0..5).map(|i| format!("edge-{i}")).collect();
    for e in &edges {
        net.add(e, 0);
    }
    let mut gateways: Vec<&str> = vec!["origin"];
    gateways.extend(edges.iter().map(String::as_str));
    net.set_members(&[(0, gateways), (1, vec!["relay-a", "relay-b"])]);
    net.node("origin").publish(info());
    let mut publisher = Publisher::default();
    let now = net.now;
    for e in &edges {
        net.node(e).subscribe(&track(), now);
    }
    net.pump();
    net.run(Duration::from_secs(2), |n| publisher.tick(n));
    let children = |net: &Net, id: &str| {
        net.nodes[id]
            .tracks()
            .iter()
            .map(|(_, c, _)| *c)
            .sum::<usize>()
    };
    println!(
        "children: relay-a {}, relay-b {}, origin {}",
        children(&net, "relay-a"),
        children(&net, "relay-b"),
        children(&net, "origin")
    );
    assert!(
        children(&net, "relay-a") <= 2 && children(&net, "relay-b") <= 2,
        "fan-out limit held"
    );
    let redirects: u64 = ["relay-a", "relay-b"]
        .iter()
        .map(|r| net.nodes[*r].stats().redirects_sent)
        .sum();
    assert!(redirects >= 1, "someone was redirected");
    for e in &edges {
        assert!(
            net.delivered.get(e).is_some_and(|d| d.len() > 1000),
            "{e} receives"
        );
    }
}

/// The last answer `node` got for `stream`.
fn last_location(net: &Net, node: &str, stream: &str) -> Option<Option<StreamOrigin>> {
    net.locations
        .get(node)?
        .iter()
        .rev()
        .find(|(s, _)| s == stream)
        .map(|(_, o)| o.clone())
}

/// A stream name whose home, among all four gateways of `cluster(3, ..)`, is `edge-0`: the
/// gateway the tests kill.
fn homed_on_edge_0() -> String {
    let gateways = ["origin", "edge-0", "edge-1", "edge-2"];
    (0..)
        .map(|i| format!("stream-{i}"))
        .find(|s| relay_proto::placement::home_node(s, &gateways[..]) == Some("edge-0"))
        .expect("some name hashes there")
}

#[test]
fn a_lookup_whose_home_is_gone_is_answered_by_the_next_home() {
    let mut net = cluster(3, 0.0, 13);
    let stream = homed_on_edge_0();
    net.kill("edge-0");
    // Asked before anyone noticed: the lookup waits on the dead home, then goes to the next one
    // (which has never heard of the stream).
    net.lookup("edge-1", &stream);
    net.pump();
    // The next home holds "not found" back until the origins have had time to announce there.
    net.run(DEAD_AFTER + Duration::from_millis(50), |_| {});
    assert_eq!(last_location(&net, "edge-1", &stream), None);
    net.run(SETTLE, |_| {});
    assert_eq!(last_location(&net, "edge-1", &stream), Some(None));
}

#[test]
fn a_stream_whose_home_dies_is_found_at_the_next_home() {
    let mut net = cluster(3, 0.0, 17);
    let stream = homed_on_edge_0();
    let origin = video_on_origin([9; 16]);
    net.node("origin").announce(stream.clone(), origin.clone());
    net.settle();
    assert_eq!(net.ask("edge-1", &stream), Some(Some(origin.clone())));

    // The home dies with the directory entry. Every gateway's link to it times out: the origin
    // announces at the next home. A lookup in flight at the death is answered by the next
    // home, not "not found".
    net.kill("edge-0");
    net.lookup("edge-1", &stream);
    net.pump();
    net.run(DEAD_AFTER + Duration::from_millis(50), |_| {});
    assert_eq!(
        last_location(&net, "edge-1", &stream),
        Some(Some(origin.clone())),
        "found at the next home right after the death was noticed"
    );
    // edge-2 noticed as well: every gateway keeps a link to every other.
    assert_eq!(net.ask("edge-2", &stream), Some(Some(origin.clone())));

    // The dead gateway comes back (a restarted pod with the same name): the others dial it
    // again within their backoff, it is the home again, and the origin announces there.
    net.add("edge-0", 0);
    let gateways = ["origin", "edge-0", "edge-1", "edge-2"];
    let now = net.now;
    net.node("edge-0")
        .set_members(0, gateways.iter().map(|s| s.to_string()).collect(), now);
    net.node("edge-0")
        .set_members(1, vec!["relay-a".into(), "relay-b".into()], now);
    net.run(
        TreeConfig::new("x", 0).failed_peer_backoff + Duration::from_secs(3),
        |_| {},
    );
    assert_eq!(
        net.ask("edge-0", &stream),
        Some(Some(origin.clone())),
        "the revived home holds the entry again"
    );
    assert_eq!(net.ask("edge-2", &stream), Some(Some(origin)));
}

/// An H264 publisher whose encoder sends SPS/PPS once, at the start (x264 without repeat
/// headers, some hardware encoders): packet 0 is a STAP-A of them, keyframes (IDR) every 100
/// packets, one packet per frame.
const SPS: [u8; 4] = [0x67, 0x42, 0x00, 0x1f];
const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

fn h264_packet(seq: u64, now: Instant) -> Arc<MediaPacket> {
    let payload: Vec<u8> = if seq == 0 {
        let mut p = vec![24];
        for nal in [&SPS[..], &PPS[..]] {
            p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    } else if seq.is_multiple_of(100) || seq == 1 {
        vec![0x65, 0x88, 0x84, 0x00]
    } else {
        vec![0x41, 0x9a, 0x02, 0x00]
    };
    Arc::new(MediaPacket {
        seq,
        rtp_time: seq * 450,
        marker: true,
        pt: 96,
        payload: Arc::from(payload),
        keyframe_start: seq.is_multiple_of(100),
        received: now,
    })
}

/// Issue 10: a subscriber that joins after the only SPS/PPS gets them in front of its keyframe
/// run (a STAP-A one sequence number before the keyframe), at every hop — the origin's replay to
/// a relay, and the relay's replay, learned from that, to a later edge.
#[test]
fn late_subscribers_get_the_parameter_sets_an_encoder_sent_only_at_start() {
    let mut net = cluster(2, 0.0, 7);
    let mut seq = 0u64;
    let mut publish_until = |net: &mut Net, last: u64| {
        while seq <= last {
            let now = net.now;
            let p = h264_packet(seq, now);
            net.node("origin").local_packet(&track(), p, now);
            seq += 1;
            net.run(Duration::from_millis(5), |_| {});
        }
    };
    publish_until(&mut net, 250);
    let now = net.now;
    net.node("edge-0").subscribe(&track(), now);
    net.run(Duration::from_millis(200), |_| {});
    let first = net.delivered.get("edge-0").and_then(|d| d.first().copied());
    assert_eq!(
        first,
        Some(199),
        "edge-0 starts with the parameter sets before keyframe 200"
    );

    publish_until(&mut net, 350);
    let now = net.now;
    net.node("edge-1").subscribe(&track(), now);
    net.run(Duration::from_millis(200), |_| {});
    let first = net.delivered.get("edge-1").and_then(|d| d.first().copied());
    assert_eq!(
        first,
        Some(299),
        "edge-1 starts with the parameter sets before keyframe 300"
    );

    // A later local viewer's replay at edge-1, which saw the parameter sets only in the STAP-A
    // in front of its run: the run comes with them, for a viewer whose start is a later keyframe.
    net.node("edge-1").replay(&track());
    let run = std::iter::from_fn(|| net.node("edge-1").poll_output()).find_map(|o| match o {
        TreeOutput::Run { parameter_sets, .. } => Some(parameter_sets),
        _ => None,
    });
    let Some(Some((sps, pps))) = run else {
        panic!("edge-1's replay has no parameter sets: {run:?}");
    };
    assert_eq!((&sps[..], &pps[..]), (&SPS[..], &PPS[..]));
}

/// A chat channel published at the origin, 3 edges below two relays, 5 % loss per hop: 400
/// messages of 1–3 fragments. Returns each edge's messages in delivery order and the NACKs the
/// origin received.
fn data_channel_run(params: DataTrackParams, seed: u64) -> (Vec<Vec<Vec<u8>>>, u64, u64) {
    let mut net = Net::new(0.05, seed);
    net.add("origin", 0);
    net.add("relay-a", 1);
    net.add("relay-b", 1);
    let edges = ["edge-0", "edge-1", "edge-2"];
    for e in edges {
        net.add(e, 0);
    }
    let mut gateways = vec!["origin"];
    gateways.extend(edges);
    net.set_members(&[(0, gateways), (1, vec!["relay-a", "relay-b"])]);
    let key = TrackKey {
        origin: "origin".into(),
        session: [9; 16],
        name: data_key_name("chat"),
    };
    net.node("origin").publish(params.describe(key.clone()));
    let now = net.now;
    for e in edges {
        net.node(e).subscribe(&key, now);
    }
    net.pump();
    net.run(Duration::from_millis(200), |_| {});
    let mut fragmenter = Fragmenter::new();
    let mut sent = 0u32;
    net.run(Duration::from_secs(6), |n| {
        if sent < 400 && n.now.duration_since(now).as_millis() % 10 == 0 {
            let len = 100 + (sent as usize * 37) % 3000;
            let mut body = format!("{sent:05}").into_bytes();
            body.resize(len, b'x');
            let now = n.now;
            for p in fragmenter.fragment(true, &body, 1200, now).expect("fits") {
                if let Some(origin) = n.nodes.get_mut("origin") {
                    origin.local_packet(&key, Arc::new(p), now);
                }
            }
            sent += 1;
        }
    });
    let mut got = Vec::new();
    let mut lost = 0;
    for e in edges {
        let mut r = Reassembly::new(params, ReassemblyLimits::default());
        for p in net.packets.get(e).cloned().unwrap_or_default() {
            r.push(&p, net.now);
        }
        r.handle_timeout(net.now + Duration::from_secs(10));
        got.push(
            std::iter::from_fn(|| r.poll_message())
                .map(|m| m.data[..5].to_vec())
                .collect(),
        );
        lost += r.stats().lost;
    }
    (got, net.nodes["origin"].stats().nacks_received, lost)
}

#[test]
fn a_reliable_data_channel_reaches_every_edge_whole_and_in_order() {
    let (edges, nacks, lost) = data_channel_run(DataTrackParams::default(), 11);
    let want: Vec<Vec<u8>> = (0..400).map(|i| format!("{i:05}").into_bytes()).collect();
    for (i, got) in edges.iter().enumerate() {
        let missing: Vec<_> = want.iter().filter(|m| !got.contains(m)).collect();
        assert!(missing.is_empty(), "edge-{i} misses {missing:?}");
        assert_eq!(got, &want, "edge-{i} got every message, in order");
    }
    assert_eq!(lost, 0);
    assert!(nacks > 0, "5 % loss was repaired");
}

#[test]
fn an_unreliable_data_channel_is_never_asked_for_again() {
    let params = DataTrackParams {
        ordered: true,
        reliable: false,
    };
    let (edges, nacks, lost) = data_channel_run(params, 11);
    assert_eq!(
        nacks, 0,
        "no hop asks for an unreliable channel's datagrams"
    );
    for got in &edges {
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            &sorted, got,
            "still in order: late messages dropped, not reordered"
        );
        // Two hops at 5 % loss, 1-3 fragments per message: roughly 80-90 % arrive.
        assert!(got.len() > 250 && got.len() < 400, "{} of 400", got.len());
    }
    println!("unreliable: {lost} messages lost over 3 edges");
}
