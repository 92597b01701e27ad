//! Keyframe requests that come from subscribers (a PLI or FIR on a
//! down-track, mapped to the publisher's layer it receives) and the
//! deferred requests each track's throttle releases when due.

use super::*;

impl Router {
    /// A subscriber asked for a keyframe on one of its down-tracks (on
    /// stream `slot` of a relay's).
    pub fn keyframe_requested(
        &mut self,
        down: DownTrackKey,
        slot: Option<usize>,
        now: Instant,
    ) -> Option<RouterAction> {
        let dt = self.down_tracks.get(&down)?;
        let track = dt.source?;
        let layer = match &dt.relay {
            Some(gate) => gate.layer_of(slot.unwrap_or(0))?,
            None => dt
                .selector
                .current()
                .or(dt.selector.target())
                .and_then(|c| c.rid),
        };
        let t = self.tracks.get_mut(&track)?;
        t.request_keyframe(track, layer, KeyframeCause::SubscriberRequest, now)
    }

    /// Release deferred keyframe requests that are due (and those layer
    /// allocation decided on).
    pub fn poll_keyframes(&mut self, now: Instant, actions: &mut Vec<RouterAction>) {
        actions.append(&mut self.pending_actions);
        for (key, t) in &mut self.tracks {
            for (layer, throttle) in &mut t.keyframes {
                if throttle.poll(now) {
                    actions.push(RouterAction::RequestKeyframe {
                        track: *key,
                        layer: *layer,
                        cause: KeyframeCause::Deferred,
                    });
                }
            }
        }
    }

    /// The earliest time a deferred keyframe request becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .flat_map(|t| t.keyframes.values())
            .filter_map(|k| k.deadline())
            .min()
    }
}
