//! `sfu-loadtest soak`: a long steady mixed load with a trickle of churn,
//! sampled over time. A conference (`--participants`, all-to-all) and a
//! broadcast (one WHIP publisher, `--viewers` WHEP viewers) run for
//! `--duration` while short-lived WHEP viewers come and go
//! (`--churn-per-sec`, a third of them vanishing without a word). Every
//! `--sample-secs` the server's RSS, CPU, threads, packet rate and live
//! sessions are recorded. It passes when the quality thresholds hold over
//! the whole run, the server's RSS grew less than `--max-rss-growth-pct`
//! from the first sample after the ramp to the last, and every live-state
//! gauge is back to zero after the end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::broadcast::{ramp_viewers, start_publisher, Camera};
use crate::churn::{is_abrupt, wait_until_empty};
use crate::meeting::ramp_cameras;
use crate::peer::{Ending, Media};
use crate::process::{metric_sum, sample, scrape};
use crate::report::Report;
use crate::run::{Common, Run};
use crate::session::{run_session, SessionPlan, SessionResult};
use crate::stamp::VideoCodec;
use crate::subscribe::SubscribePolicy;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Conference participants (all-to-all, audio and video).
    #[arg(long, default_value_t = 5)]
    pub participants: u64,
    /// WHEP viewers of the broadcast.
    #[arg(long, default_value_t = 50)]
    pub viewers: u64,
    /// Simulcast layers of every camera (1-3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub layers: u8,
    /// Short-lived WHEP viewers started per second during the run.
    #[arg(long, default_value_t = 1.0)]
    pub churn_per_sec: f64,
    /// How long each short-lived viewer stays (s).
    #[arg(long, default_value_t = 5)]
    pub churn_lifetime_secs: u64,
    /// Seconds between samples of the server.
    #[arg(long, default_value_t = 30)]
    pub sample_secs: u64,
    /// Fail when the server's RSS grows more than this from the first
    /// sample after the ramp to the last (percent).
    #[arg(long, default_value_t = 20.0)]
    pub max_rss_growth_pct: f64,
    /// Longest wait after the end for the server to be empty (s).
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
}

/// The server and the receivers over one sampling interval.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    pub at_secs: f64,
    pub rss_mb: Option<f64>,
    /// Server CPU over the interval, percent of one core.
    pub cpu_pct: Option<f64>,
    pub threads: Option<u64>,
    pub participants: Option<f64>,
    pub packets_sent_per_sec: Option<f64>,
    /// Frames the generator's receivers completed per second.
    pub frames_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub report: Report,
    pub samples: Vec<SoakSample>,
    pub churn_started: u64,
    pub churn_connected: u64,
    pub rss_growth_pct: Option<f64>,
    pub empty_after_secs: Option<f64>,
    pub gauges_after: BTreeMap<String, f64>,
    pub passed: bool,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut out = String::from(
            "   t (s)   RSS MB   CPU %  threads  participants  pkts out/s  frames/s\n",
        );
        let opt = |v: Option<f64>, prec: usize| v.map_or("-".into(), |v| format!("{v:.prec$}"));
        for s in &self.samples {
            out.push_str(&format!(
                "{:>8.0} {:>8} {:>7} {:>8} {:>13} {:>11} {:>9.0}\n",
                s.at_secs,
                opt(s.rss_mb, 1),
                opt(s.cpu_pct, 1),
                s.threads.map_or("-".into(), |t| t.to_string()),
                opt(s.participants, 0),
                opt(s.packets_sent_per_sec, 0),
                s.frames_per_sec,
            ));
        }
        out.push_str(&format!(
            "churn viewers started / connected: {} / {}\nRSS growth after the ramp: {}\n\
             server empty after the end: {}\n",
            self.churn_started,
            self.churn_connected,
            self.rss_growth_pct
                .map_or("n/a (no --server-pid)".into(), |g| format!("{g:.1} %")),
            self.empty_after_secs.map_or_else(
                || format!("NO, gauges {:?}", self.gauges_after),
                |s| format!("{s:.1} s")
            ),
        ));
        out.push_str(&self.report.table());
        out
    }
}

/// What the sampler keeps between two samples.
struct Previous {
    at: Instant,
    cpu_secs: Option<f64>,
    packets_sent: Option<f64>,
    frames: u64,
}

async fn take_sample(run: &Run, started: Instant, previous: &mut Previous) -> SoakSample {
    let now = Instant::now();
    let dt = now.duration_since(previous.at).as_secs_f64().max(1e-3);
    let proc = run.common.server_pid.and_then(|p| sample(Some(p)));
    let metrics = scrape(&run.common.target.http, &run.common.target.base).await;
    let packets_sent = metrics
        .as_deref()
        .and_then(|m| metric_sum(m, "sfu_packets_sent_total"));
    let frames = run.live.frames.load(Ordering::Relaxed);
    let rate = |now: Option<f64>, before: Option<f64>| Some((now? - before?) / dt);
    let out = SoakSample {
        at_secs: now.duration_since(started).as_secs_f64(),
        rss_mb: proc.map(|p| p.rss_bytes as f64 / 1048576.0),
        cpu_pct: rate(proc.map(|p| p.cpu_secs), previous.cpu_secs).map(|r| r * 100.0),
        threads: proc.map(|p| p.threads),
        participants: metrics
            .as_deref()
            .and_then(|m| metric_sum(m, "sfu_participants")),
        packets_sent_per_sec: rate(packets_sent, previous.packets_sent),
        frames_per_sec: frames.saturating_sub(previous.frames) as f64 / dt,
    };
    *previous = Previous {
        at: now,
        cpu_secs: proc.map(|p| p.cpu_secs),
        packets_sent,
        frames,
    };
    out
}

