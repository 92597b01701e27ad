//! What one virtual receiver measured (sans-IO): RTP packets received and
//! lost per stream (`packets`), one-way delay of every stamped frame,
//! frames lost (gaps in a layer's sequence), bitrate, the layer it is on,
//! the time to each video line's first keyframe. Each peer owns its own;
//! the scenario merges them at the end, so nothing is shared on the packet
//! path.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::codec::PayloadFormat;
use crate::packets::{InStream, PacketIn};
use crate::stamp::Stamp;

/// Highest value the histograms hold: 60 s in microseconds.
const MAX_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Sequence accounting for one incoming stream (one media line).
#[derive(Debug, Default, Clone)]
struct StreamCounter {
    /// Layer and frame number of the newest frame.
    last: Option<(u8, u64)>,
    /// The first frame number counted on that layer.
    floor: u64,
}

/// What a frame says about the frames before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// This many frames were skipped.
    Lost(u64),
    /// A late frame (completed after a newer one): it was counted lost
    /// when the newer one came, and is not.
    Recovered,
}

impl StreamCounter {
    /// Frames lost before this one (none across a layer switch: the new
    /// layer's numbering is a different sequence).
    fn on_frame(&mut self, s: &Stamp) -> Gap {
        match self.last {
            Some((layer, seq)) if layer == s.layer => {
                if s.seq > seq {
                    self.last = Some((layer, s.seq));
                    Gap::Lost(s.seq - seq - 1)
                } else if s.seq > self.floor && s.seq < seq {
                    Gap::Recovered
                } else {
                    Gap::Lost(0)
                }
            }
            _ => {
                self.last = Some((s.layer, s.seq));
                self.floor = s.seq;
                Gap::Lost(0)
            }
        }
    }
}

/// What a receiver knows of an incoming RTP stream (an SSRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMeta {
    pub kind: Kind,
    /// The media line index.
    pub stream: usize,
    pub format: PayloadFormat,
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
    /// A video keyframe (read from the frame's first packet).
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
    /// Receiving video lines by index: when each was offered (since the
    /// start of signaling).
    pub video_lines: HashMap<usize, Duration>,
    /// Per video line: from its offer to its first complete keyframe.
    pub first_keyframe: HashMap<usize, Duration>,
    /// Video lines whose first complete frame was a delta frame (a
    /// decoder could not show it: the server forwarded it without the
    /// keyframe before it).
    started_on_delta: HashSet<usize>,
    streams: HashMap<(Kind, usize), StreamCounter>,
    /// Incoming RTP streams by SSRC.
    rtp: HashMap<u32, (StreamMeta, InStream)>,
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
            video_lines: HashMap::new(),
            first_keyframe: HashMap::new(),
            started_on_delta: HashSet::new(),
            streams: HashMap::new(),
            rtp: HashMap::new(),
        }
    }
}

impl ReceiveStats {
    /// A receiving video line was offered `at` (since the start of
    /// signaling): its first keyframe is timed from then.
    pub fn video_line_offered(&mut self, stream: usize, at: Duration) {
        self.video_lines.entry(stream).or_insert(at);
    }

