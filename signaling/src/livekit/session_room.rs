//! The room's news for one LiveKit client: participants joining,
//! changing and leaving, tracks published, unpublished and muted — kept in
//! the session's view of the room (versions only grow) and passed on as
//! `update`s; remote tracks placed on, or taken off, the client's receive
//! sections.

use super::*;

impl Session {
    pub(super) fn participant(
        &mut self,
        p: crate::room_protocol::ParticipantInfo,
        out: &mut Vec<Output>,
    ) {
        if p.sid == self.me.sid {
            self.me.name = p.name;
            self.me.metadata = p.metadata;
            self.me.version += 1;
            self.send_update(vec![self.me.clone()], out);
            return;
        }
        let version = self.others.get(&p.sid).map_or(0, |i| i.version);
        let mut info = convert::participant_info(&p, proto::participant_info::State::Active);
        info.version = version + 1;
        let tracks: Vec<(String, SectionKind)> = p
            .tracks
            .iter()
            .map(|t| (t.sid.clone(), SectionKind::from(t.kind)))
            .collect();
        self.others.insert(p.sid.clone(), info.clone());
        self.send_update(vec![info], out);
        for (track, kind) in tracks {
            self.want(&track, kind);
        }
        self.request_offer(out);
    }

    pub(super) fn left(&mut self, sid: &str, out: &mut Vec<Output>) {
        let Some(mut info) = self.others.remove(sid) else {
            return;
        };
        for t in &info.tracks {
            self.slots.drop_track(&t.sid);
            self.disabled.remove(&t.sid);
        }
        info.state = proto::participant_info::State::Disconnected as i32;
        info.version += 1;
        info.tracks.clear();
        self.speakers.remove(sid);
        self.send_update(vec![info], out);
        self.request_offer(out);
    }

    pub(super) fn published(
        &mut self,
        participant: &str,
        track: &crate::room_protocol::TrackInfo,
        out: &mut Vec<Output>,
    ) {
        if participant == self.me.sid {
            let info = self
                .own
                .values()
                .find(|t| t.sid == track.sid)
                .cloned()
                .unwrap_or_else(|| convert::track_info(track));
            self.me.tracks.retain(|t| t.sid != track.sid);
            self.me.tracks.push(info);
            self.me.is_publisher = true;
            self.me.version += 1;
            self.send_update(vec![self.me.clone()], out);
            return;
        }
        let Some(info) = self.others.get_mut(participant) else {
            return;
        };
        info.tracks.retain(|t| t.sid != track.sid);
        info.tracks.push(convert::track_info(track));
        info.is_publisher = true;
        info.version += 1;
        let info = info.clone();
        self.send_update(vec![info], out);
        self.want(&track.sid, SectionKind::from(track.kind));
        self.request_offer(out);
    }

    pub(super) fn unpublished(&mut self, participant: &str, track: &str, out: &mut Vec<Output>) {
        if participant == self.me.sid {
            self.me.tracks.retain(|t| t.sid != track);
            self.own.retain(|_, t| t.sid != track);
            self.me.version += 1;
            out.push(Output::client(Response::TrackUnpublished(
                proto::TrackUnpublishedResponse {
                    track_sid: track.to_string(),
                },
            )));
            self.send_update(vec![self.me.clone()], out);
            return;
        }
        self.slots.drop_track(track);
        self.unsubscribed.remove(track);
        self.disabled.remove(track);
        // The worker names no publisher when a subscribed track ended.
        let owner = self.publisher_of(track);
        if let Some(info) = owner.and_then(|sid| self.others.get_mut(&sid)) {
            info.tracks.retain(|t| t.sid != track);
            info.version += 1;
            let info = info.clone();
            self.send_update(vec![info], out);
        }
        self.request_offer(out);
    }

    pub(super) fn muted(
        &mut self,
        participant: &str,
        track: &str,
        muted: bool,
        out: &mut Vec<Output>,
    ) {
        let info = if participant == self.me.sid {
            out.push(Output::client(Response::Mute(proto::MuteTrackRequest {
                sid: track.to_string(),
                muted,
            })));
            Some(&mut self.me)
        } else {
            self.others.get_mut(participant)
        };
        let Some(info) = info else {
            return;
        };
        for t in info.tracks.iter_mut().filter(|t| t.sid == track) {
            t.muted = muted;
        }
        info.version += 1;
        let info = info.clone();
        self.send_update(vec![info], out);
    }
}
