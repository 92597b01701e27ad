//! The result of a scenario: merged receiver measurements, the server's
//! and the generator's resource use, and the quality verdict. Printed as a
//! table for people or as JSON (`--json`) for machines.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::process::ProcSample;
use crate::receive::{histogram, Kind};
use crate::session::SessionResult;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Quantiles in ms of a histogram in µs.
    pub fn of_us(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        Quantiles {
            p50: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// Resource use of a process over the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceUse {
    pub cpu_secs: f64,
    /// Average use of one core, percent.
    pub cpu_pct: f64,
    pub peak_rss_mb: f64,
    /// Datagrams the kernel dropped at this process's full UDP receive
    /// buffers from the start to the end of the steady window (None: not
    /// read, e.g. a scenario without one).
    pub udp_receive_drops: Option<u64>,
}

impl ResourceUse {
    pub fn between(before: ProcSample, after: ProcSample, wall_secs: f64) -> ResourceUse {
        let cpu = (after.cpu_secs - before.cpu_secs).max(0.0);
        ResourceUse {
            cpu_secs: cpu,
            cpu_pct: 100.0 * cpu / wall_secs.max(1e-9),
            peak_rss_mb: after.peak_rss_bytes as f64 / 1048576.0,
            udp_receive_drops: None,
        }
    }
}

/// The server's side of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    /// From `/proc/<pid>` (`--server-pid`), when given.
    pub process: Option<ResourceUse>,
    /// UDP datagrams the server sent and received during the window.
    pub packets_sent: Option<f64>,
    pub packets_received: Option<f64>,
    /// Datagrams sent per CPU-second of the server.
    pub packets_sent_per_cpu_sec: Option<f64>,
    /// How late the server's media workers served due timers during the
    /// run (`sfu_worker_timer_lag_seconds`).
    pub timer_lag: Option<TimerLag>,
    /// Audio frames the server read too late to forward and dropped
    /// (`sfu_stale_audio_packets_total`, one Opus frame a packet; a server without it: None).
    pub stale_audio_frames: Option<f64>,
}

/// Quantiles of the server's timer lag, as the upper bounds of the
/// histogram buckets that hold them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimerLag {
    pub wakeups: f64,
    pub p50_at_most_secs: f64,
    pub p99_at_most_secs: f64,
}

