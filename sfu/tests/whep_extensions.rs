//! The WHEP core extensions with str0m peers: a simulcast publisher, a
//! viewer that opens an event stream (`layers`, `viewercount`) and picks
//! layers through the layer extension, and what bad requests get.

mod common;

use std::time::Duration;

use common::{next_event, open_events, post_sdp, SimLayer, TestPeer, TestResult, TestServer};
use str0m::RtcConfig;

/// POST a layer selection; the status and body.
async fn select(resource: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{resource}/layer"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_are_announced_and_a_player_picks_one() -> TestResult {
    let server = TestServer::start(5);
    let room = "ext";
    let (mut viewer, offer) = TestPeer::viewer(RtcConfig::new());
    let token = server.token(room, "v", false, true);
    let posted = post_sdp(&format!("{}/whep/{room}", server.base), &token, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    // Audio and video in one media stream (players put streams[0] on screen).
    let streams: std::collections::BTreeSet<&str> = posted
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .filter_map(|v| v.split_whitespace().next())
        .collect();
    assert_eq!(streams.len(), 1, "{}", posted.body);
    viewer.accept_answer(&posted.body)?;
    let viewer = viewer.spawn_for(Duration::from_secs(10));
    let resource = format!("{}{}", server.base, posted.location.ok_or("no Location")?);

    let layers = vec![
        SimLayer::new("f", 1280, 720, 2_500),
        SimLayer::new("h", 640, 360, 1_000),
        SimLayer::new("q", 320, 180, 300),
    ];
    let (mut publisher, offer) = TestPeer::simulcast_publisher(layers);
    let ptoken = server.token(room, "pub", true, false);
    let posted = post_sdp(&format!("{}/whip/{room}", server.base), &ptoken, &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    publisher.accept_answer(&posted.body)?;
    let publisher = publisher.spawn_for(Duration::from_secs(9));

    // The layers event: per video m-line (index 1, after audio), highest
    // first, each rid with its size and a measured bitrate.
    let mut events = open_events(&resource, Some(r#"["layers","viewercount"]"#)).await?;
    let mut buf = String::new();
    let data = next_event(&mut events, &mut buf, "viewercount").await?;
    assert_eq!(data, r#"{"viewercount":1}"#);
    let mut layers = serde_json::Value::Null;
    for _ in 0..20 {
        let data = next_event(&mut events, &mut buf, "layers").await?;
        layers = serde_json::from_str(&data)?;
        let full = layers["1"].as_array().is_some_and(|a| {
            a.len() == 3 && a.iter().all(|l| l["bitrate"].as_u64().unwrap_or(0) > 0)
        });
        if full {
            break;
        }
    }
    let video = layers["1"]
        .as_array()
        .ok_or(format!("no m-line 1: {layers}"))?;
    let summary: Vec<(String, u64)> = video
        .iter()
        .map(|l| {
            let rid = l["rid"].as_str().unwrap_or("").to_string();
            (rid, l["width"].as_u64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("f".to_string(), 1280),
            ("h".into(), 640),
            ("q".into(), 320)
        ],
        "{layers}"
    );
    assert!(!buf.contains("event: active"), "only the kinds asked for");

    // The player asks for "q": the server switches it there and holds it.
    assert_eq!(
        select(&resource, Some(&token), r#"{"rid":"q"}"#).await.0,
        200
    );
    let mut on_q = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, video) = server.video_subscription(room, "v").await?;
        if video["layer"]["rid"] == "q" {
            on_q = true;
            break;
        }
    }
    assert!(on_q, "the viewer receives the layer it picked");
    // Back to the server's own choice: the top layer again (no estimate
    // limits a local viewer).
    assert_eq!(
        select(&resource, Some(&token), r#"{"mediaId":"1"}"#)
            .await
            .0,
        200
    );
    let mut back = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, video) = server.video_subscription(room, "v").await?;
        if video["target"] != "q" {
            back = true;
            break;
        }
    }
    assert!(back, "an empty selection gives the choice back");

    // Bad requests.
    let (status, body) = select(&resource, Some(&token), r#"{"rid":"zz"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("zz") && body.contains("q, h, f"), "{body}");
    let (status, body) = select(&resource, Some(&token), r#"{"rid":1}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = select(&resource, Some(&token), r#"{"mediaId":"0"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("mediaId 0"), "{body}");
    assert_eq!(select(&resource, None, "{}").await.0, 401);
    let other = server.token(room, "someone-else", false, true);
    assert_eq!(select(&resource, Some(&other), "{}").await.0, 403);
    let unknown = reqwest::Client::new()
        .post(format!("{resource}/sse"))
        .body(r#"["active","scte35"]"#)
        .send()
        .await?;
    assert_eq!(unknown.status().as_u16(), 400);
    assert!(unknown.text().await?.contains("scte35"));

    // A stream the player closes is gone.
    let created = reqwest::Client::new()
        .post(format!("{resource}/sse"))
        .send()
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location")?
        .to_string();
    let stream = format!("{}{location}", server.base);
    let http = reqwest::Client::new();
    assert_eq!(http.delete(&stream).send().await?.status().as_u16(), 200);
    assert_eq!(http.get(&stream).send().await?.status().as_u16(), 404);
    assert_eq!(http.delete(&stream).send().await?.status().as_u16(), 404);

    publisher.join().map_err(|_| "publisher panicked")?;
    viewer.join().map_err(|_| "viewer panicked")?;
    Ok(())
}
