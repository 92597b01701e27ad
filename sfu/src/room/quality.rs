//! Connection quality of a participant, from what the server observes of
//! its link: loss in both directions, round-trip time and whether packets
//! arrive at all. Sans-IO: the worker passes in the figures.

use std::time::Duration;

use signaling::room_protocol::Quality;

/// What the server knows about one participant's link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkReport {
    /// Fraction (0..1) of the participant's packets we did not receive.
    pub ingress_loss: f32,
    /// Fraction (0..1) of our packets the participant reported lost.
    pub egress_loss: f32,
    /// Round-trip time, when known.
    pub rtt: Option<Duration>,
    /// Time since the last datagram from the participant.
    pub silent_for: Duration,
    /// ICE/DTLS is up.
    pub connected: bool,
}

/// Nothing heard for this long means the link is lost (ICE consent
/// checks arrive every few seconds even without media).
pub const LOST_AFTER: Duration = Duration::from_secs(6);

/// Score a link: excellent under 2 % loss and 300 ms RTT, good under 8 %
/// and 600 ms, poor above; lost when nothing arrives.
pub fn score(link: &LinkReport) -> Quality {
    if !link.connected || link.silent_for >= LOST_AFTER {
        return Quality::Lost;
    }
    let loss = link.ingress_loss.max(link.egress_loss);
    let rtt_ms = link.rtt.map_or(0, |r| r.as_millis());
    if loss < 0.02 && rtt_ms < 300 {
        Quality::Excellent
    } else if loss < 0.08 && rtt_ms < 600 {
        Quality::Good
    } else {
        Quality::Poor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(loss: f32, rtt_ms: u64) -> LinkReport {
        LinkReport {
            ingress_loss: loss,
            egress_loss: 0.0,
            rtt: Some(Duration::from_millis(rtt_ms)),
            silent_for: Duration::ZERO,
            connected: true,
        }
    }

    #[test]
    fn loss_and_rtt_grade_the_link() {
        assert_eq!(score(&link(0.0, 20)), Quality::Excellent);
        assert_eq!(score(&link(0.05, 20)), Quality::Good);
        assert_eq!(score(&link(0.0, 400)), Quality::Good);
        assert_eq!(score(&link(0.2, 20)), Quality::Poor);
        let mut l = link(0.0, 20);
        l.egress_loss = 0.1;
        assert_eq!(score(&l), Quality::Poor, "the worse direction counts");
    }

    #[test]
    fn silence_or_no_connection_is_lost() {
        let mut l = link(0.0, 20);
        l.silent_for = LOST_AFTER;
        assert_eq!(score(&l), Quality::Lost);
        let mut l = link(0.0, 20);
        l.connected = false;
        assert_eq!(score(&l), Quality::Lost);
    }
}
