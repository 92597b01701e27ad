//! The SFU's HTTP front door (axum): WHIP ingest, WHEP playback, LiveKit's
//! client signalling (`/rtc/v1`, `/rtc`), the nodes' bridge socket (`/rtc`
//! with a `roomBridge` token), the admin API (`/api/`), the embedded web
//! client, `/metrics` and `/healthz`.
//!
//! This crate authenticates and validates requests and turns them into calls
//! on a [`MediaBackend`]; the media server (the `sfu` crate) implements that
//! trait. Nothing here touches media or a WebRTC state machine.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod errors;
pub mod livekit;
pub mod rate_limit;
pub mod request_span;
pub mod room_protocol;
pub mod rtc_socket;
pub mod sdpfrag;
pub mod sessions;
pub mod turn;
pub mod web;
pub mod whep_events;
pub mod whep_ext;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::KeySet;
pub use backend::{BackendError, MediaBackend, SessionKind};
pub use turn::TurnAuth;

/// A STUN or TURN server advertised to clients (`Link: rel="ice-server"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

impl IceServer {
    /// RFC 9725 section 4.6 link header values, one per URL.
    pub fn link_values(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|url| {
                let mut v = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(u), Some(c)) = (&self.username, &self.credential) {
                    v.push_str(&format!(
                        "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                    ));
                }
                v
            })
            .collect()
    }
}

/// Settings of the front door.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    pub keys: KeySet,
    /// API key whose secret signs `/dev/token` tokens; `None` disables it.
    pub dev_token_key: Option<String>,
    pub ice_servers: Vec<IceServer>,
    /// TURN servers whose credentials are minted per session.
    pub turn: Option<TurnAuth>,
    /// HTTP requests allowed per client address (None: no limit).
    pub client_rate: Option<rate_limit::ClientRate>,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
}

/// Shared, read-only state of every handler.
pub struct AppState<B> {
    pub backend: B,
    pub keys: Arc<KeySet>,
    pub dev_token_key: Option<Arc<str>>,
    pub ice_server_links: Arc<[HeaderValue]>,
    pub turn: Option<Arc<TurnAuth>>,
    /// LiveKit clients' signalling sessions, for resumes.
    pub livekit_sessions: Arc<livekit::registry::Registry>,
}

impl<B: Clone> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            backend: self.backend.clone(),
            keys: self.keys.clone(),
            dev_token_key: self.dev_token_key.clone(),
            ice_server_links: self.ice_server_links.clone(),
            turn: self.turn.clone(),
            livekit_sessions: self.livekit_sessions.clone(),
        }
    }
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            HeaderName::from_static("accept-patch"),
            header::RETRY_AFTER,
        ])
}

/// Build the complete HTTP router.
pub fn router<B: MediaBackend>(config: FrontDoorConfig, backend: B) -> Router {
    let links: Vec<HeaderValue> = config
        .ice_servers
        .iter()
        .flat_map(IceServer::link_values)
        .filter_map(|v| HeaderValue::from_str(&v).ok())
        .collect();
    let state = AppState {
        backend,
        keys: Arc::new(config.keys),
        dev_token_key: config.dev_token_key.map(Arc::from),
        ice_server_links: links.into(),
        turn: config.turn.map(Arc::new),
        livekit_sessions: Arc::default(),
    };

    let mut app = Router::new();
    for kind in [SessionKind::Whip, SessionKind::Whep] {
        let p = kind.path_prefix();
        app = app
            .route(
                &format!("/{p}/{{room}}"),
                post(move |s, path, q, h, b| sessions::create::<B>(kind, s, path, q, h, b)),
            )
            .route(
                &format!("/{p}/{{room}}/{{id}}"),
                axum::routing::patch(move |s, path, h, b| {
                    sessions::patch::<B>(kind, s, path, h, b)
                })
                .delete(move |s, path, h| sessions::delete::<B>(kind, s, path, h)),
            );
    }
    app = app
        .route(
            "/whep/{room}/{id}/sse",
            post(whep_events::create_stream::<B>),
        )
        .route(
            "/whep/{room}/{id}/sse/{stream}",
            get(whep_events::stream::<B>).delete(whep_events::close_stream::<B>),
        )
        .route(
            "/whep/{room}/{id}/layer",
            post(whep_events::select_layer::<B>).delete(whep_events::automatic_layer::<B>),
        )
        .route("/rtc", get(rtc_socket::upgrade::<B>))
        .route("/rtc/v1", get(livekit::socket::upgrade_v1::<B>))
        .route("/rtc/v1/validate", get(livekit::socket::validate_v1::<B>))
        .route("/rtc/validate", get(livekit::socket::validate_v0::<B>))
        .merge(admin::routes::<B>());
    for asset in web::ASSETS {
        app = app.route(
            asset.path,
            get(move || async move { web::asset_response(asset) }),
        );
    }
    let app = app
        .route("/dev/token", get(web::dev_token::<B>))
        // Liveness: the process answers (also while draining).
        .route("/livez", get(|| async { "ok\n" }))
        // Readiness: 503 while draining, so no new rooms are sent here.
        .route(
            "/healthz",
            get(
                |axum::extract::State(s): axum::extract::State<AppState<B>>| async move {
                    if s.backend.draining() {
                        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                    } else {
                        (StatusCode::OK, "ok\n")
                    }
                },
            ),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<AppState<B>>| async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        s.backend.render_metrics(),
                    )
                },
            ),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n").into_response() });
    let app = match config.client_rate {
        Some(rate) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(rate_limit::ClientLimiter::new(rate)),
            rate_limit::limit_clients,
        )),
        None => app,
    };
    app.layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(request_span::trace_request))
        .layer(cors())
        .layer(axum::middleware::from_fn(accept_post))
        .with_state(state)
}

/// `Accept-Post: application/sdp` on every answer to `OPTIONS` of a WHIP or
/// WHEP endpoint, CORS preflights included (RFC 9725 §4.2).
async fn accept_post(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = req.method() == Method::OPTIONS && {
        let mut parts = req.uri().path().trim_matches('/').split('/');
        matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some("whip" | "whep"), Some(_), None)
        )
    };
    let mut resp = next.run(req).await;
    if endpoint && resp.status().is_success() {
        resp.headers_mut()
            .insert("accept-post", HeaderValue::from_static(sessions::SDP));
    }
    resp
}
