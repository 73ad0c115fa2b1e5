//! Node configuration: embedded defaults, an optional TOML file, then environment variables and
//! command-line flags (clap merges the last two), in that order of precedence.
//!
//! With no file and no flags the gateway is ready for OBS and a browser on a laptop: HTTP on 8080,
//! WebRTC on UDP 8189, every local interface as a host candidate, anonymous publish and play
//! (with a warning at start-up, since anyone who can reach the port can then publish).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command-line flags. Each may also be given as an environment variable.
#[derive(Debug, Parser, Default)]
#[command(name = "gateway", version, about = "WHIP/WHEP broadcast gateway")]
pub struct Cli {
    /// Optional TOML configuration file (flags and environment override it).
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP(S) listen address.
    #[arg(long, env = "GATEWAY_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The one UDP address all WebRTC sessions share.
    #[arg(long, env = "GATEWAY_UDP_LISTEN")]
    pub udp_listen: Option<SocketAddr>,
    /// ICE-TCP (RFC 6544): the TCP address for passive candidates. Default: the UDP listen
    /// address (any free port if that one is taken).
    #[arg(long, env = "GATEWAY_ICE_TCP_LISTEN")]
    pub ice_tcp_listen: Option<SocketAddr>,
    /// Offer no ICE-TCP candidates (clients then need UDP or TURN).
    #[arg(long, env = "GATEWAY_NO_ICE_TCP")]
    pub no_ice_tcp: bool,
    /// Host candidate addresses to advertise (repeatable). Default: every local interface address.
    #[arg(
        long = "candidate-ip",
        env = "GATEWAY_CANDIDATE_IPS",
        value_delimiter = ','
    )]
    pub candidate_ips: Vec<IpAddr>,
    /// Public address of a 1:1 NAT in front of this node (repeatable); advertised first.
    #[arg(long = "public-ip", env = "GATEWAY_PUBLIC_IPS", value_delimiter = ',')]
    pub public_ips: Vec<IpAddr>,
    /// Media worker count (0 = one per core).
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the cluster's DTLS identity (ECDSA): give every gateway the same pair.
    #[arg(long, env = "GATEWAY_DTLS_CERT", requires = "dtls_key")]
    pub dtls_cert: Option<PathBuf>,
    /// PEM private key (ECDSA P-256 or P-384) of the cluster's DTLS identity.
    #[arg(long, env = "GATEWAY_DTLS_KEY", requires = "dtls_cert")]
    pub dtls_key: Option<PathBuf>,
    /// A bearer token allowed to publish every stream (repeatable).
    #[arg(
        long = "publish-token",
        env = "GATEWAY_PUBLISH_TOKENS",
        value_delimiter = ','
    )]
    pub publish_tokens: Vec<String>,
    /// A bearer token allowed to play every stream (repeatable).
    #[arg(
        long = "play-token",
        env = "GATEWAY_PLAY_TOKENS",
        value_delimiter = ','
    )]
    pub play_tokens: Vec<String>,
    /// A bearer token allowed to read `/v1/stats` and every stream on `/v1/streams` (repeatable).
    /// Needed for those once any token or app is configured.
    #[arg(
        long = "admin-token",
        env = "GATEWAY_ADMIN_TOKENS",
        value_delimiter = ','
    )]
    pub admin_tokens: Vec<String>,
    /// An app for the session/track API as `id:secret` (repeatable).
    #[arg(long = "app", env = "GATEWAY_APPS", value_delimiter = ',')]
    pub apps: Vec<String>,
    /// Join a cluster: the UDP address node-to-node QUIC links listen on.
    #[arg(long, env = "GATEWAY_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// This node's id in the cluster: the address peers dial (default: the cluster listen address).
    #[arg(long, env = "GATEWAY_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster name; nodes of another cluster are refused.
    #[arg(long, env = "GATEWAY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The cluster certificate and key (PEM) every node holds (`relay cluster-cert` makes them).
    #[arg(long, env = "GATEWAY_CLUSTER_CERT")]
    pub cluster_cert: Option<PathBuf>,
    /// … and its private key (PEM).
    #[arg(long, env = "GATEWAY_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// A cluster member as `tier:host:port` (repeatable; tier 0 = gateways, 1.. = relay tiers).
    #[arg(
        long = "cluster-member",
        env = "GATEWAY_CLUSTER_MEMBERS",
        value_delimiter = ','
    )]
    pub cluster_members: Vec<String>,
    /// Members from DNS as `tier:name:port` (a Kubernetes headless Service; repeatable).
    #[arg(
        long = "cluster-members-dns",
        env = "GATEWAY_CLUSTER_MEMBERS_DNS",
        value_delimiter = ','
    )]
    pub cluster_members_dns: Vec<String>,
    /// How long a remote track nobody watches is kept before unsubscribing it (ms).
    #[arg(long, env = "GATEWAY_CLUSTER_PRUNE_GRACE_MS")]
    pub cluster_prune_grace_ms: Option<u64>,
    /// Record streams to fragmented MP4 files under this directory (enables recording).
    #[arg(long, env = "GATEWAY_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
    /// Record streams matching this pattern (`*`, `prefix-*`, a name; repeatable). Others can
    /// be started with `POST /v1/streams/{name}/recording`.
    #[arg(long = "record", env = "GATEWAY_RECORD", value_delimiter = ',')]
    pub record: Vec<String>,
    /// Start a new recording file this often (seconds, at a keyframe).
    #[arg(long, env = "GATEWAY_RECORD_SEGMENT_SECS")]
    pub record_segment_secs: Option<u64>,
    /// Send every datagram with its own sendmsg, never as UDP GSO buffers (for NICs that
    /// mishandle GSO quinn-udp cannot detect, and for benchmarks comparing the two).
    #[arg(long, env = "GATEWAY_NO_UDP_GSO")]
    pub no_udp_gso: bool,
    /// Send each message (GSO buffer or datagram) with its own sendmsg instead of many per
    /// sendmmsg (for benchmarks comparing the two).
    #[arg(long, env = "GATEWAY_NO_UDP_SENDMMSG")]
    pub no_udp_sendmmsg: bool,
    /// Let WebSocket adapters dial endpoints on loopback and private networks (refused by
    /// default: the gateway must not become a way into the networks behind it).
    #[arg(long, env = "GATEWAY_ADAPTERS_ALLOW_PRIVATE")]
    pub adapters_allow_private: bool,
    /// A TURN key as `id:secret` (repeatable): the secret is the bearer token of
    /// `POST /v1/turn/keys/{id}/credentials/…` and signs the usernames it issues.
    #[arg(long = "turn-key", env = "GATEWAY_TURN_KEYS", value_delimiter = ',')]
    pub turn_keys: Vec<String>,
    /// A TURN server URL handed out with credentials (repeatable), e.g.
    /// `turn:turn.example.com:3478?transport=udp`.
    #[arg(long = "turn-url", env = "GATEWAY_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// Serve TURN over UDP on this address (off by default; `[turn] listen_udp`).
    #[arg(long, env = "GATEWAY_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
    /// Serve TURN over TCP on this address too (`[turn] listen_tcp`).
    #[arg(long, env = "GATEWAY_TURN_LISTEN_TCP")]
    pub turn_listen_tcp: Option<SocketAddr>,
    /// Serve TURN over TLS (`turns:`) on this address too (`[turn] listen_tls`).
    #[arg(long, env = "GATEWAY_TURN_LISTEN_TLS")]
    pub turn_listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for TURN over TLS (default: the HTTPS one, `--tls-cert`).
    #[arg(long, env = "GATEWAY_TURN_TLS_CERT", requires = "turn_tls_key")]
    pub turn_tls_cert: Option<PathBuf>,
    /// PEM private key for TURN over TLS (default: the HTTPS one, `--tls-key`).
    #[arg(long, env = "GATEWAY_TURN_TLS_KEY", requires = "turn_tls_cert")]
    pub turn_tls_key: Option<PathBuf>,
    /// A network (CIDR) the TURN service may relay to (repeatable; default: this gateway's own
    /// candidate addresses).
    #[arg(
        long = "turn-allowed-peer",
        env = "GATEWAY_TURN_ALLOWED_PEERS",
        value_delimiter = ','
    )]
    pub turn_allowed_peers: Vec<String>,
    /// Push metrics and session-setup spans over OTLP/HTTP to this receiver (base URL, e.g.
    /// `http://otel-collector:4318`). Off by default.
    #[arg(long, env = "GATEWAY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How often (ms) metrics are pushed over OTLP (default 10000).
    #[arg(long, env = "GATEWAY_OTLP_INTERVAL_MS")]
    pub otlp_interval_ms: Option<u64>,
    /// How far back (ms) a viewer's NACKs are answered with RTX (100-10000).
    #[arg(long, env = "GATEWAY_VIEWER_REPAIR_WINDOW_MS")]
    pub viewer_repair_window_ms: Option<u64>,
    /// On SIGTERM, how long (ms) live sessions may keep going before the gateway stops anyway
    /// (default: 30000 in a cluster, 0 alone; 0 stops at once). A second signal stops at once.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// TEST ONLY: drop this fraction of outgoing node-link media datagrams (seeded).
    #[arg(long, env = "GATEWAY_TEST_DROP_DATAGRAMS", hide = true)]
    pub test_drop_datagrams: Option<f64>,
}

