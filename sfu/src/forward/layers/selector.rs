//! Which layer of a track each subscriber gets: the [`LayerSelector`] of a
//! down-track picks a target from the subscriber's bandwidth estimate (with
//! loss correction), its maximum width and the layers flowing; goes down at
//! once and up after a hold; pauses video when not even the lowest layer
//! fits; and decides per packet what flows (switching at the first packet
//! of the target's keyframe, temporal layers at frame starts).

use std::time::{Duration, Instant};

use super::{LayerChoice, LayerId, LayerView, LayerWish};

/// Video budget needed before upgrading, relative to the next layer's
/// bitrate. With [`VIDEO_SHARE`] that is an estimate of 1.25x the layer
/// plus the audio reserve: the rate probes go for. (A margin of 1.25 on the
/// budget put the probe rate on a 400 kbit/s link above what the link
/// carries: 2 of 11 Chromium runs stalled under the cap.)
const UPGRADE_MARGIN: f64 = 1.125;
/// Estimate needed to resume a paused video, relative to the lowest layer.
const RESUME_MARGIN: f64 = 1.1;
/// The lowest layer may exceed the budget by this much before video pauses:
/// a slightly congested picture beats a frozen one.
const PAUSE_TOLERANCE: f64 = 1.25;
/// A pause lasts at least this long (no flapping between paused and playing).
pub(super) const MIN_PAUSE: Duration = Duration::from_secs(2);
/// After a downgrade, no upgrade for at least this long.
const MIN_SETTLE_AFTER_DOWNGRADE: Duration = Duration::from_secs(10);
/// After a downgrade, no probing for this long (padding probes on a link
/// that just proved too small only congest it), however long upgrades wait:
/// probes are how the estimate finds out that the link got better.
pub(super) const PROBE_SETTLE: Duration = Duration::from_secs(4);
/// An estimate this many times what the next layer needs is not a
/// fluctuation around a threshold but a changed link (a cap lifted): the
/// oscillation penalty does not apply and the settle time is short.
const STRONG_MARGIN: f64 = 2.0;
const STRONG_SETTLE: Duration = Duration::from_secs(5);
/// A layer is trimmed to fewer temporal layers only while the video budget
/// is at least this share of its full rate; below, the next layer down at
/// full rate is taken. With media unpaced, a capped link that still gets
/// the layer at half its frame rate overflowed for 1-3 s (e2e layer-switch
/// test: the estimate fell to 617 kbit/s for a ~800 kbit/s layer, which
/// stayed at half rate until the estimate fell further).
const TEMPORAL_TRIM_FLOOR: f64 = 0.75;
/// Share of the estimate video may use (the rest: audio, RTCP, headroom).
const VIDEO_SHARE: f64 = 0.9;
const AUDIO_RESERVE_BPS: u64 = 40_000;
/// The downlink a subscriber is assumed to have before its first estimate
/// (its bandwidth estimator starts from the same figure): new viewers start
/// at the layer this allows and probe up, instead of starting at the top
/// and queueing seconds of video behind the pacer.
pub const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;
pub(super) const MIN_UPGRADE_HOLD: Duration = Duration::from_secs(2);
const MAX_UPGRADE_HOLD: Duration = Duration::from_secs(30);
/// An upgrade undone within this time counts as oscillation.
const OSCILLATION_WINDOW: Duration = Duration::from_secs(10);

/// Receiver-reported loss above which the estimate is capped by what got through.
const HEAVY_LOSS: f32 = 0.1;

/// The estimate corrected by loss the subscriber reports (RTCP RR): a link
/// that drops over 10% of what we send carries at most what got through,
/// whatever the delay-based estimate says. This makes downgrades on a
/// policed or shaped link (drops without long queues) fast.
pub fn loss_adjusted(estimate: Option<u64>, loss: f32, sending_bps: u64) -> Option<u64> {
    if loss <= HEAVY_LOSS || sending_bps == 0 {
        return estimate;
    }
    let delivered = (sending_bps as f64 * (1.0 - f64::from(loss.min(1.0)))).round() as u64;
    Some(estimate.map_or(delivered, |e| e.min(delivered)))
}

