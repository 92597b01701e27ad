//! A participant as the room sees it: its sid, name, metadata, grants,
//! published tracks, subscriptions, data channels and the socket it is
//! reached through (the room protocol's state; the media state stays in
//! [`Participant`](super::participant::Participant)).
//!
//! Conference participants have one, and so do WHIP publishers, so that a
//! meeting sees an OBS ingest as a participant with tracks. WHEP viewers are
//! not members (hidden, like LiveKit's recorder participants).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use signaling::rate_limit::RateLimit;
use signaling::room_protocol::{
    MediaKindName, ParticipantInfo, PublishInfo, Quality, ServerMessage, TrackInfo,
};
use str0m::channel::ChannelId;
use str0m::media::Mid;
use tokio::sync::mpsc;

/// Messages queued towards one socket; a client this far behind is
/// disconnected and resumes with a fresh room state.
pub const SOCKET_QUEUE: usize = 512;
/// Data-channel messages per second a participant may send (and burst).
pub const DATA_PER_SECOND: f64 = 100.0;
pub const DATA_BURST: f64 = 200.0;

/// A wish to pause layers is sent only after it held this long (resuming
/// is sent at once), so a subscriber flapping does not flap the encoder.
pub const DYNACAST_HOLD: Duration = Duration::from_secs(3);

/// A track this member publishes.
#[derive(Debug, Clone)]
pub struct PublishedTrack {
    pub info: TrackInfo,
    /// Bridges: the sid of the participant (on the far node) it is of.
    pub owner: Option<String>,
    /// Dynacast: the layer states last sent, and a pause waiting to be sent.
    pub layers_sent: Option<BTreeMap<String, bool>>,
    pub layers_pending: Option<(BTreeMap<String, bool>, Instant)>,
}

impl PublishedTrack {
    pub fn new(info: TrackInfo) -> PublishedTrack {
        PublishedTrack {
            info,
            owner: None,
            layers_sent: None,
            layers_pending: None,
        }
    }

    /// Dynacast: the layers wanted now; returns what to tell the publisher.
    pub fn wish_layers(
        &mut self,
        wanted: BTreeMap<String, bool>,
        now: Instant,
    ) -> Option<ServerMessage> {
        if self.layers_sent.as_ref() == Some(&wanted) {
            self.layers_pending = None;
            return None;
        }
        let resumes = wanted.iter().any(|(rid, on)| {
            *on && self
                .layers_sent
                .as_ref()
                .is_none_or(|sent| sent.get(rid) != Some(&true))
        });
        let held = match &self.layers_pending {
            Some((pending, since)) if *pending == wanted => {
                now.saturating_duration_since(*since) >= DYNACAST_HOLD
            }
            _ => {
                self.layers_pending = Some((wanted.clone(), now));
                false
            }
        };
        if !(resumes || held) {
            return None;
        }
        self.layers_pending = None;
        self.layers_sent = Some(wanted.clone());
        Some(ServerMessage::Layers {
            track: self.info.sid.clone(),
            active: wanted,
        })
    }
}

pub struct Member {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub resume_token: String,
    /// Counts sockets: messages from an older one are ignored.
    pub generation: u64,
    socket: Option<mpsc::Sender<ServerMessage>>,
    /// When the socket went away (the reconnect grace period runs from here).
    pub socket_lost_at: Option<Instant>,
    pub published: BTreeMap<Mid, PublishedTrack>,
    /// What the client said about media lines it will publish.
    pub publish_info: HashMap<Mid, PublishInfo>,
    /// Receiving media line -> the track sid it should carry.
    pub subscriptions: HashMap<Mid, String>,
    /// Width wishes per track sid (kept across re-subscription).
    pub max_widths: HashMap<String, Option<u32>>,
    /// Data channels by label.
    pub channels: HashMap<String, ChannelId>,
    pub data_limit: RateLimit,
    pub quality: Quality,
    /// A bridge: another node's link into the room (hidden; it speaks for
    /// the participants of `remote`, by sid, whose tracks it carries).
    pub bridge: bool,
    pub remote: BTreeMap<String, ParticipantInfo>,
}

