//! WHIP (RFC 9725) and WHEP resources: create with POST, trickle or restart
//! ICE with PATCH, end with DELETE.
//!
//! WHIP and WHEP share their resource semantics, so one set of handlers
//! serves both, parameterised by [`SessionKind`]. Handlers authenticate,
//! validate and hand the work to the [`MediaBackend`]; they never see media.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthError, Grant, Permission};
use crate::backend::{CreateSession, MediaBackend, PatchOutcome, SessionKind};
use crate::errors::ApiError;
use crate::sdpfrag::SdpFrag;
use crate::AppState;

pub const SDP: &str = "application/sdp";
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Longest room name we accept.
pub const MAX_ROOM_NAME: usize = 128;

fn permission(kind: SessionKind) -> Permission {
    match kind {
        SessionKind::Whip => Permission::Publish,
        SessionKind::Whep => Permission::Subscribe,
        SessionKind::Room => Permission::Join,
    }
}

/// Room names are path segments: keep them to a safe, printable set.
pub fn validate_room(room: &str) -> Result<(), ApiError> {
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_NAME
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid room name: use 1-{MAX_ROOM_NAME} characters from [A-Za-z0-9._-]"
        )))
    }
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { expected })
    }
}

pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

pub(crate) fn authorize<B: MediaBackend>(
    state: &AppState<B>,
    headers: &HeaderMap,
    room: &str,
    kind: SessionKind,
) -> Result<Grant, ApiError> {
    let grant = state.keys.verify(bearer(headers)?)?;
    grant.require(room, permission(kind))?;
    Ok(grant)
}

fn utf8(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))
}

fn etag_value(etag: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{etag}\"")).ok()
}

/// Query parameters of a WHIP/WHEP POST.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CreateQuery {
    /// WHEP layer selection: the widest video the viewer wants.
    #[serde(rename = "maxWidth", alias = "max_width")]
    max_width: Option<u32>,
    /// WHEP only: the token, for players that cannot set a header (an
    /// `Authorization` header wins when both are sent).
    access_token: Option<String>,
}

/// `POST /whip/{room}` and `POST /whep/{room}` (`?maxWidth=640` and
/// `?access_token=` for WHEP).
pub async fn create<B: MediaBackend>(
    kind: SessionKind,
    State(state): State<AppState<B>>,
    Path(room): Path<String>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    validate_room(&room)?;
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("bad query parameters: {e}")))?;
    let grant = match (&query.access_token, kind) {
        (Some(_), SessionKind::Whip) => {
            return Err(ApiError::BadRequest(
                "a WHIP token goes in the Authorization header, not the URL".into(),
            ))
        }
        (Some(token), SessionKind::Whep) if headers.get(header::AUTHORIZATION).is_none() => {
            let grant = state.keys.verify(token)?;
            grant.require(&room, permission(kind))?;
            grant
        }
        _ => authorize(&state, &headers, &room, kind)?,
    };
    require_content_type(&headers, SDP)?;
    let offer_sdp = utf8(&body)?.to_string();
    if offer_sdp.trim().is_empty() {
        return Err(ApiError::BadRequest("empty SDP offer".into()));
    }
    let created = state
        .backend
        .create_session(CreateSession {
            kind,
            room: room.clone(),
            identity: grant.identity.clone(),
            offer_sdp,
            max_width: query.max_width,
        })
        .await?;
    tracing::info!(%room, identity = %grant.identity, id = %created.id, ?kind, "session created");

    let location = format!("/{}/{}/{}", kind.path_prefix(), room, created.id);
    let mut resp = (StatusCode::CREATED, created.answer_sdp).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(v) = etag_value(&created.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for link in state.ice_server_links.iter() {
        h.append(header::LINK, link.clone());
    }
    if let Some(turn) = &state.turn {
        let links = turn.issue_now(&grant.identity).link_values();
        for v in links.iter().filter_map(|v| HeaderValue::from_str(v).ok()) {
            h.append(header::LINK, v);
        }
    }
    if kind == SessionKind::Whep {
        for link in crate::whep_events::links(&location) {
            if let Ok(v) = HeaderValue::from_str(&link) {
                h.append(header::LINK, v);
            }
        }
    }
    Ok(resp)
}

/// `PATCH /whip/{room}/{id}`: trickle ICE (204) or ICE restart (200).
pub async fn patch<B: MediaBackend>(
    kind: SessionKind,
    State(state): State<AppState<B>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    validate_room(&room)?;
    let grant = authorize(&state, &headers, &room, kind)?;
    require_content_type(&headers, SDPFRAG)?;
    let frag = SdpFrag::parse(utf8(&body)?)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string());
    match state
        .backend
        .patch_session(kind, &room, &id, &grant.identity, if_match, frag)
        .await?
    {
        PatchOutcome::Trickled => Ok(StatusCode::NO_CONTENT.into_response()),
        PatchOutcome::Restarted { answer_frag, etag } => {
            let mut resp = (StatusCode::OK, answer_frag).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
            if let Some(v) = etag_value(&etag) {
                h.insert(header::ETAG, v);
            }
            Ok(resp)
        }
    }
}

/// `DELETE /whip/{room}/{id}`: end the session.
pub async fn delete<B: MediaBackend>(
    kind: SessionKind,
    State(state): State<AppState<B>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_room(&room)?;
    let grant = authorize(&state, &headers, &room, kind)?;
    state
        .backend
        .delete_session(kind, &room, &id, &grant.identity)
        .await?;
    tracing::info!(%room, %id, ?kind, "session deleted");
    Ok(StatusCode::OK.into_response())
}
