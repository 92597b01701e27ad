//! Bridges: one meeting over several nodes. A participant who asks this
//! node for a room hosted on another joins a *satellite* of the room here,
//! and the satellite is linked to the room by one bridge: a member of the
//! room on its node (`room_bridge` grant) that speaks for this node's
//! participants and is itself hidden.
//!
//! Both ends keep the far side's participants as the bridge member's
//! `remote` list, and their tracks as the bridge's published lines, so
//! subscribing, muting and leaving work as for local members. Each track
//! crosses once, whatever the number of its subscribers on the far node,
//! with every simulcast layer (layers are chosen per subscriber there).
//!
//! This module is the sans-IO part of both ends: the hosting node's
//! handling of a bridge's `remote`/`remoteLeft` messages, and the
//! satellite's [`Uplink`], which turns what the satellite's members do
//! (it hears the room as a member does) into room-protocol messages for the
//! hosting node, offers included (the uplink always offers), and what the
//! hosting node says into the satellite.
//!
//! This file holds the hosting node's end; `satellite` and `uplink` the satellite's.

mod satellite;
mod uplink;

pub(super) use uplink::Uplink;

use std::collections::{HashMap, HashSet};

use signaling::room_protocol::{
    BridgedData, ClientMessage, ErrorCode, ManageAction, MediaKindName, ParticipantInfo,
    PublishInfo, QualityUpdate, ServerMessage, TrackInfo,
};
use str0m::change::SdpAnswer;
use str0m::media::{Mid, Rid, Simulcast, SimulcastLayer};
use tokio::sync::mpsc;

use super::negotiation::{rtc_config, Downlink};
use super::relay::RELAY_STREAMS;
use super::*;
use crate::room::member::{Member, NewMember};
use crate::webhooks::WebhookEvent;

/// A bridge the satellite wants to open toward the room's node.
#[derive(Debug)]
pub struct OpenBridge {
    pub room: String,
    /// The bridge socket's local address (its host candidate).
    pub local: SocketAddr,
    pub resource_id: String,
    pub identity: String,
    /// Room-protocol messages for the hosting node (the IO shell sends them).
    pub upstream: mpsc::Sender<ClientMessage>,
    /// Some(worker): the room is hosted by that worker of this node (the
    /// satellite is a fan-out of it, bridged over loopback); None: by
    /// another node.
    pub fanout_of: Option<usize>,
    /// An address of the hosting side to try besides its answer's (a worker
    /// of this node: its bound address, not the advertised one).
    pub home_addr: Option<SocketAddr>,
}

/// What a bridge does that nobody else may.
const SPEAKS_FOR_OTHERS: &str = "speaks for other participants";

fn media_kind(kind: MediaKindName) -> MediaKind {
    match kind {
        MediaKindName::Audio => MediaKind::Audio,
        MediaKindName::Video => MediaKind::Video,
    }
}

/// The streams (slots) of `rids` that `active` says are wanted.
fn wanted_streams(rids: &[Rid], active: &std::collections::BTreeMap<String, bool>) -> Vec<usize> {
    rids.iter()
        .enumerate()
        .filter(|(_, rid)| active.get(&rid.to_string()).copied().unwrap_or(false))
        .map(|(slot, _)| slot)
        .collect()
}

fn relay_rids(streams: usize) -> Vec<Rid> {
    RELAY_STREAMS[..streams]
        .iter()
        .map(|r| Rid::from(*r))
        .collect()
}

impl WorkerCore {
    /// The room and member of bridge `bridge`, for a bridge-only message;
    /// anyone else is told it may not (`what`: what the message does).
    fn bridge_member(
        &mut self,
        now: Instant,
        bridge: ParticipantId,
        what: &str,
    ) -> Option<(Arc<str>, &mut Member)> {
        if !self.participants.get(&bridge)?.member.as_ref()?.bridge {
            let message = format!("only another node's bridge {what}");
            self.reply_error(bridge, ErrorCode::NotAllowed, message, now);
            return None;
        }
        let p = self.participants.get_mut(&bridge)?;
        Some((p.room.clone(), p.member.as_mut()?))
    }

    /// Hosting side (and satellite, mirroring): a bridge's participant
    /// joined or changed.
    pub(super) fn remote_joined(
        &mut self,
        now: Instant,
        bridge: ParticipantId,
        info: ParticipantInfo,
        fresh: bool,
    ) {
        let Some((room, m)) = self.bridge_member(now, bridge, SPEAKS_FOR_OTHERS) else {
            return;
        };
        let mut info = info;
        info.tracks = vec![];
        info.name = info.name.chars().take(128).collect();
        let known = m.remote.insert(info.sid.clone(), info.clone()).is_some();
        if fresh && !known {
            self.replace_identity(now, &room, &info.identity, bridge);
        }
        let Some(m) = self.member_mut(bridge) else {
            return;
        };
        let shown = m.remote_info(&info);
        let msg = if known {
            ServerMessage::ParticipantUpdated {
                participant: shown.clone(),
            }
        } else {
            ServerMessage::ParticipantJoined {
                participant: shown.clone(),
            }
        };
        self.broadcast(&room, Some(bridge), &msg, now);
        if !known && !self.is_satellite(&room) {
            self.webhook(WebhookEvent::new("participant_joined", &room).participant(shown));
        }
    }

