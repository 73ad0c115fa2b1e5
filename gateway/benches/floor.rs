//! The physical floor of forwarding one packet to one viewer: the work no SFU can avoid.
//!
//! * SRTP protection of a 1200-byte RTP packet (12-byte header + 1188 bytes payload), as the two
//!   profiles WebRTC negotiates do it, with AWS-LC (the library str0m uses here):
//!   - `SRTP_AEAD_AES_128_GCM`: AES-128-GCM seal, header as AAD, 16-byte tag;
//!   - `SRTP_AES128_CM_HMAC_SHA1_80`: AES-128-CTR over the payload, HMAC-SHA1 over
//!     header + ciphertext + ROC, tag truncated to 10 bytes.
//! * Sending it: to a loopback sink socket, one `sendmsg` per packet (quinn-udp, as the gateway
//!   does today), one `sendmmsg` per batch of 32 (libc), and UDP GSO (quinn-udp `segment_size`,
//!   up to 32 segments per call) when the kernel offers it. GSO batches datagrams to *one*
//!   destination, so in fan-out it applies to several packets for the same viewer (a keyframe,
//!   a run), not to one packet for many viewers; sendmmsg applies to both.
//!
//! Criterion prints the per-packet cost of each (throughput = packets). After the criterion run a
//! short fixed-iteration pass prints one machine-readable line:
//!
//! ```text
//! FLOOR gcm_ns=… cm_hmac_ns=… send_one_ns=… sendmmsg_ns=… gso_ns=… floor_ns=…
//! ```
//!
//! `floor_ns` = min(cipher) + min(batched send): the cost per forwarded packet that fan-out figures
//! are divided by (`BENCHMARKS.md`). `FLOOR_JSON=path` also writes those numbers as JSON.
//!
//! Caveat: on loopback the sender's syscall also carries the receive side (the datagram is
//! delivered to the sink socket, and a GSO batch segmented, in the same call). A thread drains the
//! sink (on 2 cores it competes with the sender); datagrams it does not keep up with are dropped at
//! the sink's full receive buffer after that work.

use std::hint::black_box;
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
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

/// A sender and a loopback sink nobody reads.
struct Sockets {
    tx: UdpSocket,
    state: UdpSocketState,
    sink: UdpSocket,
    dest: SocketAddr,
}

impl Sockets {
    fn new() -> Self {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        // Drained by a thread, so that datagrams are delivered (and GSO batches segmented) rather
        // than dropped whole at a full receive buffer. The thread lives as long as the process.
        let _ = socket2::SockRef::from(&sink).set_recv_buffer_size(8 << 20);
        let drain = sink.try_clone().expect("clone sink");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while drain.recv(&mut buf).is_ok() {}
        });
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        let state = UdpSocketState::new(UdpSockRef::from(&tx)).expect("quinn-udp state");
        let _ = state.set_send_buffer_size(UdpSockRef::from(&tx), 8 << 20);
        let dest = sink.local_addr().expect("sink addr");
        Sockets {
            tx,
            state,
            sink,
            dest,
        }
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
        let _ = self.state.try_send(UdpSockRef::from(&self.tx), &t);
    }

    /// `sendmmsg` of `count` copies of `packet`; returns how many the kernel took.
    fn sendmmsg(&self, packet: &[u8], count: usize) -> usize {
        let iov: Vec<IoSlice<'_>> = (0..count).map(|_| IoSlice::new(packet)).collect();
        let SocketAddr::V4(v4) = self.dest else {
            return 0;
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: every pointer refers to `iov`/`addr`, which outlive the call; lengths match.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter()
            .map(|io| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = &addr as *const _ as *mut libc::c_void;
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                h.msg_hdr.msg_iov = io as *const IoSlice<'_> as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: `msgs` holds `count` initialised headers pointing at live buffers.
        let n = unsafe {
            libc::sendmmsg(
                self.tx.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        n.max(0) as usize
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
        if let Err(e) = self.state.try_send(UdpSockRef::from(&self.tx), &t) {
            GSO_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if e.kind() != std::io::ErrorKind::WouldBlock {
                LAST_GSO_ERROR.get_or_init(|| e.to_string());
            }
        }
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

fn sends(c: &mut Criterion) {
    let s = Sockets::new();
    let packet = rtp_packet(1);
    let mut group = c.benchmark_group("udp_send_1200B_loopback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sendmsg_per_packet", |b| b.iter(|| s.send_one(&packet)));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("sendmmsg_batch_32", |b| {
        b.iter(|| black_box(s.sendmmsg(&packet, BATCH)))
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
fn ns_per_packet(iters: u32, per_call: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters) / per_call as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary() {
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
    let s = Sockets::new();
    let one_ns = ns_per_packet(100_000, 1, || s.send_one(&packet));
    let mmsg_ns = ns_per_packet(5_000, BATCH, || {
        black_box(s.sendmmsg(&packet, BATCH));
    });
    let seg = s.gso_segments();
    let gso_ns = (seg > 1).then(|| {
        let buf: Vec<u8> = packet.iter().copied().cycle().take(PACKET * seg).collect();
        ns_per_packet(5_000, seg, || s.send_gso(&buf, PACKET))
    });
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
    let fmt = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.0}"));
    println!(
        "FLOOR gcm_ns={gcm_ns:.0} cm_hmac_ns={cm_ns:.0} send_one_ns={one_ns:.0} sendmmsg_ns={mmsg_ns:.0} \
         gso_ns={} gso_segments={seg} floor_ns={floor:.0} floor_unbatched_ns={:.0}",
        fmt(gso_ns),
        cipher + one_ns,
    );
    if let Some(path) = std::env::var_os("FLOOR_JSON") {
        let json = format!(
            "{{\"gcm_ns\":{gcm_ns:.1},\"cm_hmac_ns\":{cm_ns:.1},\"send_one_ns\":{one_ns:.1},\
             \"sendmmsg_ns\":{mmsg_ns:.1},\"gso_ns\":{},\"gso_segments\":{seg},\
             \"floor_ns\":{floor:.1},\"floor_unbatched_ns\":{:.1}}}\n",
            gso_ns.map_or("null".to_owned(), |g| format!("{g:.1}")),
            cipher + one_ns,
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
    ciphers(&mut c);
    sends(&mut c);
    c.final_summary();
    summary();
}
