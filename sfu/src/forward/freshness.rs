//! Whether a publisher's audio frame reaches the forwarding core too late to
//! be worth forwarding (sans-IO: time is passed in).
//!
//! A worker that falls behind its socket reads audio seconds after it was
//! sent (a busy two-core machine: 4-11 s in the audio-500 benchmark).
//! Forwarding it then costs the same as forwarding it on time, so the worker
//! never catches up, and a listener hears the room seconds late, which is
//! worse than a gap. A [`Freshness`] per incoming audio line compares the
//! frame's media time with when it is processed: the difference is constant
//! while the worker keeps up (network transit plus the publisher's clock
//! offset) and grows by exactly the worker's backlog when it does not. Frames more than
//! [`STALE_AFTER`] later than the least late frame of the last 10-20 s are
//! stale and are not forwarded; dropping one costs only its reception.
//! Video is left alone: after a gap its subscribers would have to wait for
//! a keyframe, and a worker that stays behind (the debug-built nodes of the
//! cluster tests are) would keep closing them.
//!
//! A jump of the media time (a restarted encoder, a new stream on the line)
//! shifts the difference by any amount at once: beyond
//! [`DISCONTINUITY_AFTER`] the frame is taken as the new reference rather
//! than as late.

use std::time::{Duration, Instant};

/// A frame this much later than the reference is not forwarded.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

/// Later than this: the media time jumped, not the worker fell behind.
pub const DISCONTINUITY_AFTER: Duration = Duration::from_secs(10);

/// How long one minimum of the lateness is kept (the reference is the least
/// late frame of the current and the previous period): the publisher's
/// clock may drift from ours, a few ms per period at 100 ppm.
const PERIOD: Duration = Duration::from_secs(10);

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Forward,
    /// Drop it: it is `late_by` later than the reference; `first`: the
    /// frame before it was forwarded.
    Drop {
        first: bool,
        late_by: Duration,
    },
}

/// The lateness reference of one incoming audio line.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Our clock's origin for this line.
    epoch: Option<Instant>,
    /// When the current period started, and its least lateness (s).
    current: Option<(Instant, f64)>,
    /// The previous period's least lateness (s).
    previous: Option<f64>,
    /// The last frame was dropped.
    dropped: bool,
}

impl Freshness {
    /// Whether to forward a frame with media time `media_secs` (RTP time
    /// over its clock rate) processed at `now`.
    pub fn admit(&mut self, media_secs: f64, now: Instant) -> Admit {
        match self.excess(media_secs, now) {
            Some(late_by) if late_by > STALE_AFTER => Admit::Drop {
                first: !std::mem::replace(&mut self.dropped, true),
                late_by,
            },
            _ => {
                self.dropped = false;
                Admit::Forward
            }
        }
    }

    /// How much later than the reference the frame is (None: not later,
    /// or a discontinuity that became the new reference).
    fn excess(&mut self, media_secs: f64, now: Instant) -> Option<Duration> {
        let epoch = *self.epoch.get_or_insert(now);
        let lateness = now.saturating_duration_since(epoch).as_secs_f64() - media_secs;
        let reference = match (self.current, self.previous) {
            (Some((_, c)), Some(p)) => c.min(p),
            (Some((_, c)), None) => c,
            (None, _) => lateness,
        };
        let excess = lateness - reference;
        if excess > DISCONTINUITY_AFTER.as_secs_f64() {
            self.current = Some((now, lateness));
            self.previous = None;
            return None;
        }
        self.record(lateness, now);
        (excess > 0.0).then(|| Duration::from_secs_f64(excess))
    }

    fn record(&mut self, lateness: f64, now: Instant) {
        match &mut self.current {
            Some((started, least)) if now.saturating_duration_since(*started) < PERIOD => {
                *least = least.min(lateness);
            }
            Some((_, least)) => {
                self.previous = Some(*least);
                self.current = Some((now, lateness));
            }
            None => self.current = Some((now, lateness)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// Feed `n` frames 20 ms apart in media time, processed `behind(i)`
    /// after they were due; the stale ones' indices.
    fn run(
        f: &mut Freshness,
        t0: Instant,
        first: u32,
        n: u32,
        behind: impl Fn(u32) -> Duration,
    ) -> Vec<u32> {
        (first..first + n)
            .filter(|&i| {
                let media = (FRAME * i).as_secs_f64();
                let at = t0 + FRAME * i + behind(i);
                matches!(f.admit(media, at), Admit::Drop { .. })
            })
            .collect()
    }

    #[test]
    fn frames_on_time_or_jittery_are_fresh() {
        let mut f = Freshness::default();
        let t0 = Instant::now();
        // Up to 300 ms of jitter is not staleness.
        let stale = run(&mut f, t0, 0, 3000, |i| {
            Duration::from_millis(u64::from(i * 37 % 300))
        });
        assert!(stale.is_empty(), "{stale:?}");
    }

    #[test]
    fn a_growing_backlog_is_stale_past_a_second_and_fresh_once_caught_up() {
        let mut f = Freshness::default();
        let t0 = Instant::now();
        assert!(run(&mut f, t0, 0, 100, |_| Duration::ZERO).is_empty());
        // The worker falls behind by 10 ms per frame for 200 frames (up to 2 s).
        let stale = run(&mut f, t0, 100, 200, |i| {
            Duration::from_millis(u64::from(i - 99) * 10 + 5)
        });
        // Stale from the first frame processed more than 1 s late (1005 ms) on.
        assert_eq!(stale.first(), Some(&199), "{stale:?}");
        assert_eq!(stale.len(), 101);
        // Caught up: on time again.
        assert!(run(&mut f, t0, 300, 100, |_| Duration::ZERO).is_empty());
    }

    #[test]
    fn the_first_of_a_run_of_drops_says_so() {
        let mut f = Freshness::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(f.admit(0.0, at(0)), Admit::Forward);
        assert_eq!(f.admit(0.02, at(20)), Admit::Forward);
        let late = Duration::from_millis(1499);
        assert!(
            matches!(f.admit(0.04, at(1540)), Admit::Drop { first: true, late_by } if late_by >= late)
        );
        assert!(matches!(
            f.admit(0.06, at(1560)),
            Admit::Drop { first: false, .. }
        ));
        assert_eq!(f.admit(1.58, at(1580)), Admit::Forward);
        assert!(matches!(
            f.admit(0.10, at(2600)),
            Admit::Drop { first: true, .. }
        ));
    }

    #[test]
    fn a_jump_in_media_time_is_a_new_reference_not_lateness() {
        let mut f = Freshness::default();
        let t0 = Instant::now();
        assert!(run(&mut f, t0, 0, 100, |_| Duration::ZERO).is_empty());
        // The encoder restarts: media time goes back to 0 two seconds later
        // in our time (frames 0.. again, processed 2 s + 60 s after t0).
        let later = t0 + Duration::from_secs(62);
        assert!(run(&mut f, later, 0, 100, |_| Duration::ZERO).is_empty());
        // And a backlog after it is still seen.
        let stale = run(&mut f, later, 100, 100, |_| Duration::from_millis(1500));
        assert_eq!(stale.len(), 100);
    }

    #[test]
    fn the_reference_follows_a_drifting_clock() {
        let mut f = Freshness::default();
        let t0 = Instant::now();
        // The publisher's clock runs 0.1 % slow: over 40 minutes its frames
        // fall 2.4 s behind ours, a millisecond per second.
        let stale = run(&mut f, t0, 0, 120_000, |i| {
            Duration::from_micros(u64::from(i) * 20)
        });
        assert!(stale.is_empty(), "{} stale", stale.len());
    }
}
