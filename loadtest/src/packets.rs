//! Per-stream accounting of received RTP packets (sans-IO), for receivers
//! in str0m's RTP mode: packets counted and lost (gaps in the 16-bit
//! sequence, extended across wraparound, with reordered packets filling
//! their gap and duplicates ignored), and frames put together from their
//! packets without depacketizing: a frame is complete when every sequence
//! number from its first packet (`codec::PacketView::frame_start`) to its
//! marker packet has arrived. Its stamp, read from its first packets, then
//! gives the one-way delay to its completion and the frame losses, as a
//! frame-mode receiver measured them. In a VP9 stream each spatial layer's
//! frame is a frame of its own: the packets of its layer and RTP time from
//! its first (B) to its last (E); in an AV1 stream likewise, with layers,
//! first and last packet from the dependency descriptor (read with the
//! latest structure of the stream: `dd`).

use crate::codec::{inspect, PacketView, PayloadFormat};
use crate::dd::DdReader;
use crate::stamp::Stamp;

/// Sequence numbers remembered behind the highest one: a packet this late
/// still fills its gap, and a duplicate is still recognised.
const SEQ_WINDOW: u64 = 128;

/// Packets received and lost on one RTP stream (one SSRC).
#[derive(Debug, Clone, Default)]
pub struct SeqCounter {
    /// Lowest and highest extended sequence numbers seen.
    span: Option<(u64, u64)>,
    /// Bit i: highest - i was received.
    window: u128,
    received: u64,
}

impl SeqCounter {
    /// Count a packet; its extended sequence number, or None for a
    /// duplicate or a packet too late to place.
    pub fn on_packet(&mut self, seq: u16) -> Option<u64> {
        let Some((low, high)) = self.span else {
            // Start one cycle up, so packets older than the first extend.
            let ext = (1 << 16) + u64::from(seq);
            self.span = Some((ext, ext));
            self.window = 1;
            self.received = 1;
            return Some(ext);
        };
        let delta = i64::from(seq.wrapping_sub(high as u16) as i16);
        let ext = high.checked_add_signed(delta)?;
        if ext > high {
            let shift = ext - high;
            self.window = if shift >= SEQ_WINDOW {
                1
            } else {
                (self.window << shift) | 1
            };
            self.span = Some((low, ext));
        } else {
            let behind = high - ext;
            if behind >= SEQ_WINDOW || self.window & (1 << behind) != 0 {
                return None;
            }
            self.window |= 1 << behind;
            self.span = Some((low.min(ext), high));
        }
        self.received += 1;
        Some(ext)
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets missing between the lowest and highest received.
    pub fn lost(&self) -> u64 {
        self.span.map_or(0, |(low, high)| {
            (high - low + 1).saturating_sub(self.received)
        })
    }
}

/// A video frame whose packets are still arriving.
#[derive(Debug, Clone)]
struct Pending {
    rtp_time: u32,
    /// VP9, AV1: spatial layer (0 otherwise).
    spatial: u8,
    /// VP9, AV1: temporal layer.
    temporal: Option<u8>,
    /// A packet of it carried the RTP marker.
    marker: bool,
    /// Extended sequence numbers of its first and its last packet (the
    /// marker's; VP9: E's; AV1: the descriptor's end of frame).
    first: Option<u64>,
    last: Option<u64>,
    /// Extended sequence number and payload bytes of each packet.
    packets: Vec<(u64, usize)>,
    keyframe: bool,
    stamp: Option<Stamp>,
    since_us: u64,
}

impl Pending {
    fn new(rtp_time: u32, spatial: u8, since_us: u64) -> Pending {
        Pending {
            rtp_time,
            spatial,
            temporal: None,
            marker: false,
            first: None,
            last: None,
            packets: Vec::new(),
            keyframe: false,
            stamp: None,
            since_us,
        }
    }

