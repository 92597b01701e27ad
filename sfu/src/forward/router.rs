//! Routing inside one room: publisher tracks to subscriber down-tracks.
//!
//! A *track* is one incoming media line of a publisher ([`TrackKey`]). A
//! *down-track* is one outgoing media line of a subscriber. The router binds
//! down-tracks to tracks, answers "who receives this frame" on the packet
//! path, and returns every other decision (request a keyframe, a down-track
//! lost its source) as values for the worker to carry out.
//!
//! WHEP viewers have one audio and one video down-track that *follow the
//! room*: they bind to the room's oldest live track of their kind, and when
//! it ends they move to the next one, so a viewer who arrived before the
//! publisher, or outlives it, keeps playing whoever publishes.
//!
//! Video down-tracks start closed and open at a keyframe, and close again
//! when the publisher's stream has an unrepaired gap: frames are
//! re-packetized per subscriber, so a decoder would not notice the loss and
//! would show corrupt pictures instead of waiting for a keyframe.

use std::collections::HashMap;
use std::time::Instant;

use str0m::media::{MediaKind, Mid};

use super::keyframe::KeyframeThrottle;
use super::ParticipantId;

/// One published media line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub publisher: ParticipantId,
    pub mid: Mid,
}

/// One subscriber media line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DownTrackKey {
    pub subscriber: ParticipantId,
    pub mid: Mid,
}

/// Why a keyframe is requested from a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCause {
    /// A down-track was (re)bound and waits for its first picture.
    NewSubscriber,
    /// A subscriber sent PLI/FIR.
    SubscriberRequest,
    /// The publisher's stream had a gap that retransmission did not repair.
    PublisherGap,
    /// A deferred, throttled request became due.
    Deferred,
}

impl KeyframeCause {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeCause::NewSubscriber => "new_subscriber",
            KeyframeCause::SubscriberRequest => "subscriber_request",
            KeyframeCause::PublisherGap => "publisher_gap",
            KeyframeCause::Deferred => "deferred",
        }
    }
}

/// A decision for the worker to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterAction {
    /// Ask the publisher of `track` for a keyframe.
    RequestKeyframe {
        track: TrackKey,
        cause: KeyframeCause,
    },
    /// `down` now receives `track`.
    Bound { down: DownTrackKey, track: TrackKey },
    /// `down` lost its source and nothing replaced it.
    Unbound { down: DownTrackKey, track: TrackKey },
}

#[derive(Debug)]
struct Track {
    kind: MediaKind,
    created_seq: u64,
    keyframes: KeyframeThrottle,
    down_tracks: Vec<DownTrackKey>,
}

#[derive(Debug)]
struct DownTrack {
    kind: MediaKind,
    source: Option<TrackKey>,
    /// Video: waiting for a keyframe before frames may flow.
    closed: bool,
}

/// The routing table of one room.
#[derive(Debug, Default)]
pub struct Router {
    tracks: HashMap<TrackKey, Track>,
    down_tracks: HashMap<DownTrackKey, DownTrack>,
    next_seq: u64,
}

impl Router {
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// The kinds of the tracks `publisher` has.
    pub fn track_kinds_of(&self, publisher: ParticipantId) -> Vec<MediaKind> {
        self.tracks
            .iter()
            .filter(|(k, _)| k.publisher == publisher)
            .map(|(_, t)| t.kind)
            .collect()
    }

    /// Whether any down-track of `subscriber` has a source.
    pub fn is_receiving(&self, subscriber: ParticipantId) -> bool {
        self.down_tracks
            .iter()
            .any(|(d, dt)| d.subscriber == subscriber && dt.source.is_some())
    }

    pub fn source_of(&self, down: DownTrackKey) -> Option<TrackKey> {
        self.down_tracks.get(&down).and_then(|d| d.source)
    }

    pub fn subscribers_of(&self, track: TrackKey) -> &[DownTrackKey] {
        self.tracks
            .get(&track)
            .map(|t| t.down_tracks.as_slice())
            .unwrap_or(&[])
    }

