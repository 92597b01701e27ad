//! The room protocol inside a worker: joining and resuming, applying a
//! participant's offers (publications and subscriptions), mute, metadata,
//! room events to every member's socket, data-channel relay, active
//! speakers, connection quality and the admin operations.
//!
//! Only the client offers (see `signaling/PROTOCOL.md`): after each offer
//! the worker reconciles what the client's media lines say with what the
//! router and the room know, so repeated or reordered offers converge.

use super::negotiation::{sdp_attr, Downlink};
use super::*;
use signaling::admin::{
    AdminReply, AdminRequest, LayerReport, RoomSummary, SubscriberReport, SubscriptionReport,
};
use signaling::backend::{JoinRoom, RoomConnection};
use signaling::room_protocol::{
    BridgedData, ClientLimits, ClientMessage, ErrorCode, ManageAction, MediaKindName,
    ParticipantInfo, QualityUpdate, RelayedData, ServerMessage, Speaker,
};
use str0m::channel::ChannelId;
use str0m::media::{Mid, Rids};

use crate::room::data_packets;
use crate::room::member::{new_sid, Member, NewMember, PublishedTrack};
use crate::room::offer::{check_room_offer, media_sections};
use crate::room::quality::{score, LinkReport};
use crate::webhooks::WebhookEvent;

/// Largest data-channel message relayed.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// How often connection quality is evaluated.
pub(super) const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

fn kind_name(kind: MediaKind) -> MediaKindName {
    match kind {
        MediaKind::Audio => MediaKindName::Audio,
        MediaKind::Video => MediaKindName::Video,
    }
}

impl WorkerCore {
    pub(super) fn member_mut(&mut self, id: ParticipantId) -> Option<&mut Member> {
        self.participants
            .get_mut(&id)
            .and_then(|p| p.member.as_mut())
    }

    /// Participant id of a member's sid.
    pub(super) fn by_sid(&self, sid: &str) -> Option<ParticipantId> {
        self.session_id(sid).ok()
    }

    /// Infos of the room's members (optionally without one).
    pub(super) fn room_members(
        &self,
        room: &str,
        except: Option<ParticipantId>,
    ) -> Vec<ParticipantInfo> {
        let Some(r) = self.rooms.get(room) else {
            return vec![];
        };
        let mut out: Vec<ParticipantInfo> = r
            .participants
            .iter()
            .filter(|id| Some(**id) != except && !self.is_relay_ingest(**id))
            .filter_map(|id| self.participants.get(id))
            .filter_map(|p| p.member.as_ref())
            .flat_map(Member::infos)
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out
    }

    /// Send `msg` to every member of `room` with a socket (except one).
    pub(super) fn broadcast(
        &mut self,
        room: &str,
        except: Option<ParticipantId>,
        msg: &ServerMessage,
        now: Instant,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for id in &r.participants {
            if Some(*id) == except {
                continue;
            }
            if self.uplinks.contains_key(id) {
                self.heard.push((*id, msg.clone()));
                continue;
            }
            if let Some(m) = self
                .participants
                .get_mut(id)
                .and_then(|p| p.member.as_mut())
            {
                m.send(msg.clone(), now);
            }
        }
    }

    pub(super) fn webhook(&self, event: WebhookEvent) {
        if self.is_satellite(&event.room.name) {
            return;
        }
        if let Some(w) = &self.ctx.webhooks {
            w.emit(event);
        }
    }

    /// Create the room on this worker if it is new.
    pub(super) fn ensure_room(
        &mut self,
        name: &Arc<str>,
        now: Instant,
    ) -> Result<(), BackendError> {
        if let Some(room) = self.rooms.get_mut(name) {
            // A satellite whose room was placed on this node (its hosting
            // node died) is the room now.
            if room.satellite && room.fanout_of.is_none() && !self.ctx.registry.is_edge(name) {
                room.satellite = false;
                self.ctx.metrics.rooms.inc();
                tracing::info!(room = %name, "satellite became the room");
                self.webhook(WebhookEvent::new("room_started", name));
                return Ok(());
            }
            // A fan-out whose home room ended becomes the room itself when
            // the room is placed on this worker again.
            if room.fanout_of.is_some() && self.ctx.registry.claim_room(name, self.ctx.index) {
                room.fanout_of = None;
                self.ctx.metrics.rooms.inc();
                tracing::info!(room = %name, worker = self.ctx.index, "fan-out became the room");
                self.webhook(WebhookEvent::new("room_started", name));
            }
            return Ok(());
        }
        if !self.ctx.registry.claim_room(name, self.ctx.index) {
            return Err(BackendError::Internal(
                "room moved to another worker; retry".into(),
            ));
        }
        self.rooms
            .insert(name.clone(), Room::new(name.clone(), now));
        self.ctx.metrics.rooms.inc();
        tracing::info!(room = %name, worker = self.ctx.index, "room created");
        self.webhook(WebhookEvent::new("room_started", name));
        Ok(())
    }

    /// Create a fan-out here of the room worker `home` hosts, if there is
    /// none yet: viewers placed on this worker are fed by a relay from it.
    pub(super) fn ensure_fanout_room(&mut self, name: &Arc<str>, home: usize, now: Instant) {
        self.rooms.entry(name.clone()).or_insert_with(|| {
            tracing::info!(room = %name, worker = self.ctx.index, home, "fan-out created");
            let mut room = Room::new(name.clone(), now);
            room.fanout_of = Some(home);
            room
        });
    }

