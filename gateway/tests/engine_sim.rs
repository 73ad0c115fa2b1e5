//! The engine in memory (issue 11): a publisher and viewers are scripted str0m peers that
//! exchange datagrams with the `Engine`s of one node (one per worker, their track messages
//! routed between them as the node's mailboxes would) through a simulated network (per-link
//! loss) on a simulated clock, 1 ms per step. No socket, no task, no sleep: each test is deterministic in
//! its timing and loss and runs in well under a second of real time. The process-level tests
//! (`whip-tests`) still cover the shell, the HTTP front and real clients.
//!
//! The video is H264 as real encoders packetize it: SPS, PPS and IDR NAL units for a keyframe,
//! one non-IDR NAL unit per other frame, each frame's number written into its slice so a viewer
//! can say which frame it got, whether it is whole, and whether frames came in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use gateway::config::{Cli, Config};
use gateway::datagram::Datagram;
use gateway::engine::Adopt;
use gateway::engine::{Engine, EngineCtx, EngineOutput, WorkerStats};
use gateway::ids::SessionId;
use gateway::join_metrics::RequestContext;
use gateway::peer::PeerFactory;
use gateway::registry::{Registry, TrackInfo};
use gateway::track_link::{FromOrigin, ToOrigin, TrackMsg};

const SERVER: &str = "10.9.0.1:5000";
const FRAME: Duration = Duration::from_millis(33);
/// Frames per GOP: a keyframe every 2 s at 30 fps.
const GOP: u32 = 60;
const IDR_BYTES: usize = 4000;
const DELTA_BYTES: usize = 700;

/// One frame as a viewer decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Got {
    /// The publisher that sent it (0, 1 …) and its frame number.
    publisher: u8,
    frame: u32,
    keyframe: bool,
    /// Every byte of the slice arrived as written.
    whole: bool,
}

/// The slice's payload: a tag, the publisher, the frame number, then filler of a known value.
fn slice(nal_header: u8, publisher: u8, frame: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8, 0, 0, 1, nal_header, 0x80 | publisher];
    // Never a zero byte, so that no start code or emulation prevention appears inside.
    v.extend_from_slice(&[
        0x80 | (frame >> 14) as u8 & 0x7f,
        0x80 | (frame >> 7) as u8 & 0x7f,
        0x80 | frame as u8 & 0x7f,
    ]);
    v.resize(v.len() + len, 0xaa);
    v
}

fn frame_data(publisher: u8, frame: u32, keyframe: bool) -> Vec<u8> {
    if !keyframe {
        return slice(0x41, publisher, frame, DELTA_BYTES);
    }
    let mut v = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xda, 0x81, 0x81];
    v.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
    v.extend(slice(0x65, publisher, frame, IDR_BYTES));
    v
}

/// What a viewer makes of a depacketized frame (Annex B).
fn parse(data: &[u8]) -> Option<Got> {
    let mut i = 0;
    while i + 4 <= data.len() {
        if data[i..i + 4] != [0, 0, 0, 1] && data[i..i + 3] != [0, 0, 1] {
            i += 1;
            continue;
        }
        let start = if data[i + 2] == 1 { i + 3 } else { i + 4 };
        let nal = &data[start..];
        let kind = nal.first()? & 0x1f;
        if kind == 5 || kind == 1 {
            let publisher = nal.get(1)? & 0x7f;
            let b = nal.get(2..5)?;
            let frame = (u32::from(b[0] & 0x7f) << 14)
                | (u32::from(b[1] & 0x7f) << 7)
                | u32::from(b[2] & 0x7f);
            let want = if kind == 5 { IDR_BYTES } else { DELTA_BYTES };
            let filler = &nal[5..];
            let whole = filler.len() == want && filler.iter().all(|x| *x == 0xaa);
            return Some(Got {
                publisher,
                frame,
                keyframe: kind == 5,
                whole,
            });
        }
        i = start;
    }
    None
}

/// Datagrams a link drops: every `n`th RTP packet (never STUN, DTLS or RTCP, so that the test is
/// about media repair, not about handshakes).
#[derive(Default, Clone, Copy)]
struct Loss {
    every: Option<u32>,
    seen: u32,
}

impl Loss {
    fn drops(&mut self, data: &[u8]) -> bool {
        let Some(n) = self.every else { return false };
        let rtp =
            data.len() > 12 && (128..192).contains(&data[0]) && !(192..=223).contains(&data[1]);
        if !rtp {
            return false;
        }
        self.seen += 1;
        self.seen.is_multiple_of(n)
    }
}

