//! The worker's satellite side of a bridge: opening it, turning what the
//! satellite's members do into offers and messages for the hosting node
//! (through its [`Uplink`]), and what that node says into the satellite.

use super::uplink::OfferedLine;
use super::*;

impl WorkerCore {
    /// Satellite side: create the bridge member (the offering side, full
    /// ICE) in the satellite room, and queue what the room has now.
    pub(in crate::worker::core) fn open_bridge(
        &mut self,
        now: Instant,
        req: OpenBridge,
    ) -> Result<(), BackendError> {
        let creds = IceCreds::new();
        // Between workers of this node: nothing to estimate or pace.
        let downlink = match req.fanout_of {
            Some(_) => Downlink::Loopback,
            None => Downlink::Trunk,
        };
        let mut rtc = rtc_config(creds.clone(), SessionKind::Room, downlink)
            .set_ice_lite(false)
            .build(now);
        let candidate = Candidate::host(req.local, "udp")
            .map_err(|e| BackendError::Internal(format!("bridge candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut member = Member::new(
            NewMember {
                sid: req.resource_id.clone(),
                identity: req.identity.clone(),
                name: req.identity.clone(),
                metadata: String::new(),
                can_publish: true,
                can_subscribe: true,
                can_publish_data: false,
            },
            now,
        );
        member.bridge = true;
        // Its socket is the uplink: never "lost" (no reconnect grace runs out).
        member.socket_lost_at = None;
        let room: Arc<str> = Arc::from(req.room.as_str());
        if let Some(home) = req.fanout_of {
            self.ensure_fanout_room(&room, home, now);
            if let Some(r) = self.rooms.get_mut(&room) {
                r.satellite = true;
            }
        } else if !self.rooms.contains_key(&room) {
            if !self.ctx.registry.claim_room(&room, self.ctx.index) {
                return Err(BackendError::Internal(
                    "room moved to another worker; retry".into(),
                ));
            }
            let mut satellite = Room::new(room.clone(), now);
            satellite.satellite = true;
            self.rooms.insert(room.clone(), satellite);
        }
        let (id, _) = self.insert_participant(
            now,
            NewSession {
                kind: SessionKind::Room,
                room: room.clone(),
                identity: req.identity,
                resource_id: req.resource_id,
                max_width: None,
                remote_offer: String::new(),
                member: Some(member),
            },
            rtc,
            creds,
        )?;
        self.relay_sockets.insert(req.local, id);
        self.uplinks
            .insert(id, Uplink::new(req.upstream, req.home_addr));
        for info in self.room_members(&room, Some(id)) {
            // Re-announced (a re-opened bridge): not a new join.
            self.uplink_hears(
                id,
                ServerMessage::ParticipantJoined { participant: info },
                false,
            );
        }
        tracing::info!(%room, participant = id, "bridge opened");
        Ok(())
    }

    /// Satellite side: the bridge hears a room event as a member would.
    pub(super) fn uplink_hears(&mut self, id: ParticipantId, msg: ServerMessage, fresh: bool) {
        let remote = |core: &WorkerCore, sid: &str| {
            core.is_relay_member(sid)
                || core
                    .participants
                    .get(&id)
                    .and_then(|p| p.member.as_ref())
                    .is_some_and(|m| m.remote.contains_key(sid))
        };
        let is_remote = match &msg {
            ServerMessage::ParticipantJoined { participant }
            | ServerMessage::ParticipantUpdated { participant } => remote(self, &participant.sid),
            ServerMessage::ParticipantLeft { sid, .. } => remote(self, sid),
            ServerMessage::TrackPublished { participant, .. }
            | ServerMessage::TrackUnpublished { participant, .. }
            | ServerMessage::TrackMuted { participant, .. } => remote(self, participant),
            // Mixed lists: only the announced participants' entries go up.
            ServerMessage::ConnectionQuality { .. } => false,
            _ => true,
        };
        let Some(up) = self.uplinks.get_mut(&id) else {
            return;
        };
        if is_remote {
            return;
        }
        match msg {
            ServerMessage::ParticipantJoined { mut participant }
            | ServerMessage::ParticipantUpdated { mut participant } => {
                let tracks = std::mem::take(&mut participant.tracks);
                let fresh = fresh && up.announced.insert(participant.sid.clone());
                up.tell(ClientMessage::Remote { participant, fresh });
                for t in tracks {
                    if !up.knows_local(&t.sid) {
                        up.to_send.push(t.sid);
                    }
                }
            }
            ServerMessage::ParticipantLeft { sid, .. } if up.announced.remove(&sid) => {
                up.tell(ClientMessage::RemoteLeft { sid });
            }
            ServerMessage::TrackPublished { track, .. } if !up.knows_local(&track.sid) => {
                up.to_send.push(track.sid);
            }
            ServerMessage::TrackUnpublished { track, .. } => {
                if let Some(mid) = up.stop_sending(&track) {
                    if let Some(room) = self
                        .participants
                        .get(&id)
                        .and_then(|p| self.rooms.get_mut(&p.room))
                    {
                        room.router.remove_down_track(DownTrackKey {
                            subscriber: id,
                            mid,
                        });
                    }
                }
            }
            ServerMessage::TrackMuted { track, muted, .. } => {
                up.tell(ClientMessage::Mute { track, muted });
            }
            ServerMessage::ConnectionQuality { updates } => {
                let updates: Vec<QualityUpdate> = updates
                    .into_iter()
                    .filter(|u| up.announced.contains(&u.sid))
                    .collect();
                if !updates.is_empty() {
                    up.tell(ClientMessage::Quality { updates });
                }
            }
            _ => {}
        }
    }

    /// Satellite side: a message from the hosting node to the bridge.
    pub(in crate::worker::core) fn uplink_inbound(
        &mut self,
        now: Instant,
        id: ParticipantId,
        msg: ServerMessage,
    ) {
        if !self.uplinks.contains_key(&id) {
            return;
        }
        match msg {
            ServerMessage::Joined { participants, .. } => {
                for info in participants {
                    self.mirror_participant(now, id, info);
                }
            }
            ServerMessage::ParticipantJoined { participant }
            | ServerMessage::ParticipantUpdated { participant } => {
                self.mirror_participant(now, id, participant)
            }
            ServerMessage::ParticipantLeft { sid, .. } => {
                let tracks: Vec<String> = self.uplinks.get(&id).map_or(vec![], |up| {
                    up.far_tracks
                        .iter()
                        .filter(|(_, (owner, _))| *owner == sid)
                        .map(|(t, _)| t.clone())
                        .collect()
                });
                for t in tracks {
                    self.end_far_track(now, id, &t);
                }
                self.remote_left(now, id, &sid);
            }
            ServerMessage::TrackPublished { participant, track } => {
                let known = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.member.as_ref())
                    .is_some_and(|m| m.remote.contains_key(&participant));
                if let (true, Some(up)) = (known, self.uplinks.get_mut(&id)) {
                    up.want_far_track(&participant, track);
                }
            }
            ServerMessage::TrackUnpublished { track, .. } => self.end_far_track(now, id, &track),
            ServerMessage::TrackMuted { track, muted, .. } => {
                if let Some(up) = self.uplinks.get_mut(&id) {
                    if let Some((_, info)) = up.far_tracks.get_mut(&track) {
                        info.muted = muted;
                    }
                }
                let mid = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.member.as_ref())
                    .and_then(|m| m.track_by_sid(&track));
                if let Some(mid) = mid {
                    self.set_muted(now, id, mid, muted);
                }
            }
            ServerMessage::Answer { sdp } => self.uplink_answer(now, id, &sdp),
            // Only the far participants' grades count (ours are not mirrored).
            ServerMessage::ConnectionQuality { updates } => self.remote_quality(now, id, updates),
            ServerMessage::Data(d) => self.bridged_data(now, id, d),
            ServerMessage::Manage { identity, action } => self.managed(now, id, &identity, action),
            ServerMessage::Layers { track, active } => {
                // The hosting node's subscribers want only these layers of
                // a track sent from here.
                let mid = self.uplinks.get(&id).and_then(|up| {
                    up.sending
                        .iter()
                        .find(|(_, s)| **s == track)
                        .map(|(m, _)| *m)
                });
                let room = self.participants.get(&id).map(|p| p.room.clone());
                let gated = match (mid, room.and_then(|r| self.rooms.get_mut(&r))) {
                    (Some(mid), Some(room)) => {
                        let wanted = wanted_streams(&relay_rids(RELAY_STREAMS.len()), &active);
                        let down = DownTrackKey {
                            subscriber: id,
                            mid,
                        };
                        room.router.set_relay_wanted(down, Some(wanted))
                    }
                    _ => false,
                };
                tracing::debug!(target: "sfu::dynacast", bridge = id, %track, ?active, ?mid, gated, "the hosting node's wish");
            }
            ServerMessage::Error { code, message } => {
                tracing::warn!(participant = id, ?code, %message, "bridge: the hosting node refused");
                // An offer it will not answer: start over with a new bridge
                // (the supervisor re-opens it with the room's state).
                if let Some(up) = self.uplinks.get_mut(&id).filter(|up| up.in_flight) {
                    up.broken = true;
                }
            }
            ServerMessage::RoomClosed { .. } => {
                let room = self.participants.get(&id).map(|p| p.room.clone());
                let members: Vec<ParticipantId> = room
                    .and_then(|r| self.rooms.get(&r))
                    .map(|r| r.participants.iter().copied().collect())
                    .unwrap_or_default();
                for m in members {
                    self.remove(now, m, RemoveReason::RoomClosed, &mut |_| {});
                }
            }
            ServerMessage::Removed { .. } => {
                self.remove(now, id, RemoveReason::Removed, &mut |_| {})
            }
            _ => {}
        }
    }

