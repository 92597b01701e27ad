//! The cluster's front door: every node accepts every request. One about a
//! room hosted on another node is redirected there (307, which RFC 9725
//! allows for WHIP and WHEP) or proxied, as configured; WebSockets are
//! always proxied (browsers do not follow redirects on them). The room
//! listing (`GET /api/rooms`) answers for the whole cluster.
//!
//! This is an axum middleware around the single-node router: a request
//! about a room hosted here goes on unchanged. A forwarded request carries
//! [`FORWARDED`], and the node receiving it serves it itself, so a
//! placement changing mid-flight cannot make requests loop.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use signaling::errors::ApiError;
use signaling::rtc_socket::READ_CHUNK_BYTES;
use signaling::KeySet;
use tokio_tungstenite::tungstenite;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::bridge::Bridges;
use super::edge::Edge;
use super::{Cluster, Intent, Location};
use crate::backend::SfuBackend;
use crate::config::ForwardMode;
use crate::metrics::Metrics;

/// Marks a request forwarded by another node (its value: that node's id).
pub const FORWARDED: &str = "x-sfu-forwarded";
/// On every answer: the id of the node that produced it (a proxied answer
/// keeps the hosting node's), so operators and tests see who served.
pub const SERVED_BY: &str = "x-sfu-node";
/// Longest wait for another node to answer a forwarded request's head.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// What the middleware needs: the cluster, the keys (to read the room from
/// a room-protocol token) and an HTTP client for proxying.
#[derive(Clone)]
pub struct ClusterFront {
    pub cluster: Cluster,
    /// Serves WHEP viewers of other nodes' rooms from a relay (None: they
    /// are passed on to the room's node like any request).
    pub edge: Option<Edge>,
    /// Serves conference participants of other nodes' rooms in a satellite
    /// bridged to the room (None: their sockets are proxied to its node).
    pub bridges: Option<Bridges>,
    /// This node's media side (relays' layer wishes).
    pub backend: SfuBackend,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<KeySet>,
    pub http: reqwest::Client,
    pub max_body_bytes: usize,
}

impl ClusterFront {
    pub fn new(
        cluster: Cluster,
        edge: Option<Edge>,
        bridges: Option<Bridges>,
        backend: SfuBackend,
        metrics: Arc<Metrics>,
        keys: KeySet,
        max_body_bytes: usize,
    ) -> Self {
        ClusterFront {
            cluster,
            edge,
            bridges,
            backend,
            metrics,
            keys: Arc::new(keys),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            max_body_bytes,
        }
    }
}

/// What a request is about, as far as placement goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Room(String, Intent),
    /// A WHEP viewer's POST: may be served here from a relay.
    Viewer(String),
    /// `POST /whep/{room}/{id}/layers`: the node relaying WHEP session `id`
    /// says which of its streams its viewers can use.
    RelayLayers {
        id: String,
    },
    /// A WHIP/WHEP resource (PATCH, DELETE, events): where it lives.
    Resource {
        room: String,
        id: String,
    },
    /// A room signalling socket (`/rtc`, LiveKit's `/rtc/v1`): its room is
    /// in its token.
    RoomSocket,
    /// The room listing: gathered from every node.
    AllRooms,
    /// Anything else (web client, metrics, health): served here.
    Local,
}

/// What a request's path is about.
fn target(method: &Method, path: &str) -> Target {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["whep", room] if method == Method::POST => Target::Viewer(room.to_string()),
        ["whip", room] if method == Method::POST => Target::Room(room.to_string(), Intent::Create),
        ["whep", _, id, "layers"] if method == Method::POST => {
            Target::RelayLayers { id: id.to_string() }
        }
        ["whip" | "whep", room, id, ..] => Target::Resource {
            room: room.to_string(),
            id: id.to_string(),
        },
        ["api", "rooms"] if method == Method::GET => Target::AllRooms,
        ["api", "rooms", room, ..] => Target::Room(room.to_string(), Intent::Existing),
        ["rtc"] | ["rtc", "v1"] => Target::RoomSocket,
        _ => Target::Local,
    }
}

/// `/rtc?access_token=...` (or `Authorization: Bearer`, as LiveKit's Go SDK
/// sends it): the room is in the token. A token that does not verify is
/// left to the local handler (`Target::Local`), which says what is wrong
/// with it. `resume=` (room protocol) and `reconnect=1` (LiveKit) come back
/// to a room that exists.
fn rtc_target(query: &str, headers: &HeaderMap, keys: &KeySet) -> Target {
    let mut token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut resume = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("access_token", v)) => token = Some(v),
            Some(("resume", _)) | Some(("reconnect", "1" | "true")) => resume = true,
            _ => {}
        }
    }
    let room = token
        .and_then(|t| keys.verify(t).ok())
        .and_then(|g| g.video.room);
    match room {
        // A resumed participant lives where its room already is.
        Some(room) if resume => Target::Room(room, Intent::Existing),
        Some(room) => Target::Room(room, Intent::Create),
        None => Target::Local,
    }
}

