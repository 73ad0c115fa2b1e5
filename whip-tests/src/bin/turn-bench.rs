//! TURN relaying figures (benchmark 9 of `BENCHMARKS.md`): the latency a TURN server adds per
//! packet, and its CPU per relayed packet, over UDP, TCP or TLS.
//!
//! ```text
//! turn-bench --server 127.0.0.1:3478 --transport udp --username U --password P --server-pid 1234
//! ```
//!
//! One allocation, a permission and a channel to a UDP echo peer this tool runs itself. Latency:
//! ping-pong, one packet in flight, alternating blocks through TURN (client → server → relayed
//! socket → peer and back: two relayed packets per round trip) and straight to the same peer,
//! so the difference of the two medians is what the server adds per round trip, measured in
//! one run on one machine. Throughput: a window of packets in flight for `--blast` packets, the
//! server's CPU from `/proc` over it, per relayed packet. Credentials come from the server's
//! TURN API (`POST /v1/turn/keys/{key}/credentials/generate-ice-servers`). The TLS client takes
//! any certificate: it measures, it does not authenticate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use gateway::turn::message::{self as msg, Builder, Class, TurnMessage, attr};
use gateway::turn::server::long_term_key;
use gateway::turn::shell::frame_len;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use whip_tests::gateway_probe::cpu_ns;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Parser, Debug)]
#[command(about = "TURN relaying: added latency per packet and server CPU per relayed packet")]
struct Args {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    #[arg(long)]
    username: String,
    #[arg(long)]
    password: String,
    /// The realm the server uses (the gateway's is `wish`; it is learnt from the 401 anyway).
    #[arg(long, default_value = "wish")]
    realm: String,
    /// The server's pid, for its CPU per relayed packet (it must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Round trips per path for latency.
    #[arg(long, default_value_t = 4000)]
    pings: usize,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Round trips for the throughput part (each is two relayed packets).
    #[arg(long, default_value_t = 50_000)]
    blast: usize,
    /// Packets in flight during the throughput part.
    #[arg(long, default_value_t = 32)]
    window: usize,
}

