//! The physical floor of forwarding one packet to one viewer: the work no SFU can avoid.
//!
//! * SRTP protection of a 1200-byte RTP packet (12-byte header + 1188 bytes payload), as the two
//!   profiles WebRTC negotiates do it, with AWS-LC (the library str0m uses here):
//!   - `SRTP_AEAD_AES_128_GCM`: AES-128-GCM seal, header as AAD, 16-byte tag;
//!   - `SRTP_AES128_CM_HMAC_SHA1_80`: AES-128-CTR over the payload, HMAC-SHA1 over
//!     header + ciphertext + ROC, tag truncated to 10 bytes.
//! * Sending it: to a loopback sink socket, one `sendmsg` per packet (quinn-udp, the gateway's
//!   path off Linux), one `sendmmsg` per batch of 32 (the gateway's `sendmmsg::send`), and UDP
//!   GSO (quinn-udp `segment_size`, up to 32 segments per call) when the kernel offers it. GSO
//!   batches datagrams to *one* destination, so in fan-out it applies to several packets for the
//!   same viewer (a keyframe, a run), not to one packet for many viewers; sendmmsg applies to
//!   both (the gateway combines them: many GSO messages per `sendmmsg`).
//! * The same `sendmmsg` with messages shaped like the gateway's fan-out traffic (`SHAPE`: a
//!   viewer's video frame as one GSO run of 6–7 packets, alternating with lone 200-byte audio
//!   packets, 3.75 datagrams per message as measured at 800 viewers). The kernel's cost is per
//!   message, so this is the floor for *this* traffic through this kernel path: `floor_shaped_ns`
//!   (cipher + shaped send per datagram). The gap between it and the fan-out cost is what the
//!   gateway and str0m add; the gap between it and `floor_ns` is the traffic's shape.
//!
//! Criterion prints the per-packet cost of each (throughput = packets). After the criterion run a
//! short fixed-iteration pass prints one machine-readable line:
//!
//! ```text
//! FLOOR gcm_ns=… cm_hmac_ns=… send_one_ns=… sendmmsg_ns=… gso_ns=… floor_ns=… shaped_ns=… floor_shaped_ns=… sink=…
//! ```
//!
//! `floor_ns` = min(cipher) + min(batched send): the cost per forwarded packet that fan-out figures
//! are divided by (`BENCHMARKS.md`). `FLOOR_JSON=path` also writes those numbers as JSON.
//!
//! Caveat: on loopback the sender's syscall also carries the receive side (the datagram is
//! delivered to the sink socket, and a GSO batch segmented, in the same call). A thread drains the
//! sink (on 2 cores it competes with the sender); datagrams it does not keep up with are dropped at
//! the sink's full receive buffer after that work.
//!
//! "Receiver on another host": with `FLOOR_NETNS=<name>` and `FLOOR_SINK_IP=<ipv4>` (e.g.
//! `whipbench` and `10.201.0.2` from `scripts/netns.sh up`) the sink socket and its drain thread
//! live in network namespace `/var/run/netns/<name>` and the sender sends to that address from
//! this namespace, over the veth pair. With threaded NAPI on the receiving veth the delivery runs
//! in a `napi/…` kernel thread, so the send figures are the sender's work alone (the kthread still
//! takes CPU from the same two cores). `sink=loopback` or `sink=netns:<name>` in the FLOOR line
//! and the JSON says which. Unset: loopback, as before. In a namespace the line also gives the
//! sending thread's CPU time per packet (`send_one_cpu_ns`, `sendmmsg_cpu_ns`, `gso_cpu_ns`,
//! `floor_cpu_ns`; wall time there includes being preempted by the NAPI thread and the drain
//! thread on the same cores) and `sink_got`, the fraction of sent datagrams the drain thread
//! received (the rest were dropped on the way: qdisc, veth ring, the sink's receive buffer).

use std::cell::Cell;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use criterion::{Criterion, Throughput};
use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};

