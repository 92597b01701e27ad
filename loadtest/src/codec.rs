//! What a receiver reads from one RTP payload without depacketizing it
//! (sans-IO): whether the packet starts a frame, whether that frame is a
//! keyframe, and the measurement stamp (`stamp`) the publisher put at the
//! start of the frame's data. Per payload format:
//! - VP8 (RFC 7741): a frame starts with the S bit and partition id 0 in the
//!   payload descriptor; the VP8 payload header that follows says keyframe
//!   (P bit clear) and the stamp follows it.
//! - H.264 (RFC 6184): single NAL units, STAP-A and FU-A. An access unit
//!   starts with an SPS, an access unit delimiter, SEI or the first slice of
//!   a picture (`first_mb_in_slice` 0); SPS or IDR make it a keyframe; the
//!   stamp follows the slice header.
//! - VP9 (RFC 9628): every packet's descriptor says its spatial and
//!   temporal layer; a layer frame starts with B and ends with E (the RTP
//!   marker ends the picture); P clear makes a key picture, whose base
//!   layer opens with a keyframe header, and the stamp follows the frame
//!   header (`stamp`).
//! - AV1 (the AV1 RTP payload specification): the aggregation header and
//!   the OBUs that begin in the packet say whether it can start a frame (Z
//!   clear) and a key picture (N, or a sequence header then a KEY_FRAME
//!   frame header); the stamp follows the frame OBU's header (`av1`). The
//!   frame's layers and its first and last packet are in the dependency
//!   descriptor header extension, which `packets` reads (`dd`).
//! - Opus: every packet is a frame; the stamp follows the TOC byte.

use crate::stamp::{audio_stamp, find_stamp, video_stamp, Stamp, VideoCodec};
use crate::{av1, vp9};

/// The payload formats the generator sends and measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Opus,
    Vp8,
    H264,
    Vp9,
    Av1,
}

impl From<VideoCodec> for PayloadFormat {
    fn from(c: VideoCodec) -> PayloadFormat {
        match c {
            VideoCodec::Vp8 => PayloadFormat::Vp8,
            VideoCodec::H264 => PayloadFormat::H264,
            VideoCodec::Vp9 => PayloadFormat::Vp9,
            VideoCodec::Av1 => PayloadFormat::Av1,
        }
    }
}

/// What one packet says about its frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketView {
    /// The first packet of a frame (every audio packet).
    pub frame_start: bool,
    /// Part of a keyframe's start (VP8: its first packet; H.264: SPS or
    /// IDR; VP9: the first packet of a key picture's layer frame; AV1, from
    /// the payload alone: the first packet of a key picture).
    pub keyframe: bool,
    pub stamp: Option<Stamp>,
    /// VP9: the last packet of its layer frame (E); AV1: the descriptor's
    /// end of frame. Other formats' frames end at the RTP marker.
    pub frame_end: bool,
    /// VP9 and AV1: the packet's spatial and temporal layer.
    pub layer: Option<(u8, u8)>,
}

/// Read one RTP payload of `format`.
pub fn inspect(format: PayloadFormat, payload: &[u8]) -> PacketView {
    match format {
        PayloadFormat::Opus => PacketView {
            frame_start: true,
            keyframe: false,
            stamp: audio_stamp(payload),
            ..PacketView::default()
        },
        PayloadFormat::Vp8 => vp8(payload),
        PayloadFormat::H264 => h264(payload),
        PayloadFormat::Vp9 => vp9(payload),
        PayloadFormat::Av1 => av1(payload),
    }
}

/// An AV1 payload alone: no layers, no frame end (see the module doc).
fn av1(p: &[u8]) -> PacketView {
    let Some(v) = av1::read_payload(p) else {
        return PacketView::default();
    };
    PacketView {
        frame_start: v.starts_frame,
        keyframe: v.keyframe,
        stamp: v.stamp,
        ..PacketView::default()
    }
}

fn vp9(p: &[u8]) -> PacketView {
    let Some(d) = vp9::descriptor(p) else {
        return PacketView::default();
    };
    let data = &p[d.len..];
    PacketView {
        frame_start: d.begin,
        // A key picture (no inter-picture prediction); its base layer must
        // open with a keyframe header (frame_type 0).
        keyframe: d.begin
            && !d.inter
            && (d.spatial > 0 || data.first().is_some_and(|b| b & 0x04 == 0)),
        stamp: if d.begin {
            video_stamp(VideoCodec::Vp9, data)
        } else {
            None
        },
        frame_end: d.end,
        layer: Some((d.spatial, d.temporal)),
    }
}