    /// The frame, when every packet from its first to its marker packet
    /// is there.
    fn complete(&self) -> Option<CompleteFrame> {
        let (first, last) = (self.first?, self.last?);
        let range = first..=last;
        let (mut n, mut bytes) = (0, 0);
        for (seq, len) in &self.packets {
            if range.contains(seq) {
                n += 1;
                bytes += len;
            }
        }
        (last >= first && n == last - first + 1).then_some(CompleteFrame {
            keyframe: self.keyframe,
            bytes,
            stamp: self.stamp,
            temporal: self.temporal,
            marker: self.marker,
        })
    }
}

/// A frame whose packets have all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompleteFrame {
    pub keyframe: bool,
    /// Payload bytes of its packets.
    pub bytes: usize,
    pub stamp: Option<Stamp>,
    /// VP9, AV1: the frame's temporal layer.
    pub temporal: Option<u8>,
    /// Its last packet carried the RTP marker: for a VP9 or AV1 layer
    /// frame, the top layer of the picture as the receiver gets it.
    pub marker: bool,
}

/// An incomplete frame is given up after this long (its loss shows as a
/// gap in the stamps' frame numbers when the next frame completes).
const PENDING_US: u64 = 3_000_000;
/// At most this many incomplete frames are kept per stream.
const MAX_PENDING: usize = 32;

/// Video frames put together from packets, by RTP timestamp.
#[derive(Debug, Clone, Default)]
pub struct FrameAssembler {
    pending: Vec<Pending>,
}

/// One received packet, as read from its header and payload.
#[derive(Debug, Clone, Copy)]
pub struct PacketIn<'a> {
    pub seq: u16,
    pub rtp_time: u32,
    pub marker: bool,
    pub payload: &'a [u8],
    /// The AV1 dependency descriptor's bytes, when the packet has one.
    pub dd: Option<&'a [u8]>,
}

impl FrameAssembler {
    /// Add a packet (`seq` extended) that arrived at `now_us`, as `view`
    /// reads it (`layered`: a VP9 or AV1 stream, whose layer frames end at
    /// `view.frame_end`); the frame it completes, if any.
    pub fn on_packet(
        &mut self,
        seq: u64,
        p: &PacketIn,
        view: PacketView,
        layered: bool,
        now_us: u64,
    ) -> Option<CompleteFrame> {
        self.pending
            .retain(|f| now_us.saturating_sub(f.since_us) < PENDING_US);
        let spatial = view.layer.map_or(0, |(s, _)| s);
        let i = match self
            .pending
            .iter()
            .position(|f| f.rtp_time == p.rtp_time && f.spatial == spatial)
        {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.remove(0);
                }
                self.pending.push(Pending::new(p.rtp_time, spatial, now_us));
                self.pending.len() - 1
            }
        };
        let f = &mut self.pending[i];
        // Another frame with the same RTP time (simulcast layers share
        // capture times: a frame of the old layer cut short by a switch,
        // then the new layer's): the old one is given up.
        if view.stamp.is_some() && f.stamp.is_some() && view.stamp != f.stamp {
            *f = Pending::new(p.rtp_time, spatial, now_us);
        }
        f.packets.push((seq, p.payload.len()));
        f.keyframe |= view.keyframe;
        f.stamp = f.stamp.or(view.stamp);
        if view.frame_start && f.first.is_none_or(|s| seq < s) {
            f.first = Some(seq);
        }
        f.temporal = f.temporal.or(view.layer.map(|(_, t)| t));
        // A layer frame ends at E (the marker ends the picture).
        let ends = match layered {
            true => view.frame_end,
            false => p.marker,
        };
        if ends {
            f.last = Some(seq);
        }
        f.marker |= p.marker;
        let done = f.complete()?;
        self.pending.remove(i);
        Some(done)
    }
}

/// One incoming RTP stream: its packets and its frames.
#[derive(Debug, Clone)]
pub struct InStream {
    pub format: PayloadFormat,
    pub seq: SeqCounter,
    frames: FrameAssembler,
    /// AV1: the stream's dependency descriptors.
    pub dd: DdReader,
}

impl InStream {
    pub fn new(format: PayloadFormat) -> InStream {
        InStream {
            format,
            seq: SeqCounter::default(),
            frames: FrameAssembler::default(),
            dd: DdReader::default(),
        }
    }