struct Client {
    rtc: Rtc,
    /// The engine (worker) that holds its session.
    engine: usize,
    addr: SocketAddr,
    session: SessionId,
    mid: Mid,
    /// Publishers: the payload type to write, the publisher's number, frames written.
    pt: Option<Pt>,
    publisher: u8,
    frames_sent: u32,
    /// Frames until a requested keyframe.
    keyframe_in: Option<u32>,
    /// Simulcast publishers: the layers' rids, top first.
    rids: Vec<String>,
    /// Viewers: what they decoded, in order.
    got: Vec<Got>,
    connected_at: Option<Instant>,
    closed: bool,
    /// Engine → client.
    loss: Loss,
}

/// Track messages routed between the engines, by kind.
#[derive(Default, Debug)]
struct Routed {
    subscribes: u32,
    replays: u32,
    runs: u32,
}

struct Sim {
    start: Instant,
    now: Instant,
    engines: Vec<Engine>,
    routed: Routed,
    /// Track messages in the node's mailboxes: (due, to, message), in the order sent.
    mailboxes: std::collections::VecDeque<(Instant, usize, TrackMsg)>,
    /// How long a message takes from one engine to another (zero: within the step).
    mailbox_delay: Duration,
    peers: PeerFactory,
    registry: Arc<Registry>,
    clients: Vec<Client>,
    server: SocketAddr,
    stats: Arc<WorkerStats>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with_engines(1)
    }

    /// A node of `n` workers; publishers are adopted by the first.
    fn with_engines(n: usize) -> Sim {
        let mut config = Config::load(Cli::default()).expect("defaults");
        let server: SocketAddr = SERVER.parse().expect("addr");
        config.udp_listen = server;
        let peers = PeerFactory::new(&config, server).expect("peers");
        let registry = Arc::new(Registry::default());
        let start = Instant::now();
        let stats: Arc<WorkerStats> = Arc::default();
        let ctx = Arc::new(EngineCtx {
            registry: registry.clone(),
            config: Arc::new(config),
            stats: stats.clone(),
            join: Arc::default(),
            bridge: None,
            spans: false,
        });
        Sim {
            start,
            now: start,
            engines: (0..n).map(|i| Engine::new(i, ctx.clone(), start)).collect(),
            routed: Routed::default(),
            mailboxes: Default::default(),
            mailbox_delay: Duration::ZERO,
            peers,
            registry,
            clients: Vec::new(),
            server,
            stats,
        }
    }

    fn client_rtc(&self, no_rtx: bool) -> Rtc {
        let mut config = Rtc::builder().clear_codecs();
        if no_rtx {
            config
                .codec_config()
                .add_h264(96.into(), None, true, 0x42e01f);
        } else {
            config = config.enable_h264(true);
        }
        config.build(self.now)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([10, 9, 0, 2], 6000 + self.clients.len() as u16))
    }

    /// A WHIP-like publisher of H264, number `publisher`, adopted by the engine.
    fn publish(&mut self, publisher: u8) -> (usize, Vec<Arc<TrackInfo>>) {
        self.publish_layers(publisher, &[])
    }

    /// … sending simulcast with these rids (layer k's frames carry publisher + k).
    fn publish_layers(&mut self, publisher: u8, rids: &[&str]) -> (usize, Vec<Arc<TrackInfo>>) {
        let mut rtc = self.client_rtc(true);
        let addr = self.addr();
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = str0m::media::Simulcast::new();
            for r in rids {
                s.add_send_layer(str0m::media::SimulcastLayer::new(r));
            }
            s
        });
        let mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        let (offer, pending) = change.apply().expect("offer");
        let peer = self
            .peers
            .publisher(&offer.to_sdp_string(), self.now)
            .expect("the engine's factory answers");
        let answer = SdpAnswer::from_sdp_string(&peer.answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("accepted");
        let id = SessionId::random();
        let tracks = gateway::control::pushed_tracks(&peer, id, 0, &self.registry);
        self.engines[0].adopt(
            Adopt {
                id,
                rtc: peer.rtc,
                same_ssrc_repair: false,
                pushed: tracks.clone(),
                pulls: vec![],
                requested: RequestContext::now(),
                replication: None,
            },
            self.now,
        );
        let mut client = Client::new(rtc, addr, id, mid, publisher);
        client.rids = rids.iter().map(|r| r.to_string()).collect();
        self.clients.push(client);
        (self.clients.len() - 1, tracks)
    }

    /// A WHEP-like viewer of `tracks` (following stream "live"), adopted by the first engine.
    fn view(&mut self, tracks: &[Arc<TrackInfo>], no_rtx: bool) -> usize {
        self.view_on(0, tracks, no_rtx)
    }

    /// … adopted by engine `engine`.
    fn view_on(&mut self, engine: usize, tracks: &[Arc<TrackInfo>], no_rtx: bool) -> usize {
        let mut rtc = self.client_rtc(no_rtx);
        let addr = self.addr();
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().expect("offer");
        let primary: Vec<Arc<TrackInfo>> =
            tracks.iter().filter(|t| t.is_primary()).cloned().collect();
        let peer = self
            .peers
            .viewer(&offer.to_sdp_string(), &primary, self.now)
            .expect("the engine's factory answers");
        let answer = SdpAnswer::from_sdp_string(&peer.answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("accepted");
        if no_rtx && let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
            // A player without RTX that still NACKs and expects repairs on the media SSRC.
            rx.suppress_nack(false);
        }
        let stream: Arc<str> = "live".into();
        let (pulls, _) = gateway::control::viewer_pulls(&peer, &primary, tracks, &stream);
        let id = SessionId::random();
        self.engines[engine].adopt(
            Adopt {
                id,
                rtc: peer.rtc,
                same_ssrc_repair: peer.same_ssrc_repair,
                pushed: vec![],
                pulls,
                requested: RequestContext::now(),
                replication: None,
            },
            self.now,
        );
        let mut client = Client::new(rtc, addr, id, mid, u8::MAX);
        client.engine = engine;
        self.clients.push(client);
        self.clients.len() - 1
    }

    /// `ms` steps of 1 ms: publishers write a frame every 33 ms once connected, every client and
    /// the engine handle what reached them and their timeouts.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Clients: write media, handle time, send.
        let mut to_engine: Vec<Vec<Datagram>> = self.engines.iter().map(|_| Vec::new()).collect();
        for c in &mut self.clients {
            if c.closed {
                continue;
            }
            if let (Some(pt), Some(at)) = (c.pt, c.connected_at) {
                let due = (now - at).as_millis() / FRAME.as_millis();
                while u128::from(c.frames_sent) <= due {
                    let n = c.frames_sent;
                    // A requested keyframe comes three frames later, as from a real encoder.
                    let requested = c.keyframe_in == Some(0);
                    c.keyframe_in = c.keyframe_in.and_then(|k| k.checked_sub(1));
                    let keyframe = n.is_multiple_of(GOP) || requested;
                    let rtp_time = MediaTime::new(u64::from(n) * 3000, Frequency::NINETY_KHZ);
                    if c.rids.is_empty() {
                        let data = frame_data(c.publisher, n, keyframe);
                        if let Some(w) = c.rtc.writer(c.mid) {
                            w.write(pt, now, rtp_time, data).expect("write");
                        }
                    }
                    for (k, rid) in c.rids.iter().enumerate() {
                        let data = frame_data(c.publisher + k as u8, n, keyframe);
                        if let Some(w) = c.rtc.writer(c.mid) {
                            let w = w.rid(rid.as_str().into());
                            w.write(pt, now, rtp_time, data).expect("write");
                        }
                    }
                    c.frames_sent += 1;
                }
            }
            let _ = c.rtc.handle_input(Input::Timeout(now));
            c.drain(now, self.server, &mut to_engine[c.engine]);
        }
        for (e, batch) in to_engine.into_iter().enumerate() {
            self.engines[e].handle_datagrams(batch);
            if now >= self.engines[e].poll_timeout() {
                self.engines[e].handle_timeout(now);
            }
            self.turn(e, now);
        }
        // Track messages between the engines, in order, as the node's mailboxes carry them,
        // until none is due.
        loop {
            for e in &mut self.engines {
                while let Some(out) = e.poll_output() {
                    match out {
                        EngineOutput::Track { to, msg } => {
                            self.mailboxes
                                .push_back((now + self.mailbox_delay, to, msg))
                        }
                        EngineOutput::Channel { to, .. } => {
                            panic!("a channel message for task {to}, but no test has channels")
                        }
                        EngineOutput::Bridge(_) => panic!("a notice for a bridge the node has not"),
                        EngineOutput::Demux(_)
                        | EngineOutput::Span(_)
                        | EngineOutput::Progress(_)
                        | EngineOutput::Ended(_)
                        | EngineOutput::Released(_) => {}
                    }
                }
            }
            let mut due = Vec::new();
            while self.mailboxes.front().is_some_and(|(at, ..)| *at <= now) {
                due.extend(self.mailboxes.pop_front());
            }
            if due.is_empty() {
                break;
            }
            for (_, to, msg) in due {
                match &msg {
                    TrackMsg::ToOrigin(ToOrigin::Subscribe { .. }) => self.routed.subscribes += 1,
                    TrackMsg::ToOrigin(ToOrigin::Replay { .. }) => self.routed.replays += 1,
                    TrackMsg::FromOrigin(FromOrigin::Run { .. }) => self.routed.runs += 1,
                    _ => {}
                }
                let engine = self
                    .engines
                    .get_mut(to)
                    .expect("a message for a task the node has");
                engine.handle_track(msg, now);
            }
            for e in 0..self.engines.len() {
                self.turn(e, now);
            }
        }
    }

    /// What a worker does after its inputs: drive, flush keyframe requests, drive.
    fn turn(&mut self, e: usize, now: Instant) {
        self.drive(e, now);
        self.engines[e].end_turn(now);
        self.drive(e, now);
    }

    /// Drive engine `e` and deliver its datagrams (through each client's link loss).
    fn drive(&mut self, e: usize, now: Instant) {
        loop {
            self.engines[e].drive(now);
            let out = std::mem::take(self.engines[e].transmits());
            for t in out {
                assert_eq!(t.proto, Protocol::Udp);
                let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination) else {
                    continue;
                };
                if c.closed || c.loss.drops(&t.contents) {
                    continue;
                }
                let data: &[u8] = &t.contents;
                let Ok(contents) = data.try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents,
                    },
                );
                let _ = c.rtc.handle_input(input);
                let mut back = Vec::new();
                c.drain(now, self.server, &mut back);
                self.engines[e].handle_datagrams(back);
            }
            if !self.engines[e].wants_drive() {
                break;
            }
        }
    }

    fn viewer(&self, i: usize) -> &Client {
        &self.clients[i]
    }
}

