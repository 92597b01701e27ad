//! Scenario `cluster`: one WHIP publisher (1-3 simulcast layers) that asks
//! the first of several cluster nodes (`--nodes`), and N WHEP viewers
//! spread round-robin over all of them. A viewer answered by the node that
//! hosts the room is *direct*; one answered by another node is *relayed*
//! (that node serves it from its node-to-node relay of the room). Which is
//! which comes from the `x-sfu-node` header of the answers (the publisher's
//! names the room's node, since a proxied answer keeps it), not from the
//! node that was asked. The report is the broadcast's, plus loss, one-way
//! delay and join time of the direct and the relayed viewers apart (their
//! difference is what one relay hop adds) and each node's CPU
//! (`--server-pids`, in the order of `--nodes`), packets and participants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::broadcast::{ramp_viewers_on, start_publisher, Camera};
use crate::process::{metric_sum, sample, scrape, ProcSample};
use crate::receive::histogram;
use crate::report::{merge, Quantiles, Report, ResourceUse, ServerFigures};
use crate::run::{Common, Run};
use crate::session::SessionResult;
use crate::signal::Target;
use crate::stamp::VideoCodec;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Base URLs of the cluster's nodes, comma-separated; the publisher
    /// asks the first, viewers ask them in turn (replaces `--url`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// The nodes' process ids, comma-separated, in the order of `--nodes`:
    /// CPU and peak RSS per node.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// WHEP viewers, spread round-robin over the nodes.
    #[arg(long, default_value_t = 30)]
    pub viewers: u64,
    /// Simulcast layers the publisher sends (1-3: 180p/360p/720p).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub layers: u8,
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8)]
    pub codec: VideoCodec,
    /// Viewers ask for at most this width (`?maxWidth=` on WHEP).
    #[arg(long)]
    pub max_width: Option<u32>,
}

/// How a viewer's media reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaPath {
    /// Served by the room's node.
    Direct,
    /// Served by another node, from its relay of the room.
    Relayed,
    /// No answer, or the room's node is not known.
    Unknown,
}

/// The path of a viewer answered by `served_by` when `origin` hosts the room.
pub fn media_path(served_by: Option<&str>, origin: Option<&str>) -> MediaPath {
    match (served_by, origin) {
        (Some(s), Some(o)) if s == o => MediaPath::Direct,
        (Some(_), Some(_)) => MediaPath::Relayed,
        _ => MediaPath::Unknown,
    }
}

/// Viewers' results by path.
#[derive(Debug, Default)]
pub struct Split {
    pub direct: Vec<SessionResult>,
    pub relayed: Vec<SessionResult>,
    pub unknown: Vec<SessionResult>,
}

pub fn split_by_path(viewers: Vec<SessionResult>, origin: Option<&str>) -> Split {
    let mut split = Split::default();
    for v in viewers {
        match media_path(v.served_by.as_deref(), origin) {
            MediaPath::Direct => split.direct.push(v),
            MediaPath::Relayed => split.relayed.push(v),
            MediaPath::Unknown => split.unknown.push(v),
        }
    }
    split
}

/// What the viewers of one path received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathFigures {
    pub viewers: u64,
    pub connected: u64,
    pub frames_received: u64,
    pub frame_loss_pct: f64,
    pub audio_loss_pct: f64,
    pub video_loss_pct: f64,
    /// All frames.
    pub one_way_delay_ms: Quantiles,
    pub video_delay_ms: Quantiles,
    pub audio_delay_ms: Quantiles,
    pub join_ms: Quantiles,
    pub layer_distribution: BTreeMap<String, u64>,
    /// Video frames received on each layer (0 = lowest), all viewers.
    pub video_frames_by_layer: [u64; 4],
    /// Media payload received, kbit/s per viewer over the run.
    pub payload_kbps_per_viewer: f64,
    /// Worst video delay in each second of the run (ms): start-up
    /// transient or steady.
    pub video_delay_max_ms_by_second: Vec<f64>,
    /// Video frames lost in each second of the run, all viewers together.
    pub video_lost_by_second: Vec<u64>,
}