/// Cluster membership and links (absent: a single node, no relay tiers): the settings the relay
/// binary has too, in `[cluster]`.
pub use relay_shell::settings::ClusterSettings;

/// Recording to fragmented MP4 (absent: nothing is recorded and the recording API says 409).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Directory the fMP4 files are written to.
    pub dir: PathBuf,
    /// Streams recorded as soon as they are published (patterns as for tokens).
    #[serde(default)]
    pub streams: Vec<String>,
    /// A new file this often, at a keyframe.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: u64,
}

fn default_segment_secs() -> u64 {
    3600
}

/// A bearer token and the streams it may publish and play. A pattern is a stream name, `*`, or a
/// prefix ending in `*` (`studio-*`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// The bearer token as clients send it.
    pub token: String,
    /// Stream patterns this token may publish (WHIP).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Stream patterns this token may play (WHEP).
    #[serde(default)]
    pub play: Vec<String>,
    /// May read the node's monitoring JSON (`/v1/stats`, every stream on `/v1/streams`).
    #[serde(default)]
    pub admin: bool,
}

/// An application allowed to use the session/track API with its secret as bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The app id, in `/v1/apps/{id}/…` paths.
    pub id: String,
    /// The shared secret, sent as the bearer token.
    pub secret: String,
    /// Origins whose pages may call the API (CORS): `["*"]` (the default) for any, as Calls
    /// does; a list of `scheme://host[:port]` to restrict. The secret is what authorises a call;
    /// this only decides which pages' scripts may read the answers.
    #[serde(default = "any_origin")]
    pub allowed_origins: Vec<String>,
}

