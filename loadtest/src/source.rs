//! A synthetic publisher's media schedule (sans-IO: time is passed in).
//! Video per simulcast layer at its frame rate and bitrate, keyframes at
//! start, every few seconds and on request; or scalable VP9 or AV1
//! (`SvcMode`, `SvcCodec`): per picture one frame per spatial layer, all
//! with the picture's media time, in temporal layers 0, 2, 1, 2, key
//! pictures when keyframes would be. Opus audio every 20 ms, or, for a silent member, Opus DTX (a small
//! frame every 400 ms, as a WebRTC client with DTX on sends while nobody
//! speaks: livekit-client's default). It says what to send when; the peer
//! writes it to str0m.

use std::time::{Duration, Instant};

use crate::av1;
use crate::stamp::{audio_frame, video_frame, Stamp, VideoCodec};
use crate::vp9::{
    group_len, temporal_of, temporal_weight, Structure, SvcMode, Vp9Layer, MAX_LAYERS,
};

/// One simulcast layer as libwebrtc sends it by default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
    pub fps: u32,
}

/// libwebrtc's default three layers for a 720p camera, lowest first.
pub fn default_layers(count: usize) -> Vec<LayerSpec> {
    let all = [
        LayerSpec {
            rid: "q",
            width: 320,
            height: 180,
            kbps: 150,
            fps: 30,
        },
        LayerSpec {
            rid: "h",
            width: 640,
            height: 360,
            kbps: 500,
            fps: 30,
        },
        LayerSpec {
            rid: "f",
            width: 1280,
            height: 720,
            kbps: 2500,
            fps: 30,
        },
    ];
    all[..count.clamp(1, 3)].to_vec()
}

/// The codec of a scalable stream: VP9 with its payload descriptor, or AV1
/// with the dependency descriptor header extension (Chromium's libaom
/// `L3T3_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SvcCodec {
    #[default]
    Vp9,
    Av1,
}

impl SvcCodec {
    pub fn video_codec(self) -> VideoCodec {
        match self {
            SvcCodec::Vp9 => VideoCodec::Vp9,
            SvcCodec::Av1 => VideoCodec::Av1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SvcCodec::Vp9 => "vp9",
            SvcCodec::Av1 => "av1",
        }
    }
}

/// The spatial layers of a scalable stream, lowest first: 180p, 360p and
/// 720p at 150, 400 and 1050 kbit/s each (1.6 Mbit/s in all), 20 pictures a
/// second, as Chromium's L3T3_KEY sent a 720p camera here. `kbps` replaces
/// the rates (lowest first; missing ones keep theirs).
pub fn svc_layers(mode: SvcMode, kbps: &[u32]) -> Vec<LayerSpec> {
    let sizes = [(320, 180, 150), (640, 360, 400), (1280, 720, 1050)];
    // The top spatial layer is the camera's size.
    let skip = sizes.len() - usize::from(mode.spatial.clamp(1, MAX_LAYERS));
    sizes[skip..]
        .iter()
        .enumerate()
        .map(|(i, (width, height, rate))| LayerSpec {
            rid: "",
            width: *width,
            height: *height,
            kbps: kbps.get(i).copied().unwrap_or(*rate),
            fps: 20,
        })
        .collect()
}

/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_FACTOR: usize = 5;
/// Periodic keyframe interval (a typical encoder GOP for RTC).
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(3);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Opus at ~48 kbit/s: 120-byte payloads.
const AUDIO_BYTES: usize = 120;
/// Opus DTX: one comfort-noise frame per 400 ms while silent.
const DTX_INTERVAL: Duration = Duration::from_millis(400);
/// A DTX frame (libopus makes 1-3 bytes; this one carries the stamp).
const DTX_BYTES: usize = 24;

/// One frame due for sending.
#[derive(Debug)]
pub struct DueFrame {
    /// `None` for audio; the layer's rid for simulcast video (`Some("")`
    /// when the publisher sends a single layer without rids).
    pub rid: Option<&'static str>,
    pub keyframe: bool,
    /// Media time in the stream's clock (90 kHz video, 48 kHz audio).
    pub rtp_time: u64,
    pub data: Vec<u8>,
    /// VP9 and AV1: the frame's layers (for its payload descriptor or
    /// dependency descriptor).
    pub svc: Option<Vp9Layer>,
}

