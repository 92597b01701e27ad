//! Downlink connections: a member that receives on a peer connection of
//! its own, offered by the server (LiveKit's dual peer connection mode:
//! the client publishes on one connection, which it offers, and receives
//! on another, which the server offers).
//!
//! The downlink is a second participant of the worker (its own `Rtc`,
//! ICE credentials and DTLS) that only sends; the router knows it as the
//! subscriber, the member's room state stays with the member. Which line
//! carries which track is this module's: the member says which tracks it
//! wants, and their lines are a pool ([`ReceiveSlots`], the same rule as
//! a single-connection client's receive sections): a wanted track takes a
//! free line of its kind, a line whose track went away is offered
//! `inactive` once before it carries another, and lines are added only
//! when the pool is short. One offer is in flight at a time; wishes that
//! arrive meanwhile are offered after its answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use signaling::livekit::sdp::{self, OfferSection, SectionKind};
use signaling::livekit::slots::ReceiveSlots;
use signaling::room_protocol::{ErrorCode, MediaKindName, ServerMessage};
use signaling::SessionKind;
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, MediaKind, Mid};

use super::negotiation::{sdp_attr, Downlink};
use super::{NewSession, WorkerCore};
use crate::forward::ParticipantId;

/// Most tracks one downlink carries at once.
pub const MAX_DOWNLINK_TRACKS: usize = 128;

/// The data channels the server opens on a downlink (LiveKit's labels:
/// its clients read the server's messages on them).
const RELIABLE_LABEL: &str = "_reliable";
const LOSSY_LABEL: &str = "_lossy";

/// An offer awaiting its answer.
struct InFlight {
    /// Which line carries which track in it.
    carried: BTreeMap<String, String>,
    /// Lines it adds (they exist once it is answered).
    added: Vec<Mid>,
    /// It adds the data channels.
    adds_channels: bool,
}

/// One member's downlink connection and what its lines carry.
pub(super) struct DownlinkLeg {
    /// The participant holding the downlink's `Rtc`.
    pub leg: ParticipantId,
    /// The downlink's lines, in the order they were added.
    lines: Vec<(Mid, SectionKind)>,
    slots: ReceiveSlots,
    /// Tracks wanted, paused ones included.
    wanted: Vec<String>,
    paused: BTreeSet<String>,
    in_flight: Option<InFlight>,
    /// Wishes changed while an offer was in flight.
    again: bool,
    restart_ice: bool,
    channels_added: bool,
    /// The server's data channels on the downlink, by label.
    pub channels: HashMap<String, ChannelId>,
}

impl DownlinkLeg {
    fn new(leg: ParticipantId) -> DownlinkLeg {
        DownlinkLeg {
            leg,
            lines: vec![],
            slots: ReceiveSlots::default(),
            wanted: vec![],
            paused: BTreeSet::new(),
            in_flight: None,
            again: false,
            restart_ice: false,
            channels_added: false,
            channels: HashMap::new(),
        }
    }

    /// The member's wish: these tracks (with their kinds), `paused` ones
    /// kept on their lines with nothing forwarded.
    fn wish(&mut self, tracks: Vec<(String, SectionKind)>, paused: BTreeSet<String>) {
        let keep: BTreeSet<&str> = tracks.iter().map(|(t, _)| t.as_str()).collect();
        let gone: Vec<String> = self
            .wanted
            .iter()
            .filter(|t| !keep.contains(t.as_str()))
            .cloned()
            .collect();
        for track in gone {
            self.slots.drop_track(&track);
        }
        for (track, kind) in &tracks {
            self.slots.want(track, *kind);
        }
        self.wanted = tracks.into_iter().map(|(t, _)| t).collect();
        self.paused = paused;
    }

    /// The lines as the pool reads them: each is a receiving section of
    /// the client's.
    fn sections(&self) -> Vec<OfferSection> {
        self.lines
            .iter()
            .map(|(mid, kind)| OfferSection {
                mid: mid.to_string(),
                kind: *kind,
                direction: sdp::Direction::RecvOnly,
                rejected: false,
                msid_track: None,
            })
            .collect()
    }

    /// Forget the offer in flight (its answer will not come: the client
    /// reconnected): what it added is added again by the next.
    fn abandon_offer(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.lines.retain(|(mid, _)| !f.added.contains(mid));
            self.channels_added &= !f.adds_channels;
            self.slots.offered(&self.sections());
        }
    }

    /// What is forwarded once `carried` is negotiated: line -> track.
    fn bound(&self, carried: &BTreeMap<String, String>) -> HashMap<Mid, String> {
        carried
            .iter()
            .filter(|(_, track)| !self.paused.contains(*track))
            .map(|(mid, track)| (Mid::from(mid.as_str()), track.clone()))
            .collect()
    }
}

