//! Graceful drain (the first SIGTERM): the server reports draining on
//! `/healthz`, refuses new rooms with 503 and Retry-After, keeps serving the
//! rooms it has (new participants included) for the grace period, then
//! closes them with a reason and stops. WHEP players are told to reconnect.

mod common;

use std::time::{Duration, Instant};

use common::livekit::LkClient;
use common::{next_event, open_events, post_sdp, TestPeer, TestServer};
use sfu::config::ConfigArgs;
use signaling::livekit::proto;
use signaling::livekit::proto::signal_response::Message as Response;

const T: Duration = Duration::from_secs(10);

fn draining_server(grace_secs: u64) -> TestServer {
    TestServer::start_with(ConfigArgs {
        drain_grace_secs: Some(grace_secs),
        session_timeout_secs: Some(30),
        ..Default::default()
    })
}

/// Bounded wait for the server's thread to end.
fn wait_stopped(server: &TestServer, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if server.stopped() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_draining_server_finishes_its_rooms_and_takes_no_new_one() {
    let grace = Duration::from_secs(2);
    let server = draining_server(grace.as_secs());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut alice = LkClient::connect(
        &server.base,
        &server.token("meeting", "alice", true, true),
        None,
    )
    .expect("alice joins");
    let health = |base: &str| {
        rt.block_on(async {
            let r = reqwest::get(format!("{base}/healthz"))
                .await
                .expect("healthz");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    assert_eq!(health(&server.base), (200, "ok\n".to_string()));
    // A WHEP player of the room listens for `reconnect`.
    let (_viewer, offer) = TestPeer::viewer(str0m::RtcConfig::new());
    let watch = server.token("meeting", "viewer", false, true);
    let posted = rt.block_on(post_sdp(
        &format!("{}/whep/meeting", server.base),
        &watch,
        &offer,
    ));
    assert_eq!(posted.status, 201, "{}", posted.body);
    let resource = format!("{}{}", server.base, posted.location.expect("Location"));
    let mut events = rt
        .block_on(open_events(&resource, Some(r#"["reconnect"]"#)))
        .expect("event stream");

    let drained_at = Instant::now();
    server.drain();
    // Bounded: the flag is set by a task the drain wakes.
    let end = Instant::now() + T;
    while health(&server.base).0 != 503 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(health(&server.base), (503, "draining\n".to_string()));
    // The player is told to play again (elsewhere, through the endpoint).
    let mut buf = String::new();
    rt.block_on(next_event(&mut events, &mut buf, "reconnect"))
        .expect("reconnect event");

    // A new room is refused, with a reason and a time to retry.
    let (_peer, offer) = TestPeer::publisher();
    let token = server.token("elsewhere", "carol", true, false);
    let url = format!("{}/whip/elsewhere", server.base);
    let refused = rt.block_on(post_sdp(&url, &token, &offer));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("takes no new rooms"),
        "{}",
        refused.body
    );
    let retry_after = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some("5"));

    // The meeting goes on: bob still joins it and sees alice.
    let bob = LkClient::connect(
        &server.base,
        &server.token("meeting", "bob", true, true),
        None,
    )
    .expect("bob joins the running meeting");
    let others = &bob.join().other_participants;
    assert_eq!(others.len(), 1, "{others:?}");

    // After the grace period the participants are told why, and the server stops.
    let closed = alice.wait(
        0,
        |m| matches!(m, Response::Leave(_)),
        grace + T,
        &mut || {},
    );
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "alice is told the room closed; she got {:?} (socket closed: {})",
            alice.inbox, alice.closed
        )
    });
    assert!(
        matches!(closed, Response::Leave(ref l) if l.reason == proto::DisconnectReason::RoomDeleted as i32),
        "{closed:?}"
    );
    assert!(
        drained_at.elapsed() >= grace - Duration::from_millis(300),
        "the rooms ran for the grace period, not {:?}",
        drained_at.elapsed()
    );
    assert!(
        wait_stopped(&server, T),
        "the server stopped after the drain"
    );
}

#[test]
fn a_server_without_rooms_stops_at_once_when_drained() {
    let server = draining_server(30);
    let started = Instant::now();
    server.drain();
    assert!(
        wait_stopped(&server, Duration::from_secs(5)),
        "no rooms: no reason to wait 30 s"
    );
    eprintln!("stopped {:?} after the drain began", started.elapsed());
}
