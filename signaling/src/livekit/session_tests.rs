//! The session's translation, message by message, as a LiveKit client and
//! the room see it.

use super::*;
use crate::room_protocol::{MediaKindName, ParticipantInfo, Quality, TrackInfo, TrackSource};

fn track(sid: &str, kind: MediaKindName) -> TrackInfo {
    TrackInfo {
        sid: sid.into(),
        kind,
        source: TrackSource::Camera,
        name: "cam".into(),
        muted: false,
        simulcast: false,
        layers: vec![],
    }
}

fn person(sid: &str, tracks: Vec<TrackInfo>) -> ParticipantInfo {
    ParticipantInfo {
        sid: sid.into(),
        identity: format!("{sid}-id"),
        name: sid.into(),
        metadata: String::new(),
        tracks,
        quality: Quality::Excellent,
    }
}

fn joined(others: Vec<ParticipantInfo>) -> ServerMessage {
    ServerMessage::Joined {
        room: "r".into(),
        resumed: false,
        participant: person("PA_me", vec![]),
        participants: others,
        resume_token: "x".into(),
        ice_servers: vec![],
        limits: crate::room_protocol::ClientLimits {
            max_tracks: 8,
            max_data_message_bytes: 1000,
        },
    }
}

fn offer_sdp(extra: &str) -> String {
    format!(
        "v=0\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n{extra}"
    )
}

fn offer(id: u32, extra: &str) -> proto::SessionDescription {
    proto::SessionDescription {
        r#type: "offer".into(),
        sdp: offer_sdp(extra),
        id,
        mid_to_track_id: Default::default(),
    }
}

fn session(first_offer: Option<proto::SessionDescription>) -> Session {
    Session::new(Joining {
        can_publish: true,
        can_subscribe: true,
        can_publish_data: true,
        auto_subscribe: true,
        offer: first_offer,
        dual: false,
    })
}

