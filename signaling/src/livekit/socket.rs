//! The WebSocket of LiveKit's signalling in both modes (single peer
//! connection: `GET /rtc/v1`; dual: `GET /rtc` with LiveKit's query) and
//! the validate endpoints the SDKs call when a connection fails
//! (`GET /rtc/v1/validate`, `GET /rtc/validate`): a thin
//! shell that checks the token and the join request, joins through the
//! [`MediaBackend`], and moves frames between the socket and the
//! [`Session`] that translates them. Size and rate limits are the room
//! socket's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;

use super::frames::{self, FrameError};
use super::join::{self, JoinParams};
use super::proto;
use super::registry::{Registry, SharedSession};
use super::session::{Joining, Output, Session};
use crate::backend::{BackendError, JoinRoom, MediaBackend, RoomConnection};
use crate::errors::ApiError;
use crate::rate_limit::RateLimit;
use crate::rtc_socket::{admit, close, MESSAGES_PER_SECOND, MESSAGE_BURST, READ_CHUNK_BYTES};
use crate::AppState;

/// A WebSocket-level ping when the socket was quiet this long (the Go SDK
/// sends no signal pings of its own).
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How often the client is sent a fresh token (`refresh_token`), and how
/// long each stays valid: a client reconnecting after its first token
/// expired uses the last one.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
const REFRESH_TTL: Duration = Duration::from_secs(10 * 60);

type QueryMap = Query<HashMap<String, String>>;

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn bad_join(e: join::JoinError) -> ApiError {
    match e {
        join::JoinError::MissingToken => ApiError::Auth(crate::auth::AuthError::Missing),
        e => ApiError::BadRequest(e.to_string()),
    }
}

/// `GET /rtc/v1/validate`: the join's checks without joining; 200
/// "success", or the status and reason a join would get.
pub async fn validate_v1<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Query(query): QueryMap,
    headers: HeaderMap,
) -> Result<&'static str, ApiError> {
    let params = join::single_pc(&query, authorization(&headers)).map_err(bad_join)?;
    admit(&state, &params.token, None)?;
    Ok("success")
}

/// `GET /rtc/validate` (dual peer connection): as `/rtc/v1/validate`.
pub async fn validate_v0<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Query(query): QueryMap,
    headers: HeaderMap,
) -> Result<&'static str, ApiError> {
    let params = join::dual_pc(&query, authorization(&headers)).map_err(bad_join)?;
    admit(&state, &params.token, None)?;
    Ok("success")
}

/// `GET /rtc/v1`: check the token and join request, join, upgrade.
pub async fn upgrade_v1<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Query(query): QueryMap,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let params: JoinParams = join::single_pc(&query, authorization(&headers)).map_err(bad_join)?;
    upgrade(state, params, ws).await
}

/// `GET /rtc` with LiveKit's query (the dual peer connection mode; the
/// room socket hands it over).
pub async fn upgrade_dual<B: MediaBackend>(
    state: AppState<B>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let params: JoinParams = join::dual_pc(query, authorization(headers)).map_err(bad_join)?;
    upgrade(state, params, ws).await
}

/// Join (or resume) as `params` say, and serve the socket.
async fn upgrade<B: MediaBackend>(
    state: AppState<B>,
    params: JoinParams,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let req = admit(&state, &params.token, None)?;
    let ws = ws
        .max_message_size(4 * frames::MAX_FRAME_BYTES)
        .read_buffer_size(READ_CHUNK_BYTES);
    let registry = state.livekit_sessions.clone();
    let (session, req) = if params.is_reconnect() {
        let sid = &params.request.participant_sid;
        let Some(session) = registry.resume(sid, &req.identity) else {
            return Ok(rejoin(ws, "no session to resume: rejoin"));
        };
        let token = session.lock().map(|s| s.resume_token().to_string()).ok();
        let req = JoinRoom {
            resume: token,
            ..req
        };
        (session, req)
    } else {
        let joining = Joining {
            can_publish: req.can_publish,
            can_subscribe: req.can_subscribe,
            can_publish_data: req.can_publish_data,
            auto_subscribe: params.auto_subscribe(),
            offer: params.request.publisher_offer.clone(),
            dual: params.mode == join::Mode::DualPeerConnection,
        };
        (Arc::new(Mutex::new(Session::new(joining))), req)
    };
    let identity = req.identity.clone();
    let resuming = req.resume.is_some();
    let conn = match state.backend.join_room(req).await {
        Ok(conn) => conn,
        Err(BackendError::ResumeFailed) if resuming => {
            return Ok(rejoin(ws, "the session is gone: rejoin"))
        }
        Err(e) => return Err(e.into()),
    };
    if !resuming {
        registry.insert(
            &conn.participant,
            &identity,
            session.clone(),
            Instant::now(),
        );
    }
    let backend = state.backend.clone();
    let failed = (
        state.backend.clone(),
        conn.participant.clone(),
        conn.generation,
    );
    Ok(ws
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            let (b, sid, generation) = failed;
            tokio::spawn(async move { b.room_socket_closed(&sid, generation).await });
        })
        .on_upgrade(move |socket| {
            let refresh = Refresh {
                keys: state.keys.clone(),
                token: params.token,
            };
            serve(socket, backend, conn, session, registry, refresh)
        })
        .into_response())
}

