//! What every scenario shares: the clock, live counters and progress bar,
//! the ramp that starts sessions evenly over `--ramp`, the measured window,
//! the shutdown, and the server/generator figures around it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::peer::{Clock, Live};
use crate::process::{histogram_buckets, metric_sum, quantile_bound, sample, scrape, ProcSample};
use crate::report::{merge, Report, ResourceUse, ServerFigures, Thresholds, TimerLag};
use crate::session::SessionResult;
use crate::signal::Target;
use crate::socket_drops::SocketDrops;

/// Settings every scenario takes.
#[derive(Debug, Clone)]
pub struct Common {
    pub target: Arc<Target>,
    pub room: String,
    pub duration: Duration,
    pub ramp: Duration,
    pub bind: IpAddr,
    pub server_pid: Option<u32>,
    pub thresholds: Thresholds,
    pub quiet: bool,
}

pub struct Run {
    pub common: Common,
    pub clock: Clock,
    pub live: Arc<Live>,
    pub cancel: CancellationToken,
    started: Instant,
    server_before: Option<ProcSample>,
    self_before: Option<ProcSample>,
    metrics_before: Option<String>,
    /// Socket drop counters of the server and of the generator at the start,
    /// and what they grew by when the steady window ended (`hold`).
    drops_before: (Option<SocketDrops>, Option<SocketDrops>),
    drops_in_window: (Option<u64>, Option<u64>),
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

/// The steady figures count frames sent this long after the ramp: the
/// last joins connect and their first keyframes and layer choices settle.
pub const SETTLE_AFTER_RAMP: Duration = Duration::from_secs(3);

/// Longest wait for sessions to wind down after the window.
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);

