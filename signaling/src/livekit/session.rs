//! One LiveKit client's signalling session, sans-IO: it turns the client's `SignalRequest`s into the room's
//! messages for the participant's media worker, and the room's messages
//! into `SignalResponse`s, keeping what LiveKit's clients need and the room
//! does not say: the others' `ParticipantInfo` with versions that only
//! grow, the client's own tracks by `cid`, which receive section carries
//! which remote track ([`ReceiveSlots`]), offer ids, and the active
//! speakers.
//!
//! In the single peer connection mode the client always offers and the
//! server answers. A remote track reaches the client by being placed on
//! one of its receive-only sections and, if that needs a new offer, by a
//! `media_sections_requirement`. In the dual mode the client's offers
//! only publish; it receives on a second connection (its subscriber),
//! which the worker offers and whose lines the worker places: the session
//! tells the worker which tracks the client should receive (`downlink`)
//! and passes offers and answers through.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::convert;
use super::proto::{
    self, signal_request::Message as Request, signal_response::Message as Response,
};
use super::sdp::{self, SectionKind};
use super::slots::ReceiveSlots;
use crate::room_protocol::{ClientMessage, ErrorCode, PublishInfo, ServerMessage};

/// What the session asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to the client (boxed: a `JoinResponse` is large).
    Client(Box<Response>),
    /// Hand to the participant's worker.
    Room(ClientMessage),
    /// Close the signal connection after what was sent.
    Close(String),
}

impl Output {
    fn client(response: Response) -> Output {
        Output::Client(Box::new(response))
    }
}

/// Who joined, as the token and the join request say.
#[derive(Debug, Clone)]
pub struct Joining {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub auto_subscribe: bool,
    /// The client's first offer, carried in its join request.
    pub offer: Option<proto::SessionDescription>,
    /// Dual peer connection mode (`/rtc`): the client receives on a
    /// connection the server offers.
    pub dual: bool,
}

/// Most tracks a client may announce with `add_track` and not publish yet.
const MAX_PENDING_TRACKS: usize = 32;

/// An answer the worker owes, in offer order.
#[derive(Debug)]
struct PendingAnswer {
    id: u32,
    carried: BTreeMap<String, String>,
    idle: Vec<String>,
}

pub struct Session {
    joining: Joining,
    me: proto::ParticipantInfo,
    room: String,
    others: BTreeMap<String, proto::ParticipantInfo>,
    /// Own tracks announced by `add_track`, by cid.
    own: BTreeMap<String, proto::TrackInfo>,
    slots: ReceiveSlots,
    /// Tracks the client unsubscribed from.
    unsubscribed: BTreeSet<String>,
    answers: VecDeque<PendingAnswer>,
    /// A `media_sections_requirement` was sent and no offer came since.
    awaiting_offer: bool,
    speakers: BTreeSet<String>,
    joined: bool,
    /// The worker's token to resume this participant on a new socket.
    resume_token: String,
    /// Left, removed or refused: nothing to resume.
    ended: bool,
    /// Tracks the client disabled (`track_setting`): they keep their
    /// section, and nothing is forwarded on it.
    disabled: BTreeSet<String>,
    /// An offer is wanted though no placement changed (a track enabled
    /// again is bound to its section by the next offer).
    reoffer: bool,
    /// Dual mode: the last `downlink` wish sent (tracks, paused).
    downlink_sent: Option<(Vec<String>, Vec<String>)>,
    /// Dual mode: the next `downlink` wish restarts ICE (after a resume).
    restart_downlink: bool,
    /// Dual mode: the id of the server's last offer.
    offer_id: u32,
}

impl Session {
    pub fn new(joining: Joining) -> Session {
        Session {
            joining,
            me: proto::ParticipantInfo::default(),
            room: String::new(),
            others: BTreeMap::new(),
            own: BTreeMap::new(),
            slots: ReceiveSlots::default(),
            unsubscribed: BTreeSet::new(),
            answers: VecDeque::new(),
            awaiting_offer: false,
            speakers: BTreeSet::new(),
            joined: false,
            resume_token: String::new(),
            ended: false,
            disabled: BTreeSet::new(),
            reoffer: false,
            downlink_sent: None,
            restart_downlink: false,
            offer_id: 0,
        }
    }

