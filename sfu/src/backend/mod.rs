//! The media side of the front door's [`MediaBackend`] seam: places rooms on
//! workers, sends them commands and awaits their answers.

mod fanout;
mod spread;

pub use fanout::FanoutSettings;

use std::sync::Arc;
use std::time::Duration;

use signaling::admin::{AdminReply, AdminRequest};
use signaling::backend::{
    BackendError, CreateSession, EventKinds, JoinRoom, LayerSelection, PatchOutcome,
    RoomConnection, SessionCreated, SessionEvents,
};
use signaling::room_protocol::ClientMessage;
use signaling::sdpfrag::SdpFrag;
use signaling::{MediaBackend, SessionKind};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::registry::{PlaceRefusal, Registry};
use crate::worker::core::bridge::OpenBridge;
use crate::worker::core::relay::OpenRelay;
use crate::worker::core::CreateRequest;
use crate::worker::{Command, WorkerHandle};

/// Retry-After for a new room refused while draining: long enough for a
/// load balancer to notice the failing health check.
const DRAINING_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long signaling waits for a worker's answer.
const WORKER_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct SfuBackend {
    workers: Arc<[WorkerHandle]>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    max_rooms: usize,
    fanout: Arc<fanout::Fanout>,
    local_bridges: Arc<spread::LocalBridges>,
}

impl SfuBackend {
    pub fn new(
        workers: Vec<WorkerHandle>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        max_rooms: usize,
        fanout: FanoutSettings,
    ) -> Self {
        SfuBackend {
            workers: workers.into(),
            registry,
            metrics,
            max_rooms,
            fanout: Arc::new(fanout::Fanout::new(fanout)),
            local_bridges: Arc::default(),
        }
    }

    fn least_loaded(&self) -> usize {
        self.workers
            .iter()
            .min_by_key(|w| w.load())
            .map(|w| w.index)
            .unwrap_or(0)
    }

    fn worker(&self, index: usize) -> Result<&WorkerHandle, BackendError> {
        self.workers
            .get(index)
            .ok_or_else(|| BackendError::Internal(format!("no worker {index}")))
    }

    /// The worker hosting `room`, placing it when it is new (503 when full
    /// or draining).
    fn place(&self, room: &str) -> Result<usize, BackendError> {
        self.registry
            .place_room(room, self.max_rooms, || self.least_loaded())
            .map_err(|refusal| match refusal {
                PlaceRefusal::Full => BackendError::OverCapacity {
                    what: format!("rooms ({})", self.max_rooms),
                    retry_after: Duration::from_secs(10),
                },
                PlaceRefusal::Draining => BackendError::Draining {
                    retry_after: DRAINING_RETRY_AFTER,
                },
            })
    }

    /// Join (or resume) on the worker hosting the room.
    async fn join(&self, req: JoinRoom) -> Result<RoomConnection, BackendError> {
        if req.resume.is_some() {
            // The participant lives where its room lives.
            let worker = self
                .registry
                .room_worker(&req.room)
                .ok_or(BackendError::ResumeFailed)?;
            let (reply, rx) = oneshot::channel();
            let span = tracing::Span::current();
            return self
                .ask(worker, Command::Join { req, reply, span }, rx)
                .await;
        }
        let room = req.room.clone();
        self.ask_placed(&room, |reply| Command::Join {
            req: req.clone(),
            reply,
            span: tracing::Span::current(),
        })
        .await
    }

    /// Ask the worker that hosts `room` (placing it when new). A room
    /// emptied and re-placed between our look-up and the worker's claim is
    /// retried; the loop is bounded.
    async fn ask_placed<T>(
        &self,
        room: &str,
        command: impl Fn(oneshot::Sender<Result<T, BackendError>>) -> Command,
    ) -> Result<T, BackendError> {
        let mut last_err = BackendError::Internal("placement failed".into());
        for _ in 0..3 {
            let worker = self.place(room)?;
            let (reply, rx) = oneshot::channel();
            match self.ask(worker, command(reply), rx).await {
                Err(BackendError::Internal(msg)) if msg.contains("retry") => {
                    last_err = BackendError::Internal(msg);
                }
                other => return other,
            }
        }
        Err(last_err)
    }

    async fn ask<T>(
        &self,
        worker: usize,
        cmd: Command,
        rx: oneshot::Receiver<Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.worker(worker)?.send(cmd).await?;
        match tokio::time::timeout(WORKER_REPLY_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BackendError::Internal(
                "media worker dropped the request".into(),
            )),
            Err(_) => Err(BackendError::Internal(
                "media worker did not answer in time".into(),
            )),
        }
    }

    /// The worker of resource `id` of `kind` in `room` (404), checking that
    /// `identity`, when given, owns it (403).
    fn resource_worker(
        &self,
        kind: SessionKind,
        room: Option<&str>,
        id: &str,
        identity: Option<&str>,
    ) -> Result<usize, BackendError> {
        match self.registry.resource(id) {
            Some(e) if e.kind == kind && room.is_none_or(|r| r == e.room) => match identity {
                Some(who) if who != e.identity => Err(BackendError::NotOwner),
                _ => Ok(e.worker),
            },
            _ => Err(BackendError::NotFound),
        }
    }
}

