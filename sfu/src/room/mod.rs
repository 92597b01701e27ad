//! Rooms and participants as a worker holds them: who is in a room, what
//! they publish and receive (the room's [`Router`]), and each participant's
//! `Rtc` ([`participant::Participant`]).

pub mod codec_order;
pub mod data_packets;
pub mod dd_extension;
pub mod member;
pub mod offer;
pub mod out_streams;
pub mod participant;
pub mod quality;
pub mod session_events;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::forward::router::{Router, TrackKey};
use crate::forward::speakers::ActiveSpeakers;
use crate::forward::ParticipantId;

/// One room, owned by exactly one worker. Another worker of the node may
/// hold a *fan-out* of it: a room of the same name whose only publisher is
/// a relay from the owning worker, so that viewers spread over workers.
#[derive(Debug)]
pub struct Room {
    pub name: Arc<str>,
    pub participants: HashSet<ParticipantId>,
    pub router: Router,
    /// Published tracks by sid (room protocol).
    pub track_sids: HashMap<String, TrackKey>,
    /// Room members (conference participants, WHIP publishers) by identity.
    pub identities: HashMap<String, ParticipantId>,
    /// Voices by audio track (a bridge carries several participants').
    pub speakers: ActiveSpeakers<TrackKey>,
    pub created_at: Instant,
    /// Some(home worker): this is a fan-out of the room that worker hosts
    /// (not a room of its own: not in the registry, not listed, no webhooks).
    pub fanout_of: Option<usize>,
    /// A satellite of a room hosted on another node, linked to it by a
    /// bridge (not listed here, no webhooks: the hosting node has them).
    pub satellite: bool,
}

impl Room {
    pub fn new(name: Arc<str>, now: Instant) -> Room {
        Room {
            name,
            participants: HashSet::new(),
            router: Router::default(),
            track_sids: HashMap::new(),
            identities: HashMap::new(),
            speakers: ActiveSpeakers::default(),
            created_at: now,
            fanout_of: None,
            satellite: false,
        }
    }
}
