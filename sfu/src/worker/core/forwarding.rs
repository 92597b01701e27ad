//! The worker's packet path and its control loop: forwarding a
//! publisher's frame to the subscribers the router names, carrying out
//! router decisions (keyframe requests), and the periodic simulcast layer
//! evaluation with its metrics.

use super::*;
use crate::forward::freshness::Admit;
use crate::metrics::FrameCounters;
use str0m::format::CodecExtra;

/// How often simulcast layer choices are re-evaluated.
pub(super) const LAYER_INTERVAL: Duration = Duration::from_millis(250);

impl WorkerCore {
    /// Whether an audio frame is forwarded or was read so late that
    /// forwarding it would only keep the worker behind (see
    /// [`crate::forward::freshness`]).
    fn admit(
        &mut self,
        publisher: ParticipantId,
        data: &str0m::media::MediaData,
        now: Instant,
    ) -> Admit {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return Admit::Forward;
        };
        let media_secs = data.time.numer() as f64 / data.time.frequency().get() as f64;
        p.audio_freshness
            .entry(data.mid)
            .or_default()
            .admit(media_secs, now)
    }

    /// The packet path: one publisher frame to every subscriber of its track.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        room_name: &Arc<str>,
        data: str0m::media::MediaData,
    ) {
        let is_video = data.params.spec().codec.is_video();
        self.frame_counters.received[FrameCounters::index(is_video)].inc();
        // Audio only: a video stream resumes only at a keyframe, so dropping
        // its stale frames would need the subscribers closed until one.
        if !is_video {
            if let Admit::Drop { first, late_by } = self.admit(publisher, &data, now) {
                self.frame_counters.stale_audio.inc();
                if first {
                    tracing::info!(
                        participant = publisher,
                        mid = %data.mid,
                        late_ms = late_by.as_millis() as u64,
                        "dropping stale audio: read too late to forward (the worker is behind)"
                    );
                }
                return;
            }
        }
        if is_video {
            self.watch_frame_order(publisher, room_name, &data);
        }
        if !is_video {
            if self.is_muted(publisher, data.mid) {
                return; // muted (possibly by an administrator): nothing leaves
            }
            if let (Some(level), Some(room)) =
                (data.ext_vals.audio_level, self.rooms.get_mut(room_name))
            {
                let track = TrackKey {
                    publisher,
                    mid: data.mid,
                };
                room.speakers.observe(track, level, now);
            }
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let track = TrackKey {
            publisher,
            mid: data.mid,
        };
        let keyframe = is_video && data.is_keyframe();
        let frame = FrameInfo {
            layer: data.rid,
            keyframe,
            contiguous: data.contiguous,
            size: data.data.len(),
            dims: keyframe
                .then(|| picture_size(data.params.spec().codec, &data.data))
                .flatten(),
            temporal: match data.codec_extra {
                CodecExtra::Vp8(e) => e.layer_index,
                _ => 0,
            },
            sync: matches!(data.codec_extra, CodecExtra::Vp8(e) if e.sync),
        };
        let action = room
            .router
            .route_frame(track, &frame, now, &mut self.receivers);
        let mut receivers = std::mem::take(&mut self.receivers);
        let relays = receivers.len();
        for &(down, slot) in room.router.relay_receivers() {
            receivers.push(down);
            self.relay_slots.push(slot);
        }
        let mut written = 0u64;
        for (i, down) in receivers.iter().enumerate() {
            let Some(sub) = self.participants.get_mut(&down.subscriber) else {
                continue;
            };
            // Relay lines (after the plain ones) name the stream to write on.
            let rid = match i.checked_sub(relays) {
                Some(r) => {
                    let slot = self.relay_slots.get(r).copied().unwrap_or(0);
                    match sub
                        .relay_rids
                        .get(&down.mid)
                        .and_then(|rids| rids.get(slot))
                    {
                        Some(rid) => Some(*rid),
                        None => continue,
                    }
                }
                None => None,
            };
            match sub.write_frame(down.mid, rid, track, &data) {
                WriteOutcome::Written => {
                    written += 1;
                    self.dirty.push(down.subscriber);
                }
                WriteOutcome::NoCompatibleCodec => {
                    tracing::debug!(subscriber = down.subscriber, pt = %data.pt, "no compatible codec");
                }
                WriteOutcome::NotWritable => {}
                WriteOutcome::Backlogged => {
                    tracing::debug!(subscriber = down.subscriber, mid = %down.mid,
                        "send queue backed up: frame skipped, waiting for a keyframe");
                    room.router.close_until_keyframe(*down);
                }
            }
        }
        receivers.clear();
        self.relay_slots.clear();
        self.receivers = receivers;
        if written > 0 {
            self.frame_counters.forwarded[FrameCounters::index(is_video)].inc_by(written);
        }
        if let Some(action) = action {
            self.execute(action);
        }
    }

    pub(super) fn watch_frame_order(
        &mut self,
        publisher: ParticipantId,
        room: &Arc<str>,
        data: &str0m::media::MediaData,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let monitor = p.frame_order.entry((data.mid, data.rid)).or_default();
        let before = monitor.reordered();
        let first = monitor.observe(data.time.numer());
        if monitor.reordered() > before {
            self.ctx
                .metrics
                .reordered_frames
                .with_label_values(&[room])
                .inc();
        }
        if first {
            tracing::warn!(room = %room, identity = %p.identity, codec = ?data.params.spec().codec,
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