impl Client {
    fn new(rtc: Rtc, addr: SocketAddr, session: SessionId, mid: Mid, publisher: u8) -> Client {
        Client {
            rtc,
            engine: 0,
            addr,
            session,
            mid,
            pt: None,
            publisher,
            frames_sent: 0,
            keyframe_in: None,
            rids: Vec::new(),
            got: Vec::new(),
            connected_at: None,
            closed: false,
            loss: Loss::default(),
        }
    }

    /// Poll the client's `Rtc` until it waits: datagrams for the engine, events acted on.
    fn drain(&mut self, now: Instant, server: SocketAddr, to_engine: &mut Vec<Datagram>) {
        loop {
            if !self.rtc.is_alive() {
                self.closed = true;
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => {
                    assert_eq!(
                        t.destination, server,
                        "the client sends to the answer's candidate"
                    );
                    to_engine.push(Datagram {
                        session: self.session,
                        source: t.source,
                        destination: t.destination,
                        proto: Protocol::Udp,
                        data: t.contents.to_vec(),
                        at: now,
                    });
                }
                Ok(Output::Event(e)) => self.on_event(e, now),
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                self.connected_at = Some(now);
                if self.publisher != u8::MAX {
                    let pt = self
                        .rtc
                        .writer(self.mid)
                        .and_then(|w| w.payload_params().next().map(|p| p.pt()));
                    self.pt = pt;
                }
            }
            Event::MediaData(d) => {
                if let Some(g) = parse(&d.data) {
                    self.got.push(g);
                }
            }
            Event::KeyframeRequest(_) => {
                self.keyframe_in.get_or_insert(3);
            }
            _ => {}
        }
    }
}

