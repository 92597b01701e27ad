//! Room scenarios over LiveKit's room signalling (`room`): `conference` (N participants,
//! each publishing audio and video and receiving everyone else's audio and
//! the video of all others or of `--visible` of them) and
//! `audio-room` (N speakers publishing audio and hearing each other, M
//! listeners hearing them all).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broadcast::{Camera, Svc};
use crate::peer::Ending;
use crate::report::Report;
use crate::room::{run_room_session, RoomPlan};
use crate::run::{Common, Run};
use crate::session::SessionResult;
use crate::signal::Target;
use crate::source::{MediaSource, SvcCodec};
use crate::stamp::VideoCodec;
use crate::subscribe::SubscribePolicy;
use crate::vp9::SvcMode;

#[derive(Debug, Clone, clap::Args)]
pub struct ConferenceArgs {
    /// Participants, all publishing and all subscribed to each other.
    #[arg(long, default_value_t = 5)]
    pub participants: u64,
    /// Each participant subscribes to the video of this many others only
    /// (the first announced), still to every audio track; default: all.
    #[arg(long)]
    pub visible: Option<usize>,
    /// Each participant asks for every video it subscribes to at most this
    /// wide (LiveKit's `track_setting` width), as a grid's
    /// tile would.
    #[arg(long)]
    pub tile_width: Option<u32>,
    /// Simulcast layers each camera sends (1-3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub layers: u8,
    /// Each camera sends scalable VP9 instead of simulcast, in
    /// scalability mode MODE = LxTy (as `broadcast --svc`; not AV1: the
    /// server negotiates its dependency descriptor with WHIP and WHEP
    /// sessions only).
    #[arg(long, value_name = "MODE")]
    pub svc: Option<SvcMode>,
    /// With --svc: each spatial layer's own kbit/s, lowest first.
    #[arg(long, value_delimiter = ',', requires = "svc")]
    pub svc_kbps: Vec<u32>,
    /// Spread the participants round-robin over these base URLs (the nodes
    /// of a cluster: a meeting over nodes), comma-separated; default: the
    /// server alone. Server figures are the server's (`--server`).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Participants whose microphone carries speech (the first ones to
    /// join); the others send Opus DTX, as livekit-client does by default
    /// while its user is silent. Default: every microphone speaks.
    #[arg(long)]
    pub talking: Option<u64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AudioRoomArgs {
    /// Speakers: publish audio, hear the other speakers.
    #[arg(long, default_value_t = 4)]
    pub speakers: u64,
    /// Listeners: hear every speaker.
    #[arg(long, default_value_t = 100)]
    pub listeners: u64,
}

/// Start `n` participants of `room` over the ramp; `plan(i)` says what
/// each does.
pub async fn ramp_members(
    run: &Run,
    room: &str,
    n: u64,
    name: &'static str,
    nodes: &[Arc<Target>],
    plan: impl Fn(u64, String) -> RoomPlan,
) -> Vec<tokio::task::JoinHandle<SessionResult>> {
    let common = &run.common;
    let (clock, live, cancel) = (run.clock, run.live.clone(), run.cancel.clone());
    run.ramp(n, |i| {
        let token = common
            .target
            .token(room, &format!("loadtest-{name}-{i}"), true, true);
        let plan = token.map(|t| plan(i, t));
        let target = match nodes.len() {
            0 => &common.target,
            n => &nodes[(i as usize) % n],
        };
        let (target, live, cancel) = (Arc::clone(target), live.clone(), cancel.clone());
        async move {
            match plan {
                Ok(plan) => run_room_session(target, plan, clock, live, cancel).await,
                Err(e) => SessionResult::failed(e),
            }
        }
    })
    .await
}

/// Start `n` participants of `room` over the ramp, each publishing audio
/// (speech from the first `talking`, DTX from the rest; None: all speak)
/// and `camera` and receiving others' tracks as `subscribe` says.
pub async fn ramp_cameras(
    run: &Run,
    room: &str,
    n: u64,
    camera: &Camera,
    talking: Option<u64>,
    subscribe: SubscribePolicy,
    nodes: &[Arc<Target>],
) -> Vec<tokio::task::JoinHandle<SessionResult>> {
    let origin = run.clock.origin;
    let bind = run.common.bind;
    ramp_members(run, room, n, "member", nodes, |i, token| {
        let source = camera.source(origin, Instant::now());
        let silent = talking.is_some_and(|t| i >= t);
        RoomPlan {
            token,
            publish: Some(if silent { source.silent() } else { source }),
            subscribe,
            bind,
            ending: Ending::Graceful,
        }
    })
    .await
}

pub async fn conference(common: &Common, args: &ConferenceArgs) -> Result<Report, String> {
    let mut run = Run::start(common, args.participants).await;
    let nodes: Vec<Arc<Target>> = args
        .nodes
        .iter()
        .map(|u| Arc::new(common.target.at(u)))
        .collect();
    let subscribe = SubscribePolicy {
        visible: args.visible,
        tile_width: args.tile_width,
        ..SubscribePolicy::all(true, true)
    };
    let members = ramp_cameras(
        &run,
        &common.room,
        args.participants,
        &Camera {
            svc: Svc::of(args.svc, SvcCodec::Vp9, &args.svc_kbps),
            ..Camera::simulcast(VideoCodec::Vp8, args.layers)
        },
        args.talking,
        subscribe,
        &nodes,
    )
    .await;
    run.hold().await;
    let mut results = run.finish(vec![members]).await;
    let members = results.remove(0);
    let n = args.participants;
    let mut settings = BTreeMap::new();
    settings.insert("participants".into(), n.to_string());
    match args.svc {
        Some(mode) => settings.insert("svc".into(), mode.to_string()),
        None => settings.insert("layers".into(), args.layers.to_string()),
    };
    if !nodes.is_empty() {
        settings.insert("nodes".into(), nodes.len().to_string());
    }
    let others = n.saturating_sub(1);
    let visible = args.visible.map_or(others, |v| (v as u64).min(others));
    if let Some(v) = args.visible {
        settings.insert("visible".into(), v.to_string());
    }
    if let Some(w) = args.tile_width {
        settings.insert("tile_width".into(), w.to_string());
    }
    if let Some(t) = args.talking {
        settings.insert("talking".into(), t.to_string());
    }
    settings.insert("video_subscriptions".into(), (n * visible).to_string());
    Ok(run.report("conference", settings, &members, n).await)
}

pub async fn audio_room(common: &Common, args: &AudioRoomArgs) -> Result<Report, String> {
    let total = args.speakers + args.listeners;
    let mut run = Run::start(common, total).await;
    let origin = run.clock.origin;
    let bind = common.bind;
    // Speakers first (a short ramp of their own), then the listeners.
    let speakers = ramp_members(
        &run,
        &common.room,
        args.speakers,
        "speaker",
        &[],
        |_, token| RoomPlan {
            token,
            publish: Some(MediaSource::audio_only(origin, Instant::now())),
            subscribe: SubscribePolicy::all(true, false),
            bind,
            ending: Ending::Graceful,
        },
    )
    .await;
    run.wait_connected(args.speakers, Duration::from_secs(20))
        .await?;
    let listeners = ramp_members(
        &run,
        &common.room,
        args.listeners,
        "listener",
        &[],
        |_, token| RoomPlan {
            token,
            publish: None,
            subscribe: SubscribePolicy::all(true, false),
            bind,
            ending: Ending::Graceful,
        },
    )
    .await;
    run.hold().await;
    let results = run.finish(vec![speakers, listeners]).await;
    let all: Vec<SessionResult> = results.into_iter().flatten().collect();
    let mut settings = BTreeMap::new();
    settings.insert("speakers".into(), args.speakers.to_string());
    settings.insert("listeners".into(), args.listeners.to_string());
    settings.insert(
        "audio_subscriptions".into(),
        (args.speakers * args.speakers.saturating_sub(1) + args.listeners * args.speakers)
            .to_string(),
    );
    Ok(run.report("audio-room", settings, &all, total).await)
}
