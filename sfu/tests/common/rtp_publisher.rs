//! A WHIP test publisher that runs str0m in RTP mode, so the test chooses
//! every packet's sequence number, timestamp, SSRC and payload: VP8 frames
//! are packetized here (RFC 7741 payload descriptor: X=1, I=1 with a 15-bit
//! picture id, S=1 on a frame's first packet, PID 0; the marker on its last
//! packet), and a test can add what a broken or hostile encoder sends
//! between them. Keyframe requests from the server are answered with a
//! keyframe next.
//!
//! Also: [`Watched`], a peer running on its own thread that publishes live
//! counters (frames decoded by a viewer, frames sent by a publisher), so a
//! test can measure what arrived in a window while the peers keep running.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::{vp8_frame, TestPeer, TestResult};

/// One frame at 30 fps.
pub const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
/// VP8 frame bytes per packet (the descriptor adds 4).
const MAX_CHUNK: usize = 1100;
/// The local-only media line hand-made repairs are written on.
const RTX_WRITER_MID: &str = "rtx";
/// A source this far behind its schedule skips frames instead of sending
/// them late (as a real capture pipeline does).
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// The RTP payloads of one VP8 frame: a 4-byte descriptor (X=1, S on the
/// first packet, PID 0, I=1 with M=1: 15-bit picture id) before each chunk.
pub fn vp8_packets(frame: &[u8], picture_id: u16) -> Vec<Vec<u8>> {
    frame
        .chunks(MAX_CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let mut p = Vec::with_capacity(chunk.len() + 4);
            p.push(if i == 0 { 0x90 } else { 0x80 });
            p.push(0x80);
            p.push(0x80 | ((picture_id >> 8) as u8 & 0x7f));
            p.push(picture_id as u8);
            p.extend_from_slice(chunk);
            p
        })
        .collect()
}

/// A WHIP publisher (one VP8 media line) in str0m's RTP mode.
pub struct RtpPublisher {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// Where the ICE pair sends: the server's media address.
    remote: Option<SocketAddr>,
    pending: Option<SdpPendingOffer>,
    pub mid: Mid,
    pt: Option<Pt>,
    /// The main stream's SSRC (and its RTX SSRC), once connected.
    ssrc: Option<Ssrc>,
    rtx: Option<Ssrc>,
    /// A send stream on the RTX SSRC for hand-made repairs (see [`Self::send_rtx`]).
    rtx_writer: Option<Ssrc>,
    rtx_seq: u64,
    started: Instant,
    next_frame: Option<Instant>,
    /// Sequence number of the next packet (extended; jumps are the test's to make).
    pub seq: u64,
    /// Added to every RTP timestamp (a timestamp jump is a change of it).
    pub ts_offset: u32,
    /// RTP timestamp of the last frame sent.
    pub last_ts: u32,
    picture_id: u16,
    keyframe_wanted: bool,
    pub frames_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    /// Packets written besides the frames' own (malformed, empty, repairs).
    pub extra_packets: u64,
    /// Raw datagrams sent past str0m.
    pub raw_datagrams: u64,
    /// Keep sent packets for NACKs (str0m resends them on the RTX SSRC,
    /// numbered from its own counter, so a test writing its own repairs
    /// there turns this off).
    pub resend: bool,
}

impl RtpPublisher {
    /// A publisher and its WHIP offer.
    pub fn new() -> (RtpPublisher, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let local = socket.local_addr().expect("local addr");
        let now = Instant::now();
        let mut rtc = RtcConfig::new().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let publisher = RtpPublisher {
            rtc,
            socket,
            local,
            remote: None,
            pending: Some(pending),
            mid,
            pt: None,
            ssrc: None,
            rtx: None,
            rtx_writer: None,
            rtx_seq: 10_000,
            started: now,
            next_frame: None,
            seq: 1_000,
            ts_offset: 90_000,
            last_ts: 0,
            picture_id: 0,
            keyframe_wanted: true,
            frames_sent: 0,
            keyframes_sent: 0,
            keyframe_requests: 0,
            extra_packets: 0,
            raw_datagrams: 0,
            resend: true,
        };
        (publisher, offer.to_sdp_string())
    }

    pub fn accept_answer(&mut self, sdp: &str) -> TestResult {
        let answer = SdpAnswer::from_sdp_string(sdp)?;
        let pending = self.pending.take().ok_or("no pending offer")?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    /// The main stream's SSRC, once connected.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.ssrc
    }

    /// The negotiated id of the MID header extension.
    pub fn mid_extension_id(&self) -> Option<u8> {
        self.rtc
            .media(self.mid)?
            .remote_extmap()
            .id_of(Extension::RtpMid)
    }

    /// The VP8 payload type, once connected.
    pub fn pt(&self) -> Option<Pt> {
        self.pt
    }

