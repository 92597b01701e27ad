//! The worker's packet path and its control loop: forwarding a
//! publisher's RTP packet to the subscribers the router names (the payload
//! shared, each subscriber's stream rewriting the header), carrying out
//! router decisions (keyframe requests), and the periodic simulcast layer
//! evaluation with its metrics.

use super::*;
use crate::forward::codec;
use crate::forward::codec::dependency_descriptor::{self, DescriptorError};
use crate::forward::descriptor_rewriter::ReadDescriptor;
use crate::forward::freshness::Admit;
use crate::forward::red;
use crate::forward::rewriter::{Incoming, SenderClock, SourceKey};
use crate::forward::router::{Delivery, PacketInfo};
use crate::metrics::MediaCounters;
use crate::room::dd_extension;
use crate::room::out_streams::{Forwarded, RedPayload, WriteOutcome};
use crate::room::participant::Received;
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::{ExtensionValues, Vp8Descriptor};

/// How often simulcast layer choices are re-evaluated.
pub(super) const LAYER_INTERVAL: Duration = Duration::from_millis(250);

impl WorkerCore {
    /// Whether an audio packet is forwarded or was read so late that
    /// forwarding it would only keep the worker behind (see
    /// [`crate::forward::freshness`]).
    fn admit(
        &mut self,
        publisher: ParticipantId,
        mid: Mid,
        media_secs: f64,
        now: Instant,
    ) -> Admit {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return Admit::Forward;
        };
        p.audio_freshness
            .entry(mid)
            .or_default()
            .admit(media_secs, now)
    }

    /// The packet path: one publisher packet to every subscriber of its track.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        room_name: &Arc<str>,
        received: Received,
    ) {
        let Received {
            mid,
            rid,
            params,
            packet,
        } = received;
        let spec = params.spec();
        let video = spec.codec.is_video();
        self.media_counters.received[MediaCounters::index(video)].inc();
        let track = TrackKey { publisher, mid };
        let seq = *packet.seq_no;
        if !video {
            let media_secs = packet.time.numer() as f64 / packet.time.frequency().get() as f64;
            if let Admit::Drop { first, late_by } = self.admit(publisher, mid, media_secs, now) {
                self.media_counters.stale_audio.inc();
                if first {
                    tracing::info!(
                        participant = publisher,
                        mid = %mid,
                        late_ms = late_by.as_millis() as u64,
                        "dropping stale audio: read too late to forward (the worker is behind)"
                    );
                }
                return;
            }
            if self.is_muted(publisher, mid) {
                return; // muted (possibly by an administrator): nothing leaves
            }
            if let (Some(level), Some(room)) = (
                packet.header.ext_vals.audio_level,
                self.rooms.get_mut(room_name),
            ) {
                room.speakers.observe(track, level, now);
            }
        }
        // A padding-only or malformed packet is routed like any packet of
        // its layer, but squeezed out of the subscribers' streams: nobody
        // waits for it as a loss. (Padding may come with RED's payload
        // type: Chromium pads an audio-only publisher's stream.)
        let mut absorbed = packet.payload.is_empty();
        if absorbed {
            self.media_counters.padding.inc();
        }
        // Audio with redundancy (RFC 2198): where its primary encoding is.
        let mut red = None;
        if !absorbed && params.red() == Some(packet.header.payload_type) {
            match red::parse(&packet.payload) {
                Ok(layout) => {
                    red = Some(RedPayload {
                        primary: layout.primary_payload(&packet.payload),
                        layout,
                    })
                }
                Err(e) => {
                    self.malformed("red", publisher, e);
                    absorbed = true;
                }
            }
        }
        let mut parsed = if video && !absorbed {
            match codec::parse(spec.codec, &packet.payload) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let label = format!("{:?}", spec.codec).to_lowercase();
                    self.malformed(&label, publisher, e);
                    absorbed = true;
                    codec::PacketInfo::default()
                }
            }
        } else {
            codec::PacketInfo::default()
        };
        // AV1's layers are in its dependency descriptor, read with the
        // structure its stream sent last.
        let descriptor = match dd_extension::received(&packet.header.ext_vals) {
            Some(raw) if spec.codec == Codec::Av1 && !absorbed => {
                match self.read_descriptor(publisher, (mid, rid), raw) {
                    Ok(dd) => {
                        apply_descriptor(&mut parsed, &dd);
                        Some(dd)
                    }
                    Err(e) => {
                        self.malformed("av1_dd", publisher, e);
                        absorbed = true;
                        None
                    }
                }
            }
            _ => None,
        };
        if video && parsed.starts_frame {
            self.watch_frame_order(publisher, room_name, mid, rid, seq, packet.time.numer());
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let info = PacketInfo {
            layer: rid,
            seq,
            starts_keyframe: parsed.starts_keyframe,
            starts_frame: parsed.starts_frame || !video,
            size: if absorbed { 0 } else { packet.payload.len() },
            dims: parsed.dims,
            temporal: parsed.temporal,
            sync: parsed.sync,
            spatial: parsed.spatial,
            ends_frame: parsed.ends_frame,
            spatial_dims: parsed
                .spatial_dims
                .iter()
                .any(Option::is_some)
                .then_some(parsed.spatial_dims),
        };
        let mut deliveries = std::mem::take(&mut self.deliveries);
        let action = room.router.route_packet(track, &info, now, &mut deliveries);
        if !deliveries.is_empty() {
            let mut forwarded = forwarded_packet(track, rid, params, packet, parsed.vp8, video);
            forwarded.red = red;
            forwarded.descriptor = descriptor;
            if forwarded
                .descriptor
                .as_ref()
                .is_some_and(|dd| dd.structure.spatial_layers() > 1)
            {
                self.base_layer_without_descriptor(room_name, &deliveries);
            }
            let written = self.deliver(&deliveries, &forwarded, absorbed);
            if written > 0 {
                self.media_counters.forwarded[MediaCounters::index(video)].inc_by(written);
            }
        }
        deliveries.clear();
        self.deliveries = deliveries;
        if let Some(action) = action {
            self.execute(action);
        }
    }

    /// Subscribers of a scalable AV1 stream that did not negotiate its
    /// dependency descriptor get its base spatial layer only: without the
    /// descriptor a receiver cannot tell where a layer's frame ends
    /// (Chromium decoded no frame of the whole stream so).
    fn base_layer_without_descriptor(&mut self, room_name: &Arc<str>, deliveries: &[Delivery]) {
        // Only a viewer above the base layer is looked up: once capped, its
        // packets cost nothing here.
        let above_base = |d: &&Delivery| d.slot.is_none() && d.layers.is_some_and(|(s, _)| s > 0);
        for d in deliveries.iter().filter(above_base) {
            let base_only = match self.participants.get_mut(&d.down.subscriber) {
                Some(sub) => !sub.takes_descriptor(d.down.mid, None),
                None => continue,
            };
            if base_only {
                if let Some(room) = self.rooms.get_mut(room_name) {
                    room.router.set_max_spatial(d.down, Some(0));
                }
            }
        }
    }

    /// A publisher packet's AV1 dependency descriptor, read with the
    /// structure of its stream (kept when the packet attaches a new one).
    fn read_descriptor(
        &mut self,
        publisher: ParticipantId,
        stream: (Mid, Option<Rid>),
        raw: Arc<[u8]>,
    ) -> Result<ReadDescriptor, DescriptorError> {
        let p = self
            .participants
            .get_mut(&publisher)
            .ok_or(DescriptorError::UnknownStructure)?;
        let known = p.descriptor_structures.get(&stream);
        let descriptor = dependency_descriptor::read(&raw, known)?;
        let structure = descriptor
            .structure_or(known)
            .cloned()
            .ok_or(DescriptorError::UnknownStructure)?;
        if let Some(new) = &descriptor.structure {
            p.descriptor_structures.insert(stream, new.clone());
        }
        ReadDescriptor::new(descriptor, structure, raw).ok_or(DescriptorError::UnknownTemplate)
    }

    /// Write (or skip) one packet on each delivery's stream; returns how
    /// many were written. An `absorbed` packet is skipped by every stream.
    fn deliver(&mut self, deliveries: &[Delivery], packet: &Forwarded, absorbed: bool) -> u64 {
        let mut written = 0u64;
        for d in deliveries {
            let Some(sub) = self.participants.get_mut(&d.down.subscriber) else {
                continue;
            };
            // A relay's line names the stream (rid) each slot goes on.
            let rid = match d.slot {
                Some(slot) => match sub.relay_rids.get(&d.down.mid).and_then(|r| r.get(slot)) {
                    Some(rid) => Some(*rid),
                    None => continue,
                },
                None => None,
            };
            if !d.send || absorbed {
                sub.skip_packet(d.down.mid, rid, packet);
                continue;
            }
            match sub.write_packet(d.down.mid, rid, d, packet) {
                WriteOutcome::Written => {
                    written += 1;
                    self.dirty.push(d.down.subscriber);
                }
                WriteOutcome::NoCompatibleCodec => {
                    tracing::debug!(subscriber = d.down.subscriber, pt = %packet.params.pt(), "no compatible codec");
                }
                WriteOutcome::Late => self.media_counters.late.inc(),
                WriteOutcome::NotWritable | WriteOutcome::Nothing => {}
            }
        }
        written
    }

    /// A packet whose payload header does not parse (a video codec's, or
    /// RED's): not forwarded, counted per `label` (the codec) and logged at
    /// debug (it concerns this publisher's stream only).
    fn malformed(&self, label: &str, publisher: ParticipantId, e: impl std::fmt::Display) {
        self.media_counters.malformed.inc();
        self.ctx
            .metrics
            .malformed_packets
            .with_label_values(&[label])
            .inc();
        tracing::debug!(participant = publisher, codec = label, error = %e, "malformed packet dropped");
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn watch_frame_order(
        &mut self,
        publisher: ParticipantId,
        room: &Arc<str>,
        mid: Mid,
        rid: Option<str0m::media::Rid>,
        seq: u64,
        rtp_time: u64,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let monitor = p.frame_order.entry((mid, rid)).or_default();
        let before = monitor.reordered();
        let first = monitor.observe_packet(seq, rtp_time);
        if monitor.reordered() > before {
            self.ctx
                .metrics
                .reordered_frames
                .with_label_values(&[room])
                .inc();
        }
        if first {
            tracing::warn!(room = %room, identity = %p.identity,
                "publisher sends B-frames (frames out of presentation order); browsers will stutter. \
                 Disable B-frames in the encoder (OBS: Output -> Encoder settings, bframes=0 / profile baseline)");
            self.ctx
                .metrics
                .publishers_with_bframes
                .with_label_values(&[&**room, p.identity.as_str()])
                .set(1);
        }
    }

    pub(super) fn execute(&mut self, action: RouterAction) {
        match action {
            RouterAction::RequestKeyframe {
                track,
                layer,
                cause,
            } => {
                if let Some(p) = self.participants.get_mut(&track.publisher) {
                    if p.request_keyframe(track.mid, layer) {
                        tracing::debug!(
                            publisher = track.publisher,
                            ?layer,
                            cause = cause.as_str(),
                            "keyframe requested from publisher"
                        );
                        self.dirty.push(track.publisher);
                        self.ctx
                            .metrics
                            .keyframe_requests_sent
                            .with_label_values(&[cause.as_str()])
                            .inc();
                    }
                }
            }
            RouterAction::Bound { down, track } => {
                tracing::debug!(?down, ?track, "down-track bound");
                self.notify_activity(down.subscriber);
            }
            RouterAction::Unbound { down, track } => {
                tracing::info!(subscriber = down.subscriber, mid = %down.mid, publisher = track.publisher,
                    "track ended; down-track has no source");
                self.notify_activity(down.subscriber);
            }
        }
    }

    /// Where viewers' video stands: layer distribution and paused time.
    pub(super) fn layer_metrics(&mut self, now: Instant) {
        const LABELS: [&str; 6] = ["low", "mid", "high", "single", "paused", "waiting"];
        let mut counts = [0i64; 6];
        for room in self.rooms.values() {
            for down in room.router.video_down_tracks() {
                let paused = room.router.selector(down).is_some_and(|s| s.is_paused());
                let slot = match room.router.layer_rank(down, now) {
                    _ if paused => 4,
                    None => 5,
                    Some((_, 1)) => 3,
                    Some((0, _)) => 0,
                    Some((r, n)) if r + 1 == n => 2,
                    Some(_) => 1,
                };
                counts[slot] += 1;
            }
        }
        let worker = self.ctx.index.to_string();
        for (label, count) in LABELS.iter().zip(counts) {
            self.ctx
                .metrics
                .video_down_tracks
                .with_label_values(&[worker.as_str(), label])
                .set(count);
        }
        // Paused viewer time, in housekeeping intervals turned into seconds.
        self.paused_ms += counts[4] as u64 * HOUSEKEEPING_INTERVAL.as_millis() as u64;
        self.ctx
            .metrics
            .paused_seconds
            .inc_by(self.paused_ms / 1000);
        self.paused_ms %= 1000;
    }

    /// Re-evaluate simulcast layers and tell viewers' estimators what to probe for.
    pub(super) fn poll_layers(&mut self, now: Instant) {
        let mut probes = std::mem::take(&mut self.probes);
        probes.clear();
        for room in self.rooms.values_mut() {
            room.router.poll_layers(now, &mut probes);
        }
        let m = &self.ctx.metrics;
        for room in self.rooms.values_mut() {
            let (up, down) = room.router.take_switch_counts();
            self.media_counters
                .sequence_jumps
                .inc_by(room.router.take_sequence_jumps());
            m.malformed_packets
                .with_label_values(&["vp9"])
                .inc_by(room.router.take_lying_descriptors());
            m.layer_switches.with_label_values(&["up"]).inc_by(up);
            m.layer_switches.with_label_values(&["down"]).inc_by(down);
        }
        for (subscriber, request) in probes.drain(..) {
            if let Some(p) = self.participants.get_mut(&subscriber) {
                p.set_probe_target(request);
                self.dirty.push(subscriber);
            }
        }
        self.probes = probes;
    }
}

