//! Picture size from the bitstream of a whole depacketized frame (frame
//! mode), so simulcast layers are ranked by what they carry: VP8 keyframe
//! headers (RFC 6386 section 9.1) and H.264 sequence parameter sets (ITU-T
//! H.264 7.3.2.1.1) in an Annex B stream. The header parsers themselves live
//! in [`super::codec`], which reads the same headers per RTP packet. Input
//! is untrusted: every read is bounded and malformed data yields `None`.

use super::codec::{h264, vp8};
use str0m::format::Codec;

/// Width and height of a keyframe, when the codec's header tells.
pub fn picture_size(codec: Codec, frame: &[u8]) -> Option<(u32, u32)> {
    match codec {
        Codec::Vp8 => vp8::keyframe_size(frame),
        Codec::H264 => annex_b_nalus(frame)
            .find(|n| n.first().is_some_and(|h| h & 0x1f == 7))
            .and_then(|sps| h264::sps_size(sps.get(1..)?)),
        _ => None,
    }
}

/// NAL units of an Annex B byte stream (start codes removed).
fn annex_b_nalus(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = vec![];
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| {
            // Trim the next start code (3 or 4 bytes).
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_size() {
        let key = [
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0, 0,
        ];
        assert_eq!(picture_size(Codec::Vp8, &key), Some((640, 480)));
        let delta = [0x11, 0x02, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0];
        assert_eq!(picture_size(Codec::Vp8, &delta), None);
    }

    #[test]
    fn h264_sps_sizes() {
        // SPS written by x264 (through FFmpeg) for three sizes and profiles.
        let sps_720p_baseline = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xba, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(
            picture_size(Codec::H264, &sps_720p_baseline),
            Some((1280, 720))
        );
        let sps_1080p_high = [
            0, 0, 0, 1, 0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84,
            0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        assert_eq!(
            picture_size(Codec::H264, &sps_1080p_high),
            Some((1920, 1080))
        );
        let mut idr_with_sps = vec![
            0, 0, 0, 1, 0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x50, 0x17, 0xfc, 0xb0, 0x80, 0x00,
            0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8b, 0x16, 0xcb,
        ];
        idr_with_sps.extend_from_slice(&[
            0, 0, 0, 1, 0x68, 0xeb, 0xec, 0xb2, 0x2c, 0, 0, 1, 0x65, 0x88, 0x84,
        ]);
        assert_eq!(picture_size(Codec::H264, &idr_with_sps), Some((640, 360)));
        // A slice without SPS: unknown.
        assert_eq!(picture_size(Codec::H264, &[0, 0, 0, 1, 0x41, 0x9a]), None);
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            let _ = picture_size(Codec::Vp8, &junk);
            let mut sps = vec![0, 0, 1, 0x67];
            sps.extend(&junk);
            let _ = picture_size(Codec::H264, &sps);
        }
        let all_zero = [0, 0, 1, 0x67, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(picture_size(Codec::H264, &all_zero), None);
    }

    #[test]
    fn out_of_range_scaling_list_delta_is_none_not_an_overflow() {
        // Found by the `picture_size` fuzz target: a high-profile SPS with a
        // scaling list whose delta_scale is far outside -128..=127, which
        // overflowed `last + delta + 256`.
        let sps = [
            0x00, 0x00, 0x00, 0x01, 0x67, 0x64, 0x00, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x00, 0x02,
            0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0xff, 0xff, 0xff, 0x00, 0x00,
        ];
        assert_eq!(picture_size(Codec::H264, &sps), None);
    }

    #[test]
    fn huge_frame_cropping_is_none_not_an_overflow() {
        // Found by the `picture_size` fuzz target: a baseline SPS whose
        // frame_crop offsets add up to more than u32::MAX / 2, which
        // overflowed when multiplied by the chroma crop unit.
        let sps = [
            0, 0, 0, 1, 0x67, 0x42, 0xd9, 0xfc, 0x4f, 0x05, 0xba, 0x10, 0x00, 0x00, 0x03, 0x00,
            0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(picture_size(Codec::H264, &sps), None);
    }
}