/// Constructor arguments.
pub struct NewMember {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
}

impl Member {
    /// A member that only publishes (a WHIP publisher, a relay ingest):
    /// others see it with its tracks.
    pub fn publisher(sid: &str, identity: &str, now: std::time::Instant) -> Member {
        Member::new(
            NewMember {
                sid: sid.to_string(),
                identity: identity.to_string(),
                name: identity.to_string(),
                metadata: String::new(),
                can_publish: true,
                can_subscribe: false,
                can_publish_data: false,
            },
            now,
        )
    }

    pub fn new(m: NewMember, now: Instant) -> Member {
        Member {
            sid: m.sid,
            identity: m.identity,
            name: m.name,
            metadata: m.metadata,
            can_publish: m.can_publish,
            can_subscribe: m.can_subscribe,
            can_publish_data: m.can_publish_data,
            resume_token: format!("{:032x}", rand::random::<u128>()),
            generation: 0,
            socket: None,
            socket_lost_at: Some(now),
            published: BTreeMap::new(),
            publish_info: HashMap::new(),
            subscriptions: HashMap::new(),
            max_widths: HashMap::new(),
            channels: HashMap::new(),
            data_limit: RateLimit::new(DATA_PER_SECOND, DATA_BURST, now),
            quality: Quality::Excellent,
            bridge: false,
            remote: BTreeMap::new(),
        }
    }

    /// Attach a (new) socket: returns its receiving end and generation.
    pub fn attach_socket(&mut self) -> (mpsc::Receiver<ServerMessage>, u64) {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        self.generation += 1;
        self.socket = Some(tx);
        self.socket_lost_at = None;
        (rx, self.generation)
    }

    pub fn detach_socket(&mut self, now: Instant) {
        if self.socket.take().is_some() {
            self.socket_lost_at = Some(now);
        }
    }

    pub fn has_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// Queue a message to the client. A client too slow to read loses its
    /// socket (it resumes and gets the full state again).
    pub fn send(&mut self, msg: ServerMessage, now: Instant) {
        let Some(tx) = &self.socket else {
            return;
        };
        if let Err(e) = tx.try_send(msg) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::info!(sid = %self.sid, "socket queue full; dropping the socket");
            }
            self.detach_socket(now);
        }
    }

    pub fn track_by_sid(&self, sid: &str) -> Option<Mid> {
        self.published
            .iter()
            .find(|(_, t)| t.info.sid == sid)
            .map(|(mid, _)| *mid)
    }

    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            tracks: self.published.values().map(|t| t.info.clone()).collect(),
            quality: self.quality,
        }
    }

    /// The participants others see through this member: itself, or for a
    /// bridge the far node's participants with the tracks it carries now.
    pub fn infos(&self) -> Vec<ParticipantInfo> {
        if !self.bridge {
            return vec![self.info()];
        }
        self.remote.values().map(|p| self.remote_info(p)).collect()
    }

    /// A remote participant with the tracks this bridge carries of it.
    pub fn remote_info(&self, p: &ParticipantInfo) -> ParticipantInfo {
        let mut info = p.clone();
        info.tracks = self
            .published
            .values()
            .filter(|t| t.owner.as_deref() == Some(p.sid.as_str()))
            .map(|t| t.info.clone())
            .collect();
        info
    }

    /// Who others are told published a track of this member.
    pub fn publisher_sid(&self, track: &PublishedTrack) -> String {
        track.owner.clone().unwrap_or_else(|| self.sid.clone())
    }

    /// How this member frames data messages: LiveKit clients open
    /// `_reliable` / `_lossy`, room protocol clients `reliable` / `lossy`.
    pub fn data_dialect(&self) -> crate::room::data_packets::Dialect {
        use crate::room::data_packets::Dialect;
        self.channels
            .keys()
            .map(|label| Dialect::of_label(label))
            .find(|d| *d == Dialect::LiveKit)
            .unwrap_or(Dialect::Json)
    }

    /// The sid a track of this member published on `mid` gets.
    pub fn track_sid(&self, mid: Mid) -> String {
        let suffix = self.sid.strip_prefix("PA_").unwrap_or(&self.sid);
        format!("TR_{suffix}_{mid}")
    }

    /// Describe a new published track (the client's words, else defaults).
    pub fn new_track(&self, mid: Mid, kind: MediaKindName, simulcast: bool) -> TrackInfo {
        let said = self.publish_info.get(&mid).cloned().unwrap_or_default();
        let source = match (said.source, kind) {
            (signaling::room_protocol::TrackSource::Unknown, MediaKindName::Audio) => {
                signaling::room_protocol::TrackSource::Microphone
            }
            (signaling::room_protocol::TrackSource::Unknown, MediaKindName::Video) => {
                signaling::room_protocol::TrackSource::Camera
            }
            (s, _) => s,
        };
        TrackInfo {
            // A bridge keeps its node's sid; a LiveKit client's sid was
            // handed out at its `add_track`, before the media line existed.
            sid: said
                .sid
                .filter(|s| self.bridge || is_track_sid(s))
                .unwrap_or_else(|| self.track_sid(mid)),
            kind,
            source,
            name: if said.name.is_empty() {
                format!("{kind:?}").to_lowercase()
            } else {
                said.name.chars().take(64).collect()
            },
            muted: false,
            simulcast,
            layers: said.layers.iter().take(4).copied().collect(),
        }
    }
}

