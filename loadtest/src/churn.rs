//! `sfu-loadtest churn`: many short sessions of every kind (WHIP
//! publishers, WHEP viewers, room participants) joining and leaving, a share
//! of them vanishing without a word (no DTLS close, no DELETE, no `leave`).
//! Afterwards the server must be back where it started: every gauge that
//! counts live state (`sfu_rooms`, `sfu_participants`, `sfu_rtc_instances`,
//! `sfu_registry_entries`, `sfu_tracks`) at zero, and its memory and threads
//! not grown without bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::peer::{Clock, Ending, Live, Media};
use crate::process::{metric_sum, sample, scrape, ProcSample};
use crate::report::ResourceUse;
use crate::room::{run_room_session, RoomPlan};
use crate::run::Common;
use crate::session::{run_session, SessionPlan, SessionResult};
use crate::source::{default_layers, MediaSource};
use crate::stamp::VideoCodec;
use crate::subscribe::SubscribePolicy;

/// Gauges of live server state: all zero when nobody is connected.
pub const LEAK_GAUGES: [&str; 5] = [
    "sfu_rooms",
    "sfu_participants",
    "sfu_rtc_instances",
    "sfu_registry_entries",
    "sfu_tracks",
];

#[derive(Debug, Clone, clap::Args)]
pub struct ChurnArgs {
    /// Sessions to start in total (a third each WHIP, WHEP and room).
    #[arg(long, default_value_t = 1000)]
    pub sessions: u64,
    /// Sessions alive at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: u64,
    /// Fraction of sessions that vanish instead of closing.
    #[arg(long, default_value_t = 0.3)]
    pub abrupt: f64,
    /// How long each session stays (ms).
    #[arg(long, default_value_t = 1500)]
    pub lifetime_ms: u64,
    /// Rooms the sessions are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Which kinds of sessions to churn (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ChurnKind::Whip, ChurnKind::Whep, ChurnKind::Room])]
    pub kinds: Vec<ChurnKind>,
    /// Longest wait after the last session for the server to be empty (s);
    /// must exceed its session timeout and reconnect grace.
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
}

/// A kind of session the churn starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnKind {
    Whip,
    Whep,
    Room,
}

#[derive(Debug, Serialize)]
pub struct ChurnReport {
    pub sessions: u64,
    pub connected: u64,
    pub abrupt: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub wall_secs: f64,
    /// From the last session's end until every gauge read zero.
    pub empty_after_secs: Option<f64>,
    pub gauges_after: BTreeMap<String, f64>,
    pub server_before: Option<ProcSample>,
    pub server_after: Option<ProcSample>,
    /// CPU over the run (and the settling after it): the server's (with
    /// `--server-pid`) and the generator's.
    pub server: Option<ResourceUse>,
    pub generator: Option<ResourceUse>,
    pub passed: bool,
}

/// Deterministic spread of abrupt endings: session `i` vanishes when this
/// says so (no randomness, so a run is repeatable).
pub fn is_abrupt(i: u64, share: f64) -> bool {
    ((i.wrapping_mul(7919) % 1000) as f64) < share.clamp(0.0, 1.0) * 1000.0
}

fn plan_of(common: &Common, i: u64, args: &ChurnArgs, origin: Instant) -> Result<Plan, String> {
    let room = format!("{}-{}", common.room, i % args.rooms.max(1));
    let ending = if is_abrupt(i, args.abrupt) {
        Ending::Abrupt
    } else {
        Ending::Graceful
    };
    let t = &common.target;
    let kinds = if args.kinds.is_empty() {
        &[ChurnKind::Whip][..]
    } else {
        &args.kinds[..]
    };
    Ok(match kinds[(i % kinds.len() as u64) as usize] {
        ChurnKind::Whip => Plan::Http(SessionPlan {
            path: format!("/whip/{room}"),
            token: t.token(&room, &format!("churn-pub-{i}"), true, false)?,
            media: Media::Publish(MediaSource::new(
                VideoCodec::Vp8,
                default_layers(1),
                true,
                origin,
                Instant::now(),
            )),
            bind: common.bind,
            ending,
        }),
        ChurnKind::Whep => Plan::Http(SessionPlan {
            path: format!("/whep/{room}"),
            token: t.token(&room, &format!("churn-view-{i}"), false, true)?,
            media: Media::Receive {
                audio: true,
                video: true,
            },
            bind: common.bind,
            ending,
        }),
        ChurnKind::Room => Plan::Room(RoomPlan {
            token: t.token(&room, &format!("churn-member-{i}"), true, true)?,
            publish: Some(MediaSource::audio_only(origin, Instant::now())),
            subscribe: SubscribePolicy::all(true, false),
            bind: common.bind,
            ending,
        }),
    })
}

enum Plan {
    Http(SessionPlan),
    Room(RoomPlan),
}

async fn gauges(common: &Common) -> Option<BTreeMap<String, f64>> {
    let text = scrape(&common.target.http, &common.target.base).await?;
    LEAK_GAUGES
        .iter()
        .map(|g| Some((g.to_string(), metric_sum(&text, g)?)))
        .collect()
}

