//! Edge relays: a WHEP viewer who asks this node for a room hosted on
//! another node is served here, from a relay of the room's media. One relay
//! per room and node, however many viewers: the hosting node sends each
//! track once to this node, with every simulcast layer, and layers are
//! chosen here per viewer.
//!
//! This module is the relay's control side (tokio): it opens the relay
//! (the worker makes the offer, this POSTs it as a WHEP request to the
//! hosting node), and a supervisor keeps it matched to the room: a relay
//! that ended (no viewer left, the hosting node died) is closed upstream,
//! and re-opened while the edge room still has viewers, toward wherever
//! the room is now (which may be this node, which then hosts it).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use signaling::auth::VideoGrant;
use signaling::backend::BackendError;
use signaling::KeySet;
use tokio_util::sync::CancellationToken;

use super::front::FORWARDED;
use super::{Cluster, Intent, Links, Location};
use crate::backend::{new_resource_id, SfuBackend};
use crate::metrics::Metrics;
use crate::worker::core::relay::OpenRelay;

/// How often the supervisor looks at the relays.
const SUPERVISE: Duration = Duration::from_secs(1);
/// Longest wait for the hosting node to answer a relay's offer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the token a relay presents upstream.
const RELAY_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// One open relay.
#[derive(Debug, Clone)]
struct Relay {
    /// The relay participant here.
    resource_id: String,
    /// The relay's WHEP resource on the hosting node (for DELETE).
    upstream: Option<String>,
    token: String,
    /// The streams last asked for upstream (None: not yet, so all flow).
    asked: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    backend: SfuBackend,
    keys: KeySet,
    /// API key the relay tokens are signed with (every node has the same keys).
    key: String,
    /// Address relay sockets bind and advertise.
    relay_ip: IpAddr,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Per room: the relay, behind a lock that serialises opening it.
    relays: DashMap<String, Arc<tokio::sync::Mutex<Option<Relay>>>>,
}

impl Edge {
    pub fn start(links: Links, shutdown: CancellationToken) -> Edge {
        let edge = Edge {
            inner: Arc::new(Inner {
                cluster: links.cluster,
                backend: links.backend,
                metrics: links.metrics,
                keys: links.keys,
                key: links.key,
                relay_ip: links.ip,
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default(),
                relays: DashMap::new(),
            }),
        };
        tokio::spawn(edge.clone().supervise(shutdown));
        edge
    }

    /// Make sure `room`, hosted on node `owner` at `owner_url`, is relayed here.
    pub async fn ensure(
        &self,
        room: &str,
        owner: &str,
        owner_url: &str,
    ) -> Result<(), BackendError> {
        let slot = self
            .inner
            .relays
            .entry(room.to_string())
            .or_default()
            .clone();
        let mut relay = slot.lock().await;
        if let Some(r) = relay.as_ref() {
            if self
                .inner
                .backend
                .registry()
                .resource(&r.resource_id)
                .is_some()
            {
                return Ok(());
            }
        }
        let opened = self.open(room, owner, owner_url).await?;
        *relay = Some(opened);
        Ok(())
    }

