//! The measurement stamp every synthetic frame carries, and the frames
//! that carry it: VP8, VP9, H.264 and AV1 bitstreams with real keyframe
//! structure (a VP8 keyframe header with its picture size; the start of a
//! VP9 uncompressed header: a keyframe's with sync code, color config and
//! frame size, a delta frame's first bytes; H.264 SPS/PPS/IDR; AV1 OBUs,
//! see `av1`) and an Opus-sized audio payload. The stamp (stream layer, sequence number,
//! send time) lets the receiver measure one-way delay through the server
//! and count lost frames exactly. It is written with the high bit of every
//! byte set, so it never forms an H.264 start code.

/// What a receiver learns from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the simulcast layer, or the spatial layer of a scalable
    /// stream (0 = lowest); 0 for audio.
    pub layer: u8,
    /// Frame number within (stream, layer), from 0; in a stream with
    /// temporal layers, within (stream, layer, temporal layer).
    pub seq: u64,
    /// Send time in microseconds since the generator's clock origin.
    pub sent_us: u64,
}

const MAGIC: [u8; 2] = [0xDA, 0xB5];
/// Bytes of an encoded stamp: magic, layer, 2 × u64 in 7-bit groups.
pub const STAMP_LEN: usize = 2 + 1 + 10 + 10;

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    for _ in 0..10 {
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
}

fn get_u64(b: &[u8]) -> u64 {
    b.iter()
        .take(10)
        .rev()
        .fold(0u64, |acc, byte| (acc << 7) | u64::from(byte & 0x7f))
}

impl Stamp {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(0x80 | (self.layer & 0x7f));
        put_u64(out, self.seq);
        put_u64(out, self.sent_us);
    }

    /// The stamp at `offset` in `data`, if one is there.
    pub fn decode_at(data: &[u8], offset: usize) -> Option<Stamp> {
        let b = data.get(offset..offset + STAMP_LEN)?;
        if b[..2] != MAGIC || b[2..].iter().any(|x| x & 0x80 == 0) {
            return None;
        }
        Some(Stamp {
            layer: b[2] & 0x7f,
            seq: get_u64(&b[3..13]),
            sent_us: get_u64(&b[13..23]),
        })
    }
}

/// Video codecs the generator can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    Vp8,
    H264,
    Vp9,
    /// Scalable streams only (`--svc-codec av1`): every AV1 stream carries
    /// the dependency descriptor.
    #[value(skip)]
    Av1,
}

const VP8_KEY_HEADER: usize = 10;
const VP8_DELTA_HEADER: usize = 3;
/// Where the stamp sits in an H.264 access unit: after the slice NAL header.
const H264_KEY_PREFIX: &[u8] = &[
    0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0, // SPS
    0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, // PPS
    0, 0, 0, 1, 0x65, 0x88, 0x84, // IDR slice
];
const H264_DELTA_PREFIX: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02];
/// A VP9 keyframe's uncompressed header up to its frame size (profile 0).
const VP9_KEY_HEADER: usize = 9;
/// A VP9 delta frame's first bytes: 86 = frame_marker 2, profile 0,
/// show_existing_frame 0, frame_type NON_KEY, show_frame 1 (the rest as a
/// libvpx frame's).
const VP9_DELTA_HEADER: &[u8] = &[0x86, 0x00, 0x40];

/// The start of a VP9 keyframe's `uncompressed_header()` (VP9 bitstream
/// 6.2): 82 = frame_marker 2, profile 0, show_existing_frame 0, frame_type
/// KEY, show_frame 1, error_resilient_mode 0; the sync code 49 83 42; then
/// 40 bits: color_space 0 and color_range 0 (4), frame_width_minus_1 and
/// frame_height_minus_1 (16 each), render_and_frame_size_different 0, and
/// three bits of what follows.
fn vp9_key_header(width: u32, height: u32) -> [u8; VP9_KEY_HEADER] {
    let w = u64::from(width.clamp(1, 1 << 16) - 1);
    let h = u64::from(height.clamp(1, 1 << 16) - 1);
    let size = ((w << 20) | (h << 4)).to_be_bytes();
    let mut out = [0x82, 0x49, 0x83, 0x42, 0, 0, 0, 0, 0];
    out[4..].copy_from_slice(&size[3..8]);
    out
}

/// A video frame of about `len` bytes carrying `stamp`.
pub fn video_frame(
    codec: VideoCodec,
    keyframe: bool,
    width: u32,
    height: u32,
    len: usize,
    stamp: Stamp,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(64));
    match codec {
        VideoCodec::Vp8 if keyframe => {
            // Frame tag (key, version 0, show_frame, partition size), start code, size.
            let w = (width.min(0x3fff) as u16).to_le_bytes();
            let h = (height.min(0x3fff) as u16).to_le_bytes();
            f.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, w[0], w[1], h[0], h[1]]);
        }
        VideoCodec::Vp8 => f.extend_from_slice(&[0x11, 0x02, 0x00]),
        VideoCodec::H264 if keyframe => f.extend_from_slice(H264_KEY_PREFIX),
        VideoCodec::H264 => f.extend_from_slice(H264_DELTA_PREFIX),
        VideoCodec::Vp9 if keyframe => f.extend_from_slice(&vp9_key_header(width, height)),
        VideoCodec::Vp9 => f.extend_from_slice(VP9_DELTA_HEADER),
        VideoCodec::Av1 => {
            let layer = crate::vp9::Vp9Layer::single(width, height);
            return crate::av1::frame(&layer, keyframe, len, stamp);
        }
    }
    stamp.encode(&mut f);
    // Filler with the high bit set: no start-code emulation in H.264.
    let seed = stamp.seq as u8;
    while f.len() < len {
        f.push(0x80 | (f.len() as u8 ^ seed));
    }
    f
}