/// The estimate below which even the lowest layer is paused.
pub(super) fn pause_below(lowest: &LayerView) -> u64 {
    estimate_for((lowest.keep_bps(true) as f64 / PAUSE_TOLERANCE).ceil() as u64) + 1
}

/// The estimate a video down-track's layer is chosen by: the delay-based
/// `estimate`, capped by what got through when the subscriber reports heavy
/// loss ([`loss_adjusted`]), but never capped below what keeps the lowest
/// layer while the delay-based estimate itself keeps it. Loss alone does not
/// pause video: a keyframe burst into a shallow queue reports heavy loss
/// for one report, and a pause costs seconds of frozen picture (seen with
/// Chromium under a 250 kbit/s cap: 3-4 s paused after one lossy report).
pub fn selection_estimate(
    estimate: u64,
    loss: f32,
    sending_bps: u64,
    layers: &[LayerView],
) -> Option<u64> {
    let adjusted = loss_adjusted(Some(estimate), loss, sending_bps)?;
    let floor = layers.first().map_or(0, pause_below);
    Some(if estimate >= floor {
        adjusted.max(floor)
    } else {
        adjusted
    })
}

/// The estimate whose video budget is `budget` (the inverse of [`budget_of`]):
/// what a probe must reach for an upgrade the selector will make.
fn estimate_for(budget: u64) -> u64 {
    (budget as f64 / VIDEO_SHARE).ceil() as u64 + AUDIO_RESERVE_BPS
}

/// What video may use of a subscriber's estimate.
fn budget_of(estimate: u64) -> u64 {
    (estimate.saturating_sub(AUDIO_RESERVE_BPS) as f64 * VIDEO_SHARE) as u64
}

/// Per-down-track layer choice.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    /// Subscriber's wish: at most this many pixels wide.
    pub max_width: Option<u32>,
    /// A player's explicit wish (the WHEP layer extension).
    pub wish: LayerWish,
    /// The highest spatial layer the subscriber can decode of a scalable
    /// stream (an AV1 viewer without the dependency descriptor: the base).
    pub max_spatial: Option<u8>,
    /// The layer whose frames flow now (`None`: nothing flows yet).
    current: Option<LayerChoice>,
    /// The layer wanted (`None`: video paused for bandwidth).
    target: Option<LayerChoice>,
    paused: bool,
    upgrade_ok_since: Option<Instant>,
    pub(super) upgrade_hold: Duration,
    last_upgrade: Option<Instant>,
    last_downgrade: Option<Instant>,
    /// The first target was chosen before every layer's rate was measured
    /// (an unmeasured layer "fits"): the first choice made once all are
    /// measured corrects it, and is not a downgrade to settle after.
    blind_choice: bool,
    paused_at: Option<Instant>,
    target_temporal: u8,
    current_temporal: u8,
    /// The target is the best layer the publisher sent (within the width
    /// wish) at the last update: chosen for want of better, not for bandwidth.
    best_available: bool,
    /// The estimate when the target last changed.
    chosen_at_estimate: Option<u64>,
    /// When the first target was chosen.
    first_chosen_at: Option<Instant>,
    pub switches_up: u64,
    pub switches_down: u64,
}

/// What to do with a frame of some layer, for one down-track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameVerdict {
    Forward,
    /// Forward it: it is the keyframe the switch waited for.
    SwitchTo,
    Drop,
    /// Drop it, and a keyframe of this layer is needed to switch.
    DropNeedKeyframe,
}

impl Default for LayerSelector {
    fn default() -> Self {
        LayerSelector {
            max_width: None,
            wish: LayerWish::default(),
            max_spatial: None,
            current: None,
            target: None,
            paused: false,
            upgrade_ok_since: None,
            upgrade_hold: MIN_UPGRADE_HOLD,
            last_upgrade: None,
            last_downgrade: None,
            blind_choice: false,
            paused_at: None,
            target_temporal: u8::MAX,
            current_temporal: u8::MAX,
            best_available: false,
            chosen_at_estimate: None,
            first_chosen_at: None,
            switches_up: 0,
            switches_down: 0,
        }
    }
}

