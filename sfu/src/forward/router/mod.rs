//! Routing inside one room: publisher tracks to subscriber down-tracks.
//!
//! A *track* is one incoming media line of a publisher ([`TrackKey`]). A
//! *down-track* is one outgoing media line of a subscriber. The router binds
//! down-tracks to tracks, answers "who receives this packet" on the packet
//! path, and returns every other decision (request a keyframe, a down-track
//! lost its source) as values for the worker to carry out.
//!
//! WHEP viewers have one audio and one video down-track that *follow the
//! room*: they bind to the room's oldest live track of their kind, and when
//! it ends they move to the next one, so a viewer who arrived before the
//! publisher, or outlives it, keeps playing whoever publishes. Conference
//! participants' down-tracks are *pinned* to the track they subscribed to
//! and go unbound when it ends.
//!
//! The router works on RTP packets. Video down-tracks start at a keyframe;
//! after that, packets flow as they come, gaps included: the subscriber
//! NACKs what the publisher lost and gets the repair when it comes, and a
//! keyframe is asked of the publisher only when a gap stays unrepaired
//! ([`GapWatch`]). Nothing closes on a lost packet.
//!
//! Simulcast: a video down-track receives one layer of its track, chosen by
//! its [`LayerSelector`] from the subscriber's estimate and wishes; packets
//! of other layers are dropped and switches happen at the first packet of
//! the target's keyframe. Packets of the current layer dropped on purpose
//! (a temporal layer above the budget) are delivered as skips, so the
//! subscriber's stream rewriter squeezes them out of its sequence.
//!
//! This file holds the routing table and binding; `packet_path` routes
//! packets, `allocation` splits estimates into layers, `keyframes` takes
//! subscribers' keyframe requests.

mod allocation;
mod keyframes;
mod packet_path;

use allocation::share_of;
pub use packet_path::{Delivery, PacketInfo};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};

use crate::forward::codec::SpatialDims;
use crate::forward::gaps::{GapVerdict, GapWatch};
use crate::forward::keyframe::KeyframeThrottle;
use crate::forward::layers::{
    selection_estimate, FrameVerdict, LayerChoice, LayerId, LayerSelector, LayerView, LayerWish,
    PublishedLayers, INITIAL_ESTIMATE_BPS,
};
pub use crate::forward::probe::ProbeRequest;
use crate::forward::probe::{FROZEN_ESTIMATE_AFTER, REPROBE_EVERY, SUSTAIN_WINDOW};
use crate::forward::relay_gate::{RelayGate, RelayVerdict};
use crate::forward::ParticipantId;

/// Receiver loss reports are ignored for this long after a layer switch.
const LOSS_AFTER_SWITCH: Duration = Duration::from_secs(3);

/// Reported loss from which a switch down within a scalable stream asks the
/// publisher for a key picture (the lower layers may have holes too).
const LOSSY_DOWN_SWITCH: f32 = 0.05;

/// NACKs a subscriber sent this recently also make a switch down within a
/// scalable stream ask for a key picture; so does a switch this soon after
/// the down-track's first choice (no receiver report can say yet what was
/// lost: a viewer joining behind a 400 kbit/s cap, started on a 515 kbit/s
/// layer and moved down within a second, sat 3.1 s on holes in 3 of 9
/// Chromium runs until its own PLI).
const RECENT_NACKS: Duration = Duration::from_secs(2);
const BEFORE_REPORTS: Duration = Duration::from_secs(3);

/// One published media line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A subscriber losing packets (or just started) went down within a
    /// scalable stream.
    LossyDownSwitch,
}

impl KeyframeCause {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeCause::NewSubscriber => "new_subscriber",
            KeyframeCause::SubscriberRequest => "subscriber_request",
            KeyframeCause::PublisherGap => "publisher_gap",
            KeyframeCause::Deferred => "deferred",
            KeyframeCause::LossyDownSwitch => "lossy_down_switch",
        }
    }
}

/// A decision for the worker to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterAction {
    /// Ask the publisher of `track` for a keyframe.
    RequestKeyframe {
        track: TrackKey,
        layer: LayerId,
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
    keyframes: HashMap<LayerId, KeyframeThrottle>,
    /// Unrepaired gaps per layer (video).
    gaps: HashMap<LayerId, GapWatch>,
    layers: PublishedLayers,
    down_tracks: Vec<DownTrackKey>,
}

