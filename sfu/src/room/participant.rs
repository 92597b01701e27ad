//! One participant: a str0m `Rtc` (in RTP mode) plus what the worker knows
//! about it (identity, resource id, liveness, its incoming streams and its
//! outgoing ones).
//!
//! `Participant` feeds input into its `Rtc`, drains its output, sends
//! transmits through the callback it is given, and hands the events the rest
//! of the worker cares about back as [`ParticipantEvent`] values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::SessionKind;
use str0m::bwe::{Bitrate, BweKind};
use str0m::channel::ChannelId;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaAdded, Mid, Pt, Rid};
use str0m::net::Transmit;
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::forward::codec::dependency_descriptor::Structure;
use crate::forward::freshness::Freshness;
use crate::forward::reorder::FrameOrderMonitor;
use crate::forward::router::{Delivery, ProbeRequest};
use crate::forward::ParticipantId;
use crate::room::member::Member;
use crate::room::out_streams::{Forwarded, OutStreams, WriteOutcome};
use crate::room::session_events::EventStreams;

/// An RTP packet a participant sent us, with the media line and layer it
/// belongs to and its codec.
#[derive(Debug)]
pub struct Received {
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub params: PayloadParams,
    pub packet: RtpPacket,
}

/// What a participant's `Rtc` told the worker.
// Packets dominate; they live briefly in a reused Vec, and boxing them
// would allocate once per packet on the packet path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ParticipantEvent {
    Connected,
    MediaAdded(MediaAdded),
    Rtp(Received),
    KeyframeRequest(KeyframeRequest),
    /// The subscriber's downlink estimate (TWCC), bits per second.
    BandwidthEstimate(u64),
    /// The subscriber's receiver reports: fraction of our packets lost.
    EgressLoss(f32),
    /// Counters from the subscriber side (deltas since the last report).
    EgressFeedback {
        nacks: u64,
        plis: u64,
        firs: u64,
    },
    /// The peer opened a data channel.
    ChannelOpen(ChannelId, String),
    /// A data-channel message (`binary` false: text).
    ChannelData(ChannelId, Vec<u8>),
    Closed,
}

/// The latest link figures str0m reported (connection quality).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    pub ingress_loss: f32,
    pub egress_loss: f32,
    pub rtt: Option<Duration>,
}

/// The negotiated state a PATCH (trickle, ICE restart) works on.
#[derive(Debug, Clone)]
pub struct Negotiation {
    /// Entity tag of the current ICE session.
    pub etag: String,
    pub local_ufrag: String,
    pub remote_ufrag: Option<String>,
    /// The last remote offer (an ICE restart re-applies it with new credentials).
    pub remote_offer: String,
}