    pub(super) fn join(
        &mut self,
        now: Instant,
        req: JoinRoom,
    ) -> Result<RoomConnection, BackendError> {
        if let Some(token) = &req.resume {
            return self.resume(now, &req, token);
        }
        let room_name: Arc<str> = Arc::from(req.room.as_str());
        // Same identity again: the new connection replaces the old one.
        let previous = self
            .rooms
            .get(&room_name)
            .and_then(|r| r.identities.get(&req.identity).copied());
        if let Some(old) = previous {
            self.replace_session(now, old);
        }
        self.replace_remote(now, &room_name, &req.identity, None);
        if let Some(room) = self.rooms.get(&room_name) {
            if self.headcount(room) >= self.ctx.max_participants_per_room {
                return Err(BackendError::OverCapacity {
                    what: format!(
                        "participants per room ({})",
                        self.ctx.max_participants_per_room
                    ),
                    retry_after: Duration::from_secs(5),
                });
            }
        }
        let sid = new_sid();
        let member = Member::new(
            NewMember {
                sid: sid.clone(),
                identity: req.identity.clone(),
                name: req.name.chars().take(128).collect(),
                metadata: req.metadata.clone(),
                can_publish: req.can_publish,
                can_subscribe: req.can_subscribe,
                can_publish_data: req.can_publish_data,
            },
            now,
        );
        let mut member = member;
        member.bridge = req.bridge;
        let id = self.add_participant(
            now,
            NewSession {
                kind: SessionKind::Room,
                room: room_name.clone(),
                identity: req.identity.clone(),
                resource_id: sid.clone(),
                max_width: None,
                remote_offer: String::new(),
                member: Some(member),
            },
            if req.bridge {
                Downlink::Trunk
            } else {
                Downlink::Estimated
            },
        )?;
        let others = self.room_members(&room_name, Some(id));
        let (ice_servers, limits) = self.join_terms(&req);
        let Some(m) = self.member_mut(id) else {
            return Err(BackendError::Internal("participant vanished".into()));
        };
        let (messages, generation) = m.attach_socket();
        let joined = ServerMessage::Joined {
            room: req.room.clone(),
            resumed: false,
            participant: m.info(),
            participants: others,
            resume_token: m.resume_token.clone(),
            ice_servers,
            limits,
        };
        m.send(joined, now);
        let token = m.resume_token.clone();
        self.by_resume.insert(token, id);
        self.announce_member(now, id);
        Ok(RoomConnection {
            participant: sid,
            generation,
            messages,
        })
    }

    /// Member `old`'s identity joined again: it is told, and removed.
    pub(super) fn replace_session(&mut self, now: Instant, old: ParticipantId) {
        if let Some(m) = self.member_mut(old) {
            m.send(
                ServerMessage::Removed {
                    reason: "replaced by a new connection with the same identity".into(),
                },
                now,
            );
        }
        self.remove(now, old, RemoveReason::Replaced, &mut |_| {});
    }

