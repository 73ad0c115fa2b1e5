//! One gateway node: the UDP shell, the media workers and the directory, started together and
//! stopped together. The HTTP layer talks to the node only through `Node`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::cluster_bridge::{Bridge, BridgeRequest};
use crate::config::Config;
use crate::demux::{DemuxFeed, DemuxUpdate, Route};
use crate::engine::{Engine, EngineCtx, WorkerStats};
use crate::ice_tcp::IceTcp;
use crate::ids::SessionId;
use crate::mailbox::{Mailbox, WorkerMsg};
use crate::peer::PeerFactory;
use crate::recorder::{Recorder, RecorderRequest};
use crate::registry::Registry;
use crate::udp::UdpShell;
use crate::worker::{Worker, WorkerIo};

/// Handle shared by every HTTP handler.
pub struct Node {
    /// The merged configuration the node runs with.
    pub config: Arc<Config>,
    /// Token rules: who may publish, play and read stats.
    pub auth: Auth,
    /// The node's directory of sessions, streams and tracks.
    pub registry: Arc<Registry>,
    /// Builds each session's `Rtc` (the node's DTLS certificate, its host candidates).
    pub peers: PeerFactory,
    /// The node's UDP socket, shared by every WebRTC session.
    pub udp: Arc<UdpShell>,
    /// ICE-TCP's listener, when it is on.
    pub ice_tcp: Option<Arc<IceTcp>>,
    workers: Vec<mpsc::UnboundedSender<WorkerMsg>>,
    demux: DemuxFeed,
    stats: Vec<Arc<WorkerStats>>,
    next_worker: AtomicUsize,
    /// Present when the node is part of a cluster.
    pub cluster: Option<Cluster>,
    /// Requests to the recorder, when recording is configured.
    pub recorder: Option<mpsc::UnboundedSender<RecorderRequest>>,
    /// Requests to the WebSocket adapters' hub.
    pub adapters: mpsc::UnboundedSender<crate::adapters::AdapterRequest>,
    /// How long clients waited to join (`join_metrics`), and the HTTP requests' durations.
    pub join: Arc<crate::join_metrics::JoinMetrics>,
    /// HTTP request durations per (method, route).
    pub http_timing: crate::http_timing::HttpTiming,
    /// Set at the first SIGTERM (`drain`): not ready, no new sessions.
    pub draining: crate::drain::Draining,
    /// TURN keys, revoked usernames and the TURN service's TLS handshake failures.
    pub turn: Arc<crate::turn_credentials::TurnShared>,
    /// Where new replicated sessions are announced (in a cluster with one address).
    pub replication: Option<mpsc::UnboundedSender<crate::replication::ReplicationMsg>>,
    /// Replicas of the other gateways' sessions (`replica`, `resume`).
    pub replicas: Arc<std::sync::Mutex<crate::replica::ReplicaStore>>,
    /// Resumes the UDP receive loop asks for, until `resume::run` takes them.
    pub resume_requests:
        std::sync::Mutex<Option<mpsc::UnboundedReceiver<crate::resume_hook::ResumeRequest>>>,
}

/// The node's cluster membership: requests to its bridge, and its link/tree counters.
pub struct Cluster {
    /// Requests from the HTTP side to the cluster bridge.
    pub bridge: mpsc::UnboundedSender<BridgeRequest>,
    /// The bridge's index among the workers' peers (where worker messages for it go).
    pub bridge_peer: usize,
    /// The running cluster node: links, tree and its counters.
    pub handle: relay_shell::cluster::ClusterHandle,
    /// Remote streams as last found (`remote_streams`), shared with the bridge.
    pub remote_streams: crate::remote_streams::RemoteStreams,
}

