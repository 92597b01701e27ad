//! Rooms over LiveKit's client signalling end to end: real WebSockets to
//! `/rtc/v1` and str0m peers sending and receiving media and data packets
//! through the server (`common::livekit`).

mod common;

use common::livekit::{
    add_track, answered, enabled_qualities, join_and_publish, left, member_peer, receive_only,
    subscribe, user_packets, LkClient, RELIABLE,
};
use common::member::{ms, run, run_until, T};
use common::{TestPeer, TestServer};
use prost::Message as _;
use serde_json::{json, Value};
use sfu::config::ConfigArgs;
use signaling::livekit::proto;
use signaling::livekit::proto::signal_request::Message as Request;
use signaling::livekit::proto::signal_response::Message as Response;
use std::time::{Duration, Instant};
use str0m::media::{Direction, MediaKind};

fn token(server: &TestServer, room: &str, identity: &str) -> String {
    server.token(room, identity, true, true)
}

#[test]
fn two_members_see_hear_and_message_each_other() {
    let server = TestServer::start(30);
    let (mut a, mut pa, a_audio, a_video) =
        join_and_publish(&server.base, &token(&server, "meet", "alice"));

    let mut b =
        LkClient::connect(&server.base, &token(&server, "meet", "bob"), None).expect("bob joins");
    let others = b.join().other_participants.clone();
    assert_eq!(others.len(), 1, "bob sees alice: {others:?}");
    assert_eq!(others[0].identity, "alice");
    let sids: Vec<&str> = others[0].tracks.iter().map(|t| t.sid.as_str()).collect();
    assert!(
        sids.contains(&a_audio.as_str()) && sids.contains(&a_video.as_str()),
        "{sids:?}"
    );
    assert!(others[0]
        .tracks
        .iter()
        .any(|t| t.source == proto::TrackSource::Camera as i32));
    a.wait(
        0,
        |m| matches!(m, Response::Update(u) if u.participants.iter().any(|p| p.identity == "bob")),
        T,
        &mut || pa.run_for(ms(5)),
    )
    .expect("alice hears bob joined");

    // Bob publishes, then subscribes to alice.
    add_track(&mut b, "audio", MediaKind::Audio, &mut || pa.run_for(ms(2)));
    add_track(&mut b, "video", MediaKind::Video, &mut || pa.run_for(ms(2)));
    let (mut pb, offer) = member_peer(&[
        (MediaKind::Audio, Direction::SendOnly),
        (MediaKind::Video, Direction::SendOnly),
    ]);
    let n = b.inbox.len();
    let id = b.offer(offer);
    answered(&mut b, &mut pb, id, n);
    let b_subs = subscribe(&mut b, &mut pb, &[a_audio.clone(), a_video.clone()]);
    let (b_rx_audio, b_rx_video) = (b_subs[0].1, b_subs[1].1);

    // Alice learns of bob's tracks and subscribes to them.
    let (bob_audio, bob_video) = a
        .wait_tracks_of("bob", &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("alice is told about bob's two tracks");
    let a_subs = subscribe(&mut a, &mut pa, &[bob_audio, bob_video]);
    let (a_rx_audio, a_rx_video) = (a_subs[0].1, a_subs[1].1);

    // Media flows both ways on the sections that carry it.
    let flowing = run_until(&mut [&mut pa, &mut pb], T, |p| {
        p[1].frames_on(b_rx_audio) > 20
            && p[1].frames_on(b_rx_video) > 10
            && p[0].frames_on(a_rx_audio) > 20
            && p[0].frames_on(a_rx_video) > 10
    });
    assert!(
        flowing,
        "media in both directions: bob got audio {} video {}, alice got audio {} video {}",
        pb.frames_on(b_rx_audio),
        pb.frames_on(b_rx_video),
        pa.frames_on(a_rx_audio),
        pa.frames_on(a_rx_video)
    );

    // A data packet: stamped with the sender's identity, whatever it claims.
    let forged = proto::DataPacket {
        participant_identity: "mallory".into(),
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload: b"hello bob".to_vec(),
            topic: Some("chat".into()),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec();
    let mut sent = false;
    for _ in 0..200 {
        if pa.send_bytes(RELIABLE, &forged) {
            sent = true;
            break;
        }
        run(&mut [&mut pa, &mut pb], ms(20));
    }
    assert!(sent, "alice's data channel opened");
    let got = run_until(&mut [&mut pa, &mut pb], T, |p| {
        !user_packets(p[1]).is_empty()
    });
    assert!(got, "bob receives the data packet");
    let (from, topic, payload) = user_packets(&pb)[0].clone();
    assert_eq!(from, "alice", "the server stamps the real sender");
    assert_eq!(topic, "chat");
    assert_eq!(payload, b"hello bob");
    assert!(
        user_packets(&pa).is_empty(),
        "the sender does not get its own packet back"
    );

    // Alice mutes her microphone: bob is told and her audio stops reaching him.
    let n = b.inbox.len();
    a.send(Request::Mute(proto::MuteTrackRequest {
        sid: a_audio.clone(),
        muted: true,
    }));
    b.wait(
        n,
        |m| {
            matches!(m, Response::Update(u) if u.participants.iter()
            .flat_map(|p| &p.tracks).any(|t| t.sid == a_audio && t.muted))
        },
        T,
        &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        },
    )
    .expect("bob sees alice muted");
    run(&mut [&mut pa, &mut pb], ms(500));
    let before = pb.frames_on(b_rx_audio);
    run(&mut [&mut pa, &mut pb], ms(1000));
    assert_eq!(
        pb.frames_on(b_rx_audio),
        before,
        "muted audio is not forwarded"
    );

    // Alice leaves: bob sees her leave and her tracks end.
    let n = b.inbox.len();
    a.send(Request::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    }));
    b.wait(n, |m| left(m, "alice"), T, &mut || pb.run_for(ms(5)))
        .expect("bob sees alice leave");
    assert!(b.participant("alice").is_none());
}

