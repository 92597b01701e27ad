//! A synthetic publisher's media schedule (sans-IO: time is passed in).
//! Video per simulcast layer at its frame rate and bitrate, keyframes at
//! start, every few seconds and on request; Opus audio every 20 ms, or, for
//! a silent member, Opus DTX (a small frame every 400 ms, as a WebRTC
//! client with DTX on sends while nobody speaks: livekit-client's default).
//! It says what to send when; the peer writes it to str0m.

use std::time::{Duration, Instant};

use crate::stamp::{audio_frame, video_frame, Stamp, VideoCodec};

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
}

struct LayerState {
    spec: LayerSpec,
    index: u8,
    seq: u64,
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
                    seq: 0,
                    next: now,
                    last_key: None,
                    key_wanted: true,
                })
                .collect(),
            simulcast,
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
            let stamp = self.stamp(l.index, l.seq, now);
            let data = video_frame(
                self.codec,
                keyframe,
                l.spec.width,
                l.spec.height,
                len,
                stamp,
            );
            let rid = Some(if self.simulcast { l.spec.rid } else { "" });
            out.push(DueFrame {
                rid,
                keyframe,
                rtp_time,
                data,
            });
            let l = &mut self.layers[i];
            l.seq += 1;
            l.next = (l.next + interval).max(now);
            if keyframe {
                l.key_wanted = false;
                l.last_key = Some(now);
            }
        }
        out
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
