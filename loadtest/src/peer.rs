//! One virtual participant: a str0m `Rtc` with its own UDP socket, driven
//! by a tokio task. A publisher writes its `MediaSource`'s frames and
//! answers keyframe requests; a receiver stamps every frame it gets into
//! its own `ReceiveStats`. Receiving is batched: after each wake-up every
//! datagram already queued on the socket is fed to str0m before output is
//! polled again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::receive::{Frame, ReceiveStats};
use crate::source::MediaSource;
use crate::stamp::{audio_stamp, video_stamp, VideoCodec};

/// Counters every peer bumps, read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
}

/// The generator's clock: stamps are µs since its origin. Frames sent from
/// `steady_from` on are also counted apart, as the run after its joins.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub origin: Instant,
    steady_from_us: u64,
}

impl Clock {
    /// A clock whose steady window starts `steady_from` after its origin.
    pub fn new(origin: Instant, steady_from: Duration) -> Clock {
        Clock {
            origin,
            steady_from_us: u64::try_from(steady_from.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// A clock without a steady window (sessions come and go throughout).
    pub fn without_steady_window(origin: Instant) -> Clock {
        Clock {
            origin,
            steady_from_us: u64::MAX,
        }
    }

    pub fn now_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_micros() as u64
    }

    /// Where the steady window starts, in seconds of the run (None: the
    /// clock has none).
    pub fn steady_from_secs(&self) -> Option<f64> {
        (self.steady_from_us != u64::MAX).then(|| self.steady_from_us as f64 / 1e6)
    }

    /// A frame sent at `sent_us` belongs to the steady window.
    pub fn is_steady(&self, sent_us: u64) -> bool {
        sent_us >= self.steady_from_us
    }
}

/// A peer that has made its offer and waits for the answer.
pub struct Offered {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: SdpPendingOffer,
    pub offer: String,
    started: Instant,
    mids: Vec<(Mid, MediaKind)>,
}

/// How a session ends when the scenario stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// DTLS close, DELETE of the resource, `leave` on the room socket.
    #[default]
    Graceful,
    /// Vanish without a word (a crashed client or a lost network): the
    /// server must notice by itself.
    Abrupt,
}

/// What a peer sends and receives.
pub enum Media {
    Publish(MediaSource),
    /// Receive audio and/or video on new recvonly lines.
    Receive {
        audio: bool,
        video: bool,
    },
}

/// Make the offer for `media` on a fresh socket bound to `bind`.
pub async fn offer(bind: std::net::IpAddr, media: &Media) -> std::io::Result<Offered> {
    offer_with(bind, media, &[]).await
}

/// The offer for `media` plus one recvonly line per entry of `receive`.
pub async fn offer_with(
    bind: std::net::IpAddr,
    media: &Media,
    receive: &[MediaKind],
) -> std::io::Result<Offered> {
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
    let local = socket.local_addr()?;
    let started = Instant::now();
    let mut rtc = RtcConfig::new().build(started);
    let candidate = Candidate::host(local, "udp").map_err(std::io::Error::other)?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let mut mids = vec![];
    let mut add = |api: &mut str0m::change::SdpApi, kind, dir, sim| {
        mids.push((api.add_media(kind, dir, None, None, sim), kind));
    };
    match media {
        Media::Publish(src) => {
            add(&mut api, MediaKind::Audio, Direction::SendOnly, None);
            if src.has_video() {
                let simulcast = src.is_simulcast().then(|| {
                    let mut s = Simulcast::new();
                    for rid in src.rids() {
                        s.add_send_layer(SimulcastLayer::new(rid));
                    }
                    s
                });
                add(&mut api, MediaKind::Video, Direction::SendOnly, simulcast);
            }
        }
        Media::Receive { audio, video } => {
            if *audio {
                add(&mut api, MediaKind::Audio, Direction::RecvOnly, None);
            }
            if *video {
                add(&mut api, MediaKind::Video, Direction::RecvOnly, None);
            }
        }
    }
    for kind in receive {
        add(&mut api, *kind, Direction::RecvOnly, None);
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| std::io::Error::other("nothing to offer"))?;
    Ok(Offered {
        rtc,
        socket,
        local,
        pending,
        offer: offer.to_sdp_string(),
        started,
        mids,
    })
}

impl Offered {
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The offer's media lines in order.
    pub fn mids(&self) -> &[(Mid, MediaKind)] {
        &self.mids
    }

    /// Apply the server's answer; the peer is then ready to run.
    pub fn accept(mut self, answer_sdp: &str, media: Media) -> Result<Peer, String> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| format!("answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| format!("answer: {e}"))?;
        Ok(Peer {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            started: self.started,
            media,
            stats: ReceiveStats::default(),
            connected: false,
            mids: self.mids,
            pending: None,
        })
    }
}

pub struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    started: Instant,
    media: Media,
    pub stats: ReceiveStats,
    pub connected: bool,
    /// Media lines in the order they were added.
    mids: Vec<(Mid, MediaKind)>,
    /// A re-offer waiting for its answer.
    pending: Option<SdpPendingOffer>,
}

/// How one turn of the peer's loop ended.
pub enum Turn<T> {
    /// Socket input or a timer was handled; go on.
    Io,
    /// The extra future completed.
    Extra(T),
    /// The connection is dead.
    Dead,
}

/// Most datagrams taken from the socket per wake-up before polling output.
const RECV_BATCH: usize = 64;