#[test]
fn active_speaker_is_announced() {
    let server = TestServer::start(30);
    let (a, mut pa, _, _) = join_and_publish(&server.base, &token(&server, "talk", "alice"));
    pa.audio_level = Some(-15); // a talker: -15 dBov on every packet
    let alice = a.me();
    let tok = server.token("talk", "bob", false, true);
    let mut b = LkClient::connect(&server.base, &tok, None).expect("bob joins");
    let speaks = |active: bool| {
        let alice = alice.clone();
        move |m: &Response| {
            matches!(m, Response::SpeakersChanged(s)
                if s.speakers.iter().any(|s| s.sid == alice && s.active == active))
        }
    };
    let spoke = b.wait(0, speaks(true), T, &mut || pa.run_for(ms(5)));
    assert!(spoke.is_some(), "bob is told alice speaks: {:?}", b.inbox);
    // Silence: she stops being a speaker.
    pa.audio_level = Some(-127);
    let n = b.inbox.len();
    let quiet = b.wait(n, speaks(false), T, &mut || pa.run_for(ms(5)));
    assert!(
        quiet.is_some(),
        "silence ends the speaker: {:?}",
        &b.inbox[n..]
    );
}

#[test]
fn a_flood_of_signal_frames_is_limited_and_the_session_survives() {
    let server = TestServer::start(30);
    let tok = server.token("flood", "carol", false, true);
    let mut c = LkClient::connect(&server.base, &tok, None).expect("join");
    let pong = |ts: i64| move |m: &Response| matches!(m, Response::PongResp(p) if p.last_ping_timestamp == ts);
    for ts in 1..=150 {
        c.send(Request::PingReq(proto::Ping {
            timestamp: ts,
            rtt: 0,
        }));
    }
    // Let the answers that come arrive, then count them.
    c.wait(0, |_| false, ms(1500), &mut || {});
    let answered = c
        .inbox
        .iter()
        .filter(|m| matches!(m, Response::PongResp(_)))
        .count();
    assert!(
        answered > 0 && answered < 150,
        "the burst is answered, the rest dropped: {answered} of 150"
    );
    assert!(!c.closed, "the socket stays");
    let n = c.inbox.len();
    c.send(Request::PingReq(proto::Ping {
        timestamp: 9999,
        rtt: 0,
    }));
    c.wait(n, pong(9999), T, &mut || {})
        .expect("the connection still works");
}