    /// Connected, with the payload type and stream known.
    fn ready(&mut self) -> bool {
        if !self.rtc.is_connected() {
            return false;
        }
        if self.ssrc.is_none() {
            if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(self.mid, None) {
                self.ssrc = Some(tx.ssrc());
                self.rtx = tx.rtx();
            }
        }
        if self.pt.is_none() {
            let remote = self
                .rtc
                .media(self.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            self.pt = self
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == Codec::Vp8 && remote.contains(&p.pt()))
                .map(|p| p.pt());
        }
        self.pt.is_some() && self.ssrc.is_some()
    }

    /// RTP time (90 kHz) of a frame captured at `at`.
    fn rtp_time(&self, at: Instant) -> u32 {
        let ticks = at.saturating_duration_since(self.started).as_micros() * 9 / 100;
        (ticks as u32).wrapping_add(self.ts_offset)
    }

    /// Write one packet on the main stream with the next sequence number.
    pub fn write(&mut self, payload: Vec<u8>, marker: bool, ts: u32) -> bool {
        let (Some(pt), Some(ssrc)) = (self.pt, self.ssrc) else {
            return false;
        };
        let seq = self.seq;
        self.seq += 1;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx(&ssrc) else {
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, Instant::now(), payload)
                .marker(marker)
                .nackable(self.resend),
        );
        true
    }

    /// A packet besides the frames (malformed, empty...) with the last
    /// frame's timestamp and the next sequence number.
    pub fn send_extra(&mut self, payload: Vec<u8>) {
        if self.write(payload, false, self.last_ts) {
            self.extra_packets += 1;
        }
    }

    fn send_frame(&mut self, due: Instant) {
        let key = self.keyframe_wanted;
        let data = vp8_frame(key, self.frames_sent);
        let ts = self.rtp_time(due);
        let packets = vp8_packets(&data, self.picture_id);
        let last = packets.len() - 1;
        for (i, payload) in packets.into_iter().enumerate() {
            self.write(payload, i == last, ts);
        }
        self.picture_id = (self.picture_id + 1) % (1 << 15);
        self.keyframe_wanted = false;
        self.last_ts = ts;
        self.frames_sent += 1;
        if key {
            self.keyframes_sent += 1;
        }
    }

    /// Send a keyframe next.
    pub fn want_keyframe(&mut self) {
        self.keyframe_wanted = true;
    }

    /// Switch the media line to a new send stream with a new SSRC (and RTX
    /// SSRC), as a restarted encoder does: a new sequence number series and
    /// timeline, starting with a keyframe. Packets of the old stream still
    /// queued are not sent.
    ///
    /// The old stream is removed and a new one declared rather than
    /// `DirectApi::reset_stream_tx` used: str0m 0.25 keeps a reset stream
    /// under its old SSRC, so `stream_tx(new)` misses it and feedback for the
    /// new SSRC (keyframe requests, NACKs) is dropped.
    pub fn change_ssrc(&mut self, first_seq: u64) -> Option<Ssrc> {
        self.remove_rtx_writer();
        let old = self.ssrc?;
        let mut api = self.rtc.direct_api();
        let (ssrc, rtx) = (api.new_ssrc(), api.new_ssrc());
        api.remove_stream_tx(old);
        api.declare_stream_tx(ssrc, Some(rtx), self.mid, None);
        self.ssrc = Some(ssrc);
        self.rtx = Some(rtx);
        self.seq = first_seq;
        self.ts_offset = self.ts_offset.wrapping_add(0x1234_5678);
        self.keyframe_wanted = true;
        self.ssrc
    }

    /// A hand-made RTX packet (RFC 4588) on the main stream's RTX SSRC: the
    /// original sequence number `osn` (None: no OSN at all), then `payload`.
    /// str0m only resends what it sent, so this writes through a second
    /// send stream declared on the RTX SSRC, with the main payload type
    /// (str0m's receiver takes any packet on a stream's RTX SSRC for a
    /// repair, whatever its payload type). The server knows the RTX SSRC
    /// from the offer's `a=ssrc-group:FID`; after [`Self::change_ssrc`] it
    /// does not, so call this before. The repairs are numbered from 10000 on
    /// the RTX SSRC: turn [`Self::resend`] off, or str0m's own resends there
    /// move the receiver's window away from them.
    pub fn send_rtx(&mut self, osn: Option<u16>, payload: &[u8]) -> bool {
        let (Some(pt), Some(rtx)) = (self.pt, self.rtx) else {
            return false;
        };
        let mid = Mid::from(RTX_WRITER_MID);
        let declared = self.rtc.media(mid).is_some();
        let mut api = self.rtc.direct_api();
        if self.rtx_writer.is_none() {
            // str0m's pacer finds a send stream by media line (and rid), and
            // a lookup by a line without rid matches any stream of the line:
            // a second stream on the publisher's line would shadow the main
            // one (or be shadowed). So the writer gets a line of its own,
            // declared locally only; the server finds the stream by SSRC.
            if !declared {
                api.declare_media(mid, MediaKind::Video);
            }
            api.declare_stream_tx(rtx, None, mid, None);
            self.rtx_writer = Some(rtx);
        }
        let Some(tx) = api.stream_tx(&rtx) else {
            return false;
        };
        let mut body = osn.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default();
        body.extend_from_slice(payload);
        let seq = self.rtx_seq;
        self.rtx_seq += 1;
        tx.write_rtp(RtpWrite::new(
            pt,
            seq.into(),
            self.last_ts,
            Instant::now(),
            body,
        ));
        self.extra_packets += 1;
        true
    }

    /// Stop writing hand-made repairs (the RTX send stream goes away).
    pub fn remove_rtx_writer(&mut self) {
        if let Some(ssrc) = self.rtx_writer.take() {
            self.rtc.direct_api().remove_stream_tx(ssrc);
        }
    }

    /// Send a datagram past str0m, from the publisher's own address to the
    /// server's media address (so the server hands it to this session).
    pub fn send_raw(&mut self, datagram: &[u8]) -> bool {
        let Some(remote) = self.remote else {
            return false;
        };
        let sent = self.socket.send_to(datagram, remote).is_ok();
        if sent {
            self.raw_datagrams += 1;
        }
        sent
    }

    /// Run until `go_on` says stop: frames at 30 fps once connected;
    /// `on_frame` runs after each frame is written.
    pub fn run_while(
        &mut self,
        mut go_on: impl FnMut(&mut Self) -> bool,
        mut on_frame: impl FnMut(&mut Self),
    ) {
        let mut buf = vec![0u8; 2000];
        while go_on(self) && self.rtc.is_alive() {
            let now = Instant::now();
            if self.ready() {
                let due = *self.next_frame.get_or_insert(now);
                if now >= due {
                    let mut due = due;
                    while now.saturating_duration_since(due) > MAX_BEHIND {
                        due += FRAME_INTERVAL;
                    }
                    self.send_frame(due);
                    on_frame(self);
                    self.next_frame = Some(due + FRAME_INTERVAL);
                }
            }
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        self.remote = Some(t.destination);
                        let _ = self.socket.send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(e)) => self.on_event(e),
                    Err(_) => return,
                }
            };
            let mut wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
            if let Some(next) = self.next_frame {
                wait = wait.min(
                    next.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                );
            }
            let _ = self.socket.set_read_timeout(Some(wait));
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    let Ok(contents) = buf[..n].try_into() else {
                        continue;
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
                Err(_) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }

    /// [`Self::run_while`] for `duration`.
    pub fn run_for(&mut self, duration: Duration, on_frame: impl FnMut(&mut Self)) {
        let end = Instant::now() + duration;
        self.run_while(|_| Instant::now() < end, on_frame);
    }

    fn on_event(&mut self, e: Event) {
        if let Event::KeyframeRequest(_) = e {
            self.keyframe_requests += 1;
            self.keyframe_wanted = true;
        }
    }
}

