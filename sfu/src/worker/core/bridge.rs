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

/// A line added by the offer in flight.
#[derive(Debug)]
enum OfferedLine {
    /// Sends local track `sid` upstream.
    Send {
        mid: Mid,
        sid: String,
        streams: usize,
    },
    /// Receives far track `sid`.
    Receive { mid: Mid, sid: String },
}

/// The satellite's end of a bridge.
#[derive(Debug)]
pub(super) struct Uplink {
    upstream: mpsc::Sender<ClientMessage>,
    home_addr: Option<SocketAddr>,
    /// Local participants told upstream (sids).
    announced: HashSet<String>,
    /// The hosting node's tracks of far participants: sid -> (owner, info).
    far_tracks: HashMap<String, (String, TrackInfo)>,
    /// Local tracks to send, far tracks to receive, lines to stop: the
    /// next offer's changes.
    to_send: Vec<String>,
    to_receive: Vec<String>,
    to_stop: Vec<Mid>,
    /// Negotiated lines: sending a local track / receiving a far one (sids).
    sending: HashMap<Mid, String>,
    receiving: HashMap<Mid, String>,
    /// Lines of the offer in flight.
    offered: Vec<OfferedLine>,
    in_flight: bool,
    /// The hosting node can no longer be told anything: close the bridge.
    broken: bool,
}

impl Uplink {
    fn new(upstream: mpsc::Sender<ClientMessage>, home_addr: Option<SocketAddr>) -> Uplink {
        Uplink {
            upstream,
            home_addr,
            announced: HashSet::new(),
            far_tracks: HashMap::new(),
            to_send: vec![],
            to_receive: vec![],
            to_stop: vec![],
            sending: HashMap::new(),
            receiving: HashMap::new(),
            offered: vec![],
            in_flight: false,
            broken: false,
        }
    }

    pub(super) fn tell(&mut self, msg: ClientMessage) {
        if self.upstream.try_send(msg).is_err() {
            self.broken = true;
        }
    }

    /// Local track `sid` is sent, or will be.
    fn knows_local(&self, sid: &str) -> bool {
        self.to_send.iter().any(|s| s == sid)
            || self.sending.values().any(|s| s == sid)
            || self
                .offered
                .iter()
                .any(|l| matches!(l, OfferedLine::Send { sid: s, .. } if s == sid))
    }

    fn has_changes(&self) -> bool {
        !(self.to_send.is_empty() && self.to_receive.is_empty() && self.to_stop.is_empty())
    }

    /// Stop sending local track `sid` (wherever it is in negotiation).
    fn stop_sending(&mut self, sid: &str) -> Option<Mid> {
        self.to_send.retain(|s| s != sid);
        end_line(&mut self.sending, &mut self.to_stop, sid)
    }

    /// Stop receiving far track `sid`; the line it came on, if negotiated.
    fn stop_receiving(&mut self, sid: &str) -> Option<Mid> {
        self.far_tracks.remove(sid);
        self.to_receive.retain(|s| s != sid);
        end_line(&mut self.receiving, &mut self.to_stop, sid)
    }

    fn want_far_track(&mut self, owner: &str, info: TrackInfo) {
        let sid = info.sid.clone();
        let known = self.far_tracks.contains_key(&sid);
        self.far_tracks
            .insert(sid.clone(), (owner.to_string(), info));
        if !known {
            self.to_receive.push(sid);
        }
    }
}

