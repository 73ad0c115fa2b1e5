//! The gateway's seat in the cluster: a task that looks like one more media worker to the real
//! workers (it has an index in their peer list) and drives the node's `relay` cluster node.
//!
//! Origin side: every track a WHIP publisher pushes is published into the tree, and the bridge
//! subscribes to it on its origin worker like any other worker would, so its packets reach the
//! tree once; the stream is announced at its home node. Edge side: a WHEP viewer of a stream not
//! published here is resolved through the directory, its tracks are subscribed in the tree, and
//! the bridge feeds the workers that hold viewers — each exactly once per packet, with the
//! keyframe run first for a worker that joins late (it keeps its own keyframe cache per track).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_proto::KeyframeCache;
use relay_proto::link::{StreamOrigin, StreamTrack, SubscribeOk, TrackKey, TrackKind};
use relay_shell::cluster::{ClusterEvent, ClusterHandle, Local};
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaKind, Mid};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bridge_link::ToBridge;
use crate::channel_link::ChannelMsg;
use crate::cluster_channels::ClusterChannels;
use crate::ids::{SessionId, TrackId};
use crate::mailbox::{BridgeMsg, Mailbox};
use crate::registry::{Registry, TrackInfo};
use crate::subscribe_trace::SubscribeTrace;
use crate::track_link::{FromOrigin, ToOrigin, TrackMsg};
use relay_shell::otlp_push::SpanSink;

/// How long a WHEP request waits for the cluster to find a stream and its codecs.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const KEYFRAME_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Requests from the HTTP side.
pub enum BridgeRequest {
    /// A stream published here: put its tracks in the tree and announce it.
    Publish {
        stream: Option<Arc<str>>,
        session: SessionId,
        tracks: Vec<Arc<TrackInfo>>,
    },
    /// Find a stream published elsewhere: its tracks, described for viewers.
    Resolve {
        stream: String,
        reply: oneshot::Sender<Option<Vec<Arc<TrackInfo>>>>,
    },
    /// Does another gateway publish `publisher`'s data channel `name`?
    FindChannel {
        publisher: SessionId,
        name: String,
        reply: oneshot::Sender<bool>,
    },
}

/// Where a resolved stream's tracks are sent (None: not found).
type ResolveReply = oneshot::Sender<Option<Vec<Arc<TrackInfo>>>>;

struct Remote {
    info: Arc<TrackInfo>,
    workers: HashSet<usize>,
    keyframes: KeyframeCache,
    /// H264: the parameter sets seen in what the tree delivered, handed to each later worker
    /// ahead of the cached run (which may start at a keyframe sent without them).
    h264: Option<relay_proto::H264Inspector>,
}

struct PendingResolve {
    stream: String,
    keys: Vec<TrackKey>,
    reply: ResolveReply,
}

pub struct Bridge {
    index: usize,
    node_id: String,
    cluster: ClusterHandle,
    workers: Vec<Mailbox>,
    registry: Arc<Registry>,
    /// Our published tracks.
    local_by_id: HashMap<TrackId, (TrackKey, Arc<TrackInfo>)>,
    local_by_key: HashMap<TrackKey, TrackId>,
    /// Tracks published elsewhere that this node's viewers receive.
    remote_by_key: HashMap<TrackKey, Remote>,
    remote_by_id: HashMap<TrackId, TrackKey>,
    lookups: Vec<(String, ResolveReply)>,
    resolving: Vec<PendingResolve>,
    /// Data channels published here or subscribed from elsewhere.
    channels: ClusterChannels,
    subscribes: SubscribeTrace,
    /// The stream each resolved remote track belongs to, to forget it in `remote_streams`
    /// when the track ends.
    stream_of_key: HashMap<TrackKey, String>,
    remote_streams: Option<crate::remote_streams::RemoteStreams>,
}

fn session_bytes(id: SessionId) -> [u8; 16] {
    id.to_bytes()
}

fn wire_codec(codec: Codec) -> relay_proto::Codec {
    relay_proto::Codec::from_name(&codec.to_string())
}

fn str0m_codec(codec: relay_proto::Codec) -> Option<Codec> {
    Some(match codec {
        relay_proto::Codec::H264 => Codec::H264,
        relay_proto::Codec::H265 => Codec::H265,
        relay_proto::Codec::Vp8 => Codec::Vp8,
        relay_proto::Codec::Vp9 => Codec::Vp9,
        relay_proto::Codec::Av1 => Codec::Av1,
        relay_proto::Codec::Opus => Codec::Opus,
        relay_proto::Codec::Other => return None,
    })
}

