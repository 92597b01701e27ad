//! The options as the `serve` flags, the environment and the TOML file
//! give them: every field optional, resolved into [`super::Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use signaling::IceServer;

use super::{ConfigError, ForwardMode};

/// Options shared by the `serve` flags and the TOML file. Every field is
/// optional here; [`Config`] holds the resolved values.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigArgs {
    /// HTTP listen address (WHIP, WHEP, web client, /metrics). [default: 127.0.0.1:8080]
    #[arg(long, env = "SFU_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// IP address the media UDP sockets bind to. [default: 127.0.0.1]
    #[arg(long, env = "SFU_MEDIA_ADDR")]
    pub media_addr: Option<IpAddr>,

    /// First UDP port; worker N binds port+N. 0 picks free ports. [default: 0]
    #[arg(long, env = "SFU_MEDIA_PORT")]
    pub media_port: Option<u16>,

    /// Address advertised in ICE candidates instead of the bind address (1:1 NAT, cloud VMs).
    #[arg(long, env = "SFU_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// UDP port advertised in ICE candidates instead of the bound one, when a port mapping (a Kubernetes NodePort) is in the way. Needs --workers 1.
    #[arg(long, env = "SFU_PUBLIC_MEDIA_PORT")]
    pub public_media_port: Option<u16>,

    /// ICE-TCP port advertised instead of the bound one (as --public-media-port). Needs --workers 1.
    #[arg(long, env = "SFU_PUBLIC_ICE_TCP_PORT")]
    pub public_ice_tcp_port: Option<u16>,

    /// STUN server (host:port) asked at start-up for the public IP when --public-ip is not set.
    #[arg(long, env = "SFU_STUN_SERVER")]
    pub stun_server: Option<String>,

    /// Offer ICE over TCP (passive candidates) next to UDP, for clients whose UDP is blocked. [default: true]
    #[arg(long, env = "SFU_ICE_TCP")]
    pub ice_tcp: Option<bool>,

    /// First ICE-TCP port; worker N listens on port+N. 0 picks free ports. [default: 0]
    #[arg(long, env = "SFU_ICE_TCP_PORT")]
    pub ice_tcp_port: Option<u16>,

    /// Send each wake-up's datagrams in batches: many destinations per
    /// `sendmmsg` call, and runs to one peer as one segmentation-offload
    /// (GSO) send where the kernel has it. false: one call per datagram. [default: true]
    #[arg(long, env = "SFU_UDP_BATCH")]
    pub udp_batch: Option<bool>,

    /// Number of media worker threads. [default: number of CPU cores]
    #[arg(long, env = "SFU_WORKERS")]
    pub workers: Option<usize>,

    /// A room lives on one worker; once it has this many participants
    /// there, its new WHEP viewers go to the least-loaded worker (when that
    /// one carries fewer), fed by one relay per worker. 0: never. [default: 50]
    #[arg(long, env = "SFU_SPREAD_VIEWERS_AT")]
    pub spread_viewers_at: Option<usize>,

    /// API key accepted for tokens (with --api-secret). [default: devkey, loopback only]
    #[arg(long, env = "SFU_API_KEY")]
    #[serde(skip)]
    pub api_key: Option<String>,

    /// Secret of --api-key.
    #[arg(long, env = "SFU_API_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub api_secret: Option<String>,

    /// A session without any received traffic for this long is removed (ICE consent). [default: 30]
    #[arg(long, env = "SFU_SESSION_TIMEOUT_SECS")]
    pub session_timeout_secs: Option<u64>,

    /// A session must connect (ICE and DTLS) within this many seconds of its offer. [default: 20]
    #[arg(long, env = "SFU_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<u64>,

    /// Most rooms this server hosts at once (503 above). [default: 1000]
    #[arg(long, env = "SFU_MAX_ROOMS")]
    pub max_rooms: Option<usize>,

    /// Most participants (publishers and viewers) per room (503 above). [default: 500]
    #[arg(long, env = "SFU_MAX_PARTICIPANTS_PER_ROOM")]
    pub max_participants_per_room: Option<usize>,

    /// Most tracks one conference participant publishes. [default: 8]
    #[arg(long, env = "SFU_MAX_TRACKS_PER_PARTICIPANT")]
    pub max_tracks_per_participant: Option<usize>,

    /// WHIP/WHEP sessions one identity may hold in a room (429 above); 0: no limit, for viewer links that share one token. [default: 0]
    #[arg(long, env = "SFU_MAX_SESSIONS_PER_IDENTITY")]
    pub max_sessions_per_identity: Option<usize>,

    /// At SIGTERM, take no new rooms and let the rooms here end for up to this many seconds before closing them. [default: 30]
    #[arg(long, env = "SFU_DRAIN_GRACE_SECS")]
    pub drain_grace_secs: Option<u64>,

    /// A conference participant whose WebSocket dropped is kept this long for it to resume. [default: 20]
    #[arg(long, env = "SFU_RECONNECT_GRACE_SECS")]
    pub reconnect_grace_secs: Option<u64>,

    /// URL that receives signed webhooks (room/participant/track events); repeatable.
    #[arg(long = "webhook-url", env = "SFU_WEBHOOK_URLS", value_delimiter = ',')]
    #[serde(default)]
    pub webhook_urls: Vec<String>,

    /// HTTP requests per second allowed to one client address (429 with Retry-After above); 0 turns the limit off. [default: 20]
    #[arg(long, env = "SFU_HTTP_RATE_LIMIT")]
    pub http_rate_limit: Option<f64>,

    /// Requests one client address may send at once above --http-rate-limit. [default: 40]
    #[arg(long, env = "SFU_HTTP_RATE_BURST")]
    pub http_rate_burst: Option<f64>,

    /// Largest HTTP request body in bytes (413 above). [default: 65536]
    #[arg(long, env = "SFU_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Export traces over OTLP HTTP/protobuf to this collector (http://host:4318); the standard OTEL_EXPORTER_OTLP_* variables work too. [default: off]
    #[arg(long, env = "SFU_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// This server's name in a fleet: the `node` label of every metric. [default: the host name]
    #[arg(long, env = "SFU_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis holding the cluster's nodes and room placements (redis://host:6379/0). [default: none: a single node]
    #[arg(long, env = "SFU_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Base URL other nodes and redirected clients use for this node's HTTP (cluster only). [default: http://<http_addr>]
    #[arg(long, env = "SFU_ADVERTISE_HTTP_URL")]
    pub advertise_http_url: Option<String>,

    /// Region label: new rooms prefer nodes of the requesting node's region (cluster only). [default: none]
    #[arg(long, env = "SFU_REGION")]
    pub region: Option<String>,

    /// How a request for a room hosted elsewhere is passed on: `proxy`, or `redirect` (307; for WHIP/WHEP clients that resend their token to the other node, which browsers' fetch and curl do not across origins). WebSockets are always proxied. [default: proxy]
    #[arg(long, env = "SFU_CLUSTER_FORWARD")]
    pub cluster_forward: Option<ForwardMode>,

    /// Address this node's relays bind and advertise to other nodes (its pod IP in Kubernetes). [default: media_addr, or the public IP when media_addr is a wildcard]
    #[arg(long, env = "SFU_RELAY_ADDR")]
    pub relay_addr: Option<IpAddr>,

    /// WHEP viewers of a room hosted on another node are served here from one node-to-node relay per room (false: passed on like other requests). [default: true]
    #[arg(long, env = "SFU_CLUSTER_RELAY")]
    pub cluster_relay: Option<bool>,

    /// Log filter (tracing EnvFilter syntax). [default: info]
    #[arg(long, env = "SFU_LOG")]
    pub log: Option<String>,

    /// API key -> secret table (file only: `[api_keys]`). Several keys allow rotation.
    #[arg(skip)]
    #[serde(default)]
    pub api_keys: BTreeMap<String, String>,

    /// STUN/TURN servers announced to clients (file only: `[[ice_servers]]`).
    #[arg(skip)]
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,

    /// TURN server URL handed out with per-session credentials (turn:host:3478?transport=udp); repeatable. Needs --turn-secret.
    #[arg(long = "turn-url", env = "SFU_TURN_URLS", value_delimiter = ',')]
    #[serde(default)]
    pub turn_urls: Vec<String>,

    /// Secret shared with the TURN server (coturn: use-auth-secret, static-auth-secret).
    #[arg(long, env = "SFU_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// How long a TURN credential is valid. [default: 86400]
    #[arg(long, env = "SFU_TURN_TTL_SECS")]
    pub turn_ttl_secs: Option<u64>,
}

impl ConfigArgs {
    /// Read a TOML file into the same shape as the flags.
    pub fn from_file(path: &std::path::Path) -> Result<ConfigArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}