    /// `identity` joined through `bridge`: its other session in the room,
    /// here or on another bridge's node, is replaced.
    fn replace_identity(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        bridge: ParticipantId,
    ) {
        let local = self
            .rooms
            .get(room)
            .and_then(|r| r.identities.get(identity).copied())
            .filter(|id| *id != bridge);
        if let Some(old) = local {
            self.replace_session(now, old);
        }
        self.replace_remote(now, room, identity, Some(bridge));
    }

    /// Ask every bridge of `room` (but `except`) that speaks for
    /// `identity` to replace that session on its node.
    pub(super) fn replace_remote(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        except: Option<ParticipantId>,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let bridges: Vec<ParticipantId> = r
            .participants
            .iter()
            .filter(|id| Some(**id) != except && !self.uplinks.contains_key(id))
            .filter(|id| {
                self.participants
                    .get(id)
                    .and_then(|p| p.member.as_ref())
                    .is_some_and(|m| m.bridge && m.remote.values().any(|p| p.identity == identity))
            })
            .copied()
            .collect();
        for id in bridges {
            if let Some(m) = self.member_mut(id) {
                m.send(
                    ServerMessage::Manage {
                        identity: identity.to_string(),
                        action: ManageAction::Replace,
                    },
                    now,
                );
            }
        }
    }

    /// The far node graded its participants' links: the room hears it for
    /// the participants this bridge speaks for.
    pub(super) fn remote_quality(
        &mut self,
        now: Instant,
        bridge: ParticipantId,
        updates: Vec<QualityUpdate>,
    ) {
        let what = "reports others' connection quality";
        let Some((room, m)) = self.bridge_member(now, bridge, what) else {
            return;
        };
        let updates: Vec<QualityUpdate> = updates
            .into_iter()
            .filter(|u| match m.remote.get_mut(&u.sid) {
                Some(info) => {
                    info.quality = u.quality;
                    true
                }
                None => false,
            })
            .collect();
        if !updates.is_empty() {
            let msg = ServerMessage::ConnectionQuality { updates };
            self.broadcast(&room, Some(bridge), &msg, now);
        }
    }

    /// A bridge's participant left: its tracks end, the room hears it.
    pub(super) fn remote_left(&mut self, now: Instant, bridge: ParticipantId, sid: &str) {
        let Some((room, m)) = self.bridge_member(now, bridge, SPEAKS_FOR_OTHERS) else {
            return;
        };
        let Some(info) = m.remote.remove(sid) else {
            return;
        };
        let lines: Vec<Mid> = m
            .published
            .iter()
            .filter(|(_, t)| t.owner.as_deref() == Some(sid))
            .map(|(mid, _)| *mid)
            .collect();
        for mid in lines {
            self.unpublish_track(now, bridge, mid);
        }
        let msg = ServerMessage::ParticipantLeft {
            sid: info.sid.clone(),
            identity: info.identity.clone(),
        };
        self.broadcast(&room, Some(bridge), &msg, now);
        if !self.is_satellite(&room) {
            self.webhook(WebhookEvent::new("participant_left", &room).participant(info));
        }
    }

    /// A data message that crossed a bridge (either way): for the members
    /// here and the other bridges.
    pub(super) fn bridged_data(&mut self, now: Instant, bridge: ParticipantId, d: BridgedData) {
        let what = "relays data for other participants";
        let Some((room, _)) = self.bridge_member(now, bridge, what) else {
            return;
        };
        self.ctx
            .metrics
            .data_messages
            .with_label_values(&["relayed"])
            .inc();
        self.deliver_data(&room, Some(bridge), &d.label, d.data, d.to.as_deref(), now);
    }

