//! LiveKit's client signalling as a virtual participant speaks it: the
//! single-peer-connection join URL (`/rtc/v1?access_token=…&join_request=…`,
//! the SDKs' default, served by this server and by a LiveKit server alike),
//! binary `SignalRequest`/`SignalResponse` frames, and the requests a
//! participant sends. No room logic: `room` decides what to send.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use signaling::livekit::proto;
use signaling::livekit::proto::signal_request::Message as Request;
use signaling::livekit::proto::signal_response::Message as Response;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Protocol version announced in the join (livekit-client 2.x sends 16 on
/// `/rtc/v1`).
const PROTOCOL: i32 = 16;
/// Each turn of the peer's loop polls the socket again: read in small
/// chunks (tungstenite zero-fills the whole read buffer per read).
const READ_CHUNK_BYTES: usize = 4096;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The join URL: base `http(s)://host`, a token, auto-subscribe off (the
/// participant subscribes to what its policy picks).
pub fn join_url(base: &str, token: &str) -> String {
    let join = proto::JoinRequest {
        client_info: Some(proto::ClientInfo {
            sdk: proto::client_info::Sdk::Rust as i32,
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").into(),
            os: "sfu-loadtest".into(),
            ..Default::default()
        }),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: false,
            ..Default::default()
        }),
        ..Default::default()
    };
    let wrapped = proto::WrappedJoinRequest {
        compression: proto::wrapped_join_request::Compression::None as i32,
        join_request: join.encode_to_vec(),
    };
    // Padded base64url, its `=` escaped, as livekit-client sends it (a
    // LiveKit server refuses it unpadded).
    let encoded = base64::engine::general_purpose::URL_SAFE
        .encode(wrapped.encode_to_vec())
        .replace('=', "%3D");
    format!(
        "{}/rtc/v1?access_token={token}&join_request={encoded}",
        base.replacen("http", "ws", 1)
    )
}

/// Open the signal socket within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Ws, String> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
    let (ws, _) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| "WebSocket connect timed out".to_string())?
        .map_err(|e| format!("WebSocket: {e}"))?;
    Ok(ws)
}

pub async fn send(ws: &mut Ws, request: Request) -> Result<(), String> {
    let frame = proto::SignalRequest {
        message: Some(request),
    }
    .encode_to_vec();
    ws.send(Message::binary(frame))
        .await
        .map_err(|e| format!("socket: {e}"))
}

/// The next server message, or an error when the socket ends.
pub async fn next(ws: &mut Ws) -> Result<Response, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                let r = proto::SignalResponse::decode(b.as_ref())
                    .map_err(|e| format!("bad signal frame: {e}"))?;
                if let Some(m) = r.message {
                    return Ok(m);
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket: {e}")),
        }
    }
}

/// Announce a track before offering it: `cid` is its section's msid track id.
pub fn add_track(cid: &str, video: Option<&[crate::source::LayerSpec]>) -> Request {
    let (kind, source) = match video {
        Some(_) => (proto::TrackType::Video, proto::TrackSource::Camera),
        None => (proto::TrackType::Audio, proto::TrackSource::Microphone),
    };
    let layers: Vec<proto::VideoLayer> = video
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, l)| proto::VideoLayer {
            quality: i as i32,
            spatial_layer: i as i32,
            width: l.width,
            height: l.height,
            bitrate: l.kbps * 1000,
            rid: l.rid.into(),
            ..Default::default()
        })
        .collect();
    let top = layers.last();
    Request::AddTrack(proto::AddTrackRequest {
        cid: cid.into(),
        name: cid.into(),
        r#type: kind as i32,
        source: source as i32,
        width: top.map_or(0, |l| l.width),
        height: top.map_or(0, |l| l.height),
        layers,
        ..Default::default()
    })
}

pub fn offer(sdp: String, id: u32) -> Request {
    Request::Offer(proto::SessionDescription {
        r#type: "offer".into(),
        sdp,
        id,
        ..Default::default()
    })
}

/// Subscribe to `tracks`.
pub fn subscribe(tracks: Vec<String>) -> Request {
    Request::Subscription(proto::UpdateSubscription {
        track_sids: tracks,
        subscribe: true,
        ..Default::default()
    })
}

/// Ask for `track` at most `width` wide (a 16:9 tile).
pub fn tile(track: String, width: u32) -> Request {
    Request::TrackSetting(proto::UpdateTrackSettings {
        track_sids: vec![track],
        width,
        height: width * 9 / 16,
        ..Default::default()
    })
}

pub fn ping(now_ms: i64) -> Request {
    Request::PingReq(proto::Ping {
        timestamp: now_ms,
        rtt: 0,
    })
}

pub fn leave() -> Request {
    Request::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        action: proto::leave_request::Action::Disconnect as i32,
        ..Default::default()
    })
}

/// The candidate line of a trickled `RTCIceCandidateInit` (JSON).
pub fn trickled_candidate(t: &proto::TrickleRequest) -> Option<String> {
    let init: serde_json::Value = serde_json::from_str(&t.candidate_init).ok()?;
    let line = init.get("candidate")?.as_str()?;
    (!line.is_empty()).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::livekit::join;

    #[test]
    fn the_join_url_is_what_the_server_parses() {
        let url = join_url("http://127.0.0.1:8080", "tok");
        assert!(url.starts_with("ws://127.0.0.1:8080/rtc/v1?access_token=tok&join_request="));
        let raw = url.split("join_request=").nth(1).expect("parameter");
        let request = join::decode_join_request(&raw.replace("%3D", "=")).expect("decodes");
        assert_eq!(
            request.connection_settings.map(|c| c.auto_subscribe),
            Some(false)
        );
        assert_eq!(request.client_info.map(|c| c.protocol), Some(PROTOCOL));
    }

    #[test]
    fn a_trickled_candidate_is_read_from_its_json() {
        let t = proto::TrickleRequest {
            candidate_init: r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdpMid":"0"}"#.into(),
            ..Default::default()
        };
        assert!(trickled_candidate(&t).is_some_and(|c| c.contains("typ host")));
        let end = proto::TrickleRequest {
            candidate_init: r#"{"candidate":""}"#.into(),
            ..Default::default()
        };
        assert_eq!(trickled_candidate(&end), None);
    }
}