impl Track {
    fn request_keyframe(
        &mut self,
        key: TrackKey,
        layer: LayerId,
        cause: KeyframeCause,
        now: Instant,
    ) -> Option<RouterAction> {
        let throttle = self.keyframes.entry(layer).or_default();
        let send = match cause {
            KeyframeCause::NewSubscriber => throttle.request_for_waiting(now),
            _ => throttle.request(now),
        };
        send.then_some(RouterAction::RequestKeyframe {
            track: key,
            layer,
            cause,
        })
    }
}

#[derive(Debug)]
struct DownTrack {
    kind: MediaKind,
    source: Option<TrackKey>,
    /// Video: which layer this subscriber gets.
    selector: LayerSelector,
    /// Subscribed to one track (conference) rather than following the room.
    pinned: bool,
    /// A relay to another node: every layer, each on its own stream.
    relay: Option<RelayGate>,
    /// The subscriber's session is connected: packets can reach it. Until
    /// then nothing is decided for the line (a layer switched to while the
    /// packets cannot go out would start the stream without its keyframe).
    ready: bool,
}

/// One of a subscriber's receiving lines, for diagnostics.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: Option<TrackKey>,
    /// The layer flowing now (video).
    pub current: Option<LayerView>,
    /// The layer the selector wants (switched to at its next keyframe).
    pub target: Option<LayerChoice>,
    pub paused: bool,
    pub max_width: Option<u32>,
    /// The publisher's layers flowing now, lowest first.
    pub available: Vec<LayerView>,
    pub switches_up: u64,
    pub switches_down: u64,
}

/// A subscriber's downlink estimate and since when it has had this value
/// (an estimate that stops changing is frozen: see [`FROZEN_ESTIMATE_AFTER`]).
#[derive(Debug, Clone, Copy)]
struct Estimate {
    bps: u64,
    since: Instant,
    /// When the estimate last went down.
    fell_at: Option<Instant>,
    /// Probe rounds asked for while the estimate stayed below the wanted
    /// rate, and when the last began (see [`REPROBE_EVERY`]).
    reprobe_round: u32,
    reprobed_at: Option<Instant>,
}

/// The routing table of one room.
#[derive(Debug, Default)]
pub struct Router {
    tracks: HashMap<TrackKey, Track>,
    down_tracks: HashMap<DownTrackKey, DownTrack>,
    /// Subscribers' downlink estimates.
    estimates: HashMap<ParticipantId, Estimate>,
    /// Subscribers whose sessions are connected.
    ready: HashSet<ParticipantId>,
    /// Video down-tracks per subscriber, as of the last `poll_layers`.
    video_shares: HashMap<ParticipantId, u64>,
    /// Subscribers' reported loss of what we send them (0..1).
    losses: HashMap<ParticipantId, f32>,
    /// When each subscriber last sent NACKs.
    nacked_at: HashMap<ParticipantId, Instant>,
    /// Layer switches (up, down) since the last [`Router::take_switch_counts`].
    switches: (u64, u64),
    /// Publisher streams whose sequence numbers jumped, since the last
    /// [`Router::take_sequence_jumps`].
    sequence_jumps: u64,
    /// Scalable-stream packets whose spatial layer lies beyond the
    /// announced structure, since the last
    /// [`Router::take_lying_descriptors`].
    lying_descriptors: u64,
    /// Decisions made outside the packet path (layer allocation), for
    /// [`Router::poll_keyframes`] to hand out.
    pending_actions: Vec<RouterAction>,
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

    /// A publisher added a media line. Unbound down-tracks of that kind bind to it.
    /// `layers` is the number of simulcast layers the SDP announced (1 without).
    pub fn add_track(
        &mut self,
        key: TrackKey,
        kind: MediaKind,
        layers: usize,
        now: Instant,
    ) -> Vec<RouterAction> {
        if self.tracks.contains_key(&key) {
            return vec![];
        }
        self.next_seq += 1;
        self.tracks.insert(
            key,
            Track {
                kind,
                created_seq: self.next_seq,
                keyframes: HashMap::new(),
                gaps: HashMap::new(),
                layers: PublishedLayers::new(layers),
                down_tracks: vec![],
            },
        );
        let waiting: Vec<DownTrackKey> = self
            .down_tracks
            .iter()
            .filter(|(d, dt)| {
                !dt.pinned
                    && dt.source.is_none()
                    && dt.kind == kind
                    && d.subscriber != key.publisher
            })
            .map(|(d, _)| *d)
            .collect();
        let mut actions = vec![];
        for down in waiting {
            self.bind(down, key, now, &mut actions);
        }
        actions
    }