/// A track sid a client may bring: `TR_` and up to 61 more characters
/// from `[A-Za-z0-9_]`.
pub fn is_track_sid(sid: &str) -> bool {
    sid.len() <= 64
        && sid.strip_prefix("TR_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// A new participant sid.
pub fn new_sid() -> String {
    format!("PA_{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::room_protocol::TrackSource;

    fn track() -> PublishedTrack {
        PublishedTrack::new(TrackInfo {
            sid: "TR_1_1".into(),
            kind: MediaKindName::Video,
            source: TrackSource::Camera,
            name: "cam".into(),
            muted: false,
            simulcast: true,
            layers: vec![],
        })
    }

    fn wish(q: bool, h: bool, f: bool) -> BTreeMap<String, bool> {
        [("q", q), ("h", h), ("f", f)]
            .into_iter()
            .map(|(r, on)| (r.to_string(), on))
            .collect()
    }

    #[test]
    fn resuming_is_told_at_once_pausing_after_a_hold() {
        let t0 = Instant::now();
        let mut t = track();
        let m = t.wish_layers(wish(true, true, true), t0);
        assert!(
            matches!(m, Some(ServerMessage::Layers { .. })),
            "first wish with layers on"
        );
        assert_eq!(t.wish_layers(wish(true, true, true), t0), None, "unchanged");
        // Pause the top layer: only after it was wanted off for the hold time.
        assert_eq!(t.wish_layers(wish(true, true, false), t0), None);
        assert_eq!(
            t.wish_layers(wish(true, true, false), t0 + Duration::from_secs(1)),
            None
        );
        let m = t.wish_layers(wish(true, true, false), t0 + DYNACAST_HOLD);
        assert_eq!(
            m,
            Some(ServerMessage::Layers {
                track: "TR_1_1".into(),
                active: wish(true, true, false)
            })
        );
        // Wanted again: at once.
        let later = t0 + DYNACAST_HOLD + Duration::from_millis(250);
        assert!(t.wish_layers(wish(true, true, true), later).is_some());
        // A pause that is withdrawn before the hold never reaches the client.
        assert_eq!(t.wish_layers(wish(true, false, false), later), None);
        assert_eq!(
            t.wish_layers(wish(true, true, true), later + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            t.wish_layers(wish(true, false, false), later + Duration::from_secs(2)),
            None,
            "hold restarts"
        );
    }
}
