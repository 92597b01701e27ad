//! One virtual participant in a room over LiveKit's client signalling with
//! one peer connection (`livekit_signal`): join (auto-subscribe off),
//! announce its tracks (`add_track`, answered by `track_published`) and
//! offer them; subscribe to the others' tracks that `subscribe` picks
//! (`subscription`, and `track_setting` with the tile width), whether they
//! were there at the join (their receive sections ride on the first offer)
//! or arrive in participant updates; add receive sections when the server
//! asks (`media_sections_requirement`), one offer in flight at a time;
//! take trickled server candidates; ping; `leave` at the end. The same
//! participant runs against this server and a LiveKit server.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use signaling::livekit::proto;
use signaling::livekit::proto::signal_response::Message as Response;
use str0m::media::MediaKind;
use tokio_util::sync::CancellationToken;

use crate::livekit_signal::{self as signal, Ws};
use crate::peer::{offer_with, send_track_id, Clock, Ending, Live, Media, Peer, Turn, RECV_BUFFER};
use crate::session::SessionResult;
use crate::signal::Target;
use crate::source::MediaSource;
use crate::subscribe::{Decision, SubscribePolicy, Subscriber};

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

/// Longest wait for the join, the first sections asked for, and each answer.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The participant's signalling state between messages.
struct Signalling {
    me: String,
    sub: Subscriber,
    /// Tracks already decided on (each track once).
    seen: HashSet<String>,
    /// Receive sections the server asked for and no offer has carried yet.
    audio_lines: u32,
    video_lines: u32,
    /// The server asked for an offer.
    offer_wanted: bool,
    next_offer_id: u32,
    ping_every: Duration,
}

impl Signalling {
    /// Decide on the tracks of `participants`: the requests that subscribe
    /// to the wanted ones.
    fn tracks_of(
        &mut self,
        participants: &[proto::ParticipantInfo],
    ) -> Vec<proto::signal_request::Message> {
        let mut wanted = vec![];
        let mut tiles = vec![];
        for p in participants {
            let own = p.sid == self.me;
            for t in &p.tracks {
                if !self.seen.insert(t.sid.clone()) {
                    continue;
                }
                let kind = if t.r#type == proto::TrackType::Video as i32 {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                if let Decision::Subscribe { max_width } = self.sub.decide(own, kind) {
                    wanted.push(t.sid.clone());
                    if let Some(w) = max_width {
                        tiles.push(signal::tile(t.sid.clone(), w));
                    }
                }
            }
        }
        let mut out = vec![];
        if !wanted.is_empty() {
            // The width first: the server keeps it for the track it places.
            out.extend(tiles);
            out.push(signal::subscribe(wanted));
        }
        out
    }

    fn required(&mut self, r: &proto::MediaSectionsRequirement) {
        self.audio_lines += r.num_audios;
        self.video_lines += r.num_videos;
        self.offer_wanted = true;
    }

    /// The receive lines the next offer adds.
    fn take_lines(&mut self) -> Vec<MediaKind> {
        let mut kinds = vec![MediaKind::Audio; std::mem::take(&mut self.audio_lines) as usize];
        kinds.extend(vec![
            MediaKind::Video;
            std::mem::take(&mut self.video_lines) as usize
        ]);
        self.offer_wanted = false;
        kinds
    }
}

pub async fn run_room_session(
    target: Arc<Target>,
    plan: RoomPlan,
    clock: Clock,
    live: Arc<Live>,
    cancel: CancellationToken,
) -> SessionResult {
    let joined = tokio::select! {
        _ = cancel.cancelled() => Err("cancelled before joining".to_string()),
        r = join(&target, &plan) => r,
    };
    let (mut ws, signalling, participants) = match joined {
        Ok(j) => j,
        Err(e) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return SessionResult::failed(e);
        }
    };
    let ending = plan.ending;
    let result = participate(
        &mut ws,
        plan,
        signalling,
        participants,
        clock,
        &live,
        &cancel,
    )
    .await;
    if ending == Ending::Graceful {
        let _ = signal::send(&mut ws, signal::leave()).await;
        let _ = ws.close(None).await;
    }
    result.unwrap_or_else(|e| {
        live.failed.fetch_add(1, Ordering::Relaxed);
        SessionResult::failed(e)
    })
}

/// Connect and wait for the join response.
async fn join(
    target: &Target,
    plan: &RoomPlan,
) -> Result<(Ws, Signalling, Vec<proto::ParticipantInfo>), String> {
    let mut ws =
        signal::connect(&signal::join_url(&target.base, &plan.token), SIGNAL_TIMEOUT).await?;
    let first = tokio::time::timeout(SIGNAL_TIMEOUT, signal::next(&mut ws))
        .await
        .map_err(|_| "no join response".to_string())??;
    match first {
        Response::Join(j) => {
            let me = j.participant.map(|p| p.sid).unwrap_or_default();
            let signalling = Signalling {
                me,
                sub: Subscriber::new(plan.subscribe),
                seen: HashSet::new(),
                audio_lines: 0,
                video_lines: 0,
                offer_wanted: false,
                next_offer_id: 1,
                ping_every: Duration::from_secs(u64::from(j.ping_interval.clamp(1, 60) as u32)),
            };
            Ok((ws, signalling, j.other_participants))
        }
        Response::Leave(l) => Err(format!("join refused: {:?}", l.reason())),
        other => Err(format!("expected a join response, got {other:?}")),
    }
}

