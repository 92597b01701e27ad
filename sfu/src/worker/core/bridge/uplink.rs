//! The satellite's end of a bridge as state: [`Uplink`] keeps what the
//! hosting node has been told and what it still must be told (local
//! tracks to send, far tracks to receive, lines to stop, the offer in
//! flight).

use super::*;

/// A line added by the offer in flight.
#[derive(Debug)]
pub(super) enum OfferedLine {
    /// Sends local track `sid` upstream.
    Send {
        mid: Mid,
        sid: String,
        streams: usize,
    },
    /// Receives far track `sid`.
    Receive { mid: Mid, sid: String },
}

/// The satellite's end of a bridge.
#[derive(Debug)]
pub(in crate::worker::core) struct Uplink {
    pub(super) upstream: mpsc::Sender<ClientMessage>,
    pub(super) home_addr: Option<SocketAddr>,
    /// Local participants told upstream (sids).
    pub(super) announced: HashSet<String>,
    /// The hosting node's tracks of far participants: sid -> (owner, info).
    pub(super) far_tracks: HashMap<String, (String, TrackInfo)>,
    /// Local tracks to send, far tracks to receive, lines to stop: the
    /// next offer's changes.
    pub(super) to_send: Vec<String>,
    pub(super) to_receive: Vec<String>,
    pub(super) to_stop: Vec<Mid>,
    /// Negotiated lines: sending a local track / receiving a far one (sids).
    pub(super) sending: HashMap<Mid, String>,
    pub(super) receiving: HashMap<Mid, String>,
    /// Lines of the offer in flight.
    pub(super) offered: Vec<OfferedLine>,
    pub(super) in_flight: bool,
    /// The hosting node can no longer be told anything: close the bridge.
    pub(super) broken: bool,
}

impl Uplink {
    pub(super) fn new(
        upstream: mpsc::Sender<ClientMessage>,
        home_addr: Option<SocketAddr>,
    ) -> Uplink {
        Uplink {
            upstream,
            home_addr,
            announced: HashSet::new(),
            far_tracks: HashMap::new(),
            to_send: vec![],
            to_receive: vec![],
            to_stop: vec![],
            sending: HashMap::new(),
            receiving: HashMap::new(),
            offered: vec![],
            in_flight: false,
            broken: false,
        }
    }

    pub(in crate::worker::core) fn tell(&mut self, msg: ClientMessage) {
        if self.upstream.try_send(msg).is_err() {
            self.broken = true;
        }
    }

    /// Local track `sid` is sent, or will be.
    pub(super) fn knows_local(&self, sid: &str) -> bool {
        self.to_send.iter().any(|s| s == sid)
            || self.sending.values().any(|s| s == sid)
            || self
                .offered
                .iter()
                .any(|l| matches!(l, OfferedLine::Send { sid: s, .. } if s == sid))
    }

    pub(super) fn has_changes(&self) -> bool {
        !(self.to_send.is_empty() && self.to_receive.is_empty() && self.to_stop.is_empty())
    }

    /// Stop sending local track `sid` (wherever it is in negotiation).
    pub(super) fn stop_sending(&mut self, sid: &str) -> Option<Mid> {
        self.to_send.retain(|s| s != sid);
        end_line(&mut self.sending, &mut self.to_stop, sid)
    }

    /// Stop receiving far track `sid`; the line it came on, if negotiated.
    pub(super) fn stop_receiving(&mut self, sid: &str) -> Option<Mid> {
        self.far_tracks.remove(sid);
        self.to_receive.retain(|s| s != sid);
        end_line(&mut self.receiving, &mut self.to_stop, sid)
    }

    pub(super) fn want_far_track(&mut self, owner: &str, info: TrackInfo) {
        let sid = info.sid.clone();
        let known = self.far_tracks.contains_key(&sid);
        self.far_tracks
            .insert(sid.clone(), (owner.to_string(), info));
        if !known {
            self.to_receive.push(sid);
        }
    }
}

/// The negotiated line of track `sid` in `lines` ends: it goes in the
/// next offer as stopped.
fn end_line(lines: &mut HashMap<Mid, String>, to_stop: &mut Vec<Mid>, sid: &str) -> Option<Mid> {
    let mid = lines.iter().find(|(_, s)| *s == sid).map(|(m, _)| *m)?;
    lines.remove(&mid);
    to_stop.push(mid);
    Some(mid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::room_protocol::TrackSource;

    fn track(sid: &str) -> TrackInfo {
        TrackInfo {
            sid: sid.into(),
            kind: MediaKindName::Video,
            source: TrackSource::Camera,
            name: "camera".into(),
            muted: false,
            simulcast: true,
            layers: vec![],
        }
    }

    fn uplink() -> (Uplink, mpsc::Receiver<ClientMessage>) {
        let (tx, rx) = mpsc::channel(4);
        (Uplink::new(tx, None), rx)
    }

    #[test]
    fn a_far_track_is_asked_for_once_and_its_end_stops_its_line() {
        let (mut up, _rx) = uplink();
        up.want_far_track("PA_a", track("TR_a_1"));
        up.want_far_track("PA_a", track("TR_a_1")); // told again (joined + trackPublished)
        assert_eq!(up.to_receive, vec!["TR_a_1".to_string()]);
        // Negotiated on line "x": ending it stops the line.
        up.to_receive.clear();
        up.receiving.insert(Mid::from("x"), "TR_a_1".into());
        assert_eq!(up.stop_receiving("TR_a_1"), Some(Mid::from("x")));
        assert_eq!(up.to_stop, vec![Mid::from("x")]);
        assert!(up.far_tracks.is_empty());
        // Ended before its line was offered: nothing to stop.
        up.want_far_track("PA_a", track("TR_a_2"));
        assert_eq!(up.stop_receiving("TR_a_2"), None);
        assert!(up.to_receive.is_empty());
    }

    #[test]
    fn a_local_track_is_known_queued_offered_or_sent() {
        let (mut up, _rx) = uplink();
        assert!(!up.knows_local("TR_b_1"));
        up.to_send.push("TR_b_1".into());
        assert!(up.knows_local("TR_b_1"));
        up.to_send.clear();
        up.offered.push(OfferedLine::Send {
            mid: Mid::from("y"),
            sid: "TR_b_1".into(),
            streams: 3,
        });
        assert!(up.knows_local("TR_b_1"));
        up.offered.clear();
        up.sending.insert(Mid::from("y"), "TR_b_1".into());
        assert!(up.knows_local("TR_b_1"));
        assert_eq!(up.stop_sending("TR_b_1"), Some(Mid::from("y")));
        assert!(!up.knows_local("TR_b_1"));
        assert!(up.has_changes(), "the stopped line goes in the next offer");
    }

    #[test]
    fn a_full_queue_to_the_hosting_node_breaks_the_bridge() {
        let (mut up, _rx) = uplink();
        for _ in 0..4 {
            up.tell(ClientMessage::Ping { id: None });
        }
        assert!(!up.broken);
        up.tell(ClientMessage::Ping { id: None });
        assert!(up.broken, "a message could not be queued");
    }

    #[test]
    fn wanted_streams_are_the_active_rids_slots() {
        let rids = relay_rids(3);
        let active = [("r0", true), ("r1", false), ("r2", true), ("q", true)]
            .into_iter()
            .map(|(r, on)| (r.to_string(), on))
            .collect();
        assert_eq!(wanted_streams(&rids, &active), vec![0, 2]);
        assert_eq!(
            wanted_streams(&rids, &Default::default()),
            Vec::<usize>::new()
        );
    }
}