/// Frames of one publisher in a row, from the first one received: each whole, none missing,
/// none twice, and the first a keyframe.
fn assert_whole_and_in_order(got: &[Got], publisher: u8) {
    let mine: Vec<&Got> = got.iter().filter(|g| g.publisher == publisher).collect();
    let first = mine.first().expect("frames arrived");
    assert!(
        first.keyframe,
        "a viewer starts at a keyframe, got {first:?}"
    );
    for (i, g) in mine.iter().enumerate() {
        assert!(g.whole, "frame {} arrived damaged", g.frame);
        assert_eq!(
            g.frame,
            first.frame + i as u32,
            "frames out of order or missing after {}",
            first.frame
        );
    }
}

#[test]
fn a_viewer_joining_mid_gop_starts_at_the_cached_keyframe_at_once() {
    let mut sim = Sim::new();
    let (p, tracks) = sim.publish(0);
    sim.run(1500);
    let sent_before = sim.clients[p].frames_sent;
    assert!(sent_before > 30, "the publisher connected and sends");
    // Mid-GOP (frame ~44 of 60): the cached keyframe run is frame 0's.
    let v = sim.view(&tracks, false);
    sim.run(1000);
    let viewer = sim.viewer(v);
    let connected = viewer.connected_at.expect("the viewer connected");
    let first = viewer.got.first().expect("frames arrived");
    assert_eq!(
        first.frame, 0,
        "the cached run starts at the GOP's keyframe"
    );
    assert!(first.keyframe);
    // The run is paced, but its start is not: the viewer had frames within the first 100 ms
    // of simulated time after connecting, long before the next keyframe (frame 60, at 2 s).
    assert!(connected - sim.start < Duration::from_millis(1700));
    assert_whole_and_in_order(&viewer.got, 0);
    assert!(
        viewer.got.len() as u32 >= sim.clients[p].frames_sent - 3,
        "the viewer caught up: {} of {} frames",
        viewer.got.len(),
        sim.clients[p].frames_sent
    );
}

