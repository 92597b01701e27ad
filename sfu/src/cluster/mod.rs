//! Cluster membership on Redis: this node's registration (heartbeat with a
//! TTL, load, draining flag), and room placement shared by every node.
//!
//! Redis holds two kinds of keys: `sfu:node:{id}` (a node's [`NodeInfo`],
//! expiring [`NODE_TTL`] after its last heartbeat) and `sfu:room:{name}`
//! (the id of the node hosting the room). Placement is one Lua script, so
//! nodes racing for a new room agree on one answer; a placement whose node
//! no longer has a registration (it died) is replaced on the next request.
//!
//! Nothing on the media path touches Redis. A room already hosted here is
//! served without asking it, so sessions in progress continue while Redis
//! is down; only requests that need a placement fail (503, Retry-After).

pub mod bridge;
pub mod edge;
pub mod front;
pub mod node;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use signaling::backend::BackendError;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, ForwardMode};
use crate::metrics::Metrics;
use crate::registry::Registry;
pub use node::{choose_node, NodeInfo, NodeLoad};

/// What this node's links to other nodes' rooms need (relays for viewers,
/// bridges for meetings): the cluster, the media side, the keys to mint
/// the links' tokens with, and the address their sockets bind.
#[derive(Clone)]
pub struct Links {
    pub cluster: Cluster,
    pub backend: crate::backend::SfuBackend,
    pub metrics: Arc<Metrics>,
    pub keys: signaling::KeySet,
    /// API key the links' tokens are signed with (every node has the same keys).
    pub key: String,
    /// Address link sockets bind and advertise.
    pub ip: std::net::IpAddr,
}

/// How often a node renews its registration.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose registration is this old is dead: its rooms are re-placed.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// Longest wait for one Redis command before the request fails.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1500);
/// Retry-After when Redis cannot be reached.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a node list read from Redis is reused for placements.
const NODES_CACHE: Duration = Duration::from_secs(1);

const NODE_PREFIX: &str = "sfu:node:";
const ROOM_PREFIX: &str = "sfu:room:";

/// The placement of a room, atomically: an existing placement on a live
/// node stands; otherwise the candidate (ARGV[1]) takes the room.
const PLACE_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";
/// The node of a placed room, if that node is alive.
const LOOKUP_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[1] .. cur) == 1 then return cur end
return false
";
/// Remove a placement only if it is still this node's.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Where requests about a room are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Here,
    Node { id: String, http_url: String },
}

/// What a request needs: a placement (a new session may create the room)
/// or only to find an existing room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Create,
    Existing,
}

/// This node's handle on the cluster (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    http_url: String,
    region: Option<String>,
    forward: ForwardMode,
    media: Vec<String>,
    redis: ConnectionManager,
    registry: Arc<Registry>,
    nodes: std::sync::Mutex<Option<(Instant, Vec<NodeInfo>)>>,
    place: redis::Script,
    lookup: redis::Script,
    release: redis::Script,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("bad node registration in Redis: {0}")]
    BadRegistration(#[from] serde_json::Error),
    #[error("no node can take new rooms (all draining)")]
    NoNode,
    #[error("the room's node {0:?} is not registered")]
    OwnerUnregistered(String),
}

impl From<ClusterError> for BackendError {
    fn from(e: ClusterError) -> Self {
        tracing::warn!(error = %e, "cluster placement failed");
        match e {
            ClusterError::NoNode => BackendError::Draining {
                retry_after: UNAVAILABLE_RETRY_AFTER,
            },
            ClusterError::OwnerUnregistered(node) => BackendError::RoomNodeUnregistered {
                node,
                retry_after: UNAVAILABLE_RETRY_AFTER,
            },
            _ => BackendError::ClusterUnavailable {
                retry_after: UNAVAILABLE_RETRY_AFTER,
            },
        }
    }
}

async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout(REDIS_TIMEOUT)),
    }
}