impl PathFigures {
    /// The figures of `viewers` over a run of `wall_secs`.
    pub fn of(viewers: &[SessionResult], wall_secs: f64) -> PathFigures {
        let n = viewers.len() as u64;
        let m = merge("", BTreeMap::new(), viewers, n, wall_secs, wall_secs);
        let mut by_layer = [0u64; 4];
        for v in viewers {
            for (all, mine) in by_layer.iter_mut().zip(v.stats.layer_frames) {
                *all += mine;
            }
        }
        PathFigures {
            viewers: n,
            connected: m.streams_connected,
            frames_received: m.frames_received,
            frame_loss_pct: m.frame_loss_pct,
            audio_loss_pct: m.audio_loss_pct,
            video_loss_pct: m.video_loss_pct,
            one_way_delay_ms: m.one_way_delay_ms,
            video_delay_ms: video_delay(viewers),
            audio_delay_ms: m.audio_delay_ms,
            join_ms: m.join_ms,
            layer_distribution: m.layer_distribution,
            video_frames_by_layer: by_layer,
            payload_kbps_per_viewer: if n > 0 {
                m.received_mbps * 1000.0 / n as f64
            } else {
                0.0
            },
            video_delay_max_ms_by_second: m.video_delay_max_ms_by_second,
            video_lost_by_second: lost_by_second(viewers),
        }
    }
}

fn lost_by_second(viewers: &[SessionResult]) -> Vec<u64> {
    let mut all: Vec<u64> = vec![];
    for v in viewers {
        let mine = &v.stats.video_lost_by_second;
        if all.len() < mine.len() {
            all.resize(mine.len(), 0);
        }
        for (a, m) in all.iter_mut().zip(mine) {
            *a += m;
        }
    }
    all
}

/// Delay of video frames alone: every frame's minus the audio frames'.
fn video_delay(viewers: &[SessionResult]) -> Quantiles {
    let mut video = histogram();
    for v in viewers {
        let _ = video.add(v.stats.video_delay_us());
    }
    Quantiles::of_us(&video)
}

/// One node of the cluster over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFigures {
    pub url: String,
    /// Its id (`x-sfu-node`).
    pub id: Option<String>,
    /// Hosts the room.
    pub origin: bool,
    pub viewers_asked: u64,
    /// The viewers whose answer came from it.
    pub served: PathFigures,
    /// `sfu_participants` at the end of the window (viewers, publisher, relays).
    pub participants_at_end: Option<f64>,
    /// From `/proc/<pid>` (`--server-pids`).
    pub process: Option<ResourceUse>,
    pub packets_sent: Option<f64>,
    pub packets_received: Option<f64>,
    pub packets_sent_per_cpu_sec: Option<f64>,
    /// Megabits per second the node sent over the run.
    pub sent_mbps: Option<f64>,
    /// Other counters over the run (names of [`NODE_COUNTERS`]).
    pub counters: BTreeMap<String, f64>,
}

/// Counters of each node's `/metrics` reported over the run: what its
/// relays and viewers asked of it.
pub const NODE_COUNTERS: [&str; 5] = [
    "sfu_nacks_received_total",
    "sfu_plis_received_total",
    "sfu_keyframe_requests_sent_total",
    "sfu_layer_switches_total",
    "sfu_media_packets_forwarded_total",
];

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// All viewers together; `server` is the sum over the nodes.
    pub report: Report,
    /// The node hosting the room (the publisher's answer).
    pub room_node: Option<String>,
    pub direct: PathFigures,
    pub relayed: PathFigures,
    /// Viewers without an answer (their path is not known).
    pub unknown_path: u64,
    pub nodes: Vec<NodeFigures>,
    pub passed: bool,
}

/// A node's readings at one moment.
struct NodeReading {
    proc: Option<ProcSample>,
    metrics: Option<String>,
}

async fn read_node(target: &Target, pid: Option<u32>) -> NodeReading {
    NodeReading {
        proc: pid.and_then(|p| sample(Some(p))),
        metrics: scrape(&target.http, &target.base).await,
    }
}