/// The negotiated line of track `sid` in `lines` ends: it goes in the
/// next offer as stopped.
fn end_line(lines: &mut HashMap<Mid, String>, to_stop: &mut Vec<Mid>, sid: &str) -> Option<Mid> {
    let mid = lines.iter().find(|(_, s)| *s == sid).map(|(m, _)| *m)?;
    lines.remove(&mid);
    to_stop.push(mid);
    Some(mid)
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

    /// Satellite side: create the bridge member (the offering side, full
    /// ICE) in the satellite room, and queue what the room has now.
    pub(super) fn open_bridge(
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
    fn uplink_hears(&mut self, id: ParticipantId, msg: ServerMessage, fresh: bool) {
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
    pub(super) fn uplink_inbound(&mut self, now: Instant, id: ParticipantId, msg: ServerMessage) {
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
    fn mirror_participant(&mut self, now: Instant, id: ParticipantId, info: ParticipantInfo) {
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
    fn end_far_track(&mut self, now: Instant, id: ParticipantId, sid: &str) {
        let mid = self
            .uplinks
            .get_mut(&id)
            .and_then(|up| up.stop_receiving(sid));
        if let Some(mid) = mid {
            self.unpublish_track(now, id, mid);
        }
    }

    /// Satellite side: offer what changed (one offer in flight at a time).
    fn uplink_offer(&mut self, id: ParticipantId) {
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
    fn uplink_answer(&mut self, now: Instant, id: ParticipantId, sdp: &str) {
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
    pub(super) fn poll_uplinks(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::room_protocol::TrackSource;

    fn track(sid: &str) -> TrackInfo {
        TrackInfo {
            sid: sid.into(),
            kind: MediaKindName::Video,
            source: TrackSource::Camera,
            name: "camera".into(),
            muted: false,
            simulcast: true,
            layers: vec![],
        }
    }

    fn uplink() -> (Uplink, mpsc::Receiver<ClientMessage>) {
        let (tx, rx) = mpsc::channel(4);
        (Uplink::new(tx, None), rx)
    }

    #[test]
    fn a_far_track_is_asked_for_once_and_its_end_stops_its_line() {
        let (mut up, _rx) = uplink();
        up.want_far_track("PA_a", track("TR_a_1"));
        up.want_far_track("PA_a", track("TR_a_1")); // told again (joined + trackPublished)
        assert_eq!(up.to_receive, vec!["TR_a_1".to_string()]);
        // Negotiated on line "x": ending it stops the line.
        up.to_receive.clear();
        up.receiving.insert(Mid::from("x"), "TR_a_1".into());
        assert_eq!(up.stop_receiving("TR_a_1"), Some(Mid::from("x")));
        assert_eq!(up.to_stop, vec![Mid::from("x")]);
        assert!(up.far_tracks.is_empty());
        // Ended before its line was offered: nothing to stop.
        up.want_far_track("PA_a", track("TR_a_2"));
        assert_eq!(up.stop_receiving("TR_a_2"), None);
        assert!(up.to_receive.is_empty());
    }

    #[test]
    fn a_local_track_is_known_queued_offered_or_sent() {
        let (mut up, _rx) = uplink();
        assert!(!up.knows_local("TR_b_1"));
        up.to_send.push("TR_b_1".into());
        assert!(up.knows_local("TR_b_1"));
        up.to_send.clear();
        up.offered.push(OfferedLine::Send {
            mid: Mid::from("y"),
            sid: "TR_b_1".into(),
            streams: 3,
        });
        assert!(up.knows_local("TR_b_1"));
        up.offered.clear();
        up.sending.insert(Mid::from("y"), "TR_b_1".into());
        assert!(up.knows_local("TR_b_1"));
        assert_eq!(up.stop_sending("TR_b_1"), Some(Mid::from("y")));
        assert!(!up.knows_local("TR_b_1"));
        assert!(up.has_changes(), "the stopped line goes in the next offer");
    }

    #[test]
    fn a_full_queue_to_the_hosting_node_breaks_the_bridge() {
        let (mut up, _rx) = uplink();
        for _ in 0..4 {
            up.tell(ClientMessage::Ping { id: None });
        }
        assert!(!up.broken);
        up.tell(ClientMessage::Ping { id: None });
        assert!(up.broken, "a message could not be queued");
    }

    #[test]
    fn wanted_streams_are_the_active_rids_slots() {
        let rids = relay_rids(3);
        let active = [("r0", true), ("r1", false), ("r2", true), ("q", true)]
            .into_iter()
            .map(|(r, on)| (r.to_string(), on))
            .collect();
        assert_eq!(wanted_streams(&rids, &active), vec![0, 2]);
        assert_eq!(
            wanted_streams(&rids, &Default::default()),
            Vec::<usize>::new()
        );
    }
}
