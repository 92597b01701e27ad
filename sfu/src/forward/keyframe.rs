//! Keyframe request throttling per publisher track.
//!
//! Subscribers send PLI/FIR often (each new subscriber, each loss burst),
//! and a publisher that gets a request per subscriber would send nothing but
//! keyframes. A [`KeyframeThrottle`] lets at most one request through per
//! interval and coalesces the ones in between into a single deferred request,
//! so no subscriber's request is lost: it is answered at most one interval late.
//!
//! A subscriber that waits for its first picture is served sooner: its
//! request goes out once [`WAITING_INTERVAL`] has passed since the last one
//! (a join storm still costs at most five keyframes a second), because the
//! time to a first picture is what a viewer notices most.

use std::time::{Duration, Instant};

/// Default minimum gap between two keyframe requests to one publisher track.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Minimum gap before a request for a subscriber waiting for its first picture.
pub const WAITING_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
    /// A deferred request, with the gap it keeps from the last one.
    pending: Option<Duration>,
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL)
    }
}

impl KeyframeThrottle {
    pub fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last_sent: None,
            pending: None,
        }
    }

    /// A keyframe is wanted. Returns true when the request should be sent now;
    /// otherwise it is remembered and [`poll`](Self::poll) releases it later.
    pub fn request(&mut self, now: Instant) -> bool {
        self.request_within(now, self.interval)
    }

    /// A subscriber waits for its first picture: as [`request`](Self::request),
    /// with the shorter [`WAITING_INTERVAL`].
    pub fn request_for_waiting(&mut self, now: Instant) -> bool {
        self.request_within(now, WAITING_INTERVAL.min(self.interval))
    }

    fn request_within(&mut self, now: Instant, interval: Duration) -> bool {
        if self.may_send(now, interval) {
            self.last_sent = Some(now);
            self.pending = None;
            true
        } else {
            self.pending = Some(self.pending.map_or(interval, |p| p.min(interval)));
            false
        }
    }

    /// A keyframe arrived from the publisher: deferred requests are satisfied.
    pub fn keyframe_received(&mut self) {
        self.pending = None;
    }

    /// Returns true when a deferred request is due now.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.pending {
            Some(interval) if self.may_send(now, interval) => {
                self.last_sent = Some(now);
                self.pending = None;
                true
            }
            _ => false,
        }
    }

    /// When a deferred request becomes due, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (Some(interval), Some(t)) => Some(t + interval),
            _ => None,
        }
    }

    fn may_send(&self, now: Instant, interval: Duration) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_request_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        // 20 subscribers ask within 400 ms: none goes through at once...
        for i in 0..20 {
            assert!(!k.request(t0 + Duration::from_millis(20 * i)));
        }
        assert_eq!(k.deadline(), Some(t0 + KEYFRAME_REQUEST_INTERVAL));
        assert!(!k.poll(t0 + Duration::from_millis(499)));
        // ...and exactly one deferred request is released at 500 ms.
        assert!(k.poll(t0 + Duration::from_millis(500)));
        assert!(!k.poll(t0 + Duration::from_millis(501)));
        assert_eq!(k.deadline(), None);
        // After the interval, a new request goes straight through.
        assert!(k.request(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn keyframe_cancels_deferred_request() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(100)));
        k.keyframe_received();
        assert!(!k.poll(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_waiting_subscriber_is_served_sooner() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.request(t0));
        // A subscriber PLIs: deferred to 500 ms. A new viewer then waits for
        // its first picture: the deferred request moves up to 200 ms.
        assert!(!k.request(t0 + Duration::from_millis(50)));
        assert!(!k.request_for_waiting(t0 + Duration::from_millis(100)));
        assert_eq!(k.deadline(), Some(t0 + WAITING_INTERVAL));
        assert!(k.poll(t0 + WAITING_INTERVAL));
        // Once 200 ms have passed, a waiting viewer's request goes at once.
        assert!(k.request_for_waiting(t0 + Duration::from_millis(400)));
        assert!(
            !k.request(t0 + Duration::from_millis(500)),
            "500 ms since the last"
        );
    }
}