pub struct Participant {
    pub id: ParticipantId,
    pub room: Arc<str>,
    pub identity: String,
    pub kind: SessionKind,
    pub resource_id: String,
    pub negotiation: Negotiation,
    /// WHEP viewer's wish: video at most this wide.
    pub max_width: Option<u32>,
    rtc: Rtc,
    pub created_at: Instant,
    /// When the first offer arrived and connecting began (None: no offer
    /// yet, as for a room participant that only just joined).
    pub offered_at: Option<Instant>,
    pub last_receive: Instant,
    pub connected: bool,
    pub closed: bool,
    next_timeout: Instant,
    /// Incoming streams: media line and rid by SSRC (only SSRCs whose
    /// packets passed SRTP authentication).
    rx_streams: HashMap<Ssrc, (Mid, Option<Rid>)>,
    /// The SSRC media last started arriving on, per media line and rid:
    /// where keyframe requests go once media flows (str0m's lookup by media
    /// line may find a stream a forged, unauthenticated packet made it
    /// declare).
    rx_latest: HashMap<(Mid, Option<Rid>), Ssrc>,
    /// Times an incoming media line moved to a new SSRC (not yet counted
    /// in the metrics).
    pub ssrc_changes: u64,
    /// Codec parameters of incoming payload types.
    rx_params: HashMap<Pt, PayloadParams>,
    /// Outgoing streams with their header rewriting.
    out: OutStreams,
    /// The streams (rids) of lines that relay to another node: every layer
    /// of the source goes out on one of them.
    pub relay_rids: HashMap<Mid, Vec<Rid>>,
    /// A relay ingest (edge node): our offer awaiting the hosting node's answer.
    pub pending_offer: Option<str0m::change::SdpPendingOffer>,
    pub frame_order: HashMap<(Mid, Option<Rid>), FrameOrderMonitor>,
    /// How late each of its audio lines reaches the forwarding core.
    pub audio_freshness: HashMap<Mid, Freshness>,
    /// The latest AV1 dependency descriptor structure of each stream it
    /// publishes (a descriptor is read with its stream's structure).
    pub descriptor_structures: HashMap<(Mid, Option<Rid>), Arc<Structure>>,
    egress_totals: HashMap<(Mid, Option<Rid>), (u64, u64, u64)>,
    /// Log span of this session (room, identity, resource, kind).
    pub span: tracing::Span,
    /// This session's event streams (WHEP server-sent events).
    pub events: EventStreams,
    probe_target: ProbeRequest,
    /// Latest receiver-reported loss per media line.
    egress_loss: HashMap<Mid, f32>,
    /// The room protocol's view (conference participants, WHIP publishers).
    pub member: Option<Member>,
    pub link: LinkStats,
    /// Video lines this publisher sends whose feedback can only be REMB.
    pub remb_mids: Vec<Mid>,
    /// A member's downlink connection: that member's id.
    pub leg_of: Option<ParticipantId>,
}

/// Due timeouts served in one poll (each lets str0m's pacer release one
/// more packet); what remains waits for the worker's next turn.
const MAX_DUE_TIMEOUTS: usize = 256;

/// A timeout this close is served within the poll: str0m's pacer asks for
/// one a microsecond after the last to release its next packet (unpaced
/// ones too), and a turn of the worker's loop per packet would cost more
/// than the packet.
const IMMEDIATE: Duration = Duration::from_micros(100);

/// Constructor arguments (kept together to stay readable).
pub struct NewParticipant {
    pub id: ParticipantId,
    pub room: Arc<str>,
    pub identity: String,
    pub kind: SessionKind,
    pub resource_id: String,
    pub negotiation: Negotiation,
    pub max_width: Option<u32>,
    pub rtc: Rtc,
    pub now: Instant,
    pub member: Option<Member>,
}

impl Participant {
    pub fn new(p: NewParticipant) -> Participant {
        let offer = p.negotiation.remote_offer.clone();
        let now = p.now;
        let mut participant = Self::build(p);
        participant.set_remote_offer(offer, now);
        participant
    }

    fn build(p: NewParticipant) -> Participant {
        let span = tracing::info_span!("session", room = %p.room, identity = %p.identity,
            resource = %p.resource_id, kind = ?p.kind, participant = p.id);
        Participant {
            span,
            id: p.id,
            room: p.room,
            identity: p.identity,
            kind: p.kind,
            resource_id: p.resource_id,
            negotiation: p.negotiation,
            max_width: p.max_width,
            rtc: p.rtc,
            created_at: p.now,
            offered_at: None,
            last_receive: p.now,
            connected: false,
            closed: false,
            next_timeout: p.now,
            rx_streams: HashMap::new(),
            rx_latest: HashMap::new(),
            ssrc_changes: 0,
            rx_params: HashMap::new(),
            out: OutStreams::default(),
            relay_rids: HashMap::new(),
            pending_offer: None,
            frame_order: HashMap::new(),
            audio_freshness: HashMap::new(),
            descriptor_structures: HashMap::new(),
            egress_totals: HashMap::new(),
            events: EventStreams::default(),
            probe_target: ProbeRequest::default(),
            egress_loss: HashMap::new(),
            member: p.member,
            link: LinkStats::default(),
            remb_mids: vec![],
            leg_of: None,
        }
    }

