//! Room administration for the rooms on this worker (the admin API's
//! requests) and the per-subscriber report it answers with.

use super::*;

impl WorkerCore {
    /// Room administration for the rooms on this worker.
    pub(in crate::worker::core) fn admin(
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

    /// What `identity` (any kind of session) in `room` receives, line by line.
    pub(super) fn subscriber_report(
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
            spatial: l.spatial,
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
                        .map(|t| t.rid.map(|r| r.to_string()).unwrap_or_default()),
                    target_spatial: v.target.map(|t| t.spatial),
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
}
