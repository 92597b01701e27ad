//! Media-time continuity for a down-track whose source changes.
//!
//! A WHEP viewer follows the room: when one publisher leaves and another
//! takes over, the new source's RTP timestamps start somewhere unrelated.
//! Written as they are, the viewer's jitter buffer would see time jump back
//! or far ahead and stall. A [`Timeline`] keeps one continuous media clock per
//! down-track: the first frame after a source change is placed just after the
//! last frame sent (plus the wall-clock time that passed), and later frames
//! keep the new source's spacing.

use std::time::Instant;

use super::router::TrackKey;

#[derive(Debug, Clone, Default)]
pub struct Timeline {
    source: Option<TrackKey>,
    /// Added to the source's media time (in its clock, wrapping).
    offset: u64,
    last_out: Option<(u64, Instant)>,
}

impl Timeline {
    /// Map a frame's media time (`time` ticks at `clock_rate` Hz) from
    /// `source` onto this down-track's continuous timeline.
    pub fn map(&mut self, source: TrackKey, time: u64, clock_rate: u32, now: Instant) -> u64 {
        if self.source != Some(source) {
            self.source = Some(source);
            self.offset = match self.last_out {
                // Continue after the last frame, advanced by the wall-clock gap
                // (at least one tick so time never stands still or goes back).
                Some((last, at)) => {
                    let gap = now.saturating_duration_since(at).as_micros() as u64;
                    let ticks = (gap * u64::from(clock_rate) / 1_000_000).max(1);
                    last.wrapping_add(ticks).wrapping_sub(time)
                }
                None => 0,
            };
        }
        let out = time.wrapping_add(self.offset);
        self.last_out = Some((out, now));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use str0m::media::Mid;

    fn key(p: u64) -> TrackKey {
        TrackKey {
            publisher: p,
            mid: Mid::from("1"),
        }
    }

    #[test]
    fn first_source_passes_through() {
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        assert_eq!(tl.map(key(1), 123_000, 90_000, t0), 123_000);
        assert_eq!(
            tl.map(key(1), 126_000, 90_000, t0 + Duration::from_millis(33)),
            126_000
        );
    }

    #[test]
    fn source_change_continues_forward_with_wall_clock_gap() {
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        tl.map(key(1), 9_000_000, 90_000, t0);
        // The next publisher starts at a small timestamp, 500 ms later.
        let t1 = t0 + Duration::from_millis(500);
        let first = tl.map(key(2), 3_000, 90_000, t1);
        assert_eq!(first, 9_000_000 + 45_000);
        // Its spacing is kept.
        let second = tl.map(key(2), 6_000, 90_000, t1 + Duration::from_millis(33));
        assert_eq!(second - first, 3_000);
    }

    #[test]
    fn never_goes_back_even_without_a_gap() {
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        tl.map(key(1), 500, 48_000, t0);
        let next = tl.map(key(2), 10, 48_000, t0);
        assert!(next > 500);
    }
}
