//! The room admin API under `/api/`: list rooms and participants, remove a
//! participant, mute a track, update metadata, close a room, send data.
//!
//! Authorised by an access token with the `roomAdmin` grant (scoped to its
//! `room` when it names one) or by the API key and secret themselves
//! (`Authorization: Basic base64(key:secret)`), as server-side tools do.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;
use crate::backend::MediaBackend;
use crate::errors::ApiError;
use crate::room_protocol::ParticipantInfo;
use crate::sessions::validate_room;
use crate::AppState;

/// What an administrator asks for.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    ListRooms,
    ListParticipants {
        room: String,
    },
    RemoveParticipant {
        room: String,
        identity: String,
    },
    MuteTrack {
        room: String,
        identity: String,
        track: String,
        muted: bool,
    },
    UpdateParticipant {
        room: String,
        identity: String,
        metadata: Option<String>,
        name: Option<String>,
    },
    CloseRoom {
        room: String,
    },
    SendData {
        room: String,
        topic: Option<String>,
        payload: serde_json::Value,
        to: Option<Vec<String>>,
    },
    /// What one participant receives: layers, estimate, switches.
    Subscriptions {
        room: String,
        identity: String,
    },
}

impl AdminRequest {
    /// The room a request is about (`None`: all rooms).
    pub fn room(&self) -> Option<&str> {
        match self {
            AdminRequest::ListRooms => None,
            AdminRequest::ListParticipants { room }
            | AdminRequest::RemoveParticipant { room, .. }
            | AdminRequest::MuteTrack { room, .. }
            | AdminRequest::UpdateParticipant { room, .. }
            | AdminRequest::CloseRoom { room }
            | AdminRequest::SendData { room, .. }
            | AdminRequest::Subscriptions { room, .. } => Some(room),
        }
    }
}

/// One room in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    pub participants: usize,
    pub tracks: usize,
    /// Seconds since the room was created.
    pub age_seconds: u64,
}

/// A simulcast layer (or a scalable stream's spatial layers up to one) as
/// the diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub rid: Option<String>,
    /// Spatial layers `0..=spatial` of the stream (0 without SVC).
    #[serde(default)]
    pub spatial: u8,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
}

/// One receiving line of a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReport {
    pub mid: String,
    pub kind: crate::room_protocol::MediaKindName,
    /// Identity of the publisher of the track it carries (None: nothing bound).
    pub publisher: Option<String>,
    pub track: Option<String>,
    /// Video: the layer flowing now.
    pub layer: Option<LayerReport>,
    /// Video: the layer wanted next (rid; "" for a single-layer track).
    pub target: Option<String>,
    /// Video: the spatial layer wanted next in a scalable stream.
    #[serde(default)]
    pub target_spatial: Option<u8>,
    pub paused: bool,
    pub max_width: Option<u32>,
    /// Video: the publisher's layers flowing now, lowest first.
    pub available: Vec<LayerReport>,
    pub switches_up: u64,
    pub switches_down: u64,
}

/// What one participant receives and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberReport {
    pub identity: String,
    pub sid: String,
    /// The bandwidth estimate of its downlink (None: none yet).
    pub downlink_estimate_bps: Option<u64>,
    pub subscriptions: Vec<SubscriptionReport>,
}

/// The backend's answer.
#[derive(Debug, Clone)]
pub enum AdminReply {
    Rooms(Vec<RoomSummary>),
    Participants(Vec<ParticipantInfo>),
    Participant(ParticipantInfo),
    Subscriptions(SubscriberReport),
    Done,
}