fn responses(out: &[Output]) -> Vec<&Response> {
    out.iter()
        .filter_map(|o| match o {
            Output::Client(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect()
}

/// What an offer to the room publishes (by mid) and subscribes (mid -> track).
type OfferMaps<'a> = (
    &'a BTreeMap<String, PublishInfo>,
    &'a BTreeMap<String, String>,
);

fn room_offer(out: &[Output]) -> Option<OfferMaps<'_>> {
    out.iter().find_map(|o| match o {
        Output::Room(ClientMessage::Offer {
            publish, subscribe, ..
        }) => Some((publish, subscribe)),
        _ => None,
    })
}

#[test]
fn the_join_response_comes_first_then_the_answer_to_the_join_offer() {
    let mut s = session(Some(offer(1, "")));
    let alice = person("PA_alice", vec![track("TR_a", MediaKindName::Audio)]);
    let out = s.on_room(joined(vec![alice]));
    let Some(Response::Join(join)) = responses(&out).first().copied() else {
        panic!("first response is not the join: {out:?}");
    };
    assert_eq!(
        join.participant.as_ref().map(|p| p.sid.as_str()),
        Some("PA_me")
    );
    assert_eq!(join.other_participants.len(), 1);
    assert!(join.ping_interval > 0 && join.ping_timeout > 0);
    assert!(!join
        .server_info
        .as_ref()
        .expect("server info")
        .version
        .is_empty());
    // The join offer goes to the room with alice's audio on the audio section.
    let (_, subscribe) = room_offer(&out).expect("offer to the room");
    assert_eq!(subscribe.get("0").map(String::as_str), Some("TR_a"));
    let answer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=sendonly\r\na=msid:s t\r\n\
m=video 9 X 96\r\na=mid:1\r\na=sendonly\r\na=msid:u v\r\n";
    let out = s.on_room(ServerMessage::Answer { sdp: answer.into() });
    let Some(Response::Answer(a)) = responses(&out).first().copied() else {
        panic!("no answer: {out:?}");
    };
    assert_eq!(a.id, 1, "the answer echoes the offer's id");
    assert_eq!(a.mid_to_track_id.get("0").map(String::as_str), Some("TR_a"));
    assert!(a.sdp.contains("a=msid:PA_alice|TR_a TR_a"));
    assert!(a.sdp.contains("a=mid:1\r\na=inactive\r\n"), "{}", a.sdp);
}

#[test]
fn a_published_track_is_announced_before_the_client_is_asked_to_offer() {
    let mut s = session(None);
    s.on_room(joined(vec![person("PA_bob", vec![])]));
    s.on_client(Request::Offer(offer(1, "")), 0);
    s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    let out = s.on_room(ServerMessage::TrackPublished {
        participant: "PA_bob".into(),
        track: track("TR_v1", MediaKindName::Video),
    });
    let r = responses(&out);
    assert!(matches!(r[0], Response::Update(u) if u.participants[0].tracks.len() == 1));
    assert!(matches!(r[1], Response::MediaSectionsRequirement(m) if m.num_videos == 0));
    // A second video while the client has not offered: no second request.
    let out = s.on_room(ServerMessage::TrackPublished {
        participant: "PA_bob".into(),
        track: track("TR_v2", MediaKindName::Video),
    });
    assert!(!responses(&out)
        .iter()
        .any(|r| matches!(r, Response::MediaSectionsRequirement(_))));
    // The offer places the first; the answer then asks for one more line.
    let out = s.on_client(Request::Offer(offer(2, "")), 0);
    let (_, subscribe) = room_offer(&out).expect("offer");
    assert_eq!(subscribe.get("1").map(String::as_str), Some("TR_v1"));
    let out = s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    assert!(responses(&out)
        .iter()
        .any(|r| matches!(r, Response::MediaSectionsRequirement(m) if m.num_videos == 1)));
}

#[test]
fn add_track_is_answered_at_once_and_its_sid_reaches_the_room_with_the_offer() {
    let mut s = session(None);
    s.on_room(joined(vec![]));
    let out = s.on_client(
        Request::AddTrack(proto::AddTrackRequest {
            cid: "cam-cid".into(),
            r#type: proto::TrackType::Video as i32,
            source: proto::TrackSource::Camera as i32,
            width: 1280,
            height: 720,
            ..Default::default()
        }),
        0,
    );
    let Some(Response::TrackPublished(p)) = responses(&out).first().copied() else {
        panic!("no track_published: {out:?}");
    };
    let sid = p.track.as_ref().expect("track").sid.clone();
    assert!(sid.starts_with("TR_"));
    let sending =
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:stream cam-cid\r\n";
    let out = s.on_client(Request::Offer(offer(1, sending)), 0);
    let (publish, _) = room_offer(&out).expect("offer");
    assert_eq!(publish.get("2").and_then(|p| p.sid.clone()), Some(sid));
    assert_eq!(
        publish.get("2").map(|p| p.source),
        Some(TrackSource::Camera)
    );
}

#[test]
fn a_leaving_participant_is_disconnected_and_its_section_idled() {
    let mut s = session(Some(offer(1, "")));
    s.on_room(joined(vec![person(
        "PA_bob",
        vec![track("TR_v", MediaKindName::Video)],
    )]));
    s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    let out = s.on_room(ServerMessage::ParticipantLeft {
        sid: "PA_bob".into(),
        identity: "bob".into(),
    });
    let r = responses(&out);
    let Response::Update(u) = r[0] else {
        panic!("no update: {out:?}");
    };
    assert_eq!(
        u.participants[0].state,
        proto::participant_info::State::Disconnected as i32
    );
    assert!(u.participants[0].version > 1, "versions only grow");
    assert!(matches!(r[1], Response::MediaSectionsRequirement(_)));
    let out = s.on_client(Request::Offer(offer(2, "")), 0);
    let (_, subscribe) = room_offer(&out).expect("offer");
    assert!(subscribe.is_empty());
}

#[test]
fn pings_are_answered_and_a_leave_is_echoed_and_closes() {
    let mut s = session(None);
    s.on_room(joined(vec![]));
    let out = s.on_client(
        Request::PingReq(proto::Ping {
            timestamp: 7,
            rtt: 0,
        }),
        99,
    );
    assert_eq!(
        responses(&out),
        vec![&Response::PongResp(proto::Pong {
            last_ping_timestamp: 7,
            timestamp: 99
        })]
    );
    let out = s.on_client(Request::Leave(proto::LeaveRequest::default()), 0);
    assert!(matches!(out[0], Output::Room(ClientMessage::Leave {})));
    assert!(matches!(out.last(), Some(Output::Close(_))));
}

#[test]
fn an_unsubscribe_frees_the_section_and_tells_the_room() {
    let mut s = session(Some(offer(1, "")));
    s.on_room(joined(vec![person(
        "PA_bob",
        vec![track("TR_v", MediaKindName::Video)],
    )]));
    s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    let out = s.on_client(
        Request::Subscription(proto::UpdateSubscription {
            track_sids: vec!["TR_v".into()],
            subscribe: false,
            participant_tracks: vec![],
        }),
        0,
    );
    assert!(out.iter().any(|o| matches!(o,
        Output::Room(ClientMessage::Subscription { track, subscribed: Some(false), .. }) if track == "TR_v")));
    // Published again later: it stays unsubscribed.
    let out = s.on_room(ServerMessage::ParticipantUpdated {
        participant: person("PA_bob", vec![track("TR_v", MediaKindName::Video)]),
    });
    let _ = out;
    let out = s.on_client(Request::Offer(offer(2, "")), 0);
    assert!(room_offer(&out).expect("offer").1.is_empty());
}

#[test]
fn a_disabled_track_keeps_its_section_and_is_bound_again_when_enabled() {
    let mut s = session(Some(offer(1, "")));
    s.on_room(joined(vec![person(
        "PA_bob",
        vec![track("TR_v", MediaKindName::Video)],
    )]));
    s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    let setting = |disabled| {
        Request::TrackSetting(proto::UpdateTrackSettings {
            track_sids: vec!["TR_v".into()],
            disabled,
            ..Default::default()
        })
    };
    let out = s.on_client(setting(true), 0);
    assert!(out.iter().any(|o| matches!(o,
        Output::Room(ClientMessage::Subscription { track, subscribed: Some(false), .. }) if track == "TR_v")));
    // Later offers leave it unbound, but the answer still names it.
    let out = s.on_client(Request::Offer(offer(2, "")), 0);
    assert!(room_offer(&out).expect("offer").1.is_empty());
    let out = s.on_room(ServerMessage::Answer { sdp: offer_sdp("") });
    let Some(Response::Answer(a)) = responses(&out).first().copied() else {
        panic!("no answer: {out:?}");
    };
    assert_eq!(a.mid_to_track_id.get("1").map(String::as_str), Some("TR_v"));
    // Enabled again: a re-offer is asked for, and binds it.
    let out = s.on_client(setting(false), 0);
    assert!(responses(&out)
        .iter()
        .any(|r| matches!(r, Response::MediaSectionsRequirement(_))));
    let out = s.on_client(Request::Offer(offer(3, "")), 0);
    assert_eq!(
        room_offer(&out)
            .expect("offer")
            .1
            .get("1")
            .map(String::as_str),
        Some("TR_v")
    );
}

fn downlink(out: &[Output]) -> Option<(&Vec<String>, &Vec<String>, bool)> {
    out.iter().find_map(|o| match o {
        Output::Room(ClientMessage::Downlink {
            tracks,
            paused,
            restart_ice,
        }) => Some((tracks, paused, *restart_ice)),
        _ => None,
    })
}

#[test]
fn in_the_dual_mode_the_worker_offers_what_the_client_receives() {
    let mut s = Session::new(Joining {
        can_publish: true,
        can_subscribe: true,
        can_publish_data: true,
        auto_subscribe: true,
        offer: None,
        dual: true,
    });
    let alice = person("PA_alice", vec![track("TR_a", MediaKindName::Video)]);
    let out = s.on_room(joined(vec![alice]));
    let Some(Response::Join(join)) = responses(&out).first().copied() else {
        panic!("first response is not the join: {out:?}");
    };
    assert!(
        join.subscriber_primary,
        "the server's connection comes first"
    );
    // The worker is told at once (it offers the connection and its data
    // channels), and never the client to offer for receiving.
    assert_eq!(
        downlink(&out),
        Some((&vec!["TR_a".to_string()], &vec![], false))
    );
    assert!(!responses(&out)
        .iter()
        .any(|r| matches!(r, Response::MediaSectionsRequirement(_))));
    // The worker's offer reaches the client with its placements; the
    // client's answer goes back.
    let out = s.on_room(ServerMessage::Offer {
        sdp: "v=0\r\n".into(),
        tracks: BTreeMap::from([("0".to_string(), "TR_a".to_string())]),
    });
    let Some(Response::Offer(o)) = responses(&out).first().copied() else {
        panic!("no offer: {out:?}");
    };
    assert_eq!(o.id, 1);
    assert_eq!(o.mid_to_track_id.get("0").map(String::as_str), Some("TR_a"));
    let answer = proto::SessionDescription {
        r#type: "answer".into(),
        sdp: "v=0\r\nanswer".into(),
        id: 1,
        mid_to_track_id: Default::default(),
    };
    let out = s.on_client(Request::Answer(answer), 0);
    assert!(matches!(
        out.as_slice(),
        [Output::Room(ClientMessage::Answer { sdp })] if sdp.ends_with("answer")
    ));
    // The client's own offer publishes and subscribes nothing.
    let out = s.on_client(Request::Offer(offer(2, "")), 0);
    let (_, subscribe) = room_offer(&out).expect("offer to the room");
    assert!(subscribe.is_empty());
    // A hidden tile pauses the track on its line; a new publisher's
    // track is added; nothing is sent when nothing changed.
    let setting = proto::UpdateTrackSettings {
        track_sids: vec!["TR_a".into()],
        disabled: true,
        ..Default::default()
    };
    let out = s.on_client(Request::TrackSetting(setting), 0);
    assert_eq!(
        downlink(&out).map(|(t, p, _)| (t.len(), p.clone())),
        Some((1, vec!["TR_a".to_string()]))
    );
    let out = s.on_room(ServerMessage::TrackPublished {
        participant: "PA_alice".into(),
        track: track("TR_b", MediaKindName::Audio),
    });
    assert_eq!(
        downlink(&out).map(|(t, _, _)| t.clone()),
        Some(vec!["TR_a".to_string(), "TR_b".to_string()])
    );
    let out = s.on_client(Request::Ping(1), 0);
    assert!(downlink(&out).is_none());
}
