//! A member's media lines against the room: after each of its offers the
//! worker reconciles what the lines say with what the router and the room
//! know (publish what it sends, unpublish what it stopped sending, bind
//! receiving lines to the tracks its subscriptions name), so repeated or
//! reordered offers converge; mute and per-subscription settings.

use super::*;

impl WorkerCore {
    pub(super) fn apply_offer(
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
        let sdp = crate::room::codec_order::preferred_codecs_first(&sdp, |mid| {
            publish.get(mid).and_then(|info| info.codec.as_deref())
        })
        .into_owned();
        if let Err((code, message)) = check_room_offer(&sdp, m.can_publish, max_tracks) {
            self.reply_error(id, code, message, now);
            return;
        }
        // A bridge (another node's link) keeps the descriptor on every line:
        // it carries scalable AV1 on to members of its own node.
        let offered = match m.bridge {
            true => std::borrow::Cow::Borrowed(sdp.as_str()),
            false => unread_descriptors_dropped(&sdp),
        };
        let offer = match SdpOffer::from_sdp_string(&offered) {
            Ok(o) => o,
            Err(e) => {
                self.reply_error(
                    id,
                    ErrorCode::Negotiation,
                    format!(
                        "malformed SDP: {}",
                        crate::room::offer::parse_failure(&sdp, &e.to_string())
                    ),
                    now,
                );
                return;
            }
        };
        let answer = match p.rtc_mut().sdp_api().accept_offer(offer) {
            Ok(a) => crate::room::codec_order::answer_in_offered_order(&a.to_sdp_string(), &sdp),
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
    pub(super) fn reconcile(&mut self, now: Instant, id: ParticipantId) {
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
    pub(in crate::worker::core) fn reconcile_subscriptions(
        &mut self,
        now: Instant,
        id: ParticipantId,
    ) {
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
    pub(in crate::worker::core) fn publish_track(
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
    pub(in crate::worker::core) fn unpublish_track(
        &mut self,
        now: Instant,
        id: ParticipantId,
        mid: Mid,
    ) {
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

    pub(in crate::worker::core) fn set_muted(
        &mut self,
        now: Instant,
        id: ParticipantId,
        mid: Mid,
        muted: bool,
    ) {
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

    /// Whether frames of a publisher's track are held back (muted audio).
    pub(in crate::worker::core) fn is_muted(&self, publisher: ParticipantId, mid: Mid) -> bool {
        self.participants
            .get(&publisher)
            .and_then(|p| p.member.as_ref())
            .and_then(|m| m.published.get(&mid))
            .is_some_and(|t| t.info.muted)
    }

    pub(super) fn update_subscription(
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
}