impl Cluster {
    /// Join the cluster: the Redis connection is made lazily (the node
    /// starts while Redis is down and registers once it is back), and the
    /// heartbeat runs until `shutdown`, then deregisters.
    pub fn start(
        config: &ClusterConfig,
        node_id: &str,
        http_url: String,
        media: Vec<String>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                id: node_id.to_string(),
                http_url,
                region: config.region.clone(),
                forward: config.forward,
                media,
                redis,
                registry: registry.clone(),
                nodes: std::sync::Mutex::new(None),
                place: redis::Script::new(PLACE_SCRIPT),
                lookup: redis::Script::new(LOOKUP_SCRIPT),
                release: redis::Script::new(RELEASE_SCRIPT),
            }),
        };
        let (released_tx, released_rx) = tokio::sync::mpsc::unbounded_channel();
        registry.on_room_released(released_tx);
        tokio::spawn(cluster.clone().heartbeat(metrics, released_rx, shutdown));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.id
    }

    pub fn forward_mode(&self) -> ForwardMode {
        self.inner.forward
    }

    /// Whether WHIP/WHEP resource `id` lives on this node.
    pub fn hosts_resource(&self, id: &str) -> bool {
        self.inner.registry.resource(id).is_some()
    }

    /// Where `room` is hosted. A room hosted here is answered without
    /// Redis (an edge relaying another node's room is not hosted here).
    pub async fn locate(&self, room: &str, intent: Intent) -> Result<Location, BackendError> {
        let registry = &self.inner.registry;
        if registry.room_worker(room).is_some() && !registry.is_edge(room) {
            return Ok(Location::Here);
        }
        let owner = match intent {
            Intent::Existing => self.lookup(room).await?,
            Intent::Create => Some(self.place(room).await?),
        };
        match owner {
            // Not placed anywhere: this node answers (404 for a resource).
            None => Ok(Location::Here),
            Some(id) if id == self.inner.id => Ok(Location::Here),
            Some(id) => {
                let http_url = match self.node(&id).await? {
                    Some(n) => n.http_url,
                    None => return Err(ClusterError::OwnerUnregistered(id).into()),
                };
                Ok(Location::Node { id, http_url })
            }
        }
    }

    async fn lookup(&self, room: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.inner.redis.clone();
        let mut call = self.inner.lookup.key(room_key(room));
        call.arg(NODE_PREFIX);
        bounded(call.invoke_async(&mut conn)).await
    }

    async fn place(&self, room: &str) -> Result<String, ClusterError> {
        let nodes = self.nodes().await?;
        let candidate = choose_node(&nodes, self.inner.region.as_deref(), |n| {
            rand::random_range(0..n)
        })
        .map(|n| n.id.clone())
        .ok_or(ClusterError::NoNode)?;
        let mut conn = self.inner.redis.clone();
        let mut call = self.inner.place.key(room_key(room));
        call.arg(&candidate).arg(NODE_PREFIX);
        let owner: String = bounded(call.invoke_async(&mut conn)).await?;
        if owner == candidate {
            tracing::info!(%room, node = %owner, "room placed");
        }
        Ok(owner)
    }

    /// Every live node (cached for a second).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        if let Ok(cache) = self.inner.nodes.lock() {
            if let Some((at, nodes)) = cache.as_ref() {
                if at.elapsed() < NODES_CACHE {
                    return Ok(nodes.clone());
                }
            }
        }
        let mut conn = self.inner.redis.clone();
        let keys: Vec<String> = bounded(async {
            let mut keys = Vec::new();
            let mut iter = conn
                .scan_match::<_, String>(format!("{NODE_PREFIX}*"))
                .await?;
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
            Ok(keys)
        })
        .await?;
        let mut nodes = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            let mut conn = self.inner.redis.clone();
            let values: Vec<Option<String>> = bounded(conn.mget(&keys)).await?;
            for v in values.into_iter().flatten() {
                nodes.push(serde_json::from_str::<NodeInfo>(&v)?);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        if let Ok(mut cache) = self.inner.nodes.lock() {
            *cache = Some((Instant::now(), nodes.clone()));
        }
        Ok(nodes)
    }

    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        if let Some(n) = self.nodes().await?.into_iter().find(|n| n.id == id) {
            return Ok(Some(n));
        }
        let mut conn = self.inner.redis.clone();
        let v: Option<String> = bounded(conn.get(format!("{NODE_PREFIX}{id}"))).await?;
        Ok(v.map(|v| serde_json::from_str(&v)).transpose()?)
    }

    fn info(&self, load: NodeLoad) -> NodeInfo {
        NodeInfo {
            id: self.inner.id.clone(),
            http_url: self.inner.http_url.clone(),
            media: self.inner.media.clone(),
            region: self.inner.region.clone(),
            draining: self.inner.registry.is_draining(),
            load,
        }
    }

    async fn register(&self, load: NodeLoad) -> Result<(), ClusterError> {
        let json = serde_json::to_string(&self.info(load))?;
        let mut conn = self.inner.redis.clone();
        let ttl = NODE_TTL.as_millis() as u64;
        bounded(conn.pset_ex::<_, _, ()>(format!("{NODE_PREFIX}{}", self.inner.id), json, ttl))
            .await
    }

    /// Claim, where unclaimed, the rooms hosted here: after Redis lost its
    /// data (restarted without persistence) another node must not be given
    /// a room that lives on this one.
    async fn reassert_rooms(&self) -> Result<(), ClusterError> {
        let rooms = self.inner.registry.room_names();
        if rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.cmd("SET")
                .arg(room_key(room))
                .arg(&self.inner.id)
                .arg("NX")
                .ignore();
        }
        let mut conn = self.inner.redis.clone();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn release(&self, room: &str) -> Result<(), ClusterError> {
        let mut conn = self.inner.redis.clone();
        let mut call = self.inner.release.key(room_key(room));
        call.arg(&self.inner.id);
        bounded(call.invoke_async::<i64>(&mut conn)).await.map(drop)
    }

    /// Register every [`HEARTBEAT`], release rooms that ended here, and
    /// deregister at shutdown. Failures are logged and retried: the node
    /// keeps serving its rooms while Redis is away.
    async fn heartbeat(
        self,
        metrics: Arc<Metrics>,
        mut released: tokio::sync::mpsc::UnboundedReceiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut load = LoadSampler::new();
        let mut tick = tokio::time::interval(HEARTBEAT);
        let mut healthy = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let sample = load.sample(&self.inner.registry, &metrics);
                    let registered = match self.register(sample).await {
                        Ok(()) => self.reassert_rooms().await,
                        Err(e) => Err(e),
                    };
                    match registered {
                        Ok(()) if !healthy => {
                            tracing::info!("cluster: Redis reachable again, node registered");
                            healthy = true;
                        }
                        Ok(()) => {}
                        Err(e) if healthy => {
                            tracing::warn!(error = %e, "cluster: cannot register in Redis; running sessions continue");
                            healthy = false;
                        }
                        Err(_) => {}
                    }
                }
                Some(room) = released.recv() => {
                    if let Err(e) = self.release(&room).await {
                        tracing::debug!(%room, error = %e, "cluster: room placement not released");
                    }
                }
            }
        }
        let mut conn = self.inner.redis.clone();
        let key = format!("{NODE_PREFIX}{}", self.inner.id);
        match bounded(conn.del::<_, i64>(key)).await {
            Ok(_) => tracing::info!("cluster: node deregistered"),
            Err(e) => tracing::warn!(error = %e, "cluster: could not deregister (the TTL will)"),
        }
    }
}

