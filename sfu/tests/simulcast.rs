//! Simulcast through the real server with str0m peers: a publisher sends
//! three VP8 layers under rid names that say nothing about their order; each
//! WHEP viewer receives exactly one layer — the best its estimate and wishes
//! allow — as one continuous stream, and falls back when its layer stops.

mod common;

use std::time::Duration;

use common::{post_sdp, SimLayer, TestPeer, TestResult, TestServer};
use str0m::RtcConfig;

fn widths_after(stats: &common::PeerStats, after: Duration) -> Vec<u32> {
    stats
        .keyframe_widths
        .iter()
        .filter(|(t, _)| *t >= after)
        .map(|(_, w)| *w)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_one_layer_by_wish_and_falls_back_when_it_stops() -> TestResult {
    let server = TestServer::start(5);
    let room = "simulcast";

    // Viewer A has no wish; viewer B wants at most 640 wide.
    let mut viewers = vec![];
    for (name, query) in [("a", ""), ("b", "?maxWidth=640")] {
        let (mut v, offer) = TestPeer::viewer(RtcConfig::new());
        let token = server.token(room, name, false, true);
        let posted = post_sdp(
            &format!("{}/whep/{room}{query}", server.base),
            &token,
            &offer,
        )
        .await;
        assert_eq!(posted.status, 201, "{}", posted.body);
        v.accept_answer(&posted.body)?;
        viewers.push(v.spawn_for(Duration::from_secs(9)));
    }

    // rid names deliberately out of order: "x" is the middle, "a" the top.
    let layers = vec![
        SimLayer::new("a", 1280, 720, 2_500),
        SimLayer::new("z", 320, 180, 300),
        SimLayer::new("x", 640, 360, 1_000),
    ];
    let (mut publisher, offer) = TestPeer::simulcast_publisher(layers);
    let token = server.token(room, "pub", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert!(
        posted.body.contains("a=simulcast:recv"),
        "answer accepts simulcast:\n{}",
        posted.body
    );
    publisher.accept_answer(&posted.body)?;
    let running = publisher.spawn_for(Duration::from_secs(5));
    // While it runs, the admin API says what viewer B receives and why.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (report, video) = server.video_subscription(room, "b").await?;
    assert_eq!(video["publisher"], "pub", "{report}");
    assert_eq!(video["maxWidth"], 640, "{report}");
    assert_eq!(video["layer"]["width"], 640, "{report}");
    assert_eq!(video["layer"]["rid"], "x", "{report}");
    let widths: Vec<u64> = video["available"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["width"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(widths, vec![320, 640, 1280], "{report}");
    let rates: Vec<u64> = video["available"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["bitrateBps"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        rates[0] < rates[1] && rates[1] < rates[2],
        "measured rates rise with size: {report}"
    );
    assert!(report["downlinkEstimateBps"].as_u64().is_some(), "{report}");
    let missing = reqwest::Client::new()
        .get(format!(
            "{}/api/rooms/{room}/participants/nobody/subscriptions",
            server.base
        ))
        .basic_auth("devkey", Some("secret"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    let publisher = running.join().map_err(|_| "publisher panicked")?;

    // The top layer stops (the publisher's uplink got worse); the others go on.
    let mut publisher = publisher;
    for l in &mut publisher.layers {
        l.stopped = l.rid == "a";
    }
    let stopped_at = Duration::from_secs(5);
    publisher
        .spawn_for(Duration::from_secs(3))
        .join()
        .map_err(|_| "publisher panicked")?;

    let a = viewers
        .remove(0)
        .join()
        .map_err(|_| "viewer panicked")?
        .stats;
    let b = viewers
        .remove(0)
        .join()
        .map_err(|_| "viewer panicked")?
        .stats;
    eprintln!("A keyframes {:?}", a.keyframe_widths);
    eprintln!("B keyframes {:?}", b.keyframe_widths);
    assert!(
        a.video_frames > 100 && b.video_frames > 100,
        "A {} B {}",
        a.video_frames,
        b.video_frames
    );
    // Before the stop: A sees the 1280 layer, B the 640 one, never anything else.
    let a_first: Vec<u32> = a
        .keyframe_widths
        .iter()
        .filter(|(t, _)| *t < stopped_at)
        .map(|(_, w)| *w)
        .collect();
    assert!(a_first.contains(&1280), "A got the top layer: {a_first:?}");
    assert!(
        b.keyframe_widths.iter().all(|(_, w)| *w == 640),
        "B never exceeds 640: {:?}",
        b.keyframe_widths
    );
    assert!(!b.keyframe_widths.is_empty());
    // After the stop: A falls back to 640 within about a second.
    // (The first keyframe after the stop is the fallback's: the server asks
    // for it; periodic keyframes come every 3 s.)
    let first_after = a.keyframe_widths.iter().find(|(t, _)| *t >= stopped_at);
    assert!(
        matches!(first_after, Some((t, 640)) if *t <= stopped_at + Duration::from_millis(1500)),
        "A fell back within 1.5 s: {:?}",
        a.keyframe_widths
    );
    let a_after = widths_after(&a, stopped_at);
    assert!(
        a_after.iter().all(|w| *w == 640),
        "A stays on 640: {:?}",
        a.keyframe_widths
    );
    // One continuous stream per viewer, across the layer switch.
    assert_eq!(a.discontinuities, 0, "A saw gaps");
    assert_eq!(b.discontinuities, 0, "B saw gaps");
    let m = server.metric("sfu_layer_switches_total").await;
    assert!(m >= 1.0, "switch counted: {m}");
    Ok(())
}