    /// Tell the room (and the webhooks) a member arrived.
    pub(super) fn announce_member(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(info) = p.member.as_ref().filter(|m| !m.bridge).map(Member::info) else {
            return;
        };
        let room_name = p.room.clone();
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.identities.entry(p.identity.clone()).or_insert(id);
        }
        if !self.is_relay_ingest(id) {
            self.broadcast(
                &room_name,
                Some(id),
                &ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
                now,
            );
        }
        self.webhook(WebhookEvent::new("participant_joined", &room_name).participant(info));
    }

    fn resume(
        &mut self,
        now: Instant,
        req: &JoinRoom,
        token: &str,
    ) -> Result<RoomConnection, BackendError> {
        let id = *self
            .by_resume
            .get(token)
            .ok_or(BackendError::ResumeFailed)?;
        let room_name = {
            let p = self
                .participants
                .get(&id)
                .ok_or(BackendError::ResumeFailed)?;
            if *p.room != *req.room || p.identity != req.identity {
                return Err(BackendError::ResumeFailed);
            }
            p.room.clone()
        };
        let others = self.room_members(&room_name, Some(id));
        let (ice_servers, limits) = self.join_terms(req);
        let m = self.member_mut(id).ok_or(BackendError::ResumeFailed)?;
        let (messages, generation) = m.attach_socket();
        let joined = ServerMessage::Joined {
            room: req.room.clone(),
            resumed: true,
            participant: m.info(),
            participants: others,
            resume_token: m.resume_token.clone(),
            ice_servers,
            limits,
        };
        m.send(joined, now);
        tracing::info!(participant = id, generation, "participant resumed");
        Ok(RoomConnection {
            participant: m.sid.clone(),
            generation,
            messages,
        })
    }

    pub(super) fn socket_closed(&mut self, now: Instant, sid: &str, generation: u64) {
        let Some(id) = self.by_sid(sid) else {
            return;
        };
        if let Some(m) = self.member_mut(id) {
            if m.generation == generation {
                m.detach_socket(now);
                tracing::info!(participant = id, "socket closed; waiting for a resume");
            }
        }
    }

    /// Tell a participant's own socket about a problem with its request.
    pub(super) fn reply_error(
        &mut self,
        id: ParticipantId,
        code: ErrorCode,
        message: String,
        now: Instant,
    ) {
        if let Some(m) = self.member_mut(id) {
            m.send(ServerMessage::error(code, message), now);
        }
    }

    pub(super) fn room_message(
        &mut self,
        now: Instant,
        sid: &str,
        generation: u64,
        msg: ClientMessage,
        transmit: &mut dyn FnMut(Transmit),
    ) -> Result<(), BackendError> {
        let id = self.by_sid(sid).ok_or(BackendError::NotFound)?;
        let current = self
            .participants
            .get(&id)
            .and_then(|p| p.member.as_ref())
            .is_some_and(|m| m.generation == generation);
        if !current {
            return Err(BackendError::NotFound); // an older socket of a resumed participant
        }
        let label = match &msg {
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Subscription { .. } => "subscription",
            ClientMessage::Metadata { .. } => "metadata",
            ClientMessage::Leave {} => "leave",
            ClientMessage::Downlink { .. } => "downlink",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Remote { .. } => "remote",
            ClientMessage::RemoteLeft { .. } => "remote_left",
            ClientMessage::Data(_) => "data",
            ClientMessage::Layers { .. } => "layers",
            ClientMessage::Quality { .. } => "quality",
        };
        self.ctx
            .metrics
            .room_messages
            .with_label_values(&[label])
            .inc();
        match msg {
            ClientMessage::Offer {
                sdp,
                publish,
                subscribe,
            } => self.apply_offer(now, id, sdp, publish, subscribe),
            ClientMessage::Mute { track, muted } => {
                let mid = self.member_mut(id).and_then(|m| m.track_by_sid(&track));
                match mid {
                    Some(mid) => self.set_muted(now, id, mid, muted),
                    None => self.reply_error(
                        id,
                        ErrorCode::NotFound,
                        format!("you publish no track {track:?}"),
                        now,
                    ),
                }
            }
            ClientMessage::Subscription {
                track,
                subscribed,
                max_width,
            } => self.update_subscription(now, id, &track, subscribed, max_width),
            ClientMessage::Metadata { metadata, name } => {
                if metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > signaling::admin::MAX_METADATA_BYTES)
                {
                    self.reply_error(
                        id,
                        ErrorCode::TooLarge,
                        format!(
                            "metadata longer than {} bytes",
                            signaling::admin::MAX_METADATA_BYTES
                        ),
                        now,
                    );
                } else {
                    self.update_member(now, id, metadata, name);
                }
            }
            ClientMessage::Leave {} => self.remove(now, id, RemoveReason::Left, transmit),
            ClientMessage::Downlink {
                tracks,
                paused,
                restart_ice,
            } => self.downlink_wish(now, id, tracks, paused, restart_ice),
            ClientMessage::Answer { sdp } => self.downlink_answer(now, id, sdp),
            ClientMessage::Ping { .. } => {}
            ClientMessage::Remote { participant, fresh } => {
                self.remote_joined(now, id, participant, fresh)
            }
            ClientMessage::RemoteLeft { sid } => self.remote_left(now, id, &sid),
            ClientMessage::Data(d) => self.bridged_data(now, id, d),
            ClientMessage::Layers { track, active } => self.bridge_wants(now, id, &track, &active),
            ClientMessage::Quality { updates } => self.remote_quality(now, id, updates),
        }
        Ok(())
    }

    fn apply_offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        sdp: String,
        publish: std::collections::BTreeMap<String, signaling::room_protocol::PublishInfo>,
        subscribe: std::collections::BTreeMap<String, String>,
    ) {
        let max_tracks = self.ctx.max_tracks_per_participant;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(m) = p.member.as_ref() else {
            return;
        };
        let max_tracks = if m.bridge { usize::MAX } else { max_tracks };
        if let Err((code, message)) = check_room_offer(&sdp, m.can_publish, max_tracks) {
            self.reply_error(id, code, message, now);
            return;
        }
        let offer = match SdpOffer::from_sdp_string(&sdp) {
            Ok(o) => o,
            Err(e) => {
                self.reply_error(
                    id,
                    ErrorCode::Negotiation,
                    format!("malformed SDP: {e}"),
                    now,
                );
                return;
            }
        };
        let answer = match p.rtc_mut().sdp_api().accept_offer(offer) {
            Ok(a) => a.to_sdp_string(),
            Err(e) => {
                self.reply_error(
                    id,
                    ErrorCode::Negotiation,
                    format!("offer rejected: {e}"),
                    now,
                );
                return;
            }
        };
        // An offer with new ICE credentials restarted ICE: route by the new ufrag.
        if let (Some(ufrag), Some(pwd)) = (
            sdp_attr(&answer, "ice-ufrag:"),
            sdp_attr(&answer, "ice-pwd:"),
        ) {
            if ufrag != p.negotiation.local_ufrag {
                let old = std::mem::replace(&mut p.negotiation.local_ufrag, ufrag.to_string());
                self.demux.remove_ufrag(&old);
                self.demux.insert_credentials(ufrag, pwd, id);
                tracing::info!(participant = id, "ICE restart");
            }
        }
        p.negotiation.remote_ufrag = sdp_attr(&sdp, "ice-ufrag:").map(str::to_string);
        if let Some(m) = p.member.as_mut() {
            for (mid, info) in publish {
                m.publish_info.insert(Mid::from(mid.as_str()), info);
            }
            for (mid, track) in subscribe {
                m.subscriptions.insert(Mid::from(mid.as_str()), track);
            }
            m.send(ServerMessage::Answer { sdp: answer }, now);
        }
        p.set_remote_offer(sdp, now);
        if p.member.as_ref().is_some_and(|m| m.bridge) {
            p.note_relay_lines();
        }
        self.dirty.push(id);
        self.reconcile(now, id);
    }

    /// Bring the router and the room in line with the participant's
    /// negotiated media lines: publish what it sends, unpublish what it
    /// stopped sending, bind receiving lines to the tracks they carry.
    fn reconcile(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let sections = media_sections(&p.negotiation.remote_offer);
        let mut to_publish = vec![];
        let mut to_unpublish = vec![];
        let mut sending_mids = vec![];
        for s in &sections {
            let Some(mid) = s.mid.as_deref().map(Mid::from) else {
                continue;
            };
            let Some(media) = p.rtc_ref().media(mid) else {
                continue;
            };
            let receives = matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv);
            let published = p
                .member
                .as_ref()
                .is_some_and(|m| m.published.contains_key(&mid));
            // A bridge's line of a participant that left is not a track.
            let orphan = p.member.as_ref().is_some_and(|m| {
                m.bridge
                    && !m
                        .publish_info
                        .get(&mid)
                        .and_then(|i| i.participant.as_ref())
                        .is_some_and(|owner| m.remote.contains_key(owner))
            });
            if receives && !s.rejected && !orphan {
                sending_mids.push(mid);
                if !published {
                    let layers = match media.rids_rx() {
                        Rids::Specific(r) => r.len().max(1),
                        _ => 1,
                    };
                    to_publish.push((mid, media.kind(), layers));
                }
            } else if published {
                to_unpublish.push(mid);
            }
        }
        for (mid, kind, layers) in to_publish {
            self.publish_track(now, id, mid, kind, layers);
        }
        for mid in to_unpublish {
            self.unpublish_track(now, id, mid);
        }
        self.reconcile_subscriptions(now, id);
    }

    /// Bind member `id`'s receiving lines (on its downlink, if it has
    /// one) to the tracks its subscriptions name.
    pub(super) fn reconcile_subscriptions(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(m) = p.member.as_ref() else {
            return;
        };
        let receiver = self.receiver_of(id);
        let Some(rp) = self.participants.get(&receiver) else {
            return;
        };
        let room_name = p.room.clone();
        let Some(room) = self.rooms.get(&room_name) else {
            return;
        };
        let mut binds = vec![];
        let mut drops = vec![];
        let mut gone = vec![];
        for (mid, track_sid) in &m.subscriptions {
            let down = DownTrackKey {
                subscriber: receiver,
                mid: *mid,
            };
            let sends = rp.rtc_ref().media(*mid).is_some_and(|md| {
                matches!(md.direction(), Direction::SendOnly | Direction::SendRecv)
            });
            if !sends || !m.can_subscribe {
                drops.push(down);
                continue;
            }
            match room.track_sids.get(track_sid) {
                Some(track) if room.router.source_of(down) != Some(*track) => {
                    let width = m.max_widths.get(track_sid).copied().flatten();
                    let streams = rp.relay_rids.get(mid).map(Vec::len);
                    binds.push((down, *track, width, streams));
                }
                Some(_) => {}
                None => {
                    drops.push(down);
                    gone.push(track_sid.clone());
                }
            }
        }
        let mut actions = vec![];
        if let Some(room) = self.rooms.get_mut(&room_name) {
            for down in &drops {
                room.router.remove_down_track(*down);
            }
            for (down, track, width, streams) in binds {
                actions.extend(match streams {
                    Some(streams) => room.router.subscribe_relay(down, track, streams, now),
                    None => room.router.subscribe(down, track, width, now),
                });
            }
        }
        if let Some(m) = self.member_mut(id) {
            for down in &drops {
                m.subscriptions.remove(&down.mid);
            }
            // The client subscribed to a track that ended meanwhile: tell it.
            for track in gone {
                m.send(
                    ServerMessage::TrackUnpublished {
                        participant: String::new(),
                        track,
                    },
                    now,
                );
            }
        }
        for action in actions {
            self.execute(action);
        }
    }

    /// A member started sending media line `mid`: a new track in the room.
    pub(super) fn publish_track(
        &mut self,
        now: Instant,
        id: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        layers: usize,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let room_name = p.room.clone();
        let span = p.span.clone();
        let taken = |sid: &str| {
            self.rooms
                .get(&room_name)
                .is_some_and(|r| r.track_sids.contains_key(sid))
        };
        let info = p.member.as_mut().map(|m| {
            let mut info = m.new_track(mid, kind_name(kind), layers > 1);
            if !m.bridge && taken(&info.sid) {
                // A sid the client brought that names another track.
                info.sid = m.track_sid(mid);
            }
            let mut track = PublishedTrack::new(info.clone());
            track.owner = m
                .publish_info
                .get(&mid)
                .and_then(|i| i.participant.clone())
                .filter(|_| m.bridge);
            let publisher = m.publisher_sid(&track);
            m.published.insert(mid, track);
            (publisher, info)
        });
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let key = TrackKey { publisher: id, mid };
        let actions = room.router.add_track(key, kind, layers, now);
        self.ctx
            .metrics
            .tracks
            .with_label_values(&[media_label(kind)])
            .inc();
        span.in_scope(|| tracing::info!(%mid, media = ?kind, layers, "track published"));
        if let Some((sid, info)) = info {
            room.track_sids.insert(info.sid.clone(), key);
            if !self.is_relay_ingest(id) {
                self.broadcast(
                    &room_name,
                    None,
                    &ServerMessage::TrackPublished {
                        participant: sid,
                        track: info.clone(),
                    },
                    now,
                );
            }
            self.webhook(WebhookEvent::new("track_published", &room_name).track(info));
        }
        for action in actions {
            self.execute(action);
        }
    }

    /// A member stopped sending `mid` (or left): the track ends.
    pub(super) fn unpublish_track(&mut self, now: Instant, id: ParticipantId, mid: Mid) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let room_name = p.room.clone();
        let removed = p.member.as_mut().and_then(|m| {
            let t = m.published.remove(&mid)?;
            Some((m.publisher_sid(&t), t.info))
        });
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        let key = TrackKey { publisher: id, mid };
        room.speakers.remove(key);
        let kind = room.router.track_kinds_of(id).len(); // before removal
        let actions = room.router.remove_track(key, now);
        if kind != room.router.track_kinds_of(id).len() {
            if let Some((_, info)) = &removed {
                let label = match info.kind {
                    MediaKindName::Audio => "audio",
                    MediaKindName::Video => "video",
                };
                self.ctx.metrics.tracks.with_label_values(&[label]).dec();
            }
        }
        if let Some((sid, info)) = removed {
            room.track_sids.remove(&info.sid);
            if !self.is_relay_ingest(id) {
                self.broadcast(
                    &room_name,
                    None,
                    &ServerMessage::TrackUnpublished {
                        participant: sid,
                        track: info.sid.clone(),
                    },
                    now,
                );
            }
            self.webhook(WebhookEvent::new("track_unpublished", &room_name).track(info));
        }
        for action in actions {
            self.execute(action);
        }
    }

    pub(super) fn set_muted(&mut self, now: Instant, id: ParticipantId, mid: Mid, muted: bool) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let room_name = p.room.clone();
        let Some(m) = p.member.as_mut() else {
            return;
        };
        let Some(track) = m.published.get_mut(&mid) else {
            return;
        };
        if track.info.muted == muted {
            return;
        }
        track.info.muted = muted;
        let msg = ServerMessage::TrackMuted {
            participant: track.owner.clone().unwrap_or_else(|| m.sid.clone()),
            track: track.info.sid.clone(),
            muted,
        };
        self.broadcast(&room_name, None, &msg, now);
    }

    /// What `identity` (any kind of session) in `room` receives, line by line.
    fn subscriber_report(
        &self,
        now: Instant,
        room: &str,
        identity: &str,
    ) -> Result<AdminReply, BackendError> {
        let r = self.rooms.get(room).ok_or(BackendError::NotFound)?;
        let p = self
            .participants
            .values()
            .filter(|p| *p.room == *room && p.identity == identity)
            .max_by_key(|p| p.created_at)
            .ok_or(BackendError::NotFound)?;
        let layer = |l: &crate::forward::layers::LayerView| LayerReport {
            rid: l.id.as_ref().map(|r| r.to_string()),
            width: l.width,
            height: l.height,
            bitrate_bps: l.bitrate_bps,
        };
        let subscriptions = r
            .router
            .subscription_views(p.id, now)
            .into_iter()
            .map(|v| {
                let track = v.source.and_then(|key| {
                    r.track_sids
                        .iter()
                        .find(|(_, k)| **k == key)
                        .map(|(sid, _)| sid.clone())
                });
                let publisher = v
                    .source
                    .and_then(|key| self.participants.get(&key.publisher))
                    .map(|p| p.identity.clone());
                SubscriptionReport {
                    mid: v.mid.to_string(),
                    kind: kind_name(v.kind),
                    publisher,
                    track,
                    layer: v.current.as_ref().map(layer),
                    target: v
                        .target
                        .map(|t| t.map(|r| r.to_string()).unwrap_or_default()),
                    paused: v.paused,
                    max_width: v.max_width,
                    available: v.available.iter().map(layer).collect(),
                    switches_up: v.switches_up,
                    switches_down: v.switches_down,
                }
            })
            .collect();
        // A downlink reports as its member.
        let sid = p
            .leg_of
            .and_then(|owner| self.participants.get(&owner))
            .unwrap_or(p)
            .resource_id
            .clone();
        Ok(AdminReply::Subscriptions(SubscriberReport {
            identity: p.identity.clone(),
            sid,
            downlink_estimate_bps: r.router.estimate_of(p.id),
            subscriptions,
        }))
    }

    /// What a `joined` message announces besides the room: the ICE servers
    /// (static ones, then those minted for this participant) and the limits.
    fn join_terms(&self, req: &JoinRoom) -> (Vec<signaling::IceServer>, ClientLimits) {
        let mut ice_servers = self.ctx.ice_servers.clone();
        ice_servers.extend(req.ice_servers.iter().cloned());
        let limits = ClientLimits {
            max_tracks: self.ctx.max_tracks_per_participant,
            max_data_message_bytes: MAX_DATA_BYTES,
        };
        (ice_servers, limits)
    }

    /// Whether frames of a publisher's track are held back (muted audio).
    pub(super) fn is_muted(&self, publisher: ParticipantId, mid: Mid) -> bool {
        self.participants
            .get(&publisher)
            .and_then(|p| p.member.as_ref())
            .and_then(|m| m.published.get(&mid))
            .is_some_and(|t| t.info.muted)
    }

    fn update_subscription(
        &mut self,
        now: Instant,
        id: ParticipantId,
        track: &str,
        subscribed: Option<bool>,
        max_width: Option<Option<u32>>,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let room_name = p.room.clone();
        let Some(m) = p.member.as_mut() else {
            return;
        };
        if let Some(w) = max_width {
            m.max_widths.insert(track.to_string(), w);
        }
        let mids: Vec<Mid> = m
            .subscriptions
            .iter()
            .filter(|(_, t)| t.as_str() == track)
            .map(|(mid, _)| *mid)
            .collect();
        if subscribed == Some(false) {
            for mid in &mids {
                m.subscriptions.remove(mid);
            }
        }
        let known = self
            .rooms
            .get(&room_name)
            .is_some_and(|r| r.track_sids.contains_key(track));
        if !known && mids.is_empty() {
            self.reply_error(
                id,
                ErrorCode::NotFound,
                format!("no track {track:?} in this room"),
                now,
            );
            return;
        }
        let receiver = self.receiver_of(id);
        if let Some(room) = self.rooms.get_mut(&room_name) {
            for mid in mids {
                let down = DownTrackKey {
                    subscriber: receiver,
                    mid,
                };
                if subscribed == Some(false) {
                    room.router.remove_down_track(down);
                } else if let Some(w) = max_width {
                    room.router.set_max_width(down, w);
                }
            }
        }
    }

    pub(super) fn update_member(
        &mut self,
        now: Instant,
        id: ParticipantId,
        metadata: Option<String>,
        name: Option<String>,
    ) -> Option<ParticipantInfo> {
        let p = self.participants.get_mut(&id)?;
        let room_name = p.room.clone();
        let m = p.member.as_mut()?;
        if let Some(md) = metadata {
            m.metadata = md;
        }
        if let Some(n) = name {
            m.name = n.chars().take(128).collect();
        }
        let info = m.info();
        self.broadcast(
            &room_name,
            None,
            &ServerMessage::ParticipantUpdated {
                participant: info.clone(),
            },
            now,
        );
        Some(info)
    }

    /// A data-channel message from `from` on channel `cid`.
    pub(super) fn relay_data(
        &mut self,
        now: Instant,
        from: ParticipantId,
        cid: ChannelId,
        data: &[u8],
    ) {
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        let room_name = p.room.clone();
        let identity = p.identity.clone();
        let Some(m) = p.member.as_mut() else {
            return;
        };
        let label = m
            .channels
            .iter()
            .find(|(_, c)| **c == cid)
            .map(|(l, _)| l.clone())
            .unwrap_or_else(|| "reliable".into());
        let refused = if !m.can_publish_data {
            Some((
                ErrorCode::NotAllowed,
                "your token does not grant canPublishData".to_string(),
            ))
        } else if data.len() > MAX_DATA_BYTES {
            Some((
                ErrorCode::TooLarge,
                format!(
                    "data message of {} bytes is larger than {MAX_DATA_BYTES}",
                    data.len()
                ),
            ))
        } else if !m.data_limit.take(now) {
            Some((
                ErrorCode::RateLimited,
                format!(
                    "more than {} data messages per second; message dropped",
                    crate::room::member::DATA_PER_SECOND
                ),
            ))
        } else {
            None
        };
        // Refused with an error for the sender, or (client metrics) silently.
        let incoming: Result<_, Option<(ErrorCode, String)>> = match refused {
            Some(r) => Err(Some(r)),
            None => {
                let sender = data_packets::Sender {
                    sid: &m.sid,
                    identity: &identity,
                };
                data_packets::decode(&label, data, &sender).map_err(|e| match e {
                    data_packets::Refused::Malformed(why) => Some((ErrorCode::BadMessage, why)),
                    data_packets::Refused::NotRelayed => None,
                })
            }
        };
        let incoming = match incoming {
            Ok(i) => i,
            Err(reply) => {
                self.ctx
                    .metrics
                    .data_messages
                    .with_label_values(&["refused"])
                    .inc();
                if let Some((code, message)) = reply {
                    m.send(ServerMessage::error(code, message), now);
                }
                return;
            }
        };
        self.ctx
            .metrics
            .data_messages
            .with_label_values(&["relayed"])
            .inc();
        self.deliver_data(
            &room_name,
            Some(from),
            &label,
            incoming.message,
            incoming.to.as_deref(),
            now,
        );
    }

    /// Write a relayed message to the room's members (all, or `to`), and
    /// pass it to the bridges whose nodes have any of them.
    pub(super) fn deliver_data(
        &mut self,
        room: &str,
        except: Option<ParticipantId>,
        label: &str,
        msg: RelayedData,
        to: Option<&[String]>,
        now: Instant,
    ) -> usize {
        let delivery = data_packets::Delivery::of_label(label);
        // Encoded once per dialect, when a member of it receives it.
        let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        let mut bridges = vec![];
        let mut targets = vec![];
        for rid in &r.participants {
            if Some(*rid) == except {
                continue;
            }
            let Some(p) = self.participants.get(rid) else {
                continue;
            };
            if let Some(m) = p.member.as_ref().filter(|m| m.bridge) {
                if to.is_none_or(|to| m.remote.values().any(|r| to.contains(&r.identity))) {
                    bridges.push(*rid);
                }
                continue;
            }
            if to.is_some_and(|to| !to.contains(&p.identity)) {
                continue;
            }
            let Some(m) = p.member.as_ref() else {
                continue;
            };
            let dialect = if self.downlinks.contains_key(rid) {
                data_packets::Dialect::LiveKit
            } else {
                m.data_dialect()
            };
            let labels = [
                delivery.label(dialect),
                data_packets::Delivery::Reliable.label(dialect),
            ];
            // A member with a downlink hears the room on the server's
            // channels there (its own may never connect).
            let channel = self
                .downlinks
                .get(rid)
                .and_then(|dl| Some((dl.leg, first_channel(&dl.channels, labels)?)))
                .or_else(|| Some((*rid, first_channel(&m.channels, labels)?)));
            if let Some((via, cid)) = channel {
                targets.push((via, cid, dialect));
            }
        }
        for (via, cid, dialect) in targets {
            let Some(p) = self.participants.get_mut(&via) else {
                continue;
            };
            let bytes = encoded[dialect as usize]
                .get_or_insert_with(|| data_packets::encode(&msg, dialect, delivery));
            let binary = dialect == data_packets::Dialect::LiveKit;
            if p.write_channel(cid, bytes, binary) {
                delivered += 1;
                self.dirty.push(via);
            }
        }
        for id in bridges {
            let data = BridgedData {
                label: label.to_string(),
                data: msg.clone(),
                to: to.map(<[String]>::to_vec),
            };
            if let Some(up) = self.uplinks.get_mut(&id) {
                up.tell(ClientMessage::Data(data));
            } else if let Some(m) = self.member_mut(id) {
                m.send(ServerMessage::Data(data), now);
            }
            delivered += 1;
        }
        delivered
    }

    /// Dynacast: tell conference publishers which simulcast layers anyone
    /// can use, so their encoders skip the others.
    pub(super) fn poll_dynacast(&mut self, now: Instant) {
        self.poll_relay_wishes();
        for p in self.participants.values_mut() {
            if p.kind != SessionKind::Room {
                continue;
            }
            let Some(room) = self.rooms.get(&p.room) else {
                continue;
            };
            let Some(m) = p.member.as_mut() else {
                continue;
            };
            let mut messages = vec![];
            for (mid, track) in &mut m.published {
                if !track.info.simulcast {
                    continue;
                }
                let key = TrackKey {
                    publisher: p.id,
                    mid: *mid,
                };
                let Some(wanted) = room.router.wanted_layers(key) else {
                    continue;
                };
                let wanted = wanted
                    .into_iter()
                    .filter_map(|(id, on)| Some((id?.to_string(), on)))
                    .collect();
                messages.extend(track.wish_layers(wanted, now));
            }
            match self.uplinks.get_mut(&p.id) {
                // A bridge's far tracks: its hosting node sends the layers.
                Some(up) => {
                    for msg in messages {
                        if let ServerMessage::Layers { track, active } = msg {
                            tracing::debug!(target: "sfu::dynacast", bridge = p.id, %track, ?active, "wish to the hosting node");
                            up.tell(ClientMessage::Layers { track, active });
                        }
                    }
                }
                None => {
                    for msg in messages {
                        if let ServerMessage::Layers { track, active } = &msg {
                            tracing::debug!(target: "sfu::dynacast", publisher = p.id, %track, ?active, "layers asked of a publisher");
                        }
                        m.send(msg, now);
                    }
                }
            }
        }
    }

    /// Report changed speaker lists to the rooms' members.
    pub(super) fn poll_speakers(&mut self, now: Instant) {
        let mut reports = vec![];
        for (name, room) in &mut self.rooms {
            if let Some(list) = room.speakers.poll(now) {
                reports.push((name.clone(), list));
            }
        }
        for (room, list) in reports {
            // Loudest first: a participant with two voices counts once.
            let mut speakers: Vec<Speaker> = vec![];
            for (track, level) in list {
                if self.is_relay_ingest(track.publisher) {
                    continue;
                }
                let Some(m) = self
                    .participants
                    .get(&track.publisher)
                    .and_then(|p| p.member.as_ref())
                else {
                    continue;
                };
                let sid = match m.published.get(&track.mid) {
                    Some(t) => m.publisher_sid(t),
                    None if m.bridge => continue,
                    None => m.sid.clone(),
                };
                if !speakers.iter().any(|s| s.sid == sid) {
                    speakers.push(Speaker { sid, level });
                }
            }
            self.broadcast(&room, None, &ServerMessage::Speakers { speakers }, now);
        }
    }

    /// Grade every member's link and tell rooms what changed.
    pub(super) fn poll_quality(&mut self, now: Instant) {
        let mut updates: HashMap<Arc<str>, Vec<QualityUpdate>> = HashMap::new();
        let report = |p: &Participant| LinkReport {
            ingress_loss: p.link.ingress_loss,
            egress_loss: p.link.egress_loss,
            rtt: p.link.rtt,
            silent_for: p.idle_for(now),
            connected: p.connected,
        };
        // A member that only receives is graded by its downlink.
        let downlinks: HashMap<ParticipantId, LinkReport> = self
            .participants
            .values()
            .filter_map(|p| Some((p.leg_of?, report(p))))
            .collect();
        for p in self.participants.values_mut() {
            let link = match downlinks.get(&p.id) {
                Some(down) if p.offered_at.is_none() => *down,
                _ => report(p),
            };
            let Some(m) = p.member.as_mut().filter(|m| !m.bridge) else {
                continue;
            };
            let quality = score(&link);
            if quality != m.quality {
                m.quality = quality;
                updates
                    .entry(p.room.clone())
                    .or_default()
                    .push(QualityUpdate {
                        sid: m.sid.clone(),
                        quality,
                    });
            }
        }
        for (room, updates) in updates {
            self.broadcast(
                &room,
                None,
                &ServerMessage::ConnectionQuality { updates },
                now,
            );
        }
    }

    /// Conference participants whose socket stayed away past the grace period.
    pub(super) fn expired_sockets(&self, now: Instant) -> Vec<ParticipantId> {
        self.participants
            .values()
            .filter(|p| p.kind == SessionKind::Room)
            .filter(|p| {
                p.member
                    .as_ref()
                    .and_then(|m| m.socket_lost_at)
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.ctx.reconnect_grace)
            })
            .map(|p| p.id)
            .collect()
    }

    /// The room side of a participant's removal: its tracks end, the
    /// others hear it left, its own socket is told why when it was removed.
    pub(super) fn member_left(&mut self, now: Instant, p: &mut Participant, reason: RemoveReason) {
        let Some(m) = p.member.as_mut() else {
            return;
        };
        let final_message = match reason {
            RemoveReason::Removed => Some(ServerMessage::Removed {
                reason: "removed by an administrator".into(),
            }),
            RemoveReason::RoomClosed => Some(ServerMessage::RoomClosed {
                reason: "closed by an administrator".into(),
            }),
            RemoveReason::Shutdown => Some(ServerMessage::RoomClosed {
                reason: "the server is shutting down".into(),
            }),
            _ => None,
        };
        if let Some(msg) = final_message {
            m.send(msg, now);
        }
        self.by_resume.remove(&m.resume_token);
        let infos = m.infos();
        let published: Vec<(String, TrackInfo)> = m
            .published
            .values()
            .map(|t| (m.publisher_sid(t), t.info.clone()))
            .collect();
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.speakers.remove_where(|k| k.publisher == p.id);
            if room.identities.get(&p.identity) == Some(&p.id) {
                room.identities.remove(&p.identity);
            }
            for (_, t) in &published {
                room.track_sids.remove(&t.sid);
            }
        }
        // A relay ingest is the room's own media again: never a member.
        let shown = !self.is_relay_ingest(p.id);
        for (publisher, t) in published {
            if shown {
                self.broadcast(
                    &p.room,
                    Some(p.id),
                    &ServerMessage::TrackUnpublished {
                        participant: publisher,
                        track: t.sid.clone(),
                    },
                    now,
                );
            }
            self.webhook(WebhookEvent::new("track_unpublished", &p.room).track(t));
        }
        for info in infos {
            if shown {
                self.broadcast(
                    &p.room,
                    Some(p.id),
                    &ServerMessage::ParticipantLeft {
                        sid: info.sid.clone(),
                        identity: info.identity.clone(),
                    },
                    now,
                );
            }
            self.webhook(WebhookEvent::new("participant_left", &p.room).participant(info));
        }
    }

    /// Room administration for the rooms on this worker.
    pub(super) fn admin(
        &mut self,
        now: Instant,
        req: AdminRequest,
        transmit: &mut dyn FnMut(Transmit),
    ) -> Result<AdminReply, BackendError> {
        let room_of = |core: &WorkerCore, room: &str| -> Result<Arc<str>, BackendError> {
            core.rooms
                .get_key_value(room)
                .map(|(k, _)| k.clone())
                .ok_or(BackendError::NotFound)
        };
        let member_of = |core: &WorkerCore, room: &str, identity: &str| {
            core.rooms
                .get(room)
                .and_then(|r| r.identities.get(identity).copied())
                .ok_or(BackendError::NotFound)
        };
        match req {
            AdminRequest::ListRooms => Ok(AdminReply::Rooms(
                self.rooms
                    .values()
                    .filter(|r| r.fanout_of.is_none())
                    .map(|r| RoomSummary {
                        name: r.name.to_string(),
                        participants: self.headcount(r),
                        tracks: r.router.track_count(),
                        age_seconds: now.saturating_duration_since(r.created_at).as_secs(),
                    })
                    .collect(),
            )),
            AdminRequest::Subscriptions { room, identity } => {
                self.subscriber_report(now, &room, &identity)
            }
            AdminRequest::ListParticipants { room } => {
                let room = room_of(self, &room)?;
                Ok(AdminReply::Participants(self.room_members(&room, None)))
            }
            AdminRequest::RemoveParticipant { room, identity } => {
                let Ok(id) = member_of(self, &room, &identity) else {
                    return self.manage_remote(now, &room, &identity, ManageAction::Remove);
                };
                self.remove(now, id, RemoveReason::Removed, transmit);
                Ok(AdminReply::Done)
            }
            AdminRequest::MuteTrack {
                room,
                identity,
                track,
                muted,
            } => {
                let Ok(id) = member_of(self, &room, &identity) else {
                    let action = ManageAction::Mute { track, muted };
                    return self.manage_remote(now, &room, &identity, action);
                };
                let mid = self
                    .member_mut(id)
                    .and_then(|m| m.track_by_sid(&track))
                    .ok_or(BackendError::NotFound)?;
                self.set_muted(now, id, mid, muted);
                Ok(AdminReply::Done)
            }
            AdminRequest::UpdateParticipant {
                room,
                identity,
                metadata,
                name,
            } => {
                let Ok(id) = member_of(self, &room, &identity) else {
                    let action = ManageAction::Update { metadata, name };
                    return self.manage_remote(now, &room, &identity, action);
                };
                self.update_member(now, id, metadata, name)
                    .map(AdminReply::Participant)
                    .ok_or(BackendError::NotFound)
            }
            AdminRequest::CloseRoom { room } => {
                let room = room_of(self, &room)?;
                let ids: Vec<ParticipantId> = self
                    .rooms
                    .get(&room)
                    .map(|r| r.participants.iter().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    self.remove(now, id, RemoveReason::RoomClosed, transmit);
                }
                Ok(AdminReply::Done)
            }
            AdminRequest::SendData {
                room,
                topic,
                payload,
                to,
            } => {
                let room = room_of(self, &room)?;
                let msg = RelayedData {
                    from: None,
                    topic,
                    payload,
                    packet: None,
                };
                self.deliver_data(&room, None, "reliable", msg, to.as_deref(), now);
                Ok(AdminReply::Done)
            }
        }
    }

    /// A data channel opened on a member's connection.
    pub(super) fn channel_opened(&mut self, id: ParticipantId, cid: ChannelId, label: String) {
        if let Some(m) = self.member_mut(id) {
            if m.channels.len() < 8 {
                m.channels.insert(label, cid);
            }
        }
    }
}

use signaling::room_protocol::TrackInfo;

/// The first of `labels` that `channels` has open.
fn first_channel(channels: &HashMap<String, ChannelId>, labels: [&str; 2]) -> Option<ChannelId> {
    labels.iter().find_map(|l| channels.get(*l)).copied()
}
