//! Layer allocation over a room's subscribers: each subscriber's downlink
//! estimate and reported loss, split evenly over its video down-tracks,
//! drives every down-track's layer selector (and the probes asking for
//! more); the views of it for diagnostics, and dynacast's question of which
//! layers anyone could use.

use super::*;

impl Router {
    /// A subscriber's wish for a down-track's video width (`None`: no limit).
    pub fn set_max_width(&mut self, down: DownTrackKey, max_width: Option<u32>) {
        if let Some(dt) = self.down_tracks.get_mut(&down) {
            dt.selector.max_width = max_width;
        }
    }

    /// The highest spatial layer a down-track's subscriber can decode
    /// (None: any).
    pub fn set_max_spatial(&mut self, down: DownTrackKey, max: Option<u8>) {
        if let Some(dt) = self.down_tracks.get_mut(&down) {
            dt.selector.max_spatial = max;
        }
    }

    /// A player's explicit layer wish for a down-track (held until the
    /// next, also across a change of publisher).
    pub fn set_layer_wish(&mut self, down: DownTrackKey, wish: LayerWish) {
        if let Some(dt) = self.down_tracks.get_mut(&down) {
            dt.selector.wish = wish;
        }
    }

    /// A subscriber's downlink estimate changed.
    pub fn set_estimate(&mut self, subscriber: ParticipantId, bps: u64, now: Instant) {
        let e = self.estimates.entry(subscriber).or_insert(Estimate {
            bps,
            since: now,
            fell_at: None,
            reprobe_round: 0,
            reprobed_at: None,
        });
        if e.bps != bps {
            if bps < e.bps {
                e.fell_at = Some(now);
            }
            e.bps = bps;
            e.since = now;
        }
    }

    /// A subscriber asked for retransmissions.
    pub fn note_nacks(&mut self, subscriber: ParticipantId, now: Instant) {
        self.nacked_at.insert(subscriber, now);
    }

    /// A subscriber's receiver reports said this fraction of our packets was lost.
    pub fn set_loss(&mut self, subscriber: ParticipantId, loss: f32) {
        self.losses.insert(subscriber, loss);
    }