/// A short-lived WHEP viewer of `room`, ended after `lifetime` (or with the run).
fn churn_viewer(
    run: &Run,
    room: &str,
    i: u64,
    lifetime: Duration,
) -> Result<JoinHandle<SessionResult>, String> {
    let target = run.common.target.clone();
    let plan = SessionPlan {
        path: format!("/whep/{room}"),
        token: target.token(room, &format!("soak-churn-{i}"), false, true)?,
        media: Media::Receive {
            audio: true,
            video: true,
        },
        bind: run.common.bind,
        ending: if is_abrupt(i, 1.0 / 3.0) {
            Ending::Abrupt
        } else {
            Ending::Graceful
        },
    };
    let cancel = run.cancel.child_token();
    let stop = cancel.clone();
    let (clock, live) = (run.clock, run.live.clone());
    Ok(tokio::spawn(async move {
        let timer = tokio::spawn(async move {
            tokio::time::sleep(lifetime).await;
            stop.cancel();
        });
        let result = run_session(target, plan, clock, live, cancel).await;
        timer.abort();
        result
    }))
}

pub async fn soak(common: &Common, args: &SoakArgs) -> Result<SoakReport, String> {
    let started = Instant::now();
    let conference_room = format!("{}-conference", common.room);
    let broadcast_room = format!("{}-broadcast", common.room);
    let mut run = Run::start(common, args.participants + args.viewers + 1).await;
    let publisher = start_publisher(
        &mut run,
        &broadcast_room,
        &Camera::simulcast(VideoCodec::Vp8, args.layers),
    )
    .await?;
    let everything = SubscribePolicy::all(true, true);
    let members = ramp_cameras(
        &run,
        &conference_room,
        args.participants,
        &Camera::simulcast(VideoCodec::Vp8, args.layers),
        None,
        everything,
        &[],
    )
    .await;
    let viewers = ramp_viewers(&run, &broadcast_room, args.viewers, None).await;

    // The steady window: sample, and start a churn viewer every gap.
    let end = Instant::now() + common.duration;
    let sample_every = Duration::from_secs(args.sample_secs.max(1));
    let churn_gap = (args.churn_per_sec > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / args.churn_per_sec.min(100.0)));
    let lifetime = Duration::from_secs(args.churn_lifetime_secs);
    // A baseline reading, then one sample per interval (and one for a
    // last partial interval of at least a second).
    let mut previous = Previous {
        at: Instant::now(),
        cpu_secs: None,
        packets_sent: None,
        frames: 0,
    };
    let _ = take_sample(&run, started, &mut previous).await;
    let mut samples = vec![];
    let mut next_sample = Instant::now() + sample_every;
    let mut next_churn = Instant::now();
    let mut churners = vec![];
    while Instant::now() < end {
        let wake = match churn_gap {
            Some(_) => next_sample.min(next_churn).min(end),
            None => next_sample.min(end),
        };
        tokio::time::sleep_until(wake.into()).await;
        if let Some(gap) = churn_gap {
            if Instant::now() >= next_churn && Instant::now() < end {
                churners.push(churn_viewer(
                    &run,
                    &broadcast_room,
                    churners.len() as u64,
                    lifetime,
                )?);
                next_churn += gap;
            }
        }
        if Instant::now() >= next_sample {
            samples.push(take_sample(&run, started, &mut previous).await);
            next_sample += sample_every;
        }
    }
    if previous.at.elapsed() >= Duration::from_secs(1) {
        samples.push(take_sample(&run, started, &mut previous).await);
    }

    let churn_started = churners.len() as u64;
    let mut results = run
        .finish(vec![members, viewers, vec![publisher], churners])
        .await;
    let churn_connected = results
        .pop()
        .unwrap_or_default()
        .iter()
        .filter(|r| r.connected)
        .count() as u64;
    results.pop(); // the publisher
    let receivers: Vec<SessionResult> = results.into_iter().flatten().collect();
    let mut settings = BTreeMap::new();
    settings.insert("participants".into(), args.participants.to_string());
    settings.insert("viewers".into(), args.viewers.to_string());
    settings.insert("layers".into(), args.layers.to_string());
    settings.insert("churn_per_sec".into(), args.churn_per_sec.to_string());
    let report = run
        .report(
            "soak",
            settings,
            &receivers,
            args.participants + args.viewers,
        )
        .await;

    // RSS from the first sample (one interval after the ramp) to the last.
    let rss: Vec<f64> = samples.iter().filter_map(|s| s.rss_mb).collect();
    let rss_growth_pct = match (rss.first(), rss.last()) {
        (Some(first), Some(last)) if *first > 0.0 => Some(100.0 * (last - first) / first),
        _ => None,
    };
    let (empty_after_secs, gauges_after) =
        wait_until_empty(common, Duration::from_secs(args.settle_secs)).await;
    let passed = report.passed
        && rss_growth_pct.is_none_or(|g| g <= args.max_rss_growth_pct)
        && empty_after_secs.is_some();
    Ok(SoakReport {
        report,
        samples,
        churn_started,
        churn_connected,
        rss_growth_pct,
        empty_after_secs,
        gauges_after,
        passed,
    })
}