    /// A subscriber added a media line that follows the room; video may
    /// carry the subscriber's maximum width.
    pub fn add_down_track(
        &mut self,
        down: DownTrackKey,
        kind: MediaKind,
        max_width: Option<u32>,
        now: Instant,
    ) -> Vec<RouterAction> {
        self.add_following(down, kind, max_width, None, now)
    }

    /// A relay's media line (another node receiving for its viewers): it
    /// follows the room like a WHEP viewer's, but gets every layer, each on
    /// one of its `streams` streams.
    pub fn add_relay_down_track(
        &mut self,
        down: DownTrackKey,
        kind: MediaKind,
        streams: usize,
        now: Instant,
    ) -> Vec<RouterAction> {
        let gate = (kind == MediaKind::Video).then(|| RelayGate::new(streams));
        self.add_following(down, kind, None, gate, now)
    }

    fn add_following(
        &mut self,
        down: DownTrackKey,
        kind: MediaKind,
        max_width: Option<u32>,
        relay: Option<RelayGate>,
        now: Instant,
    ) -> Vec<RouterAction> {
        self.down_tracks.insert(
            down,
            DownTrack {
                kind,
                source: None,
                selector: LayerSelector::with_max_width(max_width),
                pinned: false,
                relay,
                ready: self.ready.contains(&down.subscriber),
            },
        );
        let mut actions = vec![];
        if let Some(track) = self.oldest_track(kind, down.subscriber) {
            self.bind(down, track, now, &mut actions);
        }
        actions
    }

    /// A subscriber's media line `down` carries `track` (conference
    /// subscription). Re-subscribing a line to another track rebinds it.
    /// Nothing happens when the track does not exist or kinds differ.
    pub fn subscribe(
        &mut self,
        down: DownTrackKey,
        track: TrackKey,
        max_width: Option<u32>,
        now: Instant,
    ) -> Vec<RouterAction> {
        self.subscribe_with(down, track, max_width, None, now)
    }

    /// A bridge's media line (another node's link into the room) carries
    /// `track` with every layer, each on one of its `streams` streams (one
    /// stream: as any subscriber's line).
    pub fn subscribe_relay(
        &mut self,
        down: DownTrackKey,
        track: TrackKey,
        streams: usize,
        now: Instant,
    ) -> Vec<RouterAction> {
        let kind = self.tracks.get(&track).map(|t| t.kind);
        let gate = (kind == Some(MediaKind::Video) && streams > 1).then(|| RelayGate::new(streams));
        self.subscribe_with(down, track, None, gate, now)
    }

    fn subscribe_with(
        &mut self,
        down: DownTrackKey,
        track: TrackKey,
        max_width: Option<u32>,
        relay: Option<RelayGate>,
        now: Instant,
    ) -> Vec<RouterAction> {
        let Some(kind) = self.tracks.get(&track).map(|t| t.kind) else {
            return vec![];
        };
        if track.publisher == down.subscriber {
            return vec![];
        }
        if let Some(dt) = self.down_tracks.get(&down) {
            if dt.source == Some(track) {
                return vec![];
            }
            if dt.kind != kind {
                self.remove_down_track(down);
            }
        }
        let ready = self.ready.contains(&down.subscriber);
        self.down_tracks.entry(down).or_insert(DownTrack {
            kind,
            source: None,
            selector: LayerSelector::with_max_width(max_width),
            pinned: true,
            relay,
            ready,
        });
        let mut actions = vec![];
        self.bind(down, track, now, &mut actions);
        actions
    }

    /// A subscriber's media line stopped receiving.
    pub fn remove_down_track(&mut self, down: DownTrackKey) {
        self.unbind(down);
        self.down_tracks.remove(&down);
    }