    /// A far participant, as the hosting node describes it (not one of ours).
    pub(super) fn mirror_participant(
        &mut self,
        now: Instant,
        id: ParticipantId,
        info: ParticipantInfo,
    ) {
        let ours = self
            .uplinks
            .get(&id)
            .is_some_and(|up| up.announced.contains(&info.sid));
        if ours {
            return;
        }
        let owner = info.sid.clone();
        let tracks = info.tracks.clone();
        self.remote_joined(now, id, info, false);
        if let Some(up) = self.uplinks.get_mut(&id) {
            for t in tracks {
                up.want_far_track(&owner, t);
            }
        }
    }

    /// A far track ended: its line here stops, its subscribers here see it end.
    pub(super) fn end_far_track(&mut self, now: Instant, id: ParticipantId, sid: &str) {
        let mid = self
            .uplinks
            .get_mut(&id)
            .and_then(|up| up.stop_receiving(sid));
        if let Some(mid) = mid {
            self.unpublish_track(now, id, mid);
        }
    }

    /// Satellite side: offer what changed (one offer in flight at a time).
    pub(super) fn uplink_offer(&mut self, id: ParticipantId) {
        let Some(up) = self.uplinks.get_mut(&id) else {
            return;
        };
        if up.in_flight || !up.has_changes() {
            return;
        }
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        // What the local tracks to send are: kind, publisher, info.
        let mut sends = vec![];
        for sid in std::mem::take(&mut up.to_send) {
            let Some(key) = room.track_sids.get(&sid) else {
                continue;
            };
            let Some(publisher) = self.participants.get(&key.publisher) else {
                continue;
            };
            let Some(m) = publisher.member.as_ref() else {
                continue;
            };
            let Some(track) = m.published.get(&key.mid) else {
                continue;
            };
            sends.push((sid, m.publisher_sid(track), track.info.clone()));
        }
        let receives: Vec<TrackInfo> = std::mem::take(&mut up.to_receive)
            .into_iter()
            .filter_map(|sid| up.far_tracks.get(&sid).map(|(_, i)| i.clone()))
            .collect();
        let stops = std::mem::take(&mut up.to_stop);
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let mut change = p.rtc_mut().sdp_api();
        let mut publish = std::collections::BTreeMap::new();
        let mut subscribe = std::collections::BTreeMap::new();
        let mut offered = vec![];
        for (sid, owner, info) in sends {
            let kind = media_kind(info.kind);
            let streams = if info.simulcast && kind == MediaKind::Video {
                RELAY_STREAMS.len()
            } else {
                1
            };
            let simulcast = (streams > 1).then(|| {
                let mut s = Simulcast::new();
                for rid in RELAY_STREAMS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = change.add_media(kind, Direction::SendOnly, None, None, simulcast);
            publish.insert(
                mid.to_string(),
                PublishInfo {
                    source: info.source,
                    name: info.name.clone(),
                    sid: Some(sid.clone()),
                    participant: Some(owner),
                    layers: info.layers.clone(),
                    codec: None,
                },
            );
            offered.push(OfferedLine::Send { mid, sid, streams });
        }
        for info in receives {
            let kind = media_kind(info.kind);
            let simulcast = (info.simulcast && kind == MediaKind::Video).then(|| {
                let mut s = Simulcast::new();
                for rid in RELAY_STREAMS {
                    s.add_recv_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = change.add_media(kind, Direction::RecvOnly, None, None, simulcast);
            subscribe.insert(mid.to_string(), info.sid.clone());
            offered.push(OfferedLine::Receive { mid, sid: info.sid });
        }
        for mid in stops {
            change.set_direction(mid, Direction::Inactive);
        }
        let Some((offer, pending)) = change.apply() else {
            return;
        };
        p.pending_offer = Some(pending);
        up.offered = offered;
        up.in_flight = true;
        up.tell(ClientMessage::Offer {
            sdp: offer.to_sdp_string(),
            publish,
            subscribe,
        });
    }

    /// Satellite side: the hosting node answered: sending lines carry their
    /// local tracks, receiving lines become the far tracks here.
    pub(super) fn uplink_answer(&mut self, now: Instant, id: ParticipantId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let accepted = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| e.to_string())
            .and_then(|a| p.accept_answer(a));
        let Some(up) = self.uplinks.get_mut(&id) else {
            return;
        };
        up.in_flight = false;
        if let Err(e) = accepted {
            tracing::warn!(participant = id, error = %e, "bridge: unusable answer");
            up.broken = true;
            return;
        }
        if let Some(addr) = up.home_addr.take() {
            match Candidate::host(addr, "udp") {
                Ok(c) => p.rtc_mut().add_remote_candidate(c),
                Err(e) => tracing::warn!(%addr, error = %e, "bridge: unusable hosting address"),
            }
        }
        self.dirty.push(id);
        let offered = std::mem::take(&mut up.offered);
        let room_name = p.room.clone();
        let mut actions = vec![];
        let mut publish = vec![];
        for line in offered {
            match line {
                OfferedLine::Send { mid, sid, streams } => {
                    let key = self
                        .rooms
                        .get(&room_name)
                        .and_then(|r| r.track_sids.get(&sid).copied());
                    let Some(key) = key else {
                        up.to_stop.push(mid);
                        continue;
                    };
                    up.sending.insert(mid, sid);
                    if streams > 1 {
                        p.relay_rids.insert(mid, relay_rids(streams));
                    }
                    if let Some(room) = self.rooms.get_mut(&room_name) {
                        let down = DownTrackKey {
                            subscriber: id,
                            mid,
                        };
                        actions.extend(room.router.subscribe_relay(down, key, streams, now));
                    }
                }
                OfferedLine::Receive { mid, sid } => {
                    let Some((owner, info)) = up.far_tracks.get(&sid).cloned() else {
                        up.to_stop.push(mid);
                        continue;
                    };
                    up.receiving.insert(mid, sid.clone());
                    if let Some(m) = p.member.as_mut() {
                        m.publish_info.insert(
                            mid,
                            PublishInfo {
                                source: info.source,
                                name: info.name.clone(),
                                sid: Some(sid),
                                participant: Some(owner),
                                layers: info.layers.clone(),
                                codec: None,
                            },
                        );
                    }
                    let kind = media_kind(info.kind);
                    let layers = if info.simulcast && kind == MediaKind::Video {
                        RELAY_STREAMS.len()
                    } else {
                        1
                    };
                    publish.push((mid, kind, layers, info.muted));
                }
            }
        }
        for action in actions {
            self.execute(action);
        }
        for (mid, kind, layers, muted) in publish {
            self.publish_track(now, id, mid, kind, layers);
            if muted {
                self.set_muted(now, id, mid, true);
            }
        }
    }

    /// Let each bridge hear what its room said, offer what changed, and
    /// close the bridges whose hosting node can no longer be told anything.
    pub(in crate::worker::core) fn poll_uplinks(
        &mut self,
        now: Instant,
        transmit: &mut dyn FnMut(Transmit),
    ) {
        for (id, msg) in std::mem::take(&mut self.heard) {
            self.uplink_hears(id, msg, true);
        }
        let ids: Vec<ParticipantId> = self.uplinks.keys().copied().collect();
        for id in ids {
            self.uplink_offer(id);
            if self.uplinks.get(&id).is_some_and(|up| up.broken) {
                tracing::warn!(participant = id, "bridge broken; closing it");
                self.remove(now, id, RemoveReason::Closed, transmit);
            }
        }
    }
}