/// A parsed VP8 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// Bytes of the descriptor: the VP8 data follows.
    pub len: usize,
    /// S: the packet starts a partition.
    pub start: bool,
    /// Partition index.
    pub pid: u8,
    /// The 7- or 15-bit picture id, when present.
    pub picture_id: Option<u16>,
}

/// The VP8 payload descriptor at the start of `p` (None: too short to hold
/// it and one byte of data).
pub fn vp8_descriptor(p: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *p.first()?;
    let mut len = 1;
    let mut picture_id = None;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        len = 2;
        if x & 0x80 != 0 {
            let m = *p.get(len)?;
            if m & 0x80 != 0 {
                let lo = *p.get(len + 1)?;
                picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(lo));
                len += 2;
            } else {
                picture_id = Some(u16::from(m));
                len += 1;
            }
        }
        // L: TL0PICIDX; T or K: the TID/Y/KEYIDX byte.
        len += usize::from(x & 0x40 != 0) + usize::from(x & 0x30 != 0);
    }
    (p.len() > len).then_some(Vp8Descriptor {
        len,
        start: b0 & 0x10 != 0,
        pid: b0 & 0x07,
        picture_id,
    })
}

fn vp8(p: &[u8]) -> PacketView {
    let Some(d) = vp8_descriptor(p).filter(|d| d.start && d.pid == 0) else {
        return PacketView::default();
    };
    let data = &p[d.len..];
    PacketView {
        frame_start: true,
        // The VP8 payload header's P bit: 0 for a keyframe.
        keyframe: data.first().is_some_and(|b| b & 1 == 0),
        stamp: video_stamp(VideoCodec::Vp8, data),
        ..PacketView::default()
    }
}

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;
/// The stamp follows the slice header within this many bytes.
const STAMP_SEARCH: usize = 48;

/// One NAL unit's start: its type and the bytes after its header.
fn nal(t: u8, body: &[u8]) -> PacketView {
    let slice = t == NAL_SLICE || t == NAL_IDR;
    PacketView {
        // first_mb_in_slice is ue(v): a leading 1 bit is 0, a new picture.
        frame_start: matches!(t, NAL_SPS | NAL_AUD | NAL_SEI)
            || (slice && body.first().is_some_and(|b| b & 0x80 != 0)),
        keyframe: t == NAL_IDR || t == NAL_SPS,
        stamp: if slice {
            find_stamp(&body[..body.len().min(STAMP_SEARCH)])
        } else {
            None
        },
        ..PacketView::default()
    }
}