    /// One track ended: room-following down-tracks move to the next track
    /// of the kind, pinned ones go unbound.
    pub fn remove_track(&mut self, key: TrackKey, now: Instant) -> Vec<RouterAction> {
        let mut actions = vec![];
        let Some(track) = self.tracks.remove(&key) else {
            return actions;
        };
        for down in track.down_tracks {
            let pinned = match self.down_tracks.get_mut(&down) {
                Some(dt) => {
                    dt.source = None;
                    dt.pinned
                }
                None => continue,
            };
            let next = if pinned {
                None
            } else {
                self.oldest_track(track.kind, down.subscriber)
            };
            match next {
                Some(next) => self.bind(down, next, now, &mut actions),
                None => actions.push(RouterAction::Unbound { down, track: key }),
            }
        }
        actions
    }

    /// A participant left: its tracks end (their down-tracks move on or go
    /// unbound) and its down-tracks are dropped.
    pub fn remove_participant(&mut self, id: ParticipantId, now: Instant) -> Vec<RouterAction> {
        self.estimates.remove(&id);
        self.ready.remove(&id);
        self.losses.remove(&id);
        self.nacked_at.remove(&id);
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
            actions.extend(self.remove_track(key, now));
        }
        actions
    }

    /// A relay down-track's downstream wants only these streams (None: all).
    /// False when `down` is not a relay line (only those have a gate).
    pub fn set_relay_wanted(&mut self, down: DownTrackKey, wanted: Option<Vec<usize>>) -> bool {
        match self
            .down_tracks
            .get_mut(&down)
            .and_then(|d| d.relay.as_mut())
        {
            Some(gate) => {
                gate.set_wanted(wanted);
                true
            }
            None => false,
        }
    }

    /// A subscriber's session connected: its lines start deciding, and each
    /// video line that waits for a picture asks for the keyframe of the
    /// layer it will start on (sooner than other requests: see
    /// [`KeyframeThrottle::request_for_waiting`]).
    pub fn subscriber_connected(
        &mut self,
        subscriber: ParticipantId,
        now: Instant,
    ) -> Vec<RouterAction> {
        self.ready.insert(subscriber);
        let mut actions = vec![];
        for (down, dt) in self
            .down_tracks
            .iter_mut()
            .filter(|(d, _)| d.subscriber == subscriber)
        {
            dt.ready = true;
            let (Some(track), MediaKind::Video) = (dt.source, dt.kind) else {
                continue;
            };
            let Some(t) = self.tracks.get_mut(&track) else {
                continue;
            };
            let ranked = t.layers.ranked(now);
            let layer = match &dt.relay {
                // A relay opens every layer's stream at its keyframe: the lowest first.
                Some(_) => ranked.first().map(|l| l.id),
                None => {
                    if !dt.selector.has_chosen() && t.layers.ready_for(&dt.selector, now) {
                        let share = share_of(&self.estimates, &self.video_shares, down.subscriber);
                        dt.selector.update(now, &ranked, Some(share));
                    }
                    dt.selector
                        .target()
                        .map(|c| c.rid)
                        .or(ranked.first().map(|l| l.id))
                }
            };
            let layer = layer.unwrap_or(None);
            actions.extend(t.request_keyframe(track, layer, KeyframeCause::NewSubscriber, now));
        }
        actions
    }

    /// Publisher streams whose sequence numbers jumped, since the last call.
    pub fn take_sequence_jumps(&mut self) -> u64 {
        std::mem::take(&mut self.sequence_jumps)
    }

    /// Packets dropped since the last call because their spatial layer
    /// lies beyond what their stream announced (VP9 descriptors).
    pub fn take_lying_descriptors(&mut self) -> u64 {
        std::mem::take(&mut self.lying_descriptors)
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
        // A new source: the selector starts over (no current layer), with
        // the subscriber's wishes.
        let wish = std::mem::take(&mut dt.selector.wish);
        dt.selector = LayerSelector::with_max_width(dt.selector.max_width);
        dt.selector.wish = wish;
        if let Some(gate) = dt.relay.as_mut() {
            gate.reset();
        }
        t.down_tracks.push(down);
        actions.push(RouterAction::Bound { down, track });
        if dt.kind == MediaKind::Video && dt.ready {
            // Ask for a keyframe of the layer this subscriber will most likely start on.
            let layer = t.layers.ranked(now).first().map(|l| l.id).unwrap_or(None);
            if let Some(a) = t.request_keyframe(track, layer, KeyframeCause::NewSubscriber, now) {
                actions.push(a);
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod svc_tests;
