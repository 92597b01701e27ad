//! Test harness: the real server started in-process on loopback, and str0m
//! client peers (an independent WebRTC stack in the same process) that
//! publish over WHIP and play over WHEP through real UDP sockets.

#![allow(dead_code)]

pub mod livekit;
pub mod member;
pub mod redis;
pub mod rtp_publisher;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sfu::config::{Config, ConfigArgs};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One Opus frame, and one video frame at 30 fps (3000 ticks of 90 kHz).
const AUDIO_FRAME: Duration = Duration::from_millis(20);
const VIDEO_FRAME: Duration = Duration::from_micros(33_333);

/// Frames of `interval` a source on the capture clock skips when it is
/// serviced more than 100 ms after `due`: it does not send them late, and
/// its media time keeps pace with the wall clock (as a real source's does;
/// the server drops frames read a second behind). Returns how many, and
/// moves `due` past them.
fn skip_stalled(due: &mut Instant, interval: Duration, now: Instant) -> u64 {
    let behind = now.saturating_duration_since(*due);
    if behind <= Duration::from_millis(100) {
        return 0;
    }
    let skipped = (behind.as_micros() / interval.as_micros().max(1)) as u32;
    *due += interval * skipped;
    u64::from(skipped)
}

/// A server running on a background runtime; stopped on drop.
pub struct TestServer {
    pub base: String,
    /// The media workers' UDP addresses.
    pub media_addrs: Vec<SocketAddr>,
    stop: sfu::Stop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(session_timeout_secs: u64) -> TestServer {
        Self::start_with(ConfigArgs {
            session_timeout_secs: Some(session_timeout_secs),
            ..Default::default()
        })
    }