fn any_origin() -> Vec<String> {
    vec!["*".into()]
}

/// A STUN/TURN server announced to clients in `Link` headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URL.
    pub url: String,
    /// TURN user name, if the server needs credentials.
    pub username: Option<String>,
    /// TURN password, if the server needs credentials.
    pub credential: Option<String>,
}

/// The merged configuration the node runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP(S) listen address for the WHIP/WHEP and control API.
    pub http_listen: SocketAddr,
    /// The one UDP address all WebRTC sessions share.
    pub udp_listen: SocketAddr,
    /// Send a viewer's consecutive equal-sized datagrams as one UDP GSO buffer where the OS can.
    pub udp_gso: bool,
    /// Send many messages per syscall (Linux sendmmsg), gathered from the datagrams in place.
    pub udp_sendmmsg: bool,
    /// Passive ICE-TCP candidates beside the UDP ones, for networks that block UDP.
    pub ice_tcp: bool,
    /// Their listen address; `None`: the UDP listen address.
    pub ice_tcp_listen: Option<SocketAddr>,
    /// Host candidate addresses to advertise; empty: every local interface address.
    pub candidate_ips: Vec<IpAddr>,
    /// Public addresses of a 1:1 NAT in front of this node, advertised first.
    pub public_ips: Vec<IpAddr>,
    /// Media worker threads (0: one per core; see [`Config::worker_count`]).
    pub workers: usize,
    /// PEM certificate chain for HTTPS (none: plain HTTP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// The cluster's DTLS certificate and key (`dtls_cert.rs`): every gateway given the same
    /// pair answers with the same fingerprint. `None`: a certificate of this process's own.
    pub dtls_cert: Option<PathBuf>,
    /// Its private key; set with `dtls_cert` or not at all.
    pub dtls_key: Option<PathBuf>,
    /// `None`: anonymous publishing is allowed only when no token is configured at all.
    pub allow_anonymous_publish: Option<bool>,
    /// `None`: anonymous playing is allowed only when no token may play.
    pub allow_anonymous_play: Option<bool>,
    /// Bearer tokens and what they may publish, play and read.
    pub tokens: Vec<TokenRule>,
    /// Apps allowed to use the session/track API.
    pub apps: Vec<App>,
    /// STUN/TURN servers announced to WHIP/WHEP clients in `Link` headers.
    pub ice_servers: Vec<IceServer>,
    /// Largest accepted HTTP body (SDP offers are a few KiB; OBS simulcast offers under 16 KiB).
    pub max_body_bytes: usize,
    /// Sessions on this node at most; beyond it new sessions get 503 + Retry-After.
    pub max_sessions: usize,
    /// A session that has not connected by then is reaped (the client vanished before ICE).
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// A connected session that has received nothing for this long is reaped (consent expired).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Per-track keyframe cache bound.
    pub keyframe_cache_bytes: usize,
    /// Keyframe requests toward a publisher at most once per this interval.
    #[serde(with = "millis")]
    pub keyframe_request_interval: Duration,
    /// How far back str0m keeps what it sent each viewer to answer NACKs with RTX: memory per
    /// viewer grows with it (`session::Pull::bound_repair_window`).
    #[serde(with = "millis")]
    pub viewer_repair_window: Duration,
    /// On SIGTERM, live sessions keep going this long (ms) at most (`drain.rs`); zero stops at
    /// once. Unset: 30 s in a cluster (other gateways take the clients' new flows and tunnel
    /// them here meanwhile), 0 for a gateway alone (a Ctrl-C on a laptop stops it).
    pub drain_timeout_ms: Option<u64>,
    /// Admission of new sessions: POST rate and unconnected sessions per source, and per node.
    pub limits: crate::admission::Limits,
    /// Cluster membership and node-to-node links (none: a standalone node).
    pub cluster: Option<ClusterSettings>,
    /// Recording to fMP4 (none: off).
    pub recording: Option<RecordingSettings>,
    /// Protocol adapters beside WHIP/WHEP.
    pub adapters: AdapterSettings,
    /// OTLP metrics export.
    pub telemetry: TelemetrySettings,
    /// TURN credentials handed out and the gateway's own TURN service.
    pub turn: TurnSettings,
}

