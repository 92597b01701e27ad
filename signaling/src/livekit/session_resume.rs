//! A session carried over to a new signal connection (LiveKit's resume:
//! the client reconnects with `reconnect` and its participant sid after
//! its WebSocket dropped): the worker re-attaches the participant, whose
//! media and subscriptions never stopped, and the client gets a
//! `ReconnectResponse` and then every participant, so it does not take
//! anyone it missed for gone. Placements on its receive sections are
//! kept; its ICE-restart offer is answered as any offer.

use super::*;

impl Session {
    /// The worker's token for re-attaching this participant.
    pub fn resume_token(&self) -> &str {
        &self.resume_token
    }

    /// The session ended (the client left, or was removed or refused):
    /// there is nothing to resume.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The worker re-attached the participant: tell the client, and bring
    /// its view of the room up to date.
    pub(super) fn resumed(
        &mut self,
        me: crate::room_protocol::ParticipantInfo,
        now: Vec<crate::room_protocol::ParticipantInfo>,
        ice_servers: Vec<crate::IceServer>,
        out: &mut Vec<Output>,
    ) {
        // Answers owed to the old connection will not come.
        self.answers.clear();
        self.awaiting_offer = false;
        out.push(Output::client(Response::Reconnect(
            proto::ReconnectResponse {
                ice_servers: ice_servers.iter().map(convert::ice_server).collect(),
                ..Default::default()
            },
        )));
        self.me.name = me.name;
        self.me.metadata = me.metadata;
        self.me.state = proto::participant_info::State::Active as i32;
        self.me.version += 1;
        let present: BTreeSet<String> = now.iter().map(|p| p.sid.clone()).collect();
        let gone: Vec<String> = self
            .others
            .keys()
            .filter(|sid| !present.contains(*sid))
            .cloned()
            .collect();
        for sid in gone {
            self.left(&sid, out);
        }
        let mut everyone = vec![self.me.clone()];
        for p in now {
            let version = self.others.get(&p.sid).map_or(0, |i| i.version);
            let before: BTreeSet<String> = self
                .others
                .get(&p.sid)
                .map(|i| i.tracks.iter().map(|t| t.sid.clone()).collect())
                .unwrap_or_default();
            let mut info = convert::participant_info(&p, proto::participant_info::State::Active);
            info.version = version + 1;
            for t in &before {
                if !p.tracks.iter().any(|n| &n.sid == t) {
                    self.slots.drop_track(t);
                }
            }
            for t in &p.tracks {
                self.want(&t.sid, SectionKind::from(t.kind));
            }
            self.others.insert(p.sid.clone(), info.clone());
            everyone.push(info);
        }
        self.send_update(everyone, out);
        if self.joining.dual {
            // The server's connection restarts ICE, as the client's own
            // does with its next offer.
            self.restart_downlink = true;
            self.request_offer(out);
        }
    }
}