fn room_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// Turns counters into the rates a registration reports.
struct LoadSampler {
    last: Instant,
    cpu_ticks: Option<u64>,
    bytes_sent: u64,
}

impl LoadSampler {
    fn new() -> Self {
        LoadSampler {
            last: Instant::now(),
            cpu_ticks: process_cpu_ticks(),
            bytes_sent: 0,
        }
    }

    fn sample(&mut self, registry: &Registry, metrics: &Metrics) -> NodeLoad {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(0.001);
        self.last = now;
        let ticks = process_cpu_ticks();
        let cpu = match (ticks, self.cpu_ticks) {
            // Linux reports CPU time in clock ticks of 1/100 s.
            (Some(t), Some(before)) => t.saturating_sub(before) as f64 / 100.0 / secs,
            _ => 0.0,
        };
        self.cpu_ticks = ticks;
        let bytes = metrics.bytes_sent.get();
        let egress_bps = (bytes.saturating_sub(self.bytes_sent) as f64 * 8.0 / secs) as u64;
        self.bytes_sent = bytes;
        NodeLoad {
            rooms: registry.room_count(),
            participants: usize::try_from(metrics.rtc_instances.get()).unwrap_or(0),
            cpu,
            egress_bps,
        }
    }
}

/// utime + stime of this process from `/proc/self/stat` (None off Linux).
/// Read here rather than from the Prometheus process collector, whose
/// `process_cpu_seconds_total` counts whole seconds: too coarse for a CPU
/// share over a 2 s heartbeat.
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_on_an_unregistered_node_is_not_called_draining() {
        let e = BackendError::from(ClusterError::OwnerUnregistered("n2".into()));
        let text = e.to_string();
        assert!(
            text.contains("\"n2\"") && text.contains("not registered"),
            "{text}"
        );
        assert!(!text.contains("shutting down"), "{text}");
        let status = signaling::errors::ApiError::Backend(e).status();
        assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn process_cpu_time_follows_work_done() {
        let before = process_cpu_ticks().expect("/proc/self/stat on Linux");
        // Busy work until 20 ticks (200 ms of CPU) are counted, bounded by
        // 5 s of wall time: a busy machine gives this thread less than a
        // core, so a fixed wall time would not be a fixed amount of work.
        let end = Instant::now() + Duration::from_secs(5);
        let mut after = before;
        let mut x = 0u64;
        while after - before < 20 && Instant::now() < end {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            after = process_cpu_ticks().expect("/proc/self/stat on Linux");
        }
        assert!(
            after - before >= 20,
            "{before} -> {after} ticks in 5 s of busy work"
        );
    }
}