/// `[turn]`: short-lived TURN credentials (Calls' TURN API), for a TURN server that checks them
/// with the shared secret (coturn's `use-auth-secret`, the "TURN REST API" scheme).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// `[[turn.keys]] id = "…", secret = "…"`.
    pub keys: Vec<TurnKeyConfig>,
    /// TURN URLs handed out (`turn:` and `turns:`).
    pub urls: Vec<String>,
    /// STUN URLs handed out; default: `stun:host:port` of each `turn:` URL.
    pub stun_urls: Vec<String>,
    /// Lifetime of the credentials put in WHIP/WHEP `Link` headers (seconds).
    pub link_ttl_secs: u64,
    /// The gateway's own TURN service over UDP: where it listens (none: off).
    pub listen_udp: Option<SocketAddr>,
    /// … and over TCP (RFC 8656 §3.1: the client's connection carries STUN and ChannelData).
    pub listen_tcp: Option<SocketAddr>,
    /// … and over TLS (`turns:`, RFC 8656 §3.1): for networks that let only TLS out.
    pub listen_tls: Option<SocketAddr>,
    /// The TLS listener's PEM certificate chain and key; default: the HTTPS ones.
    pub tls_cert: Option<PathBuf>,
    /// The TLS listener's PEM private key (see `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// The address relayed sockets bind (default: the listen address's, or the first candidate).
    pub relay_ip: Option<IpAddr>,
    /// Networks peers may be in, as CIDR (`10.0.0.0/8`); default: this gateway's candidates.
    pub allowed_peers: Vec<String>,
    /// Allocations one TURN user name may hold at once.
    pub max_allocations_per_user: usize,
    /// Allocations one client IP address may hold at once.
    pub max_allocations_per_source: usize,
    /// Allocations on this node at most.
    pub max_allocations: usize,
    /// Longest allocation lifetime granted (seconds).
    pub max_lifetime_secs: u64,
    /// Bytes per second one allocation may relay (0: unlimited).
    pub bandwidth_bytes_per_sec: u64,
}

impl Config {
    /// How long a drain may take (`drain_timeout_ms`, or its default for a clustered or lone
    /// gateway).
    pub fn drain_timeout(&self) -> Duration {
        let default = if self.cluster.is_some() { 30_000 } else { 0 };
        Duration::from_millis(self.drain_timeout_ms.unwrap_or(default))
    }

    /// Where the TURN service listens, if it is on.
    pub fn turn_listen(&self) -> Option<SocketAddr> {
        self.turn.listen_udp
    }

    /// The TURN TLS listener's certificate and key: `[turn]`'s own, else the HTTPS ones.
    pub fn turn_tls_files(&self) -> Option<(&Path, &Path)> {
        match (&self.turn.tls_cert, &self.turn.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?)),
            _ => None,
        }
    }
}