/// A resume that cannot be served: the client is told to join afresh (a
/// full reconnect), which it does at once.
fn rejoin(ws: WebSocketUpgrade, why: &'static str) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        let leave = proto::LeaveRequest {
            reason: proto::DisconnectReason::StateMismatch as i32,
            action: proto::leave_request::Action::Reconnect as i32,
            ..Default::default()
        };
        let _ = send(&mut socket, proto::signal_response::Message::Leave(leave)).await;
        close(&mut socket, why).await;
    })
    .into_response()
}

async fn send(
    socket: &mut WebSocket,
    message: proto::signal_response::Message,
) -> Result<(), axum::Error> {
    socket
        .send(Message::Binary(frames::encode_response(message).into()))
        .await
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Decode a client frame: binary protobuf, or protobuf-JSON text (what
/// livekit-client sends when told to use JSON).
fn decode(message: &Message) -> Option<Result<proto::signal_request::Message, FrameError>> {
    match message {
        Message::Binary(bytes) => Some(frames::decode_request(bytes)),
        Message::Text(text) => Some(if text.len() > frames::MAX_FRAME_BYTES {
            Err(FrameError::TooLarge(text.len()))
        } else {
            serde_json::from_str::<proto::SignalRequest>(text.as_str())
                .map_err(|e| FrameError::Decode(e.to_string()))
                .and_then(|r| r.message.ok_or(FrameError::Empty))
        }),
        _ => None,
    }
}

/// What the loop does next.
enum Next {
    Continue,
    Stop,
}

/// Carry out a session's outputs.
async fn apply<B: MediaBackend>(
    socket: &mut WebSocket,
    backend: &B,
    conn: &RoomConnection,
    outputs: Vec<Output>,
) -> Result<Next, axum::Error> {
    for output in outputs {
        match output {
            Output::Client(message) => {
                socket
                    .feed(Message::Binary(frames::encode_response(*message).into()))
                    .await?
            }
            Output::Room(message) => {
                match backend
                    .room_message(&conn.participant, conn.generation, message)
                    .await
                {
                    Ok(()) => {}
                    Err(BackendError::NotFound) => return Ok(Next::Stop),
                    Err(e) => tracing::debug!(error = %e, "room message refused"),
                }
            }
            Output::Close(reason) => {
                socket.flush().await?;
                close(socket, &reason).await;
                return Ok(Next::Stop);
            }
        }
    }
    socket.flush().await?;
    Ok(Next::Continue)
}

/// What a fresh token is made from: the keys, and the last token.
struct Refresh {
    keys: Arc<crate::auth::KeySet>,
    token: String,
}

impl Refresh {
    fn next(&mut self) -> Option<String> {
        let now = crate::auth::unix_now();
        let fresh = self.keys.refresh_at(&self.token, now, REFRESH_TTL).ok()?;
        self.token = fresh.clone();
        Some(fresh)
    }
}

async fn serve<B: MediaBackend>(
    mut socket: WebSocket,
    backend: B,
    mut conn: RoomConnection,
    session: SharedSession,
    registry: Arc<Registry>,
    mut refresh: Refresh,
) {
    let mut limit = RateLimit::new(MESSAGES_PER_SECOND, MESSAGE_BURST, Instant::now());
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    // Not at once: the join response must be the first message.
    let mut refresh_timer =
        tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
    loop {
        let next = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => Ok(Next::Stop),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket receive failed");
                    Ok(Next::Stop)
                }
                Some(Ok(message)) => match decode(&message) {
                    None => Ok(Next::Continue),
                    Some(_) if !limit.take(Instant::now()) => {
                        tracing::debug!(participant = %conn.participant, "signal frame over the rate limit dropped");
                        Ok(Next::Continue)
                    }
                    Some(Ok(request)) => {
                        let outputs = session
                            .lock()
                            .map(|mut s| s.on_client(request, now_ms()))
                            .unwrap_or_default();
                        apply(&mut socket, &backend, &conn, outputs).await
                    }
                    Some(Err(FrameError::Empty)) => Ok(Next::Continue),
                    Some(Err(e)) => {
                        tracing::info!(participant = %conn.participant, error = %e, "bad LiveKit signal frame");
                        let outputs = session
                            .lock()
                            .map(|mut s| s.refuse(e.to_string()))
                            .unwrap_or_default();
                        apply(&mut socket, &backend, &conn, outputs).await
                    }
                },
            },
            out = conn.messages.recv() => match out {
                Some(message) => {
                    let outputs = session
                        .lock()
                        .map(|mut s| s.on_room(message))
                        .unwrap_or_default();
                    apply(&mut socket, &backend, &conn, outputs).await
                }
                None => {
                    close(&mut socket, "session ended").await;
                    Ok(Next::Stop)
                }
            },
            _ = refresh_timer.tick() => match refresh.next() {
                Some(token) => send(&mut socket, proto::signal_response::Message::RefreshToken(token))
                    .await
                    .map(|_| Next::Continue),
                None => Ok(Next::Continue),
            },
            _ = keepalive.tick() => socket
                .send(Message::Ping(Default::default()))
                .await
                .map(|_| Next::Continue),
        };
        match next {
            Ok(Next::Continue) => {}
            Ok(Next::Stop) | Err(_) => break,
        }
    }
    registry.detach(&conn.participant, &session, Instant::now());
    backend
        .room_socket_closed(&conn.participant, conn.generation)
        .await;
}
