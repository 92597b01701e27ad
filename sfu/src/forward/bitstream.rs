//! Picture size from the bitstream, so simulcast layers are ranked by what
//! they carry: VP8 keyframe headers (RFC 6386 section 9.1) and H.264
//! sequence parameter sets (ITU-T H.264 7.3.2.1.1). Input is untrusted:
//! every read is bounded and malformed data yields `None`.

use str0m::format::Codec;

/// Width and height of a keyframe, when the codec's header tells.
pub fn picture_size(codec: Codec, frame: &[u8]) -> Option<(u32, u32)> {
    match codec {
        Codec::Vp8 => vp8_size(frame),
        Codec::H264 => annex_b_nalus(frame)
            .find(|n| n.first().is_some_and(|h| h & 0x1f == 7))
            .and_then(h264_sps_size),
        _ => None,
    }
}

fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    // Frame tag bit 0 is 0 for a keyframe; then the start code 9d 01 2a.
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
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

/// Bit reader over an RBSP (emulation prevention bytes removed).
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal_payload: &[u8]) -> Bits {
        let mut data = Vec::with_capacity(nal_payload.len());
        let mut zeros = 0;
        for &b in nal_payload {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

fn skip_scaling_list(b: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            // delta_scale is in -128..=127 (H.264 7.4.2.1.1.1); anything
            // else is a malformed SPS (and would overflow the sum).
            let delta = b.se()?;
            if !(-128..=127).contains(&delta) {
                return None;
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Picture size from an H.264 SPS NAL unit (with its one-byte header).
fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits::new(nal.get(1..)?);
    let profile_idc = b.bits(8)?;
    b.bits(16)?; // constraint flags, level_idc
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        chroma_format_idc = b.ue()?;
        if chroma_format_idc == 3 {
            b.bit()?; // separate_colour_plane_flag
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? == 1 {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            let cycle = b.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = b.ue()?.checked_add(1)?;
    let height_units = b.ue()?.checked_add(1)?;
    let frame_mbs_only = b.bit()?;
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.bit()? == 1 {
        let (l, r, t, btm) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (unit_x, unit_y) = match chroma_format_idc {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = l.checked_add(r)?.checked_mul(unit_x)?;
        crop_y = t.checked_add(btm)?.checked_mul(unit_y)?;
    }
    let width = width_mbs.checked_mul(16)?.checked_sub(crop_x)?;
    let height = (2 - frame_mbs_only)
        .checked_mul(height_units)?
        .checked_mul(16)?
        .checked_sub(crop_y)?;
    (width > 0 && height > 0 && width <= 16384 && height <= 16384).then_some((width, height))
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
