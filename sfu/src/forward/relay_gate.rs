//! The gate of a relay down-track: a downstream server (another node of the
//! cluster) receives *every* layer of a simulcast track, each on a stream of
//! its own (an rid of the relay's media line), and chooses per viewer
//! itself. Streams are handed out in the order layers first show a
//! keyframe and stay with their layer, so a stream never changes content
//! mid-picture; the downstream server ranks layers by what they carry, not
//! by rid. Each stream opens at a keyframe of its layer; packets flow as
//! they come, gaps included (the downstream server NACKs and asks for
//! keyframes itself).

use super::layers::LayerId;

/// What to do with one frame on a relay down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayVerdict {
    /// Write it on stream `slot`; `opened`: the stream (re)starts here, at
    /// a keyframe, after carrying nothing.
    Forward { slot: usize, opened: bool },
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

    /// Decide about one packet of `layer` (`starts_keyframe`: the first
    /// packet of a keyframe).
    pub fn on_packet(&mut self, layer: &LayerId, starts_keyframe: bool) -> RelayVerdict {
        let slot = match self.slots.iter().position(|l| l == layer) {
            Some(s) => s,
            None if !starts_keyframe => return RelayVerdict::DropNeedKeyframe,
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
        let opened = starts_keyframe && !self.open[slot];
        if starts_keyframe {
            self.open[slot] = true;
        }
        if self.open[slot] {
            RelayVerdict::Forward { slot, opened }
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

    fn fwd(slot: usize, opened: bool) -> RelayVerdict {
        RelayVerdict::Forward { slot, opened }
    }

    #[test]
    fn layers_get_sticky_streams_opened_by_keyframes() {
        let mut g = RelayGate::new(3);
        assert_eq!(
            g.on_packet(&rid("h"), false),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(g.on_packet(&rid("f"), true), fwd(0, true));
        assert_eq!(g.on_packet(&rid("q"), true), fwd(1, true));
        assert_eq!(g.on_packet(&rid("f"), false), fwd(0, false));
        assert_eq!(g.on_packet(&rid("f"), true), fwd(0, false));
        assert_eq!(g.on_packet(&rid("h"), true), fwd(2, true));
        assert_eq!(g.layer_of(1), Some(rid("q")));
        // A fourth layer has no stream.
        assert_eq!(g.on_packet(&rid("x"), true), RelayVerdict::Drop);
    }

    #[test]
    fn unwanted_streams_carry_nothing_and_reopen_at_a_keyframe() {
        let mut g = RelayGate::new(2);
        g.on_packet(&rid("a"), true);
        g.on_packet(&rid("b"), true);
        g.set_wanted(Some(vec![1]));
        assert_eq!(g.on_packet(&rid("a"), false), RelayVerdict::Drop);
        assert_eq!(g.on_packet(&rid("b"), false), fwd(1, false));
        g.set_wanted(None);
        assert_eq!(
            g.on_packet(&rid("a"), false),
            RelayVerdict::DropNeedKeyframe
        );
        assert_eq!(g.on_packet(&rid("a"), true), fwd(0, true));
        g.reset();
        assert_eq!(g.on_packet(&rid("b"), true), fwd(0, true));
    }
}
