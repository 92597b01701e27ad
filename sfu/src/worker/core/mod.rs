//! The state a media worker owns and the logic that drives it, without IO:
//! rooms, participants and their `Rtc`s, the demultiplexing index.
//!
//! The event loop ([`super::event_loop`]) feeds it datagrams, commands and
//! timeouts together with the current time, and sends the transmits it
//! returns through the `transmit` callback. Forwarding inside a room is a
//! plain function call: no locks, no channels on the packet path.
//!
//! This file holds the entry points and event dispatch; `removal` liveness
//! and removal; `negotiation` sets sessions up and renegotiates them,
//! `downlink` a dual-mode member's server-offered connection, `forwarding` is the
//! packet path and the simulcast control loop, `conference` the room
//! protocol (members, events, data channels, speakers, admin).

pub mod bridge;
mod conference;
mod downlink;
mod forwarding;
mod negotiation;
pub mod relay;
mod removal;
mod whep_ext;

use forwarding::LAYER_INTERVAL;
/// The `Rtc` configuration of a session (public for the send-path benchmark).
pub use negotiation::{rtc_config, Downlink};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::backend::{BackendError, PatchOutcome, SessionCreated, SessionEvent};
use signaling::sdpfrag::SdpFrag;
use signaling::SessionKind;
use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, IceCreds, Input, Rtc, RtcConfig};

use super::demux::{Demux, Route};
use super::Command;
use crate::forward::router::{DownTrackKey, ProbeRequest, RouterAction, TrackKey};
use crate::forward::ParticipantId;
use crate::metrics::{Metrics, PacketCounts};
use crate::registry::{Registry, ResourceEntry};
use crate::room::dd_extension::unread_descriptors_dropped;
use crate::room::offer::{check_answer, check_offer};
use crate::room::participant::{Negotiation, NewParticipant, Participant, ParticipantEvent};
use crate::room::Room;

/// What REMB-only publishers are allowed to send (their loss-based
/// controller still backs off below it): room for three simulcast layers
/// or one 1080p stream.
const REMB_CEILING_BPS: u64 = 6_000_000;

/// How often liveness is checked and counters are flushed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

/// What a worker needs to know about its place in the server.
#[derive(Clone)]
pub struct WorkerContext {
    pub index: usize,
    /// The address advertised in ICE candidates (the socket may be bound
    /// to another: a wildcard, or a private address behind a 1:1 NAT).
    pub advertised_addr: SocketAddr,
    /// The address advertised in the passive TCP candidate (None: ICE-TCP off).
    pub advertised_tcp_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub max_participants_per_room: usize,
    pub session_timeout: Duration,
    /// An offered session must connect (ICE and DTLS) within this.
    pub connect_timeout: Duration,
    pub max_tracks_per_participant: usize,
    /// WHIP/WHEP sessions one identity may hold in a room (0: no limit).
    pub max_sessions_per_identity: usize,
    /// How long a conference participant's socket may stay away.
    pub reconnect_grace: Duration,
    pub ice_servers: Vec<signaling::IceServer>,
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// Batch UDP sends (`sendmmsg`, GSO); false: one call per datagram.
    pub udp_batch: bool,
}

/// Why a participant was removed (a metric label and a log field).
#[derive(Debug, Clone, Copy)]
pub enum RemoveReason {
    Deleted,
    Closed,
    IceTimeout,
    /// Offered but never connected (ICE or DTLS stuck half-way).
    ConnectTimeout,
    Timeout,
    Shutdown,
    /// The participant left (room protocol `leave`).
    Left,
    /// An administrator removed the participant.
    Removed,
    /// A new connection with the same identity replaced it.
    Replaced,
    /// An administrator closed the room.
    RoomClosed,
    /// Its socket did not come back within the grace period.
    ReconnectTimeout,
    /// A relay ingest whose edge room had no viewer left.
    RelayIdle,
}

