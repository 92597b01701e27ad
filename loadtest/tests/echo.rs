//! The generator's measuring checked against a loopback echo that drops and
//! delays what it returns by known amounts: the generator's own synthetic
//! frames, cut into RTP payloads as its publishers send them, go out over
//! UDP (one packet a datagram, behind a small header standing in for the
//! RTP header), come back through the echo, and are measured packet by
//! packet as a receiver measures them. The packet loss, frame loss and
//! one-way delay it reports are the injected ones, and its quality
//! thresholds fail when they should.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::codec::PayloadFormat;
use loadtest::packetize::{vp8, Vp8Numbering, MAX_PAYLOAD};
use loadtest::packets::PacketIn;
use loadtest::peer::Clock;
use loadtest::receive::{Frame, Kind, ReceiveStats, StreamMeta};
use loadtest::report::{merge, Report, Thresholds};
use loadtest::session::SessionResult;
use loadtest::source::{default_layers, MediaSource};
use loadtest::stamp::VideoCodec;
use tokio::net::UdpSocket;

/// How long the generator sends.
const SEND_FOR: Duration = Duration::from_secs(3);

/// What the echo does to the datagrams it returns.
#[derive(Clone, Copy)]
struct Faults {
    /// Drop every n-th datagram (0: none).
    drop_every: u64,
    delay: Duration,
}

/// Return every datagram to its sender after `faults.delay`, except those
/// `faults` drops; counts the drops.
async fn echo(socket: Arc<UdpSocket>, faults: Faults, dropped: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 65_536];
    let mut n = 0u64;
    while let Ok((len, from)) = socket.recv_from(&mut buf).await {
        n += 1;
        if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let data = buf[..len].to_vec();
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(faults.delay).await;
            let _ = socket.send_to(&data, from).await;
        });
    }
}

/// A packet as a datagram: stream, sequence number, RTP time, marker
/// (what the RTP header would say), then the payload.
fn header(stream: u32, seq: u16, rtp_time: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(11 + payload.len());
    d.extend_from_slice(&stream.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&rtp_time.to_be_bytes());
    d.push(u8::from(marker));
    d.extend_from_slice(payload);
    d
}

/// The stream and packet of a datagram made by [`header`].
fn parse(d: &[u8]) -> Option<(u32, PacketIn<'_>)> {
    let stream = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
    let seq = u16::from_be_bytes(d.get(4..6)?.try_into().ok()?);
    let rtp_time = u32::from_be_bytes(d.get(6..10)?.try_into().ok()?);
    let marker = *d.get(10)? == 1;
    let payload = d.get(11..)?;
    Some((
        stream,
        PacketIn {
            seq,
            rtp_time,
            marker,
            payload,
            dd: None,
        },
    ))
}

/// Send one 180p layer and Opus through an echo with `faults`; the report
/// of what came back, and how many datagrams the echo dropped.
async fn measure_through_echo(faults: Faults) -> (Report, u64) {
    let echo_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind echo"));
    let echo_addr: SocketAddr = echo_socket.local_addr().expect("echo address");
    let dropped = Arc::new(AtomicU64::new(0));
    let echo_task = tokio::spawn(echo(echo_socket, faults, dropped.clone()));

    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let origin = Instant::now();
    let clock = Clock::new(origin, Duration::ZERO);
    let receiver = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut stats = ReceiveStats::default();
            let mut buf = vec![0u8; 65_536];
            let end =
                tokio::time::Instant::now() + SEND_FOR + faults.delay + Duration::from_secs(1);
            while let Ok(Ok(len)) = tokio::time::timeout_at(end, socket.recv(&mut buf)).await {
                let now = Instant::now();
                let Some((stream, packet)) = parse(&buf[..len]) else {
                    continue;
                };
                let meta = || {
                    Some(match stream {
                        0 => StreamMeta {
                            kind: Kind::Audio,
                            stream: 0,
                            format: PayloadFormat::Opus,
                        },
                        _ => StreamMeta {
                            kind: Kind::Video,
                            stream: 1,
                            format: PayloadFormat::Vp8,
                        },
                    })
                };
                let now_us = clock.now_us(now);
                if let Some((frame, stamp)) = stats.on_packet(stream, meta, &packet, now_us) {
                    let since = now.saturating_duration_since(origin);
                    let steady = stamp.is_some_and(|s| clock.is_steady(s.sent_us));
                    stats.on_frame(Frame { steady, ..frame }, stamp, since, now_us);
                }
            }
            stats
        })
    };

    let mut source = MediaSource::new(VideoCodec::Vp8, default_layers(1), true, origin, origin);
    let mut numbering = Vp8Numbering::seeded(1);
    let mut seqs = [0u16; 2];
    let mut now = Instant::now();
    while now < origin + SEND_FOR {
        for frame in source.poll(now) {
            let (stream, payloads) = match frame.rid {
                None => (0, vec![frame.data]),
                Some(_) => (1, vp8(&frame.data, &mut numbering, MAX_PAYLOAD)),
            };
            let last = payloads.len() - 1;
            for (i, payload) in payloads.into_iter().enumerate() {
                let seq = &mut seqs[stream];
                *seq = seq.wrapping_add(1);
                let datagram = header(
                    stream as u32,
                    *seq,
                    frame.rtp_time as u32,
                    i == last,
                    &payload,
                );
                socket.send_to(&datagram, echo_addr).await.expect("send");
            }
        }
        let next = source.next_due().unwrap_or(now + Duration::from_millis(20));
        tokio::time::sleep_until(next.into()).await;
        now = Instant::now();
    }

    let stats = receiver.await.expect("receiver");
    echo_task.abort();
    let result = SessionResult {
        connected: true,
        stats,
        error: None,
        signaling_ms: None,
        served_by: None,
    };
    let secs = SEND_FOR.as_secs_f64();
    let report = merge("echo", Default::default(), &[result], 1, secs, secs);
    (report, dropped.load(Ordering::Relaxed))
}