/// The edge side of a cluster relay (see [`crate::cluster::edge`]).
impl SfuBackend {
    /// Create a relay participant in the (edge) room here; its offer.
    pub async fn open_relay(
        &self,
        req: OpenRelay,
        socket: std::net::UdpSocket,
    ) -> Result<String, BackendError> {
        let worker = self.place(&req.room)?;
        self.open_relay_on(worker, req, socket).await
    }

    /// Create a relay participant in `req.room` on `worker`; its offer.
    async fn open_relay_on(
        &self,
        worker: usize,
        req: OpenRelay,
        socket: std::net::UdpSocket,
    ) -> Result<String, BackendError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::OpenRelay {
            req,
            socket: Some(socket),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    /// The hosting side's answer to relay `resource_id`'s offer, an
    /// address of it to try besides the answer's, and whether a publisher's
    /// media flows upstream now.
    pub async fn answer_relay(
        &self,
        resource_id: &str,
        answer_sdp: String,
        candidate: Option<std::net::SocketAddr>,
        upstream_active: bool,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whip, None, resource_id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::AnswerRelay {
            resource_id: resource_id.to_string(),
            answer_sdp,
            candidate,
            upstream_active,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    /// Relay `resource_id`'s upstream started or stopped receiving a
    /// publisher's media (404 once the relay is gone).
    pub async fn relay_upstream(
        &self,
        resource_id: &str,
        active: bool,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whip, None, resource_id, None)?;
        let cmd = Command::RelayUpstream {
            resource_id: resource_id.to_string(),
            active,
        };
        self.worker(worker)?.send(cmd).await
    }

    /// End relay `resource_id` here.
    pub async fn close_relay(&self, resource_id: &str) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whip, None, resource_id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Delete {
            resource_id: resource_id.to_string(),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    /// Hosting side: relay `resource_id` (of `identity`) wants only `rids`.
    pub async fn relay_layers(
        &self,
        resource_id: &str,
        identity: &str,
        rids: Vec<String>,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whep, None, resource_id, Some(identity))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::RelayLayers {
            resource_id: resource_id.to_string(),
            identity: identity.to_string(),
            rids,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

/// The satellite side of a bridge (see [`crate::cluster::bridge`]).
impl SfuBackend {
    /// Create the bridge member of satellite room `req.room` here.
    pub async fn open_bridge(
        &self,
        req: OpenBridge,
        socket: std::net::UdpSocket,
    ) -> Result<(), BackendError> {
        let worker = self.place(&req.room)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::OpenBridge {
            req,
            socket: Some(socket),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    /// A message of the hosting node for bridge `resource_id` (404 once
    /// the bridge is gone).
    pub async fn bridge_inbound(
        &self,
        resource_id: &str,
        msg: signaling::room_protocol::ServerMessage,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Room, None, resource_id, None)?;
        let cmd = Command::BridgeInbound {
            resource_id: resource_id.to_string(),
            msg,
        };
        self.worker(worker)?.send(cmd).await
    }

    /// End bridge `resource_id` here (its far participants leave the satellite).
    pub async fn close_bridge(&self, resource_id: &str) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Room, None, resource_id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Delete {
            resource_id: resource_id.to_string(),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }
}

/// The worker command that creates session `req` (a new resource id).
fn create_command(
    req: &CreateSession,
    reply: oneshot::Sender<Result<SessionCreated, BackendError>>,
) -> Command {
    Command::Create {
        req: CreateRequest {
            kind: req.kind,
            room: req.room.clone(),
            identity: req.identity.clone(),
            resource_id: new_resource_id(),
            offer_sdp: req.offer_sdp.clone(),
            max_width: req.max_width,
            local_relay: false,
        },
        reply,
        span: tracing::Span::current(),
    }
}

pub fn new_resource_id() -> String {
    // 128 random bits: resource URLs are capabilities, so they must not be guessable.
    format!("{:032x}", rand::random::<u128>())
}

impl MediaBackend for SfuBackend {
    async fn create_session(&self, req: CreateSession) -> Result<SessionCreated, BackendError> {
        if req.kind == SessionKind::Whep {
            if let Some(created) = self.create_on_fanout(&req).await {
                return created;
            }
        }
        self.check_spread_room(&req.room, &req.identity)?;
        self.ask_placed(&req.room, |reply| create_command(&req, reply))
            .await
    }

    async fn patch_session(
        &self,
        kind: SessionKind,
        room: &str,
        id: &str,
        identity: &str,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> Result<PatchOutcome, BackendError> {
        let worker = self.resource_worker(kind, Some(room), id, Some(identity))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Patch {
            resource_id: id.to_string(),
            if_match,
            frag,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn delete_session(
        &self,
        kind: SessionKind,
        room: &str,
        id: &str,
        identity: &str,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(kind, Some(room), id, Some(identity))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Delete {
            resource_id: id.to_string(),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn open_event_stream(
        &self,
        room: &str,
        id: &str,
        kinds: EventKinds,
    ) -> Result<String, BackendError> {
        // The unguessable resource URL is the capability for its event streams.
        let worker = self.resource_worker(SessionKind::Whep, Some(room), id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::OpenEvents {
            resource_id: id.to_string(),
            kinds,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn session_events(
        &self,
        room: &str,
        id: &str,
        stream: &str,
    ) -> Result<SessionEvents, BackendError> {
        let worker = self.resource_worker(SessionKind::Whep, Some(room), id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Events {
            resource_id: id.to_string(),
            stream: Some(stream.to_string()),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn close_event_stream(
        &self,
        room: &str,
        id: &str,
        stream: &str,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whep, Some(room), id, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::CloseEvents {
            resource_id: id.to_string(),
            stream: stream.to_string(),
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn select_layer(
        &self,
        room: &str,
        id: &str,
        identity: &str,
        selection: LayerSelection,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Whep, Some(room), id, Some(identity))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::SelectLayer {
            resource_id: id.to_string(),
            selection,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn join_room(&self, req: JoinRoom) -> Result<RoomConnection, BackendError> {
        if req.resume.is_none() {
            self.check_spread_room(&req.room, &req.identity)?;
        }
        let joined = match self.join_spread(&req).await {
            Some(joined) => joined,
            None => match self.join(req.clone()).await {
                // A member of a satellite on another worker resumes there.
                Err(BackendError::ResumeFailed) => self
                    .resume_spread(&req)
                    .await
                    .ok_or(BackendError::ResumeFailed),
                other => other,
            },
        };
        if joined.is_ok() {
            // Its socket handler calls room_socket_closed when it ends.
            self.registry.room_socket_opened();
        }
        joined
    }

    async fn room_message(
        &self,
        participant: &str,
        generation: u64,
        msg: ClientMessage,
    ) -> Result<(), BackendError> {
        let worker = self.resource_worker(SessionKind::Room, None, participant, None)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::RoomMessage {
            participant: participant.to_string(),
            generation,
            msg,
            reply,
        };
        self.ask(worker, cmd, rx).await
    }

    async fn room_socket_closed(&self, participant: &str, generation: u64) {
        self.registry.room_socket_closed();
        let Ok(worker) = self.resource_worker(SessionKind::Room, None, participant, None) else {
            return;
        };
        if let Ok(w) = self.worker(worker) {
            let _ = w
                .send(Command::SocketClosed {
                    participant: participant.to_string(),
                    generation,
                })
                .await;
        }
    }

    async fn admin(&self, req: AdminRequest) -> Result<AdminReply, BackendError> {
        let Some(room) = req.room() else {
            // Every worker lists its own rooms.
            let mut rooms = vec![];
            for w in self.workers.iter() {
                let (reply, rx) = oneshot::channel();
                let cmd = Command::Admin {
                    req: AdminRequest::ListRooms,
                    reply,
                };
                if let AdminReply::Rooms(r) = self.ask(w.index, cmd, rx).await? {
                    rooms.extend(r);
                }
            }
            // Edges relay another node's room: that node lists it.
            rooms.retain(|r| !self.registry.is_edge(&r.name));
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(AdminReply::Rooms(rooms));
        };
        let worker = self
            .registry
            .room_worker(room)
            .ok_or(BackendError::NotFound)?;
        if let AdminRequest::CloseRoom { room } = &req {
            // Its viewers on other workers go with it.
            for fanout in self.fanout_workers(room) {
                let (reply, rx) = oneshot::channel();
                let close = AdminRequest::CloseRoom { room: room.clone() };
                let _ = self
                    .ask(fanout, Command::Admin { req: close, reply }, rx)
                    .await;
            }
        }
        let (reply, rx) = oneshot::channel();
        let answer = self
            .ask(
                worker,
                Command::Admin {
                    req: req.clone(),
                    reply,
                },
                rx,
            )
            .await;
        if let (Err(BackendError::NotFound), AdminRequest::Subscriptions { room, .. }) =
            (&answer, &req)
        {
            // A viewer may be on a fan-out of the room.
            for fanout in self.fanout_workers(room) {
                let (reply, rx) = oneshot::channel();
                let cmd = Command::Admin {
                    req: req.clone(),
                    reply,
                };
                match self.ask(fanout, cmd, rx).await {
                    Err(BackendError::NotFound) => continue,
                    other => return other,
                }
            }
        }
        answer
    }

    fn draining(&self) -> bool {
        self.registry.is_draining()
    }

    fn render_metrics(&self) -> String {
        self.metrics
            .registry_entries
            .set(self.registry.len() as i64);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.metrics
                .alive_tasks
                .set(handle.metrics().num_alive_tasks() as i64);
        }
        self.metrics.render()
    }
}
