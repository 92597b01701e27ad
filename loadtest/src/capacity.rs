//! `sfu-loadtest capacity`: run the broadcast scenario at growing viewer
//! counts until a quality threshold breaks; report the largest load that
//! passed and what the server did per CPU-second there.

use serde::Serialize;

use crate::broadcast::{broadcast, BroadcastArgs};
use crate::report::Report;
use crate::run::Common;

#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub broadcast: BroadcastArgs,
    /// Viewers in the first step.
    #[arg(long, default_value_t = 25)]
    pub start: u64,
    /// Each step multiplies the viewers by this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Never go above this many viewers.
    #[arg(long, default_value_t = 2000)]
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct CapacityReport {
    pub steps: Vec<Report>,
    pub largest_passing_viewers: Option<u64>,
    pub packets_sent_per_cpu_sec_at_largest: Option<f64>,
}

/// Bounded: at most this many steps.
const MAX_STEPS: usize = 20;

pub async fn capacity(common: &Common, args: &CapacityArgs) -> Result<CapacityReport, String> {
    let mut steps = vec![];
    let mut viewers = args.start.max(1);
    let mut largest = None;
    let mut rate = None;
    for i in 0..MAX_STEPS {
        let mut step_common = common.clone();
        step_common.room = format!("{}-{i}", common.room);
        let mut b = args.broadcast.clone();
        b.viewers = viewers;
        let report = broadcast(&step_common, &b).await?;
        if !common.quiet {
            eprintln!(
                "step {i}: {viewers} viewers: {}",
                if report.passed {
                    "pass".to_string()
                } else {
                    report.failures.join("; ")
                }
            );
        }
        let passed = report.passed;
        if passed {
            largest = Some(viewers);
            rate = report.server.packets_sent_per_cpu_sec;
        }
        steps.push(report);
        let next = ((viewers as f64 * args.factor).ceil() as u64).max(viewers + 1);
        if !passed || viewers >= args.max {
            break;
        }
        viewers = next.min(args.max);
        // Let the server close the previous step's sessions.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    Ok(CapacityReport {
        steps,
        largest_passing_viewers: largest,
        packets_sent_per_cpu_sec_at_largest: rate,
    })
}