impl ServerFigures {
    /// The figures of one run, with packets per CPU-second derived.
    pub fn new(
        process: Option<ResourceUse>,
        packets_sent: Option<f64>,
        packets_received: Option<f64>,
    ) -> ServerFigures {
        let packets_sent_per_cpu_sec = match (&process, packets_sent) {
            (Some(p), Some(s)) if p.cpu_secs > 0.0 => Some(s / p.cpu_secs),
            _ => None,
        };
        ServerFigures {
            process,
            packets_sent,
            packets_received,
            packets_sent_per_cpu_sec,
            timer_lag: None,
            stale_audio_frames: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub settings: BTreeMap<String, String>,
    pub wall_secs: f64,
    pub streams_requested: u64,
    pub streams_connected: u64,
    pub streams_failed: u64,
    /// Signaling start to the first frame (video when the stream has video).
    pub join_ms: Quantiles,
    /// HTTP POST to answer.
    pub signaling_ms: Quantiles,
    /// Media payload received by all receivers, Mbit/s.
    pub received_mbps: f64,
    /// Per receiving stream, kbit/s.
    pub received_kbps_per_stream: f64,
    pub frames_received: u64,
    pub frame_loss_pct: f64,
    pub audio_loss_pct: f64,
    pub video_loss_pct: f64,
    /// RTP packets received (distinct) and lost (gaps in each stream's
    /// sequence numbers), all receivers.
    pub packets_received: u64,
    pub packet_loss_pct: f64,
    pub audio_packet_loss_pct: f64,
    pub video_packet_loss_pct: f64,
    /// Per receiving video line: from its offer (a WHEP viewer's POST, a
    /// room member's offer naming the track) to its first complete
    /// keyframe.
    pub first_keyframe_ms: Quantiles,
    /// Receiving video lines that never completed a keyframe.
    pub video_lines_without_keyframe: u64,
    /// Receiving video lines whose first frame was a delta frame, which a
    /// decoder cannot show (sent without the keyframe before it).
    pub video_lines_started_on_delta: u64,
    pub one_way_delay_ms: Quantiles,
    pub audio_delay_ms: Quantiles,
    /// Video keyframes alone: a paced sender spreads these largest frames
    /// over the most time.
    pub keyframe_delay_ms: Quantiles,
    /// Video frames that are not keyframes.
    pub delta_frame_delay_ms: Quantiles,
    /// Frames sent from this second of the run on (the ramp plus a settling
    /// time: the joins are over): their loss and delay. None without a
    /// steady window.
    pub steady_from_secs: Option<f64>,
    pub steady_loss_pct: f64,
    pub steady_delay_ms: Quantiles,
    /// Worst video delay over all receivers in each second of the run (ms):
    /// shows whether delay is a start-up transient or steady.
    pub video_delay_max_ms_by_second: Vec<f64>,
    /// Receivers per video layer they ended on (0 = lowest; a scalable
    /// stream's: the top spatial layer of the newest picture).
    pub layer_distribution: BTreeMap<String, u64>,
    /// Video frames received per layer, all receivers (a scalable
    /// stream's: per spatial layer).
    pub video_frames_by_layer: [u64; 4],
    pub unstamped_frames: u64,
    /// Room members' largest offer sent and answer received (SDP bytes;
    /// None: no room members).
    pub largest_offer_bytes: Option<u64>,
    pub largest_answer_bytes: Option<u64>,
    pub server: ServerFigures,
    pub generator: ResourceUse,
    pub errors: Vec<String>,
    pub failures: Vec<String>,
    /// What the reader must know to read the verdict (e.g. the generator
    /// was a bottleneck); not failures.
    pub notes: Vec<String>,
    pub passed: bool,
}

/// Quality thresholds a run must meet.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub max_loss_pct: f64,
    pub max_p99_ms: f64,
    /// Fraction of requested streams that must connect.
    pub min_connected: f64,
}

fn pct(lost: u64, received: u64) -> f64 {
    let total = lost + received;
    if total == 0 {
        0.0
    } else {
        100.0 * lost as f64 / total as f64
    }
}

/// Merge the receivers' results (publishers are not passed in).
pub fn merge(
    scenario: &str,
    settings: BTreeMap<String, String>,
    receivers: &[SessionResult],
    requested: u64,
    wall_secs: f64,
    window_secs: f64,
) -> Report {
    let mut delay = histogram();
    let mut audio_delay = histogram();
    let mut keyframe_delay = histogram();
    let mut delta_delay = histogram();
    let mut steady_delay = histogram();
    let (mut steady_rx, mut steady_lost) = (0u64, 0u64);
    let mut by_second: Vec<u64> = vec![];
    let mut join = histogram();
    let mut first_keyframe = histogram();
    let (mut without_keyframe, mut started_on_delta) = (0, 0);
    let mut signaling = histogram();
    let (mut bytes, mut frames, mut unstamped) = (0u64, 0u64, 0u64);
    let (mut a_rx, mut a_lost, mut v_rx, mut v_lost) = (0u64, 0u64, 0u64, 0u64);
    // Packets: audio received, lost; video received, lost.
    let mut packets = [0u64; 4];
    let mut layers = BTreeMap::new();
    let mut by_layer = [0u64; 4];
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut connected = 0;
    for r in receivers {
        if let Some(e) = &r.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
        connected += u64::from(r.connected);
        let s = &r.stats;
        let _ = delay.add(&s.delay_us);
        let _ = audio_delay.add(&s.audio_delay_us);
        let _ = keyframe_delay.add(&s.keyframe_delay_us);
        let _ = delta_delay.add(s.delta_frame_delay_us());
        let _ = steady_delay.add(&s.steady_delay_us);
        steady_rx += s.steady_frames;
        steady_lost += s.steady_lost;
        if by_second.len() < s.video_delay_by_second.len() {
            by_second.resize(s.video_delay_by_second.len(), 0);
        }
        for (all, mine) in by_second.iter_mut().zip(&s.video_delay_by_second) {
            *all = (*all).max(*mine);
        }
        bytes += s.bytes;
        unstamped += s.unstamped;
        frames += s.frames_of(Kind::Audio) + s.frames_of(Kind::Video);
        a_rx += s.frames_of(Kind::Audio);
        a_lost += s.lost_of(Kind::Audio);
        v_rx += s.frames_of(Kind::Video);
        v_lost += s.lost_of(Kind::Video);
        packets[0] += s.packets_of(Kind::Audio);
        packets[1] += s.packets_lost_of(Kind::Audio);
        packets[2] += s.packets_of(Kind::Video);
        packets[3] += s.packets_lost_of(Kind::Video);
        for t in s.first_keyframe.values() {
            let _ = first_keyframe.record((t.as_micros() as u64).max(1));
        }
        without_keyframe += s.video_lines_without_keyframe();
        started_on_delta += s.lines_started_on_delta();
        let first = s
            .first_frame
            .get(&Kind::Video)
            .or(s.first_frame.get(&Kind::Audio));
        if let Some(t) = first {
            let _ = join.record((t.as_micros() as u64).max(1));
        }
        if let Some(ms) = r.signaling_ms {
            let _ = signaling.record(((ms * 1000.0) as u64).max(1));
        }
        if let Some(l) = s.current_layer {
            *layers.entry(l.to_string()).or_default() += 1;
        }
        for (all, mine) in by_layer.iter_mut().zip(s.layer_frames) {
            *all += mine;
        }
    }
    let received_mbps = bytes as f64 * 8.0 / window_secs.max(1e-9) / 1e6;
    Report {
        scenario: scenario.into(),
        settings,
        wall_secs,
        streams_requested: requested,
        streams_connected: connected,
        streams_failed: requested.saturating_sub(connected),
        join_ms: Quantiles::of_us(&join),
        signaling_ms: Quantiles::of_us(&signaling),
        received_mbps,
        received_kbps_per_stream: if connected > 0 {
            received_mbps * 1000.0 / connected as f64
        } else {
            0.0
        },
        frames_received: frames,
        frame_loss_pct: pct(a_lost + v_lost, a_rx + v_rx),
        audio_loss_pct: pct(a_lost, a_rx),
        video_loss_pct: pct(v_lost, v_rx),
        packets_received: packets[0] + packets[2],
        packet_loss_pct: pct(packets[1] + packets[3], packets[0] + packets[2]),
        audio_packet_loss_pct: pct(packets[1], packets[0]),
        video_packet_loss_pct: pct(packets[3], packets[2]),
        first_keyframe_ms: Quantiles::of_us(&first_keyframe),
        video_lines_without_keyframe: without_keyframe,
        video_lines_started_on_delta: started_on_delta,
        one_way_delay_ms: Quantiles::of_us(&delay),
        audio_delay_ms: Quantiles::of_us(&audio_delay),
        keyframe_delay_ms: Quantiles::of_us(&keyframe_delay),
        delta_frame_delay_ms: Quantiles::of_us(&delta_delay),
        steady_from_secs: None,
        steady_loss_pct: pct(steady_lost, steady_rx),
        steady_delay_ms: Quantiles::of_us(&steady_delay),
        video_delay_max_ms_by_second: by_second.iter().map(|us| *us as f64 / 1000.0).collect(),
        layer_distribution: layers,
        video_frames_by_layer: by_layer,
        unstamped_frames: unstamped,
        largest_offer_bytes: None,
        largest_answer_bytes: None,
        server: ServerFigures::default(),
        generator: ResourceUse::default(),
        errors: errors
            .into_iter()
            .take(5)
            .map(|(e, n)| format!("{n}x {e}"))
            .collect(),
        failures: vec![],
        notes: vec![],
        passed: false,
    }
}

/// A bucket bound for people: "2 ms", "0.5 s", "inf".
fn seconds(s: f64) -> String {
    if s.is_infinite() {
        "inf".into()
    } else if s < 1.0 {
        format!("{} ms", s * 1000.0)
    } else {
        format!("{s} s")
    }
}

impl Report {
    /// Check the thresholds; sets `failures` and `passed`.
    pub fn judge(&mut self, t: Thresholds) {
        let mut f = vec![];
        let need = (self.streams_requested as f64 * t.min_connected).ceil() as u64;
        if self.streams_connected < need {
            f.push(format!(
                "{} of {} streams connected (need {need})",
                self.streams_connected, self.streams_requested
            ));
        }
        if self.frame_loss_pct > t.max_loss_pct {
            f.push(format!(
                "frame loss {:.3}% > {}%",
                self.frame_loss_pct, t.max_loss_pct
            ));
        }
        if self.one_way_delay_ms.p99 > t.max_p99_ms {
            f.push(format!(
                "p99 one-way delay {:.1} ms > {} ms",
                self.one_way_delay_ms.p99, t.max_p99_ms
            ));
        }
        if self.frames_received == 0 {
            f.push("no frames received".into());
        }
        self.notes.clear();
        if let Some(d) = self.generator.udp_receive_drops.filter(|d| *d > 0) {
            self.notes.push(format!(
                "the generator dropped {d} datagrams at its own sockets (too busy to read them): \
                 part of the loss is the generator's, not the server's"
            ));
        }
        let steady_passes = self.steady_delay_ms.max > 0.0
            && self.steady_loss_pct <= t.max_loss_pct
            && self.steady_delay_ms.p99 <= t.max_p99_ms;
        if let (false, true, Some(from)) = (f.is_empty(), steady_passes, self.steady_from_secs) {
            self.notes.push(format!(
                "the frames sent from {from:.0} s on (after the joins) met the thresholds: \
                 loss {:.3}%, p99 {:.1} ms",
                self.steady_loss_pct, self.steady_delay_ms.p99
            ));
        }
        self.passed = f.is_empty();
        self.failures = f;
    }