/// How a local track is described to the tree.
pub fn describe(key: TrackKey, info: &TrackInfo) -> Option<SubscribeOk> {
    let p = info.params.first()?;
    let spec = p.spec();
    Some(SubscribeOk {
        track: key,
        channel: 0,
        first_seq: u64::MAX,
        codec: wire_codec(spec.codec),
        clock_rate: spec.clock_rate.get(),
        pt: *p.pt(),
        audio_channels: spec.channels.unwrap_or(0),
        fmtp: spec.format.to_string(),
    })
}

impl Bridge {
    pub fn new(
        index: usize,
        node_id: String,
        cluster: ClusterHandle,
        workers: Vec<Mailbox>,
        registry: Arc<Registry>,
    ) -> Bridge {
        let channels = ClusterChannels::new(node_id.clone());
        let subscribes = SubscribeTrace::new(SpanSink::disabled(), node_id.clone());
        Bridge {
            index,
            node_id,
            cluster,
            workers,
            registry,
            local_by_id: HashMap::new(),
            local_by_key: HashMap::new(),
            remote_by_key: HashMap::new(),
            remote_by_id: HashMap::new(),
            lookups: Vec::new(),
            resolving: Vec::new(),
            channels,
            subscribes,
            stream_of_key: HashMap::new(),
            remote_streams: None,
        }
    }

    /// Forget a stream in `cache` when one of its tracks ends.
    pub fn invalidate_streams_in(&mut self, cache: crate::remote_streams::RemoteStreams) {
        self.remote_streams = Some(cache);
    }

    /// Export a span per cluster subscribe (`subscribe_trace`).
    pub fn trace_subscribes(&mut self, sink: SpanSink) {
        self.subscribes = SubscribeTrace::new(sink, self.node_id.clone());
    }