impl Run {
    pub async fn start(common: &Common, expected_streams: u64) -> Run {
        let bar = if common.quiet {
            ProgressBar::hidden()
        } else {
            let total = (common.ramp + common.duration).as_secs().max(1);
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        let live = Arc::new(Live::default());
        let ticker = {
            let (bar, live) = (bar.clone(), live.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let mut last = (0u64, 0u64, Instant::now());
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let (frames, bytes) = (
                        live.frames.load(Ordering::Relaxed),
                        live.bytes.load(Ordering::Relaxed),
                    );
                    let dt = last.2.elapsed().as_secs_f64().max(1e-3);
                    bar.set_position(start.elapsed().as_secs());
                    bar.set_message(format!(
                        "connected {}/{expected_streams} failed {} | {:.0} frames/s {:.1} Mbit/s",
                        live.connected.load(Ordering::Relaxed),
                        live.failed.load(Ordering::Relaxed),
                        (frames - last.0) as f64 / dt,
                        (bytes - last.1) as f64 * 8.0 / dt / 1e6,
                    ));
                    last = (frames, bytes, Instant::now());
                }
            })
        };
        Run {
            common: common.clone(),
            clock: Clock::new(Instant::now(), common.ramp + SETTLE_AFTER_RAMP),
            live,
            cancel: CancellationToken::new(),
            started: Instant::now(),
            server_before: common.server_pid.and_then(|p| sample(Some(p))),
            self_before: sample(None),
            metrics_before: scrape(&common.target.http, &common.target.base).await,
            drops_before: (
                common.server_pid.and_then(|p| SocketDrops::read(Some(p))),
                SocketDrops::read(None),
            ),
            drops_in_window: (None, None),
            bar,
            ticker: Some(ticker),
        }
    }

    /// Wait (bounded) until `n` peers have connected.
    pub async fn wait_connected(&self, n: u64, within: Duration) -> Result<(), String> {
        let end = Instant::now() + within;
        while self.live.connected.load(Ordering::Relaxed) < n {
            if Instant::now() > end || self.live.failed.load(Ordering::Relaxed) > 0 {
                return Err(format!("{n} peer(s) did not connect within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Start `n` sessions evenly spread over the ramp.
    pub async fn ramp<F, Fut>(&self, n: u64, mut start: F) -> Vec<JoinHandle<SessionResult>>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = SessionResult> + Send + 'static,
    {
        let gap = if n > 0 {
            self.common.ramp / n as u32
        } else {
            Duration::ZERO
        };
        let begin = Instant::now();
        let mut handles = Vec::with_capacity(n as usize);
        for i in 0..n {
            tokio::time::sleep_until((begin + gap * i as u32).into()).await;
            handles.push(tokio::spawn(start(i)));
        }
        handles
    }

    /// The steady window after the ramp; ends with a reading of the socket
    /// drops (before the sessions close their sockets).
    pub async fn hold(&mut self) {
        tokio::time::sleep(self.common.duration).await;
        let since = |before: &Option<SocketDrops>, pid| {
            Some(SocketDrops::read(pid)?.since(before.as_ref()?))
        };
        self.drops_in_window = (
            self.common
                .server_pid
                .and_then(|p| since(&self.drops_before.0, Some(p))),
            since(&self.drops_before.1, None),
        );
    }

    /// End every session and collect the results (publishers first).
    pub async fn finish(
        &mut self,
        groups: Vec<Vec<JoinHandle<SessionResult>>>,
    ) -> Vec<Vec<SessionResult>> {
        self.cancel.cancel();
        let mut out = vec![];
        for handles in groups {
            let mut results = vec![];
            for h in handles {
                match tokio::time::timeout(FINISH_TIMEOUT, h).await {
                    Ok(Ok(r)) => results.push(r),
                    _ => results.push(SessionResult::failed("session did not finish".into())),
                }
            }
            out.push(results);
        }
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
        out
    }

    /// Merge the receivers' results with the resource figures of the window.
    pub async fn report(
        &self,
        scenario: &str,
        settings: BTreeMap<String, String>,
        receivers: &[SessionResult],
        requested: u64,
    ) -> Report {
        let wall = self.started.elapsed().as_secs_f64();
        let mut report = merge(scenario, settings, receivers, requested, wall, wall);
        report.steady_from_secs = self.clock.steady_from_secs();
        let sizes = [&self.live.largest_offer, &self.live.largest_answer]
            .map(|n| Some(n.load(Ordering::Relaxed)).filter(|n| *n > 0));
        [report.largest_offer_bytes, report.largest_answer_bytes] = sizes;
        let t = &self.common.target;
        let metrics_after = scrape(&t.http, &t.base).await;
        let delta = |name: &str| -> Option<f64> {
            let a = metric_sum(metrics_after.as_deref()?, name)?;
            let b = metric_sum(self.metrics_before.as_deref()?, name)?;
            Some(a - b)
        };
        let process = match (
            self.server_before,
            self.common.server_pid.and_then(|p| sample(Some(p))),
        ) {
            (Some(b), Some(a)) => Some(ResourceUse {
                udp_receive_drops: self.drops_in_window.0,
                ..ResourceUse::between(b, a, wall)
            }),
            _ => None,
        };
        report.server = ServerFigures::new(
            process,
            delta("sfu_packets_sent_total"),
            delta("sfu_packets_received_total"),
        );
        report.server.stale_audio_frames = delta("sfu_stale_audio_packets_total");
        report.server.timer_lag = (|| {
            let name = "sfu_worker_timer_lag_seconds";
            let before = histogram_buckets(self.metrics_before.as_deref()?, name)?;
            let after = histogram_buckets(metrics_after.as_deref()?, name)?;
            let (p50, wakeups) = quantile_bound(&before, &after, 0.5)?;
            let (p99, _) = quantile_bound(&before, &after, 0.99)?;
            Some(TimerLag {
                wakeups,
                p50_at_most_secs: p50,
                p99_at_most_secs: p99,
            })
        })();
        if let (Some(b), Some(a)) = (self.self_before, sample(None)) {
            report.generator = ResourceUse::between(b, a, wall);
        }
        report.generator.udp_receive_drops = self.drops_in_window.1;
        report.judge(self.common.thresholds);
        report
    }
}
