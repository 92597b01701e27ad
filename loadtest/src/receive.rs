//! What one virtual receiver measured (sans-IO): one-way delay of every
//! stamped frame, frames lost (gaps in a layer's sequence), bitrate, the
//! layer it is on. Each peer owns its own; the scenario merges them at the
//! end, so nothing is shared on the packet path.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stamp::Stamp;

/// Highest value the histograms hold: 60 s in microseconds.
const MAX_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Sequence accounting for one incoming stream (one media line).
#[derive(Debug, Default, Clone)]
struct StreamCounter {
    last: Option<(u8, u64)>,
}

impl StreamCounter {
    /// Frames lost before this one (0 across a layer switch: the new
    /// layer's numbering is a different sequence).
    fn on_frame(&mut self, s: &Stamp) -> u64 {
        let lost = match self.last {
            Some((layer, seq)) if layer == s.layer && s.seq > seq => s.seq - seq - 1,
            Some((layer, seq)) if layer == s.layer && s.seq <= seq => return 0,
            _ => 0,
        };
        self.last = Some((s.layer, s.seq));
        lost
    }
}

/// Media kinds a receiver counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// What a receiver knows of a frame besides its stamp.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub kind: Kind,
    /// A video keyframe (str0m's reading of the payload).
    pub keyframe: bool,
    /// The media line index.
    pub stream: usize,
    pub len: usize,
    /// Sent in the run's steady window (after the joins settled).
    pub steady: bool,
}

impl Frame {
    pub fn audio(stream: usize, len: usize) -> Frame {
        Frame {
            kind: Kind::Audio,
            keyframe: false,
            stream,
            len,
            steady: false,
        }
    }