/// `a.b.c.d/n` or an address alone (a host).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            keys: Vec::new(),
            urls: Vec::new(),
            stun_urls: Vec::new(),
            link_ttl_secs: 3600,
            listen_udp: None,
            listen_tcp: None,
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            relay_ip: None,
            allowed_peers: Vec::new(),
            max_allocations_per_user: 10,
            max_allocations_per_source: 20,
            max_allocations: 10_000,
            max_lifetime_secs: 3600,
            bandwidth_bytes_per_sec: 2_500_000,
        }
    }
}

/// A TURN shared secret (`[[turn.keys]]`) credentials are derived from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnKeyConfig {
    /// Key id, in the credentials API's URLs and in the user names it issues.
    pub id: String,
    /// The secret: the bearer token for this key's credentials API, and the HMAC key of its user
    /// names.
    pub secret: String,
}

impl TurnSettings {
    /// The STUN URLs: configured, or derived from the `turn:` URLs.
    pub fn stun(&self) -> Vec<String> {
        if !self.stun_urls.is_empty() {
            return self.stun_urls.clone();
        }
        let mut out: Vec<String> = self
            .urls
            .iter()
            .filter_map(|u| u.strip_prefix("turn:"))
            .map(|rest| format!("stun:{}", rest.split('?').next().unwrap_or(rest)))
            .collect();
        out.dedup();
        out
    }
}

/// `[telemetry]`: OTLP export (the Prometheus endpoint `/metrics` is always on).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP receiver; none: no push.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed, ms.
    pub otlp_interval_ms: u64,
    /// The resource's `service.name`.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            otlp_interval_ms: 10_000,
            service_name: "wish-gateway".into(),
        }
    }
}

/// `[adapters]`: Calls' WebSocket media adapters.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdapterSettings {
    /// Endpoints on loopback and private networks may be dialled (off: refused, as Calls does).
    pub allow_private_endpoints: bool,
    /// Adapters on this node at most.
    pub max_adapters: usize,
}

