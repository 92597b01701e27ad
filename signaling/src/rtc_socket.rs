//! The nodes' bridge socket (`/rtc` without LiveKit's query): another
//! node's bridge, holding a `room_bridge` token, joins (or resumes) through
//! the [`MediaBackend`] and exchanges the room protocol's JSON messages
//! (`room_protocol`) with the room's worker. Clients speak LiveKit's
//! signalling (`livekit`); a client token here is refused with a `400` that
//! says so. `/rtc` with LiveKit's query goes to LiveKit's dual mode.
//!
//! This handler owns what is about the socket itself: message size and rate
//! limits, parsing with clear errors, `ping`, and telling the backend when
//! the socket goes away so the reconnect grace period can start.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;

use crate::auth::{AuthError, Permission};
use crate::backend::{BackendError, JoinRoom, MediaBackend, RoomConnection};
use crate::errors::ApiError;
use crate::rate_limit::RateLimit;
use crate::room_protocol::{parse_client_message, ClientMessage, ErrorCode, ServerMessage};
use crate::sessions::{bearer, validate_room};
use crate::AppState;

/// Largest client message (bytes of JSON). Offers set the size: a room
/// offer may carry up to 256 media lines, and an SDP media line is 1-3 KB
/// (a str0m offer for a 25-person meeting, 48 lines, is ~70 KB).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Sustained client messages per second, and the burst allowed above it.
pub const MESSAGES_PER_SECOND: f64 = 50.0;
pub const MESSAGE_BURST: f64 = 100.0;
/// A bridge's message allowance, in participants' allowances.
pub const BRIDGE_RATE_FACTOR: f64 = 20.0;
/// Longest identity accepted.
const MAX_IDENTITY: usize = 256;
/// Bytes read from the socket per call. tungstenite zero-fills this much of
/// its buffer before every read, including the reads that find nothing
/// (each time the loop below wakes to send): at its default of 128 KiB
/// that memset was a quarter of the signaling threads' CPU in a join storm
/// of 1,000 listeners. Bigger messages are read over several calls.
pub const READ_CHUNK_BYTES: usize = 8 * 1024;
/// Most queued server messages written before one flush (one TCP write for
/// a burst of room events instead of one per message).
const SEND_BATCH: usize = 64;

/// Why a client token is refused on the bridge socket.
pub const CLIENTS_SPEAK_LIVEKIT: &str = "this server's room signalling is LiveKit's: \
    connect to /rtc/v1?access_token=<token>&join_request=<base64url WrappedJoinRequest> \
    (or /rtc?access_token=<token>&protocol=<n>), as LiveKit's client SDKs do; \
    /rtc without LiveKit's query is the nodes' bridge protocol and needs a roomBridge grant";

#[derive(Debug, Deserialize)]
pub struct RtcQuery {
    access_token: Option<String>,
    resume: Option<String>,
    /// Sent by every LiveKit SDK on `/rtc` (its dual peer connection mode).
    protocol: Option<String>,
}

/// `GET /rtc`: check the token, join, upgrade.
pub async fn upgrade<B: MediaBackend>(
    State(state): State<AppState<B>>,
    query: Result<Query<RtcQuery>, axum::extract::rejection::QueryRejection>,
    Query(raw): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    if q.protocol.is_some() {
        // LiveKit's dual peer connection signalling.
        return crate::livekit::socket::upgrade_dual(state, &raw, &headers, ws).await;
    }
    let token = match q.access_token.as_deref() {
        Some(t) => t,
        None => bearer(&headers)?,
    };
    let req = admit(&state, token, q.resume)?;
    if !req.bridge {
        return Err(ApiError::BadRequest(CLIENTS_SPEAK_LIVEKIT.into()));
    }
    // Another node's bridge speaks for all of that node's participants.
    let rate = BRIDGE_RATE_FACTOR;
    let joined = match state.backend.join_room(req).await {
        Ok(conn) => Ok(conn),
        Err(BackendError::ResumeFailed) => Err(ServerMessage::error(
            ErrorCode::ResumeFailed,
            BackendError::ResumeFailed.to_string(),
        )),
        Err(e) => return Err(e.into()),
    };
    let backend = state.backend.clone();
    let (failed_backend, failed_id) = match &joined {
        Ok(c) => (
            Some(state.backend.clone()),
            Some((c.participant.clone(), c.generation)),
        ),
        Err(_) => (None, None),
    };
    let ws = ws
        // Our own limit answers oversized messages with an error; this one
        // only guards memory.
        .max_message_size(4 * MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_CHUNK_BYTES)
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            if let (Some(b), Some((sid, generation))) = (failed_backend, failed_id) {
                tokio::spawn(async move { b.room_socket_closed(&sid, generation).await });
            }
        });
    Ok(ws
        .on_upgrade(move |socket| async move {
            match joined {
                Ok(conn) => serve(socket, backend, conn, rate).await,
                Err(msg) => {
                    let mut socket = socket;
                    let _ = send(&mut socket, &msg).await;
                    let _ = socket.send(Message::Close(None)).await;
                }
            }
        })
        .into_response())
}