/// Poll the live-state gauges (bounded by `settle`) until all read zero.
/// Returns how long that took (None: not within `settle`) and the last
/// reading.
pub async fn wait_until_empty(
    common: &Common,
    settle: Duration,
) -> (Option<f64>, BTreeMap<String, f64>) {
    let since = Instant::now();
    let mut last = BTreeMap::new();
    while since.elapsed() < settle {
        if let Some(g) = gauges(common).await {
            let empty = g.values().all(|v| *v == 0.0);
            last = g;
            if empty {
                return (Some(since.elapsed().as_secs_f64()), last);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (None, last)
}

pub async fn churn(common: &Common, args: &ChurnArgs) -> Result<ChurnReport, String> {
    let start = Instant::now();
    let server_before = common.server_pid.and_then(|p| sample(Some(p)));
    let generator_before = sample(None);
    let clock = Clock::without_steady_window(Instant::now());
    let live = Arc::new(Live::default());
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1) as usize));
    let lifetime = Duration::from_millis(args.lifetime_ms);
    let mut handles = Vec::with_capacity(args.sessions as usize);
    for i in 0..args.sessions {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let plan = plan_of(common, i, args, clock.origin)?;
        let (target, live) = (common.target.clone(), live.clone());
        handles.push(tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let stop = cancel.clone();
            let timer = tokio::spawn(async move {
                tokio::time::sleep(lifetime).await;
                stop.cancel();
            });
            let result = match plan {
                Plan::Http(p) => run_session(target, p, clock, live, cancel).await,
                Plan::Room(p) => run_room_session(target, p, clock, live, cancel).await,
            };
            timer.abort();
            drop(permit);
            result
        }));
    }
    let mut results: Vec<SessionResult> = vec![];
    for h in handles {
        if let Ok(r) = h.await {
            results.push(r);
        }
    }
    let (empty_after, gauges_after) =
        wait_until_empty(common, Duration::from_secs(args.settle_secs)).await;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for e in results.iter().filter_map(|r| r.error.as_ref()) {
        *errors.entry(e.clone()).or_default() += 1;
    }
    let connected = results.iter().filter(|r| r.connected).count() as u64;
    let abrupt = (0..args.sessions)
        .filter(|i| is_abrupt(*i, args.abrupt))
        .count() as u64;
    let passed = empty_after.is_some()
        && connected as f64 >= args.sessions as f64 * common.thresholds.min_connected;
    let wall = start.elapsed().as_secs_f64();
    let server_after = common.server_pid.and_then(|p| sample(Some(p)));
    let used =
        |b: Option<ProcSample>, a: Option<ProcSample>| Some(ResourceUse::between(b?, a?, wall));
    Ok(ChurnReport {
        sessions: args.sessions,
        connected,
        abrupt,
        failed: args.sessions - connected,
        errors: errors
            .into_iter()
            .take(5)
            .map(|(e, n)| format!("{n}x {e}"))
            .collect(),
        wall_secs: wall,
        empty_after_secs: empty_after,
        gauges_after,
        server: used(server_before, server_after),
        generator: used(generator_before, sample(None)),
        server_before,
        server_after,
        passed,
    })
}

impl ChurnReport {
    pub fn table(&self) -> String {
        let mb = |s: &Option<ProcSample>| {
            s.map_or("n/a".into(), |s| {
                format!(
                    "{:.1} MB RSS (peak {:.1}), {} threads",
                    s.rss_bytes as f64 / 1048576.0,
                    s.peak_rss_bytes as f64 / 1048576.0,
                    s.threads
                )
            })
        };
        let mut out = format!(
            "sessions {} (abrupt {}), connected {}, failed {}, {:.1} s\nserver empty after {}\ngauges after: {}\nserver before: {}\nserver after:  {}\n",
            self.sessions,
            self.abrupt,
            self.connected,
            self.failed,
            self.wall_secs,
            self.empty_after_secs.map_or("NEVER (within the settle time)".into(), |s| format!("{s:.1} s")),
            self.gauges_after.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            mb(&self.server_before),
            mb(&self.server_after),
        );
        let cpu = |u: &Option<ResourceUse>, missing: &str| {
            u.as_ref().map_or(missing.to_string(), |u| {
                format!("{:.1} ({:.0}%)", u.cpu_secs, u.cpu_pct)
            })
        };
        out.push_str(&format!(
            "CPU s (% of a core): server {} / generator {}\n",
            cpu(&self.server, "- (no --server-pid)"),
            cpu(&self.generator, "-"),
        ));
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out.push_str(if self.passed {
            "verdict: PASS\n"
        } else {
            "verdict: FAIL\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abrupt_endings_are_spread_and_match_the_share() {
        let n = (0..1000).filter(|i| is_abrupt(*i, 0.3)).count();
        assert_eq!(n, 300);
        assert!(!(0..100).all(|i| is_abrupt(i, 0.3)) && (0..100).any(|i| is_abrupt(i, 0.3)));
        assert_eq!((0..50).filter(|i| is_abrupt(*i, 0.0)).count(), 0);
    }
}
