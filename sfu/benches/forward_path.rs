//! What forwarding costs the server per packet, measured without sockets:
//!
//! - `rewrite_one_packet`: the header rewriting of one outgoing stream
//!   ([`StreamRewriter`]) alone;
//! - `send_one_audio_packet` / `send_one_720p_frame`: one forwarded packet
//!   (an Opus packet, or the 9 packets of a 720p VP8 frame) written to a
//!   subscriber's str0m `Rtc` the way a worker writes it
//!   ([`OutStreams::write`]: payload type, rewritten header, the payload
//!   shared) and drained, by the number of media lines the session has and
//!   by whether its downlink is estimated;
//! - `fan_out_one_video_packet`: one 1200-byte video packet to K
//!   subscribers in turn (throughput in subscribers: the time per packet per
//!   subscriber).
//!
//! The server side is the server's own session configuration
//! ([`sfu::worker::core::rtc_config`], RTP mode); the other side is a plain
//! str0m peer in frame mode (a WHEP-style client offering `lines` recvonly
//! lines), connected in memory on a virtual clock, which must depacketize
//! what it gets (checked before measuring). Each measured step writes, then
//! drains the server's `Rtc` as `Participant::poll` does: poll until
//! `Timeout`, serve timeouts that are due, poll again. The client's feedback
//! (receiver reports, TWCC) is fed back to the server and that costs the
//! server too; what the client spends is not timed. The virtual clock moves
//! a frame interval per frame, and by the microsecond str0m's pacer asks
//! for between two packets.
//!
//! `cargo bench -p sfu --bench forward_path`

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu::forward::codec::Vp8Ids;
use sfu::forward::rewriter::{Incoming, SourceKey, StreamRewriter};
use sfu::forward::router::{Delivery, DownTrackKey, TrackKey};
use sfu::room::out_streams::{Forwarded, OutStreams, WriteOutcome};
use sfu::worker::core::{rtc_config, Downlink};
use signaling::SessionKind;
use str0m::change::SdpOffer;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{ExtensionValues, Vp8Descriptor};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 6000);

/// What the session sends on each of its lines.
#[derive(Clone, Copy)]
struct Media {
    kind: MediaKind,
    codec: Codec,
    /// Frames a second on every line.
    fps: u32,
    /// RTP clock ticks per frame.
    ticks: u64,
    clock: Frequency,
    frame_bytes: usize,
}

/// Opus at 20 ms, 120 B a frame (a speaker's microphone).
const AUDIO: Media = Media {
    kind: MediaKind::Audio,
    codec: Codec::Opus,
    fps: 50,
    ticks: 960,
    clock: Frequency::FORTY_EIGHT_KHZ,
    frame_bytes: 120,
};

/// Payload bytes per video packet.
const VIDEO_PACKET: usize = 1200;

/// A 720p VP8 delta frame at 2.5 Mbit/s and 30 fps (~10 KB, 9 packets).
const VIDEO_720P: Media = Media {
    kind: MediaKind::Video,
    codec: Codec::Vp8,
    fps: 30,
    ticks: 3000,
    clock: Frequency::NINETY_KHZ,
    frame_bytes: 10_400,
};

/// A server session and its client, connected in memory.
struct Pair {
    server: Rtc,
    /// The server's outgoing streams, as a `Participant` holds them.
    out: OutStreams,
    client: Rtc,
    now: Instant,
    server_timeout: Instant,
    client_timeout: Instant,
    mids: Vec<Mid>,
    media: Media,
    /// The codec's parameters on the server (the publisher's side of the mapping).
    params: PayloadParams,
    rtp_time: u32,
    /// The next sequence number on each line (every line is its own stream).
    seqs: Vec<u64>,
    picture_id: u16,
    /// Frames the client got (checked before measuring).
    frames_received: u64,
    /// Datagrams the server sent (media, RTCP).
    datagrams_sent: u64,
    /// Datagrams in flight to the server and to the client.
    to_server: Vec<Transmit>,
    to_client: Vec<Transmit>,
}

fn receive(rtc: &mut Rtc, now: Instant, t: &Transmit) {
    let Ok(contents) = (&t.contents[..]).try_into() else {
        return;
    };
    let input = Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: t.source,
            destination: t.destination,
            contents,
        },
    );
    rtc.handle_input(input).expect("input is accepted");
}

