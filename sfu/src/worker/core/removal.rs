//! Liveness and removal: the housekeeping pass (sessions that stopped
//! answering, sockets gone past their grace period, the periodic quality
//! and layer metrics) and a participant's removal with everything that
//! hangs on it (its room membership, tracks, down-tracks, downlink or
//! owner, demultiplexing entries and metrics).

use super::*;

impl WorkerCore {
    pub(super) fn housekeeping(&mut self, now: Instant, transmit: &mut dyn FnMut(Transmit)) {
        let timeout = self.ctx.session_timeout;
        let expired: Vec<(ParticipantId, RemoveReason)> = self
            .participants
            .values()
            .filter_map(|p| {
                // A member that only receives (on its downlink) never
                // connects its own session: its downlink's liveness counts.
                if p.offered_at.is_none() && self.downlinks.contains_key(&p.id) {
                    return None;
                }
                if !p.is_alive() {
                    Some((p.id, RemoveReason::Closed))
                } else if p
                    .connecting_for(now)
                    .is_some_and(|t| t >= self.ctx.connect_timeout)
                {
                    Some((p.id, RemoveReason::ConnectTimeout))
                } else if p.idle_for(now) >= timeout {
                    Some((
                        p.id,
                        if p.connected {
                            RemoveReason::Timeout
                        } else {
                            RemoveReason::IceTimeout
                        },
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in expired {
            self.remove(now, id, reason, transmit);
        }
        for id in self.expired_sockets(now) {
            self.remove(now, id, RemoveReason::ReconnectTimeout, transmit);
        }
        for id in self.idle_relays(now) {
            self.remove(now, id, RemoveReason::RelayIdle, transmit);
        }
        let remb = Bitrate::bps(REMB_CEILING_BPS);
        for p in self.participants.values_mut() {
            if p.send_remb(remb) {
                self.dirty.push(p.id);
            }
            self.media_counters
                .ssrc_changes
                .inc_by(std::mem::take(&mut p.ssrc_changes));
        }
        if now >= self.next_quality {
            self.next_quality = now + conference::QUALITY_INTERVAL;
            self.poll_quality(now);
        }
        self.layer_metrics(now);
        self.counts.flush(&self.ctx.metrics);
    }

    pub(super) fn remove(
        &mut self,
        now: Instant,
        id: ParticipantId,
        reason: RemoveReason,
        transmit: &mut dyn FnMut(Transmit),
    ) {
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        let _span = p.span.clone().entered();
        p.close();
        let mut ignored = vec![];
        p.poll(now, transmit, &mut ignored); // flush DTLS close_notify / RTCP BYE
        self.demux.remove_participant(id);
        self.by_resource.remove(&p.resource_id);
        self.ctx.registry.remove_resource(&p.resource_id);

        let m = &self.ctx.metrics;
        m.participants
            .with_label_values(&[kind_label(p.kind)])
            .dec();
        m.rtc_instances.dec();
        m.sessions
            .with_label_values(&[if p.connected {
                "connected"
            } else {
                "connecting"
            }])
            .dec();
        m.sessions_ended.with_label_values(&[reason.as_str()]).inc();
        if p.frame_order.values().any(|f| f.has_bframes()) {
            let _ = m
                .publishers_with_bframes
                .remove_label_values(&[&*p.room, p.identity.as_str()]);
        }
        tracing::info!(reason = reason.as_str(), "participant left");
        // A member and its downlink leave together.
        let downlink = self.downlinks.remove(&id).map(|d| d.leg);
        self.member_left(now, &mut p, reason);
        self.uplinks.remove(&id);

        let m = &self.ctx.metrics;
        let mut actions = vec![];
        let mut room_empty = false;
        let mut fanout = false;
        let mut satellite = false;
        if let Some(room) = self.rooms.get_mut(&p.room) {
            for kind in room.router.track_kinds_of(id) {
                m.tracks.with_label_values(&[media_label(kind)]).dec();
            }
            actions = room.router.remove_participant(id, now);
            room.participants.remove(&id);
            room_empty = room.participants.is_empty();
            fanout = room.fanout_of.is_some();
            satellite = room.satellite;
        }
        if room_empty && satellite {
            self.rooms.remove(&p.room);
            self.ctx.registry.release_room(&p.room, self.ctx.index);
            tracing::info!(room = %p.room, "satellite closed (empty)");
        } else if room_empty && fanout {
            self.rooms.remove(&p.room);
            tracing::info!(room = %p.room, "fan-out closed (empty)");
        } else if room_empty {
            self.rooms.remove(&p.room);
            self.ctx.registry.release_room(&p.room, self.ctx.index);
            m.rooms.dec();
            tracing::info!(room = %p.room, "room closed (empty)");
            self.webhook(crate::webhooks::WebhookEvent::new("room_finished", &p.room));
        }
        for action in actions {
            self.execute(action);
        }
        for other in downlink.into_iter().chain(p.leg_of) {
            self.remove(now, other, reason, transmit);
        }
    }
}
