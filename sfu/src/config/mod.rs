//! Server configuration: one struct, filled from (lowest to highest
//! precedence) built-in defaults, a TOML file (`--config`), `SFU_*`
//! environment variables and command-line flags.
//!
//! clap resolves flag-over-environment for every option; the file fills in
//! whatever neither set. [`Config::validate`] rejects unsafe or inconsistent
//! settings with a message that names the offending key.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signaling::{IceServer, TurnAuth};

mod args;
mod validate;
pub use args::ConfigArgs;

/// The development API key pair, usable only on loopback.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";
/// Participants of a room on its worker from which its new viewers spread
/// to other workers: a relay sends every layer (about 1.3 times a top-layer
/// viewer's packets) and is received once more on the other worker.
pub const DEFAULT_SPREAD_VIEWERS_AT: usize = 50;

/// The resolved configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub media_addr: IpAddr,
    pub media_port: u16,
    pub public_ip: Option<IpAddr>,
    /// Ports advertised instead of the bound ones (one worker only).
    pub public_media_port: Option<u16>,
    pub public_ice_tcp_port: Option<u16>,
    /// Asked for the public IP at start-up when `public_ip` is not set.
    pub stun_server: Option<String>,
    pub ice_tcp: bool,
    pub ice_tcp_port: u16,
    pub udp_batch: bool,
    pub workers: usize,
    pub spread_viewers_at: usize,
    #[serde(serialize_with = "redact_keys")]
    pub api_keys: BTreeMap<String, String>,
    pub session_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_tracks_per_participant: usize,
    pub max_sessions_per_identity: usize,
    pub reconnect_grace: Duration,
    /// How long a draining server lets its rooms run (see `sfu::Stop`).
    pub drain_grace: Duration,
    pub webhook_urls: Vec<String>,
    pub max_body_bytes: usize,
    /// (requests per second, burst) per client address; None: no limit.
    pub http_rate_limit: Option<(f64, f64)>,
    pub log: String,
    /// The `node` label of every metric.
    pub node_id: String,
    /// OTLP collector receiving traces (None: the standard variables decide).
    pub otlp_endpoint: Option<String>,
    /// Cluster membership (None: a single node, no Redis).
    pub cluster: Option<ClusterConfig>,
    pub ice_servers: Vec<IceServer>,
    /// TURN servers with per-session credentials (None: not configured).
    #[serde(serialize_with = "redact_turn")]
    pub turn: Option<TurnAuth>,
}

fn redact_keys<S: serde::Serializer>(
    keys: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let redacted: BTreeMap<&str, &str> = keys.keys().map(|k| (k.as_str(), "<redacted>")).collect();
    redacted.serialize(s)
}

fn redact_turn<S: serde::Serializer>(turn: &Option<TurnAuth>, s: S) -> Result<S::Ok, S::Error> {
    turn.as_ref()
        .map(|t| (t.urls.clone(), "<redacted>", t.ttl_secs))
        .serialize(s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// TURN settings: URLs and a secret go together.
fn turn_auth(
    urls: Vec<String>,
    secret: Option<String>,
    ttl_secs: u64,
) -> Result<Option<TurnAuth>, ConfigError> {
    match (urls.is_empty(), secret) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(invalid(
            "turn_urls",
            "--turn-secret needs at least one --turn-url",
        )),
        (false, None) => Err(invalid("turn_secret", "--turn-url needs --turn-secret")),
        (false, Some(secret)) => {
            if secret.is_empty() {
                return Err(invalid("turn_secret", "must not be empty"));
            }
            if let Some(bad) = urls
                .iter()
                .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
            {
                return Err(invalid(
                    "turn_urls",
                    format!("{bad:?} is not a turn: or turns: URL"),
                ));
            }
            if !(60..=7 * 86_400).contains(&ttl_secs) {
                return Err(invalid("turn_ttl_secs", "must be between 60 and 604800"));
            }
            Ok(Some(TurnAuth {
                urls,
                secret,
                ttl_secs,
            }))
        }
    }
}

/// How a request for a room hosted on another node is passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// This node forwards the request and relays the answer.
    #[default]
    Proxy,
    /// 307 Temporary Redirect to the hosting node (RFC 9725 allows it).
    /// Generic HTTP clients (browsers' fetch, curl) drop `Authorization`
    /// on a redirect to another origin, so only clients that resend the
    /// token work with it.
    Redirect,
}