impl RemoveReason {
    fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Deleted => "deleted",
            RemoveReason::Closed => "closed",
            RemoveReason::IceTimeout => "ice_timeout",
            RemoveReason::ConnectTimeout => "connect_timeout",
            RemoveReason::Timeout => "timeout",
            RemoveReason::Shutdown => "shutdown",
            RemoveReason::Left => "left",
            RemoveReason::Removed => "removed",
            RemoveReason::Replaced => "replaced",
            RemoveReason::RoomClosed => "room_closed",
            RemoveReason::ReconnectTimeout => "reconnect_timeout",
            RemoveReason::RelayIdle => "relay_idle",
        }
    }
}

/// A create request as the worker receives it.
#[derive(Debug)]
pub struct CreateRequest {
    pub kind: SessionKind,
    pub room: String,
    pub identity: String,
    pub resource_id: String,
    pub offer_sdp: String,
    pub max_width: Option<u32>,
    /// A WHEP session that relays the room to a fan-out on another worker
    /// of this process (loopback: not estimated, not paced).
    pub local_relay: bool,
}

/// A new participant's session, before its `Rtc` exists.
pub struct NewSession {
    pub kind: SessionKind,
    pub room: Arc<str>,
    pub identity: String,
    pub resource_id: String,
    pub max_width: Option<u32>,
    pub remote_offer: String,
    pub member: Option<crate::room::member::Member>,
}

pub struct WorkerCore {
    ctx: WorkerContext,
    participants: HashMap<ParticipantId, Participant>,
    by_resource: HashMap<String, ParticipantId>,
    rooms: HashMap<Arc<str>, Room>,
    demux: Demux,
    next_id: ParticipantId,
    /// Participants whose `Rtc` got input and must be polled.
    dirty: Vec<ParticipantId>,
    events: Vec<(ParticipantId, ParticipantEvent)>,
    /// Where the packet being forwarded goes (reused).
    deliveries: Vec<crate::forward::router::Delivery>,
    /// Relay ingests by the local address of their own socket.
    relay_sockets: HashMap<SocketAddr, ParticipantId>,
    /// Relay ingests' media lines, published while their upstream carries a
    /// publisher (from the answer on).
    relay_media: HashMap<ParticipantId, Vec<(str0m::media::Mid, MediaKind, usize)>>,
    /// Relay ingests alone in their edge room, since when.
    relays_alone: HashMap<ParticipantId, Instant>,
    pub counts: PacketCounts,
    media_counters: crate::metrics::MediaCounters,
    next_housekeeping: Instant,
    next_layer_poll: Instant,
    probes: Vec<(ParticipantId, ProbeRequest)>,
    paused_ms: u64,
    /// Conference participants by resume token.
    by_resume: HashMap<String, ParticipantId>,
    next_quality: Instant,
    /// Bridges of satellite rooms here to their hosting node.
    uplinks: HashMap<ParticipantId, bridge::Uplink>,
    /// Room events the bridges heard, not yet acted on.
    heard: Vec<(ParticipantId, signaling::room_protocol::ServerMessage)>,
    /// Members' downlink connections (LiveKit dual mode), by member.
    downlinks: HashMap<ParticipantId, downlink::DownlinkLeg>,
}