/// What the loop before the first answer and the peer's loop both do with
/// a server message; returns why the session ends, if it does.
async fn on_message(
    ws: &mut Ws,
    s: &mut Signalling,
    m: Response,
    peer: Option<&mut Peer>,
    candidates: &mut Vec<String>,
) -> Result<Option<String>, String> {
    match m {
        Response::Update(u) => {
            for r in s.tracks_of(&u.participants) {
                signal::send(ws, r).await?;
            }
        }
        Response::MediaSectionsRequirement(r) => s.required(&r),
        Response::Trickle(t) => {
            if let Some(line) = signal::trickled_candidate(&t) {
                match peer {
                    Some(p) => p.add_remote_candidate(&line)?,
                    None => candidates.push(line),
                }
            }
        }
        Response::Leave(l) => return Ok(Some(format!("removed: {:?}", l.reason()))),
        _ => {}
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
async fn participate(
    ws: &mut Ws,
    plan: RoomPlan,
    mut s: Signalling,
    participants: Vec<proto::ParticipantInfo>,
    clock: Clock,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<SessionResult, String> {
    // What it wants of the tracks already there: the server answers with
    // the receive sections that needs (`media_sections_requirement`).
    let asked = s.tracks_of(&participants);
    let subscribed = !asked.is_empty();
    for r in asked {
        signal::send(ws, r).await?;
    }
    let media = match plan.publish {
        Some(src) => Media::Publish(src),
        None => Media::Receive {
            audio: false,
            video: false,
        },
    };
    // Announce what it publishes. The offer does not wait for
    // `track_published`: the server reads the socket in order, so the
    // tracks are known when the offer that carries them comes.
    let publishing = matches!(media, Media::Publish(_));
    if let Media::Publish(src) = &media {
        signal::send(ws, signal::add_track(send_track_id(MediaKind::Audio), None)).await?;
        if src.has_video() {
            let layers = src.layer_specs();
            signal::send(
                ws,
                signal::add_track(send_track_id(MediaKind::Video), Some(&layers)),
            )
            .await?;
        }
    }
    let mut candidates = vec![];
    // The first offer carries the receive sections asked for the tracks
    // already there; a listener waits until there is something to receive.
    let ready = async {
        loop {
            if s.offer_wanted || (publishing && !subscribed) {
                return Ok::<_, String>(None);
            }
            let m = signal::next(ws).await?;
            if let Some(end) = on_message(ws, &mut s, m, None, &mut candidates).await? {
                return Ok(Some(end));
            }
        }
    };
    let limit = if publishing || subscribed {
        SIGNAL_TIMEOUT
    } else {
        Duration::from_secs(24 * 3600)
    };
    let ended = tokio::select! {
        _ = cancel.cancelled() => return Err(if publishing || subscribed {
            "ended before its first offer".to_string()
        } else {
            "nothing was published to receive".to_string()
        }),
        r = tokio::time::timeout(limit, ready) => r.map_err(|_| "no media_sections_requirement".to_string())??,
    };
    if let Some(end) = ended {
        return Err(end);
    }
    let receive = s.take_lines();
    let offered = offer_with(plan.bind, &media, &receive)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    let posted = Instant::now();
    let id = s.next_offer_id;
    s.next_offer_id += 1;
    live.offered(offered.offer.len());
    signal::send(ws, signal::offer(offered.offer.clone(), id)).await?;
    let answer = tokio::time::timeout(SIGNAL_TIMEOUT, async {
        loop {
            match signal::next(ws).await? {
                Response::Answer(a) => return Ok::<_, String>(a.sdp),
                m => {
                    if let Some(end) = on_message(ws, &mut s, m, None, &mut candidates).await? {
                        return Err(end);
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| "no answer to the offer".to_string())??;
    let signaling_ms = posted.elapsed().as_secs_f64() * 1000.0;
    live.answered(answer.len());
    let mut peer = offered.accept(&answer, media)?;
    for line in candidates.drain(..) {
        peer.add_remote_candidate(&line)?;
    }
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut in_flight = false;
    let mut ended = None;
    let mut next_ping = Instant::now() + s.ping_every;
    loop {
        if !in_flight && s.offer_wanted {
            let (sdp, _) = peer.reoffer(&s.take_lines())?;
            let id = s.next_offer_id;
            s.next_offer_id += 1;
            live.offered(sdp.len());
            signal::send(ws, signal::offer(sdp, id)).await?;
            in_flight = true;
        }
        if Instant::now() >= next_ping {
            signal::send(ws, signal::ping(now_ms())).await?;
            next_ping = Instant::now() + s.ping_every;
        }
        let extra = async {
            tokio::select! {
                _ = cancel.cancelled() => None,
                _ = tokio::time::sleep_until(next_ping.into()) => Some(Ok(None)),
                m = signal::next(ws) => Some(m.map(Some)),
            }
        };
        match peer.turn(&mut buf, clock, live, extra).await {
            Turn::Io | Turn::Extra(Some(Ok(None))) => {}
            Turn::Dead | Turn::Extra(None) => break,
            Turn::Extra(Some(Err(e))) => {
                ended = Some(e);
                break;
            }
            Turn::Extra(Some(Ok(Some(m)))) => {
                if let Response::Answer(a) = m {
                    live.answered(a.sdp.len());
                    peer.accept_answer(&a.sdp)?;
                    in_flight = false;
                } else if let Some(end) =
                    on_message(ws, &mut s, m, Some(&mut peer), &mut candidates).await?
                {
                    ended = Some(end);
                    break;
                }
            }
        }
    }
    if plan.ending == Ending::Graceful {
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