/// The middleware: serve here, or pass the request on to the room's node.
pub async fn route(State(front): State<ClusterFront>, req: Request, next: Next) -> Response {
    let mut resp = route_request(&front, req, next).await;
    if !resp.headers().contains_key(SERVED_BY) {
        if let Ok(v) = HeaderValue::from_str(front.cluster.node_id()) {
            resp.headers_mut().insert(SERVED_BY, v);
        }
    }
    resp
}

async fn route_request(front: &ClusterFront, req: Request, next: Next) -> Response {
    let forwarded = req.headers().contains_key(FORWARDED);
    match target(req.method(), req.uri().path()) {
        // Answered by this node whoever asks (an edge node sends it).
        Target::RelayLayers { id } => relay_layers(front, req, &id).await,
        // Forwarded by another node: serve it here (no loops).
        _ if forwarded => next.run(req).await,
        Target::Local => next.run(req).await,
        Target::AllRooms => list_all_rooms(front, req).await,
        Target::RoomSocket => {
            match rtc_target(req.uri().query().unwrap_or(""), req.headers(), &front.keys) {
                Target::Room(room, intent) => match &front.bridges {
                    Some(bridges) => serve_member(front, bridges, req, next, &room, intent).await,
                    None => to_room(front, req, next, &room, intent).await,
                },
                _ => next.run(req).await,
            }
        }
        Target::Resource { id, .. } if front.cluster.hosts_resource(&id) => next.run(req).await,
        Target::Resource { room, .. } => to_room(front, req, next, &room, Intent::Existing).await,
        Target::Viewer(room) => match &front.edge {
            Some(edge) => serve_viewer(front, edge, req, next, &room).await,
            None => to_room(front, req, next, &room, Intent::Create).await,
        },
        Target::Room(room, intent) => to_room(front, req, next, &room, intent).await,
    }
}

impl ClusterFront {
    fn count(&self, outcome: &str) {
        self.metrics
            .cluster_requests
            .with_label_values(&[outcome])
            .inc();
    }
}

/// Serve here when the room is hosted here, else pass the request on.
async fn to_room(
    front: &ClusterFront,
    req: Request,
    next: Next,
    room: &str,
    intent: Intent,
) -> Response {
    match front.cluster.locate(room, intent).await {
        Ok(Location::Here) => {
            front.count("here");
            next.run(req).await
        }
        Ok(Location::Node { id, http_url }) => {
            let span = tracing::info_span!("cluster forward", %room, to = %id);
            let _ = span.set_parent(signaling::request_span::parent_context(req.headers()));
            forward(front, req, &http_url).instrument(span).await
        }
        Err(e) => {
            front.count("unavailable");
            ApiError::Backend(e).into_response()
        }
    }
}

/// A WHEP viewer: served here, from a relay when the room is hosted on
/// another node (the relay's request continues the viewer's trace).
async fn serve_viewer(
    front: &ClusterFront,
    edge: &Edge,
    req: Request,
    next: Next,
    room: &str,
) -> Response {
    match front.cluster.locate(room, Intent::Create).await {
        Ok(Location::Here) => {
            front.count("here");
            next.run(req).await
        }
        Ok(Location::Node { id, http_url }) => {
            let span = tracing::info_span!("cluster relay", %room, from = %id);
            let _ = span.set_parent(signaling::request_span::parent_context(req.headers()));
            match edge.ensure(room, &id, &http_url).instrument(span).await {
                Ok(()) => {
                    front.count("relayed");
                    next.run(req).await
                }
                Err(e) => ApiError::Backend(e).into_response(),
            }
        }
        Err(e) => {
            front.count("unavailable");
            ApiError::Backend(e).into_response()
        }
    }
}

/// A conference participant: served here, in a satellite bridged to the
/// room when the room is hosted on another node. A room with a satellite
/// here is served here without asking Redis (joins and resumes).
async fn serve_member(
    front: &ClusterFront,
    bridges: &Bridges,
    req: Request,
    next: Next,
    room: &str,
    intent: Intent,
) -> Response {
    if bridges.bridges(room) {
        front.count("bridged");
        return next.run(req).await;
    }
    match front.cluster.locate(room, intent).await {
        Ok(Location::Here) => {
            front.count("here");
            next.run(req).await
        }
        Ok(Location::Node { id, http_url }) => {
            let span = tracing::info_span!("cluster bridge", %room, to = %id);
            let _ = span.set_parent(signaling::request_span::parent_context(req.headers()));
            match bridges.ensure(room, &id, &http_url).instrument(span).await {
                Ok(()) => {
                    front.count("bridged");
                    next.run(req).await
                }
                Err(e) => ApiError::Backend(e).into_response(),
            }
        }
        Err(e) => {
            front.count("unavailable");
            ApiError::Backend(e).into_response()
        }
    }
}