impl WorkerCore {
    pub fn new(ctx: WorkerContext, now: Instant) -> WorkerCore {
        WorkerCore {
            media_counters: ctx.metrics.media_counters(),
            ctx,
            participants: HashMap::new(),
            by_resource: HashMap::new(),
            rooms: HashMap::new(),
            demux: Demux::default(),
            next_id: 1,
            dirty: Vec::new(),
            events: Vec::new(),
            deliveries: Vec::new(),
            relay_sockets: HashMap::new(),
            relays_alone: HashMap::new(),
            relay_media: HashMap::new(),
            uplinks: HashMap::new(),
            heard: Vec::new(),
            downlinks: HashMap::new(),
            counts: PacketCounts::default(),
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            next_layer_poll: now + LAYER_INTERVAL,
            probes: Vec::new(),
            paused_ms: 0,
            by_resume: HashMap::new(),
            next_quality: now + conference::QUALITY_INTERVAL,
        }
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// When the worker must be woken even if nothing arrives.
    pub fn next_timeout(&self) -> Instant {
        let participants = self.participants.values().map(Participant::next_timeout);
        let rooms = self.rooms.values().filter_map(|r| r.router.next_deadline());
        participants.chain(rooms).fold(
            self.next_housekeeping.min(self.next_layer_poll),
            Instant::min,
        )
    }

    /// A datagram arrived on the worker's UDP socket, or a frame on one of
    /// its ICE-TCP connections (`proto`).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
        transmit: &mut dyn FnMut(Transmit),
    ) {
        self.counts.packets_received += 1;
        self.counts.bytes_received += data.len() as u64;
        let Ok(contents) = data.try_into() else {
            return; // not a datagram kind WebRTC uses
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                // str0m matches the destination against its local
                // candidates, which carry the advertised address: the bound
                // one differs behind a 1:1 NAT or on a wildcard bind.
                destination: match (proto, self.ctx.advertised_tcp_addr) {
                    (Protocol::Tcp, Some(tcp)) => tcp,
                    _ => self.ctx.advertised_addr,
                },
                contents,
            },
        );
        let id = match self.demux.route(proto, source, data) {
            Route::Participant(id) => id,
            Route::Drop => return,
            Route::AskConnecting => {
                let found = self
                    .participants
                    .values()
                    .filter(|p| !p.connected)
                    .find(|p| p.accepts(&input))
                    .map(|p| p.id);
                let Some(id) = found else {
                    return;
                };
                self.demux.learn_addr(proto, source, id);
                id
            }
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.handle_input(input);
        self.dirty.push(id);
        self.process(now, transmit);
    }

    /// Time passed: drive timers, liveness and deferred keyframe requests.
    pub fn handle_timeout(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
        for p in self.participants.values_mut() {
            if p.next_timeout() <= now {
                p.handle_input(Input::Timeout(now));
                self.dirty.push(p.id);
            }
        }
        let mut actions = vec![];
        for room in self.rooms.values_mut() {
            room.router.poll_keyframes(now, &mut actions);
        }
        for action in actions {
            self.execute(action);
        }
        if now >= self.next_layer_poll {
            self.next_layer_poll = now + LAYER_INTERVAL;
            self.poll_layers(now);
            self.poll_speakers(now);
            self.poll_dynacast(now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now, transmit);
            self.publish_session_events(now);
        }
        self.process(now, transmit);
    }