const PACKET: usize = 1200;
const HEADER: usize = 12;
const BATCH: usize = 32;
/// Datagrams per message in the gateway's fan-out, as measured at 800 viewers (`BENCHMARKS.md`:
/// 314 k datagrams/s in 83.7 k messages/s): a viewer's video frame is one GSO run of ~6–7
/// packets, and every Opus packet goes alone, half of all messages. 15 datagrams in 4 messages.
const SHAPE: &[usize] = &[6, 1, 7, 1];
/// One `sendmmsg` of the shaped traffic: 64 messages, 240 datagrams.
const SHAPE_REPEATS: usize = 16;
/// An Opus packet at 64 kbit/s with SRTP overhead.
const AUDIO_PACKET: usize = 200;

fn rtp_packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x5au8; PACKET];
    p[0] = 0x80;
    p[1] = 96;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&123_456u32.to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p
}

/// AES-128-GCM SRTP (RFC 7714): the packet grows by a 16-byte tag.
struct Gcm {
    key: LessSafeKey,
    salt: [u8; 12],
    buf: Vec<u8>,
}

impl Gcm {
    fn new() -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("gcm key"));
        Gcm {
            key,
            salt: [3u8; 12],
            buf: Vec::with_capacity(PACKET + 16),
        }
    }

    fn protect(&mut self, packet: &[u8], index: u64) -> usize {
        self.buf.clear();
        self.buf.extend_from_slice(packet);
        // IV = salt XOR (ssrc, packet index), as RFC 7714 §8.1.
        let mut iv = self.salt;
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[6 + i] ^= b;
        }
        let (header, payload) = self.buf.split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&*header),
                payload,
            )
            .expect("seal");
        self.buf.extend_from_slice(tag.as_ref());
        self.buf.len()
    }
}

/// AES-128-CM + HMAC-SHA1-80 SRTP (RFC 3711): the packet grows by a 10-byte tag.
struct CmHmac {
    key: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; 16],
    buf: Vec<u8>,
}

impl CmHmac {
    fn new() -> Self {
        let key = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &[9u8; 16]).expect("key"))
            .expect("ctr key");
        CmHmac {
            key,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[5u8; 20]),
            salt: [1u8; 16],
            buf: Vec::with_capacity(PACKET + 10),
        }
    }

    fn protect(&mut self, packet: &[u8], index: u64) -> usize {
        self.buf.clear();
        self.buf.extend_from_slice(packet);
        // IV = (salt XOR (ssrc << 64) XOR (index << 16)), counter in the last two bytes.
        let mut iv = self.salt;
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        iv[14] = 0;
        iv[15] = 0;
        self.key
            .less_safe_encrypt(
                &mut self.buf[HEADER..],
                EncryptionContext::Iv128(FixedLength::from(iv)),
            )
            .expect("ctr");
        let roc = ((index >> 16) as u32).to_be_bytes();
        let mut ctx = hmac::Context::with_key(&self.auth);
        ctx.update(&self.buf);
        ctx.update(&roc);
        let tag = ctx.sign();
        self.buf.extend_from_slice(&tag.as_ref()[..10]);
        self.buf.len()
    }
}

/// Where the sink socket lives.
#[derive(Clone, Debug)]
enum SinkPlace {
    /// 127.0.0.1 in this namespace (the default).
    Loopback,
    /// `ip` in network namespace `/var/run/netns/<name>` (`FLOOR_NETNS`, `FLOOR_SINK_IP`).
    Netns { name: String, ip: Ipv4Addr },
}

impl SinkPlace {
    fn from_env() -> Self {
        let Some(name) = std::env::var("FLOOR_NETNS").ok().filter(|n| !n.is_empty()) else {
            return SinkPlace::Loopback;
        };
        let ip = std::env::var("FLOOR_SINK_IP")
            .ok()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("FLOOR_NETNS={name} needs FLOOR_SINK_IP=<ipv4 in {name}>"));
        SinkPlace::Netns { name, ip }
    }

    fn label(&self) -> String {
        match self {
            SinkPlace::Loopback => "loopback".to_owned(),
            SinkPlace::Netns { name, .. } => format!("netns:{name}"),
        }
    }
}

