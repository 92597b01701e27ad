//! What sending one audio frame costs a subscriber's str0m `Rtc`, driven the
//! way a media worker drives it, by the number of media lines the session
//! has and by whether its downlink is estimated and paced.
//!
//! The server side is the server's own session configuration
//! ([`sfu::worker::core::rtc_config`]); the other side is a plain str0m peer
//! (a WHEP-style client offering `lines` recvonly audio lines), connected in
//! memory on a virtual clock. Each measured step writes one 120 B Opus frame
//! on the next line (every line gets 50 frames a second, as a speaker's
//! audio), then drains the server's `Rtc` as `Participant::poll` does: poll
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

/// Every line gets this many frames a second (Opus at 20 ms).
const FRAMES_PER_LINE_PER_SEC: u32 = 50;

/// A server session and its client, connected in memory.
struct Pair {
    server: Rtc,
    client: Rtc,
    now: Instant,
    server_timeout: Instant,
    client_timeout: Instant,
    mids: Vec<Mid>,
    pt: Pt,
    rtp_time: u64,
    /// Frames the client got (checked before measuring).
    frames_received: u64,
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
    fn new(lines: usize, downlink: Downlink) -> Pair {
        let now = Instant::now();
        let mut server = rtc_config(IceCreds::new(), SessionKind::Whep, downlink).build(now);
        server.add_local_candidate(Candidate::host(SERVER, "udp").expect("host candidate"));
        let mut client = RtcConfig::new().build(now);
        client.add_local_candidate(Candidate::host(CLIENT, "udp").expect("host candidate"));
        let mut api = client.sdp_api();
        let mids: Vec<Mid> = (0..lines)
            .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
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
            pt: Pt::from(0),
            frames_received: 0,
            rtp_time: 0,
            to_server: vec![],
            to_client: vec![],
        };
        pair.connect();
        let writer = pair.server.writer(pair.mids[0]).expect("a sending line");
        pair.pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .expect("Opus negotiated");
        // What is measured must reach the client: a second of frames first.
        let payload = [0x55u8; 120];
        for i in 0..(FRAMES_PER_LINE_PER_SEC as usize * lines) {
            pair.send_frame(i, &payload);
        }
        assert!(
            pair.frames_received >= pair.mids.len() as u64 * 40,
            "the client received {} frames of a second on {} lines",
            pair.frames_received,
            pair.mids.len()
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
        for t in std::mem::take(&mut self.to_client) {
            receive(&mut self.client, self.now, &t);
            let (timeout, _) = drain(&mut self.client, &mut self.to_server);
            self.client_timeout = timeout;
        }
        for t in std::mem::take(&mut self.to_server) {
            receive(&mut self.server, self.now, &t);
            let (timeout, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = timeout;
        }
    }

    fn serve_timeouts(&mut self) {
        if self.client_timeout <= self.now {
            self.client
                .handle_input(Input::Timeout(self.now))
                .expect("timeout");
            let (t, _) = drain(&mut self.client, &mut self.to_server);
            self.client_timeout = t;
        }
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
        self.now += Duration::from_secs(1) / (FRAMES_PER_LINE_PER_SEC * lines);
        self.rtp_time += 960 / u64::from(lines);
        let started = Instant::now();
        // What the client said since the last frame (reports, TWCC).
        for t in std::mem::take(&mut self.to_server) {
            receive(&mut self.server, self.now, &t);
            let (timeout, _) = drain(&mut self.server, &mut self.to_client);
            self.server_timeout = timeout;
        }
        self.serve_server_timeouts();
        let mid = self.mids[i % self.mids.len()];
        let writer = self.server.writer(mid).expect("a sending line");
        let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        writer
            .write(self.pt, self.now, time, payload.to_vec())
            .expect("write");
        let (t, _) = drain(&mut self.server, &mut self.to_client);
        self.server_timeout = t;
        self.serve_server_timeouts();
        let spent = started.elapsed();
        // The client's part, not timed.
        for t in std::mem::take(&mut self.to_client) {
            receive(&mut self.client, self.now, &t);
            let (timeout, seen) = drain(&mut self.client, &mut self.to_server);
            self.client_timeout = timeout;
            self.frames_received += seen.frames;
        }
        if self.client_timeout <= self.now {
            self.client
                .handle_input(Input::Timeout(self.now))
                .expect("timeout");
            let (timeout, seen) = drain(&mut self.client, &mut self.to_server);
            self.client_timeout = timeout;
            self.frames_received += seen.frames;
        }
        spent
    }
}

fn by_lines(c: &mut Criterion) {
    let payload = [0x55u8; 120];
    let mut group = c.benchmark_group("send_one_audio_frame");
    group.throughput(Throughput::Elements(1));
    for (name, downlink) in [
        ("paced", Downlink::Estimated),
        ("unpaced", Downlink::Loopback),
    ] {
        for lines in [1usize, 4, 12, 24, 48] {
            let mut pair = Pair::new(lines, downlink);
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(name, lines), &lines, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += pair.send_frame(i, &payload);
                        i += 1;
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

/// One frame to each of `sessions` subscribers in turn (a speaker's packet
/// fanned out), 4 lines each: what the others' state in the caches costs.
fn by_sessions(c: &mut Criterion) {
    let payload = [0x55u8; 120];
    let mut group = c.benchmark_group("fan_out_one_audio_frame");
    group.throughput(Throughput::Elements(1));
    for sessions in [1usize, 50, 200] {
        let mut pairs: Vec<Pair> = (0..sessions)
            .map(|_| Pair::new(4, Downlink::Estimated))
            .collect();
        let mut i = 0usize;
        group.bench_with_input(
            BenchmarkId::new("paced_4_lines", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let pair = &mut pairs[i % sessions];
                        total += pair.send_frame(i / sessions, &payload);
                        i += 1;
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, by_lines, by_sessions);
criterion_main!(benches);
