//! A room spread over workers: once the room's worker is busy, new WHEP
//! viewers go to the other worker, fed by one relay from the room's worker.
//! str0m peers publish three simulcast layers and play; the test checks
//! that viewers on both workers decode the publisher's video with their own
//! layer choice, that the room's limits count the viewers of every worker,
//! and that the relay ends when its viewers leave.

mod common;

use std::time::{Duration, Instant};

use common::{next_event, open_events, post_sdp, SimLayer, TestPeer, TestResult, TestServer};
use sfu::config::ConfigArgs;
use str0m::RtcConfig;

/// Sum of `sfu_video_down_tracks` for one worker.
async fn down_tracks_on(server: &TestServer, worker: usize) -> f64 {
    server
        .metric_with("sfu_video_down_tracks", &format!("worker=\"{worker}\""))
        .await
}

/// Wait until `name` (with `label`) reads `value`, bounded.
async fn wait_for(
    server: &TestServer,
    name: &str,
    label: &str,
    value: f64,
    within: Duration,
) -> f64 {
    let end = Instant::now() + within;
    loop {
        let now = server.metric_with(name, label).await;
        if now == value || Instant::now() > end {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WHEP viewer of `room` (at most `max_width` wide), playing for `secs`.
async fn play(
    server: &TestServer,
    room: &str,
    identity: &str,
    max_width: Option<u32>,
    secs: u64,
) -> std::thread::JoinHandle<TestPeer> {
    let (mut peer, offer) = TestPeer::viewer(RtcConfig::new());
    let query = max_width
        .map(|w| format!("?maxWidth={w}"))
        .unwrap_or_default();
    let url = format!("{}/whep/{room}{query}", server.base);
    let a = post_sdp(&url, &server.token(room, identity, false, true), &offer).await;
    assert_eq!(a.status, 201, "{identity}: {}", a.body);
    peer.accept_answer(&a.body).expect("answer");
    peer.spawn_for(Duration::from_secs(secs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_spread_over_workers_through_one_relay() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        workers: Some(2),
        spread_viewers_at: Some(2),
        max_participants_per_room: Some(5),
        session_timeout_secs: Some(10),
        ..Default::default()
    });
    let room = "spread";
    let (mut publisher, offer) = TestPeer::simulcast_publisher(vec![
        SimLayer::new("q", 320, 180, 300),
        SimLayer::new("h", 640, 360, 900),
        SimLayer::new("f", 1280, 720, 2_500),
    ]);
    let a = post_sdp(
        &format!("{}/whip/{room}", server.base),
        &server.token(room, "camera", true, false),
        &offer,
    )
    .await;
    assert_eq!(a.status, 201, "publish: {}", a.body);
    publisher.accept_answer(&a.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(14));

    // Publisher + first viewer: the room's worker reaches 2 participants.
    let first = play(&server, room, "first", None, 10).await;
    // The next one (at most 320 wide) goes to the other worker, whose
    // fan-out chooses its layer; then each goes to the less loaded worker.
    let spread_small = play(&server, room, "spread-small", Some(320), 10).await;
    let spread_full = play(&server, room, "spread-full", None, 10).await;
    let last = play(&server, room, "last", None, 10).await;

    // Publisher and four viewers over two workers: the limit of 5 counts
    // all of them, not the relay's two ends.
    let (_peer, offer) = TestPeer::viewer(RtcConfig::new());
    let refused = post_sdp(
        &format!("{}/whep/{room}", server.base),
        &server.token(room, "one-too-many", false, true),
        &offer,
    )
    .await;
    assert_eq!(refused.status, 503, "room full: {}", refused.body);
    assert!(
        refused.body.contains("participants per room"),
        "{}",
        refused.body
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.metric("sfu_fanout_relays").await, 1.0, "one relay");
    assert_eq!(server.metric("sfu_rooms").await, 1.0, "one room");
    let per_worker = [
        down_tracks_on(&server, 0).await,
        down_tracks_on(&server, 1).await,
    ];
    // Which of the later viewers lands where depends on the workers' load
    // at that instant (the relay's two ends count); each worker has some.
    assert!(
        per_worker.iter().all(|n| *n >= 1.0) && per_worker.iter().sum::<f64>() == 4.0,
        "four viewers over both workers: {per_worker:?}"
    );
    // The room is listed once.
    let listing: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/rooms", server.base))
        .basic_auth("devkey", Some("secret"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        listing["rooms"].as_array().map(Vec::len),
        Some(1),
        "{listing}"
    );

    // The admin API reports on a viewer wherever it is (here the one that
    // went to the other worker first).
    let (report, video) = server.video_subscription(room, "spread-small").await?;
    assert_eq!(video["maxWidth"], 320, "{report}");
    assert_eq!(video["layer"]["width"], 320, "{report}");

    for (name, viewer, max) in [
        ("first", first, None),
        ("spread-full", spread_full, None),
        ("spread-small", spread_small, Some(320)),
        ("last", last, None),
    ] {
        let mut v = viewer.join().map_err(|_| "viewer thread")?;
        eprintln!(
            "{name}: {} frames, keyframes {:?}",
            v.stats.video_frames, v.stats.keyframe_widths
        );
        assert!(
            v.stats.video_frames > 100,
            "{name} decoded video: {:?}",
            v.stats
        );
        assert!(
            v.stats.audio_frames > 100,
            "{name} heard audio: {:?}",
            v.stats
        );
        let widths: Vec<u32> = v.stats.keyframe_widths.iter().map(|(_, w)| *w).collect();
        match max {
            Some(max) => assert!(
                !widths.is_empty() && widths.iter().all(|w| *w <= max),
                "{name} gets at most {max}: {widths:?}"
            ),
            None => assert!(
                widths.contains(&1280),
                "{name} gets the top layer: {widths:?}"
            ),
        }
        v.close();
    }

    // The viewers left: the relay idles out, and its upstream session with it.
    let relays = wait_for(
        &server,
        "sfu_fanout_relays",
        "",
        0.0,
        Duration::from_secs(12),
    )
    .await;
    assert_eq!(relays, 0.0, "the relay ended with its viewers");
    let whep = wait_for(
        &server,
        "sfu_participants",
        "kind=\"whep\"",
        0.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        whep, 0.0,
        "no WHEP session left (the relay's upstream ended)"
    );
    publisher.join().map_err(|_| "publisher thread")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_room_closes_its_viewers_on_other_workers() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        workers: Some(2),
        spread_viewers_at: Some(2),
        ..Default::default()
    });
    let room = "closing";
    let (mut publisher, offer) = TestPeer::publisher();
    let a = post_sdp(
        &format!("{}/whip/{room}", server.base),
        &server.token(room, "camera", true, false),
        &offer,
    )
    .await;
    assert_eq!(a.status, 201, "publish: {}", a.body);
    publisher.accept_answer(&a.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(6));
    let viewers = [
        play(&server, room, "home", None, 6).await,
        play(&server, room, "spread", None, 6).await,
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.metric("sfu_fanout_relays").await, 1.0, "one relay");

    let closed = reqwest::Client::new()
        .delete(format!("{}/api/rooms/{room}", server.base))
        .basic_auth("devkey", Some("secret"))
        .send()
        .await?;
    assert!(closed.status().is_success(), "{}", closed.status());
    let left = wait_for(&server, "sfu_participants", "", 0.0, Duration::from_secs(5)).await;
    assert_eq!(
        left, 0.0,
        "every session of the room ended, on both workers"
    );
    assert_eq!(server.metric("sfu_rooms").await, 0.0);
    for v in viewers {
        v.join().map_err(|_| "viewer thread")?;
    }
    publisher.join().map_err(|_| "publisher thread")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_another_worker_sees_the_publisher_come_and_go() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        workers: Some(2),
        spread_viewers_at: Some(1),
        session_timeout_secs: Some(5),
        ..Default::default()
    });
    let room = "waiting";
    // The first viewer creates the room; the second goes to the other
    // worker. Both wait for a publisher.
    let home = play(&server, room, "home", None, 14).await;
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, "spread", false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    viewer.accept_answer(&posted.body)?;
    let viewer = viewer.spawn_for(Duration::from_secs(14));
    assert_eq!(server.metric("sfu_rooms").await, 1.0);
    let location = posted.location.ok_or("no Location")?;
    let resource = format!("{}{location}", server.base);
    let mut events = open_events(&resource, Some(r#"["active","inactive"]"#)).await?;
    let mut buf = String::new();

    // Two publishers in turn: the viewer is told each time.
    let mut published_for = vec![];
    for turn in 0..2 {
        let (mut publisher, offer) = TestPeer::publisher();
        let ptoken = server.token(room, &format!("camera-{turn}"), true, false);
        let posted = post_sdp(&format!("{}/whip/{room}", server.base), &ptoken, &offer).await;
        assert_eq!(posted.status, 201, "{}", posted.body);
        publisher.accept_answer(&posted.body)?;
        let publisher = publisher.spawn_for(Duration::from_secs(3));
        next_event(&mut events, &mut buf, "active").await?;
        let started = Instant::now();
        publisher.join().map_err(|_| "publisher thread")?;
        published_for.push(started);
        let del = reqwest::Client::new()
            .delete(format!(
                "{}{}",
                server.base,
                posted.location.ok_or("no Location")?
            ))
            .bearer_auth(&ptoken)
            .send()
            .await?;
        assert_eq!(del.status().as_u16(), 200);
        next_event(&mut events, &mut buf, "inactive").await?;
    }
    assert_eq!(
        server.metric("sfu_fanout_relays").await,
        1.0,
        "one relay throughout"
    );
    for (name, v) in [("home", home), ("spread", viewer)] {
        let v = v.join().map_err(|_| "viewer thread")?;
        eprintln!(
            "{name}: {} frames, keyframes {:?}",
            v.stats.video_frames, v.stats.keyframe_widths
        );
        // Each publisher sends ~2.5 s of video to each viewer.
        assert!(
            v.stats.video_frames > 100,
            "{name} decoded both publishers: {:?}",
            v.stats
        );
        assert!(
            v.stats.video_keyframes >= 2,
            "{name} started on a keyframe each time: {:?}",
            v.stats
        );
    }
    Ok(())
}

/// A meeting spread over workers: the first two members join the room's
/// worker, the next two a satellite of the room on the other worker,
/// bridged to it in-process. All four see and hear each other, chat
/// reaches everyone, video goes out of both workers, and the room is
/// listed once with its four participants.
#[test]
fn a_meeting_spreads_over_workers_through_one_bridge() {
    use common::livekit::{join_and_publish, subscribe, user_packet, user_packets, RELIABLE};
    use common::member::{run_until, T};
    use signaling::livekit::proto;
    use signaling::livekit::proto::signal_request::Message as Request;
    use signaling::livekit::proto::signal_response::Message as Response;

    let server = TestServer::start_with(ConfigArgs {
        workers: Some(2),
        spread_viewers_at: Some(2),
        session_timeout_secs: Some(10),
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let room = "spread-meet";
    let names = ["m1", "m2", "m3", "m4"];
    let mut clients = vec![];
    let mut peers = vec![];
    for who in names {
        let (c, p, _, _) = join_and_publish(&server.base, &server.token(room, who, true, true));
        clients.push(c);
        peers.push(p);
    }
    let mut lines = vec![];
    for i in 0..names.len() {
        let mut wanted = vec![];
        for (j, other) in names.iter().enumerate() {
            if i != j {
                let (audio, video) = clients[i]
                    .wait_tracks_of(other, &mut || {
                        for p in peers.iter_mut() {
                            p.run_for(std::time::Duration::from_millis(2));
                        }
                    })
                    .unwrap_or_else(|| panic!("{} is told of {other}'s tracks", names[i]));
                wanted.extend([audio, video]);
            }
        }
        lines.push(subscribe(&mut clients[i], &mut peers[i], &wanted));
    }
    let mut refs: Vec<&mut TestPeer> = peers.iter_mut().collect();
    let all = run_until(&mut refs, 3 * T, |p| {
        lines.iter().enumerate().all(|(i, subs)| {
            subs.iter()
                .all(|(_, mid)| p[i].frames_by_mid.get(mid).copied().unwrap_or(0) >= 10)
        })
    });
    assert!(
        all,
        "everyone gets everyone's audio and video: {:?}",
        peers.iter().map(|p| &p.frames_by_mid).collect::<Vec<_>>()
    );
    for worker in 0..2 {
        let video = rt.block_on(down_tracks_on(&server, worker));
        assert!(video >= 1.0, "worker {worker} sends video: {video}");
    }
    // Chat from a member of the satellite reaches the room's worker's.
    let mut sent = false;
    for _ in 0..200 {
        if peers[3].send_bytes(RELIABLE, &user_packet(b"hi all", "chat", &[])) {
            sent = true;
            break;
        }
        let mut refs: Vec<&mut TestPeer> = peers.iter_mut().collect();
        run_until(&mut refs, Duration::from_millis(20), |_| false);
    }
    assert!(sent, "m4's data channel opened");
    let mut refs: Vec<&mut TestPeer> = peers.iter_mut().collect();
    assert!(
        run_until(&mut refs, T, |p| (0..3).all(|i| user_packets(p[i])
            .iter()
            .any(|(from, _, payload)| from == "m4" && payload == b"hi all"))),
        "m1-m3 get m4's chat"
    );
    // m4 (on the satellite) loses its socket and resumes there.
    let m4 = clients[3].me();
    let token = server.token(room, "m4", true, true);
    clients.pop().expect("m4").drop_connection();
    let mut again =
        common::livekit::LkClient::connect(&server.base, &token, Some(&m4)).expect("m4 resumes");
    assert!(
        matches!(again.inbox.first(), Some(Response::Reconnect(_))),
        "{:?}",
        again.inbox.first()
    );
    let rooms = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/rooms", server.base))
            .header("authorization", "Basic ZGV2a2V5OnNlY3JldA==")
            .send()
            .await
            .expect("rooms")
            .text()
            .await
            .unwrap_or_default()
    });
    let listed: serde_json::Value = serde_json::from_str(&rooms).expect("json");
    let ours: Vec<&serde_json::Value> = listed["rooms"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["name"] == room).collect())
        .unwrap_or_default();
    assert_eq!(ours.len(), 1, "listed once: {rooms}");
    assert_eq!(ours[0]["participants"], 4, "{rooms}");

    // Everyone leaves: the bridge, left alone, closes, and the room ends.
    let leave = || {
        Request::Leave(proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        })
    };
    again.send(leave());
    for c in clients.iter_mut() {
        c.send(leave());
    }
    let left = rt.block_on(wait_for(&server, "sfu_rooms", "", 0.0, 3 * T));
    assert_eq!(left, 0.0, "the room ended");
    let sessions = rt.block_on(server.metric("sfu_participants"));
    assert_eq!(sessions, 0.0, "no session is left (the bridge's two ends)");
}
