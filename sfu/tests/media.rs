//! End-to-end media through the real server with str0m client peers:
//! WHIP publish, WHEP play (including a viewer that arrives first and one
//! that numbers its payload types differently), keyframe requests, DELETE,
//! the inactivity timeout, and that nothing leaks afterwards.

mod common;

use sfu::config::ConfigArgs;
use std::time::{Duration, Instant};

use common::{next_event, open_events, post_sdp, TestPeer, TestResult, TestServer};
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::RtcConfig;

/// A viewer whose codec numbering differs from the server's and the publisher's.
fn renumbered_viewer_config() -> RtcConfig {
    let mut config = RtcConfig::new().clear_codecs();
    let codecs = config.codec_config();
    codecs.add_config(
        123.into(),
        Some(124.into()),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    codecs.add_config(
        109.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_play_delete_timeout_and_no_leaks() -> TestResult {
    let server = TestServer::start(2);
    let room = "media-test";

    // A viewer that arrives before the publisher, and one with other payload types.
    let mut viewers = vec![];
    for (i, config) in [RtcConfig::new(), renumbered_viewer_config()]
        .into_iter()
        .enumerate()
    {
        let (mut viewer, offer) = TestPeer::viewer(config);
        let token = server.token(room, &format!("viewer-{i}"), false, true);
        let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
        assert_eq!(posted.status, 201, "WHEP POST: {}", posted.body);
        viewer.accept_answer(&posted.body)?;
        viewers.push(viewer.spawn_for(Duration::from_secs(6)));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut publisher, offer) = TestPeer::publisher();
    let token = server.token(room, "publisher", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "WHIP POST: {}", posted.body);
    assert_eq!(
        posted
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/sdp")
    );
    let location = posted.location.clone().ok_or("201 without Location")?;
    assert!(
        location.starts_with(&format!("/whip/{room}/")),
        "{location}"
    );
    assert!(posted.etag.is_some(), "201 without ETag");
    publisher.accept_answer(&posted.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(5));

    let publisher = publisher.join().map_err(|_| "publisher thread panicked")?;
    let mut seen = vec![];
    for v in viewers {
        seen.push(v.join().map_err(|_| "viewer thread panicked")?.stats);
    }
    for (i, s) in seen.iter().enumerate() {
        eprintln!("viewer {i}: {s:?}");
        assert!(s.video_keyframes >= 1, "viewer {i} got no keyframe: {s:?}");
        assert!(
            s.video_frames >= 60,
            "viewer {i} got too few video frames: {s:?}"
        );
        assert!(
            s.audio_frames >= 100,
            "viewer {i} got too few audio frames: {s:?}"
        );
        assert_eq!(s.video_codecs, vec![Codec::Vp8]);
        assert!(
            s.video_sizes.contains(&3010),
            "frames arrive unchanged (keyframe is 3010 B)"
        );
    }
    eprintln!("publisher: {:?}", publisher.stats);
    assert!(
        publisher.stats.keyframe_requests >= 1,
        "viewers waiting for a picture make the server ask for a keyframe"
    );
    assert!(server.metric("sfu_media_packets_forwarded_total").await > 0.0);
    // The worker woke for due timers (pacing, RTCP) and measured how late.
    assert!(server.metric("sfu_worker_timer_lag_seconds_count").await > 0.0);
    // A worker that keeps up forwards everything: nothing was read too late.
    assert_eq!(server.metric("sfu_stale_audio_packets_total").await, 0.0);

    // DELETE ends the session: 200, then 404.
    let client = reqwest::Client::new();
    let url = format!("{}{location}", server.base);
    let del = client.delete(&url).bearer_auth(&token).send().await?;
    assert_eq!(del.status().as_u16(), 200);
    let del = client.delete(&url).bearer_auth(&token).send().await?;
    assert_eq!(del.status().as_u16(), 404);

    // The viewers stopped sending without DELETE: the inactivity timeout
    // removes them, and with them the room. Nothing is left behind.
    for name in [
        "sfu_rooms",
        "sfu_participants",
        "sfu_rtc_instances",
        "sfu_registry_entries",
    ] {
        assert!(
            server.wait_metric(name, 0.0, Duration::from_secs(10)).await,
            "{name} did not return to 0 (is {})",
            server.metric(name).await
        );
    }
    assert!(server.metric("sfu_sessions_ended_total").await >= 3.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_with_bframes_is_flagged_and_publisher_change_keeps_viewer() -> TestResult {
    let server = TestServer::start(2);
    let room = "h264";
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, "viewer", false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    viewer.accept_answer(&posted.body)?;
    let viewer = viewer.spawn_for(Duration::from_secs(8));

    // First publisher: H.264 with B-frames, as an OBS profile with bframes=2 sends.
    let (mut first, offer) = TestPeer::publisher();
    first.video_codec = Codec::H264;
    first.bframes = true;
    let token = server.token(room, "obs-with-bframes", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    first.accept_answer(&posted.body)?;
    let first = first.spawn_for(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        server.metric("sfu_publisher_bframes").await,
        1.0,
        "B-frames flagged per publisher"
    );
    assert!(server.metric("sfu_publisher_reordered_frames_total").await > 0.0);
    let location = posted.location.ok_or("no Location")?;
    let del = reqwest::Client::new()
        .delete(format!("{}{location}", server.base))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(del.status().as_u16(), 200);
    first.join().map_err(|_| "publisher thread panicked")?;
    assert_eq!(
        server.metric("sfu_publisher_bframes").await,
        0.0,
        "flag leaves with the publisher"
    );

    // A second publisher (VP8) takes over; the same WHEP viewer keeps playing
    // without a new offer.
    let (mut second, offer) = TestPeer::publisher();
    let token = server.token(room, "second", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    second.accept_answer(&posted.body)?;
    second
        .spawn_for(Duration::from_secs(4))
        .join()
        .map_err(|_| "publisher thread panicked")?;

    let stats = viewer.join().map_err(|_| "viewer thread panicked")?.stats;
    eprintln!("viewer: {stats:?}");
    assert!(stats.video_codecs.contains(&Codec::H264), "{stats:?}");
    assert!(stats.video_codecs.contains(&Codec::Vp8), "{stats:?}");
    assert!(stats.video_frames >= 100, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_learns_when_tracks_start_and_end() -> TestResult {
    let server = TestServer::start(2);
    let room = "events";
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, "viewer", false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let location = posted.location.clone().ok_or("no Location")?;
    let links: Vec<&str> = posted
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("<{location}/sse>")) && l.contains("server-sent-events")),
        "WHEP 201 announces the event streams: {links:?}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("<{location}/layer>"))
                && l.contains("urn:ietf:params:whep:ext:core:layer")),
        "WHEP 201 announces layer selection: {links:?}"
    );
    viewer.accept_answer(&posted.body)?;
    let viewer = viewer.spawn_for(Duration::from_secs(6));

    // No publisher yet: the stream does not open with `inactive` (the
    // extension forbids it); the viewer count comes first.
    let resource = format!("{}{location}", server.base);
    let mut events = open_events(&resource, None).await?;
    let mut buf = String::new();
    assert_eq!(
        next_event(&mut events, &mut buf, "viewercount").await?,
        r#"{"viewercount":1}"#
    );
    assert!(!buf.contains("inactive"), "{buf}");

    let (mut publisher, offer) = TestPeer::publisher();
    let ptoken = server.token(room, "publisher", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &ptoken, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(2));
    next_event(&mut events, &mut buf, "active").await?;
    publisher.join().map_err(|_| "publisher thread panicked")?;

    // The publisher ends (DELETE): the viewer is told its tracks ended.
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

    // Unknown session: 404.
    let missing = reqwest::Client::new()
        .post(format!("{}/whep/{room}/ffffffffffffffff/sse", server.base))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    viewer.join().map_err(|_| "viewer thread panicked")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_close_removes_the_session_at_once() -> TestResult {
    // A long inactivity timeout, so only the close can explain the removal.
    let server = TestServer::start(60);
    let tasks_at_start = server.metric("sfu_tokio_alive_tasks").await;
    let (mut publisher, offer) = TestPeer::publisher();
    let token = server.token("close", "p", true, false);
    let posted = post_sdp(&format!("{}/whip/close", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    let mut publisher = tokio::task::spawn_blocking(move || {
        publisher.run_for(Duration::from_secs(1));
        publisher
    })
    .await?;
    assert!(publisher.stats.connected_after.is_some());
    assert_eq!(server.metric("sfu_rtc_instances").await, 1.0);
    tokio::task::spawn_blocking(move || publisher.close()).await?;
    for name in ["sfu_rtc_instances", "sfu_rooms", "sfu_registry_entries"] {
        assert!(
            server.wait_metric(name, 0.0, Duration::from_secs(3)).await,
            "{name} after close"
        );
    }
    assert_eq!(
        server
            .metric_with("sfu_sessions_ended_total", "reason=\"closed\"")
            .await,
        1.0,
        "ended by DTLS close"
    );
    // No task outlives the session (HTTP connections of this test included).
    assert!(
        server
            .wait_metric(
                "sfu_tokio_alive_tasks",
                tasks_at_start,
                Duration::from_secs(10)
            )
            .await,
        "alive tasks {} (at start {tasks_at_start})",
        server.metric("sfu_tokio_alive_tasks").await
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_tells_its_peers_the_session_closed() -> TestResult {
    let server = TestServer::start(60);
    let (mut publisher, offer) = TestPeer::publisher();
    let token = server.token("stop", "p", true, false);
    let posted = post_sdp(&format!("{}/whip/stop", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    // The peer runs until its session ends, 20 s at most.
    let publisher = publisher.spawn_for(Duration::from_secs(20));
    assert!(
        server
            .wait_metric("sfu_rtc_instances", 1.0, Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    // Shutdown without drain: the workers close what is still open.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    let publisher = tokio::task::spawn_blocking(move || publisher.join())
        .await?
        .map_err(|_| "peer thread panicked")?;
    assert!(publisher.stats.connected_after.is_some());
    assert!(
        !publisher.rtc.is_alive(),
        "the peer learned of the close (DTLS close_notify), {:?} after the stop",
        stopped.elapsed()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "told at once, not by a timeout: {:?}",
        stopped.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_does_not_disturb_a_running_session() -> TestResult {
    let server = TestServer::start(5);
    let room = "hostile";
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, "viewer", false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    viewer.accept_answer(&posted.body)?;
    let viewer = viewer.spawn_for(Duration::from_secs(6));
    let (mut publisher, offer) = TestPeer::publisher();
    let ptoken = server.token(room, "publisher", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &ptoken, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Garbage to every media port: random bytes, STUN with unknown and
    // malformed USERNAMEs, truncated DTLS and RTP-looking packets.
    let flood = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0u32;
    for i in 0u32..3000 {
        let mut d: Vec<u8> = (0..(i % 1200 + 1))
            .map(|j| (j * 31 + i * 7) as u8)
            .collect();
        match i % 4 {
            0 => {
                // STUN binding request header with a lying length and a bogus USERNAME.
                d = vec![0, 1, 0xff, 0xf0, 0x21, 0x12, 0xa4, 0x42];
                d.extend_from_slice(&[i as u8; 12]);
                d.extend_from_slice(&[0, 6, 0, 9]);
                d.extend_from_slice(b"nope:nope");
            }
            1 => d[0] = 22,   // DTLS handshake record type
            2 => d[0] = 0x80, // RTP version 2
            _ => {}
        }
        for addr in &server.media_addrs {
            if flood.send_to(&d, addr).is_ok() {
                sent += 1;
            }
        }
    }
    // And a burst of bad HTTP requests.
    let client = reqwest::Client::new();
    for i in 0..200 {
        let body = "x".repeat(i * 37 % 5000);
        let _ = client
            .post(format!("{}/whip/{room}", server.base))
            .bearer_auth(if i % 2 == 0 {
                "bad.token.here"
            } else {
                ptoken.as_str()
            })
            .header("content-type", "application/sdp")
            .body(body)
            .send()
            .await?;
    }
    eprintln!("sent {sent} garbage datagrams and 200 bad requests");

    publisher.join().map_err(|_| "publisher panicked")?;
    let stats = viewer.join().map_err(|_| "viewer panicked")?.stats;
    eprintln!(
        "viewer: {} video frames, {} audio frames",
        stats.video_frames, stats.audio_frames
    );
    assert!(stats.video_frames >= 120, "video kept flowing: {stats:?}");
    assert!(stats.audio_frames >= 200, "audio kept flowing: {stats:?}");
    assert_eq!(stats.discontinuities, 0);
    let health = reqwest::get(format!("{}/healthz", server.base)).await?;
    assert_eq!(health.status().as_u16(), 200, "the server is still up");
    assert!(
        server.metric("sfu_rooms").await <= 1.0,
        "no stray room from the bad requests"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remb_only_publishers_get_remb_and_twcc_publishers_do_not() -> TestResult {
    let server = TestServer::start(10);
    let url = format!("{}/whip/remb", server.base);
    // A publisher whose offer has no transport-cc (like encoders that only do REMB).
    let (mut remb_only, offer) = TestPeer::publisher();
    let offer: String = offer
        .lines()
        .filter(|l| !l.contains("transport-cc") && !l.contains("transport-wide-cc"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let posted = post_sdp(&url, &server.token("remb", "enc", true, false), &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert!(!posted.body.contains("transport-cc"), "no TWCC negotiated");
    remb_only.accept_answer(&posted.body)?;
    let (mut twcc, offer) = TestPeer::publisher();
    let posted = post_sdp(&url, &server.token("remb", "browser", true, false), &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    twcc.accept_answer(&posted.body)?;
    let a = remb_only.spawn_for(Duration::from_secs(3));
    let b = twcc.spawn_for(Duration::from_secs(3));
    let (remb_only, twcc) = (a.join().expect("peer"), b.join().expect("peer"));
    let remb = remb_only
        .stats
        .remb_bps
        .expect("the REMB-only publisher receives REMB");
    assert!(remb >= 2_000_000, "REMB leaves room for simulcast: {remb}");
    assert_eq!(
        twcc.stats.remb_bps, None,
        "TWCC publishers are left to TWCC"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stuck_before_dtls_is_removed_although_stun_keeps_coming() -> TestResult {
    // Idle timeout far away: only the connect timeout can end this session.
    let server = TestServer::start_with(ConfigArgs {
        session_timeout_secs: Some(60),
        connect_timeout_secs: Some(2),
        ..Default::default()
    });
    let (mut publisher, offer) = TestPeer::publisher();
    publisher.drop_dtls = true;
    let token = server.token("halfopen", "stuck", true, false);
    let posted = post_sdp(&format!("{}/whip/halfopen", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(4));
    assert!(
        server
            .wait_metric("sfu_rtc_instances", 0.0, Duration::from_secs(6))
            .await,
        "the half-open session is removed"
    );
    let publisher = publisher.join().map_err(|_| "peer thread")?;
    assert!(
        publisher.stats.connected_after.is_none(),
        "it never connected"
    );
    assert_eq!(
        server
            .metric_with("sfu_sessions_ended_total", "reason=\"connect_timeout\"")
            .await,
        1.0,
        "ended as connect_timeout"
    );
    Ok(())
}
