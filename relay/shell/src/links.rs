//! QUIC links between nodes: one quinn `Endpoint` per node, one connection per link, the `Hello`
//! handshake, and the pumps that move control frames and media datagrams between a connection and
//! the node task (`cluster.rs`), which owns the `TreeNode`.
//!
//! Per connection the dialing side opens the one bidirectional control stream. Both sides send
//! `Hello`, check the peer's with `Hello::accept`, answer `HelloAck` (or `Close` and close the
//! connection), and wait for the peer's `HelloAck`; only then is the link reported up. So a link the
//! tree sees is always one both ends accepted, and everything after the `HelloAck` on the stream is
//! tree traffic. Media goes in QUIC datagrams, sent straight from the node task (sending one never
//! blocks), received by the link's own task.
//!
//! Nothing a peer sends can panic this code: malformed control bytes close that link (counted),
//! bad datagrams are the tree's to count, and a peer that stalls the handshake is cut off by a
//! timeout. Two nodes may dial each other at once; both connections live on, because the tree keeps
//! links by id and uses the latest one per peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::cluster_tls::{ClusterIdentity, LinkTiming, SERVER_NAME};
use relay_proto::link::{CloseCode, ControlDecoder, ControlMessage, DecodeError, Hello};
use relay_proto::tree::LinkId;

/// One link that is up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    /// The link's id, as the node task and the tree know it.
    pub id: u64,
    /// The peer's node id, from its Hello.
    pub peer: String,
    /// We opened it (else the peer did).
    pub dialed: bool,
    /// QUIC's current RTT estimate, in milliseconds.
    pub rtt_ms: f64,
    /// QUIC's own counts: every packet, and those it declared lost.
    pub packets_sent: u64,
    /// QUIC packets declared lost.
    pub packets_lost: u64,
    /// Media datagrams received.
    pub datagrams_in: u64,
    /// Media datagrams sent.
    pub datagrams_out: u64,
    /// Dropped on purpose by the test-only loss shaper.
    pub datagrams_dropped_by_shaper: u64,
    /// Over the connection's datagram size, or refused by QUIC.
    pub datagrams_dropped: u64,
    /// Control messages received.
    pub control_in: u64,
    /// Control messages queued for sending.
    pub control_out: u64,
    /// Malformed control frames and protocol violations (each closes the link).
    pub decode_errors: u64,
}

/// A peer that completed the QUIC handshake (so it holds the cluster key) still has this long to
/// finish the `Hello` exchange; a stalled one must not hold a connection forever.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown, how long to wait for the close frames to leave before giving up.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Control stream reads: the largest control frame is 64 KiB; a read of that size takes any
/// burst of NACKs in one go.
const READ_CHUNK: usize = 64 * 1024;

/// What the links report to the node task.
#[derive(Debug)]
pub enum LinkEvent {
    /// Hellos exchanged and accepted both ways; `peer` is the node id from the peer's Hello.
    Up {
        /// The link's id.
        link: LinkId,
        /// The peer's node id.
        peer: String,
        /// The node task's handle for sending on the link.
        handle: LinkHandle,
    },
    /// A link that was up is gone (closed, timed out, malformed input).
    Down {
        /// The link's id.
        link: LinkId,
    },
    /// A dial to `peer` did not produce a link (unreachable, refused, wrong identity).
    ConnectFailed {
        /// The peer that was dialled.
        peer: String,
    },
    /// A control message from the peer.
    Control {
        /// The link it came on.
        link: LinkId,
        /// The message.
        msg: ControlMessage,
    },
    /// A media datagram from the peer.
    Datagram {
        /// The link it came on.
        link: LinkId,
        /// The datagram as received.
        bytes: Bytes,
        /// When it was read off the connection.
        at: Instant,
    },
}

/// Counters of one link, written by its tasks and the node task, read for stats.
#[derive(Debug, Default)]
pub struct LinkCounters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    datagrams_dropped_by_shaper: AtomicU64,
    datagrams_dropped: AtomicU64,
    control_in: AtomicU64,
    control_out: AtomicU64,
    decode_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The node task's handle on one link that is up.
#[derive(Debug)]
pub struct LinkHandle {
    peer: String,
    dialed: bool,
    conn: Connection,
    control: UnboundedSender<ControlMessage>,
    counters: Arc<LinkCounters>,
}

impl LinkHandle {
    /// The peer's node id.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// QUIC's current RTT estimate for the link.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// Queue a control message; the link's writer sends them in order.
    pub fn send_control(&self, msg: ControlMessage) {
        // Fails only when the writer has stopped, i.e. the link is going down anyway.
        if self.control.send(msg).is_ok() {
            bump(&self.counters.control_out);
        }
    }

