//! One virtual participant: a str0m `Rtc` in RTP mode with its own UDP
//! socket, driven by a tokio task. A publisher writes its `MediaSource`'s
//! frames as RTP packets (`publish`) and answers keyframe requests; a
//! receiver reads every RTP packet it gets into its own `ReceiveStats`
//! (packets, and frames put together from them) without depacketizing.
//! Receiving is batched: after each wake-up every datagram already queued
//! on the socket is fed to str0m (its packet taken at once: RTP mode holds
//! one) before waiting again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::room::dd_extension::{self, DescriptorBytes};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::{Codec, CodecConfig};
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::codec::PayloadFormat;
use crate::packets::PacketIn;
use crate::publish::RtpPublisher;
use crate::receive::{Frame, Kind, ReceiveStats, StreamMeta};
use crate::source::MediaSource;

/// Counters every peer bumps, read by the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// The largest room offer sent and answer received (SDP bytes).
    pub largest_offer: AtomicU64,
    pub largest_answer: AtomicU64,
}

impl Live {
    /// A room offer of `bytes` was sent.
    pub fn offered(&self, bytes: usize) {
        self.largest_offer
            .fetch_max(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// A room answer of `bytes` arrived.
    pub fn answered(&self, bytes: usize) {
        self.largest_answer
            .fetch_max(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
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
    /// Indices in `mids` of the receiving lines.
    recv: Vec<usize>,
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

/// The msid track id of the line sending `kind` (LiveKit's `cid`).
pub fn send_track_id(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "microphone",
        MediaKind::Video => "camera",
    }
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
    // Every peer can send and receive the AV1 dependency descriptor (the
    // server's own str0m glue: its bytes as a user extension value).
    let mut config = dd_extension::enable(RtcConfig::new().set_rtp_mode(true));
    if let Media::Publish(src) = media {
        if src.has_video() {
            prefer(&mut config, crate::publish::codec_of(src.codec()));
        }
    }
    let mut rtc = config.build(started);
    let candidate = Candidate::host(local, "udp").map_err(std::io::Error::other)?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let mut mids = vec![];
    let mut recv = vec![];
    let mut add = |api: &mut str0m::change::SdpApi, kind, dir, sim| {
        if dir == Direction::RecvOnly {
            recv.push(mids.len());
        }
        // A sent line's msid names its track (LiveKit's `cid`).
        let track = (dir == Direction::SendOnly).then(|| send_track_id(kind).to_string());
        let stream = track.as_ref().map(|_| "loadtest".to_string());
        mids.push((api.add_media(kind, dir, stream, track, sim), kind));
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
        recv,
    })
}

/// Offer `codec` first, the others after in their order (as a browser
/// preferring its camera's codec does): the server answers in the
/// offerer's order, and a VP9 publisher's answer then leads with VP9.
fn prefer(config: &mut RtcConfig, codec: Codec) {
    let mut params = config.codec_config().params().to_vec();
    params.sort_by_key(|p| p.spec().codec != codec);
    *config.codec_config() = CodecConfig::new_from_payload_params(params);
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
        let mut stats = ReceiveStats::default();
        for &i in &self.recv {
            if self.mids[i].1 == MediaKind::Video {
                stats.video_line_offered(i, Duration::ZERO);
            }
        }
        Ok(Peer {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            started: self.started,
            media,
            publisher: RtpPublisher::default(),
            stats,
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
    publisher: RtpPublisher,
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

/// Most datagrams taken from the socket per wake-up.
const RECV_BATCH: usize = 32;
/// Bytes of one datagram's place in the receive buffer.
const DATAGRAM: usize = 2048;
/// The buffer [`Peer::turn`] reads a batch of datagrams into.
pub const RECV_BUFFER: usize = RECV_BATCH * DATAGRAM;

impl Peer {
    /// Run until `cancel`, then close the connection. Returns what it measured.
    pub async fn run(
        mut self,
        clock: Clock,
        live: Arc<Live>,
        cancel: CancellationToken,
        ending: Ending,
    ) -> Peer {
        let mut buf = vec![0u8; RECV_BUFFER];
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
        let _ = self.drain_output(clock, live);
    }

    /// One turn: write due media, send output, then wait for a datagram
    /// (and take all that are queued), a timer, or `extra`. `buf` holds
    /// [`RECV_BUFFER`] bytes.
    pub async fn turn<T>(
        &mut self,
        buf: &mut [u8],
        clock: Clock,
        live: &Live,
        extra: impl std::future::Future<Output = T>,
    ) -> Turn<T> {
        let now = Instant::now();
        self.write_due(now);
        let Some(timeout) = self.drain_output(clock, live) else {
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
            r = self.socket.recv_from(&mut buf[..DATAGRAM]) => {
                if let Ok((n, source)) = r {
                    // Read everything already queued first, each datagram
                    // stamped as it is read, then hand them to str0m: the
                    // work on one does not delay the next one's arrival
                    // time (the sender's bandwidth estimate reads those
                    // from our feedback).
                    let mut got = [(n, source, Instant::now()); RECV_BATCH];
                    let mut count = 1;
                    let slots = buf.chunks_exact_mut(DATAGRAM).take(RECV_BATCH);
                    for (i, slot) in slots.enumerate().skip(1) {
                        match self.socket.try_recv_from(slot) {
                            Ok((n, source)) => got[i] = (n, source, Instant::now()),
                            Err(_) => break,
                        }
                        count += 1;
                    }
                    for (slot, (n, source, at)) in buf.chunks_exact(DATAGRAM).zip(&got[..count]) {
                        self.receive(&slot[..*n], *source, *at, clock, live);
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
    /// With nothing to add (the server wants an offer to place a track on
    /// a line it has), the offer restarts ICE: str0m makes no offer without
    /// a change, and a restart keeps the transport.
    pub fn reoffer(&mut self, add: &[MediaKind]) -> Result<(String, Vec<Mid>), String> {
        let mut api = self.rtc.sdp_api();
        if add.is_empty() {
            api.ice_restart(true);
        }
        let new: Vec<(Mid, MediaKind)> = add
            .iter()
            .map(|k| (api.add_media(*k, Direction::RecvOnly, None, None, None), *k))
            .collect();
        let (offer, pending) = api.apply().ok_or("nothing to re-offer")?;
        self.pending = Some(pending);
        let at = self.started.elapsed();
        for (mid, kind) in &new {
            if *kind == MediaKind::Video {
                self.stats.video_line_offered(self.mids.len(), at);
            }
            self.mids.push((*mid, *kind));
        }
        Ok((
            offer.to_sdp_string(),
            new.into_iter().map(|(m, _)| m).collect(),
        ))
    }

    /// A candidate the server trickled (`a=candidate` line without `a=`).
    pub fn add_remote_candidate(&mut self, line: &str) -> Result<(), String> {
        let c = Candidate::from_sdp_string(line).map_err(|e| format!("candidate: {e}"))?;
        self.rtc.add_remote_candidate(c);
        Ok(())
    }

    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("an answer without an offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("answer: {e}"))
    }

    /// Feed one datagram to str0m and take what it produced (in RTP mode
    /// str0m holds one received packet until it is polled).
    fn receive(&mut self, data: &[u8], source: SocketAddr, at: Instant, clock: Clock, live: &Live) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            at,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_ok() {
            self.take_packet(at, clock, live);
        }
    }

    /// Poll until the packet the last datagram produced (if any) is taken;
    /// the rest of the output waits for the end of the batch.
    fn take_packet(&mut self, at: Instant, clock: Clock, live: &Live) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    self.on_packet(&p, at, clock, live);
                    return;
                }
                Ok(Output::Event(e)) => self.on_event(e, clock, live),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
        }
    }

    /// Send what str0m wants sent, handle its events; the next timeout, or
    /// None when the connection is dead.
    fn drain_output(&mut self, clock: Clock, live: &Live) -> Option<Instant> {
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
            Event::RtpPacket(p) => self.on_packet(&p, Instant::now(), clock, live),
            Event::KeyframeRequest(req) => {
                if let Media::Publish(src) = &mut self.media {
                    src.request_keyframe(req.rid.as_deref());
                }
            }
            _ => {}
        }
    }

    /// Measure one RTP packet read from the socket `now`, and the frame
    /// it completes.
    fn on_packet(&mut self, p: &RtpPacket, now: Instant, clock: Clock, live: &Live) {
        let now_us = clock.now_us(now);
        let Peer {
            rtc, mids, stats, ..
        } = self;
        let ssrc = p.header.ssrc;
        // The first packet of a stream: its media line and codec.
        let meta = || {
            let mid = rtc.direct_api().stream_rx(&ssrc)?.mid();
            let stream = mids.iter().position(|(m, _)| *m == mid)?;
            let pt = p.header.payload_type;
            let codec = rtc.codec_config().find(|c| c.pt() == pt)?.spec().codec;
            let (kind, format) = match codec {
                Codec::Opus => (Kind::Audio, PayloadFormat::Opus),
                Codec::Vp8 => (Kind::Video, PayloadFormat::Vp8),
                Codec::H264 => (Kind::Video, PayloadFormat::H264),
                Codec::Vp9 => (Kind::Video, PayloadFormat::Vp9),
                Codec::Av1 => (Kind::Video, PayloadFormat::Av1),
                _ => return None,
            };
            Some(StreamMeta {
                kind,
                stream,
                format,
            })
        };
        let packet = PacketIn {
            seq: p.header.sequence_number,
            rtp_time: p.header.timestamp,
            marker: p.header.marker,
            payload: &p.payload,
            dd: p
                .header
                .ext_vals
                .user_values
                .get::<DescriptorBytes>()
                .map(|DescriptorBytes(b)| &b[..]),
        };
        let Some((frame, stamp)) = stats.on_packet(*ssrc, meta, &packet, now_us) else {
            return;
        };
        let steady = stamp.is_some_and(|s| clock.is_steady(s.sent_us));
        let len = frame.len;
        let since_start = now.saturating_duration_since(self.started);
        self.stats
            .on_frame(Frame { steady, ..frame }, stamp, since_start, now_us);
        live.frames.fetch_add(1, Ordering::Relaxed);
        live.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Write every frame the source has due, as RTP.
    fn write_due(&mut self, now: Instant) {
        let Media::Publish(src) = &mut self.media else {
            return;
        };
        if !self.connected {
            return;
        }
        let codec = src.codec();
        for frame in src.poll(now) {
            self.publisher
                .write(&mut self.rtc, &self.mids, codec, frame, now);
        }
    }
}