/// A TURN control connection: datagrams, or a byte stream framed as RFC 8656 §12.5 says.
enum Conn {
    Udp(UdpSocket),
    Stream { io: Box<dyn Stream>, buf: Vec<u8> },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Conn::Udp(s) => {
                s.send(bytes).await?;
            }
            Conn::Stream { io, .. } => io.write_all(bytes).await?,
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>> {
        match self {
            Conn::Udp(s) => {
                let mut b = vec![0u8; 65_536];
                let n = s.recv(&mut b).await?;
                b.truncate(n);
                Ok(b)
            }
            Conn::Stream { io, buf } => loop {
                match frame_len(buf) {
                    Ok(Some(n)) => {
                        let rest = buf.split_off(n);
                        return Ok(std::mem::replace(buf, rest));
                    }
                    Ok(None) => {}
                    Err(_) => bail!("the server sent bytes that are not TURN"),
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = io.read(&mut chunk).await?;
                ensure!(n > 0, "the server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }

    fn is_stream(&self) -> bool {
        matches!(self, Conn::Stream { .. })
    }
}

/// Accepts any certificate: the benchmark measures relaying, not authentication.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn connect(args: &Args) -> Result<Conn> {
    Ok(match args.transport {
        Transport::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            s.connect(args.server).await?;
            Conn::Udp(s)
        }
        Transport::Tcp => {
            let s = TcpStream::connect(args.server).await?;
            s.set_nodelay(true)?;
            Conn::Stream {
                io: Box::new(s),
                buf: Vec::new(),
            }
        }
        Transport::Tls => {
            let s = TcpStream::connect(args.server).await?;
            s.set_nodelay(true)?;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            let name = rustls_pki_types::ServerName::from(args.server.ip());
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, s)
                .await
                .context("TLS handshake")?;
            Conn::Stream {
                io: Box::new(tls),
                buf: Vec::new(),
            }
        }
    })
}

/// A signed request, its answer, and an error for anything but success.
async fn request(conn: &mut Conn, b: Builder, key: &aws_lc_rs::hmac::Key) -> Result<()> {
    conn.send(&b.sign(key)).await?;
    let answer = conn.recv().await?;
    let m = TurnMessage::parse(&answer).context("answer is not STUN")?;
    if let Some(e) = m.get(attr::ERROR_CODE) {
        let code = e.get(2..4).map(|c| c[0] as u16 * 100 + c[1] as u16);
        bail!("refused: {code:?}");
    }
    Ok(())
}

/// ChannelData on channel 0x4000, padded as a stream needs it.
fn channel_data(payload: &[u8], stream: bool) -> Vec<u8> {
    let mut v = msg::channel_data(0x4000, payload);
    if stream {
        msg::pad_for_stream(&mut v);
    }
    v
}

/// Allocation, permission and channel 0x4000 to `peer`.
async fn allocate(args: &Args, conn: &mut Conn, peer: SocketAddr) -> Result<()> {
    let first = Builder::new(msg::ALLOCATE, Class::Request, rand::random())
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .finish();
    conn.send(&first).await?;
    let challenge = conn.recv().await?;
    let m = TurnMessage::parse(&challenge).context("no 401")?;
    let nonce = m.string(attr::NONCE).context("no NONCE")?.to_owned();
    let realm = m.string(attr::REALM).unwrap_or(&args.realm).to_owned();
    let key = long_term_key(&args.username, &realm, &args.password);
    let signed = |method| {
        Builder::new(method, Class::Request, rand::random())
            .attr(attr::USERNAME, args.username.as_bytes())
            .attr(attr::REALM, realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
    };
    let alloc = signed(msg::ALLOCATE).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    request(conn, alloc, &key).await.context("Allocate")?;
    let bind = signed(msg::CHANNEL_BIND)
        .attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
        .address(attr::XOR_PEER_ADDRESS, peer);
    request(conn, bind, &key).await.context("ChannelBind")?;
    Ok(())
}

fn median_us(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn p99_us(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() * 99 / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    // The peer echoes every datagram to whoever sent it (the relayed address, or the direct socket).
    let echo = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let peer = echo.local_addr()?;
    tokio::spawn({
        let echo = echo.clone();
        async move {
            let mut b = vec![0u8; 65_536];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        }
    });
    let mut conn = connect(&args).await?;
    allocate(&args, &mut conn, peer).await?;
    let direct = UdpSocket::bind("127.0.0.1:0").await?;
    direct.connect(peer).await?;

    let payload = vec![0x5Au8; args.size];
    let pad = conn.is_stream();
    let (mut turn_rtt, mut direct_rtt) = (Vec::new(), Vec::new());
    let (mut turn_lost, mut direct_lost) = (0usize, 0usize);
    let mut buf = vec![0u8; 65_536];
    // A ping with no echo by then is lost (and a late echo would be taken for the next one's,
    // so the wait is long against a round trip of well under a millisecond).
    let wait = Duration::from_millis(200);
    for _block in 0..args.pings.div_ceil(200) {
        for _ in 0..200 {
            let t = Instant::now();
            conn.send(&channel_data(&payload, pad)).await?;
            match tokio::time::timeout(wait, conn.recv()).await {
                Ok(r) => {
                    r?;
                    turn_rtt.push(t.elapsed());
                }
                Err(_) => turn_lost += 1,
            }
        }
        for _ in 0..200 {
            let t = Instant::now();
            direct.send(&payload).await?;
            match tokio::time::timeout(wait, direct.recv(&mut buf)).await {
                Ok(r) => {
                    r?;
                    direct_rtt.push(t.elapsed());
                }
                Err(_) => direct_lost += 1,
            }
        }
    }
    ensure!(!turn_rtt.is_empty(), "no echo came back through TURN");

    // Throughput: keep `window` round trips in flight.
    let pid = args.server_pid.map(|p| p.to_string());
    let cpu0 = pid.as_deref().and_then(cpu_ns);
    let start = Instant::now();
    let (mut sent, mut echoed, mut lost) = (0usize, 0usize, 0usize);
    let frame = channel_data(&payload, pad);
    while echoed + lost < args.blast {
        while sent < args.blast && sent - echoed - lost < args.window {
            conn.send(&frame).await?;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(200), conn.recv()).await {
            Ok(r) => {
                r?;
                echoed += 1;
            }
            // Whatever is still in flight after 200 ms of silence is lost.
            Err(_) => lost = sent - echoed,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().and_then(cpu_ns);
    let relayed = 2 * echoed;
    let cpu_us = cpu0
        .zip(cpu1)
        .map(|(a, b)| (b - a) as f64 / 1e3 / relayed.max(1) as f64);

    let (turn_p50, direct_p50) = (median_us(&mut turn_rtt), median_us(&mut direct_rtt));
    let report = json!({
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "size": args.size,
        "pings": turn_rtt.len(),
        "pings_lost": { "turn": turn_lost, "direct": direct_lost },
        "turn_rtt_p50_us": turn_p50,
        "turn_rtt_p99_us": p99_us(&mut turn_rtt),
        "direct_rtt_p50_us": direct_p50,
        "direct_rtt_p99_us": p99_us(&mut direct_rtt),
        "added_per_round_trip_us": turn_p50 - direct_p50,
        "blast_round_trips": echoed,
        "blast_lost": lost,
        "relayed_packets_per_s": relayed as f64 / secs,
        "server_cpu_us_per_relayed_packet": cpu_us,
    });
    println!("RESULT {report}");
    Ok(())
}
