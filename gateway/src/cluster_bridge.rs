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

use relay_proto::SharedPacket;
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

/// Requests from the HTTP side.
pub enum BridgeRequest {
    /// A stream published here: put its tracks in the tree and announce it.
    Publish {
        /// The WHIP stream name, when the session publishes one (Calls sessions do not).
        stream: Option<Arc<str>>,
        /// The publishing session.
        session: SessionId,
        /// Its tracks, each fed into its own tree.
        tracks: Vec<Arc<TrackInfo>>,
    },
    /// Find a stream published elsewhere: its tracks, described for viewers.
    Resolve {
        /// The stream name.
        stream: String,
        /// Its tracks as this node's viewers pull them, or `None` when it is not live anywhere.
        reply: oneshot::Sender<Option<Vec<Arc<TrackInfo>>>>,
    },
    /// Does another gateway publish `publisher`'s data channel `name`?
    FindChannel {
        /// The publishing session.
        publisher: SessionId,
        /// The channel's name.
        name: String,
        /// Whether a gateway of the cluster publishes it.
        reply: oneshot::Sender<bool>,
    },
}

/// Where a resolved stream's tracks are sent (None: not found).
type ResolveReply = oneshot::Sender<Option<Vec<Arc<TrackInfo>>>>;

struct Remote {
    info: Arc<TrackInfo>,
    workers: HashSet<usize>,
    /// Workers whose `Subscribe` or `Replay` waits for the tree's next `Run`. The tree hop
    /// holds this node's one keyframe cache for the track; the bridge keeps none.
    awaiting_run: Vec<usize>,
}

struct PendingResolve {
    stream: String,
    keys: Vec<TrackKey>,
    reply: ResolveReply,
}

/// The node's one task between its workers and the cluster: origin of tracks published
/// elsewhere (served to workers from the tree hop), feeder of local tracks into their trees,
/// stream lookups and data channels across gateways.
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
    /// Media tracks each local session publishes, listed in the directory under
    /// [`media_directory_name`] so that a session on another gateway can pull one by
    /// (session id, track name), as the session/track API does.
    media_listed: HashMap<SessionId, Vec<StreamTrack>>,
}

