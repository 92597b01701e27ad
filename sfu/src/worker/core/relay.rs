//! Relay ingest on an edge node: a participant that receives a room's media
//! from the node hosting it, so that WHEP viewers here are fed over one
//! node-to-node link instead of each connecting to the hosting node.
//!
//! The relay is the offering side (full ICE, controlling) of an ordinary
//! WHEP session on the hosting node. It asks to receive simulcast, which
//! makes the hosting node send every layer on a stream of its own; here the
//! relay is a publisher of the edge room, so local viewers get per-viewer
//! layer selection as from any simulcast publisher. Each relay has a UDP
//! socket of its own (the IO shell owns it): two relays to the same remote
//! worker would be indistinguishable by address on the shared socket.

use str0m::change::SdpAnswer;
use str0m::media::{Simulcast, SimulcastLayer};

use super::negotiation::{rtc_config, Downlink};
use super::*;
use crate::room::member::Member;

/// A relay with no viewer left in its edge room closes after this long
/// (a viewer reloading the page keeps it).
pub const RELAY_IDLE: Duration = Duration::from_secs(5);

/// Streams a relay asks for: the most simulcast layers a publisher sends.
pub const RELAY_STREAMS: [&str; 3] = ["r0", "r1", "r2"];

/// A relay the edge wants to open.
#[derive(Debug)]
pub struct OpenRelay {
    pub room: String,
    /// The relay socket's local address (its host candidate).
    pub local: SocketAddr,
    /// Resource id of the relay on this node.
    pub resource_id: String,
    /// Identity shown for the relay (its tracks' publisher here).
    pub identity: String,
    /// Some(worker): the room is hosted by that worker of this node and the
    /// relay feeds a fan-out of it here; None: hosted by another node.
    pub fanout_of: Option<usize>,
}