async fn read_nodes(servers: &[Arc<Target>], pids: &[u32]) -> Vec<NodeReading> {
    let mut out = vec![];
    for (i, s) in servers.iter().enumerate() {
        out.push(read_node(s, pids.get(i).copied()).await);
    }
    out
}

/// A node's figures between two readings `wall_secs` apart.
fn node_figures(before: &NodeReading, after: &NodeReading, wall_secs: f64) -> NodeFigures {
    let delta = |name: &str| -> Option<f64> {
        Some(
            metric_sum(after.metrics.as_deref()?, name)?
                - metric_sum(before.metrics.as_deref()?, name)?,
        )
    };
    let process = match (before.proc, after.proc) {
        (Some(b), Some(a)) => Some(ResourceUse::between(b, a, wall_secs)),
        _ => None,
    };
    let server = ServerFigures::new(
        process,
        delta("sfu_packets_sent_total"),
        delta("sfu_packets_received_total"),
    );
    NodeFigures {
        packets_sent_per_cpu_sec: server.packets_sent_per_cpu_sec,
        process: server.process,
        packets_sent: server.packets_sent,
        packets_received: server.packets_received,
        sent_mbps: delta("sfu_bytes_sent_total").map(|b| b * 8.0 / wall_secs.max(1e-9) / 1e6),
        counters: NODE_COUNTERS
            .iter()
            .filter_map(|c| Some((c.to_string(), delta(c)?)))
            .collect(),
        ..Default::default()
    }
}

/// The cluster's totals: CPU and packets summed, peak RSS summed (each
/// node's peak; they need not coincide).
fn totals(nodes: &[NodeFigures]) -> ServerFigures {
    let sum = |f: &dyn Fn(&NodeFigures) -> Option<f64>| -> Option<f64> {
        nodes.iter().map(f).sum::<Option<f64>>()
    };
    let process = nodes
        .iter()
        .map(|n| n.process.clone())
        .collect::<Option<Vec<_>>>()
        .filter(|p| !p.is_empty())
        .map(|p| ResourceUse {
            cpu_secs: p.iter().map(|r| r.cpu_secs).sum(),
            cpu_pct: p.iter().map(|r| r.cpu_pct).sum(),
            peak_rss_mb: p.iter().map(|r| r.peak_rss_mb).sum(),
            udp_receive_drops: p.iter().map(|r| r.udp_receive_drops).sum(),
        });
    ServerFigures::new(
        process,
        sum(&|n| n.packets_sent),
        sum(&|n| n.packets_received),
    )
}

/// Viewers by the node that answered them (`ids[i]`), and those answered
/// by none of them.
pub fn group_by_node(
    viewers: Vec<SessionResult>,
    ids: &[Option<String>],
) -> (Vec<Vec<SessionResult>>, Vec<SessionResult>) {
    let mut groups: Vec<Vec<SessionResult>> = ids.iter().map(|_| vec![]).collect();
    let mut rest = vec![];
    for v in viewers {
        match ids.iter().position(|id| id.is_some() && *id == v.served_by) {
            Some(i) => groups[i].push(v),
            None => rest.push(v),
        }
    }
    (groups, rest)
}

/// Viewer `i` asks node `i % nodes`: how many ask each.
fn asked_counts(viewers: u64, nodes: usize) -> Vec<u64> {
    let n = nodes.max(1) as u64;
    (0..n)
        .map(|k| viewers / n + u64::from(k < viewers % n))
        .collect()
}