    /// Send one media datagram now, or drop and count it: over the connection's current size
    /// limit, refused by quinn, or chosen by the test-only loss shaper.
    pub fn send_datagram(&self, bytes: Bytes, shaper: &mut LossShaper) {
        if shaper.drop_next() {
            bump(&self.counters.datagrams_dropped_by_shaper);
            return;
        }
        let fits = self
            .conn
            .max_datagram_size()
            .is_some_and(|max| bytes.len() <= max);
        if fits && self.conn.send_datagram(bytes).is_ok() {
            bump(&self.counters.datagrams_out);
        } else {
            bump(&self.counters.datagrams_dropped);
        }
    }

    /// Close the connection, telling the peer why (the QUIC application close carries the code).
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.conn
            .close(VarInt::from_u32(code.to_wire().into()), reason.as_bytes());
    }

    /// A snapshot of the link's counters, reported under `id`.
    pub fn stats(&self, id: LinkId) -> LinkStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let path = self.conn.stats().path;
        LinkStats {
            id,
            peer: self.peer.clone(),
            dialed: self.dialed,
            rtt_ms: self.conn.rtt().as_secs_f64() * 1000.0,
            packets_sent: path.sent_packets,
            packets_lost: path.lost_packets,
            datagrams_in: get(&c.datagrams_in),
            datagrams_out: get(&c.datagrams_out),
            datagrams_dropped_by_shaper: get(&c.datagrams_dropped_by_shaper),
            datagrams_dropped: get(&c.datagrams_dropped),
            control_in: get(&c.control_in),
            control_out: get(&c.control_out),
            decode_errors: get(&c.decode_errors),
        }
    }
}

/// Test-only loss on outgoing media: drops a fraction of datagrams, decided by a seeded xorshift
/// so a run can be repeated. A rate of 0 never drops and costs one comparison.
#[derive(Debug, Clone)]
pub struct LossShaper {
    rate: f64,
    state: u64,
}

impl LossShaper {
    /// Drops a `rate` fraction of datagrams (clamped to 0..=1; not finite means 0), in an order fixed by
    /// `seed`.
    pub fn new(rate: f64, seed: u64) -> LossShaper {
        LossShaper {
            rate: if rate.is_finite() {
                rate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            // xorshift must not start at 0; the odd constant also spreads small seeds.
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
        }
    }

    /// Whether to drop the next datagram.
    pub fn drop_next(&mut self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (x as f64 / (1u64 << 53) as f64) < self.rate
    }
}

/// What every link task shares.
struct Context {
    hello: Hello,
    events: UnboundedSender<LinkEvent>,
    next_id: AtomicU64,
    refused: AtomicU64,
    shutdown: CancellationToken,
}

impl Context {
    fn event(&self, e: LinkEvent) {
        // The node task is gone only during shutdown; nothing left to tell.
        let _ = self.events.send(e);
    }

    fn refuse(&self) {
        bump(&self.refused);
    }
}

/// The node's QUIC endpoint: accepts links from peers and dials peers on the tree's request.
pub struct Links {
    endpoint: Endpoint,
    ctx: Arc<Context>,
}

impl Links {
    /// Binds the endpoint and starts accepting. Must be called inside a tokio runtime.
    pub fn bind(
        listen: SocketAddr,
        identity: &ClusterIdentity,
        timing: LinkTiming,
        hello: Hello,
        events: UnboundedSender<LinkEvent>,
        shutdown: CancellationToken,
    ) -> Result<Links, String> {
        let mut endpoint = Endpoint::server(identity.server_config(timing)?, listen)
            .map_err(|e| format!("cannot bind cluster listener {listen}: {e}"))?;
        endpoint.set_default_client_config(identity.client_config(timing)?);
        let ctx = Arc::new(Context {
            hello,
            events,
            next_id: AtomicU64::new(1),
            refused: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(accept_loop(endpoint.clone(), ctx.clone()));
        Ok(Links { endpoint, ctx })
    }

    /// The address the endpoint is bound to (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.endpoint.local_addr().map_err(|e| e.to_string())
    }

    /// Handshakes that failed: TLS (a stranger without the cluster key) or Hello (another cluster,
    /// another protocol version, a wrong node id), on either side.
    pub fn refused(&self) -> u64 {
        self.ctx.refused.load(Ordering::Relaxed)
    }

    /// Open a link to `peer` (its node id, `host:port`). Ends in `Up` or `ConnectFailed`.
    pub fn dial(&self, peer: String) {
        let endpoint = self.endpoint.clone();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let conn = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                c = connect(&endpoint, &peer, &ctx) => c,
            };
            match conn {
                Some(conn) => run_link(conn, Some(peer), ctx).await,
                None => ctx.event(LinkEvent::ConnectFailed { peer }),
            }
        });
    }

    /// Close the endpoint (every connection with code 0) and give the close frames a moment to
    /// leave, so peers re-parent at once instead of after their idle timeout.
    pub async fn close(&self) {
        self.endpoint.close(
            VarInt::from_u32(CloseCode::Shutdown.to_wire().into()),
            b"shutdown",
        );
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(endpoint: Endpoint, ctx: Arc<Context>) {
    loop {
        let incoming = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            i = endpoint.accept() => i,
        };
        // None: the endpoint was closed.
        let Some(incoming) = incoming else { return };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let conn = match incoming.accept() {
                Ok(connecting) => connecting.await,
                Err(e) => Err(e),
            };
            match conn {
                Ok(conn) => run_link(conn, None, ctx).await,
                Err(e) => {
                    if is_refusal(&e) {
                        ctx.refuse();
                        tracing::warn!(%from, error = %e, "refused cluster handshake");
                    } else {
                        tracing::debug!(%from, error = %e, "incoming link failed");
                    }
                }
            }
        });
    }
}

