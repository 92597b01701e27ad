//! Rooms and participants as a worker holds them: who is in a room, what
//! they publish and receive (the room's [`Router`]), and each participant's
//! `Rtc` ([`participant::Participant`]).

pub mod offer;
pub mod participant;

use std::collections::HashSet;
use std::sync::Arc;

use crate::forward::router::Router;
use crate::forward::ParticipantId;

/// One room, owned by exactly one worker.
#[derive(Debug)]
pub struct Room {
    pub name: Arc<str>,
    pub participants: HashSet<ParticipantId>,
    pub router: Router,
}

impl Room {
    pub fn new(name: Arc<str>) -> Room {
        Room {
            name,
            participants: HashSet::new(),
            router: Router::default(),
        }
    }
}
