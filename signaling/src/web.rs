//! The embedded web client (publish page, WHEP player, conference room) and the development
//! token endpoint that lets those pages work with zero set-up.
//!
//! The pages live in `client-web/` and are compiled into the binary, so the
//! server has no runtime file dependencies; the meeting page's SDK
//! (livekit-client's browser bundle) is fetched by `build.rs` from
//! `client-web/package-lock.json` and compiled in the same way.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::auth::VideoGrant;
use crate::backend::MediaBackend;
use crate::errors::ApiError;
use crate::sessions::validate_room;
use crate::AppState;

/// One embedded file: URL path, content type, bytes.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../client-web/index.html"),
    },
    Asset {
        path: "/play",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../client-web/play.html"),
    },
    Asset {
        path: "/room/{name}",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../client-web/room.html"),
    },
    Asset {
        path: "/js/room.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../client-web/room.js"),
    },
    Asset {
        path: "/js/livekit-client.umd.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!(concat!(env!("OUT_DIR"), "/livekit-client.umd.js")),
    },
    Asset {
        path: "/js/whip-client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../client-web/whip-client.js"),
    },
    Asset {
        path: "/js/stats.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../client-web/stats.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../client-web/style.css"),
    },
];

pub fn asset_response(asset: &'static Asset) -> Response {
    let mut resp = (StatusCode::OK, asset.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[derive(Debug, Deserialize)]
pub struct DevTokenQuery {
    room: String,
    identity: Option<String>,
    #[serde(default)]
    publish: Option<String>,
    #[serde(default)]
    subscribe: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes" | ""))
}

/// `GET /dev/token`: mint a short-lived token, only when the server runs with
/// the development credentials (which it refuses to expose beyond loopback).
pub async fn dev_token<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Query(q): Query<DevTokenQuery>,
) -> Result<Response, ApiError> {
    let Some(dev_key) = state.dev_token_key.as_deref() else {
        return Err(ApiError::NotFound);
    };
    validate_room(&q.room)?;
    let identity = q
        .identity
        .filter(|i| !i.is_empty() && i.len() <= 128)
        .unwrap_or_else(|| format!("user-{:08x}", rand::random::<u32>()));
    let grant = VideoGrant {
        room: Some(q.room),
        room_join: true,
        can_publish: Some(flag(&q.publish)),
        can_subscribe: Some(flag(&q.subscribe)),
        can_publish_data: Some(true),
        ..Default::default()
    };
    let token = state
        .keys
        .mint(dev_key, &identity, grant, Duration::from_secs(6 * 3600))?;
    Ok(Json(serde_json::json!({ "token": token, "identity": identity })).into_response())
}