    /// A command from the HTTP side.
    pub fn handle_command(
        &mut self,
        now: Instant,
        cmd: Command,
        transmit: &mut dyn FnMut(Transmit),
    ) {
        match cmd {
            Command::Create { req, reply, span } => {
                let room = req.room.clone();
                let result = span.in_scope(|| self.create(now, req));
                if result.is_err() && !self.rooms.contains_key(room.as_str()) {
                    // The placement made for this request must not outlive it.
                    self.ctx.registry.release_room(&room, self.ctx.index);
                }
                let _ = reply.send(result);
            }
            Command::Patch {
                resource_id,
                if_match,
                frag,
                reply,
            } => {
                let result = self.patch(&resource_id, if_match, frag);
                let _ = reply.send(result);
            }
            Command::Events {
                resource_id,
                stream,
                reply,
            } => {
                let result = self.attach_events(&resource_id, stream.as_deref());
                let _ = reply.send(result);
            }
            Command::OpenEvents {
                resource_id,
                kinds,
                reply,
            } => {
                let _ = reply.send(self.open_events(&resource_id, kinds));
            }
            Command::CloseEvents {
                resource_id,
                stream,
                reply,
            } => {
                let _ = reply.send(self.close_events(&resource_id, &stream));
            }
            Command::SelectLayer {
                resource_id,
                selection,
                reply,
            } => {
                let _ = reply.send(self.select_layer(&resource_id, selection, now));
            }
            Command::Join { req, reply, span } => {
                let room = req.room.clone();
                let result = span.in_scope(|| self.join(now, req));
                if result.is_err() && !self.rooms.contains_key(room.as_str()) {
                    self.ctx.registry.release_room(&room, self.ctx.index);
                }
                let _ = reply.send(result);
            }
            Command::RoomMessage {
                participant,
                generation,
                msg,
                reply,
            } => {
                let result = self.room_message(now, &participant, generation, msg, transmit);
                let _ = reply.send(result);
            }
            Command::SocketClosed {
                participant,
                generation,
            } => self.socket_closed(now, &participant, generation),
            Command::OpenRelay { req, reply, .. } => {
                let room = req.room.clone();
                let result = self.open_relay(now, req);
                if result.is_err() && !self.rooms.contains_key(room.as_str()) {
                    self.ctx.registry.release_room(&room, self.ctx.index);
                }
                let _ = reply.send(result);
            }
            Command::AnswerRelay {
                resource_id,
                answer_sdp,
                candidate,
                upstream_active,
                reply,
            } => {
                let result =
                    self.answer_relay(now, &resource_id, &answer_sdp, candidate, upstream_active);
                let _ = reply.send(result);
            }
            Command::OpenBridge { req, reply, .. } => {
                let room = req.room.clone();
                let result = self.open_bridge(now, req);
                if result.is_err() && !self.rooms.contains_key(room.as_str()) {
                    self.ctx.registry.release_room(&room, self.ctx.index);
                }
                let _ = reply.send(result);
            }
            Command::BridgeInbound { resource_id, msg } => {
                if let Ok(id) = self.session_id(&resource_id) {
                    self.uplink_inbound(now, id, msg);
                }
            }
            Command::RelayUpstream {
                resource_id,
                active,
            } => {
                if let Ok(id) = self.session_id(&resource_id) {
                    self.relay_upstream(now, id, active);
                }
            }
            Command::RelayLayers {
                resource_id,
                identity,
                rids,
                reply,
            } => {
                let _ = reply.send(self.relay_layers(&resource_id, &identity, &rids));
            }
            Command::Admin { req, reply } => {
                let result = self.admin(now, req, transmit);
                let _ = reply.send(result);
            }
            Command::Delete { resource_id, reply } => {
                let result = self
                    .session_id(&resource_id)
                    .map(|id| self.remove(now, id, RemoveReason::Deleted, transmit));
                let _ = reply.send(result);
            }
        }
        self.process(now, transmit);
    }