    async fn open(&self, room: &str, owner: &str, owner_url: &str) -> Result<Relay, BackendError> {
        let inner = &self.inner;
        let socket = UdpSocket::bind(SocketAddr::new(inner.relay_ip, 0))
            .map_err(|e| BackendError::Internal(format!("relay socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| BackendError::Internal(format!("relay socket: {e}")))?;
        let resource_id = new_resource_id();
        let identity = format!("relay:{owner}");
        let offer = inner
            .backend
            .open_relay(
                OpenRelay {
                    room: room.to_string(),
                    local,
                    resource_id: resource_id.clone(),
                    identity: identity.clone(),
                    fanout_of: None,
                },
                socket,
            )
            .await?;
        inner.backend.registry().set_edge(room, true);
        let grant = VideoGrant {
            room: Some(room.to_string()),
            room_join: true,
            can_publish: Some(false),
            can_subscribe: Some(true),
            ..Default::default()
        };
        let token = inner
            .keys
            .mint(&inner.key, &identity, grant, RELAY_TOKEN_TTL)
            .map_err(|e| BackendError::Internal(format!("relay token: {e}")))?;
        let mut relay = Relay {
            resource_id,
            upstream: None,
            token,
            asked: None,
        };
        match self.post_offer(room, owner_url, &relay.token, offer).await {
            Ok((answer, upstream)) => {
                relay.upstream = upstream;
                let events = match &relay.upstream {
                    Some(url) => UpstreamEvents::open(&inner.http, url).await,
                    None => None,
                };
                // With events, the relay's tracks wait for the upstream's
                // `active`: the upstream session receives nothing before this
                // side applies its answer (below), and the stream never opens
                // with `inactive` (the extension forbids it). Without events,
                // media is taken to flow.
                let active = events.is_none();
                inner
                    .backend
                    .answer_relay(&relay.resource_id, answer, None, active)
                    .await?;
                if let Some(events) = events {
                    tokio::spawn(events.forward(inner.backend.clone(), relay.resource_id.clone()));
                }
                tracing::info!(%room, %owner, %local, "relaying the room from its node");
                Ok(relay)
            }
            Err(e) => {
                let _ = inner.backend.close_relay(&relay.resource_id).await;
                Err(e)
            }
        }
    }

    /// POST the relay's offer to the hosting node's WHEP endpoint; its
    /// answer and the upstream resource URL.
    async fn post_offer(
        &self,
        room: &str,
        owner_url: &str,
        token: &str,
        offer: String,
    ) -> Result<(String, Option<String>), BackendError> {
        let mut headers = axum::http::HeaderMap::new();
        signaling::request_span::inject_context(&tracing::Span::current(), &mut headers);
        let sent = self
            .inner
            .http
            .post(format!("{owner_url}/whep/{room}"))
            .headers(headers)
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .header(FORWARDED, self.inner.cluster.node_id())
            .body(offer)
            .send();
        let upstream_error = |what: String| {
            tracing::warn!(%room, %owner_url, error = %what, "relay: hosting node refused");
            BackendError::Internal(format!(
                "the node hosting room {room} did not accept the relay: {what}"
            ))
        };
        let answer = match tokio::time::timeout(UPSTREAM_TIMEOUT, sent).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(upstream_error(e.to_string())),
            Err(_) => return Err(upstream_error("timed out".into())),
        };
        let status = answer.status();
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| format!("{owner_url}{l}"));
        let body = answer.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            return Err(upstream_error(format!("{status}: {}", body.trim())));
        }
        Ok((body, location))
    }