    /// A request from the client. `now_ms`: wall clock, for pongs.
    pub fn on_client(&mut self, request: Request, now_ms: i64) -> Vec<Output> {
        let mut out = vec![];
        match request {
            Request::Offer(offer) => self.offer(offer, &mut out),
            Request::AddTrack(req) => self.add_track(req, &mut out),
            Request::Mute(m) => out.push(Output::Room(ClientMessage::Mute {
                track: m.sid,
                muted: m.muted,
            })),
            Request::Subscription(s) => {
                let tracks = s
                    .track_sids
                    .into_iter()
                    .chain(s.participant_tracks.into_iter().flat_map(|p| p.track_sids));
                for track in tracks {
                    self.subscribe(track, s.subscribe, &mut out);
                }
                self.request_offer(&mut out);
            }
            Request::TrackSetting(s) => {
                self.track_setting(s, &mut out);
                self.request_offer(&mut out);
            }
            Request::UpdateMetadata(u) => {
                out.push(Output::Room(ClientMessage::Metadata {
                    metadata: Some(u.metadata).filter(|m| !m.is_empty()),
                    name: Some(u.name).filter(|n| !n.is_empty()),
                }));
                out.push(Output::client(Response::RequestResponse(
                    proto::RequestResponse {
                        request_id: u.request_id,
                        reason: proto::request_response::Reason::Ok as i32,
                        ..Default::default()
                    },
                )));
            }
            Request::Leave(_) => {
                out.push(Output::Room(ClientMessage::Leave {}));
                self.leave(
                    proto::DisconnectReason::ClientInitiated,
                    "left".into(),
                    &mut out,
                );
            }
            Request::Ping(_) => out.push(Output::client(Response::Pong(now_ms))),
            Request::PingReq(p) => out.push(Output::client(Response::PongResp(proto::Pong {
                last_ping_timestamp: p.timestamp,
                timestamp: now_ms,
            }))),
            // The answer to the server's offer of the subscriber connection.
            Request::Answer(a) if self.joining.dual => {
                out.push(Output::Room(ClientMessage::Answer { sdp: a.sdp }))
            }
            // The server is ICE-lite and learns the client's addresses
            // from its checks; in one peer connection the client answers
            // nothing.
            Request::Trickle(_) | Request::Answer(_) => {}
            other => {
                tracing::debug!(request = ?std::mem::discriminant(&other), "LiveKit request not acted on")
            }
        }
        out
    }

