//! Scenario `broadcast`: one WHIP publisher (audio + video in 1-3
//! simulcast layers, or one scalable VP9 or AV1 stream with `--svc`) and N
//! WHEP viewers of its room.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::peer::{Ending, Media};
use crate::report::Report;
use crate::run::{Common, Run};
use crate::session::{run_session, SessionPlan, SessionResult};
use crate::signal::Target;
use crate::source::{default_layers, svc_layers, MediaSource, SvcCodec};
use crate::stamp::VideoCodec;
use crate::vp9::SvcMode;

#[derive(Debug, Clone, clap::Args)]
pub struct BroadcastArgs {
    /// WHEP viewers of the one publisher.
    #[arg(long, default_value_t = 10)]
    pub viewers: u64,
    /// Simulcast layers the publisher sends (1-3: 180p/360p/720p).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub layers: u8,
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8)]
    pub codec: VideoCodec,
    /// Viewers ask for at most this width (`?maxWidth=` on WHEP).
    #[arg(long)]
    pub max_width: Option<u32>,
    /// Send scalable video instead of simulcast: one VP9 or AV1 stream (one
    /// SSRC, no rids; see --svc-codec) in scalability mode MODE = LxTy, x
    /// spatial and y temporal layers (1-3 each; e.g. L3T3: 320x180,
    /// 640x360 and 1280x720 at 150 / 400 / 1050 kbit/s, temporal layers
    /// 0,2,1,2, 20 pictures/s, as Chromium's L3T3_KEY); --layers and
    /// --codec are ignored.
    #[arg(long, value_name = "MODE")]
    pub svc: Option<SvcMode>,
    /// With --svc: each spatial layer's own kbit/s, lowest first
    /// (comma-separated; e.g. 235,625,1640 for 2.5 Mbit/s in all).
    #[arg(long, value_delimiter = ',', requires = "svc")]
    pub svc_kbps: Vec<u32>,
    /// With --svc: VP9 (layers in its payload descriptor) or AV1 (layers
    /// in the dependency descriptor header extension, as libaom's
    /// L3T3_KEY in Chromium).
    #[arg(long, value_enum, default_value_t = SvcCodec::Vp9, requires = "svc")]
    pub svc_codec: SvcCodec,
}

/// A scalable camera: mode, codec and each spatial layer's kbit/s (lowest
/// first; empty: the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub mode: SvcMode,
    pub codec: SvcCodec,
    pub kbps: Vec<u32>,
}

impl Svc {
    /// The camera of `--svc`, `--svc-codec` and `--svc-kbps`.
    pub fn of(mode: Option<SvcMode>, codec: SvcCodec, kbps: &[u32]) -> Option<Svc> {
        mode.map(|mode| Svc {
            mode,
            codec,
            kbps: kbps.to_vec(),
        })
    }
}

/// What a publisher's camera sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Camera {
    pub codec: VideoCodec,
    /// Simulcast layers (1-3).
    pub layers: u8,
    /// Scalable video instead.
    pub svc: Option<Svc>,
}

impl Camera {
    pub fn simulcast(codec: VideoCodec, layers: u8) -> Camera {
        Camera {
            codec,
            layers,
            svc: None,
        }
    }

    /// The broadcast's camera.
    pub fn of(args: &BroadcastArgs) -> Camera {
        Camera {
            svc: Svc::of(args.svc, args.svc_codec, &args.svc_kbps),
            ..Camera::simulcast(args.codec, args.layers)
        }
    }

    pub fn source(&self, origin: Instant, now: Instant) -> MediaSource {
        match &self.svc {
            Some(svc) => {
                let layers = svc_layers(svc.mode, &svc.kbps);
                MediaSource::scalable(svc.codec, svc.mode, layers, true, origin, now)
            }
            None => MediaSource::new(
                self.codec,
                default_layers(usize::from(self.layers)),
                true,
                origin,
                now,
            ),
        }
    }
}

