//! Room-protocol members for tests: join over `/rtc`, publish audio and
//! video from a str0m peer, subscribe to others' tracks, and run peers
//! until a condition holds (bounded).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::media::{Direction, MediaKind, Mid};

use super::ws::{idle, RoomClient};
use super::TestPeer;

pub const T: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn run(peers: &mut [&mut TestPeer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.run_for(ms(2));
        }
    }
}

/// Run peers until `cond` holds (bounded).
pub fn run_until(
    peers: &mut [&mut TestPeer],
    within: Duration,
    cond: impl Fn(&[&mut TestPeer]) -> bool,
) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond(peers) {
            return true;
        }
        run(peers, ms(20));
    }
    cond(peers)
}

pub fn tracks_of(info: &Value) -> Vec<(String, String)> {
    info["tracks"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    (
                        t["kind"].as_str().unwrap_or("").to_string(),
                        t["sid"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn sid_of(tracks: &[(String, String)], kind: &str) -> String {
    tracks
        .iter()
        .find(|t| t.0 == kind)
        .map(|t| t.1.clone())
        .expect("track of kind")
}

/// Join, publish audio + video with data channels; returns client, peer
/// and the sids of its audio and video tracks.
pub fn join_and_publish(base: &str, token: &str) -> (RoomClient, TestPeer, String, String) {
    let mut client = RoomClient::connect(base, token, None).expect("join");
    let joined = client.wait_type(0, "joined", T, &mut idle).expect("joined");
    let me = joined["participant"]["sid"].clone();
    let (mut peer, offer) = TestPeer::member(
        &[
            (MediaKind::Audio, Direction::SendOnly),
            (MediaKind::Video, Direction::SendOnly),
        ],
        &["reliable", "lossy"],
    );
    let (audio_mid, video_mid) = (peer.mids[0].0, peer.mids[1].0);
    let n = client.inbox.len();
    client.send(json!({
        "type": "offer", "sdp": offer,
        "publish": { audio_mid.to_string(): {"source": "microphone", "name": "mic"},
                     video_mid.to_string(): {"source": "camera", "name": "cam"} }
    }));
    let answer = client.wait_type(n, "answer", T, &mut idle).expect("answer");
    peer.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");
    let mut own = vec![];
    for _ in 0..2 {
        let m = client
            .wait_from(
                n,
                // Only its own: others' tracks may be announced meanwhile.
                |v| {
                    v["type"] == "trackPublished"
                        && v["participant"] == me
                        && !own_contains(&own, v)
                },
                T,
                &mut || peer.run_for(ms(5)),
            )
            .expect("own trackPublished");
        own.push(m);
    }
    let audio = own
        .iter()
        .find(|m| m["track"]["kind"] == "audio")
        .expect("audio")["track"]["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let video = own
        .iter()
        .find(|m| m["track"]["kind"] == "video")
        .expect("video")["track"]["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    (client, peer, audio, video)
}

pub fn own_contains(seen: &[Value], v: &Value) -> bool {
    seen.iter().any(|s| s["track"]["sid"] == v["track"]["sid"])
}

/// Subscribe `peer` (through `client`) to `tracks` (kind, sid): new
/// recvonly lines, one re-offer; returns the mids per track sid.
pub fn subscribe(
    client: &mut RoomClient,
    peer: &mut TestPeer,
    tracks: &[(String, String)],
) -> Vec<(String, Mid)> {
    let add: Vec<(MediaKind, Direction)> = tracks
        .iter()
        .map(|(k, _)| {
            (
                if k == "audio" {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                },
                Direction::RecvOnly,
            )
        })
        .collect();
    let (offer, mids) = peer.offer_changes(&add, &[]);
    let map: serde_json::Map<String, Value> = mids
        .iter()
        .zip(tracks)
        .map(|(m, (_, sid))| (m.to_string(), json!(sid)))
        .collect();
    let n = client.inbox.len();
    client.send(json!({"type": "offer", "sdp": offer, "subscribe": map}));
    let answer = client
        .wait_type(n, "answer", T, &mut || peer.run_for(ms(5)))
        .expect("answer");
    peer.accept_answer(answer["sdp"].as_str().expect("sdp"))
        .expect("accept");
    tracks.iter().map(|(_, s)| s.clone()).zip(mids).collect()
}

/// The tracks (kind, sid) of `identity` that a member was told of so far:
/// in `joined`, `participantJoined`/`participantUpdated` and
/// `trackPublished`, less those `trackUnpublished` since.
pub fn tracks_known(inbox: &[Value], identity: &str) -> Vec<(String, String)> {
    let mut sid = None;
    let mut tracks: Vec<(String, String)> = vec![];
    let add = |t: Vec<(String, String)>, tracks: &mut Vec<(String, String)>| {
        for t in t {
            if !tracks.contains(&t) {
                tracks.push(t);
            }
        }
    };
    for v in inbox {
        let infos: Vec<&Value> = match v["type"].as_str() {
            Some("joined") => v["participants"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            Some("participantJoined" | "participantUpdated") => vec![&v["participant"]],
            _ => vec![],
        };
        for info in infos.into_iter().filter(|i| i["identity"] == identity) {
            sid = info["sid"].as_str().map(str::to_string);
            add(tracks_of(info), &mut tracks);
        }
        let about = |v: &Value| sid.is_some() && v["participant"].as_str() == sid.as_deref();
        match v["type"].as_str() {
            Some("trackPublished") if about(v) => {
                let t = &v["track"];
                add(
                    vec![(
                        t["kind"].as_str().unwrap_or("").to_string(),
                        t["sid"].as_str().unwrap_or("").to_string(),
                    )],
                    &mut tracks,
                );
            }
            Some("trackUnpublished") => {
                tracks.retain(|t| Some(&t.1) != v["track"].as_str().map(str::to_string).as_ref())
            }
            _ => {}
        }
    }
    tracks
}

/// Wait until `client` knows of both tracks (audio, video) of `identity`.
pub fn wait_tracks_of(
    client: &mut RoomClient,
    identity: &str,
    peers: &mut [&mut TestPeer],
) -> Option<Vec<(String, String)>> {
    let end = Instant::now() + T;
    loop {
        let tracks = tracks_known(&client.inbox, identity);
        if tracks.iter().any(|t| t.0 == "audio") && tracks.iter().any(|t| t.0 == "video") {
            return Some(tracks);
        }
        if Instant::now() >= end || client.closed {
            return None;
        }
        client.wait_from(client.inbox.len(), |_| false, ms(20), &mut || {
            for p in peers.iter_mut() {
                p.run_for(ms(2));
            }
        });
    }
}
