//! One virtual participant in a room over the room protocol (`/rtc`
//! WebSocket, `signaling/PROTOCOL.md`): join, offer its own tracks and a
//! receiving line for every track already there that it wants
//! (`subscribe` decides), then re-offer as others publish (one offer in
//! flight at a time, as the protocol asks), until the scenario ends; then
//! `leave`. A video wanted at a limited width is asked for with a
//! `subscription` message (`maxWidth`) before the offer that receives it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signaling::room_protocol::{
    ClientMessage, ErrorCode, MediaKindName, PublishInfo, ServerMessage, TrackInfo, TrackSource,
};
use signaling::rtc_socket::READ_CHUNK_BYTES;
use str0m::media::MediaKind;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::peer::{offer_with, Clock, Ending, Live, Media, Turn, RECV_BUFFER};
use crate::session::SessionResult;
use crate::signal::Target;
use crate::source::MediaSource;
use crate::subscribe::{Decision, SubscribePolicy, Subscriber};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a participant does in the room.
pub struct RoomPlan {
    pub token: String,
    /// What it publishes (None: a listener).
    pub publish: Option<MediaSource>,
    /// Which of others' tracks it receives.
    pub subscribe: SubscribePolicy,
    pub bind: IpAddr,
    pub ending: Ending,
}

/// Longest wait for `joined` and for each `answer`.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A track to receive, and the width asked for it.
type Wanted = (TrackInfo, Option<u32>);

fn kind_of(t: &TrackInfo) -> MediaKind {
    match t.kind {
        MediaKindName::Audio => MediaKind::Audio,
        MediaKindName::Video => MediaKind::Video,
    }
}

async fn send(ws: &mut Ws, m: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(m).map_err(|e| e.to_string())?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("socket: {e}"))
}

/// The next server message, or an error when the socket ends.
async fn next(ws: &mut Ws) -> Result<ServerMessage, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).map_err(|e| format!("bad server message: {e}"))
            }
            Some(Ok(Message::Close(_))) | None => return Err("socket closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket: {e}")),
        }
    }
}

/// Decide on a track `participant` published: the track to receive, if
/// `me` wants it.
fn wanted(sub: &mut Subscriber, me: &str, participant: &str, t: TrackInfo) -> Option<Wanted> {
    match sub.decide(participant == me, kind_of(&t)) {
        Decision::Skip => None,
        Decision::Subscribe { max_width } => Some((t, max_width)),
    }
}

/// Ask for the widths of `tracks` that have one, before the offer that
/// receives them (the server keeps a width asked for a known track).
async fn ask_widths(ws: &mut Ws, tracks: &[Wanted]) -> Result<(), String> {
    for (t, width) in tracks {
        if let Some(w) = width {
            let m = ClientMessage::Subscription {
                track: t.sid.clone(),
                subscribed: None,
                max_width: Some(Some(*w)),
            };
            send(ws, &m).await?;
        }
    }
    Ok(())
}

pub async fn run_room_session(
    target: Arc<Target>,
    plan: RoomPlan,
    clock: Clock,
    live: Arc<Live>,
    cancel: CancellationToken,
) -> SessionResult {
    let mut sub = Subscriber::new(plan.subscribe);
    let result = tokio::select! {
        _ = cancel.cancelled() => Err("cancelled before joining".to_string()),
        r = join(&target, &plan, &mut sub) => r,
    };
    let (mut ws, me, existing) = match result {
        Ok(j) => j,
        Err(e) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return SessionResult::failed(e);
        }
    };
    let ending = plan.ending;
    match participate(&mut ws, plan, sub, &me, existing, clock, &live, &cancel).await {
        Ok(r) => {
            if ending == Ending::Graceful {
                let _ = send(&mut ws, &ClientMessage::Leave {}).await;
                let _ = ws.close(None).await;
            }
            r
        }
        Err(e) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            SessionResult::failed(e)
        }
    }
}