#[test]
fn nack_repair_makes_every_frame_whole_through_loss() {
    let mut sim = Sim::new();
    let (_, tracks) = sim.publish(0);
    sim.run(200);
    // One viewer with RTX (str0m repairs), one without (the engine's packet cache repairs on
    // the media SSRC), each losing every 13th RTP packet on its downlink.
    let rtx = sim.view(&tracks, false);
    let plain = sim.view(&tracks, true);
    sim.clients[rtx].loss.every = Some(13);
    sim.clients[plain].loss.every = Some(13);
    sim.run(4000);
    for v in [rtx, plain] {
        let c = sim.viewer(v);
        // ~130 frames, keyframes in 4-5 packets: about 15 packets lost on each link.
        assert!(
            c.loss.seen > 100,
            "{} RTP packets on the lossy link",
            c.loss.seen
        );
        assert!(c.got.len() > 100, "viewer {v} got {} frames", c.got.len());
        assert_whole_and_in_order(&c.got, 0);
    }
    let r = std::sync::atomic::Ordering::Relaxed;
    let answered = sim.stats.nacks_answered.load(r);
    assert!(
        answered >= 5,
        "the engine's cache answered {answered} NACKed packets"
    );
    assert_eq!(sim.stats.nacks_missed.load(r), 0);
    let rtx_nacks = sim.stats.nacks_rtx.load(r);
    assert!(
        rtx_nacks >= 5,
        "the viewer with RTX sent {rtx_nacks} NACKs (str0m repaired)"
    );
}

#[test]
fn a_republished_stream_reaches_its_viewers_from_the_new_keyframe() {
    let mut sim = Sim::new();
    let (first, tracks) = sim.publish(0);
    sim.run(500);
    let v = sim.view(&tracks, false);
    sim.run(1000);
    // The publisher goes (OBS restarting); a new one publishes the same stream.
    let old = sim.clients[first].session;
    sim.engines[0].close(old, sim.now);
    sim.run(200);
    let (_, new_tracks) = sim.publish(1);
    sim.engines[0].stream_live("live", &new_tracks, sim.now);
    sim.run(2000);
    let got = &sim.viewer(v).got;
    assert_whole_and_in_order(got, 0);
    assert_whole_and_in_order(got, 1);
    let switch = got
        .iter()
        .position(|g| g.publisher == 1)
        .expect("frames of the new publisher");
    assert!(
        got[switch..].iter().all(|g| g.publisher == 1),
        "no frame of the old publisher after the new one's"
    );
}

