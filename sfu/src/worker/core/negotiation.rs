//! Session set-up and renegotiation inside a worker: building each
//! participant's `Rtc`, applying WHIP/WHEP offers, trickle ICE and ICE
//! restarts from PATCH, and the WHEP event streams.

use super::*;
use crate::forward::payload_map;
use crate::room::member::Member;
use crate::room::offer::{check_served, media_sections, one_media_stream, parse_failure};
use crate::room::out_streams::negotiated_params;
use str0m::format::{CodecConfig, PayloadParams};
use str0m::media::Mid;

/// A codec as a refusal names it: H.264 with its profile-level-id, which
/// decides whether a decoder can take it.
fn describe(p: &PayloadParams) -> String {
    let spec = p.spec();
    match spec.format.profile_level_id {
        Some(id) if spec.codec == str0m::format::Codec::H264 => format!("{} {id:06x}", spec.codec),
        _ => spec.codec.to_string(),
    }
}

/// The server's codecs of `kind` ("audio" or "video") as SDP names them,
/// for refusals that say what would have worked.
pub(super) fn supported_codecs(kind: &str) -> Vec<String> {
    let mut config = rtc_config(IceCreds::new(), SessionKind::Whep, Downlink::Loopback);
    let mut names: Vec<String> = vec![];
    for p in config.codec_config().params() {
        let codec = p.spec().codec;
        let matches = match kind {
            "audio" => codec.is_audio(),
            "video" => codec.is_video(),
            _ => false,
        };
        let name = codec.to_string();
        if matches && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Whether a session that sends media estimates the link it sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downlink {
    /// A real network: estimate it (TWCC) and pace to the estimate.
    Estimated,
    /// A relay to another worker of this process over loopback: nothing to
    /// estimate, and pacing would only delay every keyframe once more.
    Loopback,
    /// A bridge between nodes of the cluster: estimated and paced, from
    /// [`TRUNK_START_BPS`] (it carries many tracks at once over a link
    /// between servers; from the viewer's start its first seconds queued).
    Trunk,
}

/// The `Rtc` configuration every participant gets: RTP mode (media is
/// forwarded as packets, never depacketized); viewers also estimate their
/// downlink (TWCC), which drives simulcast layer selection.
pub fn rtc_config(creds: IceCreds, kind: SessionKind, downlink: Downlink) -> RtcConfig {
    let mut config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_crypto_provider(crate::dtls::crypto_provider())
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .enable_opus(true, true)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_h264(true)
        .enable_av1(true)
        .set_stats_interval(Some(Duration::from_secs(1)));
    // Next to str0m's defaults (baseline, constrained baseline, main, high):
    // constrained high, and High 4:4:4 Predictive, the only profile above main
    // that some Chromium builds offer to receive (their decoder takes High).
    let codecs = config.codec_config();
    codecs.add_h264(112.into(), Some(113.into()), true, 0x640c1f);
    codecs.add_h264(116.into(), Some(117.into()), true, 0xf4001f);
    let start = match downlink {
        Downlink::Estimated => ESTIMATE_START_BPS,
        Downlink::Trunk => TRUNK_START_BPS,
        Downlink::Loopback => return config,
    };
    if kind != SessionKind::Whip {
        config = config.enable_bwe(Some(Bitrate::bps(start)));
    }
    config
}

/// The estimate a bridge's estimator starts from: a meeting of eight over two
/// nodes sends ~13 Mbit/s each way. Its join storm's worst video delay was
/// 1.4 and 2.6 s from 3 Mbit/s, 1.2 and 0.9 s from 50 Mbit/s (two runs
/// each; the same meeting on one node: 0.7-1.4 s).
pub(super) const TRUNK_START_BPS: u64 = 50_000_000;

/// The bandwidth estimate a viewer's estimator starts from: the figure the
/// layer choice assumes before the first estimate, so a new viewer starts
/// at the layer ~1 Mbit/s carries and probes up. (While forwarded media
/// waited in str0m's pacer, which sends at 1.1x the estimate, this was
/// 3 Mbit/s so keyframes did not queue; that start then put a new viewer
/// straight onto the top layer, which overflowed a capped link for 1.4-3 s
/// in the e2e capped-viewer trial.)
pub(super) const ESTIMATE_START_BPS: u64 = crate::forward::layers::INITIAL_ESTIMATE_BPS;

/// Reorders `config`'s codecs (stably) by where each first appears in
/// `offer_sdp`'s media sections, so the answer lists first what the offerer
/// prefers: a browser publisher that puts VP9 first sends VP9 (senders use
/// the answer's first codec; with the server's own order, VP8 first, such a
/// publisher sent VP8). Codecs the offer lacks keep their order after.
pub fn prefer_offered_order(config: &mut RtcConfig, offer_sdp: &str) {
    let offered: Vec<String> = media_sections(offer_sdp)
        .into_iter()
        .flat_map(|s| s.codecs)
        .collect();
    let rank = |p: &PayloadParams| {
        let name = p.spec().codec.to_string();
        offered
            .iter()
            .position(|c| c.eq_ignore_ascii_case(&name))
            .unwrap_or(usize::MAX)
    };
    let mut params = config.codec_config().params().to_vec();
    params.sort_by_key(rank);
    *config.codec_config() = CodecConfig::new_from_payload_params(params);
}

pub(super) fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .find_map(|a| a.strip_prefix(name))
        .map(str::trim)
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl WorkerCore {
    /// A participant's `Rtc`, ICE-lite with our host candidate; with the
    /// offer it will answer, its codecs in the offerer's order of preference
    /// ([`prefer_offered_order`]).
    pub(super) fn build_rtc(
        &self,
        kind: SessionKind,
        downlink: Downlink,
        offer_sdp: Option<&str>,
        now: Instant,
    ) -> Result<(Rtc, IceCreds), BackendError> {
        let creds = IceCreds::new();
        let mut config = rtc_config(creds.clone(), kind, downlink);
        if let Some(offer) = offer_sdp {
            prefer_offered_order(&mut config, offer);
        }
        // Answered only on the lines where it is read or written
        // (`dd_extension::unread_descriptors_dropped`, applied to each offer).
        config = crate::room::dd_extension::enable(config);
        let mut rtc: Rtc = config.build(now);
        let candidate = Candidate::host(self.ctx.advertised_addr, "udp")
            .map_err(|e| BackendError::Internal(format!("host candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = self.ctx.advertised_tcp_addr {
            // Passive: the client connects (RFC 6544), for when its UDP is blocked.
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| BackendError::Internal(format!("TCP candidate: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        Ok((rtc, creds))
    }

    fn check_room_capacity(&self, room: &str) -> Result<(), BackendError> {
        match self.rooms.get(room) {
            Some(r) if self.headcount(r) >= self.ctx.max_participants_per_room => {
                Err(BackendError::OverCapacity {
                    what: format!(
                        "participants per room ({})",
                        self.ctx.max_participants_per_room
                    ),
                    retry_after: Duration::from_secs(5),
                })
            }
            _ => Ok(()),
        }
    }

    /// WHIP/WHEP sessions one identity may hold in a room (0: no limit).
    fn check_identity_sessions(&self, room: &str, identity: &str) -> Result<(), BackendError> {
        let limit = self.ctx.max_sessions_per_identity;
        let Some(r) = self.rooms.get(room).filter(|_| limit > 0) else {
            return Ok(());
        };
        let held = r
            .participants
            .iter()
            .filter_map(|id| self.participants.get(id))
            .filter(|p| p.identity == identity && p.leg_of.is_none())
            .count();
        if held >= limit {
            return Err(BackendError::TooManySessions {
                identity: identity.to_string(),
                limit,
            });
        }
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        now: Instant,
        req: CreateRequest,
    ) -> Result<SessionCreated, BackendError> {
        tracing::debug!(room = %req.room, offer = %req.offer_sdp, "offer");
        let offer = SdpOffer::from_sdp_string(&unread_descriptors_dropped(&req.offer_sdp))
            .map_err(|e| {
                BackendError::MalformedSdp(parse_failure(&req.offer_sdp, &e.to_string()))
            })?;
        check_offer(req.kind, &req.offer_sdp).map_err(BackendError::UnusableSdp)?;
        self.check_room_capacity(&req.room)?;
        self.check_identity_sessions(&req.room, &req.identity)?;
        let downlink = if req.local_relay {
            Downlink::Loopback
        } else {
            Downlink::Estimated
        };
        let (mut rtc, local_creds) =
            self.build_rtc(req.kind, downlink, Some(&req.offer_sdp), now)?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BackendError::UnusableSdp(e.to_string()))?;
        let mut answer_sdp = answer.to_sdp_string();
        if req.kind == SessionKind::Whep {
            answer_sdp = one_media_stream(&answer_sdp);
        }
        let supported = [supported_codecs("audio"), supported_codecs("video")].concat();
        check_answer(&answer_sdp, &supported).map_err(BackendError::UnusableSdp)?;
        check_served(req.kind, &req.offer_sdp, &answer_sdp, supported_codecs)
            .map_err(BackendError::UnusableSdp)?;
        if req.kind == SessionKind::Whep {
            self.check_viewer_codecs(&req.room, &rtc, &req.offer_sdp)
                .map_err(BackendError::UnusableSdp)?;
        }
        // WHIP publishers are room members (others see them with their tracks).
        let member = (req.kind == SessionKind::Whip)
            .then(|| Member::publisher(&req.resource_id, &req.identity, now));
        let (id, etag) = self.insert_participant(
            now,
            NewSession {
                kind: req.kind,
                room: Arc::from(req.room.as_str()),
                identity: req.identity.clone(),
                resource_id: req.resource_id.clone(),
                max_width: req.max_width,
                remote_offer: req.offer_sdp,
                member,
            },
            rtc,
            local_creds,
        )?;
        if req.kind == SessionKind::Whip {
            self.announce_member(now, id);
        }
        Ok(SessionCreated {
            id: req.resource_id,
            answer_sdp,
            etag,
        })
    }

    /// A WHEP viewer arriving while the room has video: it must be able to
    /// receive at least one publisher's video in a codec that publisher
    /// negotiated, or it would connect and never see a picture.
    fn check_viewer_codecs(&self, room: &str, viewer: &Rtc, offer: &str) -> Result<(), String> {
        let video_params = |rtc: &Rtc, mid: Mid| -> Vec<PayloadParams> {
            negotiated_params(rtc, mid)
                .filter(|p| p.spec().codec.is_video())
                .cloned()
                .collect()
        };
        let receivable: Vec<PayloadParams> = crate::room::offer::media_sections(offer)
            .into_iter()
            .filter_map(|s| s.mid)
            .flat_map(|mid| video_params(viewer, Mid::from(mid.as_str())))
            .collect();
        let mut sent = vec![];
        for p in self.participants.values().filter(|p| &*p.room == room) {
            // The video lines a publisher sends, as its offer negotiated them.
            let sending = crate::room::offer::media_sections(&p.negotiation.remote_offer)
                .into_iter()
                .filter(|s| s.kind == "video" && s.sends() && !s.rejected)
                .filter_map(|s| s.mid);
            for mid in sending {
                let offered = video_params(p.rtc_ref(), Mid::from(mid.as_str()));
                let fits = offered.iter().any(|src| {
                    receivable
                        .iter()
                        .any(|dst| payload_map::compatibility(src, dst).is_some())
                });
                if fits {
                    return Ok(());
                }
                sent.extend(offered.iter().map(describe));
            }
        }
        if sent.is_empty() {
            return Ok(()); // no video yet: whatever comes is checked per packet
        }
        sent.sort();
        sent.dedup();
        let mut takes: Vec<String> = receivable.iter().map(describe).collect();
        takes.sort();
        takes.dedup();
        let takes = if takes.is_empty() {
            "none".to_string()
        } else {
            takes.join(", ")
        };
        Err(format!(
            "the room's video is sent as {}; this offer receives video as {takes}: offer one of the publisher's codecs",
            sent.join(", ")
        ))
    }

    /// A conference participant without an offer yet.
    pub(super) fn add_participant(
        &mut self,
        now: Instant,
        session: NewSession,
        downlink: Downlink,
    ) -> Result<ParticipantId, BackendError> {
        self.check_room_capacity(&session.room)?;
        let (rtc, local_creds) = self.build_rtc(session.kind, downlink, None, now)?;
        self.insert_participant(now, session, rtc, local_creds)
            .map(|(id, _)| id)
    }

    /// Register a new participant in its room, the demux, the registry and
    /// the metrics. Returns its id and entity tag.
    pub(super) fn insert_participant(
        &mut self,
        now: Instant,
        s: NewSession,
        rtc: Rtc,
        local_creds: IceCreds,
    ) -> Result<(ParticipantId, String), BackendError> {
        self.ensure_room(&s.room, now)?;
        let id = self.next_id;
        self.next_id += 1;
        let etag = random_token();
        let participant = Participant::new(NewParticipant {
            id,
            room: s.room.clone(),
            identity: s.identity.clone(),
            kind: s.kind,
            resource_id: s.resource_id.clone(),
            max_width: s.max_width,
            negotiation: Negotiation {
                etag: etag.clone(),
                local_ufrag: local_creds.ufrag.clone(),
                remote_ufrag: sdp_attr(&s.remote_offer, "ice-ufrag:").map(str::to_string),
                remote_offer: s.remote_offer,
            },
            rtc,
            now,
            member: s.member,
        });
        self.demux
            .insert_credentials(&local_creds.ufrag, &local_creds.pass, id);
        self.by_resource.insert(s.resource_id.clone(), id);
        self.participants.insert(id, participant);
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.participants.insert(id);
        }
        self.ctx.registry.insert_resource(
            s.resource_id.clone(),
            ResourceEntry {
                worker: self.ctx.index,
                kind: s.kind,
                room: s.room.to_string(),
                identity: s.identity.clone(),
            },
        );
        let m = &self.ctx.metrics;
        m.participants
            .with_label_values(&[kind_label(s.kind)])
            .inc();
        m.rtc_instances.inc();
        m.sessions.with_label_values(&["connecting"]).inc();
        m.sessions_created
            .with_label_values(&[kind_label(s.kind)])
            .inc();
        self.dirty.push(id);
        if let Some(p) = self.participants.get(&id) {
            p.span.in_scope(|| tracing::info!("participant joined"));
        }
        Ok((id, etag))
    }

    pub(super) fn activity(&self, id: ParticipantId) -> SessionEvent {
        let receiving = self
            .participants
            .get(&id)
            .and_then(|p| self.rooms.get(&p.room))
            .is_some_and(|room| room.router.is_receiving(id));
        if receiving {
            SessionEvent::Active
        } else {
            SessionEvent::Inactive
        }
    }

    /// The participant of WHIP/WHEP resource (or room participant sid)
    /// `resource_id` (404 when there is none).
    pub(super) fn session_id(&self, resource_id: &str) -> Result<ParticipantId, BackendError> {
        self.by_resource
            .get(resource_id)
            .copied()
            .ok_or(BackendError::NotFound)
    }

    /// [`Self::session_id`]'s participant itself.
    pub(super) fn session_mut(
        &mut self,
        resource_id: &str,
    ) -> Result<&mut Participant, BackendError> {
        let id = self.session_id(resource_id)?;
        self.participants.get_mut(&id).ok_or(BackendError::NotFound)
    }

    pub(super) fn patch(
        &mut self,
        resource_id: &str,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> Result<PatchOutcome, BackendError> {
        let p = self.session_mut(resource_id)?;
        let id = p.id;
        if let Some(tag) = &if_match {
            if tag != "*" && *tag != p.negotiation.etag {
                return Err(BackendError::PreconditionFailed);
            }
        }
        let restart = match (&frag.ice_ufrag, &p.negotiation.remote_ufrag) {
            (Some(new), Some(old)) => new != old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !restart {
            // A candidate the server cannot use (an mDNS `.local` name, an
            // unknown transport) is dropped, not refused: RFC 9725 lets
            // the server ignore candidates, and some clients end their
            // session on anything but 204.
            for line in &frag.candidates {
                match Candidate::from_sdp_string(line) {
                    Ok(c) => p.rtc_mut().add_remote_candidate(c),
                    Err(e) => {
                        tracing::debug!(candidate = %line, error = %e, "trickled candidate dropped")
                    }
                }
            }
            self.dirty.push(id);
            return Ok(PatchOutcome::Trickled);
        }
        // ICE restart: re-apply the remote offer with the new credentials;
        // str0m restarts ICE and answers with fresh local credentials.
        if if_match.is_none() {
            return Err(BackendError::PreconditionRequired);
        }
        let (Some(ufrag), Some(pwd)) = (&frag.ice_ufrag, &frag.ice_pwd) else {
            return Err(BackendError::MalformedSdp(
                "ICE restart without credentials".into(),
            ));
        };
        let offer_text = restart_offer(&p.negotiation.remote_offer, ufrag, pwd, &frag.candidates);
        let offer = SdpOffer::from_sdp_string(&unread_descriptors_dropped(&offer_text))
            .map_err(|e| BackendError::MalformedSdp(e.to_string()))?;
        let answer = p
            .rtc_mut()
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| BackendError::UnusableSdp(e.to_string()))?
            .to_sdp_string();
        let (Some(new_ufrag), Some(new_pwd)) = (
            sdp_attr(&answer, "ice-ufrag:"),
            sdp_attr(&answer, "ice-pwd:"),
        ) else {
            return Err(BackendError::Internal(
                "answer lacks ICE credentials".into(),
            ));
        };
        // The server stays ICE-lite (RFC 9725 §4.3.2 asks for it in the
        // fragment when it is).
        let mut fragment =
            format!("a=ice-lite\r\na=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\n");
        for c in answer.lines().filter(|l| l.starts_with("a=candidate:")) {
            fragment.push_str(c.trim_end());
            fragment.push_str("\r\n");
        }
        fragment.push_str("a=end-of-candidates\r\n");
        let n = &mut p.negotiation;
        let old_ufrag = std::mem::replace(&mut n.local_ufrag, new_ufrag.to_string());
        n.remote_ufrag = Some(ufrag.clone());
        n.remote_offer = offer_text;
        n.etag = random_token();
        let etag = n.etag.clone();
        self.demux.remove_ufrag(&old_ufrag);
        self.demux.insert_credentials(new_ufrag, new_pwd, id);
        self.dirty.push(id);
        tracing::info!(participant = id, "ICE restart");
        Ok(PatchOutcome::Restarted {
            answer_frag: fragment,
            etag,
        })
    }
}

/// The remote offer with new ICE credentials (and trickled candidates).
fn restart_offer(offer: &str, ufrag: &str, pwd: &str, candidates: &[String]) -> String {
    let mut out = String::with_capacity(offer.len() + 256);
    for line in offer.lines() {
        let l = line.trim_end();
        if l.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(l);
            out.push_str("\r\n");
            if l.starts_with("m=") {
                for c in candidates {
                    out.push_str(&format!("a={c}\r\n"));
                }
            }
        }
    }
    out
}