/// Node-wide counters for `/v1/stats`.
#[derive(Debug, Serialize)]
pub struct NodeStats {
    /// Sessions in the registry.
    pub sessions: usize,
    /// Sessions per worker.
    pub worker_sessions: Vec<usize>,
    /// Tracks the workers hold a copy of (a track on several workers counts once per worker).
    pub tracks: usize,
    /// Streams being published.
    pub streams: usize,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// Packets written to viewers.
    pub packets_out: u64,
    /// Packets handed to other workers (once per worker with viewers).
    pub cross_worker_packets: u64,
    /// Viewers started from a cached keyframe run.
    pub keyframe_runs_served: u64,
    /// Keyframe requests from viewers and joins, before rate limiting.
    pub keyframe_requests_received: u64,
    /// PLIs sent to publishers.
    pub keyframe_requests_sent: u64,
    /// NACKed packets from viewers without RTX.
    pub nacks_received: u64,
    /// … resent from the packet cache.
    pub nacks_answered: u64,
    /// … no longer in the packet cache.
    pub nacks_missed: u64,
    /// NACK messages (not sequence numbers) from viewers with RTX, which str0m repairs itself;
    /// the three counters above are the gateway's own same-SSRC repairs (sequence numbers).
    pub nacks_rtx: u64,
    /// Panics caught inside str0m (each cost one session).
    pub panics: u64,
    /// Data channel messages a subscriber missed (its channel not open, or too much unsent).
    pub channel_drops: u64,
    /// Data channel messages received from publishing sessions, and written to subscribers.
    pub channel_messages_received: u64,
    /// … and written to subscribers.
    pub channel_messages_delivered: u64,
    /// H264 encoder quirks seen on published tracks: access units with B slices, and IDRs sent
    /// without SPS/PPS since the previous IDR.
    pub h264_bframes: u64,
    /// IDRs whose SPS/PPS were not sent since the previous IDR.
    pub h264_idr_without_parameter_sets: u64,
    /// Simulcast layer switches done for viewers (automatic or pinned).
    pub layer_switches: u64,
    /// Datagrams received on the UDP socket.
    pub udp_received: u64,
    /// … bytes.
    pub udp_received_bytes: u64,
    /// Datagrams sent, their bytes (UDP payload), and the GSO buffers that carried several.
    pub udp_sent: u64,
    /// … bytes.
    pub udp_sent_bytes: u64,
    /// … GSO buffers.
    pub udp_gso_sends: u64,
    /// Messages sent: GSO buffers and lone datagrams (the kernel's unit of send work).
    pub udp_messages: u64,
    /// Send syscalls that carried datagrams (`sendmmsg` takes many messages per call).
    pub udp_send_calls: u64,
    /// Datagrams received that the demux routed to no session (dropped).
    pub udp_unrouted: u64,
    /// One address: datagrams of sessions other gateways hold, sent on to them and back.
    pub forwarding: crate::forwarding::ForwardingStats,
    /// Sessions answered that have not connected yet (what admission limits).
    pub pending_sessions: usize,
    /// STUN naming a live session's ufrag whose MESSAGE-INTEGRITY failed: dropped by the demux.
    pub stun_integrity_failures: u64,
    /// UDP sends that failed.
    pub udp_send_errors: u64,
    /// ICE-TCP connections and frames, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_tcp: Option<crate::ice_tcp::IceTcpSnapshot>,
    /// TLS connections to the TURN service whose handshake failed or timed out.
    pub turn_tls_handshake_failures: u64,
    /// Links, tree counters (NACKs answered/forwarded, keyframe requests) and tracks, in a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<relay_shell::cluster::ClusterStats>,
}

/// Makes this gateway one of the cluster's "one address" (see `owner_tag`, `forwarding`): its
/// session ids and ufrags name it, its socket forwards other gateways' sessions' datagrams, and
/// the set of gateways follows the membership. Needs an IPv4 node id (`ip:port`), the address
/// the other gateways reach this one at; without one the gateway serves only its own sessions.
fn join_one_address(
    settings: &crate::config::ClusterSettings,
    node_id: &str,
    handle: &relay_shell::cluster::ClusterHandle,
    udp: &Arc<UdpShell>,
    http_port: u16,
    (tasks, shutdown): (&mut JoinSet<()>, CancellationToken),
) -> Result<(), String> {
    let Ok(SocketAddr::V4(me)) = node_id.parse::<SocketAddr>() else {
        tracing::warn!(%node_id, "one address off: the node id is not an IPv4 ip:port, so other gateways cannot forward to this one");
        return Ok(());
    };
    let key = std::fs::read(&settings.key).map_err(|e| {
        format!(
            "cannot read the cluster key {}: {e}",
            settings.key.display()
        )
    })?;
    let secrets = crate::owner_tag::ClusterSecrets::derive(&key);
    let own = crate::owner_tag::Owner {
        ip: *me.ip(),
        udp_port: udp.local_addr().port(),
        http_port,
    };
    let one = crate::owner_tag::install(crate::owner_tag::OneAddress {
        tags: crate::owner_tag::OwnerTags::new(&secrets.tag_key, own)?,
        gateways: Default::default(),
        tunnel_key: secrets.tunnel_key,
        replica_key: secrets.replica_key,
    });
    udp.join_one_address(&one.tunnel_key, own.udp());
    let mut members = handle.members();
    let gateways = one.gateways.clone();
    tasks.spawn(async move {
        loop {
            let tier0: Vec<String> = members
                .borrow_and_update()
                .get(&0)
                .cloned()
                .unwrap_or_default();
            gateways.update(tier0.iter().map(String::as_str));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = members.changed() => if changed.is_err() {
                    return;
                },
            }
        }
    });
    tracing::info!(udp = %own.udp(), http = %own.http(), "one address: sessions of other gateways are forwarded to them");
    Ok(())
}