    /// An RTP packet on stream `ssrc` (`meta` says what the stream is the
    /// first time it is seen; None: not ours, ignored) at generator time
    /// `now_us`. Returns the frame it completes, for [`Self::on_frame`].
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        meta: impl FnOnce() -> Option<StreamMeta>,
        packet: &PacketIn,
        now_us: u64,
    ) -> Option<(Frame, Option<Stamp>)> {
        let (meta, stream) = match self.rtp.entry(ssrc) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let meta = meta()?;
                e.insert((meta, InStream::new(meta.format)))
            }
        };
        let done = stream.on_packet(packet, now_us)?;
        let frame = match meta.kind {
            Kind::Audio => Frame::audio(meta.stream, done.bytes),
            Kind::Video => Frame::video(meta.stream, done.bytes, done.keyframe),
        };
        Some((frame, done.stamp))
    }

    /// Distinct RTP packets received on streams of `kind`.
    pub fn packets_of(&self, kind: Kind) -> u64 {
        self.rtp
            .values()
            .filter(|(m, _)| m.kind == kind)
            .map(|(_, s)| s.seq.received())
            .sum()
    }

    /// RTP packets missing from the sequences of streams of `kind`.
    pub fn packets_lost_of(&self, kind: Kind) -> u64 {
        self.rtp
            .values()
            .filter(|(m, _)| m.kind == kind)
            .map(|(_, s)| s.seq.lost())
            .sum()
    }

    /// Video lines whose first complete frame was a delta frame.
    pub fn lines_started_on_delta(&self) -> u64 {
        self.started_on_delta.len() as u64
    }

    /// Offered video lines that never completed a keyframe.
    pub fn video_lines_without_keyframe(&self) -> u64 {
        self.video_lines
            .keys()
            .filter(|l| !self.first_keyframe.contains_key(l))
            .count() as u64
    }

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
        if kind == Kind::Video && !self.first_keyframe.contains_key(&stream) {
            if frame.keyframe {
                let offered = self.video_lines.get(&stream).copied();
                let after = since_start.saturating_sub(offered.unwrap_or_default());
                self.first_keyframe.insert(stream, after);
            } else {
                self.started_on_delta.insert(stream);
            }
        }
        let Some(s) = stamp else {
            self.unstamped += 1;
            return;
        };
        let lost = match self.streams.entry((kind, stream)).or_default().on_frame(&s) {
            Gap::Lost(n) => n,
            Gap::Recovered => {
                let counted = self.frames_lost.entry(kind).or_default();
                *counted = counted.saturating_sub(1);
                if frame.steady {
                    self.steady_lost = self.steady_lost.saturating_sub(1);
                }
                0
            }
        };
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

    #[test]
    fn a_frame_completed_after_a_newer_one_is_not_lost() {
        let mut r = ReceiveStats::default();
        let t = Duration::ZERO;
        for seq in [0, 1, 3, 2, 4] {
            r.on_frame(Frame::video(1, 100, false), stamp(1, seq, 0), t, 1000);
        }
        assert_eq!(r.lost_of(Kind::Video), 0);
        assert_eq!(r.frames_of(Kind::Video), 5);
        // Older than the first frame counted: it was never counted lost.
        r.on_frame(Frame::video(2, 100, false), stamp(1, 10, 0), t, 1000);
        r.on_frame(Frame::video(2, 100, false), stamp(1, 9, 0), t, 1000);
        assert_eq!(r.lost_of(Kind::Video), 0);
    }

    #[test]
    fn the_first_keyframe_is_timed_per_video_line_from_its_offer() {
        let mut r = ReceiveStats::default();
        r.video_line_offered(1, Duration::ZERO);
        r.video_line_offered(3, Duration::from_millis(500));
        r.video_line_offered(4, Duration::from_millis(600));
        let at = |ms| Duration::from_millis(ms);
        // Line 1: delta frames first, its keyframe at 120 ms.
        r.on_frame(Frame::video(1, 100, false), stamp(2, 0, 0), at(80), 0);
        r.on_frame(Frame::video(1, 100, true), stamp(2, 1, 0), at(120), 0);
        r.on_frame(Frame::video(1, 100, true), stamp(2, 2, 0), at(3120), 0);
        // Line 3: offered at 500 ms, keyframe (unstamped) at 700 ms.
        r.on_frame(Frame::video(3, 100, true), None, at(700), 0);
        assert_eq!(r.first_keyframe.get(&1), Some(&at(120)));
        assert_eq!(r.first_keyframe.get(&3), Some(&at(200)));
        // Line 4 never got one; line 1 began with a delta frame.
        assert_eq!(r.video_lines_without_keyframe(), 1);
        assert_eq!(r.lines_started_on_delta(), 1);
    }

    #[test]
    fn packets_make_frames_and_count_their_losses() {
        use crate::packetize::{vp8, Vp8Numbering, MAX_PAYLOAD};
        use crate::stamp::{video_frame, VideoCodec};
        let mut r = ReceiveStats::default();
        let meta = StreamMeta {
            kind: Kind::Video,
            stream: 1,
            format: PayloadFormat::Vp8,
        };
        let mut n = Vp8Numbering::seeded(1);
        let mut seq = 0u16;
        let mut frames = vec![];
        // Three frames of three packets; the second frame's middle packet is lost.
        for f in 0..3u64 {
            let s = Stamp {
                layer: 0,
                seq: f,
                sent_us: f * 33_000,
            };
            let data = video_frame(VideoCodec::Vp8, f == 0, 320, 180, 3000, s);
            let payloads = vp8(&data, &mut n, MAX_PAYLOAD);
            let last = payloads.len() - 1;
            for (i, p) in payloads.iter().enumerate() {
                seq += 1;
                if f == 1 && i == 1 {
                    continue;
                }
                let packet = PacketIn {
                    seq,
                    rtp_time: f as u32 * 3000,
                    marker: i == last,
                    payload: p,
                };
                frames.extend(r.on_packet(7, || Some(meta), &packet, s.sent_us + 4_000));
            }
        }
        assert_eq!(frames.len(), 2);
        for (frame, stamp) in frames {
            r.on_frame(
                frame,
                stamp,
                Duration::ZERO,
                stamp.map_or(0, |s| s.sent_us + 4_000),
            );
        }
        assert_eq!((r.frames_of(Kind::Video), r.lost_of(Kind::Video)), (2, 1));
        assert_eq!(
            (r.packets_of(Kind::Video), r.packets_lost_of(Kind::Video)),
            (8, 1)
        );
        assert_eq!(r.packets_of(Kind::Audio), 0);
        assert_eq!(r.keyframe_delay_us.len(), 1);
        // A stream nobody can name is not counted.
        let p = PacketIn {
            seq: 1,
            rtp_time: 0,
            marker: true,
            payload: &[0x10, 0],
        };
        assert!(r.on_packet(8, || None, &p, 0).is_none());
        assert_eq!(r.packets_of(Kind::Video), 8);
    }
}