#[test]
fn closing_a_viewer_tells_its_client_and_frees_its_session() {
    let mut sim = Sim::new();
    let (_, tracks) = sim.publish(0);
    sim.run(300);
    let v = sim.view(&tracks, false);
    let other = sim.view(&tracks, false);
    sim.run(500);
    assert_eq!(sim.engines[0].session_count(), 3);
    let id = sim.clients[v].session;
    sim.engines[0].close(id, sim.now);
    sim.run(100);
    assert_eq!(sim.engines[0].session_count(), 2);
    // str0m's close sent DTLS close_notify: the client's `Rtc` ends without waiting for a
    // consent timeout.
    assert!(sim.viewer(v).closed, "the closed viewer's client was told");
    let before = sim.viewer(other).got.len();
    sim.run(500);
    assert!(
        sim.viewer(other).got.len() > before + 10,
        "the other viewer plays on"
    );
}

#[test]
fn a_pinned_simulcast_layer_takes_over_at_its_keyframe() {
    let mut sim = Sim::new();
    let (_, tracks) = sim.publish_layers(0, &["h", "l"]);
    assert_eq!(tracks.len(), 2, "one track per layer");
    sim.run(500);
    let v = sim.view(&tracks, false);
    sim.run(1000);
    let before = sim.viewer(v).got.len();
    assert!(before > 10, "the viewer plays");
    assert!(
        sim.viewer(v).got.iter().all(|g| g.publisher == 0),
        "the top layer first"
    );
    let id = sim.clients[v].session;
    let now = sim.now;
    sim.engines[0]
        .select_layer(id, None, Some("l".into()), now)
        .expect("the layer exists");
    sim.run(1000);
    let got = &sim.viewer(v).got;
    let switch = got
        .iter()
        .position(|g| g.publisher == 1)
        .expect("the low layer arrived");
    assert!(
        got[switch].keyframe,
        "the switch is at the low layer's keyframe"
    );
    assert!(
        got[switch].frame < got[before - 1].frame + 15,
        "the keyframe was asked for, not waited for (a GOP is 60 frames)"
    );
    assert!(got[switch..].iter().all(|g| g.publisher == 1));
    assert!(got.iter().all(|g| g.whole), "every frame whole");
    for w in got.windows(2) {
        assert!(
            w[1].frame > w[0].frame,
            "the picture never steps back: {w:?}"
        );
    }
    assert_whole_and_in_order(&got[switch..], 1);
}

/// One keyframe cache per track per node: viewers on a worker that is not the track's origin
/// keep none. Each start is served by the origin, one `Run` per ask, on the ordered path the
/// live packets take: the viewers start mid-GOP at once, at their GOP's keyframe, and every
/// frame after it arrives whole and in order (the run and the live packets neither overlap nor
/// leave a gap).
#[test]
fn viewers_on_another_worker_start_from_the_origins_run() {
    let mut sim = Sim::with_engines(2);
    // A busy node: messages between workers take longer than a frame, so live packets reach
    // worker 1 while its viewers wait for their run.
    sim.mailbox_delay = Duration::from_millis(40);
    let (p, tracks) = sim.publish(0);
    sim.run(1500);
    // Mid first GOP: the first viewer on worker 1 subscribes that worker's copy of the track.
    let a = sim.view_on(1, &tracks, false);
    sim.run(1000);
    // Mid second GOP: two more join the existing copy, one of them without RTX.
    let b = sim.view_on(1, &tracks, false);
    let c = sim.view_on(1, &tracks, true);
    sim.run(1000);
    let sent = sim.clients[p].frames_sent;
    let first = |v: usize| sim.viewer(v).got.first().map(|g| (g.frame, g.keyframe));
    assert_eq!(
        first(a),
        Some((0, true)),
        "the first viewer starts at GOP 1's keyframe"
    );
    for v in [b, c] {
        assert_eq!(
            first(v),
            Some((GOP, true)),
            "a later viewer starts at GOP 2's keyframe"
        );
        assert_whole_and_in_order(&sim.viewer(v).got, 0);
        assert!(
            sim.viewer(v).got.len() as u32 >= sent - GOP - 3,
            "viewer {v} caught up: {} frames of {}",
            sim.viewer(v).got.len(),
            sent - GOP
        );
    }
    assert_whole_and_in_order(&sim.viewer(a).got, 0);
    let r = &sim.routed;
    assert_eq!(r.subscribes, 1, "worker 1 subscribes once: {r:?}");
    assert!(
        (1..=2).contains(&r.replays),
        "later viewers ask for a replay (once if they start in one turn): {r:?}"
    );
    assert_eq!(r.runs, r.subscribes + r.replays, "one run per ask: {r:?}");
}
