//! What the worker tells its rooms on a timer: dynacast (the simulcast
//! layers anyone can use), active speakers and connection quality.

use super::*;

impl WorkerCore {
    /// Dynacast: tell conference publishers which simulcast layers anyone
    /// can use, so their encoders skip the others.
    pub(in crate::worker::core) fn poll_dynacast(&mut self, now: Instant) {
        self.poll_relay_wishes();
        for p in self.participants.values_mut() {
            if p.kind != SessionKind::Room {
                continue;
            }
            let Some(room) = self.rooms.get(&p.room) else {
                continue;
            };
            let Some(m) = p.member.as_mut() else {
                continue;
            };
            let mut messages = vec![];
            for (mid, track) in &mut m.published {
                if !track.info.simulcast {
                    continue;
                }
                let key = TrackKey {
                    publisher: p.id,
                    mid: *mid,
                };
                let Some(wanted) = room.router.wanted_layers(key) else {
                    continue;
                };
                let wanted = wanted
                    .into_iter()
                    .filter_map(|(id, on)| Some((id?.to_string(), on)))
                    .collect();
                messages.extend(track.wish_layers(wanted, now));
            }
            match self.uplinks.get_mut(&p.id) {
                // A bridge's far tracks: its hosting node sends the layers.
                Some(up) => {
                    for msg in messages {
                        if let ServerMessage::Layers { track, active } = msg {
                            tracing::debug!(target: "sfu::dynacast", bridge = p.id, %track, ?active, "wish to the hosting node");
                            up.tell(ClientMessage::Layers { track, active });
                        }
                    }
                }
                None => {
                    for msg in messages {
                        if let ServerMessage::Layers { track, active } = &msg {
                            tracing::debug!(target: "sfu::dynacast", publisher = p.id, %track, ?active, "layers asked of a publisher");
                        }
                        m.send(msg, now);
                    }
                }
            }
        }
    }

    /// Report changed speaker lists to the rooms' members.
    pub(in crate::worker::core) fn poll_speakers(&mut self, now: Instant) {
        let mut reports = vec![];
        for (name, room) in &mut self.rooms {
            if let Some(list) = room.speakers.poll(now) {
                reports.push((name.clone(), list));
            }
        }
        for (room, list) in reports {
            // Loudest first: a participant with two voices counts once.
            let mut speakers: Vec<Speaker> = vec![];
            for (track, level) in list {
                if self.is_relay_ingest(track.publisher) {
                    continue;
                }
                let Some(m) = self
                    .participants
                    .get(&track.publisher)
                    .and_then(|p| p.member.as_ref())
                else {
                    continue;
                };
                let sid = match m.published.get(&track.mid) {
                    Some(t) => m.publisher_sid(t),
                    None if m.bridge => continue,
                    None => m.sid.clone(),
                };
                if !speakers.iter().any(|s| s.sid == sid) {
                    speakers.push(Speaker { sid, level });
                }
            }
            self.broadcast(&room, None, &ServerMessage::Speakers { speakers }, now);
        }
    }

    /// Grade every member's link and tell rooms what changed.
    pub(in crate::worker::core) fn poll_quality(&mut self, now: Instant) {
        let mut updates: HashMap<Arc<str>, Vec<QualityUpdate>> = HashMap::new();
        let report = |p: &Participant| LinkReport {
            ingress_loss: p.link.ingress_loss,
            egress_loss: p.link.egress_loss,
            rtt: p.link.rtt,
            silent_for: p.idle_for(now),
            connected: p.connected,
        };
        // A member that only receives is graded by its downlink.
        let downlinks: HashMap<ParticipantId, LinkReport> = self
            .participants
            .values()
            .filter_map(|p| Some((p.leg_of?, report(p))))
            .collect();
        for p in self.participants.values_mut() {
            let link = match downlinks.get(&p.id) {
                Some(down) if p.offered_at.is_none() => *down,
                _ => report(p),
            };
            let Some(m) = p.member.as_mut().filter(|m| !m.bridge) else {
                continue;
            };
            let quality = score(&link);
            if quality != m.quality {
                m.quality = quality;
                updates
                    .entry(p.room.clone())
                    .or_default()
                    .push(QualityUpdate {
                        sid: m.sid.clone(),
                        quality,
                    });
            }
        }
        for (room, updates) in updates {
            self.broadcast(
                &room,
                None,
                &ServerMessage::ConnectionQuality { updates },
                now,
            );
        }
    }
}