    /// A publisher added a media line. Unbound down-tracks of that kind bind to it.
    pub fn add_track(&mut self, key: TrackKey, kind: MediaKind, now: Instant) -> Vec<RouterAction> {
        if self.tracks.contains_key(&key) {
            return vec![];
        }
        self.next_seq += 1;
        self.tracks.insert(
            key,
            Track {
                kind,
                created_seq: self.next_seq,
                keyframes: KeyframeThrottle::default(),
                down_tracks: vec![],
            },
        );
        let waiting: Vec<DownTrackKey> = self
            .down_tracks
            .iter()
            .filter(|(d, dt)| {
                dt.source.is_none() && dt.kind == kind && d.subscriber != key.publisher
            })
            .map(|(d, _)| *d)
            .collect();
        let mut actions = vec![];
        for down in waiting {
            self.bind(down, key, now, &mut actions);
        }
        actions
    }

    /// A subscriber added a media line that follows the room.
    pub fn add_down_track(
        &mut self,
        down: DownTrackKey,
        kind: MediaKind,
        now: Instant,
    ) -> Vec<RouterAction> {
        self.down_tracks.insert(
            down,
            DownTrack {
                kind,
                source: None,
                closed: kind == MediaKind::Video,
            },
        );
        let mut actions = vec![];
        if let Some(track) = self.oldest_track(kind, down.subscriber) {
            self.bind(down, track, now, &mut actions);
        }
        actions
    }

    /// A participant left: its tracks end (their down-tracks move on or go
    /// unbound) and its down-tracks are dropped.
    pub fn remove_participant(&mut self, id: ParticipantId, now: Instant) -> Vec<RouterAction> {
        let mut actions = vec![];
        let own_downs: Vec<DownTrackKey> = self
            .down_tracks
            .keys()
            .filter(|d| d.subscriber == id)
            .copied()
            .collect();
        for down in own_downs {
            self.unbind(down);
            self.down_tracks.remove(&down);
        }
        let own_tracks: Vec<TrackKey> = self
            .tracks
            .keys()
            .filter(|t| t.publisher == id)
            .copied()
            .collect();
        for key in own_tracks {
            let Some(track) = self.tracks.remove(&key) else {
                continue;
            };
            for down in track.down_tracks {
                if let Some(dt) = self.down_tracks.get_mut(&down) {
                    dt.source = None;
                }
                match self.oldest_track(track.kind, down.subscriber) {
                    Some(next) => self.bind(down, next, now, &mut actions),
                    None => actions.push(RouterAction::Unbound { down, track: key }),
                }
            }
        }
        actions
    }

    /// Who receives a frame of `track` now. `is_keyframe` opens closed video
    /// down-tracks. Returns an action when a keyframe should be requested.
    pub fn route_frame(
        &mut self,
        track: TrackKey,
        is_keyframe: bool,
        contiguous: bool,
        now: Instant,
        receivers: &mut Vec<DownTrackKey>,
    ) -> Option<RouterAction> {
        receivers.clear();
        let t = self.tracks.get_mut(&track)?;
        let is_video = t.kind == MediaKind::Video;
        if is_keyframe {
            t.keyframes.keyframe_received();
        }
        let mut want_keyframe = None;
        for down in &t.down_tracks {
            let Some(dt) = self.down_tracks.get_mut(down) else {
                continue;
            };
            if is_video {
                if !contiguous && !is_keyframe {
                    dt.closed = true;
                    want_keyframe = Some(KeyframeCause::PublisherGap);
                }
                if is_keyframe {
                    dt.closed = false;
                }
                if dt.closed {
                    want_keyframe.get_or_insert(KeyframeCause::NewSubscriber);
                    continue;
                }
            }
            receivers.push(*down);
        }
        let cause = want_keyframe?;
        t.keyframes
            .request(now)
            .then_some(RouterAction::RequestKeyframe { track, cause })
    }

    /// A subscriber asked for a keyframe on one of its down-tracks.
    pub fn keyframe_requested(&mut self, down: DownTrackKey, now: Instant) -> Option<RouterAction> {
        let track = self.source_of(down)?;
        let t = self.tracks.get_mut(&track)?;
        t.keyframes
            .request(now)
            .then_some(RouterAction::RequestKeyframe {
                track,
                cause: KeyframeCause::SubscriberRequest,
            })
    }