    /// A message of the room for this participant.
    pub fn on_room(&mut self, message: ServerMessage) -> Vec<Output> {
        let mut out = vec![];
        match message {
            ServerMessage::Joined {
                room,
                participant,
                participants,
                ice_servers,
                resume_token,
                resumed,
                ..
            } => {
                self.resume_token = resume_token;
                if resumed && self.joined {
                    self.resumed(participant, participants, ice_servers, &mut out)
                } else {
                    self.joined(room, participant, participants, ice_servers, &mut out)
                }
            }
            ServerMessage::Answer { sdp } => self.answer(sdp, &mut out),
            ServerMessage::Offer { sdp, tracks } => {
                self.offer_id += 1;
                out.push(Output::client(Response::Offer(proto::SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id: self.offer_id,
                    mid_to_track_id: tracks.into_iter().collect(),
                })));
            }
            ServerMessage::ParticipantJoined { participant }
            | ServerMessage::ParticipantUpdated { participant } => {
                self.participant(participant, &mut out)
            }
            ServerMessage::ParticipantLeft { sid, .. } => self.left(&sid, &mut out),
            ServerMessage::TrackPublished { participant, track } => {
                self.published(&participant, &track, &mut out)
            }
            ServerMessage::TrackUnpublished { participant, track } => {
                self.unpublished(&participant, &track, &mut out)
            }
            ServerMessage::TrackMuted {
                participant,
                track,
                muted,
            } => self.muted(&participant, &track, muted, &mut out),
            ServerMessage::Speakers { speakers } => {
                let now: BTreeSet<String> = speakers.iter().map(|s| s.sid.clone()).collect();
                let mut list: Vec<proto::SpeakerInfo> = speakers
                    .iter()
                    .map(|s| proto::SpeakerInfo {
                        sid: s.sid.clone(),
                        level: s.level,
                        active: true,
                    })
                    .collect();
                list.extend(
                    self.speakers
                        .difference(&now)
                        .map(|sid| proto::SpeakerInfo {
                            sid: sid.clone(),
                            level: 0.0,
                            active: false,
                        }),
                );
                self.speakers = now;
                out.push(Output::client(Response::SpeakersChanged(
                    proto::SpeakersChanged { speakers: list },
                )));
            }
            ServerMessage::ConnectionQuality { updates } => out.push(Output::client(
                Response::ConnectionQuality(proto::ConnectionQualityUpdate {
                    updates: updates
                        .iter()
                        .map(|u| proto::ConnectionQualityInfo {
                            participant_sid: u.sid.clone(),
                            quality: convert::quality(u.quality) as i32,
                            score: 0.0,
                        })
                        .collect(),
                }),
            )),
            // Qualities by name: the SDKs fall back to them when no codec
            // is named.
            #[allow(deprecated)]
            ServerMessage::Layers { track, active } => out.push(Output::client(
                Response::SubscribedQualityUpdate(proto::SubscribedQualityUpdate {
                    track_sid: track,
                    subscribed_qualities: active
                        .iter()
                        .map(|(rid, on)| proto::SubscribedQuality {
                            quality: convert::rid_quality(rid) as i32,
                            enabled: *on,
                        })
                        .collect(),
                    ..Default::default()
                }),
            )),
            ServerMessage::Removed { reason } => {
                let why = if reason.contains("identity") {
                    proto::DisconnectReason::DuplicateIdentity
                } else {
                    proto::DisconnectReason::ParticipantRemoved
                };
                self.leave(why, reason, &mut out);
            }
            ServerMessage::RoomClosed { reason } => {
                self.leave(proto::DisconnectReason::RoomDeleted, reason, &mut out)
            }
            ServerMessage::Error { code, message } => self.error(code, message, &mut out),
            ServerMessage::Pong { .. } | ServerMessage::Data(_) | ServerMessage::Manage { .. } => {}
        }
        out
    }

    fn joined(
        &mut self,
        room: String,
        me: crate::room_protocol::ParticipantInfo,
        others: Vec<crate::room_protocol::ParticipantInfo>,
        ice_servers: Vec<crate::IceServer>,
        out: &mut Vec<Output>,
    ) {
        let mut info = convert::participant_info(&me, proto::participant_info::State::Joining);
        info.version = 1;
        info.permission = Some(proto::ParticipantPermission {
            can_subscribe: self.joining.can_subscribe,
            can_publish: self.joining.can_publish,
            can_publish_data: self.joining.can_publish_data,
            ..Default::default()
        });
        self.me = info;
        self.room = room;
        for p in &others {
            let mut info = convert::participant_info(p, proto::participant_info::State::Active);
            info.version = 1;
            self.others.insert(p.sid.clone(), info);
        }
        let response = proto::JoinResponse {
            room: Some(proto::Room {
                sid: convert::room_sid(&self.room),
                name: self.room.clone(),
                num_participants: others.len() as u32 + 1,
                enabled_codecs: convert::publish_codecs(),
                ..Default::default()
            }),
            participant: Some(self.me.clone()),
            other_participants: self.others.values().cloned().collect(),
            server_version: convert::COMPATIBLE_VERSION.into(),
            server_info: Some(proto::ServerInfo {
                version: convert::COMPATIBLE_VERSION.into(),
                protocol: convert::PROTOCOL_VERSION,
                debug_info: concat!("sfu ", env!("CARGO_PKG_VERSION")).into(),
                ..Default::default()
            }),
            ice_servers: ice_servers.iter().map(convert::ice_server).collect(),
            ping_interval: convert::PING_INTERVAL_S,
            ping_timeout: convert::PING_TIMEOUT_S,
            enabled_publish_codecs: convert::publish_codecs(),
            fast_publish: self.joining.can_publish,
            // Dual mode: the server's connection comes first (it carries
            // the data channels the client hears the room on).
            subscriber_primary: self.joining.dual,
            ..Default::default()
        };
        out.push(Output::client(Response::Join(response)));
        self.joined = true;
        if self.joining.auto_subscribe && self.joining.can_subscribe {
            for p in &others {
                for t in &p.tracks {
                    self.slots.want(&t.sid, SectionKind::from(t.kind));
                }
            }
        }
        if let Some(offer) = self.joining.offer.take() {
            self.offer(offer, out);
        }
        self.request_offer(out);
    }

    fn offer(&mut self, offer: proto::SessionDescription, out: &mut Vec<Output>) {
        if !self.joined {
            // Before the join response: keep it for then.
            self.joining.offer = Some(offer);
            return;
        }
        self.awaiting_offer = false;
        let sections = sdp::offer_sections(&offer.sdp);
        if !self.joining.dual {
            self.slots.offered(&sections);
        }
        let mut publish = BTreeMap::new();
        for s in sections.iter().filter(|s| s.sends()) {
            let Some(track) = s.msid_track.as_ref().and_then(|cid| self.own.get(cid)) else {
                continue;
            };
            publish.insert(
                s.mid.clone(),
                PublishInfo {
                    source: convert::room_source(track.source),
                    name: track.name.clone(),
                    sid: Some(track.sid.clone()),
                    participant: None,
                    layers: convert::layer_sizes(track),
                    codec: track.codecs.first().map(|c| c.mime_type.clone()),
                },
            );
        }
        let (carried, idle) = if self.joining.dual {
            Default::default()
        } else {
            self.slots.answer()
        };
        out.push(Output::Room(ClientMessage::Offer {
            sdp: offer.sdp,
            publish,
            subscribe: carried
                .iter()
                .filter(|(_, track)| !self.disabled.contains(*track))
                .map(|(mid, track)| (mid.clone(), track.clone()))
                .collect(),
        }));
        self.answers.push_back(PendingAnswer {
            id: offer.id,
            carried,
            idle,
        });
    }

    fn answer(&mut self, sdp: String, out: &mut Vec<Output>) {
        let Some(pending) = self.answers.pop_front() else {
            tracing::debug!("an answer with no offer pending");
            return;
        };
        let carried = sdp::name_carried(&pending.carried, |track| self.publisher_of(track));
        let sdp = sdp::rewrite_answer(&sdp, &carried, &pending.idle);
        tracing::trace!(id = pending.id, %sdp, "answer to a LiveKit client");
        out.push(Output::client(Response::Answer(
            proto::SessionDescription {
                r#type: "answer".into(),
                sdp,
                id: pending.id,
                mid_to_track_id: carried.into_iter().map(|(mid, c)| (mid, c.track)).collect(),
            },
        )));
        self.request_offer(out);
    }

    /// Ask the client to offer again when what it should receive changed
    /// (dual mode: tell the worker, which offers).
    fn request_offer(&mut self, out: &mut Vec<Output>) {
        if self.joining.dual {
            return self.request_downlink(out);
        }
        if self.awaiting_offer || !self.answers.is_empty() || !self.joined {
            return;
        }
        let missing = self.slots.missing();
        if !self.slots.changed() && !self.reoffer && missing.audio == 0 && missing.video == 0 {
            return;
        }
        self.awaiting_offer = true;
        self.reoffer = false;
        out.push(Output::client(Response::MediaSectionsRequirement(
            proto::MediaSectionsRequirement {
                num_audios: missing.audio,
                num_videos: missing.video,
            },
        )));
    }

    /// Dual mode: tell the worker what the client should receive now, if
    /// that changed (the first time even if nothing: the server's
    /// connection carries the data channels).
    fn request_downlink(&mut self, out: &mut Vec<Output>) {
        if !self.joined {
            return;
        }
        let tracks = self.slots.wanted_tracks();
        let paused: Vec<String> = tracks
            .iter()
            .filter(|t| self.disabled.contains(*t))
            .cloned()
            .collect();
        let wish = (tracks, paused);
        let restart_ice = std::mem::take(&mut self.restart_downlink);
        if !restart_ice && self.downlink_sent.as_ref() == Some(&wish) {
            return;
        }
        self.downlink_sent = Some(wish.clone());
        out.push(Output::Room(ClientMessage::Downlink {
            tracks: wish.0,
            paused: wish.1,
            restart_ice,
        }));
    }

    fn add_track(&mut self, req: proto::AddTrackRequest, out: &mut Vec<Output>) {
        if !self.joining.can_publish {
            tracing::debug!(cid = %req.cid, "add_track without the publish grant");
            return;
        }
        if let Some(existing) = self.own.get(&req.cid) {
            out.push(Output::client(Response::TrackPublished(
                proto::TrackPublishedResponse {
                    cid: req.cid.clone(),
                    track: Some(existing.clone()),
                },
            )));
            return;
        }
        if self.own.len() >= MAX_PENDING_TRACKS || req.cid.is_empty() || req.cid.len() > 256 {
            tracing::debug!(cid = %req.cid, "add_track refused");
            return;
        }
        let track = convert::announced_track(&req);
        self.own.insert(req.cid.clone(), track.clone());
        out.push(Output::client(Response::TrackPublished(
            proto::TrackPublishedResponse {
                cid: req.cid,
                track: Some(track),
            },
        )));
    }

    fn subscribe(&mut self, track: String, subscribe: bool, out: &mut Vec<Output>) {
        if subscribe {
            self.unsubscribed.remove(&track);
            if let Some(kind) = self.kind_of(&track) {
                if self.joining.can_subscribe {
                    self.slots.want(&track, kind);
                }
            }
        } else {
            self.unsubscribed.insert(track.clone());
            self.disabled.remove(&track);
            if self.slots.drop_track(&track) {
                out.push(Output::Room(ClientMessage::Subscription {
                    track,
                    subscribed: Some(false),
                    max_width: None,
                }));
            }
        }
    }

    fn error(&mut self, code: ErrorCode, message: String, out: &mut Vec<Output>) {
        match code {
            // The offer was refused: there will be no answer, and the
            // client cannot go on without one.
            ErrorCode::Negotiation | ErrorCode::Limit | ErrorCode::NotAllowed => {
                self.answers.pop_front();
                tracing::info!(?code, %message, "LiveKit client's offer refused");
                self.leave(proto::DisconnectReason::StateMismatch, message, out);
            }
            ErrorCode::ResumeFailed => {
                self.leave(proto::DisconnectReason::StateMismatch, message, out)
            }
            _ => tracing::debug!(?code, %message, "room error for a LiveKit client"),
        }
    }

    fn leave(&mut self, reason: proto::DisconnectReason, text: String, out: &mut Vec<Output>) {
        self.ended = true;
        out.push(Output::client(Response::Leave(proto::LeaveRequest {
            reason: reason as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        })));
        out.push(Output::Close(text));
    }

    fn want(&mut self, track: &str, kind: SectionKind) {
        if self.joining.auto_subscribe
            && self.joining.can_subscribe
            && !self.unsubscribed.contains(track)
        {
            self.slots.want(track, kind);
        }
    }

    fn send_update(&self, participants: Vec<proto::ParticipantInfo>, out: &mut Vec<Output>) {
        out.push(Output::client(Response::Update(proto::ParticipantUpdate {
            participants,
        })));
    }

    /// The client sent a frame that means nothing: it is told why and let
    /// go, and the room sees it leave.
    pub fn refuse(&mut self, why: String) -> Vec<Output> {
        let mut out = vec![Output::Room(ClientMessage::Leave {})];
        self.leave(proto::DisconnectReason::StateMismatch, why, &mut out);
        out
    }

    fn publisher_of(&self, track: &str) -> Option<String> {
        self.others
            .iter()
            .find(|(_, p)| p.tracks.iter().any(|t| t.sid == track))
            .map(|(sid, _)| sid.clone())
    }

    /// Another participant's track, as the client was told of it.
    fn remote_track(&self, track: &str) -> Option<&proto::TrackInfo> {
        self.others
            .values()
            .flat_map(|p| &p.tracks)
            .find(|t| t.sid == track)
    }

    fn kind_of(&self, track: &str) -> Option<SectionKind> {
        self.remote_track(track).map(|t| {
            if t.r#type == proto::TrackType::Audio as i32 {
                SectionKind::Audio
            } else {
                SectionKind::Video
            }
        })
    }
}

#[path = "session_resume.rs"]
mod resume;
#[path = "session_room.rs"]
mod room;
#[path = "session_settings.rs"]
mod settings;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