    /// What a video packet says about its frame: its payload, and for AV1
    /// its dependency descriptor (without a readable one the packet belongs
    /// to no frame).
    fn view(&mut self, p: &PacketIn) -> PacketView {
        let view = inspect(self.format, p.payload);
        if self.format != PayloadFormat::Av1 {
            return view;
        }
        let Some(d) = p.dd.and_then(|b| self.dd.read(b)) else {
            return PacketView::default();
        };
        PacketView {
            frame_start: d.start,
            // A key picture's frame; its base layer's payload says KEY_FRAME.
            keyframe: d.start && d.key_picture && (d.spatial > 0 || view.keyframe),
            stamp: view.stamp.filter(|_| d.start),
            frame_end: d.end,
            layer: Some((d.spatial, d.temporal)),
        }
    }

    /// A packet that arrived at `now_us`; the frame it completes (every
    /// audio packet is one). Duplicates and empty payloads (padding)
    /// complete nothing.
    pub fn on_packet(&mut self, p: &PacketIn, now_us: u64) -> Option<CompleteFrame> {
        let seq = self.seq.on_packet(p.seq)?;
        if p.payload.is_empty() {
            return None;
        }
        match self.format {
            PayloadFormat::Opus => {
                let view = inspect(self.format, p.payload);
                Some(CompleteFrame {
                    keyframe: false,
                    bytes: p.payload.len(),
                    stamp: view.stamp,
                    temporal: None,
                    marker: p.marker,
                })
            }
            format => {
                let view = self.view(p);
                let layered = matches!(format, PayloadFormat::Vp9 | PayloadFormat::Av1);
                self.frames.on_packet(seq, p, view, layered, now_us)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packetize::{vp8, Vp8Numbering, MAX_PAYLOAD};
    use crate::stamp::{video_frame, VideoCodec};

    fn count(seqs: &[u16]) -> SeqCounter {
        let mut c = SeqCounter::default();
        for s in seqs {
            c.on_packet(*s);
        }
        c
    }

    #[test]
    fn gaps_are_lost_packets_and_late_packets_fill_them() {
        let c = count(&[10, 11, 14, 15]);
        assert_eq!((c.received(), c.lost()), (4, 2));
        // 12 and 13 arrive late, out of order: nothing lost.
        let c = count(&[10, 11, 14, 13, 15, 12]);
        assert_eq!((c.received(), c.lost()), (6, 0));
        // A packet older than the first one widens the span.
        let c = count(&[10, 8, 11]);
        assert_eq!((c.received(), c.lost()), (3, 1));
    }

    #[test]
    fn duplicates_count_once() {
        let mut c = count(&[1, 2, 3]);
        assert_eq!(c.on_packet(2), None);
        assert_eq!(c.on_packet(3), None);
        assert_eq!((c.received(), c.lost()), (3, 0));
    }

    #[test]
    fn the_sequence_extends_across_wraparound_both_ways() {
        let mut c = SeqCounter::default();
        let first = c.on_packet(65_534).expect("first");
        assert_eq!(c.on_packet(65_535), Some(first + 1));
        assert_eq!(c.on_packet(1), Some(first + 3), "0 is missing");
        // 0 arrives after the wrap, reordered: it fills the gap.
        assert_eq!(c.on_packet(0), Some(first + 2));
        assert_eq!((c.received(), c.lost()), (4, 0));
        // Several cycles of 65,536 with every 1000th packet dropped.
        let mut c = SeqCounter::default();
        let mut dropped = 0;
        for i in 0..200_000u32 {
            if i % 1000 == 500 {
                dropped += 1;
                continue;
            }
            c.on_packet(i as u16);
        }
        assert_eq!(c.lost(), dropped);
        // A packet from before the wrap, reordered after it.
        let mut c = count(&[65_530, 65_531, 65_533, 65_534, 65_535, 0, 1]);
        assert_eq!(c.lost(), 1);
        c.on_packet(65_532);
        assert_eq!((c.received(), c.lost()), (8, 0));
    }

    #[test]
    fn a_packet_too_late_for_the_window_is_not_counted() {
        let mut c = count(&[0, 1]);
        c.on_packet(300);
        assert_eq!(c.on_packet(2), None);
        assert_eq!(c.lost(), 298);
    }

    const S: Stamp = Stamp {
        layer: 1,
        seq: 5,
        sent_us: 2_000,
    };

    /// A VP8 frame's packets as (seq, marker, payload).
    fn vp8_packets(first_seq: u16, key: bool, len: usize) -> Vec<(u16, bool, Vec<u8>)> {
        let frame = video_frame(VideoCodec::Vp8, key, 640, 360, len, S);
        let payloads = vp8(&frame, &mut Vp8Numbering::seeded(7), MAX_PAYLOAD);
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| (first_seq.wrapping_add(i as u16), i + 1 == n, p))
            .collect()
    }

    fn feed(s: &mut InStream, ts: u32, packets: &[&(u16, bool, Vec<u8>)]) -> Vec<CompleteFrame> {
        packets
            .iter()
            .filter_map(|(seq, marker, payload)| {
                let p = PacketIn {
                    seq: *seq,
                    rtp_time: ts,
                    marker: *marker,
                    payload,
                    dd: None,
                };
                s.on_packet(&p, 10_000)
            })
            .collect()
    }

    #[test]
    fn a_frame_completes_with_its_last_missing_packet_in_any_order() {
        let mut s = InStream::new(PayloadFormat::Vp8);
        let key = vp8_packets(65_533, true, 4_000);
        assert_eq!(key.len(), 4);
        // Marker first, then the rest out of order across the wrap.
        let done = feed(&mut s, 90_000, &[&key[3], &key[1], &key[0]]);
        assert!(done.is_empty());
        let done = feed(&mut s, 90_000, &[&key[2]]);
        let bytes: usize = key.iter().map(|p| p.2.len()).sum();
        let want = CompleteFrame {
            keyframe: true,
            bytes,
            stamp: Some(S),
            temporal: None,
            marker: true,
        };
        assert_eq!(done, vec![want]);
        // A duplicate afterwards completes nothing.
        assert!(feed(&mut s, 90_000, &[&key[2]]).is_empty());
        assert_eq!((s.seq.received(), s.seq.lost()), (4, 0));
    }

    #[test]
    fn a_frame_missing_a_packet_never_completes_and_the_next_one_does() {
        let mut s = InStream::new(PayloadFormat::Vp8);
        let a = vp8_packets(100, false, 3_000);
        let b = vp8_packets(103, false, 600);
        assert!(feed(&mut s, 1_000, &[&a[0], &a[2]]).is_empty());
        let done = feed(&mut s, 4_000, &[&b[0]]);
        assert_eq!(done.len(), 1);
        assert!(!done[0].keyframe);
        assert_eq!((s.seq.received(), s.seq.lost()), (3, 1));
        // A frame whose first packet is lost has no start: never complete.
        let c = vp8_packets(104, false, 3_000);
        assert!(feed(&mut s, 7_000, &[&c[1], &c[2]]).is_empty());
    }

    #[test]
    fn a_frame_cut_short_by_a_layer_switch_does_not_merge_with_the_next() {
        // Layer 2's frame at RTP time 9000 loses its tail to a switch; the
        // new layer's keyframe of the same capture time follows at once,
        // its sequence numbers continuing the old ones.
        let mut s = InStream::new(PayloadFormat::Vp8);
        let old = vp8_packets(500, false, 3_000);
        assert!(feed(&mut s, 9_000, &[&old[0], &old[1]]).is_empty());
        let frame = video_frame(
            VideoCodec::Vp8,
            true,
            320,
            180,
            2_500,
            Stamp { layer: 0, ..S },
        );
        let key: Vec<(u16, bool, Vec<u8>)> = vp8(&frame, &mut Vp8Numbering::seeded(3), MAX_PAYLOAD)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (502 + i as u16, i == 2, p))
            .collect();
        let done = feed(&mut s, 9_000, &[&key[0], &key[1], &key[2]]);
        assert_eq!(done.len(), 1);
        assert!(done[0].keyframe);
        assert_eq!(done[0].stamp.map(|s| s.layer), Some(0));
        assert_eq!(done[0].bytes, key.iter().map(|p| p.2.len()).sum::<usize>());
    }

    #[test]
    fn packets_of_the_same_time_outside_the_frame_do_not_block_it() {
        // A stray packet with the frame's RTP time before its first packet
        // (the tail of an unstamped, cut-short frame).
        let mut s = InStream::new(PayloadFormat::Vp8);
        let stray = (99u16, false, vec![0x00, 0xaa, 0xbb]);
        let frame = vp8_packets(100, false, 2_000);
        let done = feed(&mut s, 5_000, &[&stray, &frame[0], &frame[1]]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].stamp, Some(S));
    }