/// Check a room token and say who joins: the room, identity, grants and
/// ICE servers with credentials minted for it. Shared by the room
/// protocols' sockets.
pub fn admit<B: MediaBackend>(
    state: &AppState<B>,
    token: &str,
    resume: Option<String>,
) -> Result<JoinRoom, ApiError> {
    let grant = state.keys.verify(token)?;
    let room = grant
        .video
        .room
        .clone()
        .ok_or_else(|| AuthError::Forbidden("roomJoin", "(no room in token)".into()))?;
    validate_room(&room)?;
    grant.require(&room, Permission::Join)?;
    if grant.identity.len() > MAX_IDENTITY {
        return Err(ApiError::BadRequest(format!(
            "identity longer than {MAX_IDENTITY} bytes"
        )));
    }
    Ok(JoinRoom {
        room,
        name: grant.name.clone().unwrap_or_else(|| grant.identity.clone()),
        metadata: grant.metadata.clone().unwrap_or_default(),
        identity: grant.identity.clone(),
        can_publish: grant.video.can_publish(),
        can_subscribe: grant.video.can_subscribe(),
        can_publish_data: grant.video.can_publish_data(),
        resume,
        ice_servers: state
            .turn
            .iter()
            .map(|t| t.issue_now(&grant.identity))
            .collect(),
        bridge: grant.video.room_bridge,
    })
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> Result<(), axum::Error> {
    socket.send(text_of(msg)).await
}

fn text_of(msg: &ServerMessage) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .unwrap_or_else(|_| "{}".into())
            .into(),
    )
}

/// What a burst of server messages ended with.
enum Burst {
    /// All written and flushed.
    Sent,
    /// A final message (removed, room closed) was sent: close the socket.
    Final,
    /// The socket failed.
    Failed,
}

/// Write `first` and whatever else is already queued (up to
/// [`SEND_BATCH`]), then flush once.
async fn send_burst(
    socket: &mut WebSocket,
    first: ServerMessage,
    queue: &mut tokio::sync::mpsc::Receiver<ServerMessage>,
) -> Burst {
    let mut next = Some(first);
    let mut written = 0;
    let mut outcome = Burst::Sent;
    while let Some(msg) = next.take() {
        if socket.feed(text_of(&msg)).await.is_err() {
            return Burst::Failed;
        }
        written += 1;
        if msg.is_final() {
            outcome = Burst::Final;
            break;
        }
        if written < SEND_BATCH {
            next = queue.try_recv().ok();
        }
    }
    match socket.flush().await {
        Ok(()) => outcome,
        Err(_) => Burst::Failed,
    }
}

/// Close the socket normally (1000) with `reason` (at most 100 characters).
pub(crate) async fn close(socket: &mut WebSocket, reason: &str) {
    let frame = CloseFrame {
        code: 1000,
        reason: reason.chars().take(100).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// What the socket loop does after a client message.
enum Next {
    Continue,
    Stop,
}

async fn on_text<B: MediaBackend>(
    socket: &mut WebSocket,
    backend: &B,
    conn: &RoomConnection,
    limit: &mut RateLimit,
    text: &str,
) -> Result<Next, axum::Error> {
    if !limit.take(Instant::now()) {
        let msg = ServerMessage::error(
            ErrorCode::RateLimited,
            format!("more than {MESSAGES_PER_SECOND} messages per second; message dropped"),
        );
        send(socket, &msg).await?;
        return Ok(Next::Continue);
    }
    if text.len() > MAX_MESSAGE_BYTES {
        let msg = ServerMessage::error(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is larger than {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        );
        send(socket, &msg).await?;
        return Ok(Next::Continue);
    }
    let msg = match parse_client_message(text) {
        Ok(m) => m,
        Err(e) => {
            send(socket, &ServerMessage::error(ErrorCode::BadMessage, e)).await?;
            return Ok(Next::Continue);
        }
    };
    if let ClientMessage::Ping { id } = msg {
        send(socket, &ServerMessage::Pong { id }).await?;
        return Ok(Next::Continue);
    }
    let leaving = matches!(msg, ClientMessage::Leave {});
    match backend
        .room_message(&conn.participant, conn.generation, msg)
        .await
    {
        Ok(()) if leaving => Ok(Next::Stop),
        Ok(()) => Ok(Next::Continue),
        Err(BackendError::NotFound) => Ok(Next::Stop),
        Err(e) => {
            let msg = ServerMessage::error(ErrorCode::BadMessage, e.to_string());
            send(socket, &msg).await?;
            Ok(Next::Continue)
        }
    }
}

/// Keepalive: a WebSocket ping when the socket was quiet this long.
const KEEPALIVE: Duration = Duration::from_secs(15);

async fn serve<B: MediaBackend>(
    mut socket: WebSocket,
    backend: B,
    mut conn: RoomConnection,
    rate: f64,
) {
    let mut limit = RateLimit::new(
        rate * MESSAGES_PER_SECOND,
        rate * MESSAGE_BURST,
        Instant::now(),
    );
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let next = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        on_text(&mut socket, &backend, &conn, &mut limit, text.as_str()).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let msg = ServerMessage::error(
                            ErrorCode::BadMessage,
                            "binary frames are not part of the protocol; send JSON text",
                        );
                        send(&mut socket, &msg).await.map(|_| Next::Continue)
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Next::Continue),
                    Some(Ok(Message::Close(_))) | None => Ok(Next::Stop),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket receive failed");
                        Ok(Next::Stop)
                    }
                };
                match next {
                    Ok(Next::Continue) => {}
                    Ok(Next::Stop) => {
                        close(&mut socket, "bye").await;
                        break;
                    }
                    Err(_) => break,
                }
            }
            out = conn.messages.recv() => {
                let Some(msg) = out else {
                    // The participant is gone or another socket resumed it.
                    close(&mut socket, "session ended").await;
                    break;
                };
                match send_burst(&mut socket, msg, &mut conn.messages).await {
                    Burst::Sent => {}
                    Burst::Final => {
                        close(&mut socket, "removed").await;
                        break;
                    }
                    Burst::Failed => break,
                }
            }
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    backend
        .room_socket_closed(&conn.participant, conn.generation)
        .await;
}
