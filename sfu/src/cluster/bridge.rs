//! Bridges, the control side (tokio): a conference participant who asks
//! this node for a room hosted on another joins a satellite of the room
//! here, and the satellite is linked to the room by one bridge, however
//! many of the room's participants are here (see
//! [`crate::worker::core::bridge`] for what a bridge does).
//!
//! A bridge is a room-protocol socket to the hosting node, authorised by a
//! `room_bridge` token the nodes mint for each other, plus its own UDP
//! socket for media. This module opens it, shuttles messages between that
//! socket and the satellite's worker, and re-opens it while the satellite
//! still has participants (the hosting node died and the room moved).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use signaling::auth::VideoGrant;
use signaling::backend::BackendError;
use signaling::room_protocol::{ClientMessage, ServerMessage};
use signaling::KeySet;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use super::front::FORWARDED;
use super::{Cluster, Intent, Links, Location};
use crate::backend::{new_resource_id, SfuBackend};
use crate::metrics::Metrics;
use crate::worker::core::bridge::OpenBridge;

/// How often the supervisor looks at the bridges.
const SUPERVISE: Duration = Duration::from_secs(1);
/// Longest wait for the hosting node to take the bridge's socket.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the token a bridge presents upstream.
const BRIDGE_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Messages queued toward the hosting node.
const UPSTREAM_QUEUE: usize = 1024;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone)]
pub struct Bridges {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    backend: SfuBackend,
    keys: KeySet,
    /// API key the bridge tokens are signed with (every node has the same keys).
    key: String,
    /// Address bridge sockets bind and advertise.
    bridge_ip: IpAddr,
    metrics: Arc<Metrics>,
    /// Per room: the bridge member's resource id, behind a lock that
    /// serialises opening it.
    bridges: DashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>,
}

impl Bridges {
    pub fn start(links: Links, shutdown: CancellationToken) -> Bridges {
        let bridges = Bridges {
            inner: Arc::new(Inner {
                cluster: links.cluster,
                backend: links.backend,
                keys: links.keys,
                key: links.key,
                bridge_ip: links.ip,
                metrics: links.metrics,
                bridges: DashMap::new(),
            }),
        };
        tokio::spawn(bridges.clone().supervise(shutdown));
        bridges
    }

    /// Make sure a satellite of `room` (hosted on node `owner` at
    /// `owner_url`) is here and bridged to it.
    pub async fn ensure(
        &self,
        room: &str,
        owner: &str,
        owner_url: &str,
    ) -> Result<(), BackendError> {
        let slot = self
            .inner
            .bridges
            .entry(room.to_string())
            .or_default()
            .clone();
        let mut bridge = slot.lock().await;
        let registry = self.inner.backend.registry();
        if bridge
            .as_ref()
            .is_some_and(|id| registry.resource(id).is_some())
        {
            return Ok(());
        }
        *bridge = Some(self.open(room, owner, owner_url).await?);
        Ok(())
    }

    /// Whether `room` is a satellite here (its participants resume here).
    pub fn bridges(&self, room: &str) -> bool {
        self.inner.bridges.contains_key(room)
            && self.inner.backend.registry().room_worker(room).is_some()
    }

    async fn open(&self, room: &str, owner: &str, owner_url: &str) -> Result<String, BackendError> {
        let inner = &self.inner;
        let identity = format!("bridge:{}", inner.cluster.node_id());
        let grant = VideoGrant {
            room: Some(room.to_string()),
            room_join: true,
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(false),
            room_bridge: true,
            ..Default::default()
        };
        let token = inner
            .keys
            .mint(&inner.key, &identity, grant, BRIDGE_TOKEN_TTL)
            .map_err(|e| BackendError::Internal(format!("bridge token: {e}")))?;
        let socket = self.connect(room, owner_url, &token).await?;
        let udp = UdpSocket::bind(SocketAddr::new(inner.bridge_ip, 0))
            .map_err(|e| BackendError::Internal(format!("bridge socket: {e}")))?;
        let local = udp
            .local_addr()
            .map_err(|e| BackendError::Internal(format!("bridge socket: {e}")))?;
        let resource_id = new_resource_id();
        let (upstream, outbound) = mpsc::channel(UPSTREAM_QUEUE);
        // The hosting node lists the room; here it is not a room of its own.
        let registry = inner.backend.registry();
        registry.set_edge(room, true);
        let opened = inner
            .backend
            .open_bridge(
                OpenBridge {
                    room: room.to_string(),
                    local,
                    resource_id: resource_id.clone(),
                    identity,
                    upstream,
                    fanout_of: None,
                    home_addr: None,
                },
                udp,
            )
            .await;
        if let Err(e) = opened {
            if registry.room_worker(room).is_none() {
                registry.set_edge(room, false);
            }
            return Err(e);
        }
        tokio::spawn(shuttle(
            socket,
            outbound,
            inner.backend.clone(),
            resource_id.clone(),
        ));
        tracing::info!(%room, %owner, %local, "bridged the room's participants here to its node");
        Ok(resource_id)
    }

