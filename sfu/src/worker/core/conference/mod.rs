//! The room protocol inside a worker: joining and resuming, room events to
//! every member's socket, metadata updates and a member's departure.
//! `tracks` applies members' offers (publications and subscriptions) and
//! mute, `data` relays data messages, `periodic` sends dynacast, active
//! speakers and connection quality, `admin` serves the admin API.
//!
//! Only the client offers (see `signaling/PROTOCOL.md`): after each offer
//! the worker reconciles what the client's media lines say with what the
//! router and the room know, so repeated or reordered offers converge.

mod admin;
mod data;
mod periodic;
mod tracks;

use super::negotiation::{sdp_attr, Downlink};
use super::*;
use signaling::admin::{
    AdminReply, AdminRequest, LayerReport, RoomSummary, SubscriberReport, SubscriptionReport,
};
use signaling::backend::{JoinRoom, RoomConnection};
use signaling::room_protocol::{
    BridgedData, ClientLimits, ClientMessage, ErrorCode, ManageAction, MediaKindName,
    ParticipantInfo, QualityUpdate, RelayedData, ServerMessage, Speaker, TrackInfo,
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
}