/// A publisher's packet as subscribers' streams write it.
fn forwarded_packet(
    track: TrackKey,
    layer: Option<str0m::media::Rid>,
    params: str0m::format::PayloadParams,
    packet: str0m::rtp::RtpPacket,
    vp8: Option<codec::Vp8Ids>,
    video: bool,
) -> Forwarded {
    let h = &packet.header;
    let ext = ExtensionValues {
        audio_level: h.ext_vals.audio_level,
        voice_activity: h.ext_vals.voice_activity,
        video_orientation: h.ext_vals.video_orientation,
        video_content_type: h.ext_vals.video_content_type,
        play_delay_min: h.ext_vals.play_delay_min,
        play_delay_max: h.ext_vals.play_delay_max,
        ..Default::default()
    };
    let descriptor = vp8
        .is_some()
        .then(|| Vp8Descriptor::parse(&packet.payload).ok())
        .flatten();
    Forwarded {
        incoming: Incoming {
            source: SourceKey {
                track,
                layer,
                ssrc: *h.ssrc,
            },
            seq: *packet.seq_no,
            timestamp: h.timestamp,
            clock_rate: params.spec().clock_rate.get(),
            arrival: packet.timestamp,
            sender_clock: packet.last_sender_info.map(|s| SenderClock {
                ntp: s.ntp_time,
                rtp: s.rtp_time.numer() as u32,
            }),
            vp8,
        },
        params,
        marker: h.marker,
        ext,
        vp8: descriptor,
        video,
        payload: packet.payload,
        red: None,
        descriptor: None,
    }
}

/// What a packet's dependency descriptor says of its layers, over what
/// the AV1 payload alone gave: spatial and temporal ids, switching point,
/// where the layer's frame starts and ends, and the layers' sizes.
fn apply_descriptor(parsed: &mut codec::PacketInfo, dd: &ReadDescriptor) {
    parsed.spatial = dd.spatial;
    parsed.temporal = dd.temporal;
    parsed.sync = dd.is_switch_point();
    parsed.starts_frame = dd.descriptor.start_of_frame || parsed.starts_keyframe;
    parsed.ends_frame = dd.descriptor.end_of_frame;
    if let Some(dims) = dd.spatial_dims() {
        parsed.spatial_dims = dims;
    }
    // A sequence header gives the stream's largest frame size, not this
    // layer's: with several spatial layers, sizes come from the structure.
    if dd.structure.spatial_layers() > 1 {
        parsed.dims = None;
    }
}