impl WorkerCore {
    /// Create the relay participant in the edge room and return its offer.
    pub(super) fn open_relay(
        &mut self,
        now: Instant,
        req: OpenRelay,
    ) -> Result<String, BackendError> {
        let creds = IceCreds::new();
        // It carries scalable AV1 as it came: with its dependency descriptors
        // (without, viewers on this worker decoded none of it).
        let config = rtc_config(creds.clone(), SessionKind::Whip, Downlink::Estimated);
        let mut rtc = crate::room::dd_extension::enable(config)
            .set_ice_lite(false)
            .build(now);
        let candidate = Candidate::host(req.local, "udp")
            .map_err(|e| BackendError::Internal(format!("relay candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let mut simulcast = Simulcast::new();
        for rid in RELAY_STREAMS {
            simulcast.add_recv_layer(SimulcastLayer::new(rid));
        }
        let video = change.add_media(
            MediaKind::Video,
            Direction::RecvOnly,
            None,
            None,
            Some(simulcast),
        );
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| BackendError::Internal("relay offer has no media".into()))?;
        let offer_sdp = offer.to_sdp_string();
        if let Some(home) = req.fanout_of {
            self.ensure_fanout_room(&Arc::from(req.room.as_str()), home, now);
        }
        let member = Member::publisher(&req.resource_id, &req.identity, now);
        let (id, _) = self.insert_participant(
            now,
            NewSession {
                kind: SessionKind::Whip,
                room: Arc::from(req.room.as_str()),
                identity: req.identity,
                resource_id: req.resource_id,
                max_width: None,
                remote_offer: String::new(),
                member: Some(member),
            },
            rtc,
            creds,
        )?;
        if let Some(p) = self.participants.get_mut(&id) {
            p.pending_offer = Some(pending);
        }
        // str0m reports media it was offered; ours it leaves to us (kept
        // for the relay's life: its tracks follow the upstream's activity).
        self.relay_media.insert(
            id,
            vec![
                (audio, MediaKind::Audio, 1),
                (video, MediaKind::Video, RELAY_STREAMS.len()),
            ],
        );
        self.relay_sockets.insert(req.local, id);
        self.announce_member(now, id);
        Ok(offer_sdp)
    }

    /// The hosting node answered the relay's offer: its lines become the
    /// edge room's tracks.
    pub(super) fn answer_relay(
        &mut self,
        now: Instant,
        resource_id: &str,
        answer_sdp: &str,
        candidate: Option<SocketAddr>,
        upstream_active: bool,
    ) -> Result<(), BackendError> {
        let p = self.session_mut(resource_id)?;
        let id = p.id;
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| BackendError::MalformedSdp(e.to_string()))?;
        p.accept_answer(answer).map_err(BackendError::UnusableSdp)?;
        if let Some(addr) = candidate {
            match Candidate::host(addr, "udp") {
                Ok(c) => p.rtc_mut().add_remote_candidate(c),
                Err(e) => tracing::warn!(%addr, error = %e, "relay: unusable hosting address"),
            }
        }
        self.dirty.push(id);
        if upstream_active {
            self.relay_upstream(now, id, true);
        }
        Ok(())
    }

    /// The relay's upstream session started (`active`) or stopped receiving
    /// a publisher's media: the relay's tracks here come and go with it, so
    /// that viewers here see the publisher leave and come back.
    pub(super) fn relay_upstream(&mut self, now: Instant, id: ParticipantId, active: bool) {
        let Some(media) = self.relay_media.get(&id).cloned() else {
            return;
        };
        for (mid, kind, layers) in media {
            let published = self
                .participants
                .get(&id)
                .and_then(|p| p.member.as_ref())
                .is_some_and(|m| m.published.contains_key(&mid));
            if active && !published {
                self.publish_track(now, id, mid, kind, layers);
            } else if !active && published {
                self.unpublish_track(now, id, mid);
            }
        }
    }

    /// Hosting side: the node relaying WHEP session `resource_id` wants
    /// only streams `rids` (what its viewers can use).
    pub(super) fn relay_layers(
        &mut self,
        resource_id: &str,
        identity: &str,
        rids: &[String],
    ) -> Result<(), BackendError> {
        let id = self.session_id(resource_id)?;
        let p = self.participants.get(&id).ok_or(BackendError::NotFound)?;
        if p.identity != identity {
            return Err(BackendError::NotOwner);
        }
        let room = self.rooms.get_mut(&p.room).ok_or(BackendError::NotFound)?;
        for (mid, streams) in &p.relay_rids {
            let wanted = streams
                .iter()
                .enumerate()
                .filter(|(_, r)| rids.iter().any(|w| *w == r.to_string()))
                .map(|(slot, _)| slot)
                .collect();
            let down = DownTrackKey {
                subscriber: id,
                mid: *mid,
            };
            room.router.set_relay_wanted(down, Some(wanted));
        }
        Ok(())
    }

    /// Edge side: which of its streams each relay's viewers can use now
    /// (dynacast for the relay), published in the registry for the edge's
    /// supervisor to send upstream.
    pub(super) fn poll_relay_wishes(&mut self) {
        for &id in self.relay_sockets.values() {
            let Some(p) = self.participants.get(&id) else {
                continue;
            };
            let (Some(room), Some(member)) = (self.rooms.get(&p.room), p.member.as_ref()) else {
                continue;
            };
            for mid in member.published.keys() {
                let key = TrackKey {
                    publisher: id,
                    mid: *mid,
                };
                if let Some(wanted) = room.router.wanted_layers(key) {
                    let rids = wanted
                        .into_iter()
                        .filter(|(_, on)| *on)
                        .filter_map(|(layer, _)| Some(layer?.to_string()))
                        .collect();
                    self.ctx.registry.set_relay_wanted(&p.resource_id, rids);
                }
            }
        }
    }

    /// A datagram on a relay's own socket (`local`): it can only be for
    /// that relay.
    pub fn handle_relay_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        source: SocketAddr,
        data: &[u8],
        transmit: &mut dyn FnMut(Transmit),
    ) {
        self.counts.packets_received += 1;
        self.counts.bytes_received += data.len() as u64;
        let Some(&id) = self.relay_sockets.get(&local) else {
            return;
        };
        let Ok(contents) = data.try_into() else {
            return;
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: local,
                contents,
            },
        ));
        self.dirty.push(id);
        self.process(now, transmit);
    }

    /// Relays and bridges with nobody but other links (relays, bridges) in
    /// their room for [`RELAY_IDLE`]: two links must not keep each other.
    pub(super) fn idle_relays(&mut self, now: Instant) -> Vec<ParticipantId> {
        let mut idle = vec![];
        let links: std::collections::HashSet<ParticipantId> =
            self.relay_sockets.values().copied().collect();
        for &id in &links {
            let alone = self
                .participants
                .get(&id)
                .and_then(|p| self.rooms.get(&p.room))
                .is_some_and(|room| room.participants.iter().all(|p| links.contains(p)));
            if !alone {
                self.relays_alone.remove(&id);
                continue;
            }
            let since = *self.relays_alone.entry(id).or_insert(now);
            if now.saturating_duration_since(since) >= RELAY_IDLE {
                idle.push(id);
            }
        }
        for id in &idle {
            self.relays_alone.remove(id);
        }
        idle
    }

    /// Relay sockets whose relay is gone (the IO shell closes them).
    pub fn closed_relay_sockets(&mut self) -> Vec<SocketAddr> {
        let gone: Vec<SocketAddr> = self
            .relay_sockets
            .iter()
            .filter(|(_, id)| !self.participants.contains_key(id))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in &gone {
            if let Some(id) = self.relay_sockets.remove(addr) {
                self.relay_media.remove(&id);
            }
        }
        gone
    }
}