    /// Close every session (server shutdown).
    pub fn shutdown(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            self.remove(now, id, RemoveReason::Shutdown, transmit);
        }
        self.counts.flush(&self.ctx.metrics);
    }
    /// Poll dirty participants and act on their events until quiet.
    fn process(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
        // Bounded: each round is caused by events of the previous one.
        for _ in 0..64 {
            if self.dirty.is_empty() {
                break;
            }
            self.dirty.sort_unstable();
            self.dirty.dedup();
            for id in std::mem::take(&mut self.dirty) {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.poll(now, transmit, &mut self.events);
                }
            }
            let events = std::mem::take(&mut self.events);
            for (id, event) in events {
                self.on_event(now, id, event);
            }
        }
        self.poll_uplinks(now, transmit);
        let closed: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.closed)
            .map(|p| p.id)
            .collect();
        for id in closed {
            self.remove(now, id, RemoveReason::Closed, transmit);
        }
    }

    fn on_event(&mut self, now: Instant, id: ParticipantId, event: ParticipantEvent) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let room_name = p.room.clone();
        let kind = p.kind;
        let max_width = p.max_width;
        // Packets are the packet path: no span work for them.
        let _span = (!matches!(event, ParticipantEvent::Rtp(_))).then(|| p.span.clone().entered());
        match event {
            ParticipantEvent::Connected => {
                let m = &self.ctx.metrics;
                m.sessions.with_label_values(&["connecting"]).dec();
                m.sessions.with_label_values(&["connected"]).inc();
                tracing::info!(
                    after_ms = now.saturating_duration_since(p.created_at).as_millis() as u64,
                    "connected"
                );
                let actions = match self.rooms.get_mut(&room_name) {
                    Some(room) => room.router.subscriber_connected(id, now),
                    None => vec![],
                };
                for action in actions {
                    self.execute(action);
                }
            }
            ParticipantEvent::MediaAdded(added) => {
                let Some(room) = self.rooms.get_mut(&room_name) else {
                    return;
                };
                let receives = matches!(added.direction, Direction::RecvOnly | Direction::SendRecv);
                let sends = matches!(added.direction, Direction::SendOnly | Direction::SendRecv);
                let actions = match kind {
                    SessionKind::Whip if receives => {
                        let layers = added
                            .simulcast
                            .as_ref()
                            .map(|s| s.recv.len().max(s.send.len()))
                            .unwrap_or(1);
                        self.publish_track(now, id, added.mid, added.kind, layers);
                        vec![]
                    }
                    SessionKind::Whep if sends => {
                        let down = DownTrackKey {
                            subscriber: id,
                            mid: added.mid,
                        };
                        // A viewer that offers to receive simulcast is another
                        // server (a node relaying for its viewers): it gets
                        // every layer and chooses per viewer itself.
                        let rids: Vec<str0m::media::Rid> = added
                            .simulcast
                            .iter()
                            .flat_map(|s| s.send.iter().chain(&s.recv))
                            .map(|l| l.rid)
                            .collect();
                        if rids.is_empty() || added.kind != MediaKind::Video {
                            room.router.add_down_track(down, added.kind, max_width, now)
                        } else {
                            let streams = rids.len();
                            if let Some(p) = self.participants.get_mut(&id) {
                                p.relay_rids.insert(added.mid, rids);
                            }
                            room.router
                                .add_relay_down_track(down, added.kind, streams, now)
                        }
                    }
                    _ => vec![],
                };
                for action in actions {
                    self.execute(action);
                }
            }
            ParticipantEvent::Rtp(received) => self.forward(now, id, &room_name, received),
            ParticipantEvent::KeyframeRequest(req) => {
                tracing::debug!(mid = %req.mid, kind = ?req.kind, "subscriber asks for a keyframe");
                let slot = req.rid.and_then(|rid| {
                    let rids = self.participants.get(&id)?.relay_rids.get(&req.mid)?;
                    rids.iter().position(|r| *r == rid)
                });
                let action = self.rooms.get_mut(&room_name).and_then(|room| {
                    room.router.keyframe_requested(
                        DownTrackKey {
                            subscriber: id,
                            mid: req.mid,
                        },
                        slot,
                        now,
                    )
                });
                if let Some(action) = action {
                    self.execute(action);
                }
            }
            ParticipantEvent::BandwidthEstimate(bps) => {
                tracing::debug!(bps, "downlink estimate");
                if let Some(room) = self.rooms.get_mut(&room_name) {
                    room.router.set_estimate(id, bps, now);
                }
                self.ctx.metrics.subscriber_estimate.observe(bps as f64);
            }
            ParticipantEvent::EgressLoss(loss) => {
                if loss > 0.0 {
                    tracing::debug!(loss, "subscriber reports loss");
                }
                if let Some(room) = self.rooms.get_mut(&room_name) {
                    room.router.set_loss(id, loss);
                }
            }
            ParticipantEvent::EgressFeedback { nacks, plis, firs } => {
                if nacks > 0 {
                    if let Some(room) = self.rooms.get_mut(&room_name) {
                        room.router.note_nacks(id, now);
                    }
                }
                let m = &self.ctx.metrics;
                m.nacks_received.inc_by(nacks);
                m.plis_received.inc_by(plis);
                m.firs_received.inc_by(firs);
            }
            ParticipantEvent::ChannelOpen(cid, label) => match p.leg_of {
                Some(owner) => self.downlink_channel(owner, cid, label),
                None => self.channel_opened(id, cid, label),
            },
            ParticipantEvent::ChannelData(cid, data) => self.relay_data(now, id, cid, &data),
            ParticipantEvent::Closed => {}
        }
    }
}

fn kind_label(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep => "whep",
        SessionKind::Room => "room",
    }
}

fn media_label(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