/// The directory name under which a session's media tracks are listed (beside WHIP stream
/// names and the data channels' `session:` names).
pub fn media_directory_name(session: SessionId) -> String {
    format!("media:{session}")
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
    /// The bridge at mailbox `index`, for node `node_id`, in front of `workers`.
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
            media_listed: HashMap::new(),
        }
    }

    /// Forget a stream in `cache` when one of its tracks ends.
    pub fn invalidate_streams_in(&mut self, cache: crate::remote_streams::RemoteStreams) {
        self.remote_streams = Some(cache);
    }

    /// Export a span per cluster subscribe (`subscribe_trace`).
    /// Record each remote subscribe (asked, ready, first packet) as a span in `sink`.
    pub fn trace_subscribes(&mut self, sink: SpanSink) {
        self.subscribes = SubscribeTrace::new(sink, self.node_id.clone());
    }

    /// Serve workers, HTTP requests and cluster events until `shutdown`.
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
                    let listed = self.media_listed.entry(session).or_default();
                    listed.retain(|t| t.name != info.name);
                    listed.push(StreamTrack {
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
                self.list_media(session);
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

    /// (Re)lists a local session's media tracks in the directory, or withdraws the listing once
    /// it has none.
    fn list_media(&mut self, session: SessionId) {
        let name = media_directory_name(session);
        match self.media_listed.get(&session) {
            Some(tracks) if !tracks.is_empty() => {
                let origin = StreamOrigin {
                    node: self.node_id.clone(),
                    session: session_bytes(session),
                    tracks: tracks.clone(),
                };
                self.cluster.send(Local::Announce(name, origin));
            }
            _ => {
                self.media_listed.remove(&session);
                crate::heap_trim::shrink_map(&mut self.media_listed);
                self.cluster
                    .send(Local::Withdraw(name, session_bytes(session)));
            }
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
                if let Some((key, info)) = self.local_by_id.remove(&track) {
                    if let Some(listed) = self.media_listed.get_mut(&info.session) {
                        listed.retain(|t| t.name != info.name);
                        self.list_media(info.session);
                    }
                    self.local_by_key.remove(&key);
                    crate::heap_trim::shrink_map(&mut self.local_by_id);
                    crate::heap_trim::shrink_map(&mut self.local_by_key);
                    self.cluster.send(Local::Unpublish(key));
                }
            }
            // Origin side: the run the origin worker answers our subscribe with (the bridge
            // subscribes when the track is published, so it is short or empty) goes into the
            // tree ahead of the live packets, like them.
            FromOrigin::Run { track, packets, .. } => {
                if let Some((key, _)) = self.local_by_id.get(&track) {
                    for p in packets.iter() {
                        self.cluster.send(Local::Packet(key.clone(), p.clone()));
                    }
                }
            }
        }
    }

    /// Edge side: a worker with viewers of a remote track (the bridge is its origin).
    fn on_to_origin(&mut self, msg: ToOrigin) {
        match msg {
            // The tree answers each subscribe and replay with one run, in order with the live
            // packets: the node's first worker subscribes, later ones ask for a replay.
            ToOrigin::Subscribe { track, worker } => {
                let Some(key) = self.remote_key(track.id, worker) else {
                    return;
                };
                let Some(remote) = self.remote_by_key.get_mut(&key) else {
                    return;
                };
                let first = remote.workers.is_empty();
                remote.workers.insert(worker);
                remote.awaiting_run.push(worker);
                if first {
                    self.subscribes.asked(&key, Instant::now());
                    self.cluster.send(Local::Subscribe(key));
                } else {
                    self.cluster.send(Local::Replay(key));
                }
            }
            ToOrigin::Replay { track, worker } => {
                let Some(key) = self.remote_key(track, worker) else {
                    return;
                };
                if let Some(remote) = self.remote_by_key.get_mut(&key) {
                    remote.awaiting_run.push(worker);
                    self.cluster.send(Local::Replay(key));
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

    /// The key of remote track `track`; `TrackEnded` to `worker` when it is gone from here.
    fn remote_key(&self, track: TrackId, worker: usize) -> Option<TrackKey> {
        let key = self
            .remote_by_id
            .get(&track)
            .filter(|k| self.remote_by_key.contains_key(*k))
            .cloned();
        if key.is_none()
            && let Some(w) = self.workers.get(worker)
        {
            w.track(FromOrigin::TrackEnded { track });
        }
        key
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
                for w in &remote.workers {
                    if let Some(tx) = self.workers.get(*w) {
                        tx.track(FromOrigin::Media {
                            track: remote.info.id,
                            packet: packet.clone(),
                        });
                    }
                }
            }
            // The tree's answer to a subscribe or replay: it is every waiting worker's start
            // (each has had every packet delivered since it asked, and gets every one after).
            ClusterEvent::Run(key, packets, parameter_sets) => {
                let Some(remote) = self.remote_by_key.get_mut(&key) else {
                    return;
                };
                let mut waiting = std::mem::take(&mut remote.awaiting_run);
                waiting.sort_unstable();
                waiting.dedup();
                let packets: Arc<[SharedPacket]> = packets.into();
                for w in waiting {
                    if let Some(tx) = self.workers.get(w) {
                        tx.track(FromOrigin::Run {
                            track: remote.info.id,
                            packets: packets.clone(),
                            parameter_sets: parameter_sets.clone(),
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
                    awaiting_run: Vec::new(),
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

    /// One keyframe cache per track per node: the tree hop's. Each worker's subscribe is
    /// answered by one run from the tree, to that worker only (the node subscribes once, later
    /// workers ask for a replay); the live packets go to every worker.
    #[test]
    fn each_worker_gets_one_run_from_the_tree_and_no_other_workers_run() {
        let (mut bridge, mut cluster_rx, mut rx0, mut rx1, key, info) =
            edge(relay_proto::Codec::Vp8);
        let asked = |rx: &mut Rx<Local>| -> Vec<&'static str> {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter_map(|l| match l {
                    Local::Subscribe(_) => Some("subscribe"),
                    Local::Replay(_) => Some("replay"),
                    _ => None,
                })
                .collect()
        };
        // (runs and their lengths, live packets) a worker got.
        let got = |rx: &mut Rx<WorkerMsg>| {
            let mut runs = Vec::new();
            let mut media = 0;
            while let Ok(m) = rx.try_recv() {
                match m {
                    WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::Run { packets, .. })) => {
                        runs.push(packets.len())
                    }
                    WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::Media { .. })) => media += 1,
                    _ => {}
                }
            }
            (runs, media)
        };
        let subscribe = |bridge: &mut Bridge, worker| {
            bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Subscribe {
                track: info.clone(),
                worker,
            })))
        };

        subscribe(&mut bridge, 0);
        assert_eq!(asked(&mut cluster_rx), ["subscribe"]);
        let run: Vec<_> = (0..3).map(|seq| packet(seq, seq == 0)).collect();
        bridge.on_event(ClusterEvent::Run(key.clone(), run, None));
        bridge.on_event(ClusterEvent::Deliver(key.clone(), packet(3, false)));
        assert_eq!(got(&mut rx0), (vec![3], 1));

        subscribe(&mut bridge, 1);
        assert_eq!(asked(&mut cluster_rx), ["replay"], "no second subscribe");
        // A live packet between the ask and the answer reaches both (the run includes it).
        bridge.on_event(ClusterEvent::Deliver(key.clone(), packet(4, false)));
        let run: Vec<_> = (0..5).map(|seq| packet(seq, seq == 0)).collect();
        bridge.on_event(ClusterEvent::Run(key.clone(), run, None));
        assert_eq!(got(&mut rx1), (vec![5], 1));
        assert_eq!(
            got(&mut rx0),
            (vec![], 1),
            "the first worker gets no run again"
        );

        bridge.on_worker(BridgeMsg::Track(TrackMsg::ToOrigin(ToOrigin::Replay {
            track: info.id,
            worker: 0,
        })));
        assert_eq!(asked(&mut cluster_rx), ["replay"]);
        let sets: relay_proto::ParameterSets =
            (Arc::from(&[0x67u8, 0x42][..]), Arc::from(&[0x68u8][..]));
        bridge.on_event(ClusterEvent::Run(key.clone(), Vec::new(), Some(sets)));
        // An empty run (wait for a live keyframe), with the tree hop's parameter sets for it.
        let msg = rx0.try_recv().ok();
        assert!(
            matches!(
                &msg,
                Some(WorkerMsg::Track(TrackMsg::FromOrigin(FromOrigin::Run {
                    packets,
                    parameter_sets: Some((sps, pps)),
                    ..
                }))) if packets.is_empty() && sps[..] == [0x67, 0x42] && pps[..] == [0x68]
            ),
            "the tree's parameter sets reach the worker with an empty run"
        );
        assert_eq!(got(&mut rx0), (vec![], 0));
        assert_eq!(got(&mut rx1), (vec![], 0));
    }
}