    #[test]
    fn each_spatial_layer_of_a_vp9_picture_is_a_frame_of_its_own() {
        use crate::vp9::{packetize, Structure, Vp9Layer, Vp9Numbering};
        let structure = Structure {
            spatial_layers: 3,
            temporal_layers: 1,
            sizes: [(320, 180), (640, 360), (1280, 720)],
        };
        let mut n = Vp9Numbering::seeded(5);
        // One key picture: layers of 1, 2 and 3 packets; (layer, payload).
        let mut packets = vec![];
        for (sid, len) in [(0u8, 900), (1, 1_800), (2, 3_000)] {
            let stamp = Stamp { layer: sid, ..S };
            let frame = video_frame(VideoCodec::Vp9, sid == 0, 320, 180, len, stamp);
            let layer = Vp9Layer {
                spatial: sid,
                temporal: 0,
                switch_up: false,
                structure,
            };
            for p in packetize(&frame, &layer, true, &mut n, MAX_PAYLOAD) {
                packets.push((sid, p));
            }
        }
        assert_eq!(packets.len(), 6);
        // As a viewer held to two layers gets it: the top layer skipped
        // (the sequence closed over it), the marker on layer 1's end.
        let mut s = InStream::new(PayloadFormat::Vp9);
        let mut done = vec![];
        for (i, (_, p)) in packets.iter().filter(|(sid, _)| *sid < 2).enumerate() {
            let packet = PacketIn {
                seq: 10 + i as u16,
                rtp_time: 3_000,
                marker: i == 2,
                payload: p,
                dd: None,
            };
            done.extend(s.on_packet(&packet, 0));
        }
        let layers: Vec<_> = done
            .iter()
            .map(|f| (f.stamp.map(|s| s.layer), f.keyframe, f.temporal, f.marker))
            .collect();
        let want = [(0, false), (1, true)].map(|(l, m)| (Some(l), true, Some(0), m));
        assert_eq!(layers, want);
        assert_eq!((s.seq.received(), s.seq.lost()), (3, 0));
        // Every layer, one packet of layer 1 lost: layers 0 and 2 complete
        // (each at its E, the marker aside), layer 1 never does.
        let mut s = InStream::new(PayloadFormat::Vp9);
        let mut done = vec![];
        for (i, (_, p)) in packets.iter().enumerate() {
            if i == 2 {
                continue;
            }
            let packet = PacketIn {
                seq: 100 + i as u16,
                rtp_time: 6_000,
                marker: i == 5,
                payload: p,
                dd: None,
            };
            done.extend(s.on_packet(&packet, 0));
        }
        let layers: Vec<_> = done.iter().map(|f| f.stamp.map(|s| s.layer)).collect();
        assert_eq!(layers, vec![Some(0), Some(2)]);
        assert_eq!(s.seq.lost(), 1);
    }

    #[test]
    fn every_audio_packet_is_a_frame_and_padding_is_not() {
        let mut s = InStream::new(PayloadFormat::Opus);
        let audio = crate::stamp::audio_frame(120, S);
        let p = PacketIn {
            seq: 1,
            rtp_time: 960,
            marker: false,
            payload: &audio,
            dd: None,
        };
        let done = s.on_packet(&p, 0).expect("a frame");
        assert_eq!((done.stamp, done.bytes), (Some(S), 120));
        let pad = PacketIn {
            seq: 2,
            payload: &[],
            ..p
        };
        assert_eq!(s.on_packet(&pad, 0), None);
        assert_eq!(s.seq.received(), 2);
    }
}
