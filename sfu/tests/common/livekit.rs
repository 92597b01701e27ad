//! LiveKit-signalling members for tests: a real WebSocket to `/rtc/v1`
//! (binary `SignalRequest`/`SignalResponse`), bounded waits that keep the
//! test's str0m peers running, and the steps a client takes — join,
//! announce and offer its tracks, subscribe (receive sections added when
//! the server asks), publish data packets on `_reliable`.

use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use signaling::livekit::proto;
use signaling::livekit::proto::signal_request::Message as Request;
use signaling::livekit::proto::signal_response::Message as Response;
use str0m::media::{Direction, MediaKind, Mid};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::member::{ms, T};
use super::TestPeer;

/// The data channel LiveKit clients publish reliable data packets on.
pub const RELIABLE: &str = "_reliable";

/// Why a connection failed: HTTP status and body of the refused upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl From<tokio_tungstenite::tungstenite::Error> for Refused {
    /// A refused upgrade's status and body; status 0 for any other failure.
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Refused {
        match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            e => Refused {
                status: 0,
                body: e.to_string(),
            },
        }
    }
}

pub struct LkClient {
    rt: tokio::runtime::Runtime,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every response received so far, in order (the join response first).
    pub inbox: Vec<Response>,
    /// The server closed the socket.
    pub closed: bool,
    next_offer_id: u32,
}

/// `/rtc/v1`'s `join_request`: auto-subscribe off (tests subscribe), or a
/// resume of participant `sid`.
fn join_request(resume: Option<&str>) -> String {
    let request = proto::JoinRequest {
        client_info: Some(proto::ClientInfo {
            sdk: proto::client_info::Sdk::Rust as i32,
            protocol: 16,
            ..Default::default()
        }),
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: false,
            ..Default::default()
        }),
        reconnect: resume.is_some(),
        participant_sid: resume.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let wrapped = proto::WrappedJoinRequest {
        compression: proto::wrapped_join_request::Compression::None as i32,
        join_request: request.encode_to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wrapped.encode_to_vec())
}

impl LkClient {
    /// Join (or, with `resume`, resume participant `sid`) and wait for the
    /// first response.
    pub fn connect(base: &str, token: &str, resume: Option<&str>) -> Result<LkClient, Refused> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!(
            "{}/rtc/v1?access_token={token}&join_request={}",
            base.replace("http://", "ws://"),
            join_request(resume)
        );
        let (ws, _) = rt
            .block_on(tokio_tungstenite::connect_async(url))
            .map_err(Refused::from)?;
        let mut client = LkClient {
            rt,
            ws,
            inbox: vec![],
            closed: false,
            next_offer_id: 1,
        };
        let first = client.wait(0, |_| true, T, &mut || {});
        assert!(first.is_some(), "a first response to the join");
        Ok(client)
    }

    /// The join response (the first response of a new join).
    pub fn join(&self) -> &proto::JoinResponse {
        match self.inbox.first() {
            Some(Response::Join(j)) => j,
            other => panic!("the first response is not a join: {other:?}"),
        }
    }

    pub fn me(&self) -> String {
        self.join()
            .participant
            .as_ref()
            .map(|p| p.sid.clone())
            .unwrap_or_default()
    }

    pub fn send(&mut self, request: Request) {
        let frame = proto::SignalRequest {
            message: Some(request),
        }
        .encode_to_vec();
        let _ = self
            .rt
            .block_on(self.ws.send(Message::Binary(frame.into())));
    }

    /// Send an offer; returns its id.
    pub fn offer(&mut self, sdp: String) -> u32 {
        let id = self.next_offer_id;
        self.next_offer_id += 1;
        self.send(Request::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id,
            ..Default::default()
        }));
        id
    }

    /// Drop the TCP connection without a close handshake (a network blip).
    pub fn drop_connection(self) {
        drop(self);
    }

    fn pump(&mut self, wait: Duration) {
        let next = self
            .rt
            .block_on(async { tokio::time::timeout(wait, self.ws.next()).await });
        match next {
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Some(m) = proto::SignalResponse::decode(b.as_ref())
                    .ok()
                    .and_then(|r| r.message)
                {
                    self.inbox.push(m);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => self.closed = true,
            _ => {}
        }
    }

    /// Wait (at most `timeout`) for a response matching `pred` that arrived
    /// after response number `from`; `drive` runs between reads (the peers).
    pub fn wait(
        &mut self,
        from: usize,
        pred: impl Fn(&Response) -> bool,
        timeout: Duration,
        drive: &mut dyn FnMut(),
    ) -> Option<Response> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.iter().skip(from).find(|m| pred(m)) {
                return Some(m.clone());
            }
            if Instant::now() >= end || self.closed {
                return None;
            }
            self.pump(Duration::from_millis(3));
            drive();
        }
    }

    /// The participant `identity` as the latest response about it tells
    /// (join, updates); `None` before it is known or after it left.
    pub fn participant(&self, identity: &str) -> Option<proto::ParticipantInfo> {
        let mut last = None;
        for m in &self.inbox {
            let infos: Vec<&proto::ParticipantInfo> = match m {
                Response::Join(j) => j.other_participants.iter().collect(),
                Response::Update(u) => u.participants.iter().collect(),
                _ => vec![],
            };
            for p in infos.into_iter().filter(|p| p.identity == identity) {
                last = (p.state != proto::participant_info::State::Disconnected as i32)
                    .then(|| p.clone());
            }
        }
        last
    }

    /// Wait until `identity` is known with an audio and a video track;
    /// returns (audio sid, video sid).
    pub fn wait_tracks_of(
        &mut self,
        identity: &str,
        drive: &mut dyn FnMut(),
    ) -> Option<(String, String)> {
        let end = Instant::now() + T;
        loop {
            if let Some(p) = self.participant(identity) {
                let sid = |t: proto::TrackType| {
                    p.tracks
                        .iter()
                        .find(|x| x.r#type == t as i32)
                        .map(|x| x.sid.clone())
                };
                if let (Some(a), Some(v)) =
                    (sid(proto::TrackType::Audio), sid(proto::TrackType::Video))
                {
                    return Some((a, v));
                }
            }
            if Instant::now() >= end || self.closed {
                return None;
            }
            self.wait(self.inbox.len(), |_| false, ms(20), drive);
        }
    }
}