    pub fn table(&self) -> String {
        let q = |q: &Quantiles| format!("{:.1} / {:.1} / {:.1}", q.p50, q.p99, q.max);
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            (
                "settings".into(),
                self.settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (
                "streams requested / connected".into(),
                format!("{} / {}", self.streams_requested, self.streams_connected),
            ),
            ("join ms p50 / p99 / max".into(), q(&self.join_ms)),
            ("signaling ms p50 / p99 / max".into(), q(&self.signaling_ms)),
            (
                "received Mbit/s (per stream kbit/s)".into(),
                format!(
                    "{:.1} ({:.0})",
                    self.received_mbps, self.received_kbps_per_stream
                ),
            ),
            (
                "frame loss % (audio / video)".into(),
                format!(
                    "{:.3} ({:.3} / {:.3})",
                    self.frame_loss_pct, self.audio_loss_pct, self.video_loss_pct
                ),
            ),
            (
                "packet loss % (audio / video)".into(),
                format!(
                    "{:.3} ({:.3} / {:.3}) of {} packets",
                    self.packet_loss_pct,
                    self.audio_packet_loss_pct,
                    self.video_packet_loss_pct,
                    self.packets_received
                ),
            ),
            (
                "one-way delay ms p50 / p99 / max".into(),
                q(&self.one_way_delay_ms),
            ),
            ("  audio only".into(), q(&self.audio_delay_ms)),
            ("  video keyframes".into(), q(&self.keyframe_delay_ms)),
            (
                "  video, other frames".into(),
                q(&self.delta_frame_delay_ms),
            ),
        ];
        if self.first_keyframe_ms.max > 0.0 || self.video_lines_without_keyframe > 0 {
            let mut figures = q(&self.first_keyframe_ms);
            if self.video_lines_without_keyframe > 0 {
                figures += &format!("; {} lines without one", self.video_lines_without_keyframe);
            }
            if self.video_lines_started_on_delta > 0 {
                figures += &format!(
                    "; {} began with a delta frame",
                    self.video_lines_started_on_delta
                );
            }
            rows.push((
                "first keyframe ms p50 / p99 / max (video line's offer to keyframe)".into(),
                figures,
            ));
        }
        if let Some(from) = self.steady_from_secs {
            let figures = if self.steady_delay_ms.max > 0.0 {
                format!(
                    "loss {:.3} %, delay {}",
                    self.steady_loss_pct,
                    q(&self.steady_delay_ms)
                )
            } else {
                "no frames".into()
            };
            rows.push((format!("after the joins (sent from {from:.0} s)"), figures));
        }
        rows.push((
            "layers (receivers per layer)".into(),
            self.layer_distribution
                .iter()
                .map(|(k, v)| format!("L{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ));
        let used = self.video_frames_by_layer.iter().rposition(|n| *n > 0);
        if let Some(top) = used {
            rows.push((
                "video frames received per layer".into(),
                self.video_frames_by_layer[..=top]
                    .iter()
                    .enumerate()
                    .map(|(l, n)| format!("L{l}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        rows.push((
            "CPU s (% of a core): server / generator".into(),
            format!(
                "{} / {:.1} ({:.0}%)",
                self.server
                    .process
                    .as_ref()
                    .map_or("- (no --server-pid)".into(), |p| format!(
                        "{:.1} ({:.0}%)",
                        p.cpu_secs, p.cpu_pct
                    )),
                self.generator.cpu_secs,
                self.generator.cpu_pct
            ),
        ));
        if let Some(p) = &self.server.process {
            rows.push(("server peak RSS MB".into(), format!("{:.1}", p.peak_rss_mb)));
        }
        let server_drops = self
            .server
            .process
            .as_ref()
            .and_then(|p| p.udp_receive_drops);
        if server_drops.is_some() || self.generator.udp_receive_drops.is_some() {
            let show = |d: Option<u64>| d.map_or("-".to_string(), |d| d.to_string());
            rows.push((
                "UDP receive-buffer drops: server / generator".into(),
                format!(
                    "{} / {}",
                    show(server_drops),
                    show(self.generator.udp_receive_drops)
                ),
            ));
        }
        if let (Some(s), Some(r)) = (self.server.packets_sent, self.server.packets_received) {
            rows.push((
                "server packets sent / received".into(),
                format!("{s:.0} / {r:.0}"),
            ));
        }
        if let Some(p) = self.server.packets_sent_per_cpu_sec {
            rows.push(("server packets sent per CPU-s".into(), format!("{p:.0}")));
        }
        if let Some(stale) = self.server.stale_audio_frames {
            rows.push((
                "server's stale audio frames (read > 1 s late, dropped)".into(),
                format!("{stale:.0}"),
            ));
        }
        if let Some(lag) = self.server.timer_lag {
            rows.push((
                "server timer lag p50 / p99 (wake-ups)".into(),
                format!(
                    "<= {} / <= {} ({:.0})",
                    seconds(lag.p50_at_most_secs),
                    seconds(lag.p99_at_most_secs),
                    lag.wakeups
                ),
            ));
        }
        if let (Some(offer), Some(answer)) = (self.largest_offer_bytes, self.largest_answer_bytes) {
            rows.push((
                "largest room offer / answer (SDP bytes)".into(),
                format!("{offer} / {answer}"),
            ));
        }
        if self.unstamped_frames > 0 {
            rows.push((
                "frames without a stamp".into(),
                self.unstamped_frames.to_string(),
            ));
        }
        for e in &self.errors {
            rows.push(("error".into(), e.clone()));
        }
        for n in &self.notes {
            rows.push(("note".into(), n.clone()));
        }
        rows.push((
            "verdict".into(),
            if self.passed {
                "PASS".into()
            } else {
                format!("FAIL: {}", self.failures.join("; "))
            },
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}
