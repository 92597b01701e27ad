//! The room protocol end to end: real WebSockets to `/rtc` and str0m peers
//! sending and receiving media and data through the server.

mod common;

use std::time::{Duration, Instant};

use common::member::{ms, run, run_until, sid_of, subscribe, tracks_of, T};
use common::ws::{idle, RoomClient};
use common::{TestPeer, TestServer};
use serde_json::{json, Value};
use sfu::config::ConfigArgs;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

/// Join `room` as `identity` and publish audio + video (see
/// [`common::member::join_and_publish`]).
fn join_and_publish(
    server: &TestServer,
    room: &str,
    identity: &str,
) -> (RoomClient, TestPeer, String, String) {
    common::member::join_and_publish(&server.base, &server.token(room, identity, true, true))
}

#[test]
fn two_members_see_hear_and_message_each_other() {
    let server = TestServer::start(30);
    let (mut a, mut pa, a_audio, a_video) = join_and_publish(&server, "meet", "alice");

    let tok_b = server.token("meet", "bob", true, true);
    let mut b = RoomClient::connect(&server.base, &tok_b, None).expect("bob joins");
    let joined = b.wait_type(0, "joined", T, &mut idle).expect("joined");
    let others = joined["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(others.len(), 1, "bob sees alice: {joined}");
    assert_eq!(others[0]["identity"], "alice");
    let alice_tracks = tracks_of(&others[0]);
    assert_eq!(sid_of(&alice_tracks, "audio"), a_audio);
    assert_eq!(sid_of(&alice_tracks, "video"), a_video);
    assert!(others[0]["tracks"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["source"] == "camera")));
    let bob_sid = joined["participant"]["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    a.wait_from(
        0,
        |v| v["type"] == "participantJoined" && v["participant"]["identity"] == "bob",
        T,
        &mut || pa.run_for(ms(5)),
    )
    .expect("alice hears bob joined");

    // Bob publishes and subscribes to alice in his first offer.
    let (mut pb, bob_offer) = TestPeer::member(
        &[
            (MediaKind::Audio, Direction::SendOnly),
            (MediaKind::Video, Direction::SendOnly),
            (MediaKind::Audio, Direction::RecvOnly),
            (MediaKind::Video, Direction::RecvOnly),
        ],
        &["reliable", "lossy"],
    );
    let sub_mids = [pb.mids[2].0, pb.mids[3].0];
    let n = b.inbox.len();
    b.send(json!({"type": "offer", "sdp": bob_offer,
        "subscribe": { sub_mids[0].to_string(): a_audio, sub_mids[1].to_string(): a_video }}));
    let answer = b
        .wait_type(n, "answer", T, &mut || pa.run_for(ms(5)))
        .expect("bob's answer");
    pb.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");

    // Alice learns of bob's tracks and subscribes to them.
    let mut bob_tracks = vec![];
    let end = Instant::now() + T;
    while bob_tracks.len() < 2 && Instant::now() < end {
        a.wait_from(0, |_| false, ms(20), &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        });
        bob_tracks = a
            .inbox
            .iter()
            .filter(|v| v["type"] == "trackPublished" && v["participant"] == json!(bob_sid))
            .map(|v| {
                (
                    v["track"]["kind"].as_str().unwrap_or("").to_string(),
                    v["track"]["sid"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
    }
    assert_eq!(bob_tracks.len(), 2, "alice is told about bob's two tracks");
    let a_subs = subscribe(&mut a, &mut pa, &bob_tracks);
    let mid_for = |kind: &str| {
        let sid = sid_of(&bob_tracks, kind);
        a_subs
            .iter()
            .find(|(s, _)| *s == sid)
            .map(|(_, m)| *m)
            .expect("mid")
    };
    let (a_rx_audio, a_rx_video) = (mid_for("audio"), mid_for("video"));

    // Media flows both ways on the lines that asked for it.
    let (b_rx_audio, b_rx_video) = (sub_mids[0], sub_mids[1]);
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

    // Chat over the data channel: stamped with the sender's identity, whatever it claims.
    let mut sent = false;
    for _ in 0..200 {
        if pa.send_text(
            "reliable",
            r#"{"topic":"chat","payload":"hello bob","from":"mallory"}"#,
        ) {
            sent = true;
            break;
        }
        run(&mut [&mut pa, &mut pb], ms(20));
    }
    assert!(sent, "alice's data channel opened");
    let got = run_until(&mut [&mut pa, &mut pb], T, |p| {
        !p[1].channel_messages.is_empty()
    });
    assert!(got, "bob receives the chat message");
    let (label, text) = pb.channel_messages[0].clone();
    let msg: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(label, "reliable");
    assert_eq!(
        msg["from"], "alice",
        "the server stamps the real sender: {text}"
    );
    assert_eq!(msg["payload"], "hello bob");
    assert!(
        pa.channel_messages.is_empty(),
        "the sender does not get its own message back"
    );

    // Alice mutes her microphone: bob is told and her audio stops reaching him.
    let n = b.inbox.len();
    a.send(json!({"type": "mute", "track": a_audio, "muted": true}));
    let muted = b
        .wait_from(
            n,
            |v| v["type"] == "trackMuted" && v["track"] == json!(a_audio),
            T,
            &mut || {
                pa.run_for(ms(2));
                pb.run_for(ms(2));
            },
        )
        .expect("bob sees alice muted");
    assert_eq!(muted["muted"], true);
    run(&mut [&mut pa, &mut pb], ms(500));
    let before = pb.frames_on(b_rx_audio);
    run(&mut [&mut pa, &mut pb], ms(1000));
    assert_eq!(
        pb.frames_on(b_rx_audio),
        before,
        "muted audio is not forwarded"
    );

    // Alice leaves: bob sees her tracks end and her leave.
    let n = b.inbox.len();
    a.send(json!({"type": "leave"}));
    let left = b
        .wait_from(n, |v| v["type"] == "participantLeft", T, &mut || {
            pb.run_for(ms(5))
        })
        .expect("bob sees alice leave");
    assert_eq!(left["identity"], "alice");
    let unpublished = b.inbox[n..]
        .iter()
        .filter(|v| v["type"] == "trackUnpublished")
        .count();
    assert_eq!(unpublished, 2, "both of alice's tracks end");
}

#[test]
fn active_speaker_is_announced() {
    let server = TestServer::start(30);
    let (mut a, mut pa, _, _) = join_and_publish(&server, "talk", "alice");
    pa.audio_level = Some(-15); // a talker: -15 dBov on every packet
    let alice_sid = a.inbox[0]["participant"]["sid"].clone();
    let tok = server.token("talk", "bob", false, true);
    let mut b = RoomClient::connect(&server.base, &tok, None).expect("bob joins");
    let spoke = b.wait_from(
        0,
        |v| {
            v["type"] == "speakers"
                && v["speakers"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["sid"] == alice_sid))
        },
        T,
        &mut || pa.run_for(ms(5)),
    );
    assert!(spoke.is_some(), "bob is told alice speaks: {:?}", b.inbox);
    // Silence: she stops being a speaker.
    pa.audio_level = Some(-127);
    let n = b.inbox.len();
    let quiet = b.wait_from(
        n,
        |v| v["type"] == "speakers" && v["speakers"].as_array().is_some_and(|s| s.is_empty()),
        T,
        &mut || pa.run_for(ms(5)),
    );
    assert!(
        quiet.is_some(),
        "silence ends the speaker: {:?}",
        &b.inbox[n..]
    );
    a.send(json!({"type": "leave"}));
}

#[test]
fn bad_messages_get_errors_and_the_session_survives() {
    let server = TestServer::start(30);
    let tok = server.token("errs", "carol", false, true);
    let mut c = RoomClient::connect(&server.base, &tok, None).expect("join");
    c.wait_type(0, "joined", T, &mut idle).expect("joined");

    let expect_error = |c: &mut RoomClient, send: Message, code: &str| {
        let n = c.inbox.len();
        c.send_raw(send);
        let e = c
            .wait_type(n, "error", T, &mut idle)
            .unwrap_or_else(|| panic!("an error for {code}"));
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    };
    let e = expect_error(
        &mut c,
        Message::Text(r#"{"type":"jump"}"#.into()),
        "bad_message",
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("jump")),
        "{e}"
    );
    expect_error(&mut c, Message::Text("not json".into()), "bad_message");
    expect_error(
        &mut c,
        Message::Text(r#"{"type":"mute","track":"x"}"#.into()),
        "bad_message",
    );
    expect_error(&mut c, Message::Binary(vec![1, 2, 3].into()), "bad_message");
    let big = format!(
        r#"{{"type":"metadata","metadata":"{}"}}"#,
        "x".repeat(signaling::rtc_socket::MAX_MESSAGE_BYTES + 1)
    );
    expect_error(&mut c, Message::Text(big.into()), "too_large");
    expect_error(
        &mut c,
        Message::Text(r#"{"type":"mute","track":"TR_nope","muted":true}"#.into()),
        "not_found",
    );
    // No canPublish: an offer that sends is refused.
    let (_peer, offer) = TestPeer::publisher();
    let e = expect_error(
        &mut c,
        Message::Text(json!({"type":"offer","sdp":offer}).to_string().into()),
        "not_allowed",
    );
    assert!(e["message"]
        .as_str()
        .is_some_and(|m| m.contains("canPublish")));
    expect_error(
        &mut c,
        Message::Text(
            json!({"type":"offer","sdp":"v=0\r\nm=audio 9 X 0\r\na=recvonly\r\n"})
                .to_string()
                .into(),
        ),
        "negotiation",
    );
    // A flood: the burst passes, then rate_limited; the socket stays.
    let n = c.inbox.len();
    for i in 0..150 {
        c.send(json!({"type": "ping", "id": i}));
    }
    c.wait_from(n, |v| v["code"] == "rate_limited", T, &mut idle)
        .expect("rate limited");
    std::thread::sleep(Duration::from_millis(1500));
    let n = c.inbox.len();
    c.send(json!({"type": "ping", "id": 9999}));
    c.wait_from(n, |v| v["type"] == "pong" && v["id"] == 9999, T, &mut idle)
        .expect("the connection still works");
    assert!(!c.closed);

    // Refused upgrades: no token, bad token, a token without roomJoin.
    let none = RoomClient::connect(&server.base, "", None)
        .err()
        .expect("refused");
    assert_eq!(none.status, 401);
    let bad = RoomClient::connect(&server.base, "abc.def.ghi", None)
        .err()
        .expect("refused");
    assert_eq!(bad.status, 401);
    let no_join = {
        use signaling::auth::{mint_with_secret, VideoGrant};
        let grant = VideoGrant {
            room: Some("errs".into()),
            room_join: false,
            ..Default::default()
        };
        mint_with_secret("devkey", "secret", "dave", grant, Duration::from_secs(60)).expect("token")
    };
    let refused = RoomClient::connect(&server.base, &no_join, None)
        .err()
        .expect("refused");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("roomJoin"), "{}", refused.body);
}

#[test]
fn a_dropped_socket_resumes_without_the_others_seeing_a_leave() {
    let server = TestServer::start_with(ConfigArgs {
        reconnect_grace_secs: Some(2),
        ..Default::default()
    });
    let (a, mut pa, _, _) = join_and_publish(&server, "blip", "alice");
    let resume = a.inbox[0]["resumeToken"]
        .as_str()
        .expect("token")
        .to_string();
    let tok_b = server.token("blip", "bob", false, true);
    let mut b = RoomClient::connect(&server.base, &tok_b, None).expect("bob");
    b.wait_type(0, "joined", T, &mut idle).expect("joined");

    a.drop_connection();
    run(&mut [&mut pa], ms(500));
    let tok_a = server.token("blip", "alice", true, true);
    let mut a2 = RoomClient::connect(&server.base, &tok_a, Some(&resume)).expect("resume");
    let joined = a2
        .wait_type(0, "joined", T, &mut || pa.run_for(ms(5)))
        .expect("joined again");
    assert_eq!(joined["resumed"], true);
    assert_eq!(
        joined["participants"].as_array().map(Vec::len),
        Some(1),
        "{joined}"
    );
    assert_eq!(
        tracks_of(&joined["participant"]).len(),
        2,
        "its tracks are still published"
    );
    // Well past the grace period: bob never saw alice leave.
    b.wait_from(0, |_| false, Duration::from_secs(3), &mut || {
        pa.run_for(ms(5))
    });
    assert_eq!(b.count("participantLeft"), 0, "{:?}", b.inbox);
    // A wrong resume token is refused with an error and the socket closes.
    let mut bad = RoomClient::connect(&server.base, &tok_a, Some("0000")).expect("upgrade");
    let e = bad.wait_type(0, "error", T, &mut idle).expect("error");
    assert_eq!(e["code"], "resume_failed");

    // Without a resume within the grace period, the participant is removed.
    a2.drop_connection();
    let left = b.wait_from(0, |v| v["type"] == "participantLeft", T, &mut || {
        pa.run_for(ms(5))
    });
    assert!(left.is_some(), "alice is removed after the grace period");
}

#[test]
fn the_same_identity_joining_again_replaces_the_first() {
    let server = TestServer::start(30);
    let tok = server.token("dup", "erin", false, true);
    let mut first = RoomClient::connect(&server.base, &tok, None).expect("first");
    first.wait_type(0, "joined", T, &mut idle).expect("joined");
    let mut second = RoomClient::connect(&server.base, &tok, None).expect("second");
    second.wait_type(0, "joined", T, &mut idle).expect("joined");
    let removed = first
        .wait_type(0, "removed", T, &mut idle)
        .expect("first removed");
    assert!(removed["reason"]
        .as_str()
        .is_some_and(|r| r.contains("same identity")));
    let closed = first.wait_from(0, |_| false, ms(500), &mut idle);
    assert!(
        closed.is_none() && first.closed,
        "the replaced socket is closed"
    );
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
    let (mut a, mut pa, a_audio, _) = join_and_publish(&server, "adm", "alice");
    let tok_b = server.token("adm", "bob", false, true);
    let mut b = RoomClient::connect(&server.base, &tok_b, None).expect("bob");
    b.wait_type(0, "joined", T, &mut idle).expect("joined");

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
    let updated = a
        .wait_type(n, "participantUpdated", T, &mut || pa.run_for(ms(5)))
        .expect("alice sees the update");
    assert_eq!(updated["participant"]["metadata"], "{\"role\":\"host\"}");
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
    b.wait_from(
        n,
        |v| v["type"] == "trackMuted" && v["muted"] == true,
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
    // Once alice's data channels are open, the server sends her a message.
    run(&mut [&mut pa], ms(500));
    let (status, _) = api.call(
        "POST",
        "/api/rooms/adm/data",
        Some(BASIC),
        Some(json!({"topic": "notice", "payload": {"text": "recording"}})),
    );
    assert_eq!(status, 204);
    let got = run_until(&mut [&mut pa], T, |p| !p[0].channel_messages.is_empty());
    assert!(got, "alice receives the server's data message");
    let msg: Value = serde_json::from_str(&pa.channel_messages[0].1).expect("json");
    assert_eq!(msg["from"], Value::Null);
    assert_eq!(msg["payload"]["text"], "recording");

    // Removing bob: his socket is told and closed; alice sees him leave.
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
        .wait_type(0, "removed", T, &mut idle)
        .expect("bob removed");
    assert!(removed["reason"]
        .as_str()
        .is_some_and(|r| r.contains("administrator")));
    a.wait_from(
        n,
        |v| v["type"] == "participantLeft" && v["identity"] == "bob",
        T,
        &mut || pa.run_for(ms(5)),
    )
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
        .wait_type(0, "roomClosed", T, &mut || pa.run_for(ms(5)))
        .expect("room closed");
    assert!(closed["reason"].as_str().is_some_and(|r| !r.is_empty()));
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
    let server = TestServer::start(30);
    let tok = server.token("dyn", "pub", true, true);
    let mut a = RoomClient::connect(&server.base, &tok, None).expect("join");
    a.wait_type(0, "joined", T, &mut idle).expect("joined");
    let (mut pa, offer) = TestPeer::simulcast_member(vec![
        SimLayer::new("f", 1280, 720, 4000),
        SimLayer::new("h", 640, 360, 1500),
        SimLayer::new("q", 320, 180, 500),
    ]);
    a.send(json!({"type": "offer", "sdp": offer}));
    let answer = a.wait_type(0, "answer", T, &mut idle).expect("answer");
    pa.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");
    let video = a
        .wait_from(
            0,
            |v| v["type"] == "trackPublished" && v["track"]["kind"] == "video",
            T,
            &mut || pa.run_for(ms(5)),
        )
        .expect("video published");
    assert_eq!(video["track"]["simulcast"], true);
    let video_sid = video["track"]["sid"].as_str().expect("sid").to_string();

    // Nobody subscribes: after the hold every layer is paused.
    let paused = a
        .wait_type(0, "layers", T, &mut || pa.run_for(ms(5)))
        .expect("a layers message");
    assert_eq!(paused["track"], json!(video_sid));
    assert_eq!(
        paused["active"],
        json!({"f": false, "h": false, "q": false}),
        "{paused}"
    );

    // A subscriber that wants at most 640 wide: the two lower layers resume.
    let tok_b = server.token("dyn", "viewer", false, true);
    let mut b = RoomClient::connect(&server.base, &tok_b, None).expect("viewer");
    b.wait_type(0, "joined", T, &mut idle).expect("joined");
    b.send(json!({"type": "subscription", "track": video_sid, "maxWidth": 640}));
    let (mut pb, offer) = TestPeer::member(&[(MediaKind::Video, Direction::RecvOnly)], &[]);
    let n = b.inbox.len();
    b.send(
        json!({"type": "offer", "sdp": offer, "subscribe": {pb.mids[0].0.to_string(): video_sid}}),
    );
    let answer = b
        .wait_type(n, "answer", T, &mut || pa.run_for(ms(5)))
        .expect("answer");
    pb.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");
    let n = a.inbox.len();
    let resumed = a
        .wait_from(n, |v| v["type"] == "layers", T, &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("layers resumed");
    assert_eq!(
        resumed["active"],
        json!({"f": false, "h": true, "q": true}),
        "{resumed}"
    );

    // The limit is lifted: the top layer is wanted again at once.
    let n = a.inbox.len();
    b.send(json!({"type": "subscription", "track": video_sid, "maxWidth": null}));
    let all = a
        .wait_from(n, |v| v["type"] == "layers", T, &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("top layer resumed");
    assert_eq!(all["active"], json!({"f": true, "h": true, "q": true}));
    let got = run_until(&mut [&mut pa, &mut pb], T, |p| {
        p[1].frames_on(p[1].mids[0].0) > 10
    });
    assert!(got, "the subscriber receives video");
}

#[test]
fn metadata_unsubscribe_quality_and_room_limits() {
    let server = TestServer::start_with(ConfigArgs {
        max_participants_per_room: Some(2),
        ..Default::default()
    });
    let (mut a, mut pa, a_audio, a_video) = join_and_publish(&server, "misc", "alice");
    let alice_sid = a.inbox[0]["participant"]["sid"].clone();
    let tok_b = server.token("misc", "bob", false, true);
    let mut b = RoomClient::connect(&server.base, &tok_b, None).expect("bob");
    b.wait_type(0, "joined", T, &mut idle).expect("joined");
    let (mut pb, offer) = TestPeer::member(
        &[
            (MediaKind::Audio, Direction::RecvOnly),
            (MediaKind::Video, Direction::RecvOnly),
        ],
        &[],
    );
    let (b_audio, b_video) = (pb.mids[0].0, pb.mids[1].0);
    let n = b.inbox.len();
    b.send(json!({"type": "offer", "sdp": offer,
        "subscribe": {b_audio.to_string(): a_audio, b_video.to_string(): a_video}}));
    let answer = b
        .wait_type(n, "answer", T, &mut || pa.run_for(ms(5)))
        .expect("answer");
    pb.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");
    assert!(run_until(&mut [&mut pa, &mut pb], T, |p| p[1]
        .frames_on(b_video)
        > 10));

    // The room is full (2 participants): a third join is refused before the upgrade.
    let tok_c = server.token("misc", "carol", false, true);
    let full = RoomClient::connect(&server.base, &tok_c, None)
        .err()
        .expect("refused");
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.body.contains("participants per room"), "{}", full.body);

    // A participant changes its own name and metadata.
    let n = a.inbox.len();
    b.send(json!({"type": "metadata", "metadata": "{\"hand\":true}", "name": "Bob B."}));
    let upd = a
        .wait_from(n, |v| v["type"] == "participantUpdated", T, &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        })
        .expect("alice sees bob's update");
    assert_eq!(upd["participant"]["name"], "Bob B.");
    assert_eq!(upd["participant"]["metadata"], "{\"hand\":true}");

    // Unsubscribing from alice's video stops it; her audio continues.
    b.send(json!({"type": "subscription", "track": a_video, "subscribed": false}));
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
    let n = b.inbox.len();
    let lost = b.wait_from(
        n,
        |v| {
            v["type"] == "connectionQuality"
                && v["updates"].as_array().is_some_and(|u| {
                    u.iter()
                        .any(|u| u["sid"] == alice_sid && u["quality"] == "lost")
                })
        },
        Duration::from_secs(15),
        &mut || pb.run_for(ms(5)),
    );
    assert!(lost.is_some(), "quality lost reported: {:?}", &b.inbox[n..]);
    // She comes back: excellent again, and she never left.
    let n = b.inbox.len();
    let back = b.wait_from(
        n,
        |v| {
            v["type"] == "connectionQuality"
                && v["updates"].as_array().is_some_and(|u| {
                    u.iter()
                        .any(|u| u["sid"] == alice_sid && u["quality"] != "lost")
                })
        },
        T,
        &mut || {
            pa.run_for(ms(2));
            pb.run_for(ms(2));
        },
    );
    assert!(back.is_some(), "quality recovers");
    assert_eq!(b.count("participantLeft"), 0);
    drop(a);
}

#[test]
fn joined_hands_out_turn_credentials_for_the_participant() {
    let server = TestServer::start_with(ConfigArgs {
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("shared-with-coturn".into()),
        ..Default::default()
    });
    let token = server.token("turnroom", "carol", true, true);
    let mut c = RoomClient::connect(&server.base, &token, None).expect("join");
    let joined = c.wait_type(0, "joined", T, &mut idle).expect("joined");
    let servers = joined["iceServers"].as_array().cloned().unwrap_or_default();
    assert_eq!(servers.len(), 1, "{joined}");
    let s = &servers[0];
    assert_eq!(s["urls"], json!(["turn:127.0.0.1:3478?transport=udp"]));
    let username = s["username"].as_str().expect("username");
    assert!(username.ends_with(":carol"), "{username}");
    assert_eq!(
        s["credential"].as_str(),
        Some(signaling::turn::credential("shared-with-coturn", username).as_str())
    );
}