    /// The peer's latest accepted offer (what PATCH and reconciliation read).
    pub fn set_remote_offer(&mut self, sdp: String, now: Instant) {
        if !sdp.is_empty() {
            self.offered_at.get_or_insert(now);
        }
        self.remb_mids = crate::room::offer::remb_only_video_mids(&sdp)
            .iter()
            .map(|m| Mid::from(m.as_str()))
            .collect();
        self.negotiation.remote_offer = sdp;
    }

    /// A bridge's receiving video lines that ask for simulcast get every
    /// layer, each on one of the streams it named.
    pub fn note_relay_lines(&mut self) {
        let Some(m) = self.member.as_ref() else {
            return;
        };
        for mid in m.subscriptions.keys() {
            let Some(media) = self.rtc.media(*mid) else {
                continue;
            };
            if media.kind() != str0m::media::MediaKind::Video {
                continue;
            }
            if let str0m::media::Rids::Specific(rids) = media.rids_tx() {
                if !rids.is_empty() {
                    self.relay_rids.insert(*mid, rids.clone());
                }
            }
        }
    }

    pub fn rtc_ref(&self) -> &Rtc {
        &self.rtc
    }

    pub fn rtc_mut(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    pub fn is_alive(&self) -> bool {
        !self.closed && self.rtc.is_alive()
    }

    /// Would this participant's `Rtc` take this datagram?
    pub fn accepts(&self, input: &Input) -> bool {
        self.is_alive() && self.rtc.accepts(input)
    }

    /// Feed network input or a timeout.
    pub fn handle_input(&mut self, input: Input) {
        if !self.is_alive() {
            return;
        }
        if let Input::Receive(t, _) = &input {
            self.last_receive = *t;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            let _span = self.span.clone().entered();
            tracing::info!(error = %e, "rtc input failed; closing session");
            self.close();
        }
    }

    /// Drain the `Rtc`: transmits go to `transmit`, events to `events`.
    /// str0m's pacer releases one queued packet per timeout, so a timeout
    /// that is due, or [`IMMEDIATE`], is served here at once (bounded),
    /// rather than by another turn of the worker's loop for every packet
    /// written.
    pub fn poll(
        &mut self,
        mut now: Instant,
        transmit: &mut dyn FnMut(Transmit),
        events: &mut Vec<(ParticipantId, ParticipantEvent)>,
    ) {
        // Bounded: str0m returns a Timeout once its queues are empty.
        let mut due_timeouts = 0;
        for _ in 0..100_000 {
            if !self.rtc.is_alive() {
                if !self.closed {
                    self.closed = true;
                    events.push((self.id, ParticipantEvent::Closed));
                }
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    // str0m asks for the next packet one microsecond after
                    // its last timeout: served here, on the clock if it has
                    // passed that, else at the time asked (str0m never lets
                    // its clock go back, so what comes in later is no older).
                    let soon = t <= now + IMMEDIATE;
                    if soon && due_timeouts < MAX_DUE_TIMEOUTS && !self.closed {
                        due_timeouts += 1;
                        now = now.max(t).max(if t > now { Instant::now() } else { now });
                        self.handle_input(Input::Timeout(now));
                        continue;
                    }
                    return;
                }
                Ok(Output::Transmit(t)) => transmit(t),
                Ok(Output::Event(e)) => self.on_event(e, events),
                Err(e) => {
                    let _span = self.span.clone().entered();
                    tracing::info!(error = %e, "rtc failed; closing session");
                    self.close();
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, events: &mut Vec<(ParticipantId, ParticipantEvent)>) {
        let id = self.id;
        match event {
            Event::Connected => {
                self.connected = true;
                events.push((id, ParticipantEvent::Connected));
            }
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(participant = id, ?state, "ice state");
                if state == IceConnectionState::Disconnected {
                    tracing::info!(
                        participant = id,
                        "ICE disconnected; waiting for consent or timeout"
                    );
                }
            }
            Event::MediaAdded(m) => events.push((id, ParticipantEvent::MediaAdded(m))),
            Event::RtpPacket(packet) => {
                if let Some(received) = self.received(packet) {
                    events.push((id, ParticipantEvent::Rtp(received)));
                }
            }
            Event::KeyframeRequest(r) => events.push((id, ParticipantEvent::KeyframeRequest(r))),
            Event::ChannelOpen(cid, label) => {
                events.push((id, ParticipantEvent::ChannelOpen(cid, label)))
            }
            Event::ChannelData(d) => events.push((id, ParticipantEvent::ChannelData(d.id, d.data))),
            Event::PeerStats(s) => {
                self.link = LinkStats {
                    ingress_loss: s.ingress_loss_fraction.unwrap_or(0.0),
                    egress_loss: s.egress_loss_fraction.unwrap_or(0.0),
                    rtt: s.rtt,
                };
            }
            Event::MediaEgressStats(s) => {
                if let Some(loss) = s.loss.filter(|_| self.kind != SessionKind::Whip) {
                    // Reports come per media line; the worst one describes the link.
                    self.egress_loss.insert(s.mid, loss);
                    let worst = self.egress_loss.values().copied().fold(0.0, f32::max);
                    events.push((id, ParticipantEvent::EgressLoss(worst)));
                }
                let totals = self.egress_totals.entry((s.mid, s.rid)).or_default();
                let delta = (
                    s.nacks.saturating_sub(totals.0),
                    s.plis.saturating_sub(totals.1),
                    s.firs.saturating_sub(totals.2),
                );
                *totals = (s.nacks, s.plis, s.firs);
                if delta != (0, 0, 0) {
                    events.push((
                        id,
                        ParticipantEvent::EgressFeedback {
                            nacks: delta.0,
                            plis: delta.1,
                            firs: delta.2,
                        },
                    ));
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                tracing::trace!(bps = estimate.as_u64(), "egress estimate");
                events.push((id, ParticipantEvent::BandwidthEstimate(estimate.as_u64())));
            }
            Event::Closed => {
                self.closed = true;
                events.push((id, ParticipantEvent::Closed));
            }
            _ => {}
        }
    }

    /// Resolve an incoming packet's media line, layer and codec (each
    /// once per SSRC / payload type, then from a map).
    fn received(&mut self, packet: RtpPacket) -> Option<Received> {
        let ssrc = packet.header.ssrc;
        let (mid, rid) = match self.rx_streams.get(&ssrc) {
            Some(found) => *found,
            None => {
                let stream = self
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|s| (s.mid(), s.rid()))?;
                self.rx_streams.insert(ssrc, stream);
                if self.rx_latest.insert(stream, ssrc).is_some() {
                    self.ssrc_changes += 1;
                }
                stream
            }
        };
        let pt = packet.header.payload_type;
        let params = match self.rx_params.get(&pt) {
            Some(p) => *p,
            None => {
                // The codec's own payload type, or its RED (RFC 2198) one.
                let p = *self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == pt || p.red() == Some(pt))?;
                self.rx_params.insert(pt, p);
                p
            }
        };
        Some(Received {
            mid,
            rid,
            params,
            packet,
        })
    }

    /// Write a publisher's packet on this subscriber's media line `mid`
    /// (`rid`: the stream of a relay's line) as `delivery` says (whether
    /// the stream starts over here, whether the subscriber's picture ends).
    pub fn write_packet(
        &mut self,
        mid: Mid,
        rid: Option<Rid>,
        delivery: &Delivery,
        packet: &Forwarded,
    ) -> WriteOutcome {
        if !self.is_alive() || !self.connected {
            return WriteOutcome::NotWritable;
        }
        self.out.write(&mut self.rtc, (mid, rid), delivery, packet)
    }

    /// Whether this subscriber negotiated the AV1 dependency descriptor on `mid`.
    pub fn takes_descriptor(&mut self, mid: Mid, rid: Option<Rid>) -> bool {
        self.out.takes_descriptor(&mut self.rtc, mid, rid)
    }

    /// A packet of the source flowing on `mid` was dropped on purpose.
    pub fn skip_packet(&mut self, mid: Mid, rid: Option<Rid>, packet: &Forwarded) {
        self.out.skip(mid, rid, packet);
    }

    /// Apply the answer to our own pending offer (a relay ingest).
    pub fn accept_answer(&mut self, answer: str0m::change::SdpAnswer) -> Result<(), String> {
        let pending = self
            .pending_offer
            .take()
            .ok_or_else(|| "no offer of ours is waiting for an answer".to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())
    }

    /// Ask this publisher for a keyframe on `mid` (layer `rid`): PLI, or
    /// FIR where the publisher negotiated only that.
    pub fn request_keyframe(&mut self, mid: Mid, rid: Option<Rid>) -> bool {
        let mut video = self
            .rx_params
            .values()
            .filter(|p| p.spec().codec.is_video())
            .peekable();
        let fir_only = video.peek().is_some() && video.all(|p| p.fb_fir() && !p.fb_pli());
        let kind = if fir_only {
            KeyframeRequestKind::Fir
        } else {
            KeyframeRequestKind::Pli
        };
        let latest = self.rx_latest.get(&(mid, rid)).copied();
        let mut api = self.rtc.direct_api();
        // Before any packet arrived: the stream the negotiation declared.
        let rx = match latest {
            Some(ssrc) => api.stream_rx(&ssrc),
            None => api.stream_rx_by_mid(mid, rid),
        };
        match rx {
            Some(rx) => {
                rx.request_keyframe(kind);
                true
            }
            None => false,
        }
    }

    /// Tell the bandwidth estimator what to probe for and how much to send
    /// at least (str0m pads up to the floor, never above its estimate).
    pub fn set_probe_target(&mut self, request: ProbeRequest) {
        if self.probe_target == request {
            return;
        }
        self.probe_target = request;
        tracing::trace!(target_bps = ?request.target_bps, top_bps = ?request.top_bps, floor_bps = request.floor_bps, "probe target");
        let desired = Bitrate::bps(request.desired_bps());
        self.rtc
            .bwe()
            .set_bitrate(Bitrate::bps(request.floor_bps), desired);
    }

    /// Write one message on data channel `id`, as binary or as text.
    pub fn write_channel(&mut self, id: ChannelId, data: &[u8], binary: bool) -> bool {
        if !self.connected || !self.is_alive() {
            return false;
        }
        match self.rtc.channel(id) {
            Some(mut ch) => ch.write(binary, data).unwrap_or(false),
            None => false,
        }
    }

    /// Tell a REMB-only publisher how much it may send on each of its
    /// REMB-only video lines (every simulcast layer's stream).
    pub fn send_remb(&mut self, bitrate: Bitrate) -> bool {
        if !self.connected || self.remb_mids.is_empty() {
            return false;
        }
        let mut sent = false;
        for mid in self.remb_mids.clone() {
            let rids: Vec<Option<Rid>> = match self.rtc.media(mid).map(|m| m.rids_rx()) {
                Some(str0m::media::Rids::Specific(r)) => r.iter().copied().map(Some).collect(),
                _ => vec![None],
            };
            let mut api = self.rtc.direct_api();
            for rid in rids {
                if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                    rx.request_remb(bitrate);
                    sent = true;
                }
            }
        }
        sent
    }

    /// Close the session: str0m sends DTLS close_notify and RTCP BYE.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.rtc.close();
        }
    }

    /// Time since the last datagram from the peer.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_receive)
    }

    /// Offered but still not connected (ICE and DTLS) this long after the
    /// offer: a half-open session, even if STUN keeps arriving.
    pub fn connecting_for(&self, now: Instant) -> Option<Duration> {
        match (self.connected, self.offered_at) {
            (false, Some(t)) => Some(now.saturating_duration_since(t)),
            _ => None,
        }
    }
}