    /// Hosting side: the bridge's node wants only the `active` layers of
    /// `track` (a track it receives).
    pub(super) fn bridge_wants(
        &mut self,
        now: Instant,
        bridge: ParticipantId,
        track: &str,
        active: &std::collections::BTreeMap<String, bool>,
    ) {
        if self.bridge_member(now, bridge, "asks for layers").is_none() {
            return;
        }
        let Some(p) = self.participants.get(&bridge) else {
            return;
        };
        let Some(m) = p.member.as_ref() else {
            return;
        };
        let lines = m.subscriptions.iter().filter(|(_, sid)| *sid == track);
        let wishes: Vec<(Mid, Vec<usize>)> = lines
            .filter_map(|(mid, _)| Some((*mid, wanted_streams(p.relay_rids.get(mid)?, active))))
            .collect();
        let lines = wishes.len();
        let mut gated = 0;
        if let Some(room) = self.rooms.get_mut(&p.room) {
            for (mid, wanted) in wishes {
                let down = DownTrackKey {
                    subscriber: bridge,
                    mid,
                };
                gated += usize::from(room.router.set_relay_wanted(down, Some(wanted)));
            }
        }
        tracing::debug!(target: "sfu::dynacast", bridge, %track, ?active, lines, gated, "a satellite's wish");
    }

    /// The room's sessions, counting each bridge as the participants it
    /// speaks for (so a room's limit holds over nodes, as far as this node
    /// has heard).
    pub(super) fn headcount(&self, room: &Room) -> usize {
        room.participants
            .iter()
            .map(|id| match self.participants.get(id) {
                Some(p) if p.leg_of.is_some() => 0, // a member's downlink
                Some(p) => p
                    .member
                    .as_ref()
                    .filter(|m| m.bridge)
                    .map_or(1, |m| m.remote.len()),
                None => 1,
            })
            .sum()
    }

    /// An administrator's request about a participant of `room` that is
    /// not here but on a bridge's node: the bridge passes it on. A track
    /// to mute must be the participant's; an update is answered with the
    /// participant as it will be.
    pub(super) fn manage_remote(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        action: ManageAction,
    ) -> Result<signaling::admin::AdminReply, BackendError> {
        let r = self.rooms.get(room).ok_or(BackendError::NotFound)?;
        let found = r.participants.iter().find_map(|id| {
            let m = self.participants.get(id)?.member.as_ref()?;
            let info = m.remote.values().find(|p| p.identity == identity)?;
            Some((*id, m.remote_info(info)))
        });
        let (bridge, mut info) = found.ok_or(BackendError::NotFound)?;
        let reply = match &action {
            ManageAction::Remove | ManageAction::Replace => signaling::admin::AdminReply::Done,
            ManageAction::Mute { track, .. } => {
                if !info.tracks.iter().any(|t| t.sid == *track) {
                    return Err(BackendError::NotFound);
                }
                signaling::admin::AdminReply::Done
            }
            ManageAction::Update { metadata, name } => {
                if let Some(md) = metadata {
                    info.metadata = md.clone();
                }
                if let Some(n) = name {
                    info.name = n.chars().take(128).collect();
                }
                signaling::admin::AdminReply::Participant(info)
            }
        };
        // A satellite's requests go to the room's node (the cluster front
        // routes them there): only the hosting side passes them on.
        if self.uplinks.contains_key(&bridge) {
            return Err(BackendError::NotFound);
        }
        let msg = ServerMessage::Manage {
            identity: identity.to_string(),
            action,
        };
        if let Some(m) = self.member_mut(bridge) {
            m.send(msg, now);
        }
        Ok(reply)
    }

    /// A bridge's node asks this one to act on one of its participants.
    pub(super) fn managed(
        &mut self,
        now: Instant,
        bridge: ParticipantId,
        identity: &str,
        action: ManageAction,
    ) {
        let room = match self.participants.get(&bridge) {
            Some(p) if p.member.as_ref().is_some_and(|m| m.bridge) => p.room.clone(),
            _ => return,
        };
        let Some(id) = self
            .rooms
            .get(&room)
            .and_then(|r| r.identities.get(identity).copied())
            .filter(|id| *id != bridge)
        else {
            return;
        };
        match action {
            ManageAction::Remove => self.remove(now, id, RemoveReason::Removed, &mut |_| {}),
            ManageAction::Replace => self.replace_session(now, id),
            ManageAction::Mute { track, muted } => {
                let mid = self.member_mut(id).and_then(|m| m.track_by_sid(&track));
                if let Some(mid) = mid {
                    self.set_muted(now, id, mid, muted);
                }
            }
            ManageAction::Update { metadata, name } => {
                self.update_member(now, id, metadata, name);
            }
        }
    }

    /// A room here that is a satellite of a room on another node.
    pub(super) fn is_satellite(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.satellite)
    }

    /// A relay ingest's member (the hosting node's own media, relayed for
    /// WHEP viewers here): never sent back.
    fn is_relay_member(&self, sid: &str) -> bool {
        self.by_sid(sid).is_some_and(|id| self.is_relay_ingest(id))
    }

    /// A relay ingest: hidden from the room's members (a satellite's would
    /// otherwise see the room's tracks twice).
    pub(super) fn is_relay_ingest(&self, id: ParticipantId) -> bool {
        self.relay_media.contains_key(&id)
    }
}