    /// Release deferred keyframe requests that are due.
    pub fn poll_keyframes(&mut self, now: Instant, actions: &mut Vec<RouterAction>) {
        for (key, t) in &mut self.tracks {
            if t.keyframes.poll(now) {
                actions.push(RouterAction::RequestKeyframe {
                    track: *key,
                    cause: KeyframeCause::Deferred,
                });
            }
        }
    }

    /// The earliest time a deferred keyframe request becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter_map(|t| t.keyframes.deadline())
            .min()
    }

    fn oldest_track(&self, kind: MediaKind, exclude: ParticipantId) -> Option<TrackKey> {
        self.tracks
            .iter()
            .filter(|(k, t)| t.kind == kind && k.publisher != exclude)
            .min_by_key(|(_, t)| t.created_seq)
            .map(|(k, _)| *k)
    }

    fn unbind(&mut self, down: DownTrackKey) {
        let Some(source) = self
            .down_tracks
            .get_mut(&down)
            .and_then(|d| d.source.take())
        else {
            return;
        };
        if let Some(t) = self.tracks.get_mut(&source) {
            t.down_tracks.retain(|d| *d != down);
        }
    }

    fn bind(
        &mut self,
        down: DownTrackKey,
        track: TrackKey,
        now: Instant,
        actions: &mut Vec<RouterAction>,
    ) {
        self.unbind(down);
        let (Some(dt), Some(t)) = (self.down_tracks.get_mut(&down), self.tracks.get_mut(&track))
        else {
            return;
        };
        dt.source = Some(track);
        dt.closed = dt.kind == MediaKind::Video;
        t.down_tracks.push(down);
        actions.push(RouterAction::Bound { down, track });
        if dt.kind == MediaKind::Video && t.keyframes.request(now) {
            actions.push(RouterAction::RequestKeyframe {
                track,
                cause: KeyframeCause::NewSubscriber,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mid(s: &str) -> Mid {
        Mid::from(s)
    }
    fn track(p: u64, m: &str) -> TrackKey {
        TrackKey {
            publisher: p,
            mid: mid(m),
        }
    }
    fn down(s: u64, m: &str) -> DownTrackKey {
        DownTrackKey {
            subscriber: s,
            mid: mid(m),
        }
    }
    fn keyframe_requests(actions: &[RouterAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, RouterAction::RequestKeyframe { .. }))
            .count()
    }

    #[test]
    fn viewer_before_publisher_binds_when_publisher_arrives() {
        let t0 = Instant::now();
        let mut r = Router::default();
        assert!(r
            .add_down_track(down(2, "1"), MediaKind::Video, t0)
            .is_empty());
        assert!(r
            .add_down_track(down(2, "0"), MediaKind::Audio, t0)
            .is_empty());
        let a = r.add_track(track(1, "0"), MediaKind::Audio, t0);
        assert_eq!(
            a,
            vec![RouterAction::Bound {
                down: down(2, "0"),
                track: track(1, "0")
            }]
        );
        let v = r.add_track(track(1, "1"), MediaKind::Video, t0);
        assert!(v.contains(&RouterAction::Bound {
            down: down(2, "1"),
            track: track(1, "1")
        }));
        assert_eq!(
            keyframe_requests(&v),
            1,
            "a new video subscriber asks for a keyframe"
        );
    }

    #[test]
    fn video_flows_only_from_a_keyframe() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_track(track(1, "v"), MediaKind::Video, t0);
        r.add_down_track(down(2, "v"), MediaKind::Video, t0);
        r.add_down_track(down(3, "v"), MediaKind::Video, t0);
        let mut rx = vec![];
        // Deltas before a keyframe reach nobody (and the request is throttled).
        let a = r.route_frame(
            track(1, "v"),
            false,
            true,
            t0 + Duration::from_millis(10),
            &mut rx,
        );
        assert!(rx.is_empty());
        assert!(a.is_none(), "throttled: a request went out at bind time");
        r.route_frame(
            track(1, "v"),
            true,
            true,
            t0 + Duration::from_millis(40),
            &mut rx,
        );
        assert_eq!(rx.len(), 2);
        r.route_frame(
            track(1, "v"),
            false,
            true,
            t0 + Duration::from_millis(70),
            &mut rx,
        );
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn publisher_gap_closes_video_and_requests_keyframe() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_track(track(1, "v"), MediaKind::Video, t0);
        r.add_down_track(down(2, "v"), MediaKind::Video, t0);
        let mut rx = vec![];
        r.route_frame(track(1, "v"), true, true, t0, &mut rx);
        let t1 = t0 + Duration::from_secs(2);
        let a = r.route_frame(track(1, "v"), false, false, t1, &mut rx);
        assert!(
            rx.is_empty(),
            "a frame after an unrepaired gap is not forwarded"
        );
        assert_eq!(
            a,
            Some(RouterAction::RequestKeyframe {
                track: track(1, "v"),
                cause: KeyframeCause::PublisherGap
            })
        );
        r.route_frame(
            track(1, "v"),
            false,
            true,
            t1 + Duration::from_millis(30),
            &mut rx,
        );
        assert!(rx.is_empty(), "stays closed until the keyframe");
        r.route_frame(
            track(1, "v"),
            true,
            true,
            t1 + Duration::from_millis(60),
            &mut rx,
        );
        assert_eq!(rx, vec![down(2, "v")]);
    }

    #[test]
    fn audio_is_never_gated() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_track(track(1, "a"), MediaKind::Audio, t0);
        r.add_down_track(down(2, "a"), MediaKind::Audio, t0);
        let mut rx = vec![];
        assert!(r
            .route_frame(track(1, "a"), false, false, t0, &mut rx)
            .is_none());
        assert_eq!(rx, vec![down(2, "a")]);
    }

    #[test]
    fn subscriber_requests_are_throttled_per_track() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_track(track(1, "v"), MediaKind::Video, t0);
        for s in 2..12 {
            r.add_down_track(down(s, "v"), MediaKind::Video, t0);
        }
        let t1 = t0 + Duration::from_secs(1);
        let sent: usize = (2..12)
            .filter_map(|s| r.keyframe_requested(down(s, "v"), t1))
            .count();
        assert_eq!(sent, 1, "ten PLIs within one interval -> one request");
        assert_eq!(r.next_deadline(), Some(t1 + Duration::from_millis(500)));
        let mut actions = vec![];
        r.poll_keyframes(t1 + Duration::from_millis(500), &mut actions);
        assert_eq!(
            keyframe_requests(&actions),
            1,
            "the coalesced request is released once"
        );
    }

    #[test]
    fn publisher_leaving_moves_viewers_to_the_next_or_unbinds() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_track(track(1, "v"), MediaKind::Video, t0);
        r.add_track(track(5, "v"), MediaKind::Video, t0);
        r.add_down_track(down(2, "v"), MediaKind::Video, t0);
        assert_eq!(
            r.source_of(down(2, "v")),
            Some(track(1, "v")),
            "oldest publisher first"
        );
        let a = r.remove_participant(1, t0);
        assert!(a.contains(&RouterAction::Bound {
            down: down(2, "v"),
            track: track(5, "v")
        }));
        let a = r.remove_participant(5, t0);
        assert_eq!(
            a,
            vec![RouterAction::Unbound {
                down: down(2, "v"),
                track: track(5, "v")
            }]
        );
        assert_eq!(r.track_count(), 0);
        r.remove_participant(2, t0);
        assert!(r.down_tracks.is_empty());
    }

    #[test]
    fn a_participant_never_receives_its_own_track() {
        let t0 = Instant::now();
        let mut r = Router::default();
        r.add_down_track(down(1, "x"), MediaKind::Audio, t0);
        r.add_track(track(1, "a"), MediaKind::Audio, t0);
        assert_eq!(r.source_of(down(1, "x")), None);
    }
}