/// Start the WHIP publisher of `room` and wait (bounded) until it is
/// connected.
pub async fn start_publisher(
    run: &mut Run,
    room: &str,
    camera: &Camera,
) -> Result<JoinHandle<SessionResult>, String> {
    let target = run.common.target.clone();
    let source = camera.source(run.clock.origin, Instant::now());
    let connected_before = run.live.connected.load(Ordering::Relaxed);
    let publisher = tokio::spawn(run_session(
        target.clone(),
        SessionPlan {
            path: format!("/whip/{room}"),
            token: target.token(room, &format!("loadtest-publisher-{room}"), true, false)?,
            media: Media::Publish(source),
            bind: run.common.bind,
            ending: Ending::Graceful,
        },
        run.clock,
        run.live.clone(),
        run.cancel.clone(),
    ));
    if let Err(e) = run
        .wait_connected(connected_before + 1, Duration::from_secs(10))
        .await
    {
        let results = run.finish(vec![vec![publisher]]).await;
        let why = results
            .first()
            .and_then(|g| g.first())
            .and_then(|r| r.error.clone());
        return Err(format!("publisher: {e} ({})", why.unwrap_or_default()));
    }
    Ok(publisher)
}

/// Start `n` WHEP viewers of `room` over the ramp, each asking for at most
/// `max_width` when given.
pub async fn ramp_viewers(
    run: &Run,
    room: &str,
    n: u64,
    max_width: Option<u32>,
) -> Vec<JoinHandle<SessionResult>> {
    let servers = [run.common.target.clone()];
    ramp_viewers_on(run, &servers, room, n, max_width).await
}

/// [`ramp_viewers`] spread over several servers (the nodes of a cluster):
/// viewer `i` asks `servers[i % len]`.
pub async fn ramp_viewers_on(
    run: &Run,
    servers: &[Arc<Target>],
    room: &str,
    n: u64,
    max_width: Option<u32>,
) -> Vec<JoinHandle<SessionResult>> {
    if servers.is_empty() {
        return vec![];
    }
    let query = max_width
        .map(|w| format!("?maxWidth={w}"))
        .unwrap_or_default();
    let (clock, live, cancel) = (run.clock, run.live.clone(), run.cancel.clone());
    let bind = run.common.bind;
    run.ramp(n, |i| {
        let target = Arc::clone(&servers[i as usize % servers.len()]);
        let token = target.token(room, &format!("loadtest-viewer-{room}-{i}"), false, true);
        let plan = token.map(|token| SessionPlan {
            path: format!("/whep/{room}{query}"),
            token,
            media: Media::Receive {
                audio: true,
                video: true,
            },
            bind,
            ending: Ending::Graceful,
        });
        let (live, cancel) = (live.clone(), cancel.clone());
        async move {
            match plan {
                Ok(plan) => run_session(target, plan, clock, live, cancel).await,
                Err(e) => SessionResult::failed(e),
            }
        }
    })
    .await
}

pub async fn broadcast(common: &Common, args: &BroadcastArgs) -> Result<Report, String> {
    let room = common.room.clone();
    let mut run = Run::start(common, args.viewers + 1).await;
    let publisher = start_publisher(&mut run, &room, &Camera::of(args)).await?;
    let viewers = ramp_viewers(&run, &room, args.viewers, args.max_width).await;
    run.hold().await;
    let mut results = run.finish(vec![viewers, vec![publisher]]).await;
    let viewers = results.remove(0);
    let mut settings = BTreeMap::new();
    settings.insert("viewers".into(), args.viewers.to_string());
    match args.svc {
        Some(mode) => {
            settings.insert("svc".into(), mode.to_string());
            settings.insert("codec".into(), args.svc_codec.name().into());
            let kbps: Vec<String> = svc_layers(mode, &args.svc_kbps)
                .iter()
                .map(|l| l.kbps.to_string())
                .collect();
            settings.insert("svc_kbps".into(), kbps.join(","));
        }
        None => {
            settings.insert("layers".into(), args.layers.to_string());
            settings.insert("codec".into(), format!("{:?}", args.codec).to_lowercase());
        }
    }
    if let Some(w) = args.max_width {
        settings.insert("max_width".into(), w.to_string());
    }
    Ok(run
        .report("broadcast", settings, &viewers, args.viewers)
        .await)
}
