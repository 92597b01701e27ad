//! A participant as the room sees it: its sid, name, metadata, grants,
//! published tracks, subscriptions, data channels and the socket it is
//! reached through (the room protocol's state; the media state stays in
//! [`Participant`](super::participant::Participant)).
//!
//! Conference participants have one, and so do WHIP publishers, so that a
//! meeting sees an OBS ingest as a participant with tracks. WHEP viewers are
//! not members (hidden, like LiveKit's recorder participants).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use signaling::room_protocol::{
    MediaKindName, ParticipantInfo, PublishInfo, Quality, ServerMessage, TrackInfo,
};
use signaling::rtc_socket::RateLimit;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use tokio::sync::mpsc;

/// Messages queued towards one socket; a client this far behind is
/// disconnected and resumes with a fresh room state.
pub const SOCKET_QUEUE: usize = 512;
/// Data-channel messages per second a participant may send (and burst).
pub const DATA_PER_SECOND: f64 = 100.0;
pub const DATA_BURST: f64 = 200.0;

/// A track this member publishes.
#[derive(Debug, Clone)]
pub struct PublishedTrack {
    pub info: TrackInfo,
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
            sid: self.track_sid(mid),
            kind,
            source,
            name: if said.name.is_empty() {
                format!("{kind:?}").to_lowercase()
            } else {
                said.name.chars().take(64).collect()
            },
            muted: false,
            simulcast,
        }
    }
}

/// A new participant sid.
pub fn new_sid() -> String {
    format!("PA_{:016x}", rand::random::<u64>())
}