/// Settings of a node in a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    #[serde(serialize_with = "redact_url_password")]
    pub redis_url: String,
    /// Base URL of this node's HTTP for other nodes and redirected clients
    /// (None: `http://` and the bound HTTP address).
    pub http_url: Option<String>,
    pub region: Option<String>,
    pub forward: ForwardMode,
    /// Serve WHEP viewers of other nodes' rooms from a relay.
    pub relay: bool,
    /// Address relay sockets bind and advertise (None: see `relay_ip`).
    pub relay_addr: Option<IpAddr>,
}

/// A Redis URL with its password replaced, for `--print-config`.
fn redact_url_password<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            s.serialize_str(&format!("{}://***{}", &url[..scheme], &url[at..]))
        }
        _ => s.serialize_str(url),
    }
}

/// The host name (a pod's name in Kubernetes), or "sfu".
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sfu".into())
}

impl Config {
    /// Resolve flags/environment (`args`) over the file (`file`) over defaults.
    pub fn resolve(args: ConfigArgs, file: ConfigArgs) -> Result<Config, ConfigError> {
        let mut api_keys = file.api_keys;
        match (args.api_key, args.api_secret) {
            (Some(k), Some(s)) => {
                api_keys.insert(k, s);
            }
            (None, None) => {}
            (Some(_), None) => return Err(invalid("api_secret", "--api-key needs --api-secret")),
            (None, Some(_)) => return Err(invalid("api_key", "--api-secret needs --api-key")),
        }
        if api_keys.is_empty() {
            api_keys.insert(DEV_API_KEY.into(), DEV_API_SECRET.into());
        }
        let workers = args.workers.or(file.workers).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let config = Config {
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))),
            media_addr: args
                .media_addr
                .or(file.media_addr)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            media_port: args.media_port.or(file.media_port).unwrap_or(0),
            public_ip: args.public_ip.or(file.public_ip),
            public_media_port: args.public_media_port.or(file.public_media_port),
            public_ice_tcp_port: args.public_ice_tcp_port.or(file.public_ice_tcp_port),
            stun_server: args.stun_server.or(file.stun_server),
            ice_tcp: args.ice_tcp.or(file.ice_tcp).unwrap_or(true),
            ice_tcp_port: args.ice_tcp_port.or(file.ice_tcp_port).unwrap_or(0),
            udp_batch: args.udp_batch.or(file.udp_batch).unwrap_or(true),
            workers,
            spread_viewers_at: args
                .spread_viewers_at
                .or(file.spread_viewers_at)
                .unwrap_or(DEFAULT_SPREAD_VIEWERS_AT),
            api_keys,
            session_timeout: Duration::from_secs(
                args.session_timeout_secs
                    .or(file.session_timeout_secs)
                    .unwrap_or(30),
            ),
            connect_timeout: Duration::from_secs(
                args.connect_timeout_secs
                    .or(file.connect_timeout_secs)
                    .unwrap_or(20),
            ),
            max_rooms: args.max_rooms.or(file.max_rooms).unwrap_or(1000),
            max_participants_per_room: args
                .max_participants_per_room
                .or(file.max_participants_per_room)
                .unwrap_or(500),
            max_tracks_per_participant: args
                .max_tracks_per_participant
                .or(file.max_tracks_per_participant)
                .unwrap_or(8),
            max_sessions_per_identity: args
                .max_sessions_per_identity
                .or(file.max_sessions_per_identity)
                .unwrap_or(0),
            reconnect_grace: Duration::from_secs(
                args.reconnect_grace_secs
                    .or(file.reconnect_grace_secs)
                    .unwrap_or(20),
            ),
            drain_grace: Duration::from_secs(
                args.drain_grace_secs
                    .or(file.drain_grace_secs)
                    .unwrap_or(30),
            ),
            webhook_urls: if args.webhook_urls.is_empty() {
                file.webhook_urls
            } else {
                args.webhook_urls
            },
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(64 * 1024),
            http_rate_limit: {
                let rate = args
                    .http_rate_limit
                    .or(file.http_rate_limit)
                    .unwrap_or(20.0);
                let burst = args
                    .http_rate_burst
                    .or(file.http_rate_burst)
                    .unwrap_or(40.0);
                (rate != 0.0).then_some((rate, burst))
            },
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint),
            node_id: args
                .node_id
                .or(file.node_id)
                .unwrap_or_else(default_node_id),
            cluster: args
                .redis_url
                .or(file.redis_url)
                .map(|redis_url| ClusterConfig {
                    redis_url,
                    http_url: args
                        .advertise_http_url
                        .or(file.advertise_http_url)
                        .map(|u| u.trim_end_matches('/').to_string()),
                    region: args.region.or(file.region),
                    forward: args
                        .cluster_forward
                        .or(file.cluster_forward)
                        .unwrap_or_default(),
                    relay: args.cluster_relay.or(file.cluster_relay).unwrap_or(true),
                    relay_addr: args.relay_addr.or(file.relay_addr),
                }),
            ice_servers: if args.ice_servers.is_empty() {
                file.ice_servers
            } else {
                args.ice_servers
            },
            turn: turn_auth(
                if args.turn_urls.is_empty() {
                    file.turn_urls
                } else {
                    args.turn_urls
                },
                args.turn_secret.or(file.turn_secret),
                args.turn_ttl_secs.or(file.turn_ttl_secs).unwrap_or(86_400),
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    /// True when the development key pair is among the accepted keys.
    pub fn uses_dev_credentials(&self) -> bool {
        self.api_keys.get(DEV_API_KEY).map(String::as_str) == Some(DEV_API_SECRET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_dev() -> Result<(), ConfigError> {
        let c = Config::resolve(ConfigArgs::default(), ConfigArgs::default())?;
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.uses_dev_credentials());
        Ok(())
    }

    #[test]
    fn flags_override_file() -> Result<(), Box<dyn std::error::Error>> {
        let file: ConfigArgs = toml::from_str(
            "http_addr = \"127.0.0.1:9000\"\nworkers = 3\n[api_keys]\nk1 = \"s1\"\n",
        )?;
        let args = ConfigArgs {
            workers: Some(1),
            ..Default::default()
        };
        let c = Config::resolve(args, file)?;
        assert_eq!(c.http_addr.port(), 9000);
        assert_eq!(c.workers, 1);
        assert!(!c.uses_dev_credentials());
        Ok(())
    }

    #[test]
    fn refuses_public_bind_with_dev_credentials() {
        let args = ConfigArgs {
            http_addr: Some(
                "0.0.0.0:8080"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0; 4], 0))),
            ),
            ..Default::default()
        };
        let err = Config::resolve(args, ConfigArgs::default()).err();
        assert!(matches!(
            err,
            Some(ConfigError::Invalid {
                key: "http_addr",
                ..
            })
        ));
    }

    #[test]
    fn public_port_needs_one_worker() {
        let args = |workers| ConfigArgs {
            workers: Some(workers),
            public_media_port: Some(30001),
            ..Default::default()
        };
        assert!(Config::resolve(args(1), ConfigArgs::default()).is_ok());
        let err = Config::resolve(args(2), ConfigArgs::default()).err();
        assert!(matches!(
            err,
            Some(ConfigError::Invalid {
                key: "public_media_port",
                ..
            })
        ));
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = toml::from_str::<ConfigArgs>("http_adr = \"x\"").err();
        assert!(err.is_some_and(|e| e.to_string().contains("http_adr")));
    }
}
