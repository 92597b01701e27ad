//! The registry of live resources shared by the HTTP side and the workers:
//! which worker hosts a room, and which worker owns a WHIP/WHEP resource.
//!
//! This is the one piece of state both sides touch, so it is a `DashMap`
//! (sharded locks, never held across an await or on the packet path). Rooms
//! are addressed by name, so the same table can later live in Redis.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use signaling::SessionKind;

/// Where a WHIP/WHEP resource lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceEntry {
    pub worker: usize,
    pub kind: SessionKind,
    pub room: String,
    /// The identity whose token created the session.
    pub identity: String,
}

#[derive(Debug, Default)]
pub struct Registry {
    rooms: DashMap<String, usize>,
    resources: DashMap<String, ResourceEntry>,
}

impl Registry {
    /// The worker hosting `room`, placing it on `choose()` if it is new.
    /// Returns `None` when the room is new and `max_rooms` are already hosted.
    pub fn place_room(
        &self,
        room: &str,
        max_rooms: usize,
        choose: impl FnOnce() -> usize,
    ) -> Option<usize> {
        if let Some(w) = self.rooms.get(room) {
            return Some(*w);
        }
        if self.rooms.len() >= max_rooms {
            return None;
        }
        Some(*self.rooms.entry(room.to_string()).or_insert_with(choose))
    }

    /// The worker hosting `room`, if it exists.
    pub fn room_worker(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|w| *w)
    }

    /// Called by a worker creating `room`: true when the room is (now) its own.
    pub fn claim_room(&self, room: &str, worker: usize) -> bool {
        match self.rooms.entry(room.to_string()) {
            Entry::Occupied(e) => *e.get() == worker,
            Entry::Vacant(e) => {
                e.insert(worker);
                true
            }
        }
    }

    /// Called by a worker that removed its empty `room`.
    pub fn release_room(&self, room: &str, worker: usize) {
        self.rooms.remove_if(room, |_, w| *w == worker);
    }

    pub fn insert_resource(&self, id: String, entry: ResourceEntry) {
        self.resources.insert(id, entry);
    }

    pub fn resource(&self, id: &str) -> Option<ResourceEntry> {
        self.resources.get(id).map(|e| e.clone())
    }

    pub fn remove_resource(&self, id: &str) {
        self.resources.remove(id);
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn len(&self) -> usize {
        self.rooms.len() + self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_sticky_and_bounded() {
        let r = Registry::default();
        assert_eq!(r.place_room("a", 2, || 1), Some(1));
        assert_eq!(
            r.place_room("a", 2, || 0),
            Some(1),
            "existing placement wins"
        );
        assert_eq!(r.place_room("b", 2, || 0), Some(0));
        assert_eq!(r.place_room("c", 2, || 0), None, "max_rooms reached");
        assert!(r.claim_room("a", 1));
        assert!(
            !r.claim_room("a", 0),
            "another worker cannot take a placed room"
        );
        r.release_room("a", 0);
        assert_eq!(r.room_count(), 2, "only the owner releases");
        r.release_room("a", 1);
        assert_eq!(r.room_count(), 1);
    }
}
