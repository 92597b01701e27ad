//! The seam between the HTTP front door and the media server.
//!
//! Handlers authenticate and validate, then ask a [`MediaBackend`] to act.
//! The backend (the `sfu` crate's worker pool) owns every `Rtc`; this crate
//! never touches one. Keeping the seam a trait lets signaling be tested and
//! reasoned about without media, and lets the media side stay free of HTTP.

use std::future::Future;
use std::time::Duration;

use crate::sdpfrag::SdpFrag;

/// Which WHIP/WHEP flavour a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// WHIP ingest: the client publishes.
    Whip,
    /// WHEP playback: the client plays the room.
    Whep,
    /// A room member (a LiveKit client, or another node's bridge).
    Room,
}

impl SessionKind {
    pub fn path_prefix(self) -> &'static str {
        match self {
            SessionKind::Whip => "whip",
            SessionKind::Whep => "whep",
            SessionKind::Room => "rtc",
        }
    }
}

/// A request to create a session from an SDP offer.
#[derive(Debug, Clone)]
pub struct CreateSession {
    pub kind: SessionKind,
    pub room: String,
    pub identity: String,
    pub offer_sdp: String,
    /// WHEP: the viewer wants video at most this wide (`?maxWidth=640`).
    pub max_width: Option<u32>,
}

/// A created session.
#[derive(Debug, Clone)]
pub struct SessionCreated {
    /// Opaque, unguessable resource id (used in the `Location` URL).
    pub id: String,
    pub answer_sdp: String,
    /// Entity tag of the ICE session (changes on ICE restart).
    pub etag: String,
}

/// Result of a PATCH.
#[derive(Debug, Clone)]
pub enum PatchOutcome {
    /// Trickled candidates were added (204).
    Trickled,
    /// ICE restarted: the server's new fragment and the new entity tag (200).
    Restarted { answer_frag: String, etag: String },
}

pub use crate::whep_ext::{EventKinds, LayerSelection, SessionEvent};

/// Events of one session; the stream ends when the session ends.
pub type SessionEvents = tokio::sync::mpsc::Receiver<SessionEvent>;

/// A member joining a room (its session then speaks the room protocol
/// with the room's worker).
#[derive(Debug, Clone)]
pub struct JoinRoom {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// Re-attach to the participant this resume token was handed out for.
    pub resume: Option<String>,
    /// ICE servers with credentials minted for this participant (TURN), in
    /// addition to the server's static ones.
    pub ice_servers: Vec<crate::IceServer>,
    /// Another node's bridge into the room (a `room_bridge` grant).
    pub bridge: bool,
}

/// A joined participant's socket side: its messages from the room. The
/// channel closes when the participant is gone (or another socket resumed it).
#[derive(Debug)]
pub struct RoomConnection {
    /// Participant sid; with `generation` it addresses this socket's participant.
    pub participant: String,
    /// Counts resumes: messages of an older socket are ignored.
    pub generation: u64,
    pub messages: tokio::sync::mpsc::Receiver<crate::room_protocol::ServerMessage>,
}