fn h264(p: &[u8]) -> PacketView {
    let Some(&b0) = p.first() else {
        return PacketView::default();
    };
    match b0 & 0x1f {
        t @ 1..=23 => nal(t, &p[1..]),
        STAP_A => {
            let mut view = PacketView::default();
            let mut rest = &p[1..];
            let mut first = true;
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some((unit, after)) = tail.split_at_checked(size) else {
                    break;
                };
                if let Some((&h, body)) = unit.split_first() {
                    let v = nal(h & 0x1f, body);
                    view.frame_start |= first && v.frame_start;
                    view.keyframe |= v.keyframe;
                    view.stamp = view.stamp.or(v.stamp);
                    first = false;
                }
                rest = after;
            }
            view
        }
        FU_A => match p.get(1) {
            // Only the first fragment (S bit) holds the unit's start.
            Some(&fu) if fu & 0x80 != 0 => nal(fu & 0x1f, &p[2..]),
            _ => PacketView::default(),
        },
        _ => PacketView::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{audio_frame, video_frame};

    const S: Stamp = Stamp {
        layer: 1,
        seq: 77,
        sent_us: 123_456,
    };

    #[test]
    fn vp8_descriptors_of_every_shape_are_read() {
        // Minimal: S, PID 0.
        let d = vp8_descriptor(&[0x10, 0xaa]).expect("minimal");
        assert_eq!((d.len, d.start, d.pid, d.picture_id), (1, true, 0, None));
        // X, I (15-bit picture id 0x1234), L, T.
        let p = [0x90, 0xe0, 0x80 | 0x12, 0x34, 7, 0x20, 0xaa];
        let d = vp8_descriptor(&p).expect("full");
        assert_eq!((d.len, d.picture_id), (6, Some(0x1234)));
        // 7-bit picture id, K only; a continuation packet of partition 1.
        let d = vp8_descriptor(&[0x81, 0x90, 0x05, 0x01, 0xaa]).expect("short id");
        assert_eq!(
            (d.len, d.start, d.pid, d.picture_id),
            (4, false, 1, Some(5))
        );
        // Cut short, or no data after the descriptor.
        assert_eq!(vp8_descriptor(&[0x90, 0xe0, 0x80]), None);
        assert_eq!(vp8_descriptor(&[0x10]), None);
        assert_eq!(vp8_descriptor(&[]), None);
    }

    #[test]
    fn a_vp8_frame_start_says_keyframe_and_carries_the_stamp() {
        for key in [true, false] {
            let frame = video_frame(VideoCodec::Vp8, key, 640, 360, 900, S);
            let mut p = vec![0x90, 0x80, 0x80, 0x01];
            p.extend_from_slice(&frame[..300]);
            let v = inspect(PayloadFormat::Vp8, &p);
            assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, key, Some(S)));
            // The same bytes without S: a continuation, nothing to read.
            p[0] = 0x80;
            assert_eq!(inspect(PayloadFormat::Vp8, &p), PacketView::default());
        }
        // S on a later partition does not start a frame.
        assert!(!inspect(PayloadFormat::Vp8, &[0x11, 0x00, 0x01]).frame_start);
    }

    /// The NAL units of an Annex B access unit.
    fn units(au: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = vec![];
        let mut i = 0;
        while i + 4 <= au.len() {
            if au[i..i + 4] == [0, 0, 0, 1] {
                out.push(vec![]);
                i += 4;
                continue;
            }
            if let Some(u) = out.last_mut() {
                u.push(au[i]);
            }
            i += 1;
        }
        if let Some(u) = out.last_mut() {
            u.extend_from_slice(&au[i..]);
        }
        out
    }

    #[test]
    fn h264_single_stap_a_and_fu_a_starts_are_recognised() {
        let key = units(&video_frame(VideoCodec::H264, true, 0, 0, 600, S));
        let (sps, pps, idr) = (&key[0], &key[1], &key[2]);
        // STAP-A of SPS and PPS (as str0m sends a keyframe's start).
        let mut stap = vec![STAP_A];
        for u in [sps, pps] {
            stap.extend_from_slice(&(u.len() as u16).to_be_bytes());
            stap.extend_from_slice(u);
        }
        let v = inspect(PayloadFormat::H264, &stap);
        assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, true, None));
        // The IDR slice's first FU-A fragment: start, key, the stamp.
        let mut fu = vec![0x60 | FU_A, 0x80 | NAL_IDR];
        fu.extend_from_slice(&idr[1..200]);
        let v = inspect(PayloadFormat::H264, &fu);
        assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, true, Some(S)));
        // A middle fragment says nothing.
        fu[1] = NAL_IDR;
        assert_eq!(inspect(PayloadFormat::H264, &fu), PacketView::default());
        // A delta frame as a single NAL unit.
        let delta = units(&video_frame(VideoCodec::H264, false, 0, 0, 300, S));
        let v = inspect(PayloadFormat::H264, &delta[0]);
        assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, false, Some(S)));
        // A STAP-A holding the whole keyframe: start, key and stamp.
        let mut all = vec![STAP_A];
        for u in &key {
            all.extend_from_slice(&(u.len() as u16).to_be_bytes());
            all.extend_from_slice(u);
        }
        let v = inspect(PayloadFormat::H264, &all);
        assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, true, Some(S)));
        // A second slice of a picture (first_mb_in_slice > 0) does not start one.
        assert!(!inspect(PayloadFormat::H264, &[0x41, 0x40, 0x00]).frame_start);
        // Truncated STAP-A and empty payloads are not read past their end.
        assert_eq!(
            inspect(PayloadFormat::H264, &[STAP_A, 0, 9, 0x67]).stamp,
            None
        );
        assert_eq!(inspect(PayloadFormat::H264, &[]), PacketView::default());
    }

    #[test]
    fn every_opus_packet_is_a_stamped_frame() {
        let v = inspect(PayloadFormat::Opus, &audio_frame(120, S));
        assert_eq!((v.frame_start, v.keyframe, v.stamp), (true, false, Some(S)));
        assert_eq!(inspect(PayloadFormat::Opus, &[0x0c]).stamp, None);
    }
}