/// The stamp in a received video frame (the depacketized bitstream).
pub fn video_stamp(codec: VideoCodec, frame: &[u8]) -> Option<Stamp> {
    match codec {
        VideoCodec::Vp8 => {
            let keyframe = frame.first()? & 1 == 0;
            let at = if keyframe {
                VP8_KEY_HEADER
            } else {
                VP8_DELTA_HEADER
            };
            Stamp::decode_at(frame, at)
        }
        // Depacketizers may rewrite start codes (3 or 4 bytes): find the magic.
        VideoCodec::H264 => find_stamp(frame),
        VideoCodec::Vp9 => {
            // frame_type (profile 0, show_existing_frame 0): 0 is KEY.
            let at = if frame.first()? & 0x04 == 0 {
                VP9_KEY_HEADER
            } else {
                VP9_DELTA_HEADER.len()
            };
            Stamp::decode_at(frame, at)
        }
        VideoCodec::Av1 => crate::av1::frame_stamp(frame),
    }
}

/// The first stamp in `data`, wherever it starts (an H.264 NAL unit or
/// access unit: the stamp follows the slice header).
pub fn find_stamp(data: &[u8]) -> Option<Stamp> {
    let pos = data.windows(2).position(|w| w == MAGIC)?;
    Stamp::decode_at(data, pos)
}

/// An Opus-sized audio payload (`len` bytes) carrying `stamp`.
pub fn audio_frame(len: usize, stamp: Stamp) -> Vec<u8> {
    // TOC byte: SILK-only 20 ms mono, one frame; the rest is opaque to the SFU.
    let mut f = Vec::with_capacity(len.max(STAMP_LEN + 1));
    f.push(0x0c);
    stamp.encode(&mut f);
    while f.len() < len {
        f.push(0x80 | f.len() as u8);
    }
    f
}

pub fn audio_stamp(frame: &[u8]) -> Option<Stamp> {
    Stamp::decode_at(frame, 1)
}

/// Picture width of a VP8 keyframe (what a decoder would report).
pub fn vp8_width(frame: &[u8]) -> Option<u32> {
    (frame.len() >= VP8_KEY_HEADER && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        layer: 2,
        seq: 123_456_789,
        sent_us: 9_876_543_210_123,
    };

    #[test]
    fn stamp_round_trips_in_every_frame_kind() {
        let all = [
            VideoCodec::Vp8,
            VideoCodec::H264,
            VideoCodec::Vp9,
            VideoCodec::Av1,
        ];
        for codec in all {
            for key in [true, false] {
                let f = video_frame(codec, key, 1280, 720, 1000, S);
                assert_eq!(f.len(), 1000, "{codec:?}");
                assert_eq!(video_stamp(codec, &f), Some(S), "{codec:?} key={key}");
            }
        }
        assert_eq!(audio_stamp(&audio_frame(120, S)), Some(S));
    }

    #[test]
    fn vp8_keyframe_carries_its_picture_size() {
        let f = video_frame(VideoCodec::Vp8, true, 640, 360, 500, S);
        assert_eq!(vp8_width(&f), Some(640));
        let d = video_frame(VideoCodec::Vp8, false, 640, 360, 500, S);
        assert_eq!(vp8_width(&d), None);
    }

    #[test]
    fn vp9_keyframes_start_with_a_real_uncompressed_header() {
        // The first bytes of libvpx-vp9 keyframes (FFmpeg, profile 0), as
        // the server's parser tests have them: up to frame_height_minus_1
        // and render_and_frame_size_different.
        let key_720p = [0x82, 0x49, 0x83, 0x42, 0x00, 0x4f, 0xf0, 0x2c, 0xf6];
        let key_360p = [0x82, 0x49, 0x83, 0x42, 0x00, 0x27, 0xf0, 0x16, 0x76];
        for (w, h, real) in [(1280, 720, key_720p), (640, 360, key_360p)] {
            let f = video_frame(VideoCodec::Vp9, true, w, h, 300, S);
            assert_eq!(f[..8], real[..8], "{w}x{h}");
            // The next bit (render size the same) is 0 in both.
            assert_eq!(f[8] & 0xf8, real[8] & 0xf8, "{w}x{h}");
        }
        let d = video_frame(VideoCodec::Vp9, false, 640, 360, 300, S);
        assert_eq!(d[0], 0x86);
    }

    #[test]
    fn h264_frames_have_no_start_code_after_the_prefix() {
        let f = video_frame(VideoCodec::H264, true, 0, 0, 4000, S);
        let body = &f[H264_KEY_PREFIX.len()..];
        assert!(!body.windows(3).any(|w| w == [0, 0, 1]));
    }

    #[test]
    fn a_damaged_stamp_is_not_read() {
        let mut f = audio_frame(60, S);
        f[5] &= 0x7f;
        assert_eq!(audio_stamp(&f), None);
        assert_eq!(audio_stamp(&[0x0c, 0xDA]), None);
    }
}