    pub async fn run(
        mut self,
        mut from_workers: mpsc::UnboundedReceiver<BridgeMsg>,
        mut requests: mpsc::UnboundedReceiver<BridgeRequest>,
        mut events: mpsc::UnboundedReceiver<ClusterEvent>,
        links: CancellationToken,
    ) {
        // Shutdown, in order: the workers close their sessions and go (their last words — tracks
        // ended, streams gone — still reach the tree); when the last one has gone, the links
        // close (QUIC close frames sent); when the node has stopped, the bridge returns.
        let mut workers_open = true;
        // Data channel reassembly gives up unrepaired gaps on this tick (seconds-scale limits).
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.channels
                        .handle_timeout(&self.cluster, &self.workers, Instant::now())
                }
                msg = from_workers.recv(), if workers_open => match msg {
                    Some(msg) => self.on_worker(msg),
                    None => {
                        workers_open = false;
                        links.cancel();
                    }
                },
                Some(req) = requests.recv() => self.on_request(req),
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
            }
        }
    }

    fn key(&self, session: SessionId, name: &str) -> TrackKey {
        TrackKey {
            origin: self.node_id.clone(),
            session: session_bytes(session),
            name: name.to_string(),
        }
    }

    fn on_request(&mut self, req: BridgeRequest) {
        match req {
            BridgeRequest::Publish {
                stream,
                session,
                tracks,
            } => {
                let mut announced = Vec::new();
                for info in tracks {
                    let key = self.key(session, &info.name);
                    let Some(ok) = describe(key.clone(), &info) else {
                        continue;
                    };
                    self.cluster.send(Local::Publish(ok));
                    let kind = if info.kind == MediaKind::Audio {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    };
                    announced.push(StreamTrack {
                        name: info.name.clone(),
                        kind,
                    });
                    // Feed the tree from the origin worker, like a worker with viewers would.
                    if let Some(w) = self.workers.get(info.origin_worker) {
                        w.track(ToOrigin::Subscribe {
                            track: info.clone(),
                            worker: self.index,
                        });
                    }
                    self.local_by_key.insert(key.clone(), info.id);
                    self.local_by_id.insert(info.id, (key, info));
                }
                if let Some(stream) = stream {
                    let origin = StreamOrigin {
                        node: self.node_id.clone(),
                        session: session_bytes(session),
                        tracks: announced,
                    };
                    self.cluster
                        .send(Local::Announce(stream.to_string(), origin));
                }
            }
            BridgeRequest::Resolve { stream, reply } => {
                self.lookups.push((stream.clone(), reply));
                self.cluster.send(Local::Lookup(stream));
            }
            BridgeRequest::FindChannel {
                publisher,
                name,
                reply,
            } => self
                .channels
                .find(&self.cluster, publisher, name, reply, Instant::now()),
        }
    }

    fn on_worker(&mut self, msg: BridgeMsg) {
        match msg {
            BridgeMsg::Track(TrackMsg::FromOrigin(m)) => self.on_from_origin(m),
            BridgeMsg::Track(TrackMsg::ToOrigin(m)) => self.on_to_origin(m),
            BridgeMsg::Channel(m) => self.on_channel(m),
            BridgeMsg::Notice(n) => self.on_notice(n),
        }
    }

    /// Origin side: a local track the bridge feeds into its tree.
    fn on_from_origin(&mut self, msg: FromOrigin) {
        match msg {
            // Origin side: a packet of a local track, once, for the whole tree.
            FromOrigin::Media { track, packet } => {
                if let Some((key, _)) = self.local_by_id.get(&track) {
                    self.cluster.send(Local::Packet(key.clone(), packet));
                }
            }
            FromOrigin::TrackEnded { track } => {
                if let Some((key, _)) = self.local_by_id.remove(&track) {
                    self.local_by_key.remove(&key);
                    crate::heap_trim::shrink_map(&mut self.local_by_id);
                    crate::heap_trim::shrink_map(&mut self.local_by_key);
                    self.cluster.send(Local::Unpublish(key));
                }
            }
            // Origin side: the tree learns parameter sets in-band (the bridge feeds it from the
            // publisher's first packet on), and replays them ahead of a run that lacks them.
            FromOrigin::H264ParameterSets { .. } => {}
        }
    }

    /// Edge side: a worker with viewers of a remote track (the bridge is its origin).
    fn on_to_origin(&mut self, msg: ToOrigin) {
        match msg {
            ToOrigin::Subscribe { track, worker } => {
                let Some(key) = self.remote_by_id.get(&track.id).cloned() else {
                    if let Some(w) = self.workers.get(worker) {
                        w.track(FromOrigin::TrackEnded { track: track.id });
                    }
                    return;
                };
                let Some(remote) = self.remote_by_key.get_mut(&key) else {
                    return;
                };
                let first = remote.workers.is_empty();
                if !remote.workers.insert(worker) {
                    return;
                }
                // The tree answers every subscribe with its keyframe run, delivered to every
                // worker of the track: only the node's first worker subscribes; later ones get
                // the run the bridge cached, once.
                if first {
                    self.subscribes.asked(&key, Instant::now());
                    self.cluster.send(Local::Subscribe(key));
                } else if let Some(w) = self.workers.get(worker) {
                    if let Some((sps, pps)) = remote.h264.as_ref().and_then(|h| h.parameter_sets())
                    {
                        w.track(FromOrigin::H264ParameterSets {
                            track: track.id,
                            sps: sps.into(),
                            pps: pps.into(),
                        });
                    }
                    for p in remote.keyframes.run() {
                        w.track(FromOrigin::Media {
                            track: track.id,
                            packet: p.clone(),
                        });
                    }
                }
            }
            ToOrigin::Unsubscribe { track, worker } => {
                let Some(key) = self.remote_by_id.get(&track).cloned() else {
                    return;
                };
                if let Some(remote) = self.remote_by_key.get_mut(&key) {
                    remote.workers.remove(&worker);
                    if remote.workers.is_empty() {
                        self.cluster.send(Local::Unsubscribe(key));
                    }
                }
            }
            ToOrigin::KeyframeRequest { track } => {
                if let Some(key) = self.remote_by_id.get(&track) {
                    self.cluster.send(Local::KeyframeRequest(key.clone()));
                }
            }
        }
    }

    fn on_notice(&mut self, n: ToBridge) {
        match n {
            ToBridge::StreamGone { stream, session } => {
                self.cluster
                    .send(Local::Withdraw(stream.to_string(), session_bytes(session)));
            }
            ToBridge::ChannelPublished {
                publisher,
                name,
                params,
            } => self
                .channels
                .publish(&self.cluster, publisher, name, params),
            ToBridge::ChannelUnpublished { publisher, name } => {
                self.channels.unpublish(&self.cluster, publisher, &name)
            }
            ToBridge::ChannelToCluster {
                publisher,
                name,
                binary,
                data,
            } => self.channels.send(
                &self.cluster,
                publisher,
                name,
                binary,
                &data,
                Instant::now(),
            ),
        }
    }

    /// A worker's subscription to a channel published on another gateway.
    fn on_channel(&mut self, m: ChannelMsg) {
        match m {
            ChannelMsg::Subscribe {
                publisher,
                name,
                subscriber,
            } => {
                // A WHEP viewer's channel names only the publisher: its node is the one its
                // media tracks come from.
                let origin = self
                    .remote_by_key
                    .keys()
                    .find(|k| k.session == publisher.to_bytes())
                    .map(|k| k.origin.clone());
                self.channels
                    .subscribe(&self.cluster, publisher, &name, subscriber, origin)
            }
            ChannelMsg::Unsubscribe {
                publisher,
                name,
                subscriber,
            } => self
                .channels
                .unsubscribe(&self.cluster, publisher, &name, subscriber),
            // canReply to a publisher on another gateway is refused when asked for
            // (`set_can_reply`), so no worker sends one here.
            ChannelMsg::Reply {
                publisher, name, ..
            } => {
                tracing::warn!(%publisher, %name, "a reply to a channel published on another gateway was dropped");
            }
            // The bridge hands remote channels' messages to workers; it never receives one.
            ChannelMsg::Message { .. } => {
                tracing::warn!("a data channel message addressed to the bridge was dropped");
            }
        }
    }

    fn on_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Deliver(key, packet) => {
                if self
                    .channels
                    .on_deliver(&self.workers, &key, &packet, Instant::now())
                {
                    return;
                }
                let Some(remote) = self.remote_by_key.get_mut(&key) else {
                    return;
                };
                self.subscribes.delivered(&key, Instant::now());
                remote.keyframes.push(&packet);
                if let Some(h) = remote.h264.as_mut() {
                    h.push(packet.rtp_time, &packet.payload);
                }
                for w in &remote.workers {
                    if let Some(tx) = self.workers.get(*w) {
                        tx.track(FromOrigin::Media {
                            track: remote.info.id,
                            packet: packet.clone(),
                        });
                    }
                }
            }
            ClusterEvent::TrackReady(key, ok) => {
                if !self.channels.on_track_ready(&key, &ok) {
                    self.subscribes.ready(&key, Instant::now());
                    self.on_track_ready(key, ok)
                }
            }
            ClusterEvent::TrackEnded(key) => {
                if self.channels.on_track_ended(&key) {
                    return;
                }
                self.subscribes.ended(&key);
                if let Some(stream) = self.stream_of_key.remove(&key)
                    && let Some(cache) = &self.remote_streams
                {
                    cache.invalidate(stream);
                }
                if let Some(remote) = self.remote_by_key.remove(&key) {
                    self.remote_by_id.remove(&remote.info.id);
                    crate::heap_trim::shrink_map(&mut self.remote_by_key);
                    crate::heap_trim::shrink_map(&mut self.remote_by_id);
                    for w in &remote.workers {
                        if let Some(tx) = self.workers.get(*w) {
                            tx.track(FromOrigin::TrackEnded {
                                track: remote.info.id,
                            });
                        }
                    }
                }
                self.fail_resolving(&key);
            }
            ClusterEvent::KeyframeRequest(key) => {
                if let Some(id) = self.local_by_key.get(&key)
                    && let Some((_, info)) = self.local_by_id.get(id)
                    && let Some(w) = self.workers.get(info.origin_worker)
                {
                    w.track(ToOrigin::KeyframeRequest { track: *id });
                }
            }
            // A gateway does not drain its tree this way (its sessions are the one-address
            // issue's); nothing to do if it ever hears of it.
            ClusterEvent::Drained => {}
            ClusterEvent::StreamLocation(stream, origin) => {
                if !self
                    .channels
                    .on_location(&stream, origin.as_ref(), Instant::now())
                {
                    self.on_location(stream, origin)
                }
            }
        }
    }

    fn on_location(&mut self, stream: String, origin: Option<StreamOrigin>) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lookups)
            .into_iter()
            .partition(|(s, _)| *s == stream);
        self.lookups = rest;
        for (_, reply) in mine {
            let Some(origin) = origin.clone().filter(|o| !o.tracks.is_empty()) else {
                let _ = reply.send(None);
                continue;
            };
            let keys: Vec<TrackKey> = origin
                .tracks
                .iter()
                .map(|t| origin.track_key(&t.name))
                .collect();
            for key in &keys {
                if !self.remote_by_key.contains_key(key) {
                    // Subscribing is how the codec description (SubscribeOk) comes down the tree.
                    self.subscribes.asked(key, Instant::now());
                    self.cluster.send(Local::Subscribe(key.clone()));
                }
            }
            self.resolving.push(PendingResolve {
                stream: stream.clone(),
                keys,
                reply,
            });
        }
        self.finish_resolving();
    }

    fn on_track_ready(&mut self, key: TrackKey, ok: SubscribeOk) {
        if !self.remote_by_key.contains_key(&key)
            && let Some(info) = self.remote_info(&key, &ok)
        {
            self.remote_by_id.insert(info.id, key.clone());
            self.remote_by_key.insert(
                key,
                Remote {
                    info,
                    workers: HashSet::new(),
                    keyframes: KeyframeCache::new(KEYFRAME_CACHE_BYTES),
                    h264: (ok.codec == relay_proto::Codec::H264)
                        .then(relay_proto::H264Inspector::new),
                },
            );
        }
        self.finish_resolving();
    }

    fn remote_info(&self, key: &TrackKey, ok: &SubscribeOk) -> Option<Arc<TrackInfo>> {
        let codec = str0m_codec(ok.codec)?;
        let clock_rate = Frequency::new(ok.clock_rate)?;
        let kind = if codec.is_audio() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let spec = CodecSpec {
            codec,
            clock_rate,
            channels: (ok.audio_channels > 0).then_some(ok.audio_channels),
            format: FormatParams::parse_line(&ok.fmtp),
        };
        Some(Arc::new(TrackInfo::new(
            self.registry.next_track_id(),
            SessionId::from_bytes(key.session),
            key.name.clone(),
            kind,
            Mid::from(key.name.as_str()),
            vec![PayloadParams::new(ok.pt.into(), None, spec)],
            self.index,
        )))
    }

    fn finish_resolving(&mut self) {
        let pending = std::mem::take(&mut self.resolving);
        for p in pending {
            let ready: Option<Vec<Arc<TrackInfo>>> = p
                .keys
                .iter()
                .map(|k| self.remote_by_key.get(k).map(|r| r.info.clone()))
                .collect();
            match ready {
                Some(tracks) => {
                    tracing::info!(stream = %p.stream, tracks = tracks.len(), "stream found in the cluster");
                    for k in &p.keys {
                        self.stream_of_key.insert(k.clone(), p.stream.clone());
                    }
                    let _ = p.reply.send(Some(tracks));
                }
                None if p.reply.is_closed() => {}
                None => self.resolving.push(p),
            }
        }
    }

    fn fail_resolving(&mut self, key: &TrackKey) {
        let pending = std::mem::take(&mut self.resolving);
        for p in pending {
            if p.keys.contains(key) {
                let _ = p.reply.send(None);
            } else {
                self.resolving.push(p);
            }
        }
    }
}

