//! Calls' WebSocket media adapters (`adapters/websocket/new|close`): a track fed by a service
//! over a WebSocket (ingest: PCM in, published as an Opus track of a new session that anyone
//! pulls by `(sessionId, trackName)`), or a track sent to one (egress: its Opus decoded to PCM).
//! The gateway dials the service in both directions, as Calls does.
//!
//! The hub is one more peer of the media workers (like the recorder): workers pulling an ingest
//! track subscribe to it here, and an egress adapter subscribes to its track on the track's
//! worker. Each adapter's WebSocket and codec work run in its own task; the hub only routes.
//! HTTP connects the WebSocket first (so an unreachable endpoint fails in its item) and hands
//! the open socket over.

pub mod endpoint;
pub mod packet;
pub mod pcm;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaKind, Mid};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::ids::{SessionId, TrackId, random_token};
use crate::mailbox::Mailbox;
use crate::registry::{Registry, Role, SessionEntry, TrackInfo};
use crate::track_link::{FromOrigin, ToOrigin, TrackMsg};
use endpoint::Socket;
use packet::Packet;

/// Largest message an ingest service may send (Calls' limit); larger ones are dropped, counted.
pub const MAX_INGEST_MESSAGE: usize = 32 * 1024;
/// Opus packets waiting for an egress adapter's WebSocket at most; beyond, they are dropped
/// (a slow service loses audio, it does not hold up the track's worker).
const EGRESS_QUEUE: usize = 256;
/// The payload type an ingest track is described with (Opus, as browsers number it).
const OPUS_PT: u8 = 111;

/// From the HTTP side.
pub enum AdapterRequest {
    /// A connected service that sends PCM: publish it as `track_name` of a new session.
    Ingest {
        /// The app creating it (only that app may close it).
        app: String,
        /// The name the ingest track is published under.
        track_name: String,
        /// The open WebSocket to the service.
        socket: Socket,
        /// Gets the adapter id and the new session's id.
        reply: oneshot::Sender<(String, SessionId)>,
    },
    /// A connected service that receives `track` as PCM.
    Egress {
        /// The app creating it (only that app may close it).
        app: String,
        /// The track to send to the service.
        track: Arc<TrackInfo>,
        /// The open WebSocket to the service.
        socket: Socket,
        /// Gets the adapter id.
        reply: oneshot::Sender<String>,
    },
    /// Close the app's adapter; the bytes it carried, None if there is no such adapter.
    Close {
        /// The app asking; another app's adapter is not closed.
        app: String,
        /// The adapter id.
        adapter: String,
        /// Gets the bytes carried, or None.
        reply: oneshot::Sender<Option<u64>>,
    },
}

/// From the adapters' tasks to the hub.
pub enum TaskEvent {
    /// An ingest adapter's next Opus packet, for the track's subscribers.
    Packet {
        /// The adapter id.
        adapter: String,
        /// The encoded packet.
        packet: relay_proto::MediaPacket,
    },
    /// An adapter's task ended (the socket closed or failed): the adapter goes.
    Ended {
        /// The adapter id.
        adapter: String,
    },
}

enum Direction {
    Ingest {
        session: SessionId,
        track: Arc<TrackInfo>,
        subscribers: HashSet<usize>,
    },
    Egress {
        track: Arc<TrackInfo>,
        tx: mpsc::Sender<relay_proto::SharedPacket>,
    },
}

