//! What a subscriber's bandwidth estimator is asked for: the rate to probe
//! toward (the next layers it wants) and the padding floor it keeps up.
//! The router decides both per subscriber in `poll_layers`; the worker
//! hands them to str0m (`Bwe::set_bitrate`). Plain data, time passed in.

use std::time::Duration;

/// What a subscriber's bandwidth estimator should probe for, and how much
/// it should send at least (media, padding where media falls short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeRequest {
    /// The rate it would receive if every track that wants to go up got
    /// its next layer (None: nothing to probe for).
    pub target_bps: Option<u64>,
    /// The padding floor: the estimator pads up to this rate (never above
    /// its own estimate) when media alone sends less.
    pub floor_bps: u64,
    /// The rate it would receive with the top layers it may have while an
    /// upgrade waits out its hold (else `target_bps`): the rate probed for.
    pub top_bps: Option<u64>,
    /// How many times the probe for `target_bps` has been asked for again
    /// (see [`REPROBE_EVERY`]); the rate handed to the estimator is the
    /// top (else the target) plus this many bits per second.
    pub round: u32,
}

/// A subscriber whose estimate stays below the rate it wants is probed
/// again this often. str0m 0.25's probe controller probes for an
/// allocation only when the wanted rate rises, and its delay-based
/// estimate grows to at most 1.5x what was acknowledged: after a cap was
/// lifted, a viewer on its lowest layer (~160 kbit/s) took 8 s to climb
/// from 400 kbit/s to the 690 its next layer needed, with one probe sent
/// while the cap still held. Each round raises the wanted rate by 1 bit/s,
/// which the controller takes as a new allocation to probe for. (The
/// Chromium SVC trial's lift back to the top layer: 6.9, 9.9, 7.0 s with
/// rounds every 2 s, 6.9, 5.3, 7.6 s every 1 s, same loss under the cap;
/// str0m does not probe while its estimate is loss-limited, nor for a
/// wanted rate below its estimate: see `top_bps`, which brought it to
/// 4.5-5.5 s, two steps of one hold each.)
pub const REPROBE_EVERY: Duration = Duration::from_secs(1);

impl ProbeRequest {
    /// The rate handed to the bandwidth estimator as the one wanted (the
    /// top, else the target, raised by the round so each round probes
    /// again; str0m probes at most twice its estimate whatever is wanted).
    pub fn desired_bps(&self) -> u64 {
        self.top_bps
            .max(self.target_bps)
            .map_or(0, |t| t.saturating_add(u64::from(self.round)))
    }
}

/// Padding kept up while nothing is being probed for (keeps RTX state and
/// NAT bindings warm, gives the estimator something to measure).
pub const MIN_PADDING_BPS: u64 = 100_000;

/// A subscriber's estimate that has not changed for this long while it
/// wants a higher layer is taken as frozen. str0m 0.25's delay-based
/// estimate grows to at most 1.5 x the acknowledged rate, and its probe
/// controller re-reads whether it may probe only when the estimate changes.
/// Seen after a lifted 400 kbit/s cap: a viewer sending ~200 k of its
/// lowest layer stayed at exactly 318 k for 30 s and never went back up.
pub const FROZEN_ESTIMATE_AFTER: Duration = Duration::from_secs(3);

/// A subscriber whose estimate froze sends at least this share of it
/// (padding where media falls short): the 1.5 x ceiling then sits above the
/// estimate, which moves again, and str0m re-reads whether it may probe.
/// Only a frozen estimate gets it: padding toward an estimate that a short
/// probe pushed above a token bucket's rate fills the bucket's queue (a
/// stall seen in CI when every viewer wanting more was filled).
const FILL_SHARE: f64 = 0.75;

/// Padding up to an upgrade's target lasts this long at the start of its
/// hold: long enough to pass a token bucket's burst and show as a rising
/// delay, short enough not to overflow its queue (a 400 kbit/s link with a
/// 300 ms queue overflowed during a 2 s sustained hold). The rest of the
/// hold gives the estimator time to react before the switch.
pub const SUSTAIN_WINDOW: Duration = Duration::from_millis(700);

impl ProbeRequest {
    /// The request for a subscriber that wants `target_bps` (None: nothing
    /// to go up to) with its current estimate. While an upgrade waits on the
    /// estimate (`sustain`), the floor is the whole target, so a link that
    /// only lets short probe bursts through (a token bucket) shows its real
    /// rate before a bigger layer is switched to. A frozen estimate gets
    /// [`FILL_SHARE`] of itself.
    pub fn new(
        target_bps: Option<u64>,
        sustain: bool,
        estimate_bps: Option<u64>,
        estimate_frozen: bool,
    ) -> Self {
        let floor_bps = match target_bps {
            Some(target) if sustain => target,
            Some(target) if estimate_frozen => {
                let fill = (estimate_bps.unwrap_or(0) as f64 * FILL_SHARE) as u64;
                fill.min(target).max(MIN_PADDING_BPS)
            }
            _ => MIN_PADDING_BPS,
        };
        Self {
            target_bps,
            floor_bps,
            top_bps: target_bps,
            round: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_that_wants_more_keeps_a_frozen_estimate_moving() {
        // Nothing to go up to: only the keep-alive padding.
        let idle = ProbeRequest::new(None, false, Some(2_000_000), true);
        assert_eq!(idle.floor_bps, MIN_PADDING_BPS);
        // Wanting more with a moving estimate: no extra padding (an estimate
        // above a token bucket's rate would fill its queue).
        let moving = ProbeRequest::new(Some(465_000), false, Some(318_000), false);
        assert_eq!(moving.floor_bps, MIN_PADDING_BPS);
        // Wanting more with a frozen estimate: three quarters of it go out.
        let frozen = ProbeRequest::new(Some(465_000), false, Some(318_000), true);
        assert_eq!(frozen.floor_bps, 238_500);
        // ...never above the target itself, never below the keep-alive.
        assert_eq!(
            ProbeRequest::new(Some(300_000), false, Some(1_000_000), true).floor_bps,
            300_000
        );
        assert_eq!(
            ProbeRequest::new(Some(465_000), false, Some(50_000), true).floor_bps,
            MIN_PADDING_BPS
        );
        // An upgrade in its sustained window: the link carries the whole target.
        assert_eq!(
            ProbeRequest::new(Some(465_000), true, Some(500_000), false).floor_bps,
            465_000
        );
    }
}