/// A member peer whose sending lines carry LiveKit `cid`s as msid track ids
/// ("audio", "video"), with the `_reliable` data channel.
pub fn member_peer(media: &[(MediaKind, Direction)]) -> (TestPeer, String) {
    TestPeer::member(media, &[RELIABLE])
}

/// Announce a track with `cid` and wait for its `track_published`; its sid.
pub fn add_track(
    client: &mut LkClient,
    cid: &str,
    kind: MediaKind,
    drive: &mut dyn FnMut(),
) -> String {
    let (r#type, source) = match kind {
        MediaKind::Audio => (proto::TrackType::Audio, proto::TrackSource::Microphone),
        MediaKind::Video => (proto::TrackType::Video, proto::TrackSource::Camera),
    };
    let n = client.inbox.len();
    client.send(Request::AddTrack(proto::AddTrackRequest {
        cid: cid.into(),
        name: cid.into(),
        r#type: r#type as i32,
        source: source as i32,
        ..Default::default()
    }));
    match client.wait(
        n,
        |m| matches!(m, Response::TrackPublished(t) if t.cid == cid),
        T,
        drive,
    ) {
        Some(Response::TrackPublished(t)) => t.track.map(|t| t.sid).unwrap_or_default(),
        other => panic!("no track_published for {cid}: {other:?}"),
    }
}

/// Wait for the answer to offer `id`; apply it to `peer`. Returns the
/// answer's mid -> track map.
pub fn answered(
    client: &mut LkClient,
    peer: &mut TestPeer,
    id: u32,
    from: usize,
) -> std::collections::HashMap<String, String> {
    let answer = client.wait(
        from,
        |m| matches!(m, Response::Answer(a) if a.id == id),
        T,
        &mut || peer.run_for(ms(2)),
    );
    let Some(Response::Answer(a)) = answer else {
        panic!("no answer to offer {id}");
    };
    peer.accept_answer(&a.sdp).expect("accept answer");
    a.mid_to_track_id
}

/// Join and publish audio + video with the `_reliable` channel; returns
/// client, peer and the sids of its audio and video tracks.
pub fn join_and_publish(base: &str, token: &str) -> (LkClient, TestPeer, String, String) {
    let mut client = LkClient::connect(base, token, None).expect("join");
    let audio = add_track(&mut client, "audio", MediaKind::Audio, &mut || {});
    let video = add_track(&mut client, "video", MediaKind::Video, &mut || {});
    let (mut peer, offer) = member_peer(&[
        (MediaKind::Audio, Direction::SendOnly),
        (MediaKind::Video, Direction::SendOnly),
    ]);
    let n = client.inbox.len();
    let id = client.offer(offer);
    answered(&mut client, &mut peer, id, n);
    (client, peer, audio, video)
}