struct Adapter {
    app: String,
    direction: Direction,
    bytes: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// Routes between the adapters' tasks and the media workers; one per node, a peer of the workers.
pub struct Hub {
    index: usize,
    /// Adapters at most; a request beyond is dropped unanswered (HTTP says so in the item).
    max: usize,
    peers: Vec<Mailbox>,
    registry: Arc<Registry>,
    adapters: HashMap<String, Adapter>,
    by_track: HashMap<TrackId, String>,
    events_tx: mpsc::UnboundedSender<TaskEvent>,
}

fn opus_track(registry: &Registry, session: SessionId, name: String, index: usize) -> TrackInfo {
    let spec = CodecSpec {
        codec: Codec::Opus,
        clock_rate: Frequency::FORTY_EIGHT_KHZ,
        channels: Some(2),
        format: FormatParams::parse_line("minptime=10;useinbandfec=1"),
    };
    TrackInfo::new(
        registry.next_track_id(),
        session,
        name,
        MediaKind::Audio,
        Mid::from("0"),
        vec![PayloadParams::new(OPUS_PT.into(), None, spec)],
        index,
    )
}

impl Hub {
    /// A hub that is peer `index` of the workers, with at most `max` adapters; also the
    /// receiver its adapters' tasks report to.
    pub fn new(
        index: usize,
        max: usize,
        peers: Vec<Mailbox>,
        registry: Arc<Registry>,
    ) -> (Hub, mpsc::UnboundedReceiver<TaskEvent>) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        (
            Hub {
                index,
                max,
                peers,
                registry,
                adapters: HashMap::new(),
                by_track: HashMap::new(),
                events_tx,
            },
            events_rx,
        )
    }