/// A peer running on its own thread with two live counters.
pub struct Watched<T> {
    count: Arc<AtomicU64>,
    second: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<T>,
}

impl<T: Send + 'static> Watched<T> {
    /// Run `step` (one short slice of the peer's IO) until stopped (or
    /// `limit` passes), storing `counters(&peer)` after each slice.
    fn spawn(
        mut peer: T,
        limit: Duration,
        mut step: impl FnMut(&mut T) + Send + 'static,
        counters: impl Fn(&T) -> (u64, u64) + Send + 'static,
    ) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let second = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, c2, s) = (count.clone(), second.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                step(&mut peer);
                let (first, other) = counters(&peer);
                c.store(first, Ordering::Relaxed);
                c2.store(other, Ordering::Relaxed);
            }
            peer
        });
        Watched {
            count,
            second,
            stop,
            thread,
        }
    }

    /// The counter now.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The second counter now.
    pub fn get_second(&self) -> u64 {
        self.second.load(Ordering::Relaxed)
    }

    /// A handle on the counter for other threads.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.count.clone()
    }

    /// A handle on the second counter for other threads.
    pub fn second_counter(&self) -> Arc<AtomicU64> {
        self.second.clone()
    }

    /// Stop the thread and take the peer back.
    pub fn stop(self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("peer thread panicked")
    }
}

/// A viewer counting the video frames it decodes (and, second, those that
/// came after a gap it could not repair), for at most `limit`.
pub fn watch_viewer(viewer: TestPeer, limit: Duration) -> Watched<TestPeer> {
    Watched::spawn(
        viewer,
        limit,
        |v| v.run_for(Duration::from_millis(20)),
        |v| (v.stats.video_frames, v.stats.discontinuities),
    )
}

/// A publisher sending normal frames, counting the frames sent (and,
/// second, the keyframe requests it got), for at most `limit`.
pub fn watch_publisher(publisher: RtpPublisher, limit: Duration) -> Watched<RtpPublisher> {
    Watched::spawn(
        publisher,
        limit,
        |p| p.run_for(Duration::from_millis(20), |_| {}),
        |p| (p.frames_sent, p.keyframe_requests),
    )
}