/// Binds the sink and starts the thread that drains it, so that datagrams are delivered (and GSO
/// batches segmented) rather than dropped whole at a full receive buffer. The thread lives as long
/// as the process. For `SinkPlace::Netns` the thread first enters the namespace (`setns` applies
/// to the calling thread only) and binds there: a socket stays in the namespace it was made in.
fn spawn_sink(place: &SinkPlace, received: Arc<AtomicU64>) -> UdpSocket {
    let place = place.clone();
    let (tx, rx) = std::sync::mpsc::channel::<UdpSocket>();
    std::thread::spawn(move || {
        let sink = match &place {
            SinkPlace::Loopback => UdpSocket::bind("127.0.0.1:0").expect("bind sink"),
            SinkPlace::Netns { name, ip } => {
                enter_netns(name);
                UdpSocket::bind((*ip, 0))
                    .unwrap_or_else(|e| panic!("bind sink {ip}:0 in netns {name}: {e}"))
            }
        };
        let _ = socket2::SockRef::from(&sink).set_recv_buffer_size(8 << 20);
        tx.send(sink.try_clone().expect("clone sink"))
            .expect("sink handed over");
        let mut buf = vec![0u8; 65536];
        while sink.recv(&mut buf).is_ok() {
            received.fetch_add(1, Ordering::Relaxed);
        }
    });
    rx.recv().expect("sink thread bound its socket")
}

/// Moves the calling thread into network namespace `/var/run/netns/<name>` (`ip netns add`).
fn enter_netns(name: &str) {
    let path = format!("/var/run/netns/{name}");
    let ns = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("open {path}: {e} (scripts/netns.sh up creates the namespace)"));
    // SAFETY: a valid namespace fd, CLONE_NEWNET; affects this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("setns({path}): {}", std::io::Error::last_os_error());
    }
}

/// A sender and a sink nobody reads but a drain thread (loopback, or in a namespace).
struct Sockets {
    tx: UdpSocket,
    state: UdpSocketState,
    sink: UdpSocket,
    dest: SocketAddr,
    /// Datagrams the kernel took from us, and datagrams the drain thread received.
    sent: Cell<u64>,
    received: Arc<AtomicU64>,
}