/// Errors a backend reports; [`crate::errors`] maps them to HTTP statuses.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The offer could not be parsed (400).
    #[error("malformed SDP: {0}")]
    MalformedSdp(String),
    /// The offer parsed but nothing in it can be served (422).
    #[error("unusable SDP: {0}")]
    UnusableSdp(String),
    /// A request names something the session does not have, such as a
    /// layer the publisher does not send (422).
    #[error("{0}")]
    Unprocessable(String),
    /// No such session (404).
    #[error("no such session")]
    NotFound,
    /// The session belongs to another identity (403).
    #[error("this session belongs to another identity")]
    NotOwner,
    /// `If-Match` did not match the current entity tag (412).
    #[error("entity tag does not match the session's current ICE session")]
    PreconditionFailed,
    /// An ICE restart without `If-Match` (428, RFC 9725 §4.3.2).
    #[error("an ICE restart needs an If-Match header with the session's ETag (or \"*\")")]
    PreconditionRequired,
    /// A configured limit is reached (503 with Retry-After).
    #[error("{what} limit reached")]
    OverCapacity { what: String, retry_after: Duration },
    /// The identity already holds as many sessions as allowed (429).
    #[error("identity {identity:?} already has {limit} sessions in this room (the limit)")]
    TooManySessions { identity: String, limit: usize },
    /// The server is draining for shutdown and takes no new rooms (503
    /// with Retry-After; another node, or this one after a restart, will).
    #[error("this server is shutting down and takes no new rooms; retry shortly")]
    Draining { retry_after: Duration },
    /// The cluster's shared state (Redis) cannot be reached, so a new room
    /// cannot be placed (503 with Retry-After); rooms in progress continue.
    #[error(
        "the cluster state (Redis) is unreachable, so no new room can be placed; retry shortly"
    )]
    ClusterUnavailable { retry_after: Duration },
    /// The room is placed on a node whose registration is gone (it stopped
    /// or missed its heartbeats): 503 with Retry-After; once the
    /// registration expires for good the room is placed anew.
    #[error("the room's node {node:?} is not registered in the cluster (restarting or unreachable); retry shortly")]
    RoomNodeUnregistered { node: String, retry_after: Duration },
    /// A resume token is unknown or expired.
    #[error("cannot resume: the participant is gone (rejoin)")]
    ResumeFailed,
    /// Something on our side failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the front door needs from the media server.
pub trait MediaBackend: Clone + Send + Sync + 'static {
    fn create_session(
        &self,
        req: CreateSession,
    ) -> impl Future<Output = Result<SessionCreated, BackendError>> + Send;

    fn patch_session(
        &self,
        kind: SessionKind,
        room: &str,
        id: &str,
        identity: &str,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> impl Future<Output = Result<PatchOutcome, BackendError>> + Send;

    /// End a session; only its own identity may (`NotOwner` otherwise).
    fn delete_session(
        &self,
        kind: SessionKind,
        room: &str,
        id: &str,
        identity: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Create an event stream of a WHEP session carrying `kinds` (the
    /// server-sent events extension's POST); returns its id.
    fn open_event_stream(
        &self,
        room: &str,
        id: &str,
        kinds: EventKinds,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// Attach to event stream `stream` of a WHEP session: the current state
    /// first, then changes, of the stream's kinds. Ends with the session or
    /// when the stream is closed.
    fn session_events(
        &self,
        room: &str,
        id: &str,
        stream: &str,
    ) -> impl Future<Output = Result<SessionEvents, BackendError>> + Send;

    /// Close event stream `stream` (NotFound when there is none).
    fn close_event_stream(
        &self,
        room: &str,
        id: &str,
        stream: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A WHEP player's layer wish (the layer extension), held until the
    /// next; only the session's own identity may.
    fn select_layer(
        &self,
        room: &str,
        id: &str,
        identity: &str,
        selection: LayerSelection,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Prometheus text exposition of the server's metrics.
    fn render_metrics(&self) -> String;

    /// True while the server drains for shutdown: `/healthz` answers 503 so
    /// that load balancers stop sending new rooms here.
    fn draining(&self) -> bool {
        false
    }

    /// Join a room (or resume a participant) over the room protocol.
    fn join_room(
        &self,
        req: JoinRoom,
    ) -> impl Future<Output = Result<RoomConnection, BackendError>> + Send;

    /// A message from a participant's socket (already parsed and rate limited).
    fn room_message(
        &self,
        participant: &str,
        generation: u64,
        msg: crate::room_protocol::ClientMessage,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A participant's socket closed (the reconnect grace period starts).
    fn room_socket_closed(
        &self,
        participant: &str,
        generation: u64,
    ) -> impl Future<Output = ()> + Send;

    /// Room administration (`/api/`).
    fn admin(
        &self,
        req: crate::admin::AdminRequest,
    ) -> impl Future<Output = Result<crate::admin::AdminReply, BackendError>> + Send;
}