    /// The bridge's room-protocol socket to the hosting node.
    async fn connect(
        &self,
        room: &str,
        owner_url: &str,
        token: &str,
    ) -> Result<Socket, BackendError> {
        let url = format!(
            "{}/rtc?access_token={token}",
            owner_url.replacen("http", "ws", 1)
        );
        let upstream_error = |what: String| {
            tracing::warn!(%room, %owner_url, error = %what, "bridge: hosting node refused");
            BackendError::Internal(format!(
                "the node hosting room {room} did not accept the bridge: {what}"
            ))
        };
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .map_err(|e| upstream_error(e.to_string()))?;
        let node = axum::http::HeaderValue::from_str(self.inner.cluster.node_id())
            .map_err(|e| upstream_error(e.to_string()))?;
        req.headers_mut().insert(FORWARDED, node);
        let mut headers = axum::http::HeaderMap::new();
        signaling::request_span::inject_context(&tracing::Span::current(), &mut headers);
        req.headers_mut().extend(headers);
        match tokio::time::timeout(UPSTREAM_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(e)) => Err(upstream_error(e.to_string())),
            Err(_) => Err(upstream_error("timed out".into())),
        }
    }

    /// Re-open bridges that ended while their satellite has participants;
    /// forget satellites that ended.
    async fn supervise(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SUPERVISE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let rooms: Vec<String> = self.inner.bridges.iter().map(|e| e.key().clone()).collect();
            let mut alive = 0;
            for room in rooms {
                alive += i64::from(self.supervise_room(&room).await);
            }
            self.inner.metrics.cluster_bridges.set(alive);
        }
    }

    /// Look after `room`'s bridge; true when it runs.
    async fn supervise_room(&self, room: &str) -> bool {
        let Some(slot) = self.inner.bridges.get(room).map(|e| e.clone()) else {
            return false;
        };
        let mut bridge = slot.lock().await;
        let registry = self.inner.backend.registry();
        if bridge
            .as_ref()
            .is_some_and(|id| registry.resource(id).is_some())
        {
            return true;
        }
        *bridge = None;
        if registry.room_worker(room).is_none() {
            drop(bridge);
            self.inner.bridges.remove(room);
            return false;
        }
        // Participants are waiting here: find the room's node again.
        match self.inner.cluster.locate(room, Intent::Create).await {
            Ok(Location::Node { id, http_url }) => match self.open(room, &id, &http_url).await {
                Ok(opened) => {
                    *bridge = Some(opened);
                    return true;
                }
                Err(e) => tracing::debug!(%room, error = %e, "bridge: re-open failed; retrying"),
            },
            Ok(Location::Here) => {
                tracing::info!(%room, "bridge: the room is now placed here");
                registry.set_edge(room, false);
                drop(bridge);
                self.inner.bridges.remove(room);
            }
            Err(e) => {
                tracing::debug!(%room, error = ?e, "bridge: cannot locate the room; retrying")
            }
        }
        false
    }
}

/// Carry messages between the hosting node's socket and the satellite's
/// worker until either ends; then the bridge closes here (its far
/// participants leave the satellite) and there (a `leave`).
async fn shuttle(
    socket: Socket,
    mut outbound: mpsc::Receiver<ClientMessage>,
    backend: SfuBackend,
    resource_id: String,
) {
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(tungstenite::Message::Text(t))) => t,
                    Some(Ok(tungstenite::Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(msg) => {
                        let last = msg.is_final();
                        if backend.bridge_inbound(&resource_id, msg).await.is_err() || last {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "bridge: unreadable message upstream"),
                }
            }
            out = outbound.recv() => {
                let Some(msg) = out else {
                    // The bridge ended here: say so upstream.
                    let leave = ClientMessage::Leave {};
                    if let Ok(text) = serde_json::to_string(&leave) {
                        let _ = tx.send(tungstenite::Message::text(text)).await;
                    }
                    let _ = tx.close().await;
                    return;
                };
                let Ok(text) = serde_json::to_string(&msg) else { continue };
                if tx.send(tungstenite::Message::text(text)).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = backend.close_bridge(&resource_id).await;
}
