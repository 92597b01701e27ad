//! The SFU media server: media workers that own str0m `Rtc`s, the sans-IO
//! forwarding core, configuration and metrics. [`run`] starts everything and
//! returns when `shutdown` is cancelled.

pub mod backend;
pub mod cluster;
pub mod config;
pub mod dtls;
pub mod forward;
pub mod metrics;
pub mod public_ip;
pub mod registry;
pub mod room;
pub mod telemetry;
pub mod webhooks;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use signaling::{FrontDoorConfig, KeySet};
use tokio_util::sync::CancellationToken;

use crate::backend::{FanoutSettings, SfuBackend};
use crate::cluster::bridge::Bridges;
use crate::cluster::edge::Edge;
use crate::cluster::front::ClusterFront;
use crate::cluster::Cluster;
use crate::cluster::Links;
use crate::config::{Config, DEV_API_KEY};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::worker::core::WorkerContext;
use crate::worker::{spawn_workers, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind HTTP listener on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot discover the public IP (set --public-ip instead): {0}")]
    PublicIp(#[from] public_ip::DiscoveryError),
    #[error("cannot start media workers: {0}")]
    Workers(std::io::Error),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A started server: where it listens.
#[derive(Debug, Clone)]
pub struct Started {
    pub http_addr: SocketAddr,
    pub media_addrs: Vec<SocketAddr>,
}

/// Webhooks are signed with the first configured API key.
fn webhook_sender(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Option<webhooks::Webhooks> {
    let (key, secret) = config.api_keys.iter().next()?;
    webhooks::start(
        config.webhook_urls.clone(),
        key.clone(),
        secret.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
}

/// How the server is asked to stop. `drain` (the first SIGTERM or Ctrl-C):
/// take no new rooms, report draining on `/healthz`, let the rooms here end
/// for up to the configured grace period, then stop. `shutdown`: stop now;
/// either way the sessions left are closed with a reason (room participants
/// are told the server is shutting down).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub drain: CancellationToken,
    pub shutdown: CancellationToken,
}

/// The address relay sockets (node-to-node media) bind and advertise: the
/// configured one, else the media bind address, or the advertised one when
/// that is a wildcard.
fn relay_ip(config: &Config, public_ip: Option<std::net::IpAddr>) -> std::net::IpAddr {
    if let Some(ip) = config.cluster.as_ref().and_then(|c| c.relay_addr) {
        ip
    } else if config.media_addr.is_unspecified() {
        public_ip.unwrap_or(config.media_addr)
    } else {
        config.media_addr
    }
}

/// Longest wait at shutdown for room sockets to send their last message.
const SOCKET_FLUSH: Duration = Duration::from_secs(2);

/// How often a draining server looks whether its rooms have ended.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// Start the server; `on_started` is told the bound addresses (tests use
/// port 0). Returns after `shutdown` is cancelled and everything stopped.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_started: impl FnOnce(Started),
) -> Result<(), RunError> {
    let stop = Stop {
        drain: CancellationToken::new(),
        shutdown,
    };
    run_until(config, stop, on_started).await
}

/// Wait for `stop.drain`, then drain (bounded by `grace`) and stop.
async fn drain_then_stop(registry: Arc<Registry>, grace: Duration, stop: Stop) {
    tokio::select! {
        _ = stop.drain.cancelled() => {}
        _ = stop.shutdown.cancelled() => return,
    }
    registry.start_draining();
    tracing::info!(
        rooms = registry.room_count(),
        grace_secs = grace.as_secs(),
        "draining: taking no new rooms, waiting for the rooms here to end (signal again to stop now)"
    );
    let deadline = tokio::time::Instant::now() + grace;
    while registry.room_count() > 0
        && tokio::time::Instant::now() < deadline
        && !stop.shutdown.is_cancelled()
    {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    tracing::info!(
        rooms_left = registry.room_count(),
        "drain over: closing the remaining sessions"
    );
    stop.shutdown.cancel();
}

/// [`run`] with a drain: see [`Stop`].
pub async fn run_until(
    config: Config,
    stop: Stop,
    on_started: impl FnOnce(Started),
) -> Result<(), RunError> {
    let shutdown = stop.shutdown.clone();
    let public_ip = match (config.public_ip, &config.stun_server) {
        (Some(ip), _) => Some(ip),
        (None, Some(server)) => {
            let ip = public_ip::discover(server, config.media_addr).await?;
            tracing::info!(%ip, stun_server = %server, "public IP discovered through STUN");
            Some(ip)
        }
        (None, None) => None,
    };
    let metrics = Arc::new(Metrics::new(&config.node_id)?);
    let registry = Arc::new(Registry::default());
    let context = WorkerContext {
        index: 0,
        advertised_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        advertised_tcp_addr: None,
        metrics: metrics.clone(),
        registry: registry.clone(),
        max_participants_per_room: config.max_participants_per_room,
        session_timeout: config.session_timeout,
        connect_timeout: config.connect_timeout,
        max_tracks_per_participant: config.max_tracks_per_participant,
        max_sessions_per_identity: config.max_sessions_per_identity,
        reconnect_grace: config.reconnect_grace,
        ice_servers: config.ice_servers.clone(),
        webhooks: webhook_sender(&config, &metrics, &shutdown),
        udp_batch: config.udp_batch,
    };
    let (workers, threads) = spawn_workers(
        WorkerSettings {
            count: config.workers,
            bind_ip: config.media_addr,
            first_port: config.media_port,
            public_ip,
            public_udp_port: config.public_media_port,
            public_tcp_port: config.public_ice_tcp_port,
            first_tcp_port: config.ice_tcp.then_some(config.ice_tcp_port),
            context,
        },
        shutdown.clone(),
    )
    .map_err(RunError::Workers)?;
    let media_addrs: Vec<SocketAddr> = workers.iter().map(|w| w.media_addr).collect();

    let flush_registry = registry.clone();
    tokio::spawn(drain_then_stop(
        registry.clone(),
        config.drain_grace,
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| RunError::HttpBind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(RunError::Http)?;
    let keys = KeySet::new(config.api_keys.clone());
    let cluster = match &config.cluster {
        Some(c) => {
            let http_url = c
                .http_url
                .clone()
                .unwrap_or_else(|| format!("http://{http_addr}"));
            let media = media_addrs.iter().map(ToString::to_string).collect();
            let cluster = Cluster::start(
                c,
                &config.node_id,
                http_url.clone(),
                media,
                registry.clone(),
                metrics.clone(),
                shutdown.clone(),
            )?;
            tracing::info!(node = %config.node_id, %http_url, forward = ?c.forward, "cluster member (Redis)");
            Some(cluster)
        }
        None => None,
    };
    let backend = SfuBackend::new(
        workers,
        registry,
        metrics.clone(),
        config.max_rooms,
        FanoutSettings {
            spread_viewers_at: config.spread_viewers_at,
            max_participants_per_room: config.max_participants_per_room,
            max_sessions_per_identity: config.max_sessions_per_identity,
        },
    );
    backend.start_fanout_supervisor(shutdown.clone());
    let front_door = FrontDoorConfig {
        keys: keys.clone(),
        dev_token_key: config
            .uses_dev_credentials()
            .then(|| DEV_API_KEY.to_string()),
        ice_servers: config.ice_servers.clone(),
        turn: config.turn.clone(),
        client_rate: config
            .http_rate_limit
            .map(|(per_second, burst)| signaling::rate_limit::ClientRate { per_second, burst }),
        max_body_bytes: config.max_body_bytes,
    };
    // Relays (viewers) and bridges (meetings) to other nodes' rooms.
    let links = match (&cluster, &config.cluster, config.api_keys.keys().next()) {
        (Some(cluster), Some(c), Some(key)) if c.relay => Some(Links {
            cluster: cluster.clone(),
            backend: backend.clone(),
            metrics: metrics.clone(),
            keys: keys.clone(),
            key: key.clone(),
            ip: relay_ip(&config, public_ip),
        }),
        _ => None,
    };
    let edge = links.clone().map(|l| Edge::start(l, shutdown.clone()));
    let bridges = links.map(|l| Bridges::start(l, shutdown.clone()));
    let mut app = signaling::router(front_door, backend.clone());
    if let Some(cluster) = cluster {
        let front = ClusterFront::new(
            cluster,
            edge,
            bridges,
            backend,
            metrics.clone(),
            keys,
            config.max_body_bytes,
        );
        app = app.layer(axum::middleware::from_fn_with_state(
            front,
            cluster::front::route,
        ));
    }
    tracing::info!(%http_addr, "HTTP listening (WHIP /whip/{{room}}, WHEP /whep/{{room}}, web client /)");
    on_started(Started {
        http_addr,
        media_addrs,
    });
    // The peer address feeds the per-client rate limit.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    for t in threads {
        let _ = t.join();
    }
    // The workers told room participants why they were removed; let the
    // sockets deliver that before the process exits (bounded).
    let flush_until = tokio::time::Instant::now() + SOCKET_FLUSH;
    while flush_registry.open_room_sockets() > 0 && tokio::time::Instant::now() < flush_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.map_err(RunError::Http)
}