struct LayerState {
    spec: LayerSpec,
    index: u8,
    /// Next frame number, per temporal layer.
    seq: [u64; MAX_LAYERS as usize],
    next: Instant,
    last_key: Option<Instant>,
    key_wanted: bool,
}

/// Opus: the next frame's sequence number and due time, the last RTP time.
#[derive(Debug, Clone, Copy)]
struct AudioState {
    seq: u64,
    next: Instant,
    rtp_time: Option<u64>,
    /// Silent: DTX frames only.
    dtx: bool,
}

/// 48 kHz ticks in one 20 ms Opus frame.
const AUDIO_TICKS: u64 = 960;

pub struct MediaSource {
    codec: VideoCodec,
    layers: Vec<LayerState>,
    simulcast: bool,
    /// Scalable: `layers` are the spatial layers of one stream.
    svc: Option<SvcMode>,
    /// Position of the next picture in its temporal group.
    group_pos: usize,
    audio: Option<AudioState>,
    origin: Instant,
    started: Instant,
}

impl MediaSource {
    /// `layers` empty: audio only. More than one layer: simulcast with rids.
    pub fn new(
        codec: VideoCodec,
        layers: Vec<LayerSpec>,
        audio: bool,
        origin: Instant,
        now: Instant,
    ) -> MediaSource {
        let simulcast = layers.len() > 1;
        MediaSource {
            codec,
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, spec)| LayerState {
                    spec,
                    index: i as u8,
                    seq: [0; MAX_LAYERS as usize],
                    next: now,
                    last_key: None,
                    key_wanted: true,
                })
                .collect(),
            simulcast,
            svc: None,
            group_pos: 0,
            audio: audio.then_some(AudioState {
                seq: 0,
                next: now,
                rtp_time: None,
                dtx: false,
            }),
            origin,
            started: now,
        }
    }

    /// Scalable `codec` in `mode`: `layers` are its spatial layers, lowest
    /// first (see [`svc_layers`]), sent in one stream without rids.
    pub fn scalable(
        codec: SvcCodec,
        mode: SvcMode,
        layers: Vec<LayerSpec>,
        audio: bool,
        origin: Instant,
        now: Instant,
    ) -> MediaSource {
        let mut src = MediaSource::new(codec.video_codec(), layers, audio, origin, now);
        src.simulcast = false;
        src.svc = Some(mode);
        src
    }

    /// Opus only (a speaker, a room member without a camera).
    pub fn audio_only(origin: Instant, now: Instant) -> MediaSource {
        MediaSource::new(VideoCodec::Vp8, vec![], true, origin, now)
    }

    /// The same source with its microphone silent: Opus DTX frames only.
    pub fn silent(mut self) -> MediaSource {
        if let Some(a) = &mut self.audio {
            a.dtx = true;
        }
        self
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    pub fn has_video(&self) -> bool {
        !self.layers.is_empty()
    }

    pub fn is_simulcast(&self) -> bool {
        self.simulcast
    }

    /// The scalability mode of a scalable stream.
    pub fn svc(&self) -> Option<SvcMode> {
        self.svc
    }

    /// The video layers, lowest first (empty: audio only).
    pub fn layer_specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec.clone()).collect()
    }

    pub fn rids(&self) -> Vec<&'static str> {
        self.layers.iter().map(|l| l.spec.rid).collect()
    }

    /// A receiver asked for a keyframe (`rid` None: every layer).
    pub fn request_keyframe(&mut self, rid: Option<&str>) {
        for l in &mut self.layers {
            if rid.is_none() || rid == Some(l.spec.rid) || !self.simulcast {
                l.key_wanted = true;
            }
        }
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        let video = self.layers.iter().map(|l| l.next);
        let audio = self.audio.map(|a| a.next);
        video.chain(audio).min()
    }

    fn stamp(&self, layer: u8, seq: u64, now: Instant) -> Stamp {
        Stamp {
            layer,
            seq,
            sent_us: now.saturating_duration_since(self.origin).as_micros() as u64,
        }
    }

    /// Every frame due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<DueFrame> {
        let mut out = vec![];
        if let Some(a) = self.audio {
            if now >= a.next {
                let stamp = self.stamp(0, a.seq, now);
                // Media time follows the wall clock, as a capture device's
                // does: after a stall it jumps (the frames of the stall are
                // never made) while the stamps' sequence stays contiguous.
                let elapsed = now.saturating_duration_since(self.started).as_micros() as u64;
                let wall = elapsed * 48 / 1000 / AUDIO_TICKS * AUDIO_TICKS;
                let rtp_time = a.rtp_time.map_or(wall, |t| wall.max(t + AUDIO_TICKS));
                let (bytes, interval) = match a.dtx {
                    true => (DTX_BYTES, DTX_INTERVAL),
                    false => (AUDIO_BYTES, AUDIO_INTERVAL),
                };
                out.push(DueFrame {
                    rid: None,
                    keyframe: false,
                    rtp_time,
                    data: audio_frame(bytes, stamp),
                    svc: None,
                });
                // Keep the cadence; skip ahead rather than burst after a stall.
                self.audio = Some(AudioState {
                    seq: a.seq + 1,
                    next: (a.next + interval).max(now),
                    rtp_time: Some(rtp_time),
                    ..a
                });
            }
        }
        if let Some(mode) = self.svc {
            self.poll_pictures(mode, now, &mut out);
            return out;
        }
        for i in 0..self.layers.len() {
            let l = &self.layers[i];
            if now < l.next {
                continue;
            }
            let periodic = l
                .last_key
                .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL);
            let keyframe = l.key_wanted || periodic;
            let delta_bytes =
                (l.spec.kbps as usize * 1000 / 8 / l.spec.fps.max(1) as usize).max(40);
            let len = if keyframe {
                delta_bytes * KEYFRAME_FACTOR
            } else {
                delta_bytes
            };
            let interval = Duration::from_secs(1) / l.spec.fps.max(1);
            let elapsed = now.saturating_duration_since(self.started);
            let rtp_time = (elapsed.as_micros() as u64 * 9 / 100) + 90_000;
            let stamp = self.stamp(l.index, l.seq[0], now);
            let data = video_frame(
                self.codec,
                keyframe,
                l.spec.width,
                l.spec.height,
                len,
                stamp,
            );
            let rid = Some(if self.simulcast { l.spec.rid } else { "" });
            let svc = matches!(self.codec, VideoCodec::Vp9 | VideoCodec::Av1)
                .then(|| Vp9Layer::single(l.spec.width, l.spec.height));
            out.push(DueFrame {
                rid,
                keyframe,
                rtp_time,
                data,
                svc,
            });
            let l = &mut self.layers[i];
            l.seq[0] += 1;
            l.next = (l.next + interval).max(now);
            if keyframe {
                l.key_wanted = false;
                l.last_key = Some(now);
            }
        }
        out
    }

    /// A scalable stream's picture, when due: one frame per spatial layer,
    /// lowest first, with the same media time and send time; a key picture
    /// when one was asked for or the interval is over.
    fn poll_pictures(&mut self, mode: SvcMode, now: Instant, out: &mut Vec<DueFrame>) {
        let Some(base) = self.layers.first() else {
            return;
        };
        if now < base.next {
            return;
        }
        let periodic = base
            .last_key
            .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL);
        // One schedule for the picture: the base layer's rate.
        let next = (base.next + Duration::from_secs(1) / base.spec.fps.max(1)).max(now);
        let key = periodic || self.layers.iter().any(|l| l.key_wanted);
        if key {
            self.group_pos = 0;
        }
        let (tid, switch_up) = temporal_of(mode.temporal, self.group_pos);
        self.group_pos = (self.group_pos + 1) % group_len(mode.temporal);
        let mut sizes = [(0u16, 0u16); MAX_LAYERS as usize];
        for (size, l) in sizes.iter_mut().zip(&self.layers) {
            *size = (
                l.spec.width.min(0xffff) as u16,
                l.spec.height.min(0xffff) as u16,
            );
        }
        let structure = Structure {
            spatial_layers: self.layers.len().min(usize::from(MAX_LAYERS)) as u8,
            temporal_layers: mode.temporal,
            sizes,
        };
        let elapsed = now.saturating_duration_since(self.started);
        let rtp_time = (elapsed.as_micros() as u64 * 9 / 100) + 90_000;
        let weight = temporal_weight(mode.temporal, tid);
        let t = usize::from(tid.min(MAX_LAYERS - 1));
        for i in 0..usize::from(structure.spatial_layers) {
            let l = &self.layers[i];
            let average = l.spec.kbps as f64 * 1000.0 / 8.0 / f64::from(l.spec.fps.max(1));
            // A key picture's frames: the factor times the layer's average
            // frame (a base-layer frame's share of the group aside).
            let len = if key {
                average as usize * KEYFRAME_FACTOR
            } else {
                (average * weight) as usize
            }
            .max(40);
            let stamp = self.stamp(l.index, l.seq[t], now);
            let layer = Vp9Layer {
                spatial: i as u8,
                temporal: tid,
                switch_up,
                structure,
            };
            // Only the base layer of a key picture is a keyframe; the
            // layers above predict from it (inter-layer).
            let (w, h) = (l.spec.width, l.spec.height);
            let data = match self.codec {
                VideoCodec::Av1 => av1::frame(&layer, key, len, stamp),
                _ => video_frame(VideoCodec::Vp9, key && i == 0, w, h, len, stamp),
            };
            out.push(DueFrame {
                rid: Some(""),
                keyframe: key,
                rtp_time,
                data,
                svc: Some(layer),
            });
            self.layers[i].seq[t] += 1;
        }
        for l in &mut self.layers {
            l.next = next;
            if key {
                l.key_wanted = false;
                l.last_key = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::video_stamp;

    #[test]
    fn layers_are_sent_at_their_bitrates_with_periodic_keyframes() {
        let t0 = Instant::now();
        let mut src = MediaSource::new(VideoCodec::Vp8, default_layers(3), true, t0, t0);
        let mut bytes = [0usize; 3];
        let mut keys = [0usize; 3];
        let mut audio = 0;
        let mut now = t0;
        let end = t0 + Duration::from_secs(9);
        while now < end {
            for f in src.poll(now) {
                match f.rid {
                    None => audio += 1,
                    Some(rid) => {
                        let i = ["q", "h", "f"].iter().position(|r| *r == rid).unwrap_or(9);
                        bytes[i] += f.data.len();
                        keys[i] += usize::from(f.keyframe);
                    }
                }
            }
            now += Duration::from_millis(1);
        }
        assert!((449..=451).contains(&audio), "50 audio frames/s: {audio}");
        for (i, spec) in default_layers(3).iter().enumerate() {
            let kbps = bytes[i] as f64 * 8.0 / 9.0 / 1000.0;
            // Nominal rate plus keyframe overhead (one 5x frame every 3 s).
            assert!(
                kbps > spec.kbps as f64 * 0.95 && kbps < spec.kbps as f64 * 1.3,
                "{kbps}"
            );
            assert_eq!(keys[i], 3, "keyframes at 0, 3 and 6 s");
        }
    }

    #[test]
    fn audio_media_time_follows_the_clock_across_a_stall() {
        let t0 = Instant::now();
        let mut src = MediaSource::audio_only(t0, t0);
        let mut sent = vec![];
        // 10 frames on time, then a 200 ms stall, then 5 more.
        let times = (0..10)
            .map(|i| t0 + AUDIO_INTERVAL * i)
            .chain((0..5).map(|i| t0 + Duration::from_millis(400) + AUDIO_INTERVAL * i));
        for now in times {
            for f in src.poll(now) {
                let seq = crate::stamp::audio_stamp(&f.data).map(|s| s.seq);
                sent.push((seq, f.rtp_time));
            }
        }
        let seqs: Vec<_> = sent.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (0..15).map(Some).collect::<Vec<_>>(), "contiguous");
        let rtp: Vec<_> = sent.iter().map(|(_, t)| *t).collect();
        assert_eq!(rtp[..10], (0..10).map(|i| i * 960).collect::<Vec<_>>());
        // 400 ms after the start: 20 frames' worth of media time.
        assert_eq!(rtp[10], 20 * 960, "{rtp:?}");
        assert_eq!(rtp[14], 24 * 960, "{rtp:?}");
    }

    #[test]
    fn a_keyframe_request_is_served_on_the_next_frame_of_that_layer_only() {
        let t0 = Instant::now();
        let mut src = MediaSource::new(VideoCodec::Vp8, default_layers(2), false, t0, t0);
        let _ = src.poll(t0);
        src.request_keyframe(Some("h"));
        let frames = src.poll(t0 + Duration::from_millis(34));
        let key: Vec<_> = frames.iter().map(|f| (f.rid, f.keyframe)).collect();
        assert_eq!(key, vec![(Some("q"), false), (Some("h"), true)]);
        let seqs: Vec<_> = frames
            .iter()
            .filter_map(|f| video_stamp(VideoCodec::Vp8, &f.data))
            .map(|s| (s.layer, s.seq))
            .collect();
        assert_eq!(seqs, vec![(0, 1), (1, 1)]);
    }

    #[test]
    fn a_scalable_stream_sends_every_spatial_layer_of_each_picture_together() {
        let t0 = Instant::now();
        let mode: SvcMode = "L3T3".parse().expect("mode");
        let mut src =
            MediaSource::scalable(SvcCodec::Vp9, mode, svc_layers(mode, &[]), true, t0, t0);
        assert!(!src.is_simulcast() && src.svc() == Some(mode));
        let mut bytes = [0usize; 3];
        // (spatial, temporal, key) of each frame, by media time.
        let mut by_time = std::collections::BTreeMap::<u64, Vec<_>>::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(9) {
            for f in src.poll(now).into_iter().filter(|f| f.rid.is_some()) {
                assert_eq!(f.rid, Some(""), "one stream, no rids");
                let l = f.svc.expect("layers");
                bytes[usize::from(l.spatial)] += f.data.len();
                let frames = by_time.entry(f.rtp_time).or_default();
                frames.push((l.spatial, l.temporal, f.keyframe));
            }
            now += Duration::from_millis(1);
        }
        let pictures: Vec<Vec<(u8, u8, bool)>> = by_time.into_values().collect();
        assert!((179..=181).contains(&pictures.len()), "20 pictures/s");
        for p in &pictures {
            let layers: Vec<u8> = p.iter().map(|x| x.0).collect();
            assert_eq!(layers, vec![0, 1, 2], "every layer, lowest first");
            assert!(p.iter().all(|x| x.1 == p[0].1 && x.2 == p[0].2));
        }
        // Key pictures at 0, 3 and 6 s; the temporal group restarts there.
        let keys: Vec<usize> = (0..pictures.len()).filter(|i| pictures[*i][0].2).collect();
        assert_eq!(keys, vec![0, 60, 120]);
        let tids: Vec<u8> = pictures[..6].iter().map(|p| p[0].1).collect();
        assert_eq!(tids, vec![0, 2, 1, 2, 0, 2]);
        for (i, spec) in svc_layers(mode, &[]).iter().enumerate() {
            let kbps = bytes[i] as f64 * 8.0 / 9.0 / 1000.0;
            assert!(
                kbps > spec.kbps as f64 * 0.95 && kbps < spec.kbps as f64 * 1.3,
                "layer {i}: {kbps} kbit/s"
            );
        }
        // A keyframe request makes the next picture a key picture.
        src.request_keyframe(None);
        let next = src.poll(now + Duration::from_millis(50));
        assert!(next.iter().filter(|f| f.rid.is_some()).all(|f| f.keyframe));
        // Fewer layers: the top one is the camera's size; rates replaced.
        let two = svc_layers("L2T1".parse().expect("mode"), &[300]);
        let sizes: Vec<_> = two.iter().map(|l| (l.width, l.kbps)).collect();
        assert_eq!(sizes, vec![(640, 300), (1280, 1050)]);
    }

    #[test]
    fn a_silent_microphone_sends_dtx_frames_with_media_time_of_the_clock() {
        let t0 = Instant::now();
        let mut src = MediaSource::audio_only(t0, t0).silent();
        let mut sent = vec![];
        let mut now = t0;
        while now < t0 + Duration::from_secs(2) {
            for f in src.poll(now) {
                let seq = crate::stamp::audio_stamp(&f.data).map(|s| s.seq);
                sent.push((seq, f.rtp_time, f.data.len()));
            }
            now += Duration::from_millis(1);
        }
        // One frame per 400 ms (0, 400, ..., 1600), numbered contiguously,
        // media time 400 ms (19,200 ticks) apart, small.
        assert_eq!(sent.len(), 5, "{sent:?}");
        for (i, (seq, rtp_time, len)) in sent.iter().enumerate() {
            assert_eq!(*seq, Some(i as u64));
            assert_eq!(*rtp_time, i as u64 * 19_200);
            assert_eq!(*len, DTX_BYTES);
        }
    }
}