impl Sockets {
    fn new(place: &SinkPlace) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let sink = spawn_sink(place, received.clone());
        let tx = match place {
            SinkPlace::Loopback => UdpSocket::bind("127.0.0.1:0").expect("bind tx"),
            // Routed out of this namespace's side of the veth pair.
            SinkPlace::Netns { .. } => UdpSocket::bind("0.0.0.0:0").expect("bind tx"),
        };
        let state = UdpSocketState::new(UdpSockRef::from(&tx)).expect("quinn-udp state");
        // quinn-udp makes the socket non-blocking; a full send buffer would then fail sends
        // (EAGAIN) that cost time but carry nothing. Blocking, the sender waits instead.
        tx.set_nonblocking(false).expect("blocking tx");
        let _ = state.set_send_buffer_size(UdpSockRef::from(&tx), 8 << 20);
        let dest = sink.local_addr().expect("sink addr");
        Sockets {
            tx,
            state,
            sink,
            dest,
            sent: Cell::new(0),
            received,
        }
    }

    /// Received by the drain thread / taken by the kernel, since the start.
    fn delivered_fraction(&self) -> f64 {
        self.received.load(Ordering::Relaxed) as f64 / self.sent.get().max(1) as f64
    }

    /// Segments per GSO send: what the kernel allows, at most 32 (a UDP datagram, all segments
    /// together, must stay under 64 KiB: 54 × 1200 bytes).
    fn gso_segments(&self) -> usize {
        self.state.max_gso_segments().min(BATCH)
    }

    /// One `sendmsg` per packet, as `UdpShell::send` does.
    fn send_one(&self, packet: &[u8]) {
        let t = Transmit {
            destination: self.dest,
            ecn: None,
            contents: packet,
            segment_size: None,
            src_ip: None,
        };
        // Errors (ENOBUFS, ECONNREFUSED from an earlier ICMP) are dropped as the gateway does.
        if self.state.try_send(UdpSockRef::from(&self.tx), &t).is_ok() {
            self.sent.set(self.sent.get() + 1);
        }
    }

    /// One `sendmmsg` of `messages` (the gateway's own `sendmmsg::send`, no cmsg but GSO's);
    /// returns how many datagrams the kernel took.
    fn send_messages(&self, messages: &Messages<'_>) -> usize {
        let n = gateway::sendmmsg::send(
            self.tx.as_raw_fd(),
            &messages.runs,
            |i| messages.datagrams[i],
            |_| None,
            |_| self.dest,
        )
        .unwrap_or(0);
        let taken: usize = messages.runs[..n].iter().map(|r| r.len()).sum();
        self.sent.set(self.sent.get() + taken as u64);
        taken
    }

    /// One GSO send of `segments` packets (contiguous buffer, `segment_size` = packet length).
    fn send_gso(&self, buf: &[u8], segment: usize) {
        let t = Transmit {
            destination: self.dest,
            ecn: None,
            contents: buf,
            segment_size: Some(segment),
            src_ip: None,
        };
        match self.state.try_send(UdpSockRef::from(&self.tx), &t) {
            Ok(()) => self
                .sent
                .set(self.sent.get() + (buf.len() / segment) as u64),
            Err(e) => {
                GSO_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    LAST_GSO_ERROR.get_or_init(|| e.to_string());
                }
            }
        }
    }
}

/// The messages of one `sendmmsg`, laid out once outside the timed loop: the datagrams, and the
/// ranges of them that go as one message each (GSO-segmented when longer than one).
struct Messages<'a> {
    datagrams: Vec<&'a [u8]>,
    runs: Vec<std::ops::Range<usize>>,
}

impl<'a> Messages<'a> {
    /// `count` copies of `packet`, one message each.
    fn lone(packet: &'a [u8], count: usize) -> Self {
        Messages {
            datagrams: vec![packet; count],
            runs: (0..count).map(|i| i..i + 1).collect(),
        }
    }

    /// Shaped like the gateway's fan-out traffic (`SHAPE`): GSO runs of one viewer's video frame
    /// alternating with lone audio datagrams.
    fn shaped(video: &'a [u8], audio: &'a [u8]) -> Self {
        let mut m = Messages {
            datagrams: Vec::new(),
            runs: Vec::new(),
        };
        for _ in 0..SHAPE_REPEATS {
            for &n in SHAPE {
                let start = m.datagrams.len();
                let d = if n == 1 { audio } else { video };
                m.datagrams.extend(std::iter::repeat_n(d, n));
                m.runs.push(start..start + n);
            }
        }
        m
    }
}

static GSO_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LAST_GSO_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn ciphers(c: &mut Criterion) {
    let packet = rtp_packet(1);
    let mut group = c.benchmark_group("srtp_protect_1200B");
    group.throughput(Throughput::Elements(1));
    let mut gcm = Gcm::new();
    let mut i = 0u64;
    group.bench_function("aes128_gcm", |b| {
        b.iter(|| {
            i += 1;
            black_box(gcm.protect(black_box(&packet), i))
        })
    });
    let mut cm = CmHmac::new();
    group.bench_function("aes128_cm_hmac_sha1_80", |b| {
        b.iter(|| {
            i += 1;
            black_box(cm.protect(black_box(&packet), i))
        })
    });
    group.finish();
}