/// A TLS or protocol failure (the peer is not one of us), as opposed to a peer that is simply
/// unreachable or gone.
fn is_refusal(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::TransportError(_)
            | ConnectionError::ConnectionClosed(_)
            | ConnectionError::VersionMismatch
    )
}

async fn connect(endpoint: &Endpoint, peer: &str, ctx: &Context) -> Option<Connection> {
    let addr = match resolve(peer).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(peer, error = %e, "cannot resolve peer");
            return None;
        }
    };
    let connecting = match endpoint.connect(addr, SERVER_NAME) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer, error = %e, "cannot dial peer");
            return None;
        }
    };
    match connecting.await {
        Ok(conn) => Some(conn),
        Err(e) => {
            if is_refusal(&e) {
                ctx.refuse();
                tracing::warn!(peer, error = %e, "peer refused our cluster handshake");
            } else {
                tracing::info!(peer, error = %e, "cannot connect to peer");
            }
            None
        }
    }
}

/// A node id is its cluster address: an `ip:port`, or `host:port` resolved now (DNS may move it).
async fn resolve(peer: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = peer.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(peer)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".to_string())
}

/// Why a handshake did not produce a link.
enum Refusal {
    /// We refuse the peer: tell it why, then close.
    Ours(ControlMessage),
    /// The peer refused us, or vanished: nothing to tell.
    Theirs(String),
}

/// A connection that passed TLS: exchange Hellos, then pump until it ends.
async fn run_link(conn: Connection, dialed: Option<String>, ctx: Arc<Context>) {
    let remote = conn.remote_address();
    let handshake = tokio::select! {
        _ = ctx.shutdown.cancelled() => Err(Refusal::Theirs("shutting down".into())),
        r = tokio::time::timeout(HELLO_TIMEOUT, handshake(&conn, dialed.as_deref(), &ctx.hello)) =>
            r.unwrap_or_else(|_| Err(Refusal::Theirs("no Hello in time".into()))),
    };
    let (send, recv, decoder, peer) = match handshake {
        Ok(h) => h,
        Err(refusal) => {
            let (code, reason) = match refusal {
                Refusal::Ours(msg) => {
                    let (code, reason) = match &msg {
                        ControlMessage::Close { code, reason } => (*code, reason.clone()),
                        _ => (CloseCode::ProtocolViolation, String::new()),
                    };
                    tracing::warn!(%remote, reason, "refusing link");
                    (code, reason)
                }
                Refusal::Theirs(reason) => {
                    tracing::warn!(%remote, reason, "link handshake failed");
                    (CloseCode::ProtocolViolation, reason)
                }
            };
            if !ctx.shutdown.is_cancelled() {
                ctx.refuse();
            }
            conn.close(VarInt::from_u32(code.to_wire().into()), reason.as_bytes());
            if let Some(peer) = dialed {
                ctx.event(LinkEvent::ConnectFailed { peer });
            }
            return;
        }
    };
    let link = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let counters = Arc::new(LinkCounters::default());
    let (control, control_rx) = unbounded_channel();
    tokio::spawn(write_control(send, control_rx));
    tracing::info!(link, peer, %remote, dialed = dialed.is_some(), "link up");
    ctx.event(LinkEvent::Up {
        link,
        peer: peer.clone(),
        handle: LinkHandle {
            peer: peer.clone(),
            dialed: dialed.is_some(),
            conn: conn.clone(),
            control: control.clone(),
            counters: counters.clone(),
        },
    });
    let why = pump(&conn, link, recv, decoder, &control, &counters, &ctx).await;
    tracing::info!(link, peer, reason = why, "link down");
    ctx.event(LinkEvent::Down { link });
}