/// Join the cluster: the relay crate's cluster node with this gateway as a tier-0 member.
pub async fn start_cluster(
    settings: &crate::config::ClusterSettings,
    shutdown: CancellationToken,
) -> Result<(ClusterHandle, mpsc::UnboundedReceiver<ClusterEvent>, String), String> {
    let config = settings.config(0)?;
    let node_id = config.node_id.clone();
    let (handle, events) = relay_shell::cluster::start(config, shutdown).await?;
    tracing::info!(%node_id, listen = %settings.listen, "joined the cluster");
    Ok((handle, events, node_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::WorkerMsg;

    type Rx<T> = mpsc::UnboundedReceiver<T>;

    /// An edge node's bridge with two workers and one remote track of `codec`, ready.
    fn edge(
        codec: relay_proto::Codec,
    ) -> (
        Bridge,
        Rx<Local>,
        Rx<WorkerMsg>,
        Rx<WorkerMsg>,
        TrackKey,
        Arc<TrackInfo>,
    ) {
        let (cluster_tx, cluster_rx) = mpsc::unbounded_channel();
        let (w0, rx0) = mpsc::unbounded_channel();
        let (w1, rx1) = mpsc::unbounded_channel();
        let mut bridge = Bridge::new(
            2,
            "edge".into(),
            ClusterHandle::detached(cluster_tx),
            vec![Mailbox::Worker(w0), Mailbox::Worker(w1)],
            Arc::new(Registry::default()),
        );
        let key = TrackKey {
            origin: "origin".into(),
            session: [7; 16],
            name: "video".into(),
        };
        let ok = SubscribeOk {
            track: key.clone(),
            channel: 0,
            first_seq: 0,
            codec,
            clock_rate: 90_000,
            pt: 96,
            audio_channels: 0,
            fmtp: String::new(),
        };
        bridge.on_event(ClusterEvent::TrackReady(key.clone(), ok));
        let info = bridge.remote_by_key[&key].info.clone();
        (bridge, cluster_rx, rx0, rx1, key, info)
    }

    fn packet(seq: u64, keyframe_start: bool) -> relay_proto::SharedPacket {
        Arc::new(relay_proto::MediaPacket {
            seq,
            rtp_time: seq / 3,
            marker: seq % 3 == 2,
            pt: 96,
            payload: vec![0u8; 100].into(),
            keyframe_start,
            received: std::time::Instant::now(),
        })
    }

    /// Issue 10: the tree answers each subscribe with its keyframe run, to every worker of the
    /// track. The node subscribes once; a second worker gets one run, from the bridge's cache,
    /// and the first worker none again.
    #[test]
    fn a_second_worker_gets_one_keyframe_run_and_the_first_none() {
        let (mut bridge, mut cluster_rx, mut rx0, mut rx1, key, info) =
            edge(relay_proto::Codec::Vp8);
        let subscribes = |rx: &mut mpsc::UnboundedReceiver<Local>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|l| matches!(l, Local::Subscribe(_)))
                .count()
        };
        let media = |rx: &mut mpsc::UnboundedReceiver<WorkerMsg>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|m| {
                    matches!(
                        m,
                        WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::Media { .. }))
                    )
                })
                .count()
        };

        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
            track: info.clone(),
            worker: 0,
        })));
        assert_eq!(subscribes(&mut cluster_rx), 1, "the node subscribes");
        // The tree's answer: a keyframe run of 3 packets.
        for seq in 0..3 {
            bridge.on_event(ClusterEvent::Deliver(key.clone(), packet(seq, seq == 0)));
        }
        assert_eq!(media(&mut rx0), 3);

        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
            track: info.clone(),
            worker: 1,
        })));
        assert_eq!(
            subscribes(&mut cluster_rx),
            0,
            "no second subscribe, no second replay"
        );
        assert_eq!(
            media(&mut rx1),
            3,
            "the second worker gets the cached run once"
        );
        assert_eq!(media(&mut rx0), 0, "the first worker gets nothing again");
        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
            track: info,
            worker: 1,
        })));
        assert_eq!(media(&mut rx1), 0, "a repeated subscribe replays nothing");
    }

    /// Issue 10: an edge worker that subscribes after the tree delivered the track's only
    /// SPS/PPS is handed them before the cached run (it never saw them in-band).
    #[test]
    fn a_later_worker_gets_the_parameter_sets_first() {
        let (mut bridge, _cluster_rx, _rx0, mut rx1, key, info) = edge(relay_proto::Codec::H264);
        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
            track: info.clone(),
            worker: 0,
        })));
        let stap_a: Vec<u8> = vec![
            24, 0, 4, 0x67, 0x42, 0x00, 0x1f, 0, 4, 0x68, 0xce, 0x3c, 0x80,
        ];
        let at = std::time::Instant::now();
        let pkt = |seq: u64, payload: Vec<u8>, keyframe_start: bool| {
            Arc::new(relay_proto::MediaPacket {
                seq,
                rtp_time: seq * 3000,
                marker: true,
                pt: 96,
                payload: payload.into(),
                keyframe_start,
                received: at,
            })
        };
        bridge.on_event(ClusterEvent::Deliver(key.clone(), pkt(1, stap_a, true)));
        bridge.on_event(ClusterEvent::Deliver(
            key.clone(),
            pkt(2, vec![0x65, 0x88], true),
        ));
        bridge.on_event(ClusterEvent::Deliver(
            key.clone(),
            pkt(3, vec![0x41, 0x9a], false),
        ));
        // A newer keyframe without parameter sets: the cached run starts there.
        bridge.on_event(ClusterEvent::Deliver(
            key.clone(),
            pkt(4, vec![0x65, 0x88], true),
        ));
        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
            track: info,
            worker: 1,
        })));
        let got: Vec<WorkerMsg> = std::iter::from_fn(|| rx1.try_recv().ok()).collect();
        assert!(
            matches!(got.first(), Some(WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::H264ParameterSets { sps, pps, .. })))
                if sps[..] == [0x67, 0x42, 0x00, 0x1f] && pps[..] == [0x68, 0xce, 0x3c, 0x80]),
            "the later worker is not given the parameter sets first"
        );
        assert!(
            matches!(got.get(1), Some(WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::Media { packet, .. }))) if packet.seq == 4),
            "then the cached run"
        );
    }
}