    /// Re-evaluate every video down-track's layer (estimates move, layers
    /// start and stop). A subscriber's estimate is one downlink shared by
    /// all the video it receives: each of its video down-tracks gets an
    /// equal share. Returns one probe request per subscriber: what it would
    /// receive if every track that wants to go up got its next layer.
    pub fn poll_layers(&mut self, now: Instant, probes: &mut Vec<(ParticipantId, ProbeRequest)>) {
        let mut video_tracks = std::mem::take(&mut self.video_shares);
        video_tracks.clear();
        for t in self.tracks.values().filter(|t| t.kind == MediaKind::Video) {
            for down in &t.down_tracks {
                *video_tracks.entry(down.subscriber).or_default() += 1;
            }
        }
        // Per subscriber: what it would receive with the next layers, any
        // probe wanted, any upgrade in its sustained-padding window, and
        // what it would receive with the top layers.
        let mut wanted: HashMap<ParticipantId, Wanted> = HashMap::new();
        for (key, t) in self
            .tracks
            .iter_mut()
            .filter(|(_, t)| t.kind == MediaKind::Video)
        {
            let ranked = t.layers.ranked(now);
            let mut clean_starts: Vec<LayerId> = vec![];
            for down in &t.down_tracks {
                let Some(dt) = self.down_tracks.get_mut(down).filter(|d| d.relay.is_none()) else {
                    continue;
                };
                if !t.layers.ready_for(&dt.selector, now) {
                    continue; // no first choice before the layers showed up
                }
                // What flows to this viewer (or would, at the lowest layer, while paused).
                let sending = dt
                    .selector
                    .current()
                    .and_then(|c| ranked.iter().find(|l| l.choice() == *c))
                    .or(ranked.first())
                    .map_or(0, |l| l.bitrate_bps);
                // Loss reported soon after a switch describes the old rate: ignore it.
                let loss = if dt.selector.changed_within(now, LOSS_AFTER_SWITCH) {
                    0.0
                } else {
                    self.losses.get(&down.subscriber).copied().unwrap_or(0.0)
                };
                let share = share_of(&self.estimates, &video_tracks, down.subscriber);
                let estimate = selection_estimate(share, loss, sending, &ranked);
                let before = (dt.selector.switches_up, dt.selector.switches_down);
                let target_before = dt.selector.target().copied();
                if dt.selector.update(now, &ranked, estimate) {
                    tracing::debug!(subscriber = down.subscriber, target = ?dt.selector.target(),
                        paused = dt.selector.is_paused(), ?estimate, layers = ?ranked, "layer target changed");
                    // Down within a scalable stream happens at the next
                    // picture, without a keyframe; but a link that lost
                    // packets on the way down leaves holes in the lower
                    // layers too, which its decoder may wait seconds on:
                    // a key picture starts it clean.
                    let nacked = self
                        .nacked_at
                        .get(&down.subscriber)
                        .is_some_and(|t| now.saturating_duration_since(*t) < RECENT_NACKS);
                    let lossy = self.losses.get(&down.subscriber).copied().unwrap_or(0.0)
                        >= LOSSY_DOWN_SWITCH
                        || nacked
                        || dt.selector.first_chosen_within(now, BEFORE_REPORTS);
                    if let (Some(b), Some(a), true) =
                        (target_before, dt.selector.target().copied(), lossy)
                    {
                        if a.rid == b.rid && a.spatial < b.spatial {
                            clean_starts.push(a.rid);
                        }
                    }
                }
                self.switches.0 += dt.selector.switches_up - before.0;
                self.switches.1 += dt.selector.switches_down - before.1;
                let probe = dt.selector.probe_rates(now, &ranked);
                let pending = dt.selector.upgrade_pending_for(now);
                let w = wanted.entry(down.subscriber).or_default();
                w.next_bps += probe.map_or(sending, |(next, _)| next);
                w.any |= probe.is_some();
                w.sustain |= probe.is_some() && pending.is_some_and(|d| d < SUSTAIN_WINDOW);
                // The top is probed for while an upgrade waits out its hold
                // (see `LayerSelector::probe_rates`).
                w.top_bps += match probe {
                    Some((_, top)) if pending.is_some() => top,
                    Some((next, _)) => next,
                    None => sending,
                };
            }
            clean_starts.dedup();
            for rid in clean_starts {
                let cause = KeyframeCause::LossyDownSwitch;
                self.pending_actions
                    .extend(t.request_keyframe(*key, rid, cause, now));
            }
        }
        probes.extend(wanted.into_iter().map(|(subscriber, w)| {
            let estimate = self.estimates.get_mut(&subscriber);
            let frozen = estimate
                .as_ref()
                .is_some_and(|e| now.saturating_duration_since(e.since) >= FROZEN_ESTIMATE_AFTER);
            let target = w.any.then_some(w.next_bps);
            let mut request =
                ProbeRequest::new(target, w.sustain, estimate.as_ref().map(|e| e.bps), frozen);
            request.top_bps = w.any.then_some(w.top_bps);
            if let Some(e) = estimate {
                request.round = reprobe_round(e, request.top_bps, now);
            }
            (subscriber, request)
        }));
        self.video_shares = video_tracks;
    }

