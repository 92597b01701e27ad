//! The registry of live resources shared by the HTTP side and the workers:
//! which worker hosts a room, and which worker owns a WHIP/WHEP resource.
//!
//! This is the one piece of state both sides touch, so it is a `DashMap`
//! (sharded locks, never held across an await or on the packet path). Rooms
//! are addressed by name, so the same table can later live in Redis.
//!
//! It also holds the server's draining flag: once set (SIGTERM), no new room
//! is placed, while rooms already here keep taking participants.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Why a new room was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceRefusal {
    /// `max_rooms` rooms are hosted already.
    Full,
    /// The server is draining: it finishes its rooms and takes no new one.
    Draining,
}

#[derive(Debug, Default)]
pub struct Registry {
    rooms: DashMap<String, usize>,
    resources: DashMap<String, ResourceEntry>,
    draining: AtomicBool,
    /// Room-protocol sockets still open (their last messages must be sent
    /// before the process exits).
    open_room_sockets: AtomicUsize,
    /// Told the name of every room that ended here (the cluster releases
    /// its placement).
    released: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Rooms hosted on another node that this one relays for its viewers.
    edge_rooms: dashmap::DashSet<String>,
    /// Per relay ingest (resource id): the streams its viewers can use.
    relay_wanted: DashMap<String, Vec<String>>,
}

impl Registry {
    /// The worker hosting `room`, placing it on `choose()` if it is new.
    /// A new room is refused when `max_rooms` are already hosted or the
    /// server is draining.
    pub fn place_room(
        &self,
        room: &str,
        max_rooms: usize,
        choose: impl FnOnce() -> usize,
    ) -> Result<usize, PlaceRefusal> {
        if let Some(w) = self.rooms.get(room) {
            return Ok(*w);
        }
        if self.is_draining() {
            return Err(PlaceRefusal::Draining);
        }
        if self.rooms.len() >= max_rooms {
            return Err(PlaceRefusal::Full);
        }
        Ok(*self.rooms.entry(room.to_string()).or_insert_with(choose))
    }

    /// Take no new rooms from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn room_socket_opened(&self) {
        self.open_room_sockets.fetch_add(1, Ordering::SeqCst);
    }

    pub fn room_socket_closed(&self) {
        let _ = self
            .open_room_sockets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub fn open_room_sockets(&self) -> usize {
        self.open_room_sockets.load(Ordering::SeqCst)
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
        if self.rooms.remove_if(room, |_, w| *w == worker).is_some() {
            self.edge_rooms.remove(room);
            if let Some(tx) = self.released.get() {
                let _ = tx.send(room.to_string());
            }
        }
    }

    /// `room` here is an edge of a room hosted on another node (or, with
    /// `false`, no longer: it became this node's own).
    pub fn set_edge(&self, room: &str, edge: bool) {
        if edge {
            self.edge_rooms.insert(room.to_string());
        } else {
            self.edge_rooms.remove(room);
        }
    }

    pub fn is_edge(&self, room: &str) -> bool {
        self.edge_rooms.contains(room)
    }

    /// Send the names of rooms that end from now on to `tx` (set once).
    pub fn on_room_released(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.released.set(tx);
    }

    pub fn insert_resource(&self, id: String, entry: ResourceEntry) {
        self.resources.insert(id, entry);
    }

    pub fn resource(&self, id: &str) -> Option<ResourceEntry> {
        self.resources.get(id).map(|e| e.clone())
    }

    pub fn remove_resource(&self, id: &str) {
        self.resources.remove(id);
        self.relay_wanted.remove(id);
    }

    /// Sessions (of `kind`, or of any kind) in `room` on `worker`.
    pub fn sessions_of(&self, room: &str, worker: usize, kind: Option<SessionKind>) -> usize {
        self.resources
            .iter()
            .filter(|e| e.worker == worker && e.room == room)
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .count()
    }

    /// Sessions in `room` on every worker, and how many of them are
    /// `identity`'s.
    pub fn sessions_in(&self, room: &str, identity: &str) -> (usize, usize) {
        self.resources
            .iter()
            .filter(|e| e.room == room)
            .fold((0, 0), |(all, own), e| {
                (all + 1, own + usize::from(e.identity == identity))
            })
    }

    /// Relay `id`'s viewers can use streams `rids` (sorted).
    pub fn set_relay_wanted(&self, id: &str, mut rids: Vec<String>) {
        rids.sort();
        self.relay_wanted.insert(id.to_string(), rids);
    }

    pub fn relay_wanted(&self, id: &str) -> Option<Vec<String>> {
        self.relay_wanted.get(id).map(|r| r.clone())
    }

    /// Names of the rooms this node hosts (not the edges it relays).
    pub fn room_names(&self) -> Vec<String> {
        self.rooms
            .iter()
            .map(|e| e.key().clone())
            .filter(|r| !self.is_edge(r))
            .collect()
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
        assert_eq!(r.place_room("a", 2, || 1), Ok(1));
        assert_eq!(r.place_room("a", 2, || 0), Ok(1), "existing placement wins");
        assert_eq!(r.place_room("b", 2, || 0), Ok(0));
        assert_eq!(
            r.place_room("c", 2, || 0),
            Err(PlaceRefusal::Full),
            "max_rooms reached"
        );
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

    #[test]
    fn a_draining_registry_keeps_its_rooms_and_places_no_new_one() {
        let r = Registry::default();
        assert_eq!(r.place_room("a", 10, || 1), Ok(1));
        r.start_draining();
        assert_eq!(
            r.place_room("a", 10, || 0),
            Ok(1),
            "existing room still served"
        );
        assert_eq!(r.place_room("b", 10, || 0), Err(PlaceRefusal::Draining));
        assert_eq!(r.room_count(), 1);
    }
}