/// `subscription` to `tracks` (sids), then the receive sections the server
/// asks for (`media_sections_requirement`).
fn ask_sections(
    client: &mut LkClient,
    tracks: &[String],
    drive: &mut dyn FnMut(),
) -> Vec<(MediaKind, Direction)> {
    let n = client.inbox.len();
    client.send(Request::Subscription(proto::UpdateSubscription {
        track_sids: tracks.to_vec(),
        subscribe: true,
        ..Default::default()
    }));
    let want = client.wait(
        n,
        |m| matches!(m, Response::MediaSectionsRequirement(_)),
        T,
        drive,
    );
    let Some(Response::MediaSectionsRequirement(r)) = want else {
        panic!("no media_sections_requirement after subscribing");
    };
    let mut add = vec![(MediaKind::Audio, Direction::RecvOnly); r.num_audios as usize];
    add.extend(vec![
        (MediaKind::Video, Direction::RecvOnly);
        r.num_videos as usize
    ]);
    add
}

/// The mid of the answer's `carried` (mid -> track) for each of `tracks`.
fn mids_of(
    carried: &std::collections::HashMap<String, String>,
    tracks: &[String],
) -> Vec<(String, Mid)> {
    tracks
        .iter()
        .map(|t| {
            let mid = carried
                .iter()
                .find(|(_, track)| *track == t)
                .map(|(mid, _)| Mid::from(mid.as_str()))
                .unwrap_or_else(|| panic!("track {t} carried: {carried:?}"));
            (t.clone(), mid)
        })
        .collect()
}

/// Subscribe `peer` (already negotiated) to `tracks`: receive sections as
/// the server asks, one offer; returns the mid that carries each track.
pub fn subscribe(
    client: &mut LkClient,
    peer: &mut TestPeer,
    tracks: &[String],
) -> Vec<(String, Mid)> {
    let add = ask_sections(client, tracks, &mut || peer.run_for(ms(2)));
    let (offer, _) = peer.offer_changes_or_restart(&add);
    let n = client.inbox.len();
    let id = client.offer(offer);
    let carried = answered(client, peer, id, n);
    mids_of(&carried, tracks)
}

/// A member that only receives: its peer's first offer is the receive
/// sections the server asks for `tracks`, with the `_reliable` channel.
pub fn receive_only(client: &mut LkClient, tracks: &[String]) -> (TestPeer, Vec<(String, Mid)>) {
    let add = ask_sections(client, tracks, &mut || {});
    let (mut peer, offer) = member_peer(&add);
    let n = client.inbox.len();
    let id = client.offer(offer);
    let carried = answered(client, &mut peer, id, n);
    (peer, mids_of(&carried, tracks))
}

/// A user data packet `payload` on `topic`, as a LiveKit client publishes it.
pub fn user_packet(payload: &[u8], topic: &str, to: &[&str]) -> Vec<u8> {
    proto::DataPacket {
        destination_identities: to.iter().map(|s| s.to_string()).collect(),
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload: payload.to_vec(),
            topic: Some(topic.into()),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The user packets `peer` received on `_reliable`: (sender identity, topic, payload).
pub fn user_packets(peer: &TestPeer) -> Vec<(String, String, Vec<u8>)> {
    peer.channel_bytes
        .iter()
        .filter(|(label, _)| label == RELIABLE)
        .filter_map(|(_, bytes)| proto::DataPacket::decode(bytes.as_slice()).ok())
        .filter_map(|p| match p.value {
            Some(proto::data_packet::Value::User(u)) => Some((
                p.participant_identity.clone(),
                u.topic.clone().unwrap_or_default(),
                u.payload,
            )),
            _ => None,
        })
        .collect()
}

/// The qualities a `subscribed_quality_update` about `track` enables.
pub fn enabled_qualities(m: &Response, track: &str) -> Option<Vec<proto::VideoQuality>> {
    match m {
        #[allow(deprecated)] // livekit-client still reads it; the codec list is newer
        Response::SubscribedQualityUpdate(u) if u.track_sid == track => {
            let mut on: Vec<proto::VideoQuality> = u
                .subscribed_qualities
                .iter()
                .filter(|q| q.enabled)
                .map(|q| q.quality())
                .collect();
            on.sort_by_key(|q| *q as i32);
            Some(on)
        }
        _ => None,
    }
}

/// An update that says `identity` left.
pub fn left(m: &Response, identity: &str) -> bool {
    matches!(m, Response::Update(u) if u.participants.iter().any(|p| p.identity == identity
        && p.state == proto::participant_info::State::Disconnected as i32))
}

/// An update that shows track `sid` muted.
pub fn muted(m: &Response, sid: &str) -> bool {
    matches!(m, Response::Update(u) if u.participants.iter()
        .flat_map(|p| &p.tracks).any(|t| t.sid == sid && t.muted))
}

/// A leave request for the server, as a client that leaves sends it.
pub fn leave() -> Request {
    Request::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    })
}

/// A `leave` from the server with `reason`.
pub fn told_to_leave(m: &Response, reason: proto::DisconnectReason) -> bool {
    matches!(m, Response::Leave(l) if l.reason == reason as i32)
}