/// What one drain saw besides transmits.
#[derive(Default)]
struct Drained {
    frames: u64,
}

/// Poll until `Timeout`: transmits go to `out`.
fn drain(rtc: &mut Rtc, out: &mut Vec<Transmit>) -> (Instant, Drained) {
    let mut seen = Drained::default();
    loop {
        match rtc.poll_output().expect("poll_output") {
            Output::Timeout(t) => return (t, seen),
            Output::Transmit(t) => out.push(t),
            Output::Event(Event::MediaData(_)) => seen.frames += 1,
            Output::Event(_) => {}
        }
    }
}

impl Pair {
    fn new(lines: usize, downlink: Downlink, media: Media) -> Pair {
        let now = Instant::now();
        let mut server = rtc_config(IceCreds::new(), SessionKind::Whep, downlink).build(now);
        server.add_local_candidate(Candidate::host(SERVER, "udp").expect("host candidate"));
        let mut client = RtcConfig::new().build(now);
        client.add_local_candidate(Candidate::host(CLIENT, "udp").expect("host candidate"));
        let mut api = client.sdp_api();
        let mids: Vec<Mid> = (0..lines)
            .map(|_| api.add_media(media.kind, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().expect("an offer");
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("offer parses");
        let answer = server
            .sdp_api()
            .accept_offer(offer)
            .expect("offer accepted");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let params = *server
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == media.codec)
            .expect("the codec is configured");
        let mut pair = Pair {
            server,
            out: OutStreams::default(),
            client,
            now,
            server_timeout: now,
            client_timeout: now,
            mids,
            media,
            params,
            frames_received: 0,
            datagrams_sent: 0,
            rtp_time: 0,
            seqs: vec![1; lines],
            picture_id: 0,
            to_server: vec![],
            to_client: vec![],
        };
        pair.connect();
        // What is measured must reach the client: a second of frames first.
        for i in 0..(media.fps as usize * lines) {
            pair.send_frame(i);
        }
        let expected = u64::from(media.fps) * lines as u64 * 8 / 10;
        assert!(
            pair.frames_received >= expected,
            "the client received {} frames of a second on {} lines ({} datagrams sent)",
            pair.frames_received,
            pair.mids.len(),
            pair.datagrams_sent
        );
        pair
    }

    /// Run both sides on the virtual clock until the server is connected.
    fn connect(&mut self) {
        for _ in 0..10_000 {
            let (t, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = t;
            let server_up = self.server.is_connected();
            let (t, _) = drain(&mut self.client, &mut self.to_server);
            self.client_timeout = t;
            if server_up && self.to_client.is_empty() && self.to_server.is_empty() {
                return;
            }
            self.deliver();
            self.now += Duration::from_millis(1);
            self.serve_timeouts();
        }
        panic!("the pair did not connect on the virtual clock");
    }

    /// Hand the datagrams in flight over, as the network would.
    fn deliver(&mut self) {
        self.deliver_to_client();
        self.deliver_to_server();
    }

    fn deliver_to_client(&mut self) {
        for t in std::mem::take(&mut self.to_client) {
            receive(&mut self.client, self.now, &t);
            self.drain_client();
        }
    }

    fn deliver_to_server(&mut self) {
        for t in std::mem::take(&mut self.to_server) {
            receive(&mut self.server, self.now, &t);
            let (timeout, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = timeout;
        }
    }

    /// Drain the client after an input, counting the frames it got.
    fn drain_client(&mut self) {
        let (timeout, seen) = drain(&mut self.client, &mut self.to_server);
        self.client_timeout = timeout;
        self.frames_received += seen.frames;
    }

    fn serve_client_timeout(&mut self) {
        if self.client_timeout <= self.now {
            self.client
                .handle_input(Input::Timeout(self.now))
                .expect("timeout");
            self.drain_client();
        }
    }

    fn serve_timeouts(&mut self) {
        self.serve_client_timeout();
        self.serve_server_timeouts();
    }

    /// The server's due timers, served until the next one is in the future
    /// (bounded: str0m's pacer asks for one timeout per packet it releases,
    /// a microsecond after the last; `Participant::poll` serves those at
    /// once, and so does this, moving the virtual clock that far).
    fn serve_server_timeouts(&mut self) {
        for _ in 0..1_000 {
            if self.server_timeout > self.now + Duration::from_micros(100) {
                return;
            }
            self.now = self.now.max(self.server_timeout);
            self.server
                .handle_input(Input::Timeout(self.now))
                .expect("timeout");
            let (t, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = t;
        }
    }

    /// The packets of the next frame (the publisher's side, not timed).
    fn next_frame(&mut self, line: usize) -> Vec<Forwarded> {
        let mid = self.mids[line];
        let lines = self.mids.len() as u32;
        self.now += Duration::from_secs(1) / (self.media.fps * lines);
        self.rtp_time = self
            .rtp_time
            .wrapping_add((self.media.ticks / u64::from(lines)) as u32);
        self.picture_id = (self.picture_id + 1) % (1 << 15);
        let payloads = packets(self.media, self.picture_id);
        let count = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                self.seqs[line] += 1;
                forwarded(
                    self.media,
                    self.params,
                    mid,
                    self.seqs[line],
                    self.rtp_time,
                    self.now,
                    self.picture_id,
                    i + 1 == count,
                    payload,
                )
            })
            .collect()
    }

    /// Write `packets` on `mid` and drain: the server's part, timed.
    fn send_packets(&mut self, mid: Mid, packets: &[Forwarded]) -> Duration {
        let started = Instant::now();
        // What the client said since the last frame (reports, TWCC).
        self.deliver_to_server();
        self.serve_server_timeouts();
        let delivery = Delivery {
            down: DownTrackKey { subscriber: 2, mid },
            slot: None,
            send: true,
            fresh: false,
            ends_picture: false,
            layers: None,
        };
        for p in packets {
            let outcome = self.out.write(&mut self.server, (mid, None), &delivery, p);
            assert_eq!(outcome, WriteOutcome::Written);
        }
        let (t, _) = drain(&mut self.server, &mut self.to_client);
        self.server_timeout = t;
        self.serve_server_timeouts();
        started.elapsed()
    }

    /// One frame on line `i`: the server's part, timed.
    fn send_frame(&mut self, i: usize) -> Duration {
        let line = i % self.mids.len();
        let packets = self.next_frame(line);
        let spent = self.send_packets(self.mids[line], &packets);
        self.datagrams_sent += self.to_client.len() as u64;
        // The client's part, not timed.
        self.deliver_to_client();
        self.serve_client_timeout();
        spent
    }
}

/// The payloads of one frame of `media`: one Opus-sized packet, or a VP8
/// inter frame split into packets, each with a payload descriptor (15-bit
/// picture id).
fn packets(media: Media, picture_id: u16) -> Vec<Arc<[u8]>> {
    if media.kind == MediaKind::Audio {
        return vec![Arc::from(vec![0x55u8; media.frame_bytes])];
    }
    let mut data = vec![0x55u8; media.frame_bytes];
    data[0] = 0x11; // VP8 frame tag: an inter frame, shown
    data.chunks(VIDEO_PACKET - 4)
        .enumerate()
        .map(|(i, chunk)| {
            let start = if i == 0 { 0x10 } else { 0x00 };
            let [hi, lo] = picture_id.to_be_bytes();
            let mut p = vec![0x80 | start, 0x80, 0x80 | hi, lo];
            p.extend_from_slice(chunk);
            Arc::from(p)
        })
        .collect()
}

/// A publisher's packet as the worker hands it to subscribers' streams.
#[allow(clippy::too_many_arguments)]
fn forwarded(
    media: Media,
    params: PayloadParams,
    mid: Mid,
    seq: u64,
    rtp_time: u32,
    now: Instant,
    picture_id: u16,
    marker: bool,
    payload: Arc<[u8]>,
) -> Forwarded {
    let video = media.kind == MediaKind::Video;
    Forwarded {
        incoming: Incoming {
            source: SourceKey {
                track: TrackKey { publisher: 1, mid },
                layer: None,
                ssrc: 1234,
            },
            seq,
            timestamp: rtp_time,
            clock_rate: media.clock.get(),
            arrival: now,
            sender_clock: None,
            vp8: video.then_some(Vp8Ids {
                picture_id: Some(picture_id),
                picture_id_bits: 15,
                tl0_pic_idx: None,
            }),
        },
        params,
        red: None,
        descriptor: None,
        marker: marker || !video,
        vp8: if video {
            Vp8Descriptor::parse(&payload).ok()
        } else {
            None
        },
        payload,
        ext: ExtensionValues::default(),
        video,
    }
}

/// Time `iters` frames, taking turns over `pairs`.
fn time_frames(pairs: &mut [Pair], next: &mut usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let n = pairs.len();
        total += pairs[*next % n].send_frame(*next / n);
        *next += 1;
    }
    total
}

/// A viewer's downlink (estimated, padding probes paced; media unpaced).
const ESTIMATED: (&str, Downlink) = ("estimated", Downlink::Estimated);
/// A relay to another worker: no estimate, no pacer at all.
const LOOPBACK: (&str, Downlink) = ("loopback", Downlink::Loopback);

/// One session of `lines` lines of `media`, for each downlink.
fn by_lines(
    c: &mut Criterion,
    group_name: &str,
    media: Media,
    downlinks: &[(&str, Downlink)],
    line_counts: &[usize],
) {
    let mut group = c.benchmark_group(group_name);
    for &(name, downlink) in downlinks {
        for &lines in line_counts {
            let mut pairs = [Pair::new(lines, downlink, media)];
            // Throughput in datagrams: what the warm-up second sent per frame.
            let frames = u64::from(media.fps) * lines as u64;
            let per_frame = (pairs[0].datagrams_sent + frames / 2) / frames;
            group.throughput(Throughput::Elements(per_frame.max(1)));
            let mut next = 0;
            group.bench_with_input(BenchmarkId::new(name, lines), &lines, |b, _| {
                b.iter_custom(|iters| time_frames(&mut pairs, &mut next, iters))
            });
        }
    }
    group.finish();
}

/// The stream rewriter alone: a steady stream, one packet in ten dropped
/// on purpose (a temporal layer), a layer switch every 300 packets.
fn rewrite(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("rewrite_one_packet");
    group.throughput(Throughput::Elements(1));
    let mut rw = StreamRewriter::default();
    let mut seq = 0u64;
    let mut now = t0;
    group.bench_function("vp8_with_skips_and_switches", |b| {
        b.iter(|| {
            seq += 1;
            now += Duration::from_micros(300);
            let layer = (seq / 300) % 2;
            let p = Incoming {
                source: SourceKey {
                    track: TrackKey {
                        publisher: 1,
                        mid: Mid::from("0"),
                    },
                    layer: None,
                    ssrc: layer as u32,
                },
                seq: seq + layer * 10_000,
                timestamp: (seq * 300) as u32,
                clock_rate: 90_000,
                arrival: now,
                sender_clock: None,
                vp8: Some(Vp8Ids {
                    picture_id: Some((seq / 9 % 32_768) as u16),
                    picture_id_bits: 15,
                    tl0_pic_idx: Some((seq / 18) as u8),
                }),
            };
            if seq.is_multiple_of(10) {
                rw.skip(&p);
                None
            } else {
                criterion::black_box(rw.forward(&p, seq % 300 == 1))
            }
        })
    });
    group.finish();
}

fn audio_by_lines(c: &mut Criterion) {
    by_lines(
        c,
        "send_one_audio_packet",
        AUDIO,
        &[ESTIMATED, LOOPBACK],
        &[1, 4, 12, 24, 48],
    );
}

fn video_by_lines(c: &mut Criterion) {
    by_lines(
        c,
        "send_one_720p_frame",
        VIDEO_720P,
        &[ESTIMATED, LOOPBACK],
        &[1, 4, 24],
    );
}

/// One 1200-byte video packet written to each of `sessions` subscribers
/// (one line each, estimated downlink), then the next packet: what a
/// broadcast's fan-out costs per packet per subscriber.
fn video_packet_by_sessions(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_one_video_packet");
    let one_packet = Media {
        frame_bytes: VIDEO_PACKET - 4,
        ..VIDEO_720P
    };
    for sessions in [1usize, 10, 100, 500] {
        let mut pairs: Vec<Pair> = (0..sessions)
            .map(|_| Pair::new(1, Downlink::Estimated, one_packet))
            .collect();
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(
            BenchmarkId::new("estimated", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for pair in pairs.iter_mut() {
                            total += pair.send_frame(0);
                        }
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    rewrite,
    audio_by_lines,
    video_by_lines,
    video_packet_by_sessions
);
criterion_main!(benches);