#[test]
fn a_dropped_socket_resumes_without_the_others_seeing_a_leave() {
    let server = TestServer::start_with(ConfigArgs {
        reconnect_grace_secs: Some(2),
        ..Default::default()
    });
    let tok_a = token(&server, "blip", "alice");
    let (a, mut pa, _, _) = join_and_publish(&server.base, &tok_a);
    let alice = a.me();
    let tok_b = server.token("blip", "bob", false, true);
    let mut b = LkClient::connect(&server.base, &tok_b, None).expect("bob");

    a.drop_connection();
    run(&mut [&mut pa], ms(500));
    let a2 = LkClient::connect(&server.base, &tok_a, Some(&alice)).expect("resume");
    assert!(
        matches!(a2.inbox.first(), Some(Response::Reconnect(_))),
        "a resume is answered with a reconnect response: {:?}",
        a2.inbox.first()
    );
    // Well past the grace period: bob never saw alice leave, her tracks stay.
    b.wait(0, |_| false, Duration::from_secs(3), &mut || {
        pa.run_for(ms(5))
    });
    assert!(!b.inbox.iter().any(|m| left(m, "alice")), "{:?}", b.inbox);
    assert_eq!(
        b.participant("alice").map(|p| p.tracks.len()),
        Some(2),
        "her tracks are still published"
    );
    // A resume of a participant that is not there is refused.
    let unknown = LkClient::connect(&server.base, &tok_a, Some("PA_nobody"));
    match unknown {
        Err(refused) => assert!(refused.status >= 400, "{refused:?}"),
        Ok(c) => assert!(
            matches!(c.inbox.first(), Some(Response::Leave(_))),
            "a failed resume is a leave: {:?}",
            c.inbox.first()
        ),
    }

    // Without a resume within the grace period, the participant is removed.
    a2.drop_connection();
    let n = b.inbox.len();
    let gone = b.wait(n, |m| left(m, "alice"), T, &mut || pa.run_for(ms(5)));
    assert!(gone.is_some(), "alice is removed after the grace period");
}

#[test]
fn the_same_identity_joining_again_replaces_the_first() {
    let server = TestServer::start(30);
    let tok = server.token("dup", "erin", false, true);
    let mut first = LkClient::connect(&server.base, &tok, None).expect("first");
    let _second = LkClient::connect(&server.base, &tok, None).expect("second");
    let leave = first
        .wait(0, |m| matches!(m, Response::Leave(_)), T, &mut || {})
        .expect("the first is told to leave");
    let Response::Leave(l) = leave else {
        unreachable!()
    };
    assert_eq!(l.reason, proto::DisconnectReason::DuplicateIdentity as i32);
    first.wait(0, |_| false, ms(500), &mut || {});
    assert!(first.closed, "the replaced socket is closed");
}

/// Webhook requests received: (Authorization, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver: records (Authorization, body) of every POST.
fn webhook_receiver() -> (String, Received) {
    use std::sync::Arc;
    let seen: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let store = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let store = store.clone();
                        async move {
                            let auth = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            if let Ok(mut s) = store.lock() {
                                s.push((auth, body.to_vec()));
                            }
                            "ok"
                        }
                    },
                ),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    (url, seen)
}

struct Api {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt"),
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    /// (status, body) of a request with `auth` as the Authorization header.
    fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    }
}

const BASIC: &str = "Basic ZGV2a2V5OnNlY3JldA=="; // devkey:secret

