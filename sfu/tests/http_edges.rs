//! Every client error the front door can answer, against the real server:
//! the right status, a reason in the body, and no harm to other sessions.

mod common;

use std::time::Duration;

use common::{post_sdp, TestPeer, TestResult, TestServer};
use reqwest::{Client, Method, StatusCode};
use sfu::config::ConfigArgs;
use signaling::auth::{mint_with_secret, VideoGrant};

fn client() -> Client {
    Client::new()
}

async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = client().request(method, url).body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_content_type_and_sdp_errors() -> TestResult {
    let server = TestServer::start(5);
    let whip = format!("{}/whip/edge", server.base);
    let (_peer, offer) = TestPeer::publisher();
    let sdp = Some("application/sdp");
    let publish = server.token("edge", "p", true, false);

    // No token, garbage token, expired token, token for another key.
    let (s, h, body) = send(Method::POST, &whip, None, sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        h.get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert!(body.contains("Bearer"), "{body}");
    let (s, _, body) = send(Method::POST, &whip, Some("not.a.jwt"), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("malformed token"), "{body}");
    let grant = VideoGrant {
        room: Some("edge".into()),
        room_join: true,
        ..Default::default()
    };
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let claims = serde_json::json!({"iss":"devkey","sub":"p","exp":1000,"nbf":0,"video":grant});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )?
    };
    let (s, _, body) = send(Method::POST, &whip, Some(&expired), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");
    let foreign = mint_with_secret("otherkey", "x", "p", grant.clone(), Duration::from_secs(60))?;
    let (s, _, body) = send(Method::POST, &whip, Some(&foreign), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unknown API key"), "{body}");

    // Valid token, wrong grant: another room, or subscribe-only for WHIP.
    let other_room = server.token("other", "p", true, true);
    let (s, _, body) = send(Method::POST, &whip, Some(&other_room), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let subscribe_only = server.token("edge", "p", false, true);
    let (s, _, body) = send(Method::POST, &whip, Some(&subscribe_only), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("canPublish"), "{body}");
    let whep = format!("{}/whep/edge", server.base);
    let (s, _, body) = send(Method::POST, &whep, Some(&publish), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("canSubscribe"), "{body}");

    // Content type, body, room name.
    let (s, _, _) = send(
        Method::POST,
        &whip,
        Some(&publish),
        Some("text/plain"),
        &offer,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = send(Method::POST, &whip, Some(&publish), None, &offer, &[]).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, body) = send(Method::POST, &whip, Some(&publish), sdp, "", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _, body) = send(
        Method::POST,
        &whip,
        Some(&publish),
        sdp,
        "this is not sdp",
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("SDP"), "{body}");
    let bad_room = format!("{}/whip/bad%20room", server.base);
    let (s, _, body) = send(Method::POST, &bad_room, Some(&publish), sdp, &offer, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("room name"), "{body}");
    let huge = "a".repeat(200_000);
    let (s, _, _) = send(Method::POST, &whip, Some(&publish), sdp, &huge, &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Valid SDP that cannot be served: WHIP that only receives, no usable codec.
    let recv_only = offer.replace("a=sendonly", "a=recvonly");
    let (s, _, body) = send(Method::POST, &whip, Some(&publish), sdp, &recv_only, &[]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("must send"), "{body}");
    let (_v, viewer_offer) = TestPeer::viewer(
        str0m::RtcConfig::new()
            .clear_codecs()
            .enable_pcmu(true, false),
    );
    let subscribe = server.token("edge", "v", false, true);
    let (s, _, body) = send(
        Method::POST,
        &whep,
        Some(&subscribe),
        sdp,
        &viewer_offer,
        &[],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "PCMU-only viewer: {body}"
    );
    assert!(body.contains("codec"), "{body}");

    // After all that, a good request still works and nothing leaked.
    let ok = post_sdp(&whip, &publish, &offer).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(server.metric("sfu_rooms").await, 1.0);
    assert_eq!(server.metric("sfu_rtc_instances").await, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_patch_delete_and_cors() -> TestResult {
    let server = TestServer::start(5);
    let whip = format!("{}/whip/res", server.base);
    let (_peer, offer) = TestPeer::publisher();
    let token = server.token("res", "p", true, false);
    let created = post_sdp(&whip, &token, &offer).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created
            .headers
            .get("accept-patch")
            .and_then(|v| v.to_str().ok()),
        Some("application/trickle-ice-sdpfrag")
    );
    let resource = format!("{}{}", server.base, created.location.ok_or("no Location")?);
    let etag = created.etag.ok_or("no ETag")?;
    let frag_ct = Some("application/trickle-ice-sdpfrag");

    // Trickle: 204. Wrong content type: 415. Garbage fragment: 400.
    let trickle = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
    let (s, _, body) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        frag_ct,
        trickle,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, _, _) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        sdp_ct(),
        trickle,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, body) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        frag_ct,
        "garbage",
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // A candidate the server cannot use (an mDNS name) is dropped: 204
    // (MediaMTX's client ends its session on anything else).
    let mdns = "a=mid:0\r\na=candidate:1 1 udp 2130706431 3f2a9c1e-7b.local 50000 typ host\r\n";
    let (s, _, body) = send(Method::PATCH, &resource, Some(&token), frag_ct, mdns, &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");

    // ICE restart: without If-Match 428, If-Match mismatch 412; matching
    // ETag 200 with new credentials, a=ice-lite and a new ETag.
    let restart = "a=ice-ufrag:newfrag1\r\na=ice-pwd:newpasswordnewpassword12\r\n";
    let (s, _, body) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        frag_ct,
        restart,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert!(body.contains("If-Match"), "{body}");
    let (s, _, _) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        frag_ct,
        restart,
        &[("if-match", "\"stale\"")],
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, h, body) = send(
        Method::PATCH,
        &resource,
        Some(&token),
        frag_ct,
        restart,
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    assert!(body.contains("a=candidate:"), "{body}");
    assert!(body.starts_with("a=ice-lite\r\n"), "{body}");
    let new_etag = h
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .ok_or("no new ETag")?;
    assert_ne!(new_etag, etag);
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/trickle-ice-sdpfrag")
    );

    // Unknown resource: 404 for PATCH and DELETE; a WHEP path for a WHIP id is unknown too.
    let unknown = format!("{whip}/0123456789abcdef");
    let (s, _, _) = send(Method::PATCH, &unknown, Some(&token), frag_ct, trickle, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = send(Method::DELETE, &unknown, Some(&token), None, "", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let as_whep = resource.replace("/whip/", "/whep/");
    let sub = server.token("res", "v", false, true);
    let (s, _, _) = send(Method::DELETE, &as_whep, Some(&sub), None, "", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // DELETE needs the token too, and the token of the session's own identity.
    let (s, _, _) = send(Method::DELETE, &resource, None, None, "", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let intruder = server.token("res", "someone-else", true, false);
    let (s, _, body) = send(Method::DELETE, &resource, Some(&intruder), None, "", &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, _) = send(
        Method::PATCH,
        &resource,
        Some(&intruder),
        frag_ct,
        trickle,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // CORS preflight and headers for a page on another origin.
    let pre = client()
        .request(Method::OPTIONS, &whip)
        .header("origin", "https://studio.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await?;
    assert!(pre.status().is_success(), "preflight: {}", pre.status());
    let allow = pre
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok());
    assert_eq!(allow, Some("*"));
    let methods = pre
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    for m in ["POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "allow-methods: {methods}");
    }
    // OPTIONS says what POST takes, preflight or not (RFC 9725 §4.2).
    let accept_post = |h: &reqwest::header::HeaderMap| {
        h.get("accept-post")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        accept_post(pre.headers()).as_deref(),
        Some("application/sdp")
    );
    let (s, h, _) = send(Method::OPTIONS, &whip, None, None, "", &[]).await;
    assert!(s.is_success(), "{s}");
    assert_eq!(accept_post(&h).as_deref(), Some("application/sdp"));
    let whep = format!("{}/whep/res", server.base);
    let (s, h, _) = send(Method::OPTIONS, &whep, None, None, "", &[]).await;
    assert!(s.is_success(), "{s}");
    assert_eq!(accept_post(&h).as_deref(), Some("application/sdp"));
    // A WHEP player that cannot set headers puts the token in the URL;
    // WHIP keeps it out of URLs (they end up in logs).
    let (_viewer, view_offer) = TestPeer::viewer(str0m::RtcConfig::new());
    let (s, h, body) = send(
        Method::POST,
        &format!("{whep}?access_token={sub}"),
        None,
        sdp_ct(),
        &view_offer,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let viewer = format!(
        "{}{}",
        server.base,
        h.get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Location")?
    );
    let (s, _, _) = send(
        Method::POST,
        &format!("{whep}?access_token=forged"),
        None,
        sdp_ct(),
        &view_offer,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = send(
        Method::POST,
        &format!("{whip}?access_token={token}"),
        None,
        sdp_ct(),
        &offer,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("Authorization"), "{body}");
    let (s, _, _) = send(Method::DELETE, &viewer, Some(&sub), None, "", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(Method::DELETE, &resource, Some(&token), None, "", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(Method::DELETE, &resource, Some(&token), None, "", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        server
            .wait_metric("sfu_rooms", 0.0, Duration::from_secs(5))
            .await
    );
    Ok(())
}

fn sdp_ct() -> Option<&'static str> {
    Some("application/sdp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_503_with_retry_after() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        max_rooms: Some(1),
        max_participants_per_room: Some(2),
        ..Default::default()
    });
    let (_p, offer) = TestPeer::publisher();
    let url = |room: &str| format!("{}/whip/{room}", server.base);
    for i in 0..2 {
        let t = server.token("full", &format!("p{i}"), true, false);
        assert_eq!(post_sdp(&url("full"), &t, &offer).await.status, 201);
    }
    let t = server.token("full", "p2", true, false);
    let third = post_sdp(&url("full"), &t, &offer).await;
    assert_eq!(third.status, 503, "{}", third.body);
    assert!(third.headers.get("retry-after").is_some());
    assert!(
        third.body.contains("participants per room"),
        "{}",
        third.body
    );
    let t = server.token("second-room", "p", true, false);
    let other = post_sdp(&url("second-room"), &t, &offer).await;
    assert_eq!(other.status, 503, "{}", other.body);
    assert!(other.body.contains("rooms"), "{}", other.body);
    assert!(other.headers.get("retry-after").is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_ice_servers_are_announced_in_link_headers() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        ice_servers: vec![
            signaling::IceServer {
                urls: vec!["stun:stun.example.net:3478".into()],
                username: None,
                credential: None,
            },
            signaling::IceServer {
                urls: vec!["turn:turn.example.net:3478?transport=udp".into()],
                username: Some("user".into()),
                credential: Some("pass".into()),
            },
        ],
        ..Default::default()
    });
    let (_p, offer) = TestPeer::publisher();
    let token = server.token("links", "p", true, false);
    let created = post_sdp(&format!("{}/whip/links", server.base), &token, &offer).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let links: Vec<&str> = created
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links.contains(&"<stun:stun.example.net:3478>; rel=\"ice-server\""),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l
            .starts_with("<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"")
            && l.contains("username=\"user\"")
            && l.contains("credential=\"pass\"")),
        "{links:?}"
    );
    Ok(())
}

/// The expiry and identity of a TURN REST username, checked against its credential.
fn check_turn_link(link: &str, secret: &str, identity: &str) -> u64 {
    let param = |name: &str| {
        link.split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_default()
            .to_string()
    };
    let username = param("username");
    let (expiry, who) = username.split_once(':').expect("expiry:identity");
    assert_eq!(who, identity, "{link}");
    assert_eq!(
        param("credential"),
        signaling::turn::credential(secret, &username)
    );
    expiry.parse().expect("unix time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_are_minted_per_session_in_link_headers() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("shared-with-coturn".into()),
        turn_ttl_secs: Some(600),
        ..Default::default()
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (kind, identity, publish) in [("whip", "cam-1", true), ("whep", "viewer-7", false)] {
        let (_p, offer) = if publish {
            TestPeer::publisher()
        } else {
            TestPeer::viewer(str0m::RtcConfig::new())
        };
        let token = server.token("turned", identity, publish, !publish);
        let created = post_sdp(&format!("{}/{kind}/turned", server.base), &token, &offer).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let link = created
            .headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.starts_with("<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\""))
            .map(str::to_string)
            .ok_or("no TURN link")?;
        let expiry = check_turn_link(&link, "shared-with-coturn", identity);
        assert!(
            (now + 595..=now + 605).contains(&expiry),
            "{expiry} vs {now}"
        );
    }
    Ok(())
}

#[test]
fn turn_settings_are_checked() {
    use sfu::config::Config;
    let bad = [
        (vec!["turn:t:3478".to_string()], None, "needs --turn-secret"),
        (
            vec![],
            Some("s".to_string()),
            "needs at least one --turn-url",
        ),
        (
            vec!["http://t".to_string()],
            Some("s".to_string()),
            "not a turn: or turns: URL",
        ),
    ];
    for (urls, secret, why) in bad {
        let err = Config::resolve(
            ConfigArgs {
                turn_urls: urls,
                turn_secret: secret,
                ..Default::default()
            },
            ConfigArgs::default(),
        )
        .expect_err("refused");
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_request_rate_gets_429_with_retry_after() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        http_rate_limit: Some(5.0),
        http_rate_burst: Some(10.0),
        ..Default::default()
    });
    let client = reqwest::Client::new();
    let mut statuses = vec![];
    for _ in 0..15 {
        statuses.push(
            client
                .get(format!("{}/healthz", server.base))
                .send()
                .await?,
        );
    }
    let ok = statuses.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|r| r.status() == 429).collect();
    // The burst of 10 (plus at most one refilled token) passes, the rest waits.
    assert!((10..=11).contains(&ok), "{ok} passed");
    assert!(!limited.is_empty());
    let retry = limited[0]
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Retry-After")?;
    assert_eq!(retry, "1");
    let body = statuses.pop().ok_or("no response")?.text().await?;
    assert!(body.contains("too many requests from 127.0.0.1"), "{body}");
    // After waiting as told, requests pass again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await?;
    assert_eq!(again.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_over_its_session_limit_gets_429() -> TestResult {
    let server = TestServer::start_with(ConfigArgs {
        max_sessions_per_identity: Some(2),
        ..Default::default()
    });
    let url = format!("{}/whep/capped", server.base);
    let mut held = vec![];
    for n in 0..3 {
        let (peer, offer) = TestPeer::viewer(str0m::RtcConfig::new());
        let posted = post_sdp(&url, &server.token("capped", "shared", false, true), &offer).await;
        if n < 2 {
            assert_eq!(posted.status, 201, "{}", posted.body);
            held.push(peer);
        } else {
            assert_eq!(posted.status, 429, "{}", posted.body);
            assert!(
                posted.body.contains("\"shared\" already has 2 sessions"),
                "{}",
                posted.body
            );
        }
    }
    // Another identity is not affected.
    let (_p, offer) = TestPeer::viewer(str0m::RtcConfig::new());
    let posted = post_sdp(&url, &server.token("capped", "other", false, true), &offer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    Ok(())
}

/// A str0m peer with Opus and one video codec (`vp8` or H.264).
fn one_codec_peer(vp8: bool, direction: str0m::media::Direction) -> (TestPeer, String) {
    use str0m::media::MediaKind;
    let config = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false);
    let config = if vp8 {
        config.enable_vp8(true)
    } else {
        config.enable_h264(true)
    };
    TestPeer::new(
        config,
        &[(MediaKind::Audio, direction), (MediaKind::Video, direction)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_that_cannot_be_served_are_refused_with_what_would_work() -> TestResult {
    use str0m::media::Direction;
    let server = TestServer::start(5);
    let whip = format!("{}/whip/codecs", server.base);
    let whep = format!("{}/whep/codecs", server.base);
    let publish = server.token("codecs", "p", true, false);
    let subscribe = server.token("codecs", "v", false, true);

    // A publisher whose only video codec the server does not take gets 422
    // naming both sides, not an audio-only answer.
    let (_p, offer) = one_codec_peer(true, Direction::SendOnly);
    let h263 = offer.replace("VP8/90000", "H263/90000");
    let (s, _, body) = send(
        Method::POST,
        &whip,
        Some(&publish),
        Some("application/sdp"),
        &h263,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("video section"), "{body}");
    assert!(body.contains("offered H263"), "{body}");
    assert!(
        body.contains("supported video codecs: ") && body.contains("VP8"),
        "{body}"
    );
    assert_eq!(
        server.metric("sfu_rtc_instances").await,
        0.0,
        "nothing half set up"
    );

    // An H.264-only publisher; a VP8-only viewer is told what the room sends.
    let (_publisher, offer) = one_codec_peer(false, Direction::SendOnly);
    let created = post_sdp(&whip, &publish, &offer).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let (_v, vp8_viewer) = one_codec_peer(true, Direction::RecvOnly);
    let (s, _, body) = send(
        Method::POST,
        &whep,
        Some(&subscribe),
        Some("application/sdp"),
        &vp8_viewer,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("sent as H264 "), "{body}");
    assert!(body.contains("receives video as VP8"), "{body}");
    assert_eq!(
        server.metric("sfu_rtc_instances").await,
        1.0,
        "only the publisher"
    );
    // A viewer that takes H.264 is served.
    let (_v, h264_viewer) = one_codec_peer(false, Direction::RecvOnly);
    let posted = post_sdp(&whep, &subscribe, &h264_viewer).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    Ok(())
}

/// Odd but legal offers, as other WHIP stacks send them, each edited from a
/// real offer: served (201) or refused with a 4xx that says why; never a
/// 5xx, and every refused one leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_legal_offers_are_served_or_refused_clearly() -> TestResult {
    let server = TestServer::start(5);
    let publish = server.token("odd", "p", true, false);
    // A publisher with Opus and VP8 only, so edits to PT 96 hit VP8.
    let (_p, offer) = one_codec_peer(true, str0m::media::Direction::SendOnly);
    let lines: Vec<&str> = offer.lines().collect();
    let without = |prefix: &str| -> String {
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.starts_with(prefix))
            .collect();
        kept.join("\r\n") + "\r\n"
    };
    let video_at = offer.find("m=video").expect("a video section");
    let (audio_part, video_part) = offer.split_at(video_at);
    let edits: Vec<(&str, String)> = vec![
        ("no ssrc lines", without("a=ssrc")),
        (
            "no mid header extension",
            lines
                .iter()
                .filter(|l| !l.contains("sdes:mid"))
                .copied()
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n",
        ),
        (
            "rids without simulcast",
            offer.replace(
                "a=rtpmap:96 VP8/90000",
                "a=rtpmap:96 VP8/90000\r\na=rid:h send",
            ),
        ),
        (
            "an unknown fmtp",
            offer.replace(
                "a=rtpmap:96 VP8/90000",
                "a=rtpmap:96 VP8/90000\r\na=fmtp:96 x-unknown=1",
            ),
        ),
        (
            "a duplicate payload type",
            offer.replace(
                "a=rtpmap:96 VP8/90000",
                "a=rtpmap:96 VP8/90000\r\na=rtpmap:96 H264/90000",
            ),
        ),
        ("BUNDLE with one media section", {
            let session_and_audio = audio_part.split("m=audio").next().unwrap_or("");
            let mid = video_part
                .lines()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .unwrap_or("1")
                .trim()
                .to_string();
            let session = session_and_audio
                .lines()
                .map(|l| match l.starts_with("a=group:BUNDLE") {
                    true => format!("a=group:BUNDLE {mid}"),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            format!("{session}\r\n{video_part}")
        }),
    ];
    let whip = format!("{}/whip/odd", server.base);
    let mut served = 0.0;
    for (what, sdp) in &edits {
        let posted = post_sdp(&whip, &publish, sdp).await;
        assert!(
            posted.status == 201 || (400..500).contains(&posted.status),
            "{what}: {} {}",
            posted.status,
            posted.body
        );
        if *what == "a duplicate payload type" {
            assert_eq!(posted.status, 400, "{}", posted.body);
            assert!(posted.body.contains("mapped twice"), "{}", posted.body);
        }
        if posted.status == 201 {
            served += 1.0;
            // Free the room's publisher slot for the next offer.
            let url = posted.location.expect("a 201 names its resource");
            let url = if url.starts_with("http") {
                url
            } else {
                format!("{}{url}", server.base)
            };
            let (s, _, body) = send(Method::DELETE, &url, Some(&publish), None, "", &[]).await;
            assert!(s.is_success(), "{what}: DELETE {s} {body}");
        } else {
            assert!(!posted.body.trim().is_empty(), "{what}: a refusal says why");
            assert!(
                !posted.body.contains("PointerOffset"),
                "{what}: {}",
                posted.body
            );
        }
        eprintln!(
            "{what}: {} {}",
            posted.status,
            posted.body.lines().next().unwrap_or("")
        );
    }
    assert!(
        served >= 4.0,
        "most of these are legal and served ({served})"
    );
    assert!(
        server
            .wait_metric("sfu_rtc_instances", 0.0, Duration::from_secs(5))
            .await,
        "nothing half set up"
    );
    Ok(())
}