    /// Close relays that ended upstream, and re-open those whose room
    /// still has viewers here.
    async fn supervise(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SUPERVISE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let rooms: Vec<String> = self.inner.relays.iter().map(|e| e.key().clone()).collect();
            let mut alive = 0;
            for room in rooms {
                alive += i64::from(self.supervise_room(&room).await);
            }
            self.inner.metrics.cluster_relays.set(alive);
        }
        // Tell the hosting nodes, so they do not wait for a timeout.
        let rooms: Vec<String> = self.inner.relays.iter().map(|e| e.key().clone()).collect();
        for room in rooms {
            if let Some((_, slot)) = self.inner.relays.remove(&room) {
                if let Some(r) = slot.lock().await.take() {
                    self.delete_upstream(&r).await;
                }
            }
        }
    }

    /// Look after `room`'s relay; true when it runs.
    async fn supervise_room(&self, room: &str) -> bool {
        let Some(slot) = self.inner.relays.get(room).map(|e| e.clone()) else {
            return false;
        };
        let mut relay = slot.lock().await;
        let registry = self.inner.backend.registry();
        if let Some(r) = relay.as_mut() {
            if registry.resource(&r.resource_id).is_some() {
                self.ask_for_wanted(r).await;
                return true;
            }
        }
        if let Some(ended) = relay.take() {
            self.delete_upstream(&ended).await;
        }
        if registry.room_worker(room).is_none() {
            // Nobody here any more: forget the room.
            drop(relay);
            self.inner.relays.remove(room);
            return false;
        }
        // Viewers are waiting: find the room's node again.
        // The edge's own room does not count: `locate` skips edges.
        match self.inner.cluster.locate(room, Intent::Create).await {
            Ok(Location::Here) => {
                tracing::info!(%room, "relay: the room is now hosted here");
                registry.set_edge(room, false);
                drop(relay);
                self.inner.relays.remove(room);
            }
            Ok(Location::Node { id, http_url }) => match self.open(room, &id, &http_url).await {
                Ok(r) => {
                    *relay = Some(r);
                    return true;
                }
                Err(e) => tracing::debug!(%room, error = %e, "relay: re-open failed; retrying"),
            },
            Err(e) => tracing::debug!(%room, error = ?e, "relay: cannot locate the room; retrying"),
        }
        false
    }

    /// Tell the hosting node which streams this node's viewers can use, so
    /// the relay carries only those.
    async fn ask_for_wanted(&self, relay: &mut Relay) {
        let registry = self.inner.backend.registry();
        let (Some(wanted), Some(url)) =
            (registry.relay_wanted(&relay.resource_id), &relay.upstream)
        else {
            return;
        };
        if relay.asked.as_ref() == Some(&wanted) {
            return;
        }
        let sent = self
            .inner
            .http
            .post(format!("{url}/layers"))
            .bearer_auth(&relay.token)
            .header(FORWARDED, self.inner.cluster.node_id())
            .json(&serde_json::json!({ "rids": wanted }))
            .send();
        match tokio::time::timeout(Duration::from_secs(2), sent).await {
            Ok(Ok(answer)) if answer.status().is_success() => {
                tracing::debug!(resource = %relay.resource_id, ?wanted, "relay: asked for the streams viewers use");
                relay.asked = Some(wanted);
            }
            Ok(Ok(answer)) => {
                tracing::debug!(status = %answer.status(), "relay: layer wish refused");
            }
            _ => tracing::debug!("relay: layer wish not delivered; retrying"),
        }
    }

    async fn delete_upstream(&self, relay: &Relay) {
        let Some(url) = &relay.upstream else {
            return;
        };
        let sent = self
            .inner
            .http
            .delete(url)
            .bearer_auth(&relay.token)
            .header(FORWARDED, self.inner.cluster.node_id())
            .send();
        let _ = tokio::time::timeout(Duration::from_secs(2), sent).await;
    }
}

/// The upstream WHEP session's server-sent events (`active`/`inactive`):
/// the relay's tracks here follow them, so this node's viewers see the
/// publisher leave and return as the hosting node's viewers do.
struct UpstreamEvents {
    response: reqwest::Response,
    buf: String,
}

impl UpstreamEvents {
    /// Subscribe to the events of upstream session `url` (None: the
    /// hosting node does not offer them): create a stream of `active` and
    /// `inactive` (the WHEP server-sent events extension), then read it.
    async fn open(http: &reqwest::Client, url: &str) -> Option<UpstreamEvents> {
        let created = http
            .post(format!("{url}/sse"))
            .header("content-type", "application/json")
            .body(r#"["active","inactive"]"#)
            .send();
        let created = tokio::time::timeout(UPSTREAM_TIMEOUT, created)
            .await
            .ok()?
            .ok()?;
        let location = created
            .headers()
            .get(reqwest::header::LOCATION)?
            .to_str()
            .ok()?;
        let stream_url = reqwest::Url::parse(url).ok()?.join(location).ok()?;
        let sent = http.get(stream_url).send();
        let response = tokio::time::timeout(UPSTREAM_TIMEOUT, sent)
            .await
            .ok()?
            .ok()?;
        response.status().is_success().then(|| UpstreamEvents {
            response,
            buf: String::new(),
        })
    }

    /// The next event: Some(true) for `active`, Some(false) for `inactive`;
    /// None when the stream ended (the upstream session did) or broke.
    async fn next(&mut self) -> Option<bool> {
        loop {
            while let Some(end) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=end).collect();
                match line.trim_end().strip_prefix("event:").map(str::trim) {
                    Some("active") => return Some(true),
                    Some("inactive") => return Some(false),
                    _ => {}
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Pass every later event to relay `resource_id` until either ends.
    async fn forward(mut self, backend: SfuBackend, resource_id: String) {
        while let Some(active) = self.next().await {
            if backend.relay_upstream(&resource_id, active).await.is_err() {
                break;
            }
        }
    }
}