    pub fn video(stream: usize, len: usize, keyframe: bool) -> Frame {
        Frame {
            kind: Kind::Video,
            keyframe,
            stream,
            len,
            steady: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiveStats {
    /// One-way delay through the server, µs, of every stamped frame.
    pub delay_us: Histogram<u64>,
    /// The same for audio frames only (audio is not paced behind video).
    pub audio_delay_us: Histogram<u64>,
    /// Video keyframes only: the largest frames, which a paced sender
    /// spreads over the most time.
    pub keyframe_delay_us: Histogram<u64>,
    /// Frames sent in the steady window: delay, received, lost (a gap is
    /// counted there when the frame after it is).
    pub steady_delay_us: Histogram<u64>,
    pub steady_frames: u64,
    pub steady_lost: u64,
    pub frames: HashMap<Kind, u64>,
    pub frames_lost: HashMap<Kind, u64>,
    pub bytes: u64,
    /// Frames without a readable stamp (should stay 0).
    pub unstamped: u64,
    /// From the start of signaling to the first frame of each kind.
    pub first_frame: HashMap<Kind, Duration>,
    /// Video frames received per layer index.
    pub layer_frames: [u64; 4],
    /// The video layer of the last frame.
    pub current_layer: Option<u8>,
    /// Worst video delay (µs) per second of the run (by generator clock).
    pub video_delay_by_second: Vec<u64>,
    /// Video frames lost per second of the run (counted when the gap is
    /// seen, by generator clock).
    pub video_lost_by_second: Vec<u64>,
    streams: HashMap<(Kind, usize), StreamCounter>,
}

impl Default for ReceiveStats {
    fn default() -> Self {
        ReceiveStats {
            delay_us: histogram(),
            audio_delay_us: histogram(),
            keyframe_delay_us: histogram(),
            steady_delay_us: histogram(),
            steady_frames: 0,
            steady_lost: 0,
            frames: HashMap::new(),
            frames_lost: HashMap::new(),
            bytes: 0,
            unstamped: 0,
            first_frame: HashMap::new(),
            layer_frames: [0; 4],
            current_layer: None,
            video_delay_by_second: Vec::new(),
            video_lost_by_second: Vec::new(),
            streams: HashMap::new(),
        }
    }
}

impl ReceiveStats {
    /// A frame, `since_start` after signaling began, at generator time
    /// `now_us`.
    pub fn on_frame(
        &mut self,
        frame: Frame,
        stamp: Option<Stamp>,
        since_start: Duration,
        now_us: u64,
    ) {
        let Frame {
            kind, stream, len, ..
        } = frame;
        self.bytes += len as u64;
        *self.frames.entry(kind).or_default() += 1;
        self.first_frame.entry(kind).or_insert(since_start);
        let Some(s) = stamp else {
            self.unstamped += 1;
            return;
        };
        let lost = self.streams.entry((kind, stream)).or_default().on_frame(&s);
        *self.frames_lost.entry(kind).or_default() += lost;
        let delay = now_us.saturating_sub(s.sent_us).clamp(1, MAX_US);
        let _ = self.delay_us.record(delay);
        if frame.steady {
            self.steady_frames += 1;
            self.steady_lost += lost;
            let _ = self.steady_delay_us.record(delay);
        }
        if kind == Kind::Audio {
            let _ = self.audio_delay_us.record(delay);
        } else {
            if frame.keyframe {
                let _ = self.keyframe_delay_us.record(delay);
            }
            let second = (now_us / 1_000_000).min(24 * 3600) as usize;
            if self.video_delay_by_second.len() <= second {
                self.video_delay_by_second.resize(second + 1, 0);
            }
            self.video_delay_by_second[second] = self.video_delay_by_second[second].max(delay);
            if lost > 0 {
                if self.video_lost_by_second.len() <= second {
                    self.video_lost_by_second.resize(second + 1, 0);
                }
                self.video_lost_by_second[second] += lost;
            }
        }
        if kind == Kind::Video {
            self.layer_frames[usize::from(s.layer.min(3))] += 1;
            self.current_layer = Some(s.layer);
        }
    }

    /// Delay of video frames: every frame's but the audio frames'.
    pub fn video_delay_us(&self) -> Histogram<u64> {
        let mut video = self.delay_us.clone();
        // Cannot fail: the audio frames were recorded into both.
        let _ = video.subtract(&self.audio_delay_us);
        video
    }

    /// Delay of video frames that are not keyframes.
    pub fn delta_frame_delay_us(&self) -> Histogram<u64> {
        let mut delta = self.video_delay_us();
        let _ = delta.subtract(&self.keyframe_delay_us);
        delta
    }

    pub fn frames_of(&self, kind: Kind) -> u64 {
        self.frames.get(&kind).copied().unwrap_or(0)
    }

    pub fn lost_of(&self, kind: Kind) -> u64 {
        self.frames_lost.get(&kind).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(layer: u8, seq: u64, sent_us: u64) -> Option<Stamp> {
        Some(Stamp {
            layer,
            seq,
            sent_us,
        })
    }

    #[test]
    fn gaps_in_a_layer_count_as_loss_and_switches_do_not() {
        let mut r = ReceiveStats::default();
        let t = Duration::ZERO;
        for seq in [0, 1, 2, 5, 6] {
            r.on_frame(Frame::video(1, 100, false), stamp(2, seq, 0), t, 1000);
        }
        assert_eq!(r.lost_of(Kind::Video), 2);
        assert_eq!(r.video_lost_by_second, vec![2], "counted in second 0");
        // Switch to layer 0 whose numbering is elsewhere: no loss.
        r.on_frame(Frame::video(1, 100, false), stamp(0, 900, 0), t, 1000);
        r.on_frame(Frame::video(1, 100, false), stamp(0, 901, 0), t, 1000);
        // A duplicate or late frame is not a loss either.
        r.on_frame(Frame::video(1, 100, false), stamp(0, 900, 0), t, 1000);
        assert_eq!(r.lost_of(Kind::Video), 2);
        assert_eq!(r.current_layer, Some(0));
        assert_eq!(r.layer_frames[2], 5);
        // Audio is counted on its own.
        r.on_frame(Frame::audio(0, 120), stamp(0, 0, 0), t, 1000);
        r.on_frame(Frame::audio(0, 120), stamp(0, 3, 0), t, 1000);
        assert_eq!(r.lost_of(Kind::Audio), 2);
    }

    #[test]
    fn keyframes_and_other_video_frames_are_told_apart() {
        let mut r = ReceiveStats::default();
        let t = Duration::ZERO;
        // Audio 1 ms, video delta frames 5 ms, keyframes 80 ms.
        r.on_frame(Frame::audio(0, 120), stamp(0, 0, 0), t, 1_000);
        for seq in 0..10 {
            let key = seq % 5 == 0;
            let delay = if key { 80_000 } else { 5_000 };
            let sent = seq * 33_000;
            let frame = Frame::video(1, 1000, key);
            r.on_frame(frame, stamp(2, seq, sent), t, sent + delay);
        }
        assert_eq!(r.keyframe_delay_us.len(), 2);
        assert!(r.keyframe_delay_us.min() >= 79_000);
        let video = r.video_delay_us();
        assert_eq!(video.len(), 10, "the audio frame is not video");
        let delta = r.delta_frame_delay_us();
        assert_eq!(delta.len(), 8);
        assert!((4_990..=5_010).contains(&delta.max()), "{}", delta.max());
    }

    #[test]
    fn the_steady_window_counts_only_its_frames() {
        let mut r = ReceiveStats::default();
        let t = Duration::ZERO;
        // Frames 0-4 during the joins (slow, one lost); 5-9 steady (one lost).
        for seq in [0, 1, 3, 4] {
            r.on_frame(Frame::audio(0, 120), stamp(0, seq, 0), t, 900_000);
        }
        for seq in [5, 6, 8, 9] {
            let frame = Frame {
                steady: true,
                ..Frame::audio(0, 120)
            };
            r.on_frame(frame, stamp(0, seq, 0), t, 2_000);
        }
        assert_eq!(r.lost_of(Kind::Audio), 2);
        assert_eq!((r.steady_frames, r.steady_lost), (4, 1));
        assert_eq!(r.steady_delay_us.len(), 4);
        assert!(r.steady_delay_us.max() < 2_100, "only the steady delays");
    }

    #[test]
    fn delay_is_receive_time_minus_send_time() {
        let mut r = ReceiveStats::default();
        r.on_frame(
            Frame::audio(0, 120),
            stamp(0, 0, 10_000),
            Duration::ZERO,
            12_500,
        );
        assert_eq!(r.delay_us.len(), 1);
        assert!((2_490..=2_510).contains(&r.delay_us.value_at_quantile(0.5)));
        r.on_frame(Frame::audio(0, 120), None, Duration::ZERO, 0);
        assert_eq!(r.unstamped, 1);
    }
}
