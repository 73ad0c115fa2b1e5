//! A media worker: the thin tokio shell around one engine (`engine`). It reads the worker's
//! inbox and gives each message to the engine with the time; sends the datagrams the engine
//! queued (UDP in GSO batches, ICE-TCP framed); delivers the engine's messages to the node's
//! other tasks, the demultiplexers and the trace exporter; answers the control plane; and sleeps
//! until the engine's next deadline. No media decision is made here.

use std::sync::Arc;
use std::time::Instant;

use str0m::net::Protocol;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::command::Command;
use crate::demux::DemuxFeed;
use crate::engine::{Engine, EngineOutput};
use crate::mailbox::{Mailbox, WorkerMsg};
use crate::udp::UdpShell;

/// The IO every worker shares.
pub struct WorkerIo {
    /// Every task of the node by index: workers first, then the bridge, recorder, adapters.
    pub mailboxes: Vec<Mailbox>,
    /// The UDP socket shell that sends batches.
    pub udp: Arc<UdpShell>,
    /// Routing updates for the UDP and ICE-TCP demultiplexers.
    pub demux: DemuxFeed,
    /// ICE-TCP connections (TCP transmits go there), when it is on.
    pub ice_tcp: Option<Arc<crate::ice_tcp::IceTcp>>,
    /// Index of the cluster bridge in `mailboxes`, when the node is in a cluster.
    pub bridge: Option<usize>,
    /// Finished setup spans go here (OTLP), when an endpoint is configured.
    pub spans: relay_shell::otlp_push::SpanSink,
    /// Session progress and ends go here, when sessions are replicated (`replication`).
    pub replication: Option<mpsc::UnboundedSender<crate::replication::ReplicationMsg>>,
}

/// Messages taken from the inbox per turn before the engine is driven, so that a burst costs
/// one poll per session.
const INBOX_BATCH: usize = 256;

/// A worker: one engine and the IO around it.
pub struct Worker {
    engine: Engine,
    io: Arc<WorkerIo>,
}

impl Worker {
    /// A worker around `engine`.
    pub fn new(engine: Engine, io: Arc<WorkerIo>) -> Worker {
        Worker { engine, io }
    }

    /// Runs until the inbox closes or `shutdown` is cancelled, then closes every session.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    self.dispatch(msg, now);
                    for _ in 0..INBOX_BATCH {
                        match rx.try_recv() {
                            Ok(msg) => self.dispatch(msg, now),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.engine.handle_timeout(now);
            self.drive_and_send(now).await;
            self.engine.end_turn(now);
            self.drive_and_send(now).await;
        }
        // Shutdown: every client is told (RTCP BYE, DTLS close_notify) before the node goes;
        // in a cluster, replicated sessions are handed off instead (another gateway resumes them).
        match self.io.replication {
            Some(_) => self.engine.hand_off(Instant::now()),
            None => self.engine.shutdown(Instant::now()),
        }
        self.deliver();
        self.send().await;
    }

    fn dispatch(&mut self, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Datagrams(batch) => self.engine.handle_datagrams(batch),
            WorkerMsg::Command(c) => self.command(c, now),
            WorkerMsg::Track(m) => self.engine.handle_track(m, now),
            WorkerMsg::Channel(m) => self.engine.handle_channel(m, now),
        }
        self.deliver();
    }

    /// Carry out a command; what the engine queued (a new ufrag's route, a channel for the
    /// bridge) is delivered before the answer, so the client's next request finds it in place.
    fn command(&mut self, c: Command, now: Instant) {
        let e = &mut self.engine;
        match c {
            Command::Adopt(a) => e.adopt(*a, now),
            Command::Close { session } => e.close(session, now),
            Command::Release { session, when } => e.release(session, when, now),
            Command::Trickle {
                session,
                candidates,
            } => e.trickle(session, candidates),
            Command::IceRestart {
                session,
                remote,
                reply,
            } => {
                let local = e.ice_restart(session, remote);
                self.deliver();
                let _ = reply.send(local);
            }
            Command::Negotiate {
                session,
                negotiation,
                reply,
            } => {
                let result = e.negotiate(session, negotiation, now);
                self.deliver();
                let _ = reply.send(result);
            }
            Command::SelectLayer {
                session,
                mid,
                rid,
                reply,
            } => {
                let _ = reply.send(e.select_layer(session, mid, rid, now));
            }
            Command::Describe { session, reply } => {
                let _ = reply.send(e.describe(session));
            }
            Command::StreamLive { stream, tracks } => e.stream_live(&stream, &tracks, now),
        }
    }

    /// Poll every session that had input until it has nothing more to say, sending as it goes
    /// (`Engine::drive`). Each viewer's packets of a batch still leave together (one GSO
    /// message), as every write happened before the polling.
    async fn drive_and_send(&mut self, now: Instant) {
        loop {
            self.engine.drive(now);
            self.deliver();
            self.send().await;
            if !self.engine.wants_drive() {
                return;
            }
        }
    }

    /// The engine's messages, to where they go.
    fn deliver(&mut self) {
        let io = &self.io;
        while let Some(out) = self.engine.poll_output() {
            match out {
                EngineOutput::Track { to, msg } => {
                    if let Some(m) = io.mailboxes.get(to) {
                        m.track(msg);
                    }
                }
                EngineOutput::Channel { to, msg } => {
                    if let Some(m) = io.mailboxes.get(to) {
                        m.channel(msg);
                    }
                }
                EngineOutput::Bridge(notice) => {
                    if let Some(m) = io.bridge.and_then(|b| io.mailboxes.get(b)) {
                        m.notice(notice);
                    }
                }
                EngineOutput::Demux(update) => io.demux.send(update),
                EngineOutput::Span(span) => io.spans.send(span),
                EngineOutput::Progress(p) => {
                    if let Some(tx) = &io.replication {
                        let _ = tx.send(crate::replication::ReplicationMsg::Progress(p));
                    }
                }
                EngineOutput::Ended(id) => {
                    if let Some(tx) = &io.replication {
                        let _ = tx.send(crate::replication::ReplicationMsg::Ended(id));
                    }
                }
                EngineOutput::Released(id) => {
                    if let Some(tx) = &io.replication {
                        let _ = tx.send(crate::replication::ReplicationMsg::Released(id));
                    }
                }
            }
        }
    }

    async fn send(&mut self) {
        let out = self.engine.transmits();
        if out.is_empty() {
            return;
        }
        // ICE-TCP sessions are few: one scan finds none in the common case.
        if out.iter().any(|t| t.proto != Protocol::Udp) {
            if let Some(tcp) = &self.io.ice_tcp {
                tcp.send(out.iter());
            }
            out.retain(|t| t.proto == Protocol::Udp);
        }
        let mut batch = std::mem::take(out);
        self.io.udp.send_batch(&batch).await;
        batch.clear();
        *self.engine.transmits() = batch;
    }
}
