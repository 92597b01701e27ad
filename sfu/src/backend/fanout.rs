//! Fan-out of a room over the node's workers. A room lives on one worker
//! thread; once the room has `spread_viewers_at` participants there, its
//! new WHEP viewers go to the least-loaded worker instead (when that one
//! carries fewer participants), into a *fan-out* of the room there. One relay per fan-out feeds it from the
//! room's worker, however many viewers it serves: the same relay an edge
//! node uses (a WHEP session asking for every simulcast layer), over
//! loopback UDP. Layers are chosen per viewer on the fan-out's worker, and
//! the relay carries only the layers its viewers can use.
//!
//! This module is the control side (tokio): choosing the worker of a new
//! viewer, opening relays, and a supervisor that sends the viewers' layer
//! wishes upstream, closes relays whose other end ended, and re-opens them
//! while viewers wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use signaling::backend::{BackendError, CreateSession, SessionCreated, SessionEvent};
use signaling::SessionKind;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{create_command, new_resource_id, SfuBackend};
use crate::worker::core::relay::OpenRelay;
use crate::worker::core::CreateRequest;
use crate::worker::Command;

/// How often the supervisor looks at the relays.
const SUPERVISE: Duration = Duration::from_secs(1);

/// A room's fan-out on one worker: (room, worker).
type FanoutKey = (String, usize);

/// The fan-outs of this node, each behind a lock that serialises opening
/// its relay.
pub(super) struct Fanout {
    settings: FanoutSettings,
    relays: DashMap<FanoutKey, Arc<tokio::sync::Mutex<Option<FanoutRelay>>>>,
}

/// When rooms spread, and the per-room limits a spread room must still
/// keep (each worker checks only its own part of the room).
#[derive(Debug, Clone, Copy)]
pub struct FanoutSettings {
    /// Participants on a room's worker from which its new viewers may go
    /// to other workers (0: never).
    pub spread_viewers_at: usize,
    pub max_participants_per_room: usize,
    /// 0: no limit.
    pub max_sessions_per_identity: usize,
}

impl Fanout {
    pub(super) fn new(settings: FanoutSettings) -> Fanout {
        Fanout {
            settings,
            relays: DashMap::new(),
        }
    }
}

/// One open relay: a relay participant on the fan-out's worker, and the
/// WHEP session it plays on the room's worker.
#[derive(Debug)]
struct FanoutRelay {
    resource_id: String,
    home: usize,
    upstream: String,
    identity: String,
    /// The streams last asked for upstream (None: not yet, so all flow).
    asked: Option<Vec<String>>,
}

/// An address of this machine that reaches a socket bound to `addr`.
pub(super) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

impl SfuBackend {
    /// Where a new viewer of `room` goes instead of the room's own worker:
    /// Some((room's worker, other worker)), or None to join the room there.
    pub(super) fn spread_target(&self, room: &str) -> Option<(usize, usize)> {
        if self.fanout.settings.spread_viewers_at == 0 || self.workers.len() < 2 {
            return None;
        }
        let home = self.registry.room_worker(room)?;
        let spread_at = self.fanout.settings.spread_viewers_at;
        let home_load = self.workers.get(home)?.load();
        let least = self.least_loaded();
        let least_load = self.workers.get(least)?.load();
        if home_load < spread_at || least == home || least_load >= home_load {
            return None;
        }
        // The room itself must be that big: a relay carries every layer and
        // is received again, too much for a small room on a busy worker.
        // (Counted only when the worker is busy: a walk over the sessions.)
        (self.registry.sessions_of(room, home, None) >= spread_at).then_some((home, least))
    }

    /// Serve WHEP request `req` on a fan-out when the room's worker is
    /// busy; None: serve it on the room's worker as usual.
    pub(super) async fn create_on_fanout(
        &self,
        req: &CreateSession,
    ) -> Option<Result<SessionCreated, BackendError>> {
        let (home, worker) = self.spread_target(&req.room)?;
        if let Err(e) = self.check_spread_room(&req.room, &req.identity) {
            return Some(Err(e));
        }
        if let Err(e) = self.ensure_fanout(&req.room, home, worker).await {
            tracing::warn!(room = %req.room, home, worker, error = %e, "fan-out failed; the viewer joins the room's worker");
            return None;
        }
        let (reply, rx) = oneshot::channel();
        Some(self.ask(worker, create_command(req, reply), rx).await)
    }