    /// Serves requests, task events and worker messages until `shutdown`, then closes every
    /// adapter.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<TaskEvent>,
        mut from_workers: mpsc::UnboundedReceiver<TrackMsg>,
        mut requests: mpsc::UnboundedReceiver<AdapterRequest>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(e) = events.recv() => self.on_event(e),
                Some(m) = from_workers.recv() => self.on_worker(m),
                Some(r) = requests.recv() => self.on_request(r),
                else => break,
            }
        }
        let ids: Vec<String> = self.adapters.keys().cloned().collect();
        for id in ids {
            self.close(&id);
        }
    }

    fn on_request(&mut self, req: AdapterRequest) {
        let full = self.adapters.len() >= self.max;
        match req {
            // Dropping the reply (and the socket) refuses it.
            AdapterRequest::Ingest { .. } | AdapterRequest::Egress { .. } if full => {
                tracing::warn!(
                    max = self.max,
                    "WebSocket adapter refused: node at its limit"
                );
            }
            AdapterRequest::Ingest {
                app,
                track_name,
                socket,
                reply,
            } => {
                let id = random_token(24);
                let session = SessionId::random();
                let track = Arc::new(opus_track(&self.registry, session, track_name, self.index));
                self.registry.insert_session(
                    session,
                    SessionEntry::new(
                        self.index,
                        Role::Api,
                        None,
                        Some(app.clone()),
                        random_token(16),
                        None,
                        vec![track.clone()],
                    ),
                );
                let bytes = Arc::new(AtomicU64::new(0));
                let stop = CancellationToken::new();
                tokio::spawn(ingest(
                    id.clone(),
                    socket,
                    bytes.clone(),
                    self.events_tx.clone(),
                    stop.clone(),
                ));
                tracing::info!(adapter = %id, %session, track = %track.name, "WebSocket ingest adapter");
                self.by_track.insert(track.id, id.clone());
                self.adapters.insert(
                    id.clone(),
                    Adapter {
                        app,
                        direction: Direction::Ingest {
                            session,
                            track,
                            subscribers: HashSet::new(),
                        },
                        bytes,
                        stop,
                    },
                );
                let _ = reply.send((id, session));
            }
            AdapterRequest::Egress {
                app,
                track,
                socket,
                reply,
            } => {
                let id = random_token(24);
                let (tx, rx) = mpsc::channel(EGRESS_QUEUE);
                let bytes = Arc::new(AtomicU64::new(0));
                let stop = CancellationToken::new();
                tokio::spawn(egress(
                    id.clone(),
                    socket,
                    rx,
                    bytes.clone(),
                    self.events_tx.clone(),
                    stop.clone(),
                ));
                if let Some(w) = self.peers.get(track.origin_worker) {
                    w.track(ToOrigin::Subscribe {
                        track: track.clone(),
                        worker: self.index,
                    });
                }
                tracing::info!(adapter = %id, track = %track.name, session = %track.session, "WebSocket egress adapter");
                self.by_track.insert(track.id, id.clone());
                self.adapters.insert(
                    id.clone(),
                    Adapter {
                        app,
                        direction: Direction::Egress { track, tx },
                        bytes,
                        stop,
                    },
                );
                let _ = reply.send(id);
            }
            AdapterRequest::Close {
                app,
                adapter,
                reply,
            } => {
                let owned = self.adapters.get(&adapter).is_some_and(|a| a.app == app);
                let _ = reply.send(if owned { self.close(&adapter) } else { None });
            }
        }
    }

    /// Ends an adapter: its task stops, its track ends for whoever pulls it (ingest) or it lets
    /// go of the track (egress). The bytes it carried.
    fn close(&mut self, id: &str) -> Option<u64> {
        let a = self.adapters.remove(id)?;
        a.stop.cancel();
        match a.direction {
            Direction::Ingest {
                session,
                track,
                subscribers,
            } => {
                self.by_track.remove(&track.id);
                self.registry.end_session(session);
                for w in subscribers {
                    if let Some(tx) = self.peers.get(w) {
                        tx.track(FromOrigin::TrackEnded { track: track.id });
                    }
                }
            }
            Direction::Egress { track, .. } => {
                self.by_track.remove(&track.id);
                if let Some(w) = self.peers.get(track.origin_worker) {
                    w.track(ToOrigin::Unsubscribe {
                        track: track.id,
                        worker: self.index,
                    });
                }
            }
        }
        crate::heap_trim::shrink_map(&mut self.adapters);
        crate::heap_trim::shrink_map(&mut self.by_track);
        tracing::info!(adapter = %id, "WebSocket adapter closed");
        Some(a.bytes.load(Ordering::Relaxed))
    }

    fn on_event(&mut self, e: TaskEvent) {
        match e {
            TaskEvent::Packet { adapter, packet } => {
                let Some(Adapter {
                    direction:
                        Direction::Ingest {
                            track, subscribers, ..
                        },
                    ..
                }) = self.adapters.get(&adapter)
                else {
                    return;
                };
                let packet = Arc::new(packet);
                for w in subscribers {
                    if let Some(tx) = self.peers.get(*w) {
                        tx.track(FromOrigin::Media {
                            track: track.id,
                            packet: packet.clone(),
                        });
                    }
                }
            }
            TaskEvent::Ended { adapter } => {
                self.close(&adapter);
            }
        }
    }

    fn ingest_track(&mut self, track: TrackId) -> Option<&mut HashSet<usize>> {
        let id = self.by_track.get(&track)?;
        match &mut self.adapters.get_mut(id)?.direction {
            Direction::Ingest { subscribers, .. } => Some(subscribers),
            Direction::Egress { .. } => None,
        }
    }

    fn on_worker(&mut self, msg: TrackMsg) {
        match msg {
            // A worker with viewers of an ingest track.
            TrackMsg::ToOrigin(ToOrigin::Subscribe { track, worker }) => {
                if let Some(subscribers) = self.ingest_track(track.id) {
                    subscribers.insert(worker);
                }
                self.answer_run(track.id, worker);
            }
            TrackMsg::ToOrigin(ToOrigin::Replay { track, worker }) => {
                self.answer_run(track, worker)
            }
            TrackMsg::ToOrigin(ToOrigin::Unsubscribe { track, worker }) => {
                if let Some(subscribers) = self.ingest_track(track) {
                    subscribers.remove(&worker);
                }
            }
            // An egress adapter's track.
            TrackMsg::FromOrigin(FromOrigin::Media { track, packet }) => {
                self.to_egress(track, packet);
            }
            TrackMsg::FromOrigin(FromOrigin::Run { track, packets, .. }) => {
                for p in packets.iter() {
                    self.to_egress(track, p.clone());
                }
            }
            TrackMsg::FromOrigin(FromOrigin::TrackEnded { track }) => {
                if let Some(id) = self.by_track.get(&track).cloned() {
                    self.close(&id);
                }
            }
            // Audio has no keyframes to ask for.
            TrackMsg::ToOrigin(ToOrigin::KeyframeRequest { .. }) => {}
        }
    }

    /// Answers a worker's subscribe or replay of an ingest track: audio has no keyframe run,
    /// so an empty one; `TrackEnded` when the track is gone.
    fn answer_run(&mut self, track: TrackId, worker: usize) {
        let msg = match self.ingest_track(track) {
            Some(_) => FromOrigin::Run {
                track,
                packets: Arc::new([]),
                parameter_sets: None,
            },
            None => FromOrigin::TrackEnded { track },
        };
        if let Some(tx) = self.peers.get(worker) {
            tx.track(msg);
        }
    }

    /// A packet of an egress adapter's track, to its task.
    fn to_egress(&self, track: TrackId, packet: relay_proto::SharedPacket) {
        let Some(a) = self
            .by_track
            .get(&track)
            .and_then(|id| self.adapters.get(id))
        else {
            return;
        };
        if let Direction::Egress { tx, .. } = &a.direction
            && tx.try_send(packet).is_err()
        {
            tracing::debug!(?track, "egress adapter behind: packet dropped");
        }
    }
}

