//! Meetings spread over the node's workers. Once a room has
//! `spread_viewers_at` participants on its worker, its new room-protocol
//! members go to the least-loaded worker (when that one carries fewer), into
//! a satellite of the room there: the same satellite and bridge a meeting
//! over nodes uses (see [`crate::worker::core::bridge`]), with the bridge's
//! room-protocol messages carried through the two workers' command queues
//! instead of a WebSocket, and its media over loopback UDP.
//!
//! This module is the control side (tokio): choosing the worker, opening
//! the bridge (one per room and worker), and carrying its messages until
//! either end closes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use dashmap::DashMap;
use signaling::backend::{BackendError, JoinRoom, MediaBackend, RoomConnection};
use signaling::room_protocol::ClientMessage;
use tokio::sync::{mpsc, oneshot};

use super::fanout::reachable;
use super::{new_resource_id, SfuBackend};
use crate::worker::core::bridge::OpenBridge;
use crate::worker::Command;

/// Messages queued from a satellite's bridge toward the room's worker.
const UPSTREAM_QUEUE: usize = 1024;

/// The bridges of this node's satellites, by (room, worker): the
/// satellite's bridge resource id, behind a lock that serialises opening it.
#[derive(Default)]
pub(super) struct LocalBridges {
    bridges: DashMap<(String, usize), Arc<tokio::sync::Mutex<Option<String>>>>,
}

impl LocalBridges {
    /// Workers holding a satellite of `room`.
    pub(super) fn workers_of(&self, room: &str) -> Vec<usize> {
        self.bridges
            .iter()
            .filter(|e| e.key().0 == room)
            .map(|e| e.key().1)
            .collect()
    }
}

impl SfuBackend {
    /// Join a room-protocol member on a satellite when the room's worker is
    /// busy; None: join it on the room's worker as usual.
    pub(super) async fn join_spread(
        &self,
        req: &JoinRoom,
    ) -> Option<Result<RoomConnection, BackendError>> {
        if req.bridge || req.resume.is_some() {
            return None;
        }
        let (home, worker) = self.spread_target(&req.room)?;
        if let Err(e) = self.ensure_local_bridge(&req.room, home, worker).await {
            tracing::warn!(room = %req.room, home, worker, error = %e, "satellite failed; the member joins the room's worker");
            return None;
        }
        Some(self.join_on(worker, req.clone()).await)
    }

    /// A resumed member of a satellite: its worker, if not the room's.
    pub(super) async fn resume_spread(&self, req: &JoinRoom) -> Option<RoomConnection> {
        for worker in self.local_bridges.workers_of(&req.room) {
            if let Ok(conn) = self.join_on(worker, req.clone()).await {
                return Some(conn);
            }
        }
        None
    }

    pub(super) async fn join_on(
        &self,
        worker: usize,
        req: JoinRoom,
    ) -> Result<RoomConnection, BackendError> {
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.ask(worker, Command::Join { req, reply, span }, rx)
            .await
    }

    /// Make sure `room` (on worker `home`) has a satellite bridged to it on
    /// `worker`.
    async fn ensure_local_bridge(
        &self,
        room: &str,
        home: usize,
        worker: usize,
    ) -> Result<(), BackendError> {
        let slot = self
            .local_bridges
            .bridges
            .entry((room.to_string(), worker))
            .or_default()
            .clone();
        let mut bridge = slot.lock().await;
        if bridge
            .as_ref()
            .is_some_and(|id| self.registry.resource(id).is_some())
        {
            return Ok(());
        }
        *bridge = Some(self.open_local_bridge(room, home, worker).await?);
        Ok(())
    }

    async fn open_local_bridge(
        &self,
        room: &str,
        home: usize,
        worker: usize,
    ) -> Result<String, BackendError> {
        let home_addr = reachable(self.worker(home)?.media_addr);
        let socket = UdpSocket::bind(SocketAddr::new(home_addr.ip(), 0))
            .map_err(|e| BackendError::Internal(format!("bridge socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| BackendError::Internal(format!("bridge socket: {e}")))?;
        let resource_id = new_resource_id();
        let identity = format!("bridge:worker-{worker}");
        let (upstream, outbound) = mpsc::channel(UPSTREAM_QUEUE);
        let (reply, rx) = oneshot::channel();
        let cmd = Command::OpenBridge {
            req: OpenBridge {
                room: room.to_string(),
                local,
                resource_id: resource_id.clone(),
                identity: identity.clone(),
                upstream,
                fanout_of: Some(home),
                home_addr: Some(home_addr),
            },
            socket: Some(socket),
            reply,
        };
        self.ask(worker, cmd, rx).await?;
        let join = JoinRoom {
            room: room.to_string(),
            identity: identity.clone(),
            name: identity,
            metadata: String::new(),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: false,
            resume: None,
            ice_servers: vec![],
            bridge: true,
        };
        let conn = match self.join_on(home, join).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.close_bridge(&resource_id).await;
                return Err(e);
            }
        };
        tokio::spawn(shuttle(self.clone(), conn, outbound, resource_id.clone()));
        tracing::info!(%room, home, worker, %local, "satellite bridged to the room's worker");
        Ok(resource_id)
    }
}

/// Carry the bridge's messages between the room's worker (its member's
/// socket side) and the satellite's worker until either ends; then both
/// ends close.
async fn shuttle(
    backend: SfuBackend,
    mut conn: RoomConnection,
    mut outbound: mpsc::Receiver<ClientMessage>,
    satellite: String,
) {
    loop {
        tokio::select! {
            msg = conn.messages.recv() => {
                let Some(msg) = msg else { break };
                let last = msg.is_final();
                if backend.bridge_inbound(&satellite, msg).await.is_err() || last {
                    break;
                }
            }
            out = outbound.recv() => {
                let Some(msg) = out else { break };
                if backend.room_message(&conn.participant, conn.generation, msg).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = backend
        .room_message(&conn.participant, conn.generation, ClientMessage::Leave {})
        .await;
    let _ = backend.close_bridge(&satellite).await;
}