fn position(layers: &[LayerView], choice: &LayerChoice) -> Option<usize> {
    layers.iter().position(|l| l.choice() == *choice)
}

impl LayerSelector {
    /// The layers this subscriber may be given (its width limit and wish).
    fn allowed(&self, layers: &[LayerView]) -> Vec<LayerView> {
        let mut allowed = self.wish.allowed(layers, self.max_width);
        if let Some(max) = self.max_spatial {
            let lowest = allowed.first().copied();
            allowed.retain(|l| l.spatial <= max);
            if allowed.is_empty() {
                allowed.extend(lowest);
            }
        }
        allowed
    }

    pub fn with_max_width(max_width: Option<u32>) -> Self {
        LayerSelector {
            max_width,
            ..Default::default()
        }
    }

    pub fn current(&self) -> Option<&LayerChoice> {
        self.current.as_ref()
    }

    pub fn target(&self) -> Option<&LayerChoice> {
        self.target.as_ref()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The first layer was chosen less than `d` ago.
    pub fn first_chosen_within(&self, now: Instant, d: Duration) -> bool {
        self.first_chosen_at
            .is_some_and(|t| now.saturating_duration_since(t) < d)
    }

    /// A layer (or the pause) was chosen: after the first choice.
    pub fn has_chosen(&self) -> bool {
        self.target.is_some() || self.paused
    }

    /// Recompute the target. `estimate_bps` is the subscriber's downlink
    /// estimate (None when it has no congestion feedback: take the best).
    /// Returns true when the target changed.
    pub fn update(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        estimate_bps: Option<u64>,
    ) -> bool {
        let spatial_changed = self.update_spatial(now, layers, estimate_bps);
        // Within the chosen spatial layer, as many temporal layers as fit.
        let layer = self
            .target
            .and_then(|t| layers.iter().find(|l| l.choice() == t));
        let temporal = match (layer, estimate_bps) {
            (Some(l), Some(e)) => l
                .temporal_fit(budget_of(e))
                .min(self.wish.temporal_cap(l.max_tid)),
            (Some(l), None) => self.wish.temporal_cap(l.max_tid),
            (None, _) => 0,
        };
        let temporal_changed = temporal != self.target_temporal;
        self.target_temporal = temporal;
        spatial_changed || temporal_changed
    }

    /// Highest temporal layer flowing to this down-track now.
    pub fn current_temporal(&self) -> u8 {
        self.current_temporal
    }

    /// Highest temporal layer this down-track should get.
    pub fn target_temporal(&self) -> u8 {
        self.target_temporal
    }

    fn update_spatial(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        estimate_bps: Option<u64>,
    ) -> bool {
        let changed = self.choose_spatial(now, layers, estimate_bps);
        if changed {
            self.chosen_at_estimate = estimate_bps;
            if self.target.is_some() {
                self.first_chosen_at.get_or_insert(now);
            }
        }
        let allowed_top = self.allowed(layers).last().map(LayerView::choice);
        self.best_available = self.target.is_some() && self.target == allowed_top;
        changed
    }

    fn choose_spatial(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        estimate_bps: Option<u64>,
    ) -> bool {
        let before = self.target;
        if layers.is_empty() {
            self.target = None;
            return before.is_some();
        }
        // Layers the subscriber accepts; if all are too wide, the narrowest.
        let allowed = self.allowed(layers);
        let top = allowed.len() - 1;
        let Some(estimate) = estimate_bps.filter(|_| allowed.len() > 1) else {
            // Single layer or no estimate: nothing to choose by bandwidth.
            self.paused = false;
            self.target = Some(allowed[top].choice());
            return before != self.target;
        };
        let budget = budget_of(estimate);
        let fits = |l: &LayerView, margin: f64| (l.bitrate_bps as f64 * margin) as u64 <= budget;
        // A layer is kept while its base temporal layers fit (temporal layers
        // go before spatial ones) and the budget is not far below its full
        // rate (a sudden drop, a link suddenly capped: trimming frames would
        // leave it overflowing, so the layer below at full rate instead); the
        // lowest is kept unless it is far over budget (then pause).
        let best_fit = allowed
            .iter()
            .enumerate()
            .rposition(|(i, l)| {
                l.keep_bps(i == 0) <= budget
                    && (i == 0 || budget as f64 >= l.bitrate_bps as f64 * TEMPORAL_TRIM_FLOOR)
            })
            .or_else(|| {
                ((allowed[0].keep_bps(true) as f64 / PAUSE_TOLERANCE) as u64 <= budget).then_some(0)
            });
        // A new choice takes the best layer that fits at full rate.
        let full_fit = allowed.iter().rposition(|l| fits(l, 1.0));

        // Paused: resume only with a margin on the lowest layer.
        if self.paused || self.target.is_none() && self.current.is_some() {
            let paused_long_enough = self
                .paused_at
                .is_none_or(|t| now.saturating_duration_since(t) >= MIN_PAUSE);
            if paused_long_enough && fits(&allowed[0], RESUME_MARGIN) {
                self.paused = false;
                self.target = Some(allowed[0].choice());
                self.upgrade_ok_since = None;
            }
            return before != self.target;
        }
        let current_index = self.target.as_ref().and_then(|t| position(&allowed, t));
        let Some(current_index) = current_index else {
            // New down-track, or its layer stopped/was excluded: take the best
            // fit now. A new one starts at the lowest layer rather than
            // paused: its estimate may still be the initial guess.
            if before.is_none() && self.current.is_none() {
                self.blind_choice = allowed.iter().any(|l| !l.measured);
            }
            match full_fit.or(best_fit) {
                Some(i) => self.target = Some(allowed[i].choice()),
                None if before.is_none() && self.current.is_none() => {
                    self.target = Some(allowed[0].choice())
                }
                None => self.pause(now),
            }
            self.upgrade_ok_since = None;
            if before.is_some() && before != self.target {
                self.switches_down += 1; // fallback from a layer that stopped
                self.last_downgrade = Some(now);
            }
            return before != self.target;
        };
        if self.best_available
            && current_index < top
            && self.downgraded_before(now, OSCILLATION_WINDOW)
        {
            // Better layers appeared above one taken for want of better (a
            // relay brings its layers up one keyframe at a time; a publisher
            // adds its upper layers as its own estimate grows): take the best
            // that fits now, as a first choice would, without the hold.
            let best = allowed.iter().rposition(|l| fits(l, UPGRADE_MARGIN));
            if let Some(best) = best.filter(|&b| b > current_index) {
                self.target = Some(allowed[best].choice());
                self.switches_up += 1;
                self.upgrade_ok_since = None;
                self.last_upgrade = Some(now);
                return true;
            }
        }
        let was_blind = std::mem::take(&mut self.blind_choice);
        let measured = allowed.iter().all(|l| l.measured);
        self.blind_choice = was_blind && !measured; // still not all measured
        let blind = was_blind && measured;
        match best_fit {
            Some(i) if i < current_index && blind => {
                // The first choice, made blind, corrected on measured rates.
                self.target = Some(allowed[i].choice());
                self.upgrade_ok_since = None;
            }
            None => {
                self.pause(now);
                self.switches_down += 1;
                self.last_downgrade = Some(now);
            }
            Some(i) if i < current_index => {
                // Down at once; congestion that repeats makes later upgrades
                // wait longer. A link no worse than when the current layer
                // was chosen is no congestion (the layer grew past the
                // budget: an encoder still ramping up its rate): no settle
                // time after it, no longer hold.
                self.target = Some(allowed[i].choice());
                self.switches_down += 1;
                self.upgrade_ok_since = None;
                let congested = self.chosen_at_estimate.is_none_or(|then| estimate < then);
                if congested {
                    let recent_change = [self.last_upgrade, self.last_downgrade]
                        .into_iter()
                        .flatten()
                        .any(|t| now.saturating_duration_since(t) < OSCILLATION_WINDOW * 3);
                    if recent_change {
                        self.upgrade_hold = (self.upgrade_hold * 2).min(MAX_UPGRADE_HOLD);
                    }
                    self.last_downgrade = Some(now);
                }
            }
            Some(_)
                if current_index < top
                    && fits(&allowed[current_index + 1], UPGRADE_MARGIN)
                    && (self.settled_since_downgrade(now)
                        || fits(&allowed[current_index + 1], UPGRADE_MARGIN * STRONG_MARGIN)
                            && self.downgraded_before(now, STRONG_SETTLE)) =>
            {
                // Up one step, after the estimate allowed it for the hold time
                // (the shortest hold when the estimate is far above the need).
                let strong = fits(&allowed[current_index + 1], UPGRADE_MARGIN * STRONG_MARGIN);
                let hold = if strong {
                    MIN_UPGRADE_HOLD
                } else {
                    self.upgrade_hold
                };
                let since = *self.upgrade_ok_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= hold {
                    // One step: the layer the hold's sustained padding proved
                    // the link carries. The estimate may allow more, but a
                    // probe for the top (see `probe_rates`) passes a token
                    // bucket's burst at line rate and reads high: a 600
                    // kbit/s viewer read 1.2 Mbit/s and was switched from
                    // 320 wide straight to 1280 (e2e capped viewer).
                    self.target = Some(allowed[current_index + 1].choice());
                    self.switches_up += 1;
                    self.upgrade_ok_since = None;
                    self.last_upgrade = Some(now);
                }
            }
            Some(_) => {
                self.upgrade_ok_since = None;
                if self
                    .last_upgrade
                    .is_none_or(|t| now.saturating_duration_since(t) > OSCILLATION_WINDOW * 3)
                {
                    self.upgrade_hold = MIN_UPGRADE_HOLD;
                }
            }
        }
        before != self.target
    }

    /// True when the target changed less than `d` ago (reports about the
    /// link still describe the previous rate).
    pub fn changed_within(&self, now: Instant, d: Duration) -> bool {
        [self.last_upgrade, self.last_downgrade]
            .into_iter()
            .flatten()
            .any(|t| now.saturating_duration_since(t) < d)
    }

    /// The last downgrade (if any) is at least `d` ago.
    fn downgraded_before(&self, now: Instant, d: Duration) -> bool {
        self.last_downgrade
            .is_none_or(|t| now.saturating_duration_since(t) >= d)
    }

    /// No upgrade for twice the hold after a downgrade.
    fn settled_since_downgrade(&self, now: Instant) -> bool {
        let settle = (self.upgrade_hold * 2).max(MIN_SETTLE_AFTER_DOWNGRADE);
        self.last_downgrade
            .is_none_or(|t| now.saturating_duration_since(t) >= settle)
    }

    fn pause(&mut self, now: Instant) {
        self.paused_at = Some(now);
        self.paused = true;
        self.target = None;
        self.upgrade_ok_since = None;
    }

    /// How long the estimate has said the next layer fits while the
    /// selector waits out the hold before going up (None: no upgrade
    /// pending): the time to prove the link can carry that rate for real
    /// (sustained padding), not only in a burst.
    pub fn upgrade_pending_for(&self, now: Instant) -> Option<Duration> {
        self.upgrade_ok_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// The estimates wanted for the next layer up and for the top layer
    /// this subscriber may have (None at the top, and for [`PROBE_SETTLE`]
    /// after a downgrade: nothing to probe for).
    ///
    /// Probing for the top at once overshoots on a shaped link (seen in the
    /// Chromium scenario: an upgrade to the top layer under a 400 kbit/s
    /// cap): the next layer's rate is what is padded for during an upgrade's
    /// hold, and what the hold ends on. The top's is worth probing for while
    /// that hold lasts (the router's choice): str0m probes only for a wanted
    /// rate above its estimate, so an estimate just above the next layer's
    /// need stayed there, and a dip lost the hold; probed for the top, the
    /// next hold can start as soon as the step is made.
    pub fn probe_rates(&self, now: Instant, layers: &[LayerView]) -> Option<(u64, u64)> {
        if !self.downgraded_before(now, PROBE_SETTLE) {
            return None;
        }
        let top = self.allowed(layers).last().map(LayerView::choice)?;
        let allowed_top = position(layers, &top)?;
        let next = match &self.target {
            Some(t) => position(layers, t)? + 1,
            None => 0,
        };
        let need = |l: &LayerView| estimate_for((l.bitrate_bps as f64 * UPGRADE_MARGIN) as u64);
        let next = layers.get(next).filter(|_| next <= allowed_top).map(need)?;
        Some((next, layers.get(allowed_top).map_or(next, need).max(next)))
    }

    /// Decide about one packet of stream `id`, spatial layer `spatial` in
    /// it and temporal layer `tid`. Temporal layers change only where a
    /// picture starts (`starts_picture`), so no picture is cut in two: down
    /// at the next picture, up at the next one that is a switching point
    /// (`sync`: it depends only on the base layer) or a keyframe.
    pub fn on_packet(
        &mut self,
        id: &LayerId,
        spatial: u8,
        starts_keyframe: bool,
        starts_picture: bool,
        tid: u8,
        sync: bool,
    ) -> FrameVerdict {
        let verdict = self.on_frame(id, spatial, starts_picture, starts_keyframe);
        match verdict {
            FrameVerdict::SwitchTo => {
                self.current_temporal = self.target_temporal;
                verdict
            }
            FrameVerdict::Forward => {
                let down = self.current_temporal > self.target_temporal;
                let up_here = tid > self.current_temporal && tid <= self.target_temporal && sync;
                if (starts_picture && (down || up_here)) || starts_keyframe {
                    self.current_temporal = self.target_temporal;
                }
                if tid <= self.current_temporal {
                    verdict
                } else {
                    FrameVerdict::Drop
                }
            }
            FrameVerdict::Drop | FrameVerdict::DropNeedKeyframe => verdict,
        }
    }

    /// Decide about one packet of stream `id`, spatial layer `spatial`
    /// (temporal layers aside). A switch to another stream happens at the
    /// first packet of the target's keyframe; within a scalable stream, a
    /// switch down happens at the next picture (`starts_picture`), a
    /// switch up at the next keyframe (upper spatial layers predict from
    /// the layers below them at key pictures only, in the modes WebRTC
    /// encoders use). Spatial layers above the one flowing are dropped.
    pub fn on_frame(
        &mut self,
        id: &LayerId,
        spatial: u8,
        starts_picture: bool,
        is_keyframe: bool,
    ) -> FrameVerdict {
        let Some(target) = self.target else {
            // Paused: nothing flows.
            self.current = None;
            return FrameVerdict::Drop;
        };
        if let Some(current) = self.current.filter(|c| c.rid == target.rid && *c != target) {
            let at = if target.spatial < current.spatial {
                starts_picture
            } else {
                is_keyframe
            };
            if *id == target.rid && at {
                self.current = Some(target);
            }
        }
        let carries = |c: &LayerChoice| *id == c.rid && spatial <= c.spatial;
        if self.current == Some(target) {
            return if carries(&target) {
                FrameVerdict::Forward
            } else {
                FrameVerdict::Drop
            };
        }
        // Switching (or starting): wait for the target's keyframe, keep the
        // current layer flowing meanwhile so the picture never freezes.
        if let Some(current) = self.current.filter(|c| c.rid == *id) {
            return if carries(&current) {
                FrameVerdict::Forward
            } else if carries(&target) {
                FrameVerdict::DropNeedKeyframe // a spatial layer up: its key picture
            } else {
                FrameVerdict::Drop
            };
        }
        if *id == target.rid {
            if is_keyframe {
                self.current = Some(target);
                return FrameVerdict::SwitchTo;
            }
            return if carries(&target) {
                FrameVerdict::DropNeedKeyframe
            } else {
                FrameVerdict::Drop
            };
        }
        FrameVerdict::Drop
    }
}