#[test]
fn admin_api_manages_the_room_and_webhooks_are_signed() {
    let (hook_url, hooks) = webhook_receiver();
    let server = TestServer::start_with(ConfigArgs {
        webhook_urls: vec![hook_url],
        ..Default::default()
    });
    let api = Api::new(&server.base);
    let (mut a, mut pa, a_audio, _) =
        join_and_publish(&server.base, &token(&server, "adm", "alice"));
    let tok_b = server.token("adm", "bob", false, true);
    let mut b = LkClient::connect(&server.base, &tok_b, None).expect("bob");

    // Authorisation.
    assert_eq!(api.call("GET", "/api/rooms", None, None).0, 401);
    assert_eq!(
        api.call("GET", "/api/rooms", Some("Basic ZGV2a2V5Om5vcGU="), None)
            .0,
        401,
        "wrong secret"
    );
    let member_token = format!("Bearer {}", server.token("adm", "bob", true, true));
    let (status, body) = api.call(
        "GET",
        "/api/rooms/adm/participants",
        Some(&member_token),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("roomAdmin"), "{body}");
    let other_admin = {
        use signaling::auth::{mint_with_secret, VideoGrant};
        let grant = VideoGrant {
            room: Some("other".into()),
            room_admin: true,
            ..Default::default()
        };
        format!(
            "Bearer {}",
            mint_with_secret("devkey", "secret", "ops", grant, Duration::from_secs(60))
                .expect("token")
        )
    };
    assert_eq!(
        api.call(
            "GET",
            "/api/rooms/adm/participants",
            Some(&other_admin),
            None
        )
        .0,
        403
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/rooms/other/participants",
            Some(&other_admin),
            None
        )
        .0,
        404
    );

    // Listing.
    let (status, body) = api.call("GET", "/api/rooms", Some(BASIC), None);
    assert_eq!(status, 200);
    let rooms: Value = serde_json::from_str(&body).expect("json");
    let adm = rooms["rooms"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "adm"))
        .cloned()
        .expect("room listed");
    assert_eq!(adm["participants"], 2);
    assert_eq!(adm["tracks"], 2);
    let (_, body) = api.call("GET", "/api/rooms/adm/participants", Some(BASIC), None);
    let list: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = list["participants"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["identity"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["alice", "bob"]);

    // Metadata, mute, data.
    let n = a.inbox.len();
    let (status, body) = api.call(
        "PATCH",
        "/api/rooms/adm/participants/bob",
        Some(BASIC),
        Some(json!({"metadata": "{\"role\":\"host\"}"})),
    );
    assert_eq!(status, 200, "{body}");
    a.wait(
        n,
        |m| {
            matches!(m, Response::Update(u) if u.participants.iter()
            .any(|p| p.identity == "bob" && p.metadata == "{\"role\":\"host\"}"))
        },
        T,
        &mut || pa.run_for(ms(5)),
    )
    .expect("alice sees the update");
    assert_eq!(
        api.call(
            "PATCH",
            "/api/rooms/adm/participants/bob",
            Some(BASIC),
            Some(json!({"metadata": 5}))
        )
        .0,
        400
    );
    let n = b.inbox.len();
    let (status, _) = api.call(
        "POST",
        "/api/rooms/adm/participants/alice/mute",
        Some(BASIC),
        Some(json!({"track": a_audio, "muted": true})),
    );
    assert_eq!(status, 204);
    b.wait(
        n,
        |m| {
            matches!(m, Response::Update(u) if u.participants.iter()
            .flat_map(|p| &p.tracks).any(|t| t.sid == a_audio && t.muted))
        },
        T,
        &mut || pa.run_for(ms(5)),
    )
    .expect("bob sees the mute");
    assert_eq!(
        api.call(
            "POST",
            "/api/rooms/adm/participants/alice/mute",
            Some(BASIC),
            Some(json!({"track": "TR_x", "muted": true}))
        )
        .0,
        404
    );
    // Once alice's data channel is open, the server sends her a packet.
    run(&mut [&mut pa], ms(500));
    let (status, _) = api.call(
        "POST",
        "/api/rooms/adm/data",
        Some(BASIC),
        Some(json!({"topic": "notice", "payload": {"text": "recording"}})),
    );
    assert_eq!(status, 204);
    let got = run_until(&mut [&mut pa], T, |p| !user_packets(p[0]).is_empty());
    assert!(got, "alice receives the server's data packet");
    let (from, topic, payload) = user_packets(&pa)[0].clone();
    assert_eq!(from, "", "from the server, not a participant");
    assert_eq!(topic, "notice");
    assert!(String::from_utf8_lossy(&payload).contains("recording"));

    // Removing bob: he is told why and let go; alice sees him leave.
    let n = a.inbox.len();
    assert_eq!(
        api.call(
            "DELETE",
            "/api/rooms/adm/participants/bob",
            Some(BASIC),
            None
        )
        .0,
        204
    );
    let removed = b
        .wait(0, |m| matches!(m, Response::Leave(_)), T, &mut || {})
        .expect("bob removed");
    assert!(
        matches!(removed, Response::Leave(ref l) if l.reason == proto::DisconnectReason::ParticipantRemoved as i32),
        "{removed:?}"
    );
    a.wait(n, |m| left(m, "bob"), T, &mut || pa.run_for(ms(5)))
        .expect("left");
    assert_eq!(
        api.call(
            "DELETE",
            "/api/rooms/adm/participants/bob",
            Some(BASIC),
            None
        )
        .0,
        404
    );

    // Closing the room.
    assert_eq!(
        api.call("DELETE", "/api/rooms/adm", Some(BASIC), None).0,
        204
    );
    let closed = a
        .wait(0, |m| matches!(m, Response::Leave(_)), T, &mut || {
            pa.run_for(ms(5))
        })
        .expect("room closed");
    assert!(
        matches!(closed, Response::Leave(ref l) if l.reason == proto::DisconnectReason::RoomDeleted as i32),
        "{closed:?}"
    );
    assert_eq!(
        api.call("GET", "/api/rooms/adm/participants", Some(BASIC), None)
            .0,
        404
    );

    // Webhooks: every one signed over its body; the room's life in order.
    let end = Instant::now() + T;
    let mut events = vec![];
    while Instant::now() < end {
        events = hooks.lock().map(|h| h.clone()).unwrap_or_default();
        if events
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("room_finished"))
        {
            break;
        }
        std::thread::sleep(ms(50));
    }
    let mut names = vec![];
    for (auth, body) in &events {
        assert!(
            sfu::webhooks::verify("secret", auth, body),
            "signature of {}",
            String::from_utf8_lossy(body)
        );
        let v: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(v["room"]["name"], "adm");
        names.push(v["event"].as_str().unwrap_or("").to_string());
    }
    let pos = |e: &str| {
        names
            .iter()
            .position(|n| n == e)
            .unwrap_or_else(|| panic!("{e} in {names:?}"))
    };
    assert!(pos("room_started") < pos("participant_joined"));
    assert!(pos("participant_joined") < pos("track_published"));
    assert_eq!(
        names.iter().filter(|n| *n == "participant_joined").count(),
        2,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "track_published").count(),
        2,
        "{names:?}"
    );
    assert!(pos("participant_left") < pos("room_finished"));
    assert_eq!(names.last().map(String::as_str), Some("room_finished"));
}

