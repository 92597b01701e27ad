//! `sfu-loadtest`: command line of the load generator. See the crate docs
//! and BENCHMARKS.md for what it measures.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::broadcast::{broadcast, BroadcastArgs};
use loadtest::capacity::{capacity, CapacityArgs};
use loadtest::churn::{churn, ChurnArgs};
use loadtest::cluster::{cluster, ClusterArgs};
use loadtest::meeting::{audio_room, conference, AudioRoomArgs, ConferenceArgs};
use loadtest::relay::{relay_baseline, RelayArgs};
use loadtest::report::Thresholds;
use loadtest::run::Common;
use loadtest::signal::Target;
use loadtest::soak::{soak, SoakArgs};

#[derive(Debug, Parser)]
#[command(
    name = "sfu-loadtest",
    version,
    about = "Load generator and capacity benchmark for the SFU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, clap::Args)]
struct CommonArgs {
    /// The server's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SFU_URL")]
    url: String,
    #[arg(long, default_value = "devkey", env = "SFU_API_KEY")]
    api_key: String,
    #[arg(long, default_value = "secret", env = "SFU_API_SECRET")]
    api_secret: String,
    /// Room name (capacity steps append -<step>).
    #[arg(long, default_value = "loadtest")]
    room: String,
    /// Seconds of steady load after the ramp.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds over which sessions are started.
    #[arg(long, default_value_t = 5)]
    ramp: u64,
    /// Local address the virtual peers bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The server's process id: CPU and peak RSS from /proc/<pid>.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Fail when frame loss is above this percentage.
    #[arg(long, default_value_t = 0.5)]
    max_loss: f64,
    /// Fail when the p99 one-way delay is above this (ms).
    #[arg(long, default_value_t = 20.0)]
    max_p99_ms: f64,
    /// Fail when fewer than this fraction of the streams connect.
    #[arg(long, default_value_t = 0.99)]
    min_connected: f64,
    /// Generator worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON instead of the table (and no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One WHIP publisher (simulcast, or scalable VP9 with --svc), N WHEP viewers.
    Broadcast {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: BroadcastArgs,
    },
    /// N participants, all-to-all over LiveKit's room signalling (/rtc/v1).
    Conference {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: ConferenceArgs,
    },
    /// N speakers (audio) and M listeners in one room.
    AudioRoom {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: AudioRoomArgs,
    },
    /// Many short WHIP/WHEP/room sessions, some vanishing; then the server must be empty.
    Churn {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: ChurnArgs,
    },
    /// A long mixed load (conference + broadcast + churn) sampled over time: quality, memory growth, empty at the end.
    Soak {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: SoakArgs,
    },
    /// A broadcast over a cluster: publisher on the first of `--nodes`, viewers round-robin over all; direct and relayed viewers and each node's CPU apart.
    Cluster {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: ClusterArgs,
    },
    /// Step the broadcast up until a threshold breaks.
    Capacity {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        args: CapacityArgs,
    },
    /// Raw UDP relay on this machine: the physical limit to compare with.
    RelayBaseline {
        #[command(flatten)]
        args: RelayArgs,
        #[arg(long)]
        json: bool,
    },
}

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build()
}

fn common(c: &CommonArgs) -> Result<Common, String> {
    Ok(Common {
        target: Arc::new(Target::new(&c.url, &c.api_key, &c.api_secret)?),
        room: c.room.clone(),
        duration: Duration::from_secs(c.duration),
        ramp: Duration::from_secs(c.ramp),
        bind: c.bind,
        server_pid: c.server_pid,
        thresholds: Thresholds {
            max_loss_pct: c.max_loss,
            max_p99_ms: c.max_p99_ms,
            min_connected: c.min_connected,
        },
        quiet: c.json,
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{s}");
    Ok(())
}

/// Run one scenario and print its report.
fn scenario<F, Fut>(c: &CommonArgs, f: F) -> Result<bool, String>
where
    F: FnOnce(Common) -> Fut,
    Fut: std::future::Future<Output = Result<loadtest::report::Report, String>>,
{
    let rt = runtime(c.threads).map_err(|e| e.to_string())?;
    let report = rt.block_on(f(common(c)?))?;
    if c.json {
        print_json(&report)?;
    } else {
        print!("{}", report.table());
    }
    Ok(report.passed)
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Broadcast { common: c, args } => {
            scenario(&c, |common| async move { broadcast(&common, &args).await })
        }
        Command::Conference { common: c, args } => {
            scenario(&c, |common| async move { conference(&common, &args).await })
        }
        Command::AudioRoom { common: c, args } => {
            scenario(&c, |common| async move { audio_room(&common, &args).await })
        }
        Command::Capacity { common: c, args } => {
            let rt = runtime(c.threads).map_err(|e| e.to_string())?;
            let report = rt.block_on(capacity(&common(&c)?, &args))?;
            if c.json {
                print_json(&report)?;
            } else {
                for step in &report.steps {
                    println!("{}", step.table());
                }
                match report.largest_passing_viewers {
                    Some(n) => println!(
                        "largest passing load: {n} viewers; server packets sent per CPU-s there: {}",
                        report.packets_sent_per_cpu_sec_at_largest.map_or("n/a (no --server-pid)".into(), |p| format!("{p:.0}"))
                    ),
                    None => println!("no step passed"),
                }
            }
            Ok(report.largest_passing_viewers.is_some())
        }
        Command::Soak { common: c, args } => {
            let rt = runtime(c.threads).map_err(|e| e.to_string())?;
            let report = rt.block_on(async { soak(&common(&c)?, &args).await })?;
            if c.json {
                print_json(&report)?;
            } else {
                print!("{}", report.table());
            }
            Ok(report.passed)
        }
        Command::Cluster { common: c, args } => {
            if c.server_pid.is_some() {
                return Err(
                    "cluster: give --server-pids (one per node, in the order of --nodes)".into(),
                );
            }
            let rt = runtime(c.threads).map_err(|e| e.to_string())?;
            let report = rt.block_on(async { cluster(&common(&c)?, &args).await })?;
            if c.json {
                print_json(&report)?;
            } else {
                print!("{}", report.table());
            }
            Ok(report.passed)
        }
        Command::Churn { common: c, args } => {
            let rt = runtime(c.threads).map_err(|e| e.to_string())?;
            let report = rt.block_on(async { churn(&common(&c)?, &args).await })?;
            if c.json {
                print_json(&report)?;
            } else {
                print!("{}", report.table());
            }
            Ok(report.passed)
        }
        Command::RelayBaseline { args, json } => {
            let r = relay_baseline(&args).map_err(|e| e.to_string())?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "raw UDP relay: fanout {} at {} pps in: {} packets out, {:.2} CPU s, {:.0} packets out per CPU-s ({:.0} ns each), sinks got {}",
                    r.fanout, r.input_pps, r.packets_out, r.relay_cpu_secs, r.packets_out_per_cpu_sec, r.ns_per_packet_out, r.received_by_sinks
                );
            }
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sfu-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}
