//! The gate of a relay down-track: a downstream server (another node of the
//! cluster) receives *every* layer of a simulcast track, each on a stream of
//! its own (an rid of the relay's media line), and chooses per viewer
//! itself. Streams are handed out in the order layers first show a
//! keyframe and stay with their layer, so a stream never changes content
//! mid-picture; the downstream server ranks layers by what they carry, not
//! by rid. Each stream opens at a keyframe of its layer and closes after an
//! unrepaired gap until the next one.

use super::layers::LayerId;

/// What to do with one frame on a relay down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayVerdict {
    /// Write it on stream `slot`.
    Forward(usize),
    /// Drop it and ask the publisher for a keyframe of its layer.
    DropNeedKeyframe,
    /// Drop it (no stream left for this layer).
    Drop,
}

#[derive(Debug, Clone)]
pub struct RelayGate {
    /// The layer each stream carries, by slot.
    slots: Vec<LayerId>,
    open: Vec<bool>,
    streams: usize,
    /// The streams the downstream wants (None: all). An unwanted stream
    /// carries nothing; wanted again, it reopens at its layer's keyframe.
    wanted: Option<Vec<usize>>,
}

impl RelayGate {
    /// A gate for a media line with `streams` streams (its rids).
    pub fn new(streams: usize) -> RelayGate {
        RelayGate {
            slots: Vec::with_capacity(streams),
            open: Vec::with_capacity(streams),
            streams: streams.max(1),
            wanted: None,
        }
    }

    /// The downstream wants only these streams (None: all).
    pub fn set_wanted(&mut self, wanted: Option<Vec<usize>>) {
        self.wanted = wanted;
    }

    /// Whether the downstream wants `layer` (a layer with no stream yet
    /// is wanted: it must show a keyframe to get one).
    pub fn wants(&self, layer: &LayerId) -> bool {
        match (&self.wanted, self.slots.iter().position(|l| l == layer)) {
            (Some(wanted), Some(slot)) => wanted.contains(&slot),
            _ => true,
        }
    }

    /// A new source track: streams are handed out again.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.open.clear();
    }

    pub fn on_frame(&mut self, layer: &LayerId, keyframe: bool, contiguous: bool) -> RelayVerdict {
        let slot = match self.slots.iter().position(|l| l == layer) {
            Some(s) => s,
            None if !keyframe => return RelayVerdict::DropNeedKeyframe,
            None if self.slots.len() < self.streams => {
                self.slots.push(*layer);
                self.open.push(false);
                self.slots.len() - 1
            }
            None => return RelayVerdict::Drop,
        };
        if self.wanted.as_ref().is_some_and(|w| !w.contains(&slot)) {
            self.open[slot] = false;
            return RelayVerdict::Drop;
        }
        if keyframe {
            self.open[slot] = true;
        } else if !contiguous {
            self.open[slot] = false;
        }
        if self.open[slot] {
            RelayVerdict::Forward(slot)
        } else {
            RelayVerdict::DropNeedKeyframe
        }
    }

    /// The layer stream `slot` carries (for the downstream's keyframe requests).
    pub fn layer_of(&self, slot: usize) -> Option<LayerId> {
        self.slots.get(slot).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Rid;

    fn rid(s: &str) -> LayerId {
        Some(Rid::from(s))
    }

    #[test]
    fn layers_get_sticky_streams_opened_by_keyframes() {
        let mut g = RelayGate::new(3);
        assert_eq!(
            g.on_frame(&rid("h"), false, true),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(g.on_frame(&rid("f"), true, true), RelayVerdict::Forward(0));
        assert_eq!(g.on_frame(&rid("q"), true, true), RelayVerdict::Forward(1));
        assert_eq!(g.on_frame(&rid("f"), false, true), RelayVerdict::Forward(0));
        assert_eq!(g.on_frame(&rid("h"), true, true), RelayVerdict::Forward(2));
        assert_eq!(g.layer_of(1), Some(rid("q")));
        // A fourth layer has no stream.
        assert_eq!(g.on_frame(&rid("x"), true, true), RelayVerdict::Drop);
    }

    #[test]
    fn unwanted_streams_carry_nothing_and_reopen_at_a_keyframe() {
        let mut g = RelayGate::new(2);
        g.on_frame(&rid("a"), true, true);
        g.on_frame(&rid("b"), true, true);
        g.set_wanted(Some(vec![1]));
        assert_eq!(g.on_frame(&rid("a"), false, true), RelayVerdict::Drop);
        assert_eq!(g.on_frame(&rid("b"), false, true), RelayVerdict::Forward(1));
        g.set_wanted(None);
        assert_eq!(
            g.on_frame(&rid("a"), false, true),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(g.on_frame(&rid("a"), true, true), RelayVerdict::Forward(0));
    }

    #[test]
    fn a_gap_closes_only_its_stream_until_a_keyframe() {
        let mut g = RelayGate::new(2);
        g.on_frame(&rid("a"), true, true);
        g.on_frame(&rid("b"), true, true);
        assert_eq!(
            g.on_frame(&rid("a"), false, false),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(
            g.on_frame(&rid("a"), false, true),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(g.on_frame(&rid("b"), false, true), RelayVerdict::Forward(1));
        assert_eq!(g.on_frame(&rid("a"), true, true), RelayVerdict::Forward(0));
        g.reset();
        assert_eq!(g.on_frame(&rid("b"), true, true), RelayVerdict::Forward(0));
    }
}