    /// Layer switches (up, down) since the last call.
    pub fn take_switch_counts(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.switches)
    }

    /// The selector state of a down-track (metrics, tests).
    pub fn selector(&self, down: DownTrackKey) -> Option<&LayerSelector> {
        self.down_tracks.get(&down).map(|d| &d.selector)
    }

    /// Rank (0 = lowest) of the layer a video down-track receives, with the
    /// number of layers; None when nothing flows.
    pub fn layer_rank(&self, down: DownTrackKey, now: Instant) -> Option<(usize, usize)> {
        let dt = self.down_tracks.get(&down)?;
        let t = self.tracks.get(&dt.source?)?;
        let current = dt.selector.current()?;
        let ranked = t.layers.ranked(now);
        let rank = ranked.iter().position(|l| l.choice() == *current)?;
        Some((rank, ranked.len()))
    }

    /// What one subscriber receives, line by line (the admin API's answer
    /// to "why is Alice's video blurry").
    pub fn subscription_views(
        &self,
        subscriber: ParticipantId,
        now: Instant,
    ) -> Vec<SubscriptionView> {
        let mut views: Vec<SubscriptionView> = self
            .down_tracks
            .iter()
            .filter(|(k, _)| k.subscriber == subscriber)
            .map(|(k, d)| {
                let available = d
                    .source
                    .and_then(|s| self.tracks.get(&s))
                    .filter(|t| t.kind == MediaKind::Video)
                    .map(|t| t.layers.ranked(now))
                    .unwrap_or_default();
                let current = d
                    .selector
                    .current()
                    .and_then(|c| available.iter().find(|l| l.choice() == *c))
                    .copied();
                SubscriptionView {
                    mid: k.mid,
                    kind: d.kind,
                    source: d.source,
                    current,
                    target: d.selector.target().copied(),
                    paused: d.selector.is_paused(),
                    max_width: d.selector.max_width,
                    available,
                    switches_up: d.selector.switches_up,
                    switches_down: d.selector.switches_down,
                }
            })
            .collect();
        views.sort_by_cached_key(|v| v.mid.to_string());
        views
    }

    /// The subscriber's last downlink estimate (bits per second).
    pub fn estimate_of(&self, subscriber: ParticipantId) -> Option<u64> {
        self.estimates.get(&subscriber).map(|e| e.bps)
    }

    /// Video down-tracks (for metrics).
    pub fn video_down_tracks(&self) -> impl Iterator<Item = DownTrackKey> + '_ {
        self.down_tracks
            .iter()
            .filter(|(_, d)| d.kind == MediaKind::Video && d.source.is_some() && d.relay.is_none())
            .map(|(k, _)| *k)
    }

    /// Dynacast: which simulcast layers of `track` anyone could use now.
    /// A layer is wanted when some subscriber's width limit admits it (or
    /// it is the lowest one); with no subscriber nothing is wanted. Layers
    /// a subscriber may need after its bandwidth grows stay wanted: only
    /// width wishes and absence of subscribers pause a layer. `None` while
    /// the track is not simulcast or not all its layers were seen yet.
    pub fn wanted_layers(&self, track: TrackKey) -> Option<Vec<(LayerId, bool)>> {
        let t = self.tracks.get(&track)?;
        let (mut known, complete) = t.layers.known();
        if t.kind != MediaKind::Video || known.len() < 2 || !complete {
            return None;
        }
        known.sort_by_key(|(_, w)| *w);
        let downs: Vec<&DownTrack> = t
            .down_tracks
            .iter()
            .filter_map(|d| self.down_tracks.get(d))
            .collect();
        let lowest = known.first().map(|(id, _)| *id);
        Some(
            known
                .iter()
                .map(|(id, width)| {
                    // A relay's downstream says which layers it wants.
                    let wanted = downs
                        .iter()
                        .any(|d| match (&d.relay, d.selector.max_width) {
                            (Some(gate), _) => gate.wants(id),
                            (None, None) => true,
                            (None, Some(max)) => *width <= max || Some(*id) == lowest,
                        });
                    (*id, wanted)
                })
                .collect(),
        )
    }
}

/// One video down-track's share of its subscriber's downlink estimate (the
/// initial guess until the first estimate arrives), split evenly over the
/// subscriber's video down-tracks counted in `shares`.
pub(super) fn share_of(
    estimates: &HashMap<ParticipantId, Estimate>,
    shares: &HashMap<ParticipantId, u64>,
    subscriber: ParticipantId,
) -> u64 {
    let estimate = estimates
        .get(&subscriber)
        .map_or(INITIAL_ESTIMATE_BPS, |e| e.bps);
    estimate / shares.get(&subscriber).copied().unwrap_or(1).max(1)
}

/// What one subscriber's video down-tracks add up to want (see
/// [`Router::poll_layers`]).
#[derive(Default)]
struct Wanted {
    /// With every track that wants to go up on its next layer.
    next_bps: u64,
    /// With the top layers for the tracks waiting out an upgrade's hold.
    top_bps: u64,
    /// Any track wants to go up.
    any: bool,
    /// Any upgrade is in its sustained-padding window.
    sustain: bool,
}

/// The probe round for a subscriber that wants `target` bits per second:
/// a new round every [`REPROBE_EVERY`] while its estimate stays below it
/// without falling (a falling estimate is a link that is full: probing it
/// again only adds to its queue); the first probe for a target is the
/// estimator's own (round unchanged).
fn reprobe_round(e: &mut Estimate, target: Option<u64>, now: Instant) -> u32 {
    match target {
        Some(target) if e.bps < target => {
            let since = *e.reprobed_at.get_or_insert(now);
            let since = e.fell_at.map_or(since, |fell| fell.max(since));
            if now.saturating_duration_since(since) >= REPROBE_EVERY {
                e.reprobe_round = e.reprobe_round.wrapping_add(1);
                e.reprobed_at = Some(now);
            }
        }
        _ => e.reprobed_at = None,
    }
    e.reprobe_round
}