/// What an edge sends: the relay's streams its viewers can use.
#[derive(Debug, serde::Deserialize)]
struct RelayWish {
    rids: Vec<String>,
}

/// Apply an edge's wish to relay `id` (authorised by the relay's own token).
async fn relay_layers(front: &ClusterFront, req: Request, id: &str) -> Response {
    let identity =
        match signaling::sessions::bearer(req.headers()).and_then(|t| front.keys.verify(t)) {
            Ok(grant) => grant.identity,
            Err(e) => return ApiError::Auth(e).into_response(),
        };
    let body = match axum::body::to_bytes(req.into_body(), 4096).await {
        Ok(b) => b,
        Err(_) => return ApiError::BadRequest("layer wish too large".into()).into_response(),
    };
    let wish: RelayWish = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return ApiError::BadRequest(format!("expected {{\"rids\": [...]}}: {e}"))
                .into_response()
        }
    };
    match front.backend.relay_layers(id, &identity, wish.rids).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::Backend(e).into_response(),
    }
}

fn is_websocket(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn forward(front: &ClusterFront, req: Request, base: &str) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("{base}{path_and_query}");
    if is_websocket(&req) {
        front.count("proxied");
        return proxy_websocket(front, req, &url).await;
    }
    match front.cluster.forward_mode() {
        ForwardMode::Redirect => {
            front.count("redirected");
            tracing::debug!(%url, "redirecting to the room's node");
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&url) {
                h.insert(header::LOCATION, v);
            }
            // A browser follows a cross-origin redirect only if it may read it.
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("location"),
            );
            resp
        }
        ForwardMode::Proxy => {
            front.count("proxied");
            proxy_http(front, req, &url).await
        }
    }
}

fn bad_gateway(what: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %what, "forwarding to another node failed");
    (
        StatusCode::BAD_GATEWAY,
        format!("the node hosting this room did not answer: {what}\n"),
    )
        .into_response()
}

/// Headers that describe one hop, not the request.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Headers for the next hop: the request's own, this node's mark, and the
/// current span's trace context.
fn onward_headers(front: &ClusterFront, from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in from.iter().filter(|(k, _)| !hop_by_hop(k)) {
        headers.append(k.clone(), v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(front.cluster.node_id()) {
        headers.insert(FORWARDED, v);
    }
    signaling::request_span::inject_context(&tracing::Span::current(), &mut headers);
    headers
}

async fn proxy_http(front: &ClusterFront, req: Request, url: &str) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, front.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
        }
    };
    let sent = front
        .http
        .request(parts.method.clone(), url)
        .headers(onward_headers(front, &parts.headers))
        .body(body)
        .send();
    let answer = match tokio::time::timeout(FORWARD_TIMEOUT, sent).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return bad_gateway(e),
        Err(_) => return bad_gateway("timed out"),
    };
    let mut resp = Response::builder().status(answer.status());
    for (k, v) in answer.headers().iter().filter(|(k, _)| !hop_by_hop(k)) {
        resp = resp.header(k, v);
    }
    // Streamed: the WHEP event stream stays open as long as the session.
    resp.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(bad_gateway)
}

async fn proxy_websocket(front: &ClusterFront, req: Request, url: &str) -> Response {
    let (mut parts, _) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u.read_buffer_size(READ_CHUNK_BYTES),
        Err(e) => return e.into_response(),
    };
    let ws_url = url.replacen("http", "ws", 1);
    let mut onward = match tungstenite::client::IntoClientRequest::into_client_request(&ws_url) {
        Ok(r) => r,
        Err(e) => return bad_gateway(e),
    };
    let headers = onward_headers(front, &HeaderMap::new());
    onward.headers_mut().extend(headers);
    let config =
        tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_CHUNK_BYTES);
    let connected = tokio::time::timeout(
        FORWARD_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(onward, Some(config), false),
    );
    let upstream = match connected.await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tungstenite::Error::Http(answer))) => {
            // The other node refused the join: pass its status and reason on.
            let status = answer.status();
            let body = answer.into_body().unwrap_or_default();
            return (status, body).into_response();
        }
        Ok(Err(e)) => return bad_gateway(e),
        Err(_) => return bad_gateway("timed out"),
    };
    let span = tracing::Span::current();
    upgrade.on_upgrade(move |client| pump(client, upstream).instrument(span))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Shuttle messages both ways until either side closes.