fn sends(c: &mut Criterion, place: &SinkPlace) {
    let s = Sockets::new(place);
    let packet = rtp_packet(1);
    let mut group = c.benchmark_group(match place {
        SinkPlace::Loopback => "udp_send_1200B_loopback".to_owned(),
        SinkPlace::Netns { name, .. } => format!("udp_send_1200B_netns_{name}"),
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("sendmsg_per_packet", |b| b.iter(|| s.send_one(&packet)));
    group.throughput(Throughput::Elements(BATCH as u64));
    let lone = Messages::lone(&packet, BATCH);
    group.bench_function("sendmmsg_batch_32", |b| {
        b.iter(|| black_box(s.send_messages(&lone)))
    });
    let seg = s.gso_segments();
    if seg > 1 {
        let buf: Vec<u8> = packet.iter().copied().cycle().take(PACKET * seg).collect();
        group.throughput(Throughput::Elements(seg as u64));
        group.bench_function(format!("gso_{seg}_segments"), |b| {
            b.iter(|| s.send_gso(&buf, PACKET))
        });
    }
    group.finish();
    drop(s.sink);
}

/// Nanoseconds per call of `f`, best of five runs of `iters` calls, divided by `per_call` packets.
fn ns_per_packet(iters: u32, per_call: usize, f: impl FnMut()) -> f64 {
    ns_per_packet_wall_cpu(iters, per_call, f).0
}

/// As `ns_per_packet`, and the calling thread's CPU time per packet (best of the same five runs).
fn ns_per_packet_wall_cpu(iters: u32, per_call: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..iters / 10 {
        f();
    }
    let per_packet = |ns: f64| ns / f64::from(iters) / per_call as f64;
    (0..5)
        .map(|_| {
            let (t, c) = (Instant::now(), thread_cpu_ns());
            for _ in 0..iters {
                f();
            }
            (
                per_packet(t.elapsed().as_nanos() as f64),
                per_packet((thread_cpu_ns() - c) as f64),
            )
        })
        .fold((f64::INFINITY, f64::INFINITY), |(w, c), (w2, c2)| {
            (w.min(w2), c.min(c2))
        })
}

/// CPU time of the calling thread (user + system), ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn summary(place: &SinkPlace) {
    let packet = rtp_packet(1);
    let mut i = 0u64;
    let mut gcm = Gcm::new();
    let gcm_ns = ns_per_packet(200_000, 1, || {
        i += 1;
        black_box(gcm.protect(black_box(&packet), i));
    });
    let mut cm = CmHmac::new();
    let cm_ns = ns_per_packet(200_000, 1, || {
        i += 1;
        black_box(cm.protect(black_box(&packet), i));
    });
    let s = Sockets::new(place);
    let (one_ns, one_cpu) = ns_per_packet_wall_cpu(100_000, 1, || s.send_one(&packet));
    let lone = Messages::lone(&packet, BATCH);
    let (mmsg_ns, mmsg_cpu) = ns_per_packet_wall_cpu(5_000, BATCH, || {
        black_box(s.send_messages(&lone));
    });
    let audio = vec![0x80u8; AUDIO_PACKET];
    let shaped = Messages::shaped(&packet, &audio);
    let (shaped_ns, shaped_cpu) = ns_per_packet_wall_cpu(2_000, shaped.datagrams.len(), || {
        black_box(s.send_messages(&shaped));
    });
    let seg = s.gso_segments();
    let gso = (seg > 1).then(|| {
        let buf: Vec<u8> = packet.iter().copied().cycle().take(PACKET * seg).collect();
        ns_per_packet_wall_cpu(5_000, seg, || s.send_gso(&buf, PACKET))
    });
    let gso_ns = gso.map(|g| g.0);
    let gso_cpu = gso.map(|g| g.1).filter(|_| LAST_GSO_ERROR.get().is_none());
    // Let the drain thread catch up before counting what arrived.
    if matches!(place, SinkPlace::Netns { .. }) {
        std::thread::sleep(Duration::from_millis(300));
    }
    let sink_got = s.delivered_fraction();
    if let Some(e) = LAST_GSO_ERROR.get() {
        eprintln!(
            "GSO sends failed {} times (first error: {e}); not counted as a batched send",
            GSO_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let gso_ns = gso_ns.filter(|_| LAST_GSO_ERROR.get().is_none());
    let cipher = gcm_ns.min(cm_ns);
    let send = gso_ns.map_or(mmsg_ns, |g| g.min(mmsg_ns));
    let floor = cipher + send;
    // What the kernel path costs for traffic shaped like fan-out's, where a message can carry only
    // one viewer's packets of one frame: the floor for this traffic, short of fewer messages.
    let floor_shaped = cipher + shaped_ns;
    let fmt = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.0}"));
    let sink = place.label();
    // In a namespace: the sender's own CPU per packet, and how much of the flood arrived.
    let floor_cpu = cipher + gso_cpu.map_or(mmsg_cpu, |g| g.min(mmsg_cpu));
    let cpu_fields = match place {
        SinkPlace::Loopback => String::new(),
        SinkPlace::Netns { .. } => format!(
            " send_one_cpu_ns={one_cpu:.0} sendmmsg_cpu_ns={mmsg_cpu:.0} gso_cpu_ns={} \
             floor_cpu_ns={floor_cpu:.0} shaped_cpu_ns={shaped_cpu:.0} \
             floor_shaped_cpu_ns={:.0} sink_got={sink_got:.3}",
            fmt(gso_cpu),
            cipher + shaped_cpu
        ),
    };
    println!(
        "FLOOR gcm_ns={gcm_ns:.0} cm_hmac_ns={cm_ns:.0} send_one_ns={one_ns:.0} sendmmsg_ns={mmsg_ns:.0} \
         gso_ns={} gso_segments={seg} floor_ns={floor:.0} floor_unbatched_ns={:.0} \
         shaped_ns={shaped_ns:.0} floor_shaped_ns={floor_shaped:.0} sink={sink}{cpu_fields}",
        fmt(gso_ns),
        cipher + one_ns,
    );
    if let Some(path) = std::env::var_os("FLOOR_JSON") {
        let json = format!(
            "{{\"gcm_ns\":{gcm_ns:.1},\"cm_hmac_ns\":{cm_ns:.1},\"send_one_ns\":{one_ns:.1},\
             \"sendmmsg_ns\":{mmsg_ns:.1},\"gso_ns\":{},\"gso_segments\":{seg},\
             \"floor_ns\":{floor:.1},\"floor_unbatched_ns\":{:.1},\"shaped_ns\":{shaped_ns:.1},\
             \"floor_shaped_ns\":{floor_shaped:.1},\"sink\":\"{sink}\"{}}}\n",
            gso_ns.map_or("null".to_owned(), |g| format!("{g:.1}")),
            cipher + one_ns,
            match place {
                SinkPlace::Loopback => String::new(),
                SinkPlace::Netns { .. } => format!(
                    ",\"send_one_cpu_ns\":{one_cpu:.1},\"sendmmsg_cpu_ns\":{mmsg_cpu:.1},\
                     \"gso_cpu_ns\":{},\"floor_cpu_ns\":{floor_cpu:.1},\"shaped_cpu_ns\":{shaped_cpu:.1},\
                     \"floor_shaped_cpu_ns\":{:.1},\"sink_got\":{sink_got:.4}",
                    gso_cpu.map_or("null".to_owned(), |g| format!("{g:.1}")),
                    cipher + shaped_cpu
                ),
            },
        );
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("writing {}: {e}", path.to_string_lossy());
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let place = SinkPlace::from_env();
    ciphers(&mut c);
    sends(&mut c, &place);
    c.final_summary();
    summary(&place);
}
