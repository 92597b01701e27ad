//! Prometheus metrics of the server, registered once and shared by every
//! worker.
//!
//! Gauges and counters are atomics, so workers update them without locks.
//! Per-packet counts are accumulated per worker ([`PacketCounts`]) and
//! flushed periodically, so the packet path touches no shared cache line.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub rooms: IntGauge,
    pub participants: IntGaugeVec,
    pub rtc_instances: IntGauge,
    pub registry_entries: IntGauge,
    pub tracks: IntGaugeVec,
    pub sessions: IntGaugeVec,
    pub sessions_created: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub packets_received: IntCounter,
    pub packets_sent: IntCounter,
    pub udp_send_calls: IntCounter,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub media_packets_received: IntCounterVec,
    pub stale_audio_packets: IntCounter,
    pub media_packets_forwarded: IntCounterVec,
    pub media_packets_late: IntCounter,
    pub malformed_packets: IntCounterVec,
    pub publisher_stream_events: IntCounterVec,
    pub nacks_received: IntCounter,
    pub plis_received: IntCounter,
    pub firs_received: IntCounter,
    pub keyframe_requests_sent: IntCounterVec,
    pub reordered_frames: IntCounterVec,
    pub publishers_with_bframes: IntGaugeVec,
    pub alive_tasks: IntGauge,
    pub subscriber_estimate: Histogram,
    /// How late media workers handled their due timers.
    pub worker_timer_lag: Histogram,
    pub layer_switches: IntCounterVec,
    pub video_down_tracks: IntGaugeVec,
    pub paused_seconds: IntCounter,
    pub data_messages: IntCounterVec,
    pub room_messages: IntCounterVec,
    pub webhooks: IntCounterVec,
    /// Cluster: requests about rooms, by how they were served.
    pub cluster_requests: IntCounterVec,
    /// Cluster: relays this node runs for its viewers of other nodes' rooms.
    pub cluster_relays: IntGauge,
    /// Cluster: bridges linking satellite rooms here to their hosting nodes.
    pub cluster_bridges: IntGauge,
    pub fanout_relays: IntGauge,
}