type Handshake = (SendStream, RecvStream, ControlDecoder, String);

/// Both sides send Hello, check the other's, answer HelloAck or Close, and wait for the peer's
/// HelloAck. Returns the stream halves, the decoder (which may already hold the peer's next
/// frames) and the peer's node id.
async fn handshake(
    conn: &Connection,
    dialed: Option<&str>,
    ours: &Hello,
) -> Result<Handshake, Refusal> {
    let theirs = |e: &dyn std::fmt::Display| Refusal::Theirs(e.to_string());
    let (mut send, mut recv) = if dialed.is_some() {
        conn.open_bi().await.map_err(|e| theirs(&e))?
    } else {
        conn.accept_bi().await.map_err(|e| theirs(&e))?
    };
    let hello = ControlMessage::Hello(ours.clone())
        .to_bytes()
        .map_err(|e| theirs(&e))?;
    send.write_all(&hello).await.map_err(|e| theirs(&e))?;
    let mut decoder = ControlDecoder::new();
    let peer = match next_message(&mut recv, &mut decoder).await? {
        ControlMessage::Hello(h) => h,
        ControlMessage::Close { code, reason } => {
            return Err(Refusal::Theirs(format!("peer closed ({code:?}): {reason}")));
        }
        other => {
            return Err(refuse(
                &mut send,
                CloseCode::ProtocolViolation,
                format!("expected Hello, got message type {:#04x}", other.msg_type()),
            )
            .await);
        }
    };
    if let Err(e) = ours.accept(&peer) {
        let msg = e.close_message();
        let (code, reason) = match msg {
            ControlMessage::Close { code, reason } => (code, reason),
            _ => (CloseCode::ProtocolViolation, e.to_string()),
        };
        return Err(refuse(&mut send, code, reason).await);
    }
    if let Some(dialed) = dialed
        && dialed != peer.node_id
    {
        // The tree asked for `dialed` and waits for a link to that id; a node answering under
        // another name is misconfigured (its --node-id is not the address peers dial).
        return Err(refuse(
            &mut send,
            CloseCode::ProtocolViolation,
            format!(
                "dialled {dialed:?} but the peer says it is {:?}",
                peer.node_id
            ),
        )
        .await);
    }
    let ack = ControlMessage::HelloAck
        .to_bytes()
        .map_err(|e| theirs(&e))?;
    send.write_all(&ack).await.map_err(|e| theirs(&e))?;
    match next_message(&mut recv, &mut decoder).await? {
        ControlMessage::HelloAck => Ok((send, recv, decoder, peer.node_id)),
        ControlMessage::Close { code, reason } => Err(Refusal::Theirs(format!(
            "peer refused us ({code:?}): {reason}"
        ))),
        other => Err(refuse(
            &mut send,
            CloseCode::ProtocolViolation,
            format!(
                "expected HelloAck, got message type {:#04x}",
                other.msg_type()
            ),
        )
        .await),
    }
}

/// Send `Close` and give it a moment to arrive before the connection is closed under it.
async fn refuse(send: &mut SendStream, code: CloseCode, reason: String) -> Refusal {
    let msg = ControlMessage::Close {
        code,
        reason: truncate(reason),
    };
    if let Ok(bytes) = msg.to_bytes()
        && send.write_all(&bytes).await.is_ok()
        && send.finish().is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
    }
    Refusal::Ours(msg)
}