#[test]
fn dynacast_pauses_layers_nobody_needs_and_resumes_them() {
    use common::SimLayer;
    use proto::VideoQuality::{High, Low, Medium};
    let server = TestServer::start(30);
    let mut a = LkClient::connect(&server.base, &token(&server, "dyn", "pub"), None).expect("join");
    add_track(&mut a, "audio", MediaKind::Audio, &mut || {});
    let video_sid = add_track(&mut a, "video", MediaKind::Video, &mut || {});
    let (mut pa, offer) = TestPeer::simulcast_member(vec![
        SimLayer::new("f", 1280, 720, 4000),
        SimLayer::new("h", 640, 360, 1500),
        SimLayer::new("q", 320, 180, 500),
    ]);
    let n = a.inbox.len();
    let id = a.offer(offer);
    answered(&mut a, &mut pa, id, n);

    // Nobody subscribes: after the hold every layer is paused.
    let paused = a
        .wait(
            n,
            |m| enabled_qualities(m, &video_sid).is_some(),
            T,
            &mut || pa.run_for(ms(5)),
        )
        .expect("a subscribed quality update");
    assert_eq!(
        enabled_qualities(&paused, &video_sid),
        Some(vec![]),
        "{paused:?}"
    );

    // A subscriber that wants at most 640 wide: the two lower layers resume.
    let tok_b = server.token("dyn", "viewer", false, true);
    let mut b = LkClient::connect(&server.base, &tok_b, None).expect("viewer");
    b.send(Request::TrackSetting(proto::UpdateTrackSettings {
        track_sids: vec![video_sid.clone()],
        width: 640,
        height: 360,
        ..Default::default()
    }));
    let n = a.inbox.len();
    let (mut pb, subs) = receive_only(&mut b, std::slice::from_ref(&video_sid));
    let rx = subs[0].1;
    let wants = |q: Vec<proto::VideoQuality>| {
        let sid = video_sid.clone();
        move |m: &Response| enabled_qualities(m, &sid) == Some(q.clone())
    };
    a.wait(n, wants(vec![Low, Medium]), T, &mut || {
        pa.run_for(ms(2));
        pb.run_for(ms(2));
    })
    .expect("the two lower layers resumed");

    // The limit is lifted: the top layer is wanted again at once.
    let n = a.inbox.len();
    b.send(Request::TrackSetting(proto::UpdateTrackSettings {
        track_sids: vec![video_sid.clone()],
        width: 1280,
        height: 720,
        quality: High as i32,
        ..Default::default()
    }));
    a.wait(n, wants(vec![Low, Medium, High]), T, &mut || {
        pa.run_for(ms(2));
        pb.run_for(ms(2));
    })
    .expect("top layer resumed");
    let got = run_until(&mut [&mut pa, &mut pb], T, |p| p[1].frames_on(rx) > 10);
    assert!(got, "the subscriber receives video");
}

