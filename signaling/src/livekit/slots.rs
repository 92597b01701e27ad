//! Receive slots of a single-peer-connection LiveKit client: its
//! receive-only media sections are a pool, and each remote track it should
//! get is placed on a free section of its kind. A section is reused for the
//! next track once its previous track is gone, after one answer has
//! declared it inactive (a browser fires a new remote track only when a
//! section starts receiving, so a section cannot pass from one track to
//! the next in one answer). When the pool is short, the client is asked
//! for more sections (`media_sections_requirement`). So a member's session
//! grows with what it receives at once, not with everything ever published.

use std::collections::{BTreeMap, BTreeSet};

use super::sdp::{OfferSection, SectionKind};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Free,
    Carries(String),
    /// Its track went away; free after the next answer says so.
    Released,
}

/// What the client must be asked after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirement {
    pub audio: u32,
    pub video: u32,
}

/// The pool of one client's receive sections and the tracks placed on them.
#[derive(Debug, Default)]
pub struct ReceiveSlots {
    /// Receive sections by mid, in the client's order of mids.
    slots: BTreeMap<Mid, (SectionKind, Slot)>,
    /// Tracks wanted and their kind, in the order they were wanted.
    wanted: Vec<(String, SectionKind)>,
    /// Assignments changed since the last answer.
    changed: bool,
}

/// A mid ordered numerically where it is a number (Chromium's are).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mid(u64, String);

impl Mid {
    fn new(mid: &str) -> Mid {
        Mid(mid.parse().unwrap_or(u64::MAX), mid.to_string())
    }
}

impl ReceiveSlots {
    /// The client's offer: its receive-capable sections join the pool
    /// (known ones keep what they carry); sections it no longer offers for
    /// receiving leave it, and their tracks wait for another slot.
    pub fn offered(&mut self, sections: &[OfferSection]) {
        let receiving: BTreeSet<Mid> = sections
            .iter()
            .filter(|s| s.receives() && s.kind != SectionKind::Application)
            .map(|s| Mid::new(&s.mid))
            .collect();
        self.slots.retain(|mid, _| receiving.contains(mid));
        for s in sections {
            if s.receives() && s.kind != SectionKind::Application {
                self.slots
                    .entry(Mid::new(&s.mid))
                    .or_insert((s.kind, Slot::Free));
            }
        }
        self.place();
    }

    /// Track `track` should reach the client.
    pub fn want(&mut self, track: &str, kind: SectionKind) {
        if !self.wanted.iter().any(|(t, _)| t == track) {
            self.wanted.push((track.to_string(), kind));
            self.place();
        }
    }

    /// Track `track` should no longer reach the client (gone, or
    /// unsubscribed). Returns whether it had a slot.
    pub fn drop_track(&mut self, track: &str) -> bool {
        self.wanted.retain(|(t, _)| t != track);
        let mut had = false;
        for (_, slot) in self.slots.values_mut() {
            if *slot == Slot::Carries(track.to_string()) {
                *slot = Slot::Released;
                had = true;
                self.changed = true;
            }
        }
        if had {
            self.place();
        }
        had
    }