/// The wire's strings are at most 255 bytes; cut at a character boundary.
fn truncate(mut s: String) -> String {
    let max = relay_proto::link::MAX_STRING_LEN;
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The next control message during the handshake.
async fn next_message(
    recv: &mut RecvStream,
    decoder: &mut ControlDecoder,
) -> Result<ControlMessage, Refusal> {
    let mut buf = vec![0u8; 4096];
    loop {
        match decoder.next_message() {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(e) => return Err(Refusal::Theirs(format!("malformed handshake: {e}"))),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => return Err(Refusal::Theirs("control stream ended".into())),
            Err(e) => return Err(Refusal::Theirs(e.to_string())),
        }
    }
}

/// Moves a link's input to the node task until the connection ends; returns why it ended.
async fn pump(
    conn: &Connection,
    link: LinkId,
    mut recv: RecvStream,
    mut decoder: ControlDecoder,
    control: &UnboundedSender<ControlMessage>,
    counters: &LinkCounters,
    ctx: &Context,
) -> String {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut stream_open = true;
    loop {
        // Frames already buffered (some may have come with the peer's HelloAck) first.
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    if let Some(why) = on_control(conn, link, msg, control, counters, ctx) {
                        return why;
                    }
                }
                Ok(None) => break,
                Err(e) => return malformed(conn, counters, &e),
            }
        }
        tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(bytes) => {
                    bump(&counters.datagrams_in);
                    ctx.event(LinkEvent::Datagram { link, bytes, at: Instant::now() });
                }
                Err(e) => return e.to_string(),
            },
            r = recv.read(&mut buf), if stream_open => match r {
                Ok(Some(n)) => decoder.push(&buf[..n]),
                Ok(None) => {
                    if let Err(e) = decoder.finish() {
                        return malformed(conn, counters, &e);
                    }
                    // The peer finished its control stream: it is leaving. Its close follows.
                    stream_open = false;
                }
                Err(e) => return e.to_string(),
            },
        }
    }
}

fn malformed(conn: &Connection, counters: &LinkCounters, e: &DecodeError) -> String {
    bump(&counters.decode_errors);
    tracing::warn!(remote = %conn.remote_address(), error = %e, "malformed control stream; closing link");
    conn.close(
        VarInt::from_u32(CloseCode::Malformed.to_wire().into()),
        truncate(e.to_string()).as_bytes(),
    );
    format!("malformed: {e}")
}

/// One control message after the handshake: the link's own business (ping, close, protocol
/// errors) is handled here, the rest goes to the tree. `Some(reason)` ends the link.
fn on_control(
    conn: &Connection,
    link: LinkId,
    msg: ControlMessage,
    control: &UnboundedSender<ControlMessage>,
    counters: &LinkCounters,
    ctx: &Context,
) -> Option<String> {
    bump(&counters.control_in);
    match msg {
        ControlMessage::Ping { t } => {
            let _ = control.send(ControlMessage::Pong { t });
            None
        }
        ControlMessage::Pong { .. } | ControlMessage::HelloAck => None,
        ControlMessage::Close { code, reason } => {
            conn.close(VarInt::from_u32(0), b"");
            Some(format!("peer closed ({code:?}): {reason}"))
        }
        ControlMessage::Hello(_) => {
            bump(&counters.decode_errors);
            conn.close(
                VarInt::from_u32(CloseCode::ProtocolViolation.to_wire().into()),
                b"second Hello",
            );
            Some("protocol violation: second Hello".into())
        }
        msg => {
            ctx.event(LinkEvent::Control { link, msg });
            None
        }
    }
}

/// Writes queued control messages in order, batching whatever is queued into one write.
async fn write_control(mut send: SendStream, mut rx: UnboundedReceiver<ControlMessage>) {
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        encode(&msg, &mut buf);
        while let Ok(msg) = rx.try_recv() {
            encode(&msg, &mut buf);
            if buf.len() >= READ_CHUNK {
                break;
            }
        }
        if send.write_all(&buf).await.is_err() {
            // The connection is gone; its reader reports the link down.
            return;
        }
        buf.clear();
    }
    // The node task dropped the link: end the stream politely.
    let _ = send.finish();
}

fn encode(msg: &ControlMessage, buf: &mut BytesMut) {
    // Encoding leaves `buf` untouched on error, so one bad message (a stream name over the wire's
    // limit) is dropped without corrupting the frames around it.
    if let Err(e) = msg.encode(buf) {
        tracing::warn!(error = %e, msg_type = msg.msg_type(), "control message not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaper_drops_about_its_rate_and_repeats_with_its_seed() {
        let mut a = LossShaper::new(0.05, 7);
        let mut b = LossShaper::new(0.05, 7);
        let drops: Vec<bool> = (0..100_000).map(|_| a.drop_next()).collect();
        let again: Vec<bool> = (0..100_000).map(|_| b.drop_next()).collect();
        assert_eq!(drops, again);
        let rate = drops.iter().filter(|d| **d).count() as f64 / 100_000.0;
        assert!((0.045..0.055).contains(&rate), "rate {rate}");
        let mut never = LossShaper::new(0.0, 7);
        assert!((0..1000).all(|_| !never.drop_next()));
        let mut nan = LossShaper::new(f64::NAN, 7);
        assert!(!nan.drop_next());
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let s = "é".repeat(200);
        let t = truncate(s);
        assert!(t.len() <= 255 && t.is_char_boundary(t.len()));
    }
}