/// How a node served a request about a room (`sfu_cluster_requests_total`).
pub const CLUSTER_OUTCOMES: [&str; 5] = ["here", "proxied", "redirected", "relayed", "unavailable"];

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Every series carries `node="<node>"` (which server of a fleet), and
    /// the process collector adds CPU, memory and file descriptors.
    pub fn new(node: &str) -> prometheus::Result<Metrics> {
        let labels = std::collections::HashMap::from([("node".to_string(), node.to_string())]);
        let r = Registry::new_custom(None, Some(labels))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            rooms: gauge(&r, "sfu_rooms", "Rooms currently hosted")?,
            data_messages: counter_vec(
                &r,
                "sfu_data_messages_total",
                "Data-channel messages from participants, by outcome",
                &["result"],
            )?,
            room_messages: counter_vec(
                &r,
                "sfu_room_messages_total",
                "Room protocol messages from clients, by type",
                &["type"],
            )?,
            webhooks: counter_vec(
                &r,
                "sfu_webhooks_total",
                "Webhook deliveries, by result",
                &["result"],
            )?,
            participants: gauge_vec(&r, "sfu_participants", "Participants by kind", &["kind"])?,
            cluster_requests: counter_vec(
                &r,
                "sfu_cluster_requests_total",
                "Requests about rooms (cluster): served here, proxied or redirected to the room's node, served here from a relay, or refused because Redis was unreachable",
                &["outcome"],
            )?,
            cluster_relays: gauge(
                &r,
                "sfu_cluster_relays",
                "Relays this node runs for its viewers of rooms hosted on other nodes",
            )?,
            cluster_bridges: gauge(
                &r,
                "sfu_cluster_bridges",
                "Bridges linking this node's participants of rooms hosted on other nodes to those rooms",
            )?,
            fanout_relays: gauge(
                &r,
                "sfu_fanout_relays",
                "Relays feeding a room's viewers on another worker of this node",
            )?,
            rtc_instances: gauge(&r, "sfu_rtc_instances", "Live str0m Rtc instances")?,
            registry_entries: gauge(
                &r,
                "sfu_registry_entries",
                "Entries in the resource and room registries",
            )?,
            tracks: gauge_vec(&r, "sfu_tracks", "Published tracks by kind", &["kind"])?,
            sessions: gauge_vec(&r, "sfu_sessions", "Sessions by state", &["state"])?,
            sessions_created: counter_vec(
                &r,
                "sfu_sessions_created_total",
                "Sessions created",
                &["kind"],
            )?,
            sessions_ended: counter_vec(
                &r,
                "sfu_sessions_ended_total",
                "Sessions ended, by reason",
                &["reason"],
            )?,
            packets_received: counter(&r, "sfu_packets_received_total", "UDP datagrams received")?,
            packets_sent: counter(&r, "sfu_packets_sent_total", "UDP datagrams sent")?,
            udp_send_calls: counter(
                &r,
                "sfu_udp_send_calls_total",
                "System calls that sent the workers' UDP datagrams (one GSO call carries several)",
            )?,
            bytes_received: counter(&r, "sfu_bytes_received_total", "UDP bytes received")?,
            bytes_sent: counter(&r, "sfu_bytes_sent_total", "UDP bytes sent")?,
            media_packets_received: counter_vec(
                &r,
                "sfu_media_packets_received_total",
                "RTP media packets received from publishers (repairs included, duplicates not)",
                &["kind"],
            )?,
            media_packets_forwarded: counter_vec(
                &r,
                "sfu_media_packets_forwarded_total",
                "RTP media packets written to subscribers",
                &["kind"],
            )?,
            media_packets_late: counter(
                &r,
                "sfu_media_packets_late_total",
                "Packets not forwarded to a subscriber because they could not be placed in its stream (from before a layer switch, or older than the stream's history)",
            )?,
            stale_audio_packets: counter(
                &r,
                "sfu_stale_audio_packets_total",
                "Audio packets not forwarded: the worker read them more than 1 s later than the line's least late packet (it was behind its socket)",
            )?,
            publisher_stream_events: counter_vec(
                &r,
                "sfu_publisher_stream_events_total",
                "Irregularities in publishers' RTP streams the server absorbed: padding-only or malformed packets squeezed out of subscribers' streams (padding, malformed), a media line moved to a new SSRC (ssrc_change), sequence numbers that jumped further than any loss (sequence_jump)",
                &["event"],
            )?,
            malformed_packets: counter_vec(
                &r,
                "sfu_malformed_packets_total",
                "Incoming video packets whose payload header did not parse (dropped), by codec",
                &["codec"],
            )?,
            nacks_received: counter(&r, "sfu_nacks_received_total", "NACKs from subscribers")?,
            plis_received: counter(&r, "sfu_plis_received_total", "PLIs from subscribers")?,
            firs_received: counter(&r, "sfu_firs_received_total", "FIRs from subscribers")?,
            keyframe_requests_sent: counter_vec(
                &r,
                "sfu_keyframe_requests_sent_total",
                "Keyframe requests sent to publishers, by cause",
                &["cause"],
            )?,
            reordered_frames: counter_vec(
                &r,
                "sfu_publisher_reordered_frames_total",
                "Video frames whose RTP timestamp went backwards (B-frames), by room",
                &["room"],
            )?,
            publishers_with_bframes: gauge_vec(
                &r,
                "sfu_publisher_bframes",
                "1 for a publisher whose H.264 stream carries B-frames (breaks browser playback)",
                &["room", "identity"],
            )?,
            alive_tasks: gauge(
                &r,
                "sfu_tokio_alive_tasks",
                "Tasks alive on the HTTP runtime",
            )?,
            subscriber_estimate: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "sfu_subscriber_bandwidth_estimate_bps",
                        "Viewers' downlink estimates (TWCC), sampled at each update",
                    )
                    .buckets(vec![
                        100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6,
                    ]),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            worker_timer_lag: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "sfu_worker_timer_lag_seconds",
                        "How late a media worker handled its due timers (pacing, RTCP, \
                         housekeeping), at each wake-up where one was due: about a millisecond \
                         (the timer's resolution) on a worker that keeps up; more means it is \
                         busy or starved of CPU, and its media waits as long",
                    )
                    .buckets(vec![
                        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                )?;
                r.register(Box::new(h.clone()))?;
                h
            },
            layer_switches: counter_vec(
                &r,
                "sfu_layer_switches_total",
                "Simulcast layer target changes, by direction",
                &["direction"],
            )?,
            video_down_tracks: gauge_vec(
                &r,
                "sfu_video_down_tracks",
                "Viewers' video by the layer they receive (low/mid/high, single, paused, waiting), per worker",
                &["worker", "layer"],
            )?,
            paused_seconds: counter(
                &r,
                "sfu_video_paused_seconds_total",
                "Viewer-seconds of video paused because not even the lowest layer fit",
            )?,
            registry: r,
        }
        .init_series())
    }

    /// Make labelled series visible at zero before the first event.
    fn init_series(self) -> Self {
        for kind in ["whip", "whep"] {
            self.participants.with_label_values(&[kind]).set(0);
            self.sessions_created.with_label_values(&[kind]).inc_by(0);
        }
        for kind in ["audio", "video"] {
            self.tracks.with_label_values(&[kind]).set(0);
            self.media_packets_forwarded
                .with_label_values(&[kind])
                .inc_by(0);
            self.media_packets_received
                .with_label_values(&[kind])
                .inc_by(0);
        }
        for direction in ["up", "down"] {
            self.layer_switches
                .with_label_values(&[direction])
                .inc_by(0);
        }
        for state in ["connecting", "connected"] {
            self.sessions.with_label_values(&[state]).set(0);
        }
        for outcome in CLUSTER_OUTCOMES {
            self.cluster_requests
                .with_label_values(&[outcome])
                .inc_by(0);
        }
        self
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The per-kind media packet counters, resolved once so the packet path
/// does no label lookup (a hash and a lock inside `with_label_values`) per
/// packet. Index with [`MediaCounters::index`]: 0 audio, 1 video.
#[derive(Clone)]
pub struct MediaCounters {
    pub received: [IntCounter; 2],
    pub forwarded: [IntCounter; 2],
    pub late: IntCounter,
    /// Audio packets read too late to forward.
    pub stale_audio: IntCounter,
    /// Padding-only packets from publishers (squeezed out).
    pub padding: IntCounter,
    /// Packets whose payload header did not parse (squeezed out).
    pub malformed: IntCounter,
    pub ssrc_changes: IntCounter,
    pub sequence_jumps: IntCounter,
}

impl MediaCounters {
    pub fn index(is_video: bool) -> usize {
        usize::from(is_video)
    }
}

impl Metrics {
    pub fn media_counters(&self) -> MediaCounters {
        let pair = |v: &IntCounterVec| {
            [
                v.with_label_values(&["audio"]),
                v.with_label_values(&["video"]),
            ]
        };
        MediaCounters {
            received: pair(&self.media_packets_received),
            forwarded: pair(&self.media_packets_forwarded),
            late: self.media_packets_late.clone(),
            stale_audio: self.stale_audio_packets.clone(),
            padding: self.publisher_stream_events.with_label_values(&["padding"]),
            malformed: self
                .publisher_stream_events
                .with_label_values(&["malformed"]),
            ssrc_changes: self
                .publisher_stream_events
                .with_label_values(&["ssrc_change"]),
            sequence_jumps: self
                .publisher_stream_events
                .with_label_values(&["sequence_jump"]),
        }
    }
}

/// Per-worker packet counters, flushed into [`Metrics`] now and then.
#[derive(Debug, Default)]
pub struct PacketCounts {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub send_calls: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl PacketCounts {
    pub fn flush(&mut self, m: &Metrics) {
        m.packets_received.inc_by(self.packets_received);
        m.packets_sent.inc_by(self.packets_sent);
        m.udp_send_calls.inc_by(self.send_calls);
        m.bytes_received.inc_by(self.bytes_received);
        m.bytes_sent.inc_by(self.bytes_sent);
        *self = PacketCounts::default();
    }
}