pub async fn cluster(common: &Common, args: &ClusterArgs) -> Result<ClusterReport, String> {
    let first = args.nodes.first().ok_or("cluster: --nodes is empty")?;
    if !args.server_pids.is_empty() && args.server_pids.len() != args.nodes.len() {
        return Err(format!(
            "cluster: {} --server-pids for {} --nodes (one per node, same order)",
            args.server_pids.len(),
            args.nodes.len()
        ));
    }
    let servers: Vec<Arc<Target>> = args
        .nodes
        .iter()
        .map(|u| Arc::new(common.target.at(u)))
        .collect();
    let mut ids = vec![];
    for s in &servers {
        ids.push(s.node_id().await);
    }
    // The run's own server figures would be the first node's alone: the
    // cluster's totals replace them.
    let mut c = common.clone();
    c.target = Arc::new(common.target.at(first));
    c.server_pid = None;
    let room = c.room.clone();

    let before = read_nodes(&servers, &args.server_pids).await;
    let started = Instant::now();
    let mut run = Run::start(&c, args.viewers + 1).await;
    let publisher =
        start_publisher(&mut run, &room, &Camera::simulcast(args.codec, args.layers)).await?;
    let viewers = ramp_viewers_on(&run, &servers, &room, args.viewers, args.max_width).await;
    run.hold().await;
    let mut participants = vec![];
    for s in &servers {
        let m = scrape(&s.http, &s.base).await;
        participants.push(m.as_deref().and_then(|m| metric_sum(m, "sfu_participants")));
    }
    let mut results = run.finish(vec![viewers, vec![publisher]]).await;
    let after = read_nodes(&servers, &args.server_pids).await;
    let wall = started.elapsed().as_secs_f64();

    let room_node = results
        .get(1)
        .and_then(|p| p.first())
        .and_then(|p| p.served_by.clone());
    let (groups, unserved) = group_by_node(results.remove(0), &ids);
    let asked = asked_counts(args.viewers, servers.len());
    let nodes: Vec<NodeFigures> = (0..servers.len())
        .map(|i| NodeFigures {
            url: servers[i].base.clone(),
            id: ids[i].clone(),
            origin: ids[i].is_some() && ids[i] == room_node,
            viewers_asked: asked[i],
            served: PathFigures::of(&groups[i], wall),
            participants_at_end: participants[i],
            ..node_figures(&before[i], &after[i], wall)
        })
        .collect();
    let viewers: Vec<SessionResult> = groups.into_iter().flatten().chain(unserved).collect();

    let mut settings = BTreeMap::new();
    settings.insert("nodes".into(), servers.len().to_string());
    settings.insert("viewers".into(), args.viewers.to_string());
    settings.insert("layers".into(), args.layers.to_string());
    settings.insert("codec".into(), format!("{:?}", args.codec).to_lowercase());
    if let Some(w) = args.max_width {
        settings.insert("max_width".into(), w.to_string());
    }
    let mut report = run
        .report("cluster", settings, &viewers, args.viewers)
        .await;
    report.server = totals(&nodes);
    let split = split_by_path(viewers, room_node.as_deref());
    let passed = report.passed;
    Ok(ClusterReport {
        report,
        direct: PathFigures::of(&split.direct, wall),
        relayed: PathFigures::of(&split.relayed, wall),
        unknown_path: split.unknown.len() as u64,
        room_node,
        nodes,
        passed,
    })
}