    pub fn start_with(mut args: ConfigArgs) -> TestServer {
        args.http_addr
            .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 0)));
        args.workers.get_or_insert(2);
        // Tests fire requests faster than a person; the limit has its own test.
        args.http_rate_limit.get_or_insert(0.0);
        let config = Config::resolve(args, ConfigArgs::default()).expect("valid test config");
        let stop = sfu::Stop::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let result = sfu::run_until(config, token, |s| {
                    let _ = tx.send((s.http_addr, s.media_addrs));
                })
                .await;
                if let Err(e) = result {
                    eprintln!("server failed: {e}");
                }
            });
        });
        let (addr, media_addrs) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        TestServer {
            base: format!("http://{addr}"),
            media_addrs,
            stop,
            thread: Some(thread),
        }
    }

    /// Begin draining, as the first SIGTERM does.
    pub fn drain(&self) {
        self.stop.drain.cancel();
    }

    /// True once the server has stopped (its thread returned).
    pub fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn token(&self, room: &str, identity: &str, publish: bool, subscribe: bool) -> String {
        dev_token(room, identity, publish, subscribe)
    }

    /// One metric's value summed over its labels.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_with(name, "").await
    }

    /// The admin API's report of what `identity` in `room` receives: the
    /// whole report, and its video line.
    pub async fn video_subscription(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(serde_json::Value, serde_json::Value), Box<dyn std::error::Error + Send + Sync>>
    {
        let report: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/api/rooms/{room}/participants/{identity}/subscriptions",
                self.base
            ))
            .basic_auth("devkey", Some("secret"))
            .send()
            .await?
            .json()
            .await?;
        let video = report["subscriptions"]
            .as_array()
            .and_then(|subs| subs.iter().find(|s| s["kind"] == "video"))
            .cloned()
            .ok_or_else(|| format!("no video subscription: {report}"))?;
        Ok((report, video))
    }

    /// One metric's series that carry `label` (e.g. `reason="closed"`), summed.
    pub async fn metric_with(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| {
                l.split(' ')
                    .next()
                    .is_some_and(|series| series.contains(label))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Wait until `name` equals `value`, bounded.
    pub async fn wait_metric(&self, name: &str, value: f64, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.metric(name).await == value {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A token signed with the development key pair, valid for 10 minutes.
pub fn dev_token(room: &str, identity: &str, publish: bool, subscribe: bool) -> String {
    use signaling::auth::{mint_with_secret, VideoGrant};
    let grant = VideoGrant {
        room: Some(room.into()),
        room_join: true,
        can_publish: Some(publish),
        can_subscribe: Some(subscribe),
        ..Default::default()
    };
    mint_with_secret(
        "devkey",
        "secret",
        identity,
        grant,
        Duration::from_secs(600),
    )
    .expect("token")
}

/// Read server-sent events until `name` arrives (bounded); its data line.
pub async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
    name: &str,
) -> Result<String, String> {
    let needle = format!("event: {name}\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = buf.find(&needle) {
            if let Some(end) = buf[i..].find("\n\n") {
                let event: String = buf.drain(..i + end + 2).skip(i).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.trim().to_string())
                    .unwrap_or_default();
                return Ok(data);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| format!("no '{name}' event within 10 s (got {buf:?})"))?
            .map_err(|e| e.to_string())?
            .ok_or(format!("event stream ended before '{name}'"))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Open an event stream of WHEP resource `resource` (its full URL) with
/// the server-sent events extension: POST `{resource}/sse` with `events`
/// (a JSON array; None: no body, all events), then GET the Location.
pub async fn open_events(
    resource: &str,
    events: Option<&str>,
) -> Result<reqwest::Response, String> {
    let http = reqwest::Client::new();
    let mut req = http.post(format!("{resource}/sse"));
    if let Some(body) = events {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let created = req.send().await.map_err(|e| e.to_string())?;
    if created.status().as_u16() != 201 {
        return Err(format!("POST {resource}/sse: {}", created.status()));
    }
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location for the event stream")?;
    let url = reqwest::Url::parse(resource)
        .and_then(|u| u.join(location))
        .map_err(|e| e.to_string())?;
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 200 {
        return Err(format!("GET {location}: {}", resp.status()));
    }
    Ok(resp)
}

/// Result of POSTing an offer.
pub struct Posted {
    pub status: u16,
    /// The URL that answered (after any redirect the client followed).
    pub url: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Posted {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub async fn post_sdp(url: &str, token: &str, sdp: &str) -> Posted {
    post_sdp_with(&reqwest::Client::new(), url, token, sdp).await
}

/// [`post_sdp`] with a client of the caller's (e.g. one that does not
/// follow redirects).
pub async fn post_sdp_with(http: &reqwest::Client, url: &str, token: &str, sdp: &str) -> Posted {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_string())
        .send()
        .await
        .expect("POST");
    let mut posted = Posted {
        status: resp.status().as_u16(),
        url: resp.url().to_string(),
        location: None,
        etag: None,
        body: String::new(),
        headers: resp.headers().clone(),
    };
    posted.location = posted.header("location");
    posted.etag = posted.header("etag");
    posted.body = resp.text().await.unwrap_or_default();
    posted
}

/// What a peer saw.
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    pub connected_after: Option<Duration>,
    pub audio_frames: u64,
    pub video_frames: u64,
    pub video_keyframes: u64,
    pub first_video_after: Option<Duration>,
    pub keyframe_requests: u64,
    pub video_codecs: Vec<Codec>,
    pub video_sizes: Vec<usize>,
    /// (time since start, width) of every VP8 keyframe received.
    pub keyframe_widths: Vec<(Duration, u32)>,
    /// Video frames that arrived after a gap the receiver could not repair.
    pub discontinuities: u64,
    /// The last REMB the server sent (bits per second).
    pub remb_bps: Option<u64>,
}

/// A str0m peer with its own UDP socket.
pub struct TestPeer {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    pub mids: Vec<(Mid, MediaKind)>,
    pub stats: PeerStats,
    started: Instant,
    frame_no: u64,
    audio_no: u64,
    next_video: Instant,
    next_audio: Instant,
    /// Media time (in frames) skipped after stalls, so that media time keeps
    /// pace with the wall clock while frame numbers stay contiguous.
    video_skipped: u64,
    audio_skipped: u64,
    force_keyframe: bool,
    /// When false the peer stops sending media (but keeps ICE alive).
    pub send_media: bool,
    /// Codec the publisher sends video with.
    pub video_codec: Codec,
    /// Send H.264 in decode order with B-frames (IPBB...).
    pub bframes: bool,
    /// Simulcast layers sent (rid, width, height, bytes per frame); empty: one stream.
    pub layers: Vec<SimLayer>,
    /// Frames received per media line.
    pub frames_by_mid: std::collections::HashMap<Mid, u64>,
    /// Data channels by label, and the text messages received on them.
    pub channels: std::collections::HashMap<String, str0m::channel::ChannelId>,
    pub channel_messages: Vec<(String, String)>,
    /// The same messages as bytes (LiveKit's data packets are protobuf).
    pub channel_bytes: Vec<(String, Vec<u8>)>,
    /// RFC 6464 level put on audio packets (None: no level).
    pub audio_level: Option<i8>,
    /// Never send DTLS (ICE still runs): a handshake stuck half-way.
    pub drop_dtls: bool,
}

/// One simulcast layer a test publisher sends.
#[derive(Debug, Clone)]
pub struct SimLayer {
    pub rid: &'static str,
    pub width: u32,
    pub height: u32,
    pub frame_bytes: usize,
    /// Stop sending this layer (as when the publisher's uplink degrades).
    pub stopped: bool,
    keyframe_wanted: bool,
}

impl SimLayer {
    pub fn new(rid: &'static str, width: u32, height: u32, frame_bytes: usize) -> Self {
        SimLayer {
            rid,
            width,
            height,
            frame_bytes,
            stopped: false,
            keyframe_wanted: true,
        }
    }
}

/// A VP8 frame of a given picture size and length.
pub fn vp8_frame_sized(keyframe: bool, n: u64, width: u32, height: u32, len: usize) -> Vec<u8> {
    let mut f = if keyframe {
        let w = (width as u16).to_le_bytes();
        let h = (height as u16).to_le_bytes();
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, w[0], w[1], h[0], h[1]]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    f.extend((f.len()..len.max(f.len())).map(|i| (i as u64 ^ n) as u8));
    f
}

/// Picture width of a received VP8 keyframe.
pub fn vp8_width(frame: &[u8]) -> Option<u32> {
    (frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff))
}

/// A minimal H.264 access unit in Annex B form: SPS+PPS+IDR or a non-IDR slice.
pub fn h264_frame(keyframe: bool, n: u64) -> Vec<u8> {
    let mut f = vec![];
    if keyframe {
        f.extend_from_slice(&[
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0,
        ]);
        f.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        f.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
    } else {
        f.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x02]);
    }
    let size = if keyframe { 3000 } else { 800 };
    // Avoid emulating start codes in the filler.
    f.extend((0..size).map(|i| ((i as u64 ^ n) as u8) | 0x10));
    f
}

/// Presentation index of the n-th frame in IPBB decode order: 0 3 1 2 6 4 5 9 7 8 ...
fn bframe_order(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let group = (n - 1) / 3;
    match (n - 1) % 3 {
        0 => group * 3 + 3,
        1 => group * 3 + 1,
        _ => group * 3 + 2,
    }
}

/// A minimal but valid VP8 frame: a keyframe carries the start code and a size.
pub fn vp8_frame(keyframe: bool, n: u64) -> Vec<u8> {
    let mut f = if keyframe {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    let size = if keyframe { 3000 } else { 800 };
    f.extend((0..size).map(|i| (i as u64 ^ n) as u8));
    f
}

impl TestPeer {
    /// `config` lets a test number codecs differently from the server.
    pub fn new(config: RtcConfig, media: &[(MediaKind, Direction)]) -> (TestPeer, String) {
        Self::build(config, media, None)
    }

    /// `simulcast` applies to the video media line.
    fn build(
        config: RtcConfig,
        media: &[(MediaKind, Direction)],
        simulcast: Option<str0m::media::Simulcast>,
    ) -> (TestPeer, String) {
        Self::build_with_channels(config, media, simulcast, &[])
    }

    /// A conference member: `media` plus data channels `labels`.
    pub fn member(media: &[(MediaKind, Direction)], labels: &[&str]) -> (TestPeer, String) {
        Self::build_with_channels(RtcConfig::new(), media, None, labels)
    }

    fn build_with_channels(
        config: RtcConfig,
        media: &[(MediaKind, Direction)],
        simulcast: Option<str0m::media::Simulcast>,
        labels: &[&str],
    ) -> (TestPeer, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let local = socket.local_addr().expect("addr");
        let now = Instant::now();
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let mut mids = vec![];
        for (kind, dir) in media {
            let sim = (*kind == MediaKind::Video)
                .then(|| simulcast.clone())
                .flatten();
            // A sending line's msid names its track as a LiveKit client's
            // `cid` would: "audio" or "video".
            let cid = matches!(dir, Direction::SendOnly | Direction::SendRecv).then(|| {
                match kind {
                    MediaKind::Audio => "audio",
                    MediaKind::Video => "video",
                }
                .to_string()
            });
            let stream = cid.as_ref().map(|_| "test".to_string());
            mids.push((api.add_media(*kind, *dir, stream, cid, sim), *kind));
        }
        let mut channels = std::collections::HashMap::new();
        for label in labels {
            channels.insert(label.to_string(), api.add_channel(label.to_string()));
        }
        let (offer, pending) = api.apply().expect("offer");
        let sdp = offer.to_sdp_string();
        (
            TestPeer {
                rtc,
                socket,
                local,
                pending: Some(pending),
                mids,
                stats: PeerStats::default(),
                started: now,
                frame_no: 0,
                audio_no: 0,
                next_video: now,
                next_audio: now,
                video_skipped: 0,
                audio_skipped: 0,
                force_keyframe: true,
                send_media: true,
                video_codec: Codec::Vp8,
                bframes: false,
                layers: vec![],
                frames_by_mid: Default::default(),
                channels,
                channel_messages: vec![],
                channel_bytes: vec![],
                audio_level: None,
                drop_dtls: false,
            },
            sdp,
        )
    }

    /// Renegotiate: add media lines (and flip existing lines' directions);
    /// returns the new offer and the new lines' mids.
    pub fn offer_changes(
        &mut self,
        add: &[(MediaKind, Direction)],
        set_direction: &[(Mid, Direction)],
    ) -> (String, Vec<Mid>) {
        let mut api = self.rtc.sdp_api();
        let mut new = vec![];
        for (kind, dir) in add {
            new.push(api.add_media(*kind, *dir, None, None, None));
        }
        for (mid, dir) in set_direction {
            api.set_direction(*mid, *dir);
        }
        let (offer, pending) = api.apply().expect("changes to offer");
        self.pending = Some(pending);
        for (mid, (kind, _)) in new.iter().zip(add) {
            self.mids.push((*mid, *kind));
        }
        (offer.to_sdp_string(), new)
    }

    /// `offer_changes` of receive lines; with none to add, an ICE restart
    /// (str0m offers only on a change; a LiveKit server may ask for an offer
    /// to place a track on a line it has).
    pub fn offer_changes_or_restart(
        &mut self,
        add: &[(MediaKind, Direction)],
    ) -> (String, Vec<Mid>) {
        if !add.is_empty() {
            return self.offer_changes(add, &[]);
        }
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("a restart to offer");
        self.pending = Some(pending);
        (offer.to_sdp_string(), vec![])
    }

    /// Send binary `data` on the data channel `label`.
    pub fn send_bytes(&mut self, label: &str, data: &[u8]) -> bool {
        let Some(id) = self.channels.get(label).copied() else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut ch) => ch.write(true, data).unwrap_or(false),
            None => false,
        }
    }

    /// Send a text message on the data channel `label`.
    pub fn send_text(&mut self, label: &str, text: &str) -> bool {
        let Some(id) = self.channels.get(label).copied() else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut ch) => ch.write(false, text.as_bytes()).unwrap_or(false),
            None => false,
        }
    }

    pub fn frames_on(&self, mid: Mid) -> u64 {
        self.frames_by_mid.get(&mid).copied().unwrap_or(0)
    }

    pub fn publisher() -> (TestPeer, String) {
        Self::new(
            RtcConfig::new(),
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
        )
    }

    /// A publisher sending VP8 simulcast with `layers` (and Opus).
    pub fn simulcast_publisher(layers: Vec<SimLayer>) -> (TestPeer, String) {
        let mut simulcast = str0m::media::Simulcast::new();
        for l in &layers {
            simulcast.add_send_layer(str0m::media::SimulcastLayer::new(l.rid));
        }
        let (mut peer, offer) = Self::build(
            RtcConfig::new(),
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            Some(simulcast),
        );
        peer.layers = layers;
        (peer, offer)
    }

    /// A conference member sending audio and VP8 simulcast with `layers`.
    pub fn simulcast_member(layers: Vec<SimLayer>) -> (TestPeer, String) {
        let mut simulcast = str0m::media::Simulcast::new();
        for l in &layers {
            simulcast.add_send_layer(str0m::media::SimulcastLayer::new(l.rid));
        }
        let (mut peer, offer) = Self::build_with_channels(
            RtcConfig::new(),
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            Some(simulcast),
            &["reliable"],
        );
        peer.layers = layers;
        (peer, offer)
    }

    pub fn viewer(config: RtcConfig) -> (TestPeer, String) {
        Self::new(
            config,
            &[
                (MediaKind::Audio, Direction::RecvOnly),
                (MediaKind::Video, Direction::RecvOnly),
            ],
        )
    }

    pub fn accept_answer(&mut self, sdp: &str) -> TestResult {
        let answer = SdpAnswer::from_sdp_string(sdp)?;
        let pending = self.pending.take().ok_or("no pending offer")?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    fn write_media(&mut self, now: Instant) {
        if !self.send_media || !self.rtc.is_connected() {
            return;
        }
        for (mid, kind) in self.mids.clone() {
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            match kind {
                MediaKind::Video if now >= self.next_video && !self.layers.is_empty() => {
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    drop(writer);
                    self.video_skipped += skip_stalled(&mut self.next_video, VIDEO_FRAME, now);
                    let periodic = self.frame_no.is_multiple_of(90);
                    let t =
                        MediaTime::from_90khz((self.frame_no + self.video_skipped) * 3000 + 90_000);
                    for layer in self.layers.iter_mut().filter(|l| !l.stopped) {
                        let key = layer.keyframe_wanted || periodic;
                        layer.keyframe_wanted = false;
                        let data = vp8_frame_sized(
                            key,
                            self.frame_no,
                            layer.width,
                            layer.height,
                            layer.frame_bytes,
                        );
                        if let Some(w) = self.rtc.writer(mid) {
                            let _ = w.rid(layer.rid.into()).write(pt, now, t, data);
                        }
                    }
                    self.frame_no += 1;
                    self.next_video += VIDEO_FRAME;
                }
                MediaKind::Video if now >= self.next_video => {
                    let codec = self.video_codec;
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == codec)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    self.video_skipped += skip_stalled(&mut self.next_video, VIDEO_FRAME, now);
                    let key = self.force_keyframe || self.frame_no.is_multiple_of(60);
                    self.force_keyframe = false;
                    let data = match codec {
                        Codec::H264 => h264_frame(key, self.frame_no),
                        _ => vp8_frame(key, self.frame_no),
                    };
                    let presentation = if self.bframes {
                        bframe_order(self.frame_no)
                    } else {
                        self.frame_no
                    };
                    let t =
                        MediaTime::from_90khz((presentation + self.video_skipped) * 3000 + 90_000);
                    let _ = writer.write(pt, now, t, data);
                    self.frame_no += 1;
                    self.next_video += VIDEO_FRAME;
                }
                MediaKind::Audio if now >= self.next_audio => {
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    self.audio_skipped += skip_stalled(&mut self.next_audio, AUDIO_FRAME, now);
                    let t = MediaTime::new(
                        (self.audio_no + self.audio_skipped) * 960,
                        str0m::media::Frequency::FORTY_EIGHT_KHZ,
                    );
                    let writer = match self.audio_level {
                        Some(level) => writer.audio_level(level, true),
                        None => writer,
                    };
                    let _ = writer.write(pt, now, t, vec![0xfc; 120]);
                    self.audio_no += 1;
                    self.next_audio += AUDIO_FRAME;
                }
                _ => {}
            }
        }
    }

    /// Run the peer's IO for `duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < end && self.rtc.is_alive() {
            let now = Instant::now();
            self.write_media(now);
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        // DTLS records start with a content type of 20-63 (RFC 7983).
                        let dtls = matches!(t.contents.first(), Some(20..=63));
                        if !(self.drop_dtls && dtls) {
                            let _ = self.socket.send_to(&t.contents, t.destination);
                        }
                    }
                    Ok(Output::Event(e)) => self.on_event(e),
                    Err(_) => return,
                }
            };
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
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

    fn on_event(&mut self, e: Event) {
        let since = self.started.elapsed();
        match e {
            Event::Connected => {
                self.stats.connected_after.get_or_insert(since);
            }
            Event::ChannelOpen(id, label) => {
                self.channels.insert(label, id);
            }
            Event::ChannelData(d) => {
                let label = self
                    .channels
                    .iter()
                    .find(|(_, c)| **c == d.id)
                    .map(|(l, _)| l.clone())
                    .unwrap_or_default();
                self.channel_messages
                    .push((label.clone(), String::from_utf8_lossy(&d.data).into_owned()));
                self.channel_bytes.push((label, d.data.to_vec()));
            }
            Event::MediaData(d) => {
                *self.frames_by_mid.entry(d.mid).or_default() += 1;
                if d.params.spec().codec.is_video() {
                    if !d.contiguous && self.stats.video_frames > 0 {
                        self.stats.discontinuities += 1;
                    }
                    if let Some(w) = vp8_width(&d.data) {
                        self.stats.keyframe_widths.push((since, w));
                    }
                    self.stats.video_frames += 1;
                    self.stats.first_video_after.get_or_insert(since);
                    if d.is_keyframe() {
                        self.stats.video_keyframes += 1;
                    }
                    if !self.stats.video_codecs.contains(&d.params.spec().codec) {
                        self.stats.video_codecs.push(d.params.spec().codec);
                    }
                    if self.stats.video_sizes.len() < 100 {
                        self.stats.video_sizes.push(d.data.len());
                    }
                } else {
                    self.stats.audio_frames += 1;
                }
            }
            Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb { estimate, .. }) => {
                self.stats.remb_bps = Some(estimate.as_u64());
            }
            Event::KeyframeRequest(req) => {
                self.stats.keyframe_requests += 1;
                self.force_keyframe = true;
                for layer in &mut self.layers {
                    if req.rid.is_none() || req.rid == Some(layer.rid.into()) {
                        layer.keyframe_wanted = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Close the peer connection (DTLS close_notify, RTCP BYE) and flush it.
    pub fn close(&mut self) {
        let _ = self.rtc.close();
        self.run_for(Duration::from_millis(300));
    }

    /// Run on a thread; returns the peer when done.
    pub fn spawn_for(mut self, duration: Duration) -> std::thread::JoinHandle<TestPeer> {
        std::thread::spawn(move || {
            self.run_for(duration);
            self
        })
    }
}