impl Node {
    /// Bind the UDP socket and start the workers; they stop when `shutdown` is cancelled.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
        tasks: &mut JoinSet<()>,
        metrics: fn(&Node) -> relay_proto::metrics::Exposition,
    ) -> Result<Arc<Node>, String> {
        let config = Arc::new(config);
        // Spans are made by the workers and the bridge, pushed with the metrics (OTLP).
        let (spans, span_queue) = match &config.telemetry.otlp_endpoint {
            Some(_) => {
                let (sink, queue) = relay_shell::otlp_push::span_queue();
                (sink, Some(queue))
            }
            None => (relay_shell::otlp_push::SpanSink::disabled(), None),
        };
        let path = crate::udp::SendPath {
            gso: config.udp_gso,
            sendmmsg: config.udp_sendmmsg,
        };
        let udp = UdpShell::bind(config.udp_listen, path)
            .map_err(|e| format!("cannot bind UDP {}: {e}", config.udp_listen))?;
        let mut peers = PeerFactory::new(&config, udp.local_addr())?;
        let ice_tcp = match config.ice_tcp {
            true => {
                let explicit = config.ice_tcp_listen;
                let addr = explicit.unwrap_or(config.udp_listen);
                // The same port as UDP where it is free: one port for a firewall to open.
                let addr = match addr.port() {
                    0 => SocketAddr::new(addr.ip(), udp.local_addr().port()),
                    _ => addr,
                };
                let (ice_tcp, listener) = IceTcp::bind(addr, explicit.is_none())
                    .await
                    .map_err(|e| format!("cannot bind ICE-TCP {addr}: {e}"))?;
                peers = peers.with_ice_tcp(ice_tcp.local_addr().port());
                Some((ice_tcp, listener))
            }
            false => None,
        };
        let registry = Arc::new(Registry::with_limits(config.limits));
        let n = config.worker_count();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let (demux_tx, demux_rx) = mpsc::unbounded_channel();
        let mut demux_tables = vec![demux_tx];
        let ice_tcp = ice_tcp.map(|(ice_tcp, listener)| {
            let (tx, rx) = mpsc::unbounded_channel();
            demux_tables.push(tx);
            (ice_tcp, listener, rx)
        });
        let demux_tx = DemuxFeed::new(demux_tables);
        let stats: Vec<Arc<WorkerStats>> = (0..n).map(|_| Arc::default()).collect();
        // The cluster bridge, if any, is one more peer of the workers, at index n.
        let mut peers_of_workers: Vec<Mailbox> =
            senders.iter().cloned().map(Mailbox::Worker).collect();
        let mut cluster = None;
        // The cluster's links close after the workers are gone (the bridge decides when).
        let links = CancellationToken::new();
        if let Some(settings) = &config.cluster {
            let (bridge_tx, bridge_rx) = mpsc::unbounded_channel();
            peers_of_workers.push(Mailbox::Bridge(bridge_tx));
            let (requests_tx, requests_rx) = mpsc::unbounded_channel();
            let (handle, events, node_id) =
                crate::cluster_bridge::start_cluster(settings, links.clone()).await?;
            join_one_address(
                settings,
                &node_id,
                &handle,
                &udp,
                config.http_listen.port(),
                (tasks, shutdown.clone()),
            )?;
            // The workers' mailboxes only: a bridge holding its own would never see the workers'
            // side close, which is what tells it to close the links at shutdown.
            let mut bridge = Bridge::new(
                n,
                node_id,
                handle.clone(),
                peers_of_workers[..n].to_vec(),
                registry.clone(),
            );
            bridge.trace_subscribes(spans.clone());
            let remote_streams = crate::remote_streams::RemoteStreams::default();
            bridge.invalidate_streams_in(remote_streams.clone());
            tasks.spawn(bridge.run(bridge_rx, requests_rx, events, links.clone()));
            cluster = Some(Cluster {
                bridge: requests_tx,
                bridge_peer: n,
                handle,
                remote_streams,
            });
        }
        // The recorder, if any, is one more peer of the workers (n, or n + 1 after the bridge).
        let mut recorder = None;
        if let Some(settings) = &config.recording {
            let (rec_tx, rec_rx) = mpsc::unbounded_channel();
            let index = peers_of_workers.len();
            peers_of_workers.push(Mailbox::Recorder(rec_tx));
            let (requests_tx, requests_rx) = mpsc::unbounded_channel();
            let workers = peers_of_workers[..n].to_vec();
            let r = Recorder::new(index, settings.clone(), workers, registry.clone());
            tasks.spawn(r.run(rec_rx, requests_rx, shutdown.clone()));
            recorder = Some(requests_tx);
        }
        // The WebSocket adapters' hub is one more peer of the workers, after the others.
        let (adapters_tx, adapters_rx) = mpsc::unbounded_channel();
        {
            let (hub_tx, hub_rx) = mpsc::unbounded_channel();
            let index = peers_of_workers.len();
            peers_of_workers.push(Mailbox::Adapters(hub_tx));
            let (hub, events) = crate::adapters::Hub::new(
                index,
                config.adapters.max_adapters,
                peers_of_workers.clone(),
                registry.clone(),
            );
            tasks.spawn(hub.run(events, hub_rx, adapters_rx, shutdown.clone()));
        }
        let join = Arc::new(crate::join_metrics::JoinMetrics::default());
        // Sessions are replicated when other gateways can reach this one (one address).
        let replication = match crate::owner_tag::installed() {
            Some(one) if cluster.is_some() => {
                let (tx, rx) = mpsc::unbounded_channel();
                tasks.spawn(crate::replication::run(rx, one, shutdown.clone()));
                Some(tx)
            }
            _ => None,
        };
        let io = Arc::new(WorkerIo {
            mailboxes: peers_of_workers,
            udp: udp.clone(),
            demux: demux_tx.clone(),
            ice_tcp: ice_tcp.as_ref().map(|(t, _, _)| t.clone()),
            bridge: cluster.as_ref().map(|_| n),
            spans: spans.clone(),
            replication: replication.clone(),
        });
        for (i, rx) in receivers.into_iter().enumerate() {
            let ctx = Arc::new(EngineCtx {
                registry: registry.clone(),
                config: config.clone(),
                stats: stats[i].clone(),
                join: join.clone(),
                bridge: io.bridge,
                spans: spans.enabled(),
            });
            let engine = Engine::new(i, ctx, std::time::Instant::now());
            tasks.spawn(Worker::new(engine, io.clone()).run(rx, shutdown.clone()));
        }
        tasks.spawn(
            udp.clone()
                .receive_loop(demux_rx, senders.clone(), shutdown.clone()),
        );
        if replication.is_some() {
            tasks.spawn(udp.clone().heartbeat(shutdown.clone()));
        }
        let ice_tcp = ice_tcp.map(|(ice_tcp, listener, rx)| {
            tracing::info!(local = %ice_tcp.local_addr(), "ICE-TCP: passive candidates");
            tasks.spawn(
                ice_tcp
                    .clone()
                    .run(listener, rx, senders.clone(), shutdown.clone()),
            );
            ice_tcp
        });
        let trimmed = registry.clone();
        tasks.spawn(crate::heap_trim::run(
            move |now| (trimmed.forget_ended(now), trimmed.session_count()),
            shutdown.clone(),
        ));
        let turn = crate::turn_credentials::TurnCredentials::new(
            config
                .turn
                .keys
                .iter()
                .map(|k| crate::turn_credentials::TurnKey {
                    id: k.id.clone(),
                    secret: k.secret.clone(),
                })
                .collect(),
        );
        let node = Arc::new(Node {
            auth: Auth::new(&config),
            config,
            registry,
            peers,
            udp,
            ice_tcp,
            workers: senders,
            demux: demux_tx,
            stats,
            next_worker: AtomicUsize::new(0),
            cluster,
            recorder,
            adapters: adapters_tx,
            join,
            http_timing: Default::default(),
            draining: Default::default(),
            turn: Arc::new(crate::turn_credentials::TurnShared::new(turn)),
            replication,
            replicas: Default::default(),
            resume_requests: Default::default(),
        });
        if node.replication.is_some() {
            let (requests, rx) = mpsc::unbounded_channel();
            let (mut probe, _) = node.peers.empty(std::time::Instant::now());
            let fingerprint = probe.direct_api().local_dtls_fingerprint().to_string();
            node.udp.set_resume_hook(crate::resume_hook::ResumeHook {
                replicas: node.replicas.clone(),
                requests,
                fingerprint,
            });
            // `server` starts the task that serves them (it needs the node).
            *node
                .resume_requests
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(rx);
        }
        if let (Some(queue), Some(endpoint)) =
            (span_queue, node.config.telemetry.otlp_endpoint.clone())
        {
            let otlp = relay_shell::otlp_push::OtlpConfig {
                endpoint,
                interval: std::time::Duration::from_millis(node.config.telemetry.otlp_interval_ms),
                service: node.config.telemetry.service_name.clone(),
                instance: node.instance_id(),
            };
            let for_metrics = node.clone();
            let gather = Arc::new(move || metrics(&for_metrics));
            tasks.spawn(relay_shell::otlp_push::run(
                otlp,
                gather,
                queue,
                shutdown.clone(),
            ));
        }
        if let Some(listen) = node.config.turn_listen() {
            let t = &node.config.turn;
            let candidates: Vec<IpAddr> = node.peers.candidates().iter().map(|c| c.ip()).collect();
            let allowed = if t.allowed_peers.is_empty() {
                candidates
                    .iter()
                    .map(|ip| (*ip, if ip.is_ipv4() { 32 } else { 128 }))
                    .collect()
            } else {
                t.allowed_peers
                    .iter()
                    .filter_map(|p| crate::config::parse_cidr(p))
                    .collect()
            };
            let relay_ip = t
                .relay_ip
                .or_else(|| (!listen.ip().is_unspecified()).then_some(listen.ip()))
                // A local candidate: a 1:1 NAT's public address (advertised first) is not bindable.
                .or_else(|| {
                    let public = &node.config.public_ips;
                    candidates.iter().find(|ip| !public.contains(ip)).copied()
                })
                .or_else(|| candidates.first().copied())
                .ok_or("TURN: no relay address (set turn.relay_ip)")?;
            let config = crate::turn::server::TurnConfig {
                realm: "wish".into(),
                allowed_peers: allowed,
                max_allocations_per_user: t.max_allocations_per_user,
                max_allocations_per_source: t.max_allocations_per_source,
                max_allocations: t.max_allocations,
                max_lifetime: std::time::Duration::from_secs(t.max_lifetime_secs.max(60)),
                bandwidth_bytes_per_sec: t.bandwidth_bytes_per_sec,
            };
            let tcp = node.config.turn.listen_tcp;
            let tls = match (t.listen_tls, node.config.turn_tls_files()) {
                (Some(addr), Some((cert, key))) => {
                    Some((addr, crate::turn::shell::tls_config(cert, key)?))
                }
                _ => None,
            };
            let (_, task) = crate::turn::shell::start(
                listen,
                tcp,
                tls,
                relay_ip,
                config,
                node.turn.clone(),
                shutdown.clone(),
            )
            .await?;
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
        Ok(node)
    }

    /// TURN keys and revoked usernames, locked (a poisoned lock still holds valid data: every
    /// change to it is one insert or one retain).
    pub fn turn_credentials(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::turn_credentials::TurnCredentials> {
        self.turn.credentials()
    }

    /// This node in telemetry: its cluster node id, or its UDP address.
    pub fn instance_id(&self) -> String {
        match &self.cluster {
            Some(c) => c.handle.stats().node_id,
            None => self.udp_addr().to_string(),
        }
    }

    /// A drain starts: the cluster's other gateways are told which clients are held here (one
    /// address), before the balancer moves their flows.
    pub fn claim_clients(&self) {
        self.demux.send(DemuxUpdate::ClaimAll);
    }

    /// Route `datagram` from `source` again, now that the session it asked for is in place
    /// (`resume`).
    pub fn replay_datagram(&self, source: SocketAddr, destination: SocketAddr, datagram: Vec<u8>) {
        self.demux.send(DemuxUpdate::Replay {
            source,
            destination,
            datagram,
        });
    }

    /// The UDP socket's local address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// The worker a new session goes to.
    pub fn pick_worker(&self) -> usize {
        self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len()
    }

    /// Hands `msg` to worker `worker`'s mailbox; false when that worker is gone.
    pub fn send(&self, worker: usize, msg: WorkerMsg) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.send(msg).is_ok())
    }

    /// Hands a message made by `make` to every worker.
    pub fn broadcast(&self, make: impl Fn() -> WorkerMsg) {
        for w in &self.workers {
            let _ = w.send(make());
        }
    }

    /// Route STUN naming our ufrag `ice.ufrag` (and verifying with `ice.pass`) to the session.
    pub fn route_ice(
        &self,
        ice: str0m::IceCreds,
        worker: usize,
        session: SessionId,
        failures: Arc<AtomicU64>,
    ) {
        self.demux.send(DemuxUpdate::Ufrag {
            ufrag: ice.ufrag,
            pwd: ice.pass,
            route: Route { worker, session },
            failures: Some(failures),
        });
    }

    /// Node-wide counters, summed over the workers, for `/v1/stats`.
    pub fn stats(&self) -> NodeStats {
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| self.stats.iter().map(|s| f(s)).sum::<u64>();
        let r = Ordering::Relaxed;
        NodeStats {
            sessions: self.registry.session_count(),
            worker_sessions: self.stats.iter().map(|s| s.sessions.load(r)).collect(),
            tracks: self.stats.iter().map(|s| s.tracks.load(r)).sum(),
            streams: self.registry.streams().len(),
            packets_in: sum(&|s| s.packets_in.load(r)),
            packets_out: sum(&|s| s.packets_out.load(r)),
            cross_worker_packets: sum(&|s| s.cross_worker_packets.load(r)),
            keyframe_runs_served: sum(&|s| s.keyframe_runs_served.load(r)),
            keyframe_requests_received: sum(&|s| s.keyframe_requests_received.load(r)),
            keyframe_requests_sent: sum(&|s| s.keyframe_requests_sent.load(r)),
            nacks_received: sum(&|s| s.nacks_received.load(r)),
            nacks_rtx: sum(&|s| s.nacks_rtx.load(r)),
            channel_drops: sum(&|s| s.channel_drops.load(r)),
            channel_messages_received: sum(&|s| s.channel_messages_received.load(r)),
            channel_messages_delivered: sum(&|s| s.channel_messages_delivered.load(r)),
            nacks_answered: sum(&|s| s.nacks_answered.load(r)),
            nacks_missed: sum(&|s| s.nacks_missed.load(r)),
            panics: sum(&|s| s.panics.load(r)),
            h264_bframes: sum(&|s| s.h264_bframes.load(r)),
            h264_idr_without_parameter_sets: sum(&|s| s.h264_idr_without_parameter_sets.load(r)),
            layer_switches: sum(&|s| s.layer_switches.load(r)),
            udp_received: self.udp.received.load(r),
            udp_received_bytes: self.udp.received_bytes.load(r),
            udp_sent: self.udp.sent.load(r),
            udp_sent_bytes: self.udp.sent_bytes.load(r),
            udp_gso_sends: self.udp.gso_sends.load(r),
            udp_messages: self.udp.messages.load(r),
            udp_send_calls: self.udp.send_calls.load(r),
            udp_unrouted: self.udp.unrouted.load(r),
            forwarding: self.udp.forwarding_stats(),
            pending_sessions: self.registry.pending_count(),
            stun_integrity_failures: self.udp.forged.load(r),
            udp_send_errors: self.udp.send_errors.load(r),
            ice_tcp: self.ice_tcp.as_ref().map(|t| t.snapshot()),
            turn_tls_handshake_failures: self.turn.tls_handshake_failures.load(r),
            cluster: self.cluster.as_ref().map(|c| c.handle.stats()),
        }
    }
}