impl ClusterReport {
    pub fn table(&self) -> String {
        let q = |q: &Quantiles| format!("{:.1} / {:.1} / {:.1}", q.p50, q.p99, q.max);
        let path = |p: &PathFigures| {
            format!(
                "{:>9} {:>7} {:>7}  {:<22} {:<22} {:<22} {:<22} {}\n",
                format!("{}/{}", p.connected, p.viewers),
                format!("{:.3}%", p.frame_loss_pct),
                format!("{:.0}", p.payload_kbps_per_viewer),
                q(&p.one_way_delay_ms),
                q(&p.video_delay_ms),
                q(&p.audio_delay_ms),
                q(&p.join_ms),
                p.layer_distribution
                    .iter()
                    .map(|(k, v)| format!("L{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        };
        let mut out = self.report.table();
        out.push_str(&format!(
            "\nroom's node: {}{}\n",
            self.room_node.as_deref().unwrap_or("unknown"),
            if self.unknown_path > 0 {
                format!(" ({} viewers without an answer)", self.unknown_path)
            } else {
                String::new()
            }
        ));
        out.push_str(&format!(
            "{:<8} {:>9} {:>7} {:>7}  {:<22} {:<22} {:<22} {:<22} layers\n",
            "path",
            "connected",
            "loss",
            "kbit/s",
            "delay ms p50/p99/max",
            "video ms p50/p99/max",
            "audio ms p50/p99/max",
            "join ms p50/p99/max"
        ));
        out.push_str(&format!("{:<8} {}", "direct", path(&self.direct)));
        out.push_str(&format!("{:<8} {}", "relayed", path(&self.relayed)));
        if self.direct.frames_received > 0 && self.relayed.frames_received > 0 {
            let (d, r) = (&self.direct, &self.relayed);
            out.push_str(&format!(
                "relayed minus direct, p50 / p99: video {:+.1} / {:+.1} ms, audio {:+.1} / {:+.1} ms\n",
                r.video_delay_ms.p50 - d.video_delay_ms.p50,
                r.video_delay_ms.p99 - d.video_delay_ms.p99,
                r.audio_delay_ms.p50 - d.audio_delay_ms.p50,
                r.audio_delay_ms.p99 - d.audio_delay_ms.p99,
            ));
        }
        out.push_str(&format!(
            "\n{:<8} {:<6} {:>5} {:>6} {:>7} {:<16} {:>12} {:>14} {:>8} {:>12} {:>11} {:>10}\n",
            "node",
            "role",
            "asked",
            "served",
            "loss",
            "video p50/p99",
            "participants",
            "CPU s (% core)",
            "peak MB",
            "packets out",
            "pkts/CPU-s",
            "Mbit/s out"
        ));
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        for n in &self.nodes {
            out.push_str(&format!(
                "{:<8} {:<6} {:>5} {:>6} {:>7} {:<16} {:>12} {:>14} {:>8} {:>12} {:>11} {:>10}\n",
                n.id.as_deref().unwrap_or(&n.url),
                if n.origin { "origin" } else { "edge" },
                n.viewers_asked,
                n.served.viewers,
                format!("{:.3}%", n.served.frame_loss_pct),
                format!(
                    "{:.1} / {:.1}",
                    n.served.video_delay_ms.p50, n.served.video_delay_ms.p99
                ),
                opt(n.participants_at_end),
                n.process.as_ref().map_or("-".into(), |p| format!(
                    "{:.1} ({:.0}%)",
                    p.cpu_secs, p.cpu_pct
                )),
                n.process
                    .as_ref()
                    .map_or("-".into(), |p| format!("{:.0}", p.peak_rss_mb)),
                opt(n.packets_sent),
                opt(n.packets_sent_per_cpu_sec),
                n.sent_mbps.map_or("-".into(), |m| format!("{m:.1}")),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::receive::{Frame, ReceiveStats};
    use crate::stamp::Stamp;

    /// A connected viewer answered by `node` that got 10 video frames
    /// (one lost) `delay_ms` after they were sent.
    fn viewer(node: Option<&str>, delay_ms: u64) -> SessionResult {
        let mut stats = ReceiveStats::default();
        for seq in (0..11).filter(|s| *s != 4) {
            let stamp = Stamp {
                layer: 2,
                seq,
                sent_us: seq * 33_000,
            };
            let now = stamp.sent_us + delay_ms * 1000;
            stats.on_frame(
                Frame::video(1, 1000, false),
                Some(stamp),
                Duration::from_millis(100),
                now,
            );
        }
        SessionResult {
            connected: node.is_some(),
            stats,
            error: None,
            signaling_ms: Some(5.0),
            served_by: node.map(str::to_string),
        }
    }

    #[test]
    fn viewers_are_direct_on_the_room_node_and_relayed_elsewhere() {
        assert_eq!(media_path(Some("n1"), Some("n1")), MediaPath::Direct);
        assert_eq!(media_path(Some("n2"), Some("n1")), MediaPath::Relayed);
        assert_eq!(media_path(None, Some("n1")), MediaPath::Unknown);
        assert_eq!(media_path(Some("n2"), None), MediaPath::Unknown);
        let viewers = vec![
            viewer(Some("n1"), 3),
            viewer(Some("n2"), 8),
            viewer(Some("n3"), 9),
            viewer(None, 0),
        ];
        let ids = [Some("n1".to_string()), Some("n2".into()), None];
        let (groups, rest) = group_by_node(viewers, &ids);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!((sizes, rest.len()), (vec![1, 1, 0], 2));
        let viewers: Vec<SessionResult> = groups.into_iter().flatten().chain(rest).collect();
        let split = split_by_path(viewers, Some("n1"));
        assert_eq!(
            (split.direct.len(), split.relayed.len(), split.unknown.len()),
            (1, 2, 1)
        );
        let (d, r) = (
            PathFigures::of(&split.direct, 1.0),
            PathFigures::of(&split.relayed, 1.0),
        );
        assert_eq!((d.viewers, r.viewers, r.connected), (1, 2, 2));
        assert!((d.one_way_delay_ms.p50 - 3.0).abs() < 0.1, "{d:?}");
        assert!((r.one_way_delay_ms.p50 - 8.0).abs() < 0.1, "{r:?}");
        assert!((r.one_way_delay_ms.max - 9.0).abs() < 0.1, "{r:?}");
        // Video alone: the same frames (there is no audio here).
        assert!((r.video_delay_ms.p99 - 9.0).abs() < 0.1, "{r:?}");
        // One frame of 11 lost per viewer, seen in second 0.
        assert!((r.video_loss_pct - 100.0 / 11.0).abs() < 0.01, "{r:?}");
        assert_eq!(r.video_lost_by_second, vec![2]);
        assert_eq!(r.layer_distribution.get("2"), Some(&2));
        assert_eq!(r.video_frames_by_layer, [0, 0, 20, 0]);
        // 10 frames of 1000 bytes each per viewer in one second.
        assert!((r.payload_kbps_per_viewer - 80.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn video_delay_leaves_the_audio_out() {
        let mut v = viewer(Some("n1"), 10);
        for seq in 0..30 {
            let stamp = Stamp {
                layer: 0,
                seq,
                sent_us: 0,
            };
            v.stats
                .on_frame(Frame::audio(0, 120), Some(stamp), Duration::ZERO, 1000);
        }
        let f = PathFigures::of(&[v], 1.0);
        assert!((f.audio_delay_ms.max - 1.0).abs() < 0.01, "{f:?}");
        assert!((f.video_delay_ms.p50 - 10.0).abs() < 0.1, "{f:?}");
        // All frames together: mostly audio.
        assert!(f.one_way_delay_ms.p50 < 2.0, "{f:?}");
    }

    #[test]
    fn viewers_are_asked_round_robin() {
        assert_eq!(asked_counts(7, 3), vec![3, 2, 2]);
        assert_eq!(asked_counts(60, 3), vec![20, 20, 20]);
        assert_eq!(asked_counts(1, 3), vec![1, 0, 0]);
    }

    #[test]
    fn totals_sum_the_nodes_and_need_every_pid() {
        let node = |cpu: f64, sent: f64| NodeFigures {
            process: Some(ResourceUse {
                cpu_secs: cpu,
                cpu_pct: cpu * 5.0,
                peak_rss_mb: 50.0,
                udp_receive_drops: None,
            }),
            packets_sent: Some(sent),
            packets_received: Some(1.0),
            ..Default::default()
        };
        let t = totals(&[node(2.0, 1000.0), node(3.0, 4000.0)]);
        let p = t.process.expect("both nodes measured");
        assert_eq!((p.cpu_secs, p.peak_rss_mb), (5.0, 100.0));
        assert_eq!(t.packets_sent, Some(5000.0));
        assert_eq!(t.packets_sent_per_cpu_sec, Some(1000.0));
        let mut blind = node(1.0, 1.0);
        blind.process = None;
        assert!(totals(&[node(2.0, 1.0), blind]).process.is_none());
    }
}
