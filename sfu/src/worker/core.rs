//! The state a media worker owns and the logic that drives it, without IO:
//! rooms, participants and their `Rtc`s, the demultiplexing index.
//!
//! The event loop ([`super::event_loop`]) feeds it datagrams, commands and
//! timeouts together with the current time, and sends the transmits it
//! returns through the `transmit` callback. Forwarding inside a room is a
//! plain function call: no locks, no channels on the packet path.

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
use crate::forward::bitstream::picture_size;
use crate::forward::router::{DownTrackKey, FrameInfo, RouterAction, TrackKey};
use crate::forward::ParticipantId;
use crate::metrics::{Metrics, PacketCounts};
use crate::registry::{Registry, ResourceEntry};
use crate::room::offer::{check_answer, check_offer};
use crate::room::participant::{
    Negotiation, NewParticipant, Participant, ParticipantEvent, WriteOutcome,
};
use crate::room::Room;

/// How often liveness is checked and counters are flushed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

/// What a worker needs to know about its place in the server.
#[derive(Clone)]
pub struct WorkerContext {
    pub index: usize,
    /// The address the socket is bound to.
    pub local_addr: SocketAddr,
    /// The address advertised in ICE candidates.
    pub advertised_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub max_participants_per_room: usize,
    pub session_timeout: Duration,
}

/// Why a participant was removed (a metric label and a log field).
#[derive(Debug, Clone, Copy)]
pub enum RemoveReason {
    Deleted,
    Closed,
    IceTimeout,
    Timeout,
    Shutdown,
}

impl RemoveReason {
    fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Deleted => "deleted",
            RemoveReason::Closed => "closed",
            RemoveReason::IceTimeout => "ice_timeout",
            RemoveReason::Timeout => "timeout",
            RemoveReason::Shutdown => "shutdown",
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
    receivers: Vec<DownTrackKey>,
    pub counts: PacketCounts,
    next_housekeeping: Instant,
    next_layer_poll: Instant,
    probes: Vec<(ParticipantId, Option<u64>)>,
    paused_ms: u64,
}

/// The `Rtc` configuration every participant gets; viewers also estimate
/// their downlink (TWCC), which drives simulcast layer selection.
fn rtc_config(creds: IceCreds, kind: SessionKind) -> RtcConfig {
    let mut config = RtcConfig::new()
        .set_crypto_provider(crate::dtls::crypto_provider())
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .enable_av1(true)
        .set_stats_interval(Some(Duration::from_secs(1)));
    // Next to str0m's defaults (baseline, constrained baseline, main, high):
    // constrained high, and High 4:4:4 Predictive, the only profile above main
    // that some Chromium builds offer to receive (their decoder takes High).
    let codecs = config.codec_config();
    codecs.add_h264(112.into(), Some(113.into()), true, 0x640c1f);
    codecs.add_h264(116.into(), Some(117.into()), true, 0xf4001f);
    if kind == SessionKind::Whep {
        config = config.enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)));
    }
    config
}

/// A viewer's bandwidth estimate before any feedback arrived.
const INITIAL_ESTIMATE_KBPS: u64 = 1_000;
/// How often simulcast layer choices are re-evaluated.
const LAYER_INTERVAL: Duration = Duration::from_millis(250);

fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .find_map(|a| a.strip_prefix(name))
        .map(str::trim)
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl WorkerCore {
    pub fn new(ctx: WorkerContext, now: Instant) -> WorkerCore {
        WorkerCore {
            ctx,
            participants: HashMap::new(),
            by_resource: HashMap::new(),
            rooms: HashMap::new(),
            demux: Demux::default(),
            next_id: 1,
            dirty: Vec::new(),
            events: Vec::new(),
            receivers: Vec::new(),
            counts: PacketCounts::default(),
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            next_layer_poll: now + LAYER_INTERVAL,
            probes: Vec::new(),
            paused_ms: 0,
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

    /// A datagram arrived on the worker's socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
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
                proto: Protocol::Udp,
                source,
                destination: self.ctx.local_addr,
                contents,
            },
        );
        let id = match self.demux.route(source, data) {
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
                self.demux.learn_addr(source, id);
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
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now, transmit);
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
            Command::Create { req, reply } => {
                let room = req.room.clone();
                let result = self.create(now, req);
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
            Command::Events { resource_id, reply } => {
                let result = self.subscribe_events(&resource_id);
                let _ = reply.send(result);
            }
            Command::Delete { resource_id, reply } => {
                let result = match self.by_resource.get(&resource_id).copied() {
                    Some(id) => {
                        self.remove(now, id, RemoveReason::Deleted, transmit);
                        Ok(())
                    }
                    None => Err(BackendError::NotFound),
                };
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

    fn create(&mut self, now: Instant, req: CreateRequest) -> Result<SessionCreated, BackendError> {
        tracing::debug!(room = %req.room, offer = %req.offer_sdp, "offer");
        let offer = SdpOffer::from_sdp_string(&req.offer_sdp)
            .map_err(|e| BackendError::MalformedSdp(e.to_string()))?;
        check_offer(req.kind, &req.offer_sdp).map_err(BackendError::UnusableSdp)?;
        let room_name: Arc<str> = Arc::from(req.room.as_str());
        if let Some(room) = self.rooms.get(&room_name) {
            if room.participants.len() >= self.ctx.max_participants_per_room {
                return Err(BackendError::OverCapacity {
                    what: format!(
                        "participants per room ({})",
                        self.ctx.max_participants_per_room
                    ),
                    retry_after: Duration::from_secs(5),
                });
            }
        }

        let creds = IceCreds::new();
        let local_ufrag = creds.ufrag.clone();
        let mut rtc: Rtc = rtc_config(creds, req.kind).build(now);
        let candidate = Candidate::host(self.ctx.advertised_addr, "udp")
            .map_err(|e| BackendError::Internal(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BackendError::UnusableSdp(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();
        check_answer(&answer_sdp).map_err(BackendError::UnusableSdp)?;

        if !self.rooms.contains_key(&room_name) {
            if !self.ctx.registry.claim_room(&req.room, self.ctx.index) {
                return Err(BackendError::Internal(
                    "room moved to another worker; retry".into(),
                ));
            }
            self.rooms
                .insert(room_name.clone(), Room::new(room_name.clone()));
            self.ctx.metrics.rooms.inc();
            tracing::info!(room = %room_name, worker = self.ctx.index, "room created");
        }

        let id = self.next_id;
        self.next_id += 1;
        let etag = random_token();
        let participant = Participant::new(NewParticipant {
            id,
            room: room_name.clone(),
            identity: req.identity.clone(),
            kind: req.kind,
            resource_id: req.resource_id.clone(),
            max_width: req.max_width,
            negotiation: Negotiation {
                etag: etag.clone(),
                local_ufrag: local_ufrag.clone(),
                remote_ufrag: sdp_attr(&req.offer_sdp, "ice-ufrag:").map(str::to_string),
                remote_offer: req.offer_sdp,
            },
            rtc,
            now,
        });
        self.demux.insert_ufrag(&local_ufrag, id);
        self.by_resource.insert(req.resource_id.clone(), id);
        self.participants.insert(id, participant);
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.participants.insert(id);
        }
        self.ctx.registry.insert_resource(
            req.resource_id.clone(),
            ResourceEntry {
                worker: self.ctx.index,
                kind: req.kind,
                room: req.room.clone(),
                identity: req.identity.clone(),
            },
        );
        let m = &self.ctx.metrics;
        m.participants
            .with_label_values(&[kind_label(req.kind)])
            .inc();
        m.rtc_instances.inc();
        m.sessions.with_label_values(&["connecting"]).inc();
        m.sessions_created
            .with_label_values(&[kind_label(req.kind)])
            .inc();
        self.dirty.push(id);
        if let Some(p) = self.participants.get(&id) {
            p.span.in_scope(|| tracing::info!("participant joined"));
        }
        Ok(SessionCreated {
            id: req.resource_id,
            answer_sdp,
            etag,
        })
    }

    fn activity(&self, id: ParticipantId) -> SessionEvent {
        let receiving = self
            .participants
            .get(&id)
            .and_then(|p| self.rooms.get(&p.room))
            .is_some_and(|room| room.router.is_receiving(id));
        if receiving {
            SessionEvent::Active
        } else {
            SessionEvent::Inactive
        }
    }

    fn subscribe_events(
        &mut self,
        resource_id: &str,
    ) -> Result<signaling::backend::SessionEvents, BackendError> {
        let id = *self
            .by_resource
            .get(resource_id)
            .ok_or(BackendError::NotFound)?;
        let current = self.activity(id);
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(BackendError::NotFound)?;
        p.subscribe_events(current)
            .ok_or_else(|| BackendError::OverCapacity {
                what: format!(
                    "event streams per session ({})",
                    crate::room::participant::MAX_EVENT_STREAMS
                ),
                retry_after: Duration::from_secs(5),
            })
    }

    /// A down-track of `subscriber` gained or lost its source.
    fn notify_activity(&mut self, subscriber: ParticipantId) {
        let event = self.activity(subscriber);
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.notify(event);
        }
    }

    fn patch(
        &mut self,
        resource_id: &str,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> Result<PatchOutcome, BackendError> {
        let id = *self
            .by_resource
            .get(resource_id)
            .ok_or(BackendError::NotFound)?;
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(BackendError::NotFound)?;
        if let Some(tag) = &if_match {
            if tag != "*" && *tag != p.negotiation.etag {
                return Err(BackendError::PreconditionFailed);
            }
        }
        let restart = match (&frag.ice_ufrag, &p.negotiation.remote_ufrag) {
            (Some(new), Some(old)) => new != old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !restart {
            for line in &frag.candidates {
                let c = Candidate::from_sdp_string(line)
                    .map_err(|e| BackendError::MalformedSdp(format!("bad candidate: {e}")))?;
                p.rtc_mut().add_remote_candidate(c);
            }
            self.dirty.push(id);
            return Ok(PatchOutcome::Trickled);
        }
        // ICE restart: re-apply the remote offer with the new credentials;
        // str0m restarts ICE and answers with fresh local credentials.
        if if_match.is_none() {
            return Err(BackendError::MalformedSdp(
                "an ICE restart needs an If-Match header with the session's ETag".into(),
            ));
        }
        let (Some(ufrag), Some(pwd)) = (&frag.ice_ufrag, &frag.ice_pwd) else {
            return Err(BackendError::MalformedSdp(
                "ICE restart without credentials".into(),
            ));
        };
        let offer_text = restart_offer(&p.negotiation.remote_offer, ufrag, pwd, &frag.candidates);
        let offer = SdpOffer::from_sdp_string(&offer_text)
            .map_err(|e| BackendError::MalformedSdp(e.to_string()))?;
        let answer = p
            .rtc_mut()
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BackendError::UnusableSdp(e.to_string()))?
            .to_sdp_string();
        let (Some(new_ufrag), Some(new_pwd)) = (
            sdp_attr(&answer, "ice-ufrag:"),
            sdp_attr(&answer, "ice-pwd:"),
        ) else {
            return Err(BackendError::Internal(
                "answer lacks ICE credentials".into(),
            ));
        };
        let mut fragment = format!("a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\n");
        for c in answer.lines().filter(|l| l.starts_with("a=candidate:")) {
            fragment.push_str(c.trim_end());
            fragment.push_str("\r\n");
        }
        fragment.push_str("a=end-of-candidates\r\n");
        let n = &mut p.negotiation;
        let old_ufrag = std::mem::replace(&mut n.local_ufrag, new_ufrag.to_string());
        n.remote_ufrag = Some(ufrag.clone());
        n.remote_offer = offer_text;
        n.etag = random_token();
        let etag = n.etag.clone();
        self.demux.remove_ufrag(&old_ufrag);
        self.demux.insert_ufrag(new_ufrag, id);
        self.dirty.push(id);
        tracing::info!(participant = id, "ICE restart");
        Ok(PatchOutcome::Restarted {
            answer_frag: fragment,
            etag,
        })
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
                    p.poll(transmit, &mut self.events);
                }
            }
            let events = std::mem::take(&mut self.events);
            for (id, event) in events {
                self.on_event(now, id, event);
            }
        }
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
        // Media frames are the packet path: no span work for them.
        let _span =
            (!matches!(event, ParticipantEvent::Media(_))).then(|| p.span.clone().entered());
        match event {
            ParticipantEvent::Connected => {
                let m = &self.ctx.metrics;
                m.sessions.with_label_values(&["connecting"]).dec();
                m.sessions.with_label_values(&["connected"]).inc();
                tracing::info!(
                    after_ms = now.saturating_duration_since(p.created_at).as_millis() as u64,
                    "connected"
                );
            }
            ParticipantEvent::MediaAdded(added) => {
                let Some(room) = self.rooms.get_mut(&room_name) else {
                    return;
                };
                let receives = matches!(added.direction, Direction::RecvOnly | Direction::SendRecv);
                let sends = matches!(added.direction, Direction::SendOnly | Direction::SendRecv);
                let actions = match kind {
                    SessionKind::Whip if receives => {
                        self.ctx
                            .metrics
                            .tracks
                            .with_label_values(&[media_label(added.kind)])
                            .inc();
                        let layers = added
                            .simulcast
                            .as_ref()
                            .map(|s| s.recv.len().max(s.send.len()))
                            .unwrap_or(1);
                        tracing::info!(mid = %added.mid, media = ?added.kind, layers, "track published");
                        room.router.add_track(
                            TrackKey {
                                publisher: id,
                                mid: added.mid,
                            },
                            added.kind,
                            layers,
                            now,
                        )
                    }
                    SessionKind::Whep if sends => room.router.add_down_track(
                        DownTrackKey {
                            subscriber: id,
                            mid: added.mid,
                        },
                        added.kind,
                        max_width,
                        now,
                    ),
                    _ => vec![],
                };
                for action in actions {
                    self.execute(action);
                }
            }
            ParticipantEvent::Media(data) => self.forward(now, id, &room_name, data),
            ParticipantEvent::KeyframeRequest(req) => {
                let action = self.rooms.get_mut(&room_name).and_then(|room| {
                    room.router.keyframe_requested(
                        DownTrackKey {
                            subscriber: id,
                            mid: req.mid,
                        },
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
                    room.router.set_estimate(id, bps);
                }
                self.ctx.metrics.subscriber_estimate.observe(bps as f64);
            }
            ParticipantEvent::EgressLoss(loss) => {
                if let Some(room) = self.rooms.get_mut(&room_name) {
                    room.router.set_loss(id, loss);
                }
            }
            ParticipantEvent::EgressFeedback { nacks, plis, firs } => {
                let m = &self.ctx.metrics;
                m.nacks_received.inc_by(nacks);
                m.plis_received.inc_by(plis);
                m.firs_received.inc_by(firs);
            }
            ParticipantEvent::Closed => {}
        }
    }

    /// The packet path: one publisher frame to every subscriber of its track.
    fn forward(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        room_name: &Arc<str>,
        data: str0m::media::MediaData,
    ) {
        let is_video = data.params.spec().codec.is_video();
        self.ctx
            .metrics
            .frames_received
            .with_label_values(&[if is_video { "video" } else { "audio" }])
            .inc();
        if is_video {
            self.watch_frame_order(publisher, room_name, &data);
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let track = TrackKey {
            publisher,
            mid: data.mid,
        };
        let keyframe = is_video && data.is_keyframe();
        let frame = FrameInfo {
            layer: data.rid,
            keyframe,
            contiguous: data.contiguous,
            size: data.data.len(),
            dims: keyframe
                .then(|| picture_size(data.params.spec().codec, &data.data))
                .flatten(),
        };
        let action = room
            .router
            .route_frame(track, &frame, now, &mut self.receivers);
        let receivers = std::mem::take(&mut self.receivers);
        let mut written = 0u64;
        for down in &receivers {
            let Some(sub) = self.participants.get_mut(&down.subscriber) else {
                continue;
            };
            match sub.write_frame(down.mid, track, &data) {
                WriteOutcome::Written => {
                    written += 1;
                    self.dirty.push(down.subscriber);
                }
                WriteOutcome::NoCompatibleCodec => {
                    tracing::debug!(subscriber = down.subscriber, pt = %data.pt, "no compatible codec");
                }
                WriteOutcome::NotWritable => {}
            }
        }
        self.receivers = receivers;
        if written > 0 {
            self.ctx
                .metrics
                .frames_forwarded
                .with_label_values(&[if is_video { "video" } else { "audio" }])
                .inc_by(written);
        }
        if let Some(action) = action {
            self.execute(action);
        }
    }

    fn watch_frame_order(
        &mut self,
        publisher: ParticipantId,
        room: &Arc<str>,
        data: &str0m::media::MediaData,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let monitor = p.frame_order.entry((data.mid, data.rid)).or_default();
        let before = monitor.reordered();
        let first = monitor.observe(data.time.numer());
        if monitor.reordered() > before {
            self.ctx
                .metrics
                .reordered_frames
                .with_label_values(&[room])
                .inc();
        }
        if first {
            tracing::warn!(room = %room, identity = %p.identity, codec = ?data.params.spec().codec,
                "publisher sends B-frames (frames out of presentation order); browsers will stutter. \
                 Disable B-frames in the encoder (OBS: Output -> Encoder settings, bframes=0 / profile baseline)");
            self.ctx
                .metrics
                .publishers_with_bframes
                .with_label_values(&[&**room, p.identity.as_str()])
                .set(1);
        }
    }

    fn execute(&mut self, action: RouterAction) {
        match action {
            RouterAction::RequestKeyframe {
                track,
                layer,
                cause,
            } => {
                if let Some(p) = self.participants.get_mut(&track.publisher) {
                    if p.request_keyframe(track.mid, layer) {
                        self.dirty.push(track.publisher);
                        self.ctx
                            .metrics
                            .keyframe_requests_sent
                            .with_label_values(&[cause.as_str()])
                            .inc();
                    }
                }
            }
            RouterAction::Bound { down, track } => {
                tracing::debug!(?down, ?track, "down-track bound");
                self.notify_activity(down.subscriber);
            }
            RouterAction::Unbound { down, track } => {
                tracing::info!(subscriber = down.subscriber, mid = %down.mid, publisher = track.publisher,
                    "track ended; down-track has no source");
                self.notify_activity(down.subscriber);
            }
        }
    }

    /// Where viewers' video stands: layer distribution and paused time.
    fn layer_metrics(&mut self, now: Instant) {
        const LABELS: [&str; 6] = ["low", "mid", "high", "single", "paused", "waiting"];
        let mut counts = [0i64; 6];
        for room in self.rooms.values() {
            for down in room.router.video_down_tracks() {
                let paused = room.router.selector(down).is_some_and(|s| s.is_paused());
                let slot = match room.router.layer_rank(down, now) {
                    _ if paused => 4,
                    None => 5,
                    Some((_, 1)) => 3,
                    Some((0, _)) => 0,
                    Some((r, n)) if r + 1 == n => 2,
                    Some(_) => 1,
                };
                counts[slot] += 1;
            }
        }
        let worker = self.ctx.index.to_string();
        for (label, count) in LABELS.iter().zip(counts) {
            self.ctx
                .metrics
                .video_down_tracks
                .with_label_values(&[worker.as_str(), label])
                .set(count);
        }
        // Paused viewer time, in housekeeping intervals turned into seconds.
        self.paused_ms += counts[4] as u64 * HOUSEKEEPING_INTERVAL.as_millis() as u64;
        self.ctx
            .metrics
            .paused_seconds
            .inc_by(self.paused_ms / 1000);
        self.paused_ms %= 1000;
    }

    /// Re-evaluate simulcast layers and tell viewers' estimators what to probe for.
    fn poll_layers(&mut self, now: Instant) {
        let mut probes = std::mem::take(&mut self.probes);
        probes.clear();
        for room in self.rooms.values_mut() {
            room.router.poll_layers(now, &mut probes);
        }
        let m = &self.ctx.metrics;
        for room in self.rooms.values_mut() {
            let (up, down) = room.router.take_switch_counts();
            m.layer_switches.with_label_values(&["up"]).inc_by(up);
            m.layer_switches.with_label_values(&["down"]).inc_by(down);
        }
        for (subscriber, target) in probes.drain(..) {
            if let Some(p) = self.participants.get_mut(&subscriber) {
                p.set_probe_target(target);
                self.dirty.push(subscriber);
            }
        }
        self.probes = probes;
    }

    fn housekeeping(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
        let timeout = self.ctx.session_timeout;
        let expired: Vec<(ParticipantId, RemoveReason)> = self
            .participants
            .values()
            .filter_map(|p| {
                if !p.is_alive() {
                    Some((p.id, RemoveReason::Closed))
                } else if p.idle_for(now) >= timeout {
                    Some((
                        p.id,
                        if p.connected {
                            RemoveReason::Timeout
                        } else {
                            RemoveReason::IceTimeout
                        },
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in expired {
            self.remove(now, id, reason, transmit);
        }
        self.layer_metrics(now);
        self.counts.flush(&self.ctx.metrics);
    }

    fn remove(
        &mut self,
        now: Instant,
        id: ParticipantId,
        reason: RemoveReason,
        transmit: &mut dyn FnMut(Transmit),
    ) {
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        let _span = p.span.clone().entered();
        p.close();
        let mut ignored = vec![];
        p.poll(transmit, &mut ignored); // flush DTLS close_notify / RTCP BYE
        self.demux.remove_participant(id);
        self.by_resource.remove(&p.resource_id);
        self.ctx.registry.remove_resource(&p.resource_id);

        let m = &self.ctx.metrics;
        m.participants
            .with_label_values(&[kind_label(p.kind)])
            .dec();
        m.rtc_instances.dec();
        m.sessions
            .with_label_values(&[if p.connected {
                "connected"
            } else {
                "connecting"
            }])
            .dec();
        m.sessions_ended.with_label_values(&[reason.as_str()]).inc();
        if p.frame_order.values().any(|f| f.has_bframes()) {
            let _ = m
                .publishers_with_bframes
                .remove_label_values(&[&*p.room, p.identity.as_str()]);
        }
        tracing::info!(reason = reason.as_str(), "participant left");

        let mut actions = vec![];
        let mut room_empty = false;
        if let Some(room) = self.rooms.get_mut(&p.room) {
            for kind in room.router.track_kinds_of(id) {
                m.tracks.with_label_values(&[media_label(kind)]).dec();
            }
            actions = room.router.remove_participant(id, now);
            room.participants.remove(&id);
            room_empty = room.participants.is_empty();
        }
        if room_empty {
            self.rooms.remove(&p.room);
            self.ctx.registry.release_room(&p.room, self.ctx.index);
            m.rooms.dec();
            tracing::info!(room = %p.room, "room closed (empty)");
        }
        for action in actions {
            self.execute(action);
        }
    }
}

/// The remote offer with new ICE credentials (and trickled candidates).
fn restart_offer(offer: &str, ufrag: &str, pwd: &str, candidates: &[String]) -> String {
    let mut out = String::with_capacity(offer.len() + 256);
    for line in offer.lines() {
        let l = line.trim_end();
        if l.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(l);
            out.push_str("\r\n");
            if l.starts_with("m=") {
                for c in candidates {
                    out.push_str(&format!("a={c}\r\n"));
                }
            }
        }
    }
    out
}

fn kind_label(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep => "whep",
    }
}

fn media_label(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