impl Default for AdapterSettings {
    fn default() -> Self {
        AdapterSettings {
            allow_private_endpoints: false,
            max_adapters: 256,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            udp_gso: true,
            udp_sendmmsg: true,
            ice_tcp: true,
            ice_tcp_listen: None,
            candidate_ips: Vec::new(),
            public_ips: Vec::new(),
            workers: 0,
            tls_cert: None,
            tls_key: None,
            dtls_cert: None,
            dtls_key: None,
            allow_anonymous_publish: None,
            allow_anonymous_play: None,
            tokens: Vec::new(),
            apps: Vec::new(),
            ice_servers: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_sessions: 20_000,
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(15),
            keyframe_cache_bytes: 16 * 1024 * 1024,
            keyframe_request_interval: Duration::from_millis(500),
            viewer_repair_window: Duration::from_secs(1),
            drain_timeout_ms: None,
            limits: crate::admission::Limits::default(),
            cluster: None,
            recording: None,
            adapters: AdapterSettings::default(),
            telemetry: TelemetrySettings::default(),
            turn: TurnSettings::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not match the settings.
    #[error("invalid TOML in {path}: {source}")]
    Toml {
        /// The config file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// An `--app` argument not of the form `id:secret`.
    #[error("invalid --app {0:?}: expected id:secret")]
    App(String),
    /// A setting out of range or settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Merge the file named by the flags (if any) with the flags themselves.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Toml {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply(cli)?;
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, cli: Cli) -> Result<(), ConfigError> {
        if let Some(a) = cli.http_listen {
            self.http_listen = a;
        }
        if let Some(a) = cli.udp_listen {
            self.udp_listen = a;
        }
        if cli.no_udp_gso {
            self.udp_gso = false;
        }
        if let Some(a) = cli.ice_tcp_listen {
            self.ice_tcp_listen = Some(a);
        }
        if cli.no_ice_tcp {
            self.ice_tcp = false;
        }
        if let Some(e) = cli.otlp_endpoint {
            self.telemetry.otlp_endpoint = Some(e);
        }
        if let Some(ms) = cli.otlp_interval_ms {
            self.telemetry.otlp_interval_ms = ms;
        }
        if cli.adapters_allow_private {
            self.adapters.allow_private_endpoints = true;
        }
        if cli.no_udp_sendmmsg {
            self.udp_sendmmsg = false;
        }
        if let Some(ms) = cli.drain_timeout_ms {
            self.drain_timeout_ms = Some(ms);
        }
        if let Some(ms) = cli.viewer_repair_window_ms {
            self.viewer_repair_window = Duration::from_millis(ms);
        }
        if !cli.candidate_ips.is_empty() {
            self.candidate_ips = cli.candidate_ips;
        }
        if !cli.public_ips.is_empty() {
            self.public_ips = cli.public_ips;
        }
        if let Some(w) = cli.workers {
            self.workers = w;
        }
        if cli.tls_cert.is_some() {
            self.tls_cert = cli.tls_cert;
            self.tls_key = cli.tls_key;
        }
        if cli.dtls_cert.is_some() {
            self.dtls_cert = cli.dtls_cert;
            self.dtls_key = cli.dtls_key;
        }
        for token in cli.publish_tokens {
            self.tokens.push(TokenRule {
                token,
                publish: vec!["*".into()],
                play: vec![],
                admin: false,
            });
        }
        for token in cli.play_tokens {
            self.tokens.push(TokenRule {
                token,
                publish: vec![],
                play: vec!["*".into()],
                admin: false,
            });
        }
        for token in cli.admin_tokens {
            self.tokens.push(TokenRule {
                token,
                admin: true,
                ..TokenRule::default()
            });
        }
        if let Some(listen) = cli.cluster_listen {
            let (Some(cert), Some(key)) = (cli.cluster_cert.clone(), cli.cluster_key.clone())
            else {
                return Err(ConfigError::Invalid(
                    "--cluster-listen needs --cluster-cert and --cluster-key".into(),
                ));
            };
            self.cluster = Some(ClusterSettings::new(listen, cert, key));
        }
        if let Some(c) = self.cluster.as_mut() {
            if let Some(id) = cli.node_id {
                c.node_id = Some(id);
            }
            if let Some(name) = cli.cluster_name {
                c.name = name;
            }
            if let Some(cert) = cli.cluster_cert {
                c.cert = cert;
            }
            if let Some(key) = cli.cluster_key {
                c.key = key;
            }
            c.members.extend(cli.cluster_members);
            c.members_dns.extend(cli.cluster_members_dns);
            if let Some(d) = cli.test_drop_datagrams {
                c.test_drop_datagrams = d;
            }
            if let Some(g) = cli.cluster_prune_grace_ms {
                c.prune_grace_ms = g;
            }
        }
        if let Some(dir) = cli.record_dir {
            let r = self.recording.get_or_insert_with(|| RecordingSettings {
                dir: dir.clone(),
                streams: Vec::new(),
                segment_secs: default_segment_secs(),
            });
            r.dir = dir;
        }
        if !cli.record.is_empty() || cli.record_segment_secs.is_some() {
            let Some(r) = self.recording.as_mut() else {
                return Err(ConfigError::Invalid(
                    "--record and --record-segment-secs need --record-dir".into(),
                ));
            };
            r.streams.extend(cli.record);
            if let Some(s) = cli.record_segment_secs {
                r.segment_secs = s;
            }
        }
        for key in cli.turn_keys {
            let (id, secret) = key.split_once(':').ok_or_else(|| {
                ConfigError::Invalid(format!("--turn-key {key:?}: expected id:secret"))
            })?;
            self.turn.keys.push(TurnKeyConfig {
                id: id.into(),
                secret: secret.into(),
            });
        }
        self.turn.urls.extend(cli.turn_urls);
        if let Some(l) = cli.turn_listen {
            self.turn.listen_udp = Some(l);
        }
        if let Some(l) = cli.turn_listen_tcp {
            self.turn.listen_tcp = Some(l);
        }
        if let Some(l) = cli.turn_listen_tls {
            self.turn.listen_tls = Some(l);
        }
        if cli.turn_tls_cert.is_some() {
            self.turn.tls_cert = cli.turn_tls_cert;
            self.turn.tls_key = cli.turn_tls_key;
        }
        self.turn.allowed_peers.extend(cli.turn_allowed_peers);
        for app in cli.apps {
            let (id, secret) = app
                .split_once(':')
                .ok_or_else(|| ConfigError::App(app.clone()))?;
            self.apps.push(App {
                id: id.into(),
                secret: secret.into(),
                allowed_origins: any_origin(),
            });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.dtls_cert.is_some() != self.dtls_key.is_some() {
            return Err(ConfigError::Invalid(
                "dtls_cert and dtls_key: set both (the cluster's DTLS identity) or neither".into(),
            ));
        }
        let window = self.viewer_repair_window;
        if window < Duration::from_millis(100) || window > Duration::from_secs(10) {
            return Err(ConfigError::Invalid(format!(
                "viewer_repair_window {} ms: must be 100 to 10000 ms",
                window.as_millis()
            )));
        }
        for k in &self.turn.keys {
            if k.id.is_empty() || k.id.contains(':') || k.id.len() > 64 || k.secret.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "TURN key {:?}: the id must be 1-64 characters without ':', the secret at least 16",
                    k.id
                )));
            }
        }
        if let Some(p) = self
            .turn
            .allowed_peers
            .iter()
            .find(|p| parse_cidr(p).is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "TURN allowed peer {p:?}: not an address or CIDR"
            )));
        }
        let streams = [("tcp", self.turn.listen_tcp), ("tls", self.turn.listen_tls)];
        if let Some((name, _)) = streams.iter().find(|(_, l)| l.is_some())
            && self.turn.listen_udp.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "turn.listen_{name} needs turn.listen_udp (the service runs on both)"
            )));
        }
        if self.turn.tls_cert.is_some() != self.turn.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "turn.tls_cert and turn.tls_key go together".into(),
            ));
        }
        if self.turn.listen_tls.is_some() && self.turn_tls_files().is_none() {
            return Err(ConfigError::Invalid(
                "turn.listen_tls needs a certificate: turn.tls_cert and turn.tls_key \
                 (--turn-tls-cert, --turn-tls-key), or the HTTPS tls_cert and tls_key"
                    .into(),
            ));
        }
        if self.turn.listen_udp.is_some() && self.turn.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "the TURN service needs a TURN key (its credentials are the only way in)".into(),
            ));
        }
        if let Some(u) = self
            .turn
            .urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(ConfigError::Invalid(format!(
                "TURN URL {u:?}: must start with turn: or turns:"
            )));
        }
        if self.tokens.iter().any(|t| t.token.len() < 8) {
            return Err(ConfigError::Invalid(
                "tokens must be at least 8 characters".into(),
            ));
        }
        if self
            .apps
            .iter()
            .any(|a| a.secret.len() < 16 || a.id.is_empty())
        {
            return Err(ConfigError::Invalid(
                "app secrets must be at least 16 characters".into(),
            ));
        }
        let quotable = |v: &str| !v.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        for server in &self.ice_servers {
            let fields = [
                Some(&server.url),
                server.username.as_ref(),
                server.credential.as_ref(),
            ];
            if !fields.into_iter().flatten().all(|v| quotable(v)) || server.url.contains('>') {
                return Err(ConfigError::Invalid(format!(
                    "ICE server {:?}: values may not contain quotes, backslashes, '>' or control characters",
                    server.url
                )));
            }
        }
        if let Some(c) = &self.cluster {
            c.validate().map_err(ConfigError::Invalid)?;
        }
        if let Some(e) = &self.telemetry.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "otlp_endpoint must be an http:// or https:// URL, not {e:?}"
            )));
        }
        if !(100..=3_600_000).contains(&self.telemetry.otlp_interval_ms) {
            return Err(ConfigError::Invalid(
                "otlp_interval_ms must be between 100 and 3600000".into(),
            ));
        }
        if self.recording.as_ref().is_some_and(|r| r.segment_secs == 0) {
            return Err(ConfigError::Invalid(
                "recording segment_secs must be at least 1".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// Media worker threads to start: `workers`, or one per available core when 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// Anonymous publishing: explicit setting, else allowed only when no publish token exists.
    pub fn anonymous_publish(&self) -> bool {
        self.allow_anonymous_publish
            .unwrap_or_else(|| self.tokens.iter().all(|t| t.publish.is_empty()))
    }

    /// Anonymous playing: explicit setting, else allowed only when no play token exists.
    pub fn anonymous_play(&self) -> bool {
        self.allow_anonymous_play
            .unwrap_or_else(|| self.tokens.iter().all(|t| t.play.is_empty()))
    }
}

mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d)
            .and_then(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_ready_for_a_laptop() {
        let c = Config::load(Cli::default()).expect("defaults load");
        assert_eq!(c.http_listen.port(), 8080);
        assert_eq!(c.udp_listen.port(), 8189);
        assert!(c.anonymous_publish() && c.anonymous_play());
    }

    #[test]
    fn a_publish_token_turns_anonymous_publishing_off_but_not_playing() {
        let cli = Cli {
            publish_tokens: vec!["secret-token".into()],
            ..Cli::default()
        };
        let c = Config::load(cli).expect("loads");
        assert!(!c.anonymous_publish());
        assert!(c.anonymous_play());
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "http_listen = \"127.0.0.1:9000\"\nidle_timeout = 3\n[[tokens]]\ntoken = \"abcdefghij\"\nplay = [\"x\"]\n",
        )
        .expect("write");
        let cli = Cli {
            config: Some(path),
            udp_listen: Some("127.0.0.1:9001".parse().expect("addr")),
            ..Cli::default()
        };
        let c = Config::load(cli).expect("loads");
        assert_eq!(c.http_listen.port(), 9000);
        assert_eq!(c.udp_listen.port(), 9001);
        assert_eq!(c.idle_timeout, Duration::from_secs(3));
        assert!(!c.anonymous_play());
    }

    #[test]
    fn recording_from_file_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "[recording]\ndir = \"/rec\"\nstreams = [\"cam-*\"]\n",
        )
        .expect("write");
        let cli = Cli {
            config: Some(path),
            record: vec!["studio".into()],
            ..Cli::default()
        };
        let r = Config::load(cli)
            .expect("loads")
            .recording
            .expect("recording");
        assert_eq!(r.dir, PathBuf::from("/rec"));
        assert_eq!(r.streams, vec!["cam-*".to_string(), "studio".into()]);
        assert_eq!(r.segment_secs, 3600);
        assert!(
            Config::load(Cli::default())
                .expect("loads")
                .recording
                .is_none()
        );
        let cli = Cli {
            record: vec!["*".into()],
            ..Cli::default()
        };
        assert!(Config::load(cli).is_err(), "--record without --record-dir");
    }

    #[test]
    fn unknown_keys_and_short_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "htp_listen = 1\n").expect("write");
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        assert!(matches!(Config::load(cli), Err(ConfigError::Toml { .. })));
        let cli = Cli {
            publish_tokens: vec!["short".into()],
            ..Cli::default()
        };
        assert!(Config::load(cli).is_err());
    }

    #[test]
    fn the_viewer_repair_window_is_bounded() {
        let window = |ms| {
            Config::load(Cli {
                viewer_repair_window_ms: Some(ms),
                ..Cli::default()
            })
            .map(|c| c.viewer_repair_window)
        };
        assert_eq!(
            Config::load(Cli::default())
                .expect("defaults")
                .viewer_repair_window,
            Duration::from_secs(1)
        );
        assert_eq!(window(3000).expect("3 s"), Duration::from_secs(3));
        assert!(matches!(window(50), Err(ConfigError::Invalid(_))));
        assert!(matches!(window(60_000), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn turn_over_tls_takes_its_own_certificate_or_the_https_one() {
        let turn = |cli: Cli| {
            Config::load(Cli {
                turn_keys: vec!["k1:turn-key-secret-0123456789".into()],
                turn_listen: Some("127.0.0.1:3478".parse().expect("addr")),
                turn_listen_tls: Some("127.0.0.1:5349".parse().expect("addr")),
                ..cli
            })
        };
        let err = turn(Cli::default()).expect_err("TLS without a certificate");
        assert!(err.to_string().contains("needs a certificate"), "{err}");
        let https = turn(Cli {
            tls_cert: Some("/https.pem".into()),
            tls_key: Some("/https.key".into()),
            ..Cli::default()
        })
        .expect("the HTTPS certificate");
        assert_eq!(
            https.turn_tls_files(),
            Some((Path::new("/https.pem"), Path::new("/https.key")))
        );
        let own = turn(Cli {
            tls_cert: Some("/https.pem".into()),
            tls_key: Some("/https.key".into()),
            turn_tls_cert: Some("/turn.pem".into()),
            turn_tls_key: Some("/turn.key".into()),
            ..Cli::default()
        })
        .expect("its own certificate");
        assert_eq!(
            own.turn_tls_files(),
            Some((Path::new("/turn.pem"), Path::new("/turn.key")))
        );
        let no_udp = Config::load(Cli {
            turn_keys: vec!["k1:turn-key-secret-0123456789".into()],
            turn_listen_tls: Some("127.0.0.1:5349".parse().expect("addr")),
            turn_tls_cert: Some("/turn.pem".into()),
            turn_tls_key: Some("/turn.key".into()),
            ..Cli::default()
        });
        assert!(matches!(no_udp, Err(ConfigError::Invalid(e)) if e.contains("listen_udp")));
    }
}