impl WorkerCore {
    /// The participant that receives for member `id`: its downlink, or
    /// itself.
    pub(super) fn receiver_of(&self, id: ParticipantId) -> ParticipantId {
        self.downlinks.get(&id).map_or(id, |d| d.leg)
    }

    /// Member `id` wants `tracks` on its downlink (made on first use).
    pub(super) fn downlink_wish(
        &mut self,
        now: Instant,
        id: ParticipantId,
        tracks: Vec<String>,
        paused: Vec<String>,
        restart_ice: bool,
    ) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(m) = p.member.as_ref() else {
            return;
        };
        if m.bridge {
            self.reply_error(
                id,
                ErrorCode::NotAllowed,
                "a bridge has no downlink".into(),
                now,
            );
            return;
        }
        if tracks.len() > MAX_DOWNLINK_TRACKS {
            self.reply_error(
                id,
                ErrorCode::Limit,
                format!("more than {MAX_DOWNLINK_TRACKS} tracks on one downlink"),
                now,
            );
            return;
        }
        let room = p.room.clone();
        let kinds: Vec<(String, SectionKind)> = tracks
            .into_iter()
            .filter_map(|t| {
                let kind = self.track_kind(&room, &t)?;
                Some((t, SectionKind::from(kind)))
            })
            .collect();
        if !self.downlinks.contains_key(&id) {
            let Some(leg) = self.add_downlink(now, id) else {
                return;
            };
            self.downlinks.insert(id, DownlinkLeg::new(leg));
        }
        let Some(dl) = self.downlinks.get_mut(&id) else {
            return;
        };
        dl.wish(kinds, paused.into_iter().collect());
        if restart_ice {
            dl.abandon_offer();
            if let Some(lp) = self.participants.get_mut(&dl.leg) {
                lp.pending_offer = None;
            }
            dl.restart_ice = true;
        }
        self.offer_downlink(now, id);
    }

    /// The kind of track `sid` of room `room`, as its publisher announced it.
    fn track_kind(&self, room: &str, sid: &str) -> Option<MediaKindName> {
        let key = self.rooms.get(room)?.track_sids.get(sid)?;
        let publisher = self.participants.get(&key.publisher)?.member.as_ref()?;
        publisher
            .published
            .values()
            .find(|t| t.info.sid == sid)
            .map(|t| t.info.kind)
    }

    /// The downlink participant of member `id`.
    fn add_downlink(&mut self, now: Instant, id: ParticipantId) -> Option<ParticipantId> {
        let p = self.participants.get(&id)?;
        let m = p.member.as_ref()?;
        let session = NewSession {
            kind: SessionKind::Room,
            room: p.room.clone(),
            identity: p.identity.clone(),
            resource_id: format!("{}.downlink", m.sid),
            max_width: None,
            remote_offer: String::new(),
            member: None,
        };
        let built = self
            .build_rtc(SessionKind::Room, Downlink::Estimated, None, now)
            .and_then(|(rtc, creds)| self.insert_participant(now, session, rtc, creds));
        match built {
            Ok((leg, _)) => {
                if let Some(l) = self.participants.get_mut(&leg) {
                    l.leg_of = Some(id);
                }
                Some(leg)
            }
            Err(e) => {
                self.reply_error(id, ErrorCode::Negotiation, format!("no downlink: {e}"), now);
                None
            }
        }
    }

    /// Offer member `id`'s downlink what its wish needs, unless an offer
    /// is in flight (then after its answer).
    fn offer_downlink(&mut self, now: Instant, id: ParticipantId) {
        let Some(dl) = self.downlinks.get_mut(&id) else {
            return;
        };
        if dl.in_flight.is_some() {
            dl.again = true;
            return;
        }
        let Some(lp) = self.participants.get_mut(&dl.leg) else {
            return;
        };
        let missing = dl.slots.missing();
        let mut added = vec![];
        let mut api = lp.rtc_mut().sdp_api();
        for (kind, section, count) in [
            (MediaKind::Audio, SectionKind::Audio, missing.audio),
            (MediaKind::Video, SectionKind::Video, missing.video),
        ] {
            for _ in 0..count {
                let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
                added.push(mid);
                dl.lines.push((mid, section));
            }
        }
        let adds_channels = !dl.channels_added;
        if adds_channels {
            dl.channels_added = true;
            api.add_channel(RELIABLE_LABEL.to_string());
            api.add_channel_with_config(ChannelConfig {
                label: LOSSY_LABEL.to_string(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        let restart = std::mem::take(&mut dl.restart_ice).then(|| api.ice_restart(true));
        dl.slots.offered(&dl.sections());
        let (carried, idle) = dl.slots.answer();
        for mid in carried.keys() {
            api.set_direction(Mid::from(mid.as_str()), Direction::SendOnly);
        }
        for mid in &idle {
            api.set_direction(Mid::from(mid.as_str()), Direction::Inactive);
        }
        let Some((offer, pending)) = api.apply() else {
            // Nothing to negotiate (a track paused or resumed): bind now.
            let bound = dl.bound(&carried);
            if let Some(m) = self.member_mut(id) {
                m.subscriptions = bound;
            }
            self.reconcile_subscriptions(now, id);
            return;
        };
        lp.pending_offer = Some(pending);
        lp.offered_at.get_or_insert(now);
        if let Some(creds) = restart {
            let old = std::mem::replace(&mut lp.negotiation.local_ufrag, creds.ufrag.clone());
            self.demux.remove_ufrag(&old);
            self.demux
                .insert_credentials(&creds.ufrag, &creds.pass, dl.leg);
            tracing::info!(participant = id, "downlink ICE restart");
        }
        dl.in_flight = Some(InFlight {
            carried: carried.clone(),
            added,
            adds_channels,
        });
        let leg = dl.leg;
        let room = lp.room.clone();
        let named = sdp::name_carried(&carried, |track| self.publisher_sid(&room, track));
        let sdp = sdp::rewrite_answer(&offer.to_sdp_string(), &named, &idle);
        self.dirty.push(leg);
        if let Some(m) = self.member_mut(id) {
            m.send(
                ServerMessage::Offer {
                    sdp,
                    tracks: carried,
                },
                now,
            );
        }
    }

    /// The sid of the member publishing track `track` (a bridge's track:
    /// the far participant's).
    fn publisher_sid(&self, room: &str, track: &str) -> Option<String> {
        let key = self.rooms.get(room)?.track_sids.get(track)?;
        let m = self.participants.get(&key.publisher)?.member.as_ref()?;
        let t = m.published.values().find(|t| t.info.sid == track)?;
        Some(m.publisher_sid(t))
    }

    /// Member `id` answered its downlink's offer.
    pub(super) fn downlink_answer(&mut self, now: Instant, id: ParticipantId, sdp: String) {
        let awaited = self.downlinks.get_mut(&id).and_then(|dl| {
            let lp = self.participants.get_mut(&dl.leg)?;
            let flight = dl.in_flight.take()?;
            Some((dl, lp, flight))
        });
        let Some((dl, lp, flight)) = awaited else {
            self.reply_error(
                id,
                ErrorCode::Negotiation,
                "no offer awaits an answer".into(),
                now,
            );
            return;
        };
        let accepted = match (lp.pending_offer.take(), SdpAnswer::from_sdp_string(&sdp)) {
            (Some(pending), Ok(answer)) => lp
                .rtc_mut()
                .sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| format!("answer rejected: {e}")),
            (None, _) => Err("no offer awaits an answer".to_string()),
            (_, Err(e)) => Err(format!("malformed SDP: {e}")),
        };
        if let Err(why) = accepted {
            dl.in_flight = Some(flight);
            dl.abandon_offer();
            self.reply_error(id, ErrorCode::Negotiation, why, now);
            return;
        }
        let carried = flight.carried;
        lp.negotiation.remote_ufrag = sdp_attr(&sdp, "ice-ufrag:").map(str::to_string);
        let leg = dl.leg;
        let bound = dl.bound(&carried);
        let again = std::mem::take(&mut dl.again) || dl.slots.changed() || dl.restart_ice;
        self.dirty.push(leg);
        if let Some(m) = self.member_mut(id) {
            m.subscriptions = bound;
        }
        self.reconcile_subscriptions(now, id);
        if again {
            self.offer_downlink(now, id);
        }
    }

    /// A data channel of a downlink opened: the member's messages go out
    /// on it.
    pub(super) fn downlink_channel(&mut self, owner: ParticipantId, cid: ChannelId, label: String) {
        if let Some(dl) = self.downlinks.get_mut(&owner) {
            if dl.channels.len() < 8 {
                dl.channels.insert(label, cid);
            }
        }
    }
}