/// An ingest adapter's task: the service's PCM in, one Opus packet per 20 ms out.
async fn ingest(
    id: String,
    mut socket: Socket,
    bytes: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<TaskEvent>,
    stop: CancellationToken,
) {
    let Ok(mut pcm) = pcm::PcmToOpus::new() else {
        let _ = events.send(TaskEvent::Ended { adapter: id });
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut seq, mut rtp_time) = (0u64, 0u64);
    let mut refused = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                rtp_time += pcm::FRAME_SAMPLES as u64;
                if let Some(opus) = pcm.next_packet() {
                    let packet = relay_proto::MediaPacket {
                        seq,
                        rtp_time,
                        marker: false,
                        pt: OPUS_PT,
                        payload: opus.into(),
                        keyframe_start: false,
                        received: Instant::now(),
                    };
                    seq += 1;
                    let _ = events.send(TaskEvent::Packet { adapter: id.clone(), packet });
                }
            }
            msg = socket.next() => match msg {
                Some(Ok(Message::Binary(data))) if data.len() <= MAX_INGEST_MESSAGE => {
                    match Packet::decode(&data) {
                        Ok(p) => {
                            bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                            pcm.push(&p.payload);
                        }
                        Err(_) => refused += 1,
                    }
                }
                Some(Ok(Message::Binary(_))) => refused += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    if refused > 0 || pcm.dropped_bytes > 0 {
        tracing::warn!(adapter = %id, refused, dropped_bytes = pcm.dropped_bytes,
            "ingest adapter: malformed or oversized messages, or audio beyond the buffer, dropped");
    }
    let _ = socket.close(None).await;
    let _ = events.send(TaskEvent::Ended { adapter: id });
}

/// An egress adapter's task: the track's Opus packets out as PCM.
async fn egress(
    id: String,
    mut socket: Socket,
    mut packets: mpsc::Receiver<relay_proto::SharedPacket>,
    bytes: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<TaskEvent>,
    stop: CancellationToken,
) {
    let Ok(mut opus) = pcm::OpusToPcm::new() else {
        let _ = events.send(TaskEvent::Ended { adapter: id });
        return;
    };
    let mut sequence_number = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            p = packets.recv() => {
                let Some(p) = p else { break };
                let Some(payload) = opus.decode(&p.payload) else { continue };
                bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                let message = Packet { sequence_number, timestamp: p.rtp_time as u32, payload };
                sequence_number = sequence_number.wrapping_add(1);
                if socket.send(Message::Binary(message.encode().into())).await.is_err() {
                    break;
                }
            }
            msg = socket.next() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.close(None).await;
    let _ = events.send(TaskEvent::Ended { adapter: id });
}