    /// Place wanted tracks without a slot on free slots of their kind.
    fn place(&mut self) {
        let placed: BTreeSet<String> = self
            .slots
            .values()
            .filter_map(|(_, s)| match s {
                Slot::Carries(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        for (track, kind) in &self.wanted {
            if placed.contains(track) {
                continue;
            }
            if let Some((_, slot)) = self
                .slots
                .values_mut()
                .find(|(k, s)| k == kind && *s == Slot::Free)
            {
                *slot = Slot::Carries(track.clone());
                self.changed = true;
            }
        }
    }

    /// Sections the client lacks for the wanted tracks, by kind.
    pub fn missing(&self) -> Requirement {
        let mut need = Requirement::default();
        for (track, kind) in &self.wanted {
            if self.slot_of(track).is_none() {
                match kind {
                    SectionKind::Audio => need.audio += 1,
                    SectionKind::Video => need.video += 1,
                    SectionKind::Application => {}
                }
            }
        }
        // Released slots become free after the next answer.
        for (kind, slot) in self.slots.values() {
            if *slot == Slot::Released {
                match kind {
                    SectionKind::Audio => need.audio = need.audio.saturating_sub(1),
                    SectionKind::Video => need.video = need.video.saturating_sub(1),
                    SectionKind::Application => {}
                }
            }
        }
        need
    }

    /// The tracks wanted, in the order they were wanted.
    pub fn wanted_tracks(&self) -> Vec<String> {
        self.wanted.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Whether track `track` is wanted (placed or waiting for a slot).
    pub fn is_wanted(&self, track: &str) -> bool {
        self.wanted.iter().any(|(t, _)| t == track)
    }

    /// Whether what the client should receive differs from what the last
    /// answer told it (so it should offer again).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The mid carrying `track`.
    pub fn slot_of(&self, track: &str) -> Option<&str> {
        self.slots.iter().find_map(|(mid, (_, s))| match s {
            Slot::Carries(t) if t == track => Some(mid.1.as_str()),
            _ => None,
        })
    }

    /// For the answer being sent: mid -> track carried, and the receive
    /// sections that carry nothing. Released slots become free.
    pub fn answer(&mut self) -> (BTreeMap<String, String>, Vec<String>) {
        let mut carried = BTreeMap::new();
        let mut idle = vec![];
        for (mid, (_, slot)) in &mut self.slots {
            match slot {
                Slot::Carries(t) => {
                    carried.insert(mid.1.clone(), t.clone());
                }
                Slot::Released => {
                    *slot = Slot::Free;
                    idle.push(mid.1.clone());
                }
                Slot::Free => idle.push(mid.1.clone()),
            }
        }
        self.changed = false;
        self.place();
        (carried, idle)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sdp::Direction;
    use super::*;

    fn recv(mid: &str, kind: SectionKind) -> OfferSection {
        OfferSection {
            mid: mid.into(),
            kind,
            direction: Direction::RecvOnly,
            rejected: false,
            msid_track: None,
        }
    }

    fn pool() -> Vec<OfferSection> {
        vec![
            recv("0", SectionKind::Audio),
            recv("1", SectionKind::Audio),
            recv("2", SectionKind::Video),
            recv("3", SectionKind::Video),
        ]
    }

    #[test]
    fn tracks_take_free_slots_of_their_kind_in_mid_order() {
        let mut s = ReceiveSlots::default();
        s.offered(&pool());
        s.want("TR_a", SectionKind::Audio);
        s.want("TR_v", SectionKind::Video);
        assert!(s.changed());
        assert_eq!(s.slot_of("TR_a"), Some("0"));
        assert_eq!(s.slot_of("TR_v"), Some("2"));
        let (carried, idle) = s.answer();
        assert_eq!(carried.len(), 2);
        assert_eq!(idle, vec!["1".to_string(), "3".to_string()]);
        assert!(!s.changed());
        assert_eq!(s.missing(), Requirement::default());
    }

    #[test]
    fn a_short_pool_asks_for_more_sections_and_fills_them() {
        let mut s = ReceiveSlots::default();
        s.offered(&pool());
        for t in ["TR_1", "TR_2", "TR_3"] {
            s.want(t, SectionKind::Video);
        }
        assert_eq!(s.missing(), Requirement { audio: 0, video: 1 });
        let mut more = pool();
        more.push(recv("7", SectionKind::Video));
        s.offered(&more);
        assert_eq!(s.slot_of("TR_3"), Some("7"));
        assert_eq!(s.missing(), Requirement::default());
    }

    #[test]
    fn a_released_slot_is_reused_only_after_an_answer_idled_it() {
        let mut s = ReceiveSlots::default();
        s.offered(&pool()[2..3]);
        s.want("TR_old", SectionKind::Video);
        let _ = s.answer();
        assert!(s.drop_track("TR_old"));
        s.want("TR_new", SectionKind::Video);
        // Not on the same section in the same answer; nor asked for,
        // since the released one frees with this answer.
        assert_eq!(s.slot_of("TR_new"), None);
        assert_eq!(s.missing(), Requirement::default());
        assert!(s.changed());
        let (carried, idle) = s.answer();
        assert!(carried.is_empty());
        assert_eq!(idle, vec!["2".to_string()]);
        // Now free: the new track takes it, to be told in the next answer.
        assert_eq!(s.slot_of("TR_new"), Some("2"));
        assert!(s.changed());
    }

    #[test]
    fn a_section_no_longer_offered_leaves_the_pool() {
        let mut s = ReceiveSlots::default();
        s.offered(&pool());
        s.want("TR_v", SectionKind::Video);
        assert_eq!(s.slot_of("TR_v"), Some("2"));
        let mut fewer = pool();
        fewer[2].rejected = true;
        s.offered(&fewer);
        assert_eq!(s.slot_of("TR_v"), Some("3"));
        assert!(!s.drop_track("TR_unknown"));
    }
}