#[test]
fn metadata_unsubscribe_quality_and_room_limits() {
    let server = TestServer::start_with(ConfigArgs {
        max_participants_per_room: Some(2),
        ..Default::default()
    });
    let (mut a, mut pa, a_audio, a_video) =
        join_and_publish(&server.base, &token(&server, "misc", "alice"));
    let alice = a.me();
    let tok_b = server.token("misc", "bob", false, true);
    let mut b = LkClient::connect(&server.base, &tok_b, None).expect("bob");
    let (mut pb, subs) = receive_only(&mut b, &[a_audio, a_video.clone()]);
    let (b_audio, b_video) = (subs[0].1, subs[1].1);
    assert!(run_until(&mut [&mut pa, &mut pb], T, |p| p[1]
        .frames_on(b_video)
        > 10));

    // The room is full (2 participants): a third join is refused before the upgrade.
    let tok_c = server.token("misc", "carol", false, true);
    let full = LkClient::connect(&server.base, &tok_c, None)
        .err()
        .expect("refused");
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.body.contains("participants per room"), "{}", full.body);

    // A participant changes its own name and metadata.
    let n = a.inbox.len();
    b.send(Request::UpdateMetadata(proto::UpdateParticipantMetadata {
        metadata: "{\"hand\":true}".into(),
        name: "Bob B.".into(),
        ..Default::default()
    }));
    a.wait(
        n,
        |m| {
            matches!(m, Response::Update(u) if u.participants.iter()
            .any(|p| p.name == "Bob B." && p.metadata == "{\"hand\":true}"))
        },
        T,
        &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        },
    )
    .expect("alice sees bob's update");

    // Unsubscribing from alice's video stops it; her audio continues.
    b.send(Request::Subscription(proto::UpdateSubscription {
        track_sids: vec![a_video],
        subscribe: false,
        ..Default::default()
    }));
    run(&mut [&mut pa, &mut pb], ms(500));
    let (video_before, audio_before) = (pb.frames_on(b_video), pb.frames_on(b_audio));
    run(&mut [&mut pa, &mut pb], ms(1000));
    assert_eq!(
        pb.frames_on(b_video),
        video_before,
        "no video after unsubscribing"
    );
    assert!(pb.frames_on(b_audio) > audio_before + 20, "audio continues");

    // Alice's network goes silent: bob is told her connection is lost.
    let quality_of = |lost: bool| {
        let alice = alice.clone();
        move |m: &Response| {
            matches!(m, Response::ConnectionQuality(q) if q.updates.iter().any(|u| u.participant_sid == alice
                && (u.quality == proto::ConnectionQuality::Lost as i32) == lost))
        }
    };
    let n = b.inbox.len();
    let lost = b.wait(n, quality_of(true), Duration::from_secs(15), &mut || {
        pb.run_for(ms(5))
    });
    assert!(lost.is_some(), "quality lost reported: {:?}", &b.inbox[n..]);
    // She comes back: better again, and she never left.
    let n = b.inbox.len();
    let back = b.wait(n, quality_of(false), T, &mut || {
        pa.run_for(ms(2));
        pb.run_for(ms(2));
    });
    assert!(back.is_some(), "quality recovers");
    assert!(!b.inbox.iter().any(|m| left(m, "alice")));
    drop(a);
}

#[test]
fn the_join_hands_out_turn_credentials_for_the_participant() {
    let server = TestServer::start_with(ConfigArgs {
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("shared-with-coturn".into()),
        ..Default::default()
    });
    let c =
        LkClient::connect(&server.base, &token(&server, "turnroom", "carol"), None).expect("join");
    let servers = c.join().ice_servers.clone();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(
        servers[0].urls,
        vec!["turn:127.0.0.1:3478?transport=udp".to_string()]
    );
    let username = servers[0].username.clone();
    assert!(username.ends_with(":carol"), "{username}");
    assert_eq!(
        servers[0].credential,
        signaling::turn::credential("shared-with-coturn", &username)
    );
}
