//! What one virtual receiver measured (sans-IO): RTP packets received and
//! lost per stream (`packets`), one-way delay of every stamped frame,
//! frames lost (gaps in a layer's sequence), bitrate, the layer it is on,
//! the time to each video line's first keyframe; for a scalable stream
//! (VP9 from its payload descriptor, AV1 from its dependency descriptor
//! read with the stream's latest structure), frames per spatial layer and
//! the top layer of the newest picture. Each peer owns its own;
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
    /// Layered streams: the stream's lost packets at the newest frame.
    packets_lost: u64,
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

    /// A frame of one (spatial, temporal) layer of a stream the server
    /// thins on purpose (VP9, AV1). A gap counts as lost only when the stream's
    /// RTP sequence lost packets meanwhile (`packets_lost`, the stream's
    /// count now): frames the server skipped on purpose leave no hole in
    /// the sequence it sends.
    fn on_layered_frame(&mut self, s: &Stamp, packets_lost: u64) -> Gap {
        let holes = packets_lost > self.packets_lost;
        let gap = self.on_frame(s);
        if s.seq >= self.last.map_or(0, |(_, seq)| seq) {
            self.packets_lost = packets_lost;
        }
        match gap {
            Gap::Lost(_) if !holes => Gap::Lost(0),
            g => g,
        }
    }
}

/// Frames are numbered per (kind, media line) and, in a layered stream,
/// per (spatial, temporal) layer.
type CounterKey = (Kind, usize, Option<(u8, u8)>);

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
    /// A frame of a layered stream (VP9, AV1), whose layers the server may
    /// drop for this receiver.
    pub layered: Option<Layered>,
}

/// A layered stream's frame: its temporal layer (its spatial layer is the
/// stamp's), the stream's lost packets when it completed, and whether it
/// ended its picture (the RTP marker: the server puts it on the top layer
/// it sends this receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layered {
    pub temporal: u8,
    pub packets_lost: u64,
    pub ends_picture: bool,
}

impl Frame {
    pub fn audio(stream: usize, len: usize) -> Frame {
        Frame {
            kind: Kind::Audio,
            keyframe: false,
            stream,
            len,
            steady: false,
            layered: None,
        }
    }

    pub fn video(stream: usize, len: usize, keyframe: bool) -> Frame {
        Frame {
            kind: Kind::Video,
            keyframe,
            stream,
            len,
            steady: false,
            layered: None,
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
    /// Video frames received per layer index (a scalable stream's:
    /// per spatial layer).
    pub layer_frames: [u64; 4],
    /// The video layer of the last frame (a layered stream: the spatial
    /// layer of the last frame that ended a picture, the top one this
    /// receiver gets).
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
    /// Frame numbering per stream (see `CounterKey`).
    streams: HashMap<CounterKey, StreamCounter>,
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
            Kind::Video => Frame {
                layered: done.temporal.map(|temporal| Layered {
                    temporal,
                    packets_lost: stream.seq.lost(),
                    ends_picture: done.marker,
                }),
                ..Frame::video(meta.stream, done.bytes, done.keyframe)
            },
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
        let key = (kind, stream, frame.layered.map(|l| (s.layer, l.temporal)));
        let counter = self.streams.entry(key).or_default();
        let gap = match frame.layered {
            Some(l) => counter.on_layered_frame(&s, l.packets_lost),
            None => counter.on_frame(&s),
        };
        let lost = match gap {
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
            // A picture cut short (the run ends before its top layer's
            // frame completes) does not count.
            if frame.layered.is_none_or(|l| l.ends_picture) {
                self.current_layer = Some(s.layer);
            }
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
#[path = "receive_tests.rs"]
mod tests;
