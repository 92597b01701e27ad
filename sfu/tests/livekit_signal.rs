//! LiveKit's signalling (`/rtc/v1`) against bad input, over real
//! WebSockets: refused join requests get the right status and a reason, the
//! validate endpoints answer like the join, and a client that sends frames
//! that mean nothing is told to leave and let go — while another client in
//! the same room goes on and only sees it leave.

mod common;

use std::time::Duration;

use base64::Engine;
use common::livekit::Refused;
use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use signaling::livekit::proto;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A join request as livekit-client sends it (no offer), base64url.
fn join_request() -> String {
    let request = proto::JoinRequest {
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let wrapped = proto::WrappedJoinRequest {
        compression: proto::wrapped_join_request::Compression::None as i32,
        join_request: request.encode_to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Open `/rtc/v1` and read the first response; the status and body when
/// the upgrade is refused.
async fn connect(base: &str, query: &str) -> Result<(Socket, proto::JoinResponse), Refused> {
    let url = format!("{}/rtc/v1?{query}", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(Refused::from)?;
    match next(&mut ws).await {
        Some(proto::signal_response::Message::Join(join)) => Ok((ws, join)),
        other => panic!("the first response is not a join: {other:?}"),
    }
}

/// The next signal response, skipping WebSocket control frames; `None`
/// when the socket closed or 5 s passed.
async fn next(ws: &mut Socket) -> Option<proto::signal_response::Message> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??
            .ok()?;
        match frame {
            Message::Binary(b) => {
                return proto::SignalResponse::decode(b.as_ref())
                    .expect("a SignalResponse")
                    .message
            }
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Wait for a response matching `want`, up to 5 s of silence.
async fn wait_for(
    ws: &mut Socket,
    want: impl Fn(&proto::signal_response::Message) -> bool,
) -> Option<proto::signal_response::Message> {
    while let Some(m) = next(ws).await {
        if want(&m) {
            return Some(m);
        }
    }
    None
}

async fn send(ws: &mut Socket, request: proto::signal_request::Message) {
    let frame = proto::SignalRequest {
        message: Some(request),
    }
    .encode_to_vec();
    ws.send(Message::Binary(frame.into())).await.expect("send");
}

async fn ping_answered(ws: &mut Socket) -> bool {
    send(
        ws,
        proto::signal_request::Message::PingReq(proto::Ping {
            timestamp: 42,
            rtt: 0,
        }),
    )
    .await;
    wait_for(ws, |m| {
        matches!(m, proto::signal_response::Message::PongResp(p) if p.last_ping_timestamp == 42)
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_say_why_and_validate_answers_like_the_join() {
    let server = TestServer::start(30);
    let token = server.token("lk-bad", "ann", true, true);
    let jr = join_request();
    let v1 = |q: &str| format!("{}/rtc/v1/validate?{q}", server.base);

    assert_eq!(
        get(&v1(&format!("access_token={token}&join_request={jr}"))).await,
        (200, "success".into())
    );
    let (status, body) = get(&v1(&format!("access_token=not-a-jwt&join_request={jr}"))).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&v1(&format!("access_token={token}"))).await;
    assert_eq!(status, 400);
    assert!(body.contains("join_request"), "{body}");
    let (status, body) = get(&v1(&format!("access_token={token}&join_request=%25%25%25"))).await;
    assert_eq!(status, 400);
    assert!(body.contains("base64"), "{body}");
    // Valid base64 of something that is not a WrappedJoinRequest.
    let junk = base64::engine::general_purpose::URL_SAFE.encode([0xff_u8; 12]);
    let (status, body) = get(&v1(&format!("access_token={token}&join_request={junk}"))).await;
    assert_eq!(status, 400);
    assert!(body.contains("protobuf"), "{body}");
    // A browser page reads these answers only with CORS, whatever the
    // status: without it livekit-client reports the server unreachable.
    for (query, status) in [
        (format!("access_token={token}&join_request={jr}"), 200),
        (format!("access_token=not-a-jwt&join_request={jr}"), 401),
    ] {
        let resp = reqwest::Client::new()
            .get(v1(&query))
            .header("origin", "http://page.example")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "CORS on a {status}"
        );
    }
    // The dual mode's validate makes the same checks.
    let (status, body) = get(&format!(
        "{}/rtc/validate?access_token={token}&protocol=17",
        server.base
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "success"));
    let (status, _) = get(&format!(
        "{}/rtc/validate?access_token=garbage&protocol=17",
        server.base
    ))
    .await;
    assert_eq!(status, 401);

    // The upgrade itself is refused the same way.
    let query = format!("access_token={token}&join_request={junk}");
    let Err(refused) = connect(&server.base, &query).await else {
        panic!("a junk join_request was let in");
    };
    assert_eq!(refused.status, 400, "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_garbage_is_let_go_and_the_others_go_on() {
    let server = TestServer::start(30);
    let jr = join_request();
    let query = |identity: &str| {
        format!(
            "access_token={}&join_request={jr}",
            server.token("lk-garbage", identity, true, true)
        )
    };
    let (mut ann, ann_join) = connect(&server.base, &query("ann"))
        .await
        .expect("ann joins");
    let ann_sid = ann_join.participant.expect("ann's info").sid;
    assert!(ann_sid.starts_with("PA_"));

    // A request for a track that does not exist, one of another room's
    // track sids, and settings for it: nothing breaks.
    send(
        &mut ann,
        proto::signal_request::Message::Subscription(proto::UpdateSubscription {
            track_sids: vec!["TR_nope".into()],
            subscribe: true,
            participant_tracks: vec![],
        }),
    )
    .await;
    send(
        &mut ann,
        proto::signal_request::Message::TrackSetting(proto::UpdateTrackSettings {
            track_sids: vec!["TR_elsewhere".into()],
            quality: proto::VideoQuality::Low as i32,
            ..Default::default()
        }),
    )
    .await;
    assert!(ping_answered(&mut ann).await, "ann is still served");

    // Ben sends a text frame that is not a request: a leave, then close.
    let (mut ben, _) = connect(&server.base, &query("ben"))
        .await
        .expect("ben joins");
    ben.send(Message::Text("hello?".into()))
        .await
        .expect("send");
    let leave = wait_for(&mut ben, |m| {
        matches!(m, proto::signal_response::Message::Leave(_))
    })
    .await;
    assert!(leave.is_some(), "ben is told to leave");
    assert!(next(&mut ben).await.is_none(), "and ben's socket closes");

    // Cat sends a truncated protobuf: the same.
    let (mut cat, _) = connect(&server.base, &query("cat"))
        .await
        .expect("cat joins");
    cat.send(Message::Binary(vec![0x0a, 0x10, 0x01].into()))
        .await
        .expect("send");
    assert!(wait_for(&mut cat, |m| matches!(
        m,
        proto::signal_response::Message::Leave(_)
    ))
    .await
    .is_some());

    // Ann saw them come and go, and is still served.
    let gone = |m: &proto::signal_response::Message, who: &str| {
        matches!(m, proto::signal_response::Message::Update(u)
            if u.participants.iter().any(|p| p.identity == who
                && p.state == proto::participant_info::State::Disconnected as i32))
    };
    assert!(
        wait_for(&mut ann, |m| gone(m, "ben")).await.is_some(),
        "ann sees ben leave"
    );
    assert!(
        wait_for(&mut ann, |m| gone(m, "cat")).await.is_some(),
        "ann sees cat leave"
    );
    assert!(ping_answered(&mut ann).await, "ann is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_bridge_socket_is_told_to_speak_livekit() {
    let server = TestServer::start(30);
    let token = server.token("json", "old-client", true, true);
    let url = format!(
        "{}/rtc?access_token={token}",
        server.base.replace("http://", "ws://")
    );
    let refused = match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("a client token is not a bridge's"),
        Err(e) => Refused::from(e),
    };
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("/rtc/v1"), "{}", refused.body);
    // A bad token is still a 401 first.
    let url = format!(
        "{}/rtc?access_token=nope",
        server.base.replace("http://", "ws://")
    );
    let refused = match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("a bad token is refused"),
        Err(e) => Refused::from(e),
    };
    assert_eq!(refused.status, 401, "{}", refused.body);
}