async fn pump(client: WebSocket, upstream: Upstream) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let to_upstream = async {
        while let Some(Ok(m)) = client_rx.next().await {
            let m = match m {
                Message::Text(t) => tungstenite::Message::text(t.as_str()),
                Message::Binary(b) => tungstenite::Message::binary(b),
                Message::Close(frame) => {
                    let frame = frame.map(|f| tungstenite::protocol::CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = up_tx.send(tungstenite::Message::Close(frame)).await;
                    break;
                }
                // Each hop answers its own pings.
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if up_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    let to_client = async {
        while let Some(Ok(m)) = up_rx.next().await {
            let m = match m {
                tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
                tungstenite::Message::Binary(b) => Message::Binary(b),
                tungstenite::Message::Close(frame) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = client_tx.send(Message::Close(frame)).await;
                    break;
                }
                _ => continue,
            };
            if client_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    // Either direction ending ends the session: the other node's socket
    // closing (its room ended, it died) closes the client's, which makes
    // our web client reconnect.
    tokio::select! {
        _ = to_upstream => {}
        _ = to_client => {}
    }
}

/// `GET /api/rooms` on every live node, merged; each room names its node.
async fn list_all_rooms(front: &ClusterFront, req: Request) -> Response {
    let nodes = match front.cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return ApiError::Backend(e.into()).into_response(),
    };
    let headers = onward_headers(front, req.headers());
    let mut rooms = Vec::new();
    for node in nodes {
        let url = format!("{}/api/rooms", node.http_url);
        let asked = front.http.get(&url).headers(headers.clone()).send();
        let answer = match tokio::time::timeout(FORWARD_TIMEOUT, asked).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::warn!(node = %node.id, error = %e, "room listing: node did not answer");
                continue;
            }
            Err(_) => continue,
        };
        if !answer.status().is_success() {
            // Authorization is the same on every node: the first refusal is the answer.
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            return (status, body).into_response();
        }
        let Ok(listing) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        if let Some(list) = listing.get("rooms").and_then(|r| r.as_array()) {
            for room in list {
                let mut room = room.clone();
                if let Some(obj) = room.as_object_mut() {
                    obj.insert("node".into(), node.id.clone().into());
                }
                rooms.push(room);
            }
        }
    }
    axum::Json(serde_json::json!({ "rooms": rooms })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_room_and_what_they_need() {
        let keys = KeySet::new([("k".to_string(), "s".to_string())]);
        let t = |m: Method, p: &str| target(&m, p);
        assert_eq!(t(Method::POST, "/whep/show"), Target::Viewer("show".into()));
        assert_eq!(
            t(Method::POST, "/whip/show"),
            Target::Room("show".into(), Intent::Create)
        );
        let resource = Target::Resource {
            room: "show".into(),
            id: "abc".into(),
        };
        assert_eq!(t(Method::PATCH, "/whip/show/abc"), resource);
        assert_eq!(t(Method::GET, "/whep/show/abc/events"), resource);
        assert_eq!(t(Method::GET, "/api/rooms"), Target::AllRooms);
        assert_eq!(
            t(Method::DELETE, "/api/rooms/show"),
            Target::Room("show".into(), Intent::Existing)
        );
        assert_eq!(t(Method::GET, "/metrics"), Target::Local);
        assert_eq!(t(Method::GET, "/rtc"), Target::RoomSocket);
        assert_eq!(t(Method::GET, "/rtc/v1"), Target::RoomSocket);
        assert_eq!(t(Method::GET, "/rtc/v1/validate"), Target::Local);
        let none = HeaderMap::new();
        assert_eq!(
            rtc_target("", &none, &keys),
            Target::Local,
            "no token: local error"
        );
        assert_eq!(
            rtc_target("access_token=forged", &none, &keys),
            Target::Local
        );
        let grant = signaling::auth::VideoGrant {
            room: Some("meet".into()),
            room_join: true,
            ..Default::default()
        };
        let token = keys
            .mint("k", "ann", grant, Duration::from_secs(60))
            .expect("token");
        assert_eq!(
            rtc_target(&format!("access_token={token}"), &none, &keys),
            Target::Room("meet".into(), Intent::Create)
        );
        assert_eq!(
            rtc_target(&format!("access_token={token}&resume=x"), &none, &keys),
            Target::Room("meet".into(), Intent::Existing),
            "a resumed participant is looked up, not placed"
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        assert_eq!(
            rtc_target("reconnect=1&sid=PA_x", &bearer, &keys),
            Target::Room("meet".into(), Intent::Existing),
            "LiveKit's resume, token in the header"
        );
    }
}