impl IntoResponse for AdminReply {
    fn into_response(self) -> Response {
        match self {
            AdminReply::Rooms(rooms) => Json(serde_json::json!({ "rooms": rooms })).into_response(),
            AdminReply::Participants(p) => {
                Json(serde_json::json!({ "participants": p })).into_response()
            }
            AdminReply::Participant(p) => Json(p).into_response(),
            AdminReply::Subscriptions(r) => Json(r).into_response(),
            AdminReply::Done => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    track: String,
    muted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataBody {
    #[serde(default)]
    topic: Option<String>,
    payload: serde_json::Value,
    #[serde(default)]
    to: Option<Vec<String>>,
}

/// Largest metadata string accepted (participant metadata travels to everyone).
pub const MAX_METADATA_BYTES: usize = 4096;

/// Check the caller may administer `room` (`None`: every room).
fn authorize<B>(
    state: &AppState<B>,
    headers: &HeaderMap,
    room: Option<&str>,
) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .map_err(|_| AuthError::Malformed("Basic credentials are not base64".into()))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8".into()))?;
        let (key, secret) = text
            .split_once(':')
            .ok_or_else(|| AuthError::Malformed("Basic credentials need key:secret".into()))?;
        return match state.keys.secret(key) {
            Some(s) if constant_time_eq(s.as_bytes(), secret.as_bytes()) => Ok(()),
            Some(_) => Err(AuthError::BadSignature.into()),
            None => Err(AuthError::UnknownKey(key.to_string()).into()),
        };
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing.into());
    }
    let grant = state.keys.verify(credentials.trim())?;
    grant.require_admin(room)?;
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

async fn run<B: MediaBackend>(
    state: &AppState<B>,
    headers: &HeaderMap,
    req: AdminRequest,
) -> Result<AdminReply, ApiError> {
    if let Some(room) = req.room() {
        validate_room(room)?;
    }
    authorize(state, headers, req.room())?;
    Ok(state.backend.admin(req).await?)
}

async fn list_rooms<B: MediaBackend>(
    State(s): State<AppState<B>>,
    h: HeaderMap,
) -> Result<AdminReply, ApiError> {
    run(&s, &h, AdminRequest::ListRooms).await
}

async fn list_participants<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path(room): Path<String>,
    h: HeaderMap,
) -> Result<AdminReply, ApiError> {
    run(&s, &h, AdminRequest::ListParticipants { room }).await
}

async fn close_room<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path(room): Path<String>,
    h: HeaderMap,
) -> Result<AdminReply, ApiError> {
    run(&s, &h, AdminRequest::CloseRoom { room }).await
}

async fn remove_participant<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path((room, identity)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<AdminReply, ApiError> {
    run(&s, &h, AdminRequest::RemoveParticipant { room, identity }).await
}

async fn subscriptions<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path((room, identity)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<AdminReply, ApiError> {
    run(&s, &h, AdminRequest::Subscriptions { room, identity }).await
}

async fn update_participant<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path((room, identity)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<AdminReply, ApiError> {
    authorize(&s, &h, Some(&room))?;
    let b: UpdateBody = json_body(&body)?;
    if b.metadata
        .as_ref()
        .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
    {
        return Err(ApiError::BadRequest(format!(
            "metadata longer than {MAX_METADATA_BYTES} bytes"
        )));
    }
    let req = AdminRequest::UpdateParticipant {
        room,
        identity,
        metadata: b.metadata,
        name: b.name,
    };
    run(&s, &h, req).await
}

async fn mute_track<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path((room, identity)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<AdminReply, ApiError> {
    authorize(&s, &h, Some(&room))?;
    let b: MuteBody = json_body(&body)?;
    let req = AdminRequest::MuteTrack {
        room,
        identity,
        track: b.track,
        muted: b.muted,
    };
    run(&s, &h, req).await
}

async fn send_data<B: MediaBackend>(
    State(s): State<AppState<B>>,
    Path(room): Path<String>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<AdminReply, ApiError> {
    authorize(&s, &h, Some(&room))?;
    let b: DataBody = json_body(&body)?;
    let req = AdminRequest::SendData {
        room,
        topic: b.topic,
        payload: b.payload,
        to: b.to,
    };
    run(&s, &h, req).await
}

/// The `/api/` routes.
pub fn routes<B: MediaBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/api/rooms", get(list_rooms::<B>))
        .route("/api/rooms/{room}", axum::routing::delete(close_room::<B>))
        .route(
            "/api/rooms/{room}/participants",
            get(list_participants::<B>),
        )
        .route(
            "/api/rooms/{room}/participants/{identity}",
            axum::routing::delete(remove_participant::<B>).patch(update_participant::<B>),
        )
        .route(
            "/api/rooms/{room}/participants/{identity}/mute",
            post(mute_track::<B>),
        )
        .route(
            "/api/rooms/{room}/participants/{identity}/subscriptions",
            get(subscriptions::<B>),
        )
        .route("/api/rooms/{room}/data", post(send_data::<B>))
}