impl Peer {
    /// Run until `cancel`, then close the connection. Returns what it measured.
    pub async fn run(
        mut self,
        clock: Clock,
        live: Arc<Live>,
        cancel: CancellationToken,
        ending: Ending,
    ) -> Peer {
        let mut buf = vec![0u8; 2048];
        // Until cancelled (Extra) or the connection dies.
        while let Turn::Io = self.turn(&mut buf, clock, &live, cancel.cancelled()).await {}
        if ending == Ending::Graceful {
            self.close(clock, &live).await;
        }
        self
    }

    /// Close the connection and send what that produces.
    pub async fn close(&mut self, clock: Clock, live: &Live) {
        self.rtc.disconnect();
        let _ = self.drain_output(clock, live).await;
    }

    /// One turn: write due media, send output, then wait for a datagram
    /// (and take all that are queued), a timer, or `extra`.
    pub async fn turn<T>(
        &mut self,
        buf: &mut [u8],
        clock: Clock,
        live: &Live,
        extra: impl std::future::Future<Output = T>,
    ) -> Turn<T> {
        let now = Instant::now();
        self.write_due(now);
        let Some(timeout) = self.drain_output(clock, live).await else {
            return Turn::Dead;
        };
        let next_media = match &self.media {
            Media::Publish(src) if self.connected => src.next_due(),
            _ => None,
        };
        let wake = next_media.map_or(timeout, |m| m.min(timeout));
        let wake = wake.max(now + Duration::from_micros(200));
        tokio::select! {
            t = extra => Turn::Extra(t),
            r = self.socket.recv_from(buf) => {
                if let Ok((n, source)) = r {
                    self.receive(&buf[..n], source);
                    // Batch: everything already queued, without waiting.
                    for _ in 0..RECV_BATCH {
                        match self.socket.try_recv_from(buf) {
                            Ok((n, source)) => self.receive(&buf[..n], source),
                            Err(_) => break,
                        }
                    }
                }
                Turn::Io
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                Turn::Io
            }
        }
    }

    /// Re-offer with one new recvonly line per entry of `add`; returns the
    /// offer and the new lines' mids. The answer goes to `accept_answer`.
    pub fn reoffer(&mut self, add: &[MediaKind]) -> Result<(String, Vec<Mid>), String> {
        let mut api = self.rtc.sdp_api();
        let new: Vec<(Mid, MediaKind)> = add
            .iter()
            .map(|k| (api.add_media(*k, Direction::RecvOnly, None, None, None), *k))
            .collect();
        let (offer, pending) = api.apply().ok_or("nothing to re-offer")?;
        self.pending = Some(pending);
        self.mids.extend(new.iter().copied());
        Ok((
            offer.to_sdp_string(),
            new.into_iter().map(|(m, _)| m).collect(),
        ))
    }

    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("an answer without an offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("answer: {e}"))
    }

    fn receive(&mut self, data: &[u8], source: SocketAddr) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        let _ = self.rtc.handle_input(input);
    }

    /// Send what str0m wants sent, handle its events; the next timeout, or
    /// None when the connection is dead.
    async fn drain_output(&mut self, clock: Clock, live: &Live) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return self.rtc.is_alive().then_some(t),
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer drops the datagram, like a congested link.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e, clock, live),
                Err(_) => return None,
            }
        }
    }

    fn on_event(&mut self, e: Event, clock: Clock, live: &Live) {
        match e {
            Event::Connected => {
                self.connected = true;
                live.connected.fetch_add(1, Ordering::Relaxed);
            }
            Event::MediaAdded(m) if !self.mids.iter().any(|(mid, _)| *mid == m.mid) => {
                self.mids.push((m.mid, m.kind));
            }
            Event::MediaData(d) => {
                let now = Instant::now();
                let codec = d.params.spec().codec;
                let stream = self.mids.iter().position(|(m, _)| *m == d.mid).unwrap_or(0);
                let (frame, stamp) = if codec.is_video() {
                    let vc = if codec == Codec::H264 {
                        VideoCodec::H264
                    } else {
                        VideoCodec::Vp8
                    };
                    let frame = Frame::video(stream, d.data.len(), d.is_keyframe());
                    (frame, video_stamp(vc, &d.data))
                } else {
                    (Frame::audio(stream, d.data.len()), audio_stamp(&d.data))
                };
                let steady = stamp.is_some_and(|s| clock.is_steady(s.sent_us));
                self.stats.on_frame(
                    Frame { steady, ..frame },
                    stamp,
                    now.saturating_duration_since(self.started),
                    clock.now_us(now),
                );
                live.frames.fetch_add(1, Ordering::Relaxed);
                live.bytes.fetch_add(d.data.len() as u64, Ordering::Relaxed);
            }
            Event::KeyframeRequest(req) => {
                if let Media::Publish(src) = &mut self.media {
                    src.request_keyframe(req.rid.as_deref());
                }
            }
            _ => {}
        }
    }

    /// Write every frame the source has due.
    fn write_due(&mut self, now: Instant) {
        let Media::Publish(src) = &mut self.media else {
            return;
        };
        if !self.connected {
            return;
        }
        let codec = match src.codec() {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
        };
        for frame in src.poll(now) {
            let (kind, want) = match frame.rid {
                None => (MediaKind::Audio, Codec::Opus),
                Some(_) => (MediaKind::Video, codec),
            };
            let Some(mid) = self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m) else {
                continue;
            };
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == want)
                .map(|p| p.pt())
            else {
                continue;
            };
            let time = match kind {
                MediaKind::Audio => MediaTime::new(frame.rtp_time, Frequency::FORTY_EIGHT_KHZ),
                MediaKind::Video => MediaTime::from_90khz(frame.rtp_time),
            };
            let writer = match frame.rid {
                Some(rid) if !rid.is_empty() => writer.rid(rid.into()),
                _ => writer,
            };
            let _ = writer.write(pt, now, time, frame.data);
        }
    }
}