fn thresholds() -> Thresholds {
    Thresholds {
        max_loss_pct: 0.5,
        max_p99_ms: 50.0,
        min_connected: 1.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_loss_and_delay_are_measured_and_fail_the_thresholds() {
    let faults = Faults {
        drop_every: 20,
        delay: Duration::from_millis(100),
    };
    let (mut report, dropped) = measure_through_echo(faults).await;
    let table = report.table();
    // 3 s of 50 audio and 30 video frames a second (a keyframe is three
    // packets, the rest one): ~245 packets sent, 1 in 20 dropped.
    assert!(
        (10..=14).contains(&dropped),
        "echo dropped {dropped}\n{table}"
    );
    // loss % = lost / (lost + received)
    let lost = |pct: f64, received: u64| (pct * received as f64 / (100.0 - pct)).round() as u64;
    // A drop is seen at the next packet or frame of its stream: the last
    // one may not be. No two drops fall in one frame (at most 3 packets).
    let packets = lost(report.packet_loss_pct, report.packets_received);
    assert!(
        packets + 2 >= dropped && packets <= dropped,
        "measured {packets} packets lost of {dropped} dropped\n{table}"
    );
    let frames = lost(report.frame_loss_pct, report.frames_received);
    assert!(
        frames + 2 >= dropped && frames <= dropped,
        "measured {frames} frames lost of {dropped} dropped\n{table}"
    );
    let delay = &report.one_way_delay_ms;
    assert!(delay.p50 >= 100.0 && delay.p50 < 120.0, "{table}");
    assert!(report.audio_delay_ms.p50 >= 100.0, "{table}");
    assert!(report.delta_frame_delay_ms.p50 >= 100.0, "{table}");

    report.judge(thresholds());
    assert!(!report.passed, "{table}");
    let failures = report.failures.join("; ");
    assert!(failures.contains("frame loss"), "{failures}");
    assert!(failures.contains("p99 one-way delay"), "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_echo_measures_no_loss_and_passes() {
    let faults = Faults {
        drop_every: 0,
        delay: Duration::ZERO,
    };
    let (mut report, dropped) = measure_through_echo(faults).await;
    let table = report.table();
    assert_eq!(dropped, 0);
    assert_eq!(report.frame_loss_pct, 0.0, "{table}");
    assert_eq!(report.packet_loss_pct, 0.0, "{table}");
    assert!(report.frames_received >= 200, "{table}");
    assert!(report.packets_received > report.frames_received, "{table}");
    // The first keyframe completes at once (the echo adds nothing).
    assert_eq!(report.video_lines_without_keyframe, 0, "{table}");
    assert!(report.first_keyframe_ms.p50 < 50.0, "{table}");
    assert_eq!(report.unstamped_frames, 0, "{table}");
    // Keyframes (at start, every 3 s) are told from the other frames.
    assert!(report.keyframe_delay_ms.max > 0.0, "{table}");
    report.judge(thresholds());
    assert!(report.passed, "{:?}\n{table}", report.failures);
}
