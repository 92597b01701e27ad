//! The WHEP core extensions over HTTP: server-sent events and video layer
//! selection, announced in `Link` headers of the WHEP POST's 201.
//!
//! - `POST {resource}/sse` with an optional JSON array of event types
//!   (default: all) creates an event stream: 201 with its `Location`
//!   (`{resource}/sse/{stream}`); an unknown type is a 400 naming it.
//! - `GET {resource}/sse/{stream}`: the stream as `text/event-stream`, the
//!   current state first (but no initial `inactive`: the extension forbids
//!   it). `DELETE` closes it; a GET after that is a 404.
//! - `POST {resource}/layer` with a JSON layer selection (rid, spatial and
//!   temporal layer ids, maxima, maximum size; `{}` for the server's own
//!   choice): 200 when applied, 400 for a body that is no selection, 422
//!   for a layer the publisher does not send. `DELETE {resource}/layer`
//!   hands the choice back as `{}` does (what the `whip-whep` library's
//!   `unselectLayer` sends).
//!
//! The unguessable resource URL is the capability for its event streams
//! (browsers' `EventSource` cannot send an Authorization header); a layer
//! selection changes the session, so it needs the session's token, as
//! PATCH and DELETE do.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::{EventKinds, LayerSelection, MediaBackend, SessionEvent, SessionKind};
use crate::errors::ApiError;
use crate::sessions::{authorize, validate_room};
use crate::AppState;

/// `Link` values of a WHEP resource at `location`: both extensions.
pub fn links(location: &str) -> [String; 2] {
    [
        format!(
            "<{location}/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"{}\"",
            crate::whep_ext::EVENT_NAMES.join(",")
        ),
        format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\""),
    ]
}

/// Largest JSON body accepted (an event list or a layer selection).
const MAX_BODY: usize = 4096;

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::BadRequest(format!(
            "{what} is over {MAX_BODY} bytes"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

/// `POST /whep/{room}/{id}/sse`: create an event stream.
pub async fn create_stream<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Path((room, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    validate_room(&room)?;
    let names: Vec<String> = if body.iter().all(u8::is_ascii_whitespace) {
        vec![]
    } else {
        json_body(&body, "the event list (a JSON array of event names)")?
    };
    let kinds = EventKinds::parse(&names).map_err(|unknown| {
        ApiError::BadRequest(format!(
            "unknown event type {unknown:?}: this server sends {}",
            crate::whep_ext::EVENT_NAMES.join(", ")
        ))
    })?;
    let stream = state.backend.open_event_stream(&room, &id, kinds).await?;
    let location = format!("/whep/{room}/{id}/sse/{stream}");
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `GET /whep/{room}/{id}/sse/{stream}`: the event stream.
pub async fn stream<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Path((room, id, stream)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;

    validate_room(&room)?;
    let rx = state.backend.session_events(&room, &id, &stream).await?;
    let mut first = true;
    let events = tokio_stream::wrappers::ReceiverStream::new(rx)
        .filter(move |e| {
            // No initial `inactive` (the extension says so).
            let skip = first && *e == SessionEvent::Inactive;
            first = false;
            !skip
        })
        .map(|e| {
            Ok::<_, std::convert::Infallible>(Event::default().event(e.name()).data(e.data()))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `DELETE /whep/{room}/{id}/sse/{stream}`: close an event stream.
pub async fn close_stream<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Path((room, id, stream)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    validate_room(&room)?;
    state
        .backend
        .close_event_stream(&room, &id, &stream)
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /whep/{room}/{id}/layer`: the player's layer wish.
pub async fn select_layer<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    apply_layer_selection(&state, &room, &id, &headers, Some(&body)).await
}

/// `DELETE /whep/{room}/{id}/layer`: back to the server's own choice.
pub async fn automatic_layer<B: MediaBackend>(
    State(state): State<AppState<B>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    apply_layer_selection(&state, &room, &id, &headers, None).await
}

/// A viewer's layer selection from `body` (None: the server's choice), for
/// the holder of a token for the room (checked before the body is read).
async fn apply_layer_selection<B: MediaBackend>(
    state: &AppState<B>,
    room: &str,
    id: &str,
    headers: &HeaderMap,
    body: Option<&Bytes>,
) -> Result<Response, ApiError> {
    validate_room(room)?;
    let grant = authorize(state, headers, room, SessionKind::Whep)?;
    let selection: LayerSelection = match body {
        Some(body) => json_body(body, "the layer selection (a JSON object)")?,
        None => LayerSelection::default(),
    };
    state
        .backend
        .select_layer(room, id, &grant.identity, selection)
        .await?;
    Ok(StatusCode::OK.into_response())
}
