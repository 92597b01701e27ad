//! Which of the other participants' tracks a room member subscribes to,
//! and how wide it wants each video, apart from how it says so: the
//! signaling (`room`, LiveKit's room signalling) asks for a decision on every
//! track it learns of and carries it out in its own messages, so another
//! signaling can reuse the same choices.

use str0m::media::MediaKind;

/// What a member wants of the others' tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribePolicy {
    pub audio: bool,
    pub video: bool,
    /// Subscribe to the video of at most this many others, the first ones
    /// announced (None: every video). Audio is not limited.
    pub visible: Option<usize>,
    /// Ask for each subscribed video at most this wide (a grid tile).
    pub tile_width: Option<u32>,
}

impl SubscribePolicy {
    /// Every track of the kinds asked for, at full size.
    pub fn all(audio: bool, video: bool) -> SubscribePolicy {
        SubscribePolicy {
            audio,
            video,
            visible: None,
            tile_width: None,
        }
    }
}

/// What to do with one announced track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Skip,
    /// Subscribe; for video, at most `max_width` wide when given.
    Subscribe {
        max_width: Option<u32>,
    },
}

/// One member's subscriptions so far.
#[derive(Debug, Clone)]
pub struct Subscriber {
    policy: SubscribePolicy,
    videos: usize,
}

impl Subscriber {
    pub fn new(policy: SubscribePolicy) -> Subscriber {
        Subscriber { policy, videos: 0 }
    }

    /// A track of `kind` was announced (`own`: the member's own). Each
    /// track is decided once: a video subscribed here counts towards
    /// `visible`.
    pub fn decide(&mut self, own: bool, kind: MediaKind) -> Decision {
        if own {
            return Decision::Skip;
        }
        match kind {
            MediaKind::Audio if self.policy.audio => Decision::Subscribe { max_width: None },
            MediaKind::Video
                if self.policy.video && self.policy.visible.is_none_or(|n| self.videos < n) =>
            {
                self.videos += 1;
                Decision::Subscribe {
                    max_width: self.policy.tile_width,
                }
            }
            _ => Decision::Skip,
        }
    }

    /// Videos subscribed so far.
    pub fn videos(&self) -> usize {
        self.videos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: Decision = Decision::Subscribe { max_width: None };

    #[test]
    fn everything_but_the_own_tracks_by_default() {
        let mut s = Subscriber::new(SubscribePolicy::all(true, true));
        assert_eq!(s.decide(true, MediaKind::Video), Decision::Skip);
        for _ in 0..30 {
            assert_eq!(s.decide(false, MediaKind::Video), SUB);
            assert_eq!(s.decide(false, MediaKind::Audio), SUB);
        }
        assert_eq!(s.videos(), 30);
        let mut listener = Subscriber::new(SubscribePolicy::all(true, false));
        assert_eq!(listener.decide(false, MediaKind::Video), Decision::Skip);
        assert_eq!(listener.decide(false, MediaKind::Audio), SUB);
    }

    #[test]
    fn visible_limits_the_videos_not_the_audio_and_tiles_are_narrow() {
        let mut s = Subscriber::new(SubscribePolicy {
            visible: Some(2),
            tile_width: Some(320),
            ..SubscribePolicy::all(true, true)
        });
        let tile = Decision::Subscribe {
            max_width: Some(320),
        };
        assert_eq!(s.decide(false, MediaKind::Video), tile);
        assert_eq!(s.decide(true, MediaKind::Video), Decision::Skip);
        assert_eq!(s.decide(false, MediaKind::Video), tile);
        assert_eq!(s.decide(false, MediaKind::Video), Decision::Skip);
        for _ in 0..5 {
            assert_eq!(s.decide(false, MediaKind::Audio), SUB);
        }
        assert_eq!(s.videos(), 2);
    }
}
