//! Unrepaired gaps in one incoming video stream (a publisher's layer).
//!
//! Packets are forwarded as they come, gaps included: str0m NACKs the
//! publisher, and a repair that arrives is forwarded into the slot the
//! subscribers kept for it. Only a gap that stays open longer than
//! [`UNREPAIRED_AFTER`] means the subscribers' pictures cannot be mended,
//! and then (once per such gap) a keyframe is asked for. A keyframe makes
//! every gap before it irrelevant.
//!
//! Plain data with time passed in; no IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a missing packet may take to be repaired (NACK and resend: a
/// few round trips) before the picture is given up and a keyframe asked.
pub const UNREPAIRED_AFTER: Duration = Duration::from_millis(400);

/// Missing packets remembered; a larger hole is a jump, reported at once.
const MAX_MISSING: u64 = 512;

/// What a packet says about the stream's gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapVerdict {
    /// Nothing to do: no gap, or one that may still be repaired.
    Fine,
    /// A gap stayed open past [`UNREPAIRED_AFTER`]: ask for a keyframe.
    Unrepaired,
    /// The sequence jumped further than any loss (an encoder restart, a
    /// hostile sender): ask for a keyframe unless this packet starts one.
    Jump,
}

/// Missing sequence numbers of one stream, oldest first.
#[derive(Debug, Clone, Default)]
pub struct GapWatch {
    highest: Option<u64>,
    /// `(sequence number, when it was found missing)`, ascending in both.
    missing: VecDeque<(u64, Instant)>,
    /// Gaps reported as unrepaired.
    pub unrepaired: u64,
}

impl GapWatch {
    /// Packet `seq` (extended) arrived; `starts_keyframe` when it begins a
    /// keyframe. A gap that has now stayed open too long, or a jump, is
    /// reported once (the gaps are then forgotten).
    pub fn on_packet(&mut self, seq: u64, starts_keyframe: bool, now: Instant) -> GapVerdict {
        match self.highest {
            None => self.highest = Some(seq),
            Some(h) if seq > h => {
                let lost = seq - h - 1;
                self.highest = Some(seq);
                if lost > MAX_MISSING {
                    self.missing.clear();
                    return GapVerdict::Jump;
                } else {
                    self.missing.extend((h + 1..seq).map(|s| (s, now)));
                    let excess = self.missing.len().saturating_sub(MAX_MISSING as usize);
                    self.missing.drain(..excess);
                }
            }
            Some(_) => {
                if let Ok(i) = self.missing.binary_search_by_key(&seq, |(s, _)| *s) {
                    self.missing.remove(i);
                }
            }
        }
        if starts_keyframe {
            let before = self.missing.partition_point(|(s, _)| *s < seq);
            self.missing.drain(..before);
        }
        let expired = self
            .missing
            .front()
            .is_some_and(|(_, found)| now.saturating_duration_since(*found) >= UNREPAIRED_AFTER);
        if expired {
            self.missing.clear();
            self.unrepaired += 1;
            return GapVerdict::Unrepaired;
        }
        GapVerdict::Fine
    }

    /// Packets missing now.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_repaired_gap_asks_for_nothing() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        assert_eq!(GapVerdict::Fine, g.on_packet(1, true, t0));
        assert_eq!(GapVerdict::Fine, g.on_packet(3, false, t0 + ms(10)));
        assert_eq!(g.missing(), 1);
        // The resend of 2 comes 100 ms later.
        assert_eq!(GapVerdict::Fine, g.on_packet(2, false, t0 + ms(110)));
        assert_eq!(g.missing(), 0);
        assert_eq!(GapVerdict::Fine, g.on_packet(4, false, t0 + ms(600)));
    }

    #[test]
    fn a_gap_that_stays_open_asks_once() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        g.on_packet(1, true, t0);
        g.on_packet(4, false, t0); // 2 and 3 lost
        assert_eq!(GapVerdict::Fine, g.on_packet(5, false, t0 + ms(399)));
        assert_eq!(g.on_packet(6, false, t0 + ms(400)), GapVerdict::Unrepaired);
        assert_eq!(
            GapVerdict::Fine,
            g.on_packet(7, false, t0 + ms(800)),
            "reported once"
        );
        assert_eq!(g.unrepaired, 1);
    }

    #[test]
    fn a_keyframe_forgives_the_gaps_before_it() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        g.on_packet(1, true, t0);
        g.on_packet(3, false, t0);
        g.on_packet(10, true, t0 + ms(100)); // 4..9 lost, then a keyframe
        assert_eq!(g.missing(), 0);
        assert_eq!(GapVerdict::Fine, g.on_packet(11, false, t0 + ms(900)));
    }

    #[test]
    fn a_huge_hole_is_a_jump_and_forgets_the_gaps() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        g.on_packet(1, true, t0);
        assert_eq!(g.on_packet(5_000, false, t0), GapVerdict::Jump);
        let mut h = GapWatch::default();
        h.on_packet(1, true, t0);
        assert_eq!(h.on_packet(5_000, true, t0), GapVerdict::Jump);
        assert_eq!(h.missing(), 0);
    }

    #[test]
    fn reordering_and_duplicates_are_harmless() {
        let t0 = Instant::now();
        let mut g = GapWatch::default();
        g.on_packet(10, false, t0);
        g.on_packet(12, false, t0);
        g.on_packet(11, false, t0 + ms(5));
        g.on_packet(11, false, t0 + ms(6));
        g.on_packet(9, false, t0 + ms(7)); // older than the first: ignored
        assert_eq!(g.missing(), 0);
        assert_eq!(GapVerdict::Fine, g.on_packet(13, false, t0 + ms(1000)));
    }
}
