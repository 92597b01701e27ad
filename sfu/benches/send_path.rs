//! What sending one frame (Opus, or a 720p VP8 frame of ~9 packets) costs a
//! subscriber's str0m `Rtc`, driven the way a media worker drives it, by the
//! number of media lines the session has, by whether its downlink is
//! estimated and paced, and by how many sessions a frame is fanned out to.
//!
//! The server side is the server's own session configuration
//! ([`sfu::worker::core::rtc_config`]); the other side is a plain str0m peer
//! (a WHEP-style client offering `lines` recvonly audio lines), connected in
//! memory on a virtual clock. Each measured step writes one frame on the
//! next line (every line at its media's frame rate), then drains the server's `Rtc` as `Participant::poll` does: poll
//! until `Timeout`, serve timeouts that are due, poll again. The client's
//! feedback (receiver reports, TWCC) is fed back to the server and that
//! costs the server too; what the client spends is not timed.
//!
//! `cargo bench -p sfu --bench send_path`

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sfu::worker::core::{rtc_config, Downlink};
use signaling::SessionKind;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
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
    client: Rtc,
    now: Instant,
    server_timeout: Instant,
    client_timeout: Instant,
    mids: Vec<Mid>,
    media: Media,
    pt: Pt,
    rtp_time: u64,
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
        let mut pair = Pair {
            server,
            client,
            now,
            server_timeout: now,
            client_timeout: now,
            mids,
            media,
            pt: Pt::from(0),
            frames_received: 0,
            datagrams_sent: 0,
            rtp_time: 0,
            to_server: vec![],
            to_client: vec![],
        };
        pair.connect();
        let writer = pair.server.writer(pair.mids[0]).expect("a sending line");
        pair.pt = writer
            .payload_params()
            .find(|p| p.spec().codec == media.codec)
            .map(|p| p.pt())
            .expect("the codec is negotiated");
        // What is measured must reach the client: a second of frames first.
        let payload = frame(media);
        for i in 0..(media.fps as usize * lines) {
            pair.send_frame(i, &payload);
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
    /// (bounded: str0m's pacer asks for one timeout per packet it releases).
    fn serve_server_timeouts(&mut self) {
        for _ in 0..1_000 {
            if self.server_timeout > self.now {
                return;
            }
            self.server
                .handle_input(Input::Timeout(self.now))
                .expect("timeout");
            let (t, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = t;
        }
    }

    /// One frame on line `i`: the server's part, timed.
    fn send_frame(&mut self, i: usize, payload: &[u8]) -> Duration {
        let lines = self.mids.len() as u32;
        self.now += Duration::from_secs(1) / (self.media.fps * lines);
        self.rtp_time += self.media.ticks / u64::from(lines);
        let started = Instant::now();
        // What the client said since the last frame (reports, TWCC).
        self.deliver_to_server();
        self.serve_server_timeouts();
        let mid = self.mids[i % self.mids.len()];
        let writer = self.server.writer(mid).expect("a sending line");
        let time = MediaTime::new(self.rtp_time, self.media.clock);
        writer
            .write(self.pt, self.now, time, payload.to_vec())
            .expect("write");
        let (t, _) = drain(&mut self.server, &mut self.to_client);
        self.server_timeout = t;
        self.serve_server_timeouts();
        let spent = started.elapsed();
        self.datagrams_sent += self.to_client.len() as u64;
        // The client's part, not timed.
        self.deliver_to_client();
        self.serve_client_timeout();
        spent
    }
}

/// A frame of `media`: Opus-sized bytes, or a VP8 inter frame.
fn frame(media: Media) -> Vec<u8> {
    let mut data = vec![0x55u8; media.frame_bytes];
    if media.kind == MediaKind::Video {
        data[0] = 0x11; // VP8 frame tag: an inter frame, shown
    }
    data
}

/// Time `iters` frames, taking turns over `pairs`.
fn time_frames(pairs: &mut [Pair], next: &mut usize, payload: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let n = pairs.len();
        total += pairs[*next % n].send_frame(*next / n, payload);
        *next += 1;
    }
    total
}

const PACED: (&str, Downlink) = ("paced", Downlink::Estimated);
const UNPACED: (&str, Downlink) = ("unpaced", Downlink::Loopback);

/// One session of `lines` lines of `media`, for each downlink.
fn by_lines(
    c: &mut Criterion,
    group_name: &str,
    media: Media,
    downlinks: &[(&str, Downlink)],
    line_counts: &[usize],
) {
    let payload = frame(media);
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
                b.iter_custom(|iters| time_frames(&mut pairs, &mut next, &payload, iters))
            });
        }
    }
    group.finish();
}

fn audio_by_lines(c: &mut Criterion) {
    by_lines(
        c,
        "send_one_audio_frame",
        AUDIO,
        &[PACED, UNPACED],
        &[1, 4, 12, 24, 48],
    );
}

/// Unpaced only: on the virtual clock str0m's estimator falls to ~0.5
/// Mbit/s for a 2.5 Mbit/s stream (its pacer then lets ~2 of a frame's 10
/// packets out per frame), which a real viewer's estimate does not.
fn video_by_lines(c: &mut Criterion) {
    by_lines(
        c,
        "send_one_720p_frame",
        VIDEO_720P,
        &[UNPACED],
        &[1, 4, 24],
    );
}

/// One frame to each of `sessions` subscribers in turn (a speaker's packet
/// fanned out), 4 lines each: what the others' state in the caches costs.
fn audio_by_sessions(c: &mut Criterion) {
    let payload = frame(AUDIO);
    let mut group = c.benchmark_group("fan_out_one_audio_frame");
    group.throughput(Throughput::Elements(1));
    for sessions in [1usize, 50, 200] {
        let mut pairs: Vec<Pair> = (0..sessions)
            .map(|_| Pair::new(4, Downlink::Estimated, AUDIO))
            .collect();
        let mut next = 0;
        group.bench_with_input(
            BenchmarkId::new("paced_4_lines", sessions),
            &sessions,
            |b, _| b.iter_custom(|iters| time_frames(&mut pairs, &mut next, &payload, iters)),
        );
    }
    group.finish();
}

criterion_group!(benches, audio_by_lines, video_by_lines, audio_by_sessions);
criterion_main!(benches);