/// Connect and wait for `joined`: the socket, my sid, the tracks already
/// there that I want.
async fn join(
    target: &Target,
    plan: &RoomPlan,
    sub: &mut Subscriber,
) -> Result<(Ws, String, Vec<Wanted>), String> {
    let url = format!(
        "{}/rtc?access_token={}",
        target.base.replacen("http", "ws", 1),
        plan.token
    );
    // Each turn of the peer's loop polls the socket again: read in small
    // chunks (tungstenite zero-fills the whole read buffer per read).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
    let (mut ws, _) = tokio::time::timeout(SIGNAL_TIMEOUT, connect)
        .await
        .map_err(|_| "WebSocket connect timed out".to_string())?
        .map_err(|e| format!("WebSocket: {e}"))?;
    let joined = tokio::time::timeout(SIGNAL_TIMEOUT, next(&mut ws))
        .await
        .map_err(|_| "no joined message".to_string())??;
    match joined {
        ServerMessage::Joined {
            participant,
            participants,
            ..
        } => {
            let mut tracks = vec![];
            for p in participants {
                for t in p.tracks {
                    tracks.extend(wanted(sub, &participant.sid, &p.sid, t));
                }
            }
            Ok((ws, participant.sid, tracks))
        }
        ServerMessage::Error { code, message } => Err(format!("join refused: {code:?}: {message}")),
        other => Err(format!("expected joined, got {other:?}")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn participate(
    ws: &mut Ws,
    plan: RoomPlan,
    mut sub: Subscriber,
    me: &str,
    existing: Vec<Wanted>,
    clock: Clock,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<SessionResult, String> {
    let plan_ending = plan.ending;
    let mut existing = existing;
    let media = match plan.publish {
        Some(src) => Media::Publish(src),
        None => Media::Receive {
            audio: false,
            video: false,
        },
    };
    let publishing = matches!(media, Media::Publish(_));
    // A listener in a room with nothing to receive yet waits for a track.
    while !publishing && existing.is_empty() {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Err("nothing was published".into()),
            m = next(ws) => m?,
        };
        if let ServerMessage::TrackPublished { participant, track } = m {
            existing.extend(wanted(&mut sub, me, &participant, track));
        }
    }
    let receive_kinds: Vec<MediaKind> = existing.iter().map(|(t, _)| kind_of(t)).collect();
    let offered = offer_with(plan.bind, &media, &receive_kinds)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    let lines = offered.mids().to_vec();
    let (send_lines, recv_lines) = lines.split_at(lines.len() - receive_kinds.len());
    let publish = send_lines
        .iter()
        .map(|(mid, kind)| {
            let source = if *kind == MediaKind::Audio {
                TrackSource::Microphone
            } else {
                TrackSource::Camera
            };
            (
                mid.to_string(),
                PublishInfo {
                    source,
                    name: format!("{source:?}").to_lowercase(),
                    ..PublishInfo::default()
                },
            )
        })
        .collect();
    let subscribe = recv_lines
        .iter()
        .zip(&existing)
        .map(|((mid, _), (t, _))| (mid.to_string(), t.sid.clone()))
        .collect();
    let posted = Instant::now();
    ask_widths(ws, &existing).await?;
    send(
        ws,
        &ClientMessage::Offer {
            sdp: offered.offer.clone(),
            publish,
            subscribe,
        },
    )
    .await?;
    // Tracks announced while the first offer is in flight wait for the next.
    let mut queued: Vec<Wanted> = vec![];
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, async {
        loop {
            match next(ws).await? {
                ServerMessage::Answer { sdp } => return Ok::<_, String>(sdp),
                ServerMessage::TrackPublished { participant, track } => {
                    queued.extend(wanted(&mut sub, me, &participant, track))
                }
                // A width asked for a track that has just gone.
                ServerMessage::Error {
                    code: ErrorCode::NotFound,
                    ..
                } => {}
                ServerMessage::Error { code, message } => {
                    return Err(format!("{code:?}: {message}"))
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| "no answer to the offer".to_string())??;
    let signaling_ms = posted.elapsed().as_secs_f64() * 1000.0;
    let mut peer = offered.accept(&answer, media)?;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut in_flight = false;
    let mut ended = None;
    loop {
        if !in_flight && !queued.is_empty() {
            let tracks: Vec<Wanted> = std::mem::take(&mut queued);
            let kinds: Vec<MediaKind> = tracks.iter().map(|(t, _)| kind_of(t)).collect();
            let (sdp, mids) = peer.reoffer(&kinds)?;
            let subscribe = mids
                .iter()
                .zip(&tracks)
                .map(|(mid, (t, _))| (mid.to_string(), t.sid.clone()))
                .collect();
            ask_widths(ws, &tracks).await?;
            send(
                ws,
                &ClientMessage::Offer {
                    sdp,
                    publish: BTreeMap::new(),
                    subscribe,
                },
            )
            .await?;
            in_flight = true;
        }
        let extra = async {
            tokio::select! {
                _ = cancel.cancelled() => None,
                m = next(ws) => Some(m),
            }
        };
        match peer.turn(&mut buf, clock, live, extra).await {
            Turn::Io => {}
            Turn::Dead => break,
            Turn::Extra(None) => break,
            Turn::Extra(Some(Err(e))) => {
                ended = Some(e);
                break;
            }
            Turn::Extra(Some(Ok(m))) => match m {
                ServerMessage::TrackPublished { participant, track } => {
                    queued.extend(wanted(&mut sub, me, &participant, track))
                }
                ServerMessage::Answer { sdp } => {
                    peer.accept_answer(&sdp)?;
                    in_flight = false;
                }
                ServerMessage::Removed { reason } | ServerMessage::RoomClosed { reason } => {
                    ended = Some(format!("removed: {reason}"));
                    break;
                }
                _ => {}
            },
        }
    }
    if plan_ending == Ending::Graceful {
        peer.close(clock, live).await;
    }
    let connected = peer.connected;
    Ok(SessionResult {
        connected,
        error: ended.or_else(|| (!connected).then(|| "ICE/DTLS never connected".to_string())),
        stats: std::mem::take(&mut peer.stats),
        signaling_ms: Some(signaling_ms),
        served_by: None,
    })
}