    /// The per-room limits over every worker of a room with fan-outs (the
    /// workers check only their own part).
    pub(super) fn check_spread_room(&self, room: &str, identity: &str) -> Result<(), BackendError> {
        let fanouts = self.fanout_workers(room).len();
        if fanouts == 0 {
            return Ok(());
        }
        let limits = &self.fanout.settings;
        let (sessions, of_identity) = self.registry.sessions_in(room, identity);
        // A relay is two sessions (its two ends), not participants.
        let sessions = sessions.saturating_sub(2 * fanouts);
        if sessions >= limits.max_participants_per_room {
            return Err(BackendError::OverCapacity {
                what: format!(
                    "participants per room ({})",
                    limits.max_participants_per_room
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        if limits.max_sessions_per_identity > 0 && of_identity >= limits.max_sessions_per_identity {
            return Err(BackendError::TooManySessions {
                identity: identity.to_string(),
                limit: limits.max_sessions_per_identity,
            });
        }
        Ok(())
    }

    /// Workers holding a fan-out of `room`: one per relay (WHEP viewers)
    /// and one per bridge (room-protocol members) into it.
    pub(super) fn fanout_workers(&self, room: &str) -> Vec<usize> {
        self.fanout
            .relays
            .iter()
            .filter(|e| e.key().0 == room)
            .map(|e| e.key().1)
            .chain(self.local_bridges.workers_of(room))
            .collect()
    }

    /// Make sure `room` (on worker `home`) has a live relay into its
    /// fan-out on `worker`.
    async fn ensure_fanout(
        &self,
        room: &str,
        home: usize,
        worker: usize,
    ) -> Result<(), BackendError> {
        let slot = self
            .fanout
            .relays
            .entry((room.to_string(), worker))
            .or_default()
            .clone();
        let mut relay = slot.lock().await;
        if let Some(r) = relay.as_ref() {
            if self.relay_runs(r) {
                return Ok(());
            }
        }
        if let Some(ended) = relay.take() {
            self.close_fanout_relay(&ended).await;
        }
        *relay = Some(self.open_fanout_relay(room, home, worker).await?);
        Ok(())
    }

    /// Both ends of `relay` are alive.
    fn relay_runs(&self, relay: &FanoutRelay) -> bool {
        self.registry.resource(&relay.resource_id).is_some()
            && self.registry.resource(&relay.upstream).is_some()
    }

    async fn open_fanout_relay(
        &self,
        room: &str,
        home: usize,
        worker: usize,
    ) -> Result<FanoutRelay, BackendError> {
        let home_addr = reachable(self.worker(home)?.media_addr);
        let socket = UdpSocket::bind(SocketAddr::new(home_addr.ip(), 0))
            .map_err(|e| BackendError::Internal(format!("relay socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| BackendError::Internal(format!("relay socket: {e}")))?;
        let relay = FanoutRelay {
            resource_id: new_resource_id(),
            home,
            upstream: new_resource_id(),
            identity: format!("relay:worker-{worker}"),
            asked: None,
        };
        let offer = self
            .open_relay_on(
                worker,
                OpenRelay {
                    room: room.to_string(),
                    local,
                    resource_id: relay.resource_id.clone(),
                    identity: relay.identity.clone(),
                    fanout_of: Some(home),
                },
                socket,
            )
            .await?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Create {
            req: CreateRequest {
                kind: SessionKind::Whep,
                room: room.to_string(),
                identity: relay.identity.clone(),
                resource_id: relay.upstream.clone(),
                offer_sdp: offer,
                max_width: None,
                local_relay: true,
            },
            reply,
            span: tracing::Span::current(),
        };
        let answered = match self.ask(home, cmd, rx).await {
            Ok(created) => self.answer_fanout_relay(&relay, created, home_addr).await,
            Err(e) => Err(e),
        };
        match answered {
            Ok(()) => {
                tracing::info!(%room, home, worker, %local, "fan-out relay opened");
                Ok(relay)
            }
            Err(e) => {
                self.close_fanout_relay(&relay).await;
                Err(e)
            }
        }
    }

    /// Give the relay its upstream's answer, with the upstream's activity
    /// now and, from a task, as it changes: the fan-out's viewers see the
    /// publisher come and go as the room's own viewers do.
    async fn answer_fanout_relay(
        &self,
        relay: &FanoutRelay,
        upstream: SessionCreated,
        home_addr: SocketAddr,
    ) -> Result<(), BackendError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Events {
            resource_id: relay.upstream.clone(),
            stream: None,
            reply,
        };
        let mut events = self.ask(relay.home, cmd, rx).await?;
        // The stream starts with the session's state now.
        let active = events.recv().await == Some(SessionEvent::Active);
        self.answer_relay(
            &relay.resource_id,
            upstream.answer_sdp,
            Some(home_addr),
            active,
        )
        .await?;
        let backend = self.clone();
        let resource_id = relay.resource_id.clone();
        tokio::spawn(async move {
            // Ends with the upstream session, or with the relay.
            while let Some(event) = events.recv().await {
                let active = event == SessionEvent::Active;
                if backend.relay_upstream(&resource_id, active).await.is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// End both sides of `relay` (either may be gone already).
    async fn close_fanout_relay(&self, relay: &FanoutRelay) {
        let _ = self.close_relay(&relay.resource_id).await;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Delete {
            resource_id: relay.upstream.clone(),
            reply,
        };
        let _ = self.ask(relay.home, cmd, rx).await;
    }

    /// Look after the fan-outs until `shutdown`.
    pub fn start_fanout_supervisor(&self, shutdown: CancellationToken) {
        let backend = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SUPERVISE);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let keys: Vec<FanoutKey> = backend
                    .fanout
                    .relays
                    .iter()
                    .map(|e| e.key().clone())
                    .collect();
                let mut running = 0;
                for key in keys {
                    running += i64::from(backend.supervise_fanout(&key).await);
                }
                backend.metrics.fanout_relays.set(running);
            }
        });
    }

    /// Look after one fan-out; true when its relay runs.
    async fn supervise_fanout(&self, key: &FanoutKey) -> bool {
        let Some(slot) = self.fanout.relays.get(key).map(|e| e.clone()) else {
            return false;
        };
        let mut relay = slot.lock().await;
        if let Some(r) = relay.as_mut() {
            if self.relay_runs(r) {
                self.ask_for_wanted(r).await;
                return true;
            }
        }
        // One end is gone: no viewer was left here (the relay idled out),
        // or the room's side ended.
        if let Some(ended) = relay.take() {
            self.close_fanout_relay(&ended).await;
        }
        let (room, worker) = key;
        let waiting = self
            .registry
            .sessions_of(room, *worker, Some(SessionKind::Whep))
            > 0;
        match self.registry.room_worker(room) {
            Some(home) if waiting && home != *worker => {
                match self.open_fanout_relay(room, home, *worker).await {
                    Ok(r) => {
                        *relay = Some(r);
                        return true;
                    }
                    Err(e) => {
                        tracing::debug!(%room, error = %e, "fan-out: re-open failed; retrying")
                    }
                }
            }
            // The room ended: its viewers here wait for it to come back.
            None if waiting => {}
            // Nobody left here, or the fan-out became the room itself.
            _ => {
                drop(relay);
                self.fanout.relays.remove(key);
            }
        }
        false
    }

    /// Tell the room's worker which streams the fan-out's viewers can use.
    async fn ask_for_wanted(&self, relay: &mut FanoutRelay) {
        let Some(wanted) = self.registry.relay_wanted(&relay.resource_id) else {
            return;
        };
        if relay.asked.as_ref() == Some(&wanted) {
            return;
        }
        match self
            .relay_layers(&relay.upstream, &relay.identity, wanted.clone())
            .await
        {
            Ok(()) => {
                tracing::debug!(resource = %relay.resource_id, ?wanted, "fan-out: asked for the streams viewers use");
                relay.asked = Some(wanted);
            }
            Err(e) => tracing::debug!(error = %e, "fan-out: layer wish refused"),
        }
    }
}
