//! H.264 RTP payloads (RFC 6184, non-interleaved mode as WebRTC negotiates
//! it): single NAL unit packets (5.6), STAP-A (5.7.1) and FU-A (5.8). Reads
//! the NAL unit types a packet begins or carries, `first_mb_in_slice` of a
//! slice (ITU-T H.264 7.3.3) to tell a picture's first slice, and the
//! picture size of an SPS (7.3.2.1.1, with the cropping of 7.4.2.1.1), which
//! [`sps_size`] also provides to `bitstream::picture_size` for whole frames.
//! Packet types of the interleaved mode (STAP-B, MTAP16/24, FU-B) and the
//! reserved types 0, 30, 31 are malformed here.

use super::bits::Bits;
use super::{be16, PacketInfo, ParseError, MAX_SIDE};

const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

pub(super) fn parse(payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let header = *payload.first().ok_or(ParseError::Truncated)?;
    if header & 0x80 != 0 {
        return Err(ParseError::Malformed); // forbidden_zero_bit
    }
    let mut info = PacketInfo::default();
    match header & 0x1f {
        1..=23 => nal_unit(payload, true, &mut info)?,
        STAP_A => {
            // STAP-A header, then (16-bit size, NAL unit) pairs.
            let mut pos = 1;
            let mut first = true;
            loop {
                let size = be16(payload, pos).ok_or(ParseError::Truncated)?;
                if size == 0 {
                    return Err(ParseError::Malformed);
                }
                let start = pos + 2;
                let nal = payload
                    .get(start..start + size)
                    .ok_or(ParseError::Truncated)?;
                if nal
                    .first()
                    .is_some_and(|h| h & 0x80 != 0 || h & 0x1f == 0 || h & 0x1f >= 24)
                {
                    return Err(ParseError::Malformed);
                }
                nal_unit(nal, first, &mut info)?;
                first = false;
                pos = start + size;
                if pos == payload.len() {
                    break;
                }
            }
        }
        FU_A => {
            // FU indicator, then FU header: S | E | R | type.
            let fu = *payload.get(1).ok_or(ParseError::Truncated)?;
            let (start, end, kind) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x1f);
            if start && end || kind == 0 || kind >= 24 {
                return Err(ParseError::Malformed);
            }
            if start {
                // The fragment begins the NAL unit whose header is the FU
                // indicator's F and NRI with the FU header's type; its
                // payload bytes follow the FU header.
                let body = payload.get(2..).unwrap_or_default();
                nal_start(kind, body, true, &mut info)?;
            }
        }
        _ => return Err(ParseError::Malformed),
    }
    Ok(info)
}

/// A whole NAL unit (header byte and payload) inside this packet.
fn nal_unit(nal: &[u8], first: bool, info: &mut PacketInfo) -> Result<(), ParseError> {
    let (&header, body) = nal.split_first().ok_or(ParseError::Truncated)?;
    nal_start(header & 0x1f, body, first, info)
}

/// What the start of a NAL unit of type `kind` tells; `body` is its payload
/// (possibly only the first fragment), `first` whether it begins the packet.
fn nal_start(kind: u8, body: &[u8], first: bool, info: &mut PacketInfo) -> Result<(), ParseError> {
    match kind {
        1 | IDR => {
            // first_mb_in_slice, the first field of the slice header.
            let first_mb = Bits::rbsp(body).ue().ok_or(ParseError::Truncated)?;
            if first_mb == 0 {
                info.starts_frame |= first;
                info.starts_keyframe |= kind == IDR;
            }
        }
        SPS => {
            info.starts_frame |= first;
            info.starts_keyframe = true;
            info.dims = info.dims.or(sps_size(body));
        }
        // SEI, PPS, AUD, and types 14..=18: each can only begin an access
        // unit's non-VCL part (7.4.1.2.3).
        6 | 8 | 9 | 14..=18 => info.starts_frame |= first,
        _ => {}
    }
    Ok(())
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

/// Picture size from an H.264 SPS: `body` is the NAL unit after its
/// one-byte header (escaped, as on the wire).
pub(crate) fn sps_size(body: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits::rbsp(body);
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
        if b.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.flag()? {
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
    if b.flag()? {
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
    (width > 0 && height > 0 && width <= MAX_SIDE && height <= MAX_SIDE).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_robust;
    use super::super::{parse, ParseError};
    use super::*;
    use str0m::format::Codec;

    /// SPS and PPS NAL units (with their header byte) written by x264 (FFmpeg
    /// 5.1, `-profile:v baseline`, `testsrc`): constrained baseline 0x42
    /// 0xc0, level 3.1 / 3.0, as Chrome's encoders also send for these sizes.
    const SPS_720P: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
    ];
    const SPS_360P: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
    ];
    const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];
    /// The first bytes of x264's IDR slice (65: nal_ref_idc 3, type 5; 88 =
    /// first_mb_in_slice 0, ...) and of the next frame's slice (41: type 1).
    const IDR_SLICE: [u8; 12] = [
        0x65, 0x88, 0x84, 0x09, 0xf2, 0x62, 0x80, 0x00, 0xa1, 0x6c, 0x9c, 0x9c,
    ];
    const P_SLICE: [u8; 8] = [0x41, 0x9a, 0x38, 0x13, 0xe0, 0x59, 0x84, 0x30];

    /// STAP-A (RFC 6184 5.7.1): header 0x78 (F=0, NRI=3, type 24), then
    /// each NAL unit behind its 16-bit size.
    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for nal in nals {
            p.extend((nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    }

    /// FU-A (5.8) of `nal`'s payload bytes `part`: FU indicator (the NAL
    /// header's F and NRI, type 28), FU header S | E | R | type.
    fn fu_a(nal_header: u8, start: bool, end: bool, part: &[u8]) -> Vec<u8> {
        let indicator = (nal_header & 0xe0) | 28;
        let fu_header = (u8::from(start) << 7) | (u8::from(end) << 6) | (nal_header & 0x1f);
        let mut p = vec![indicator, fu_header];
        p.extend_from_slice(part);
        p
    }

    #[test]
    fn sps_sizes_of_real_encoder_output() {
        assert_eq!(sps_size(&SPS_720P[1..]), Some((1280, 720)));
        assert_eq!(sps_size(&SPS_360P[1..]), Some((640, 360)));
    }

    #[test]
    fn stap_a_with_sps_and_pps_then_fu_a_idr() {
        // As FFmpeg's packetizer and Chrome send a keyframe: parameter sets
        // aggregated, then the IDR slice in fragments.
        let stap = stap_a(&[&SPS_720P, &PPS]);
        assert_eq!(&stap[..4], &[0x78, 0x00, 0x19, 0x67]);
        let info = assert_robust(Codec::H264, &stap);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((1280, 720)));
        assert_eq!((info.temporal, info.sync, info.vp8), (0, false, None));

        let start = fu_a(IDR_SLICE[0], true, false, &IDR_SLICE[1..]);
        assert_eq!(&start[..3], &[0x7c, 0x85, 0x88]); // as FFmpeg sent it
        let info = assert_robust(Codec::H264, &start);
        assert!(info.starts_keyframe && info.starts_frame && info.dims.is_none());

        for (s, e) in [(false, false), (false, true)] {
            let middle = fu_a(IDR_SLICE[0], s, e, &IDR_SLICE[4..]);
            let info = assert_robust(Codec::H264, &middle);
            assert_eq!(info, Default::default());
        }
    }

    #[test]
    fn single_nal_units() {
        let info = assert_robust(Codec::H264, &IDR_SLICE);
        assert!(info.starts_keyframe && info.starts_frame);
        let info = assert_robust(Codec::H264, &P_SLICE);
        assert!(info.starts_frame && !info.starts_keyframe);
        let info = assert_robust(Codec::H264, &SPS_360P);
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((640, 360)));
        assert!(assert_robust(Codec::H264, &PPS).starts_frame);
        // A second slice of an IDR picture starts neither a frame nor a
        // keyframe: first_mb_in_slice 1800 (half of 720p's 3600 macroblocks)
        // is ue 0000000000 11100001001, then 100 (slice_type ue 3).
        let second_slice = [0x65, 0x00, 0x38, 0x4c];
        let info = assert_robust(Codec::H264, &second_slice);
        assert!(!info.starts_frame && !info.starts_keyframe);
        // An FU-A start of that slice: also not a start.
        let info = assert_robust(Codec::H264, &fu_a(0x65, true, false, &second_slice[1..]));
        assert!(!info.starts_keyframe);
    }

    #[test]
    fn stap_a_with_an_idr_slice_but_no_sps() {
        let info = assert_robust(Codec::H264, &stap_a(&[&PPS, &IDR_SLICE]));
        assert!(info.starts_keyframe && info.starts_frame && info.dims.is_none());
        // Two P slices: a frame start, nothing else.
        let info = assert_robust(Codec::H264, &stap_a(&[&P_SLICE, &P_SLICE]));
        assert!(info.starts_frame && !info.starts_keyframe);
    }

    #[test]
    fn ffmpeg_rtp_muxer_packets() {
        // Payload prefixes (FU data cut) of the packets FFmpeg 5.1's RTP muxer
        // sent for x264 640x360. Its STAP-A header is 0x18 (NRI 0); it also
        // carried a 625-byte SEI, left out here.
        let mut stap = stap_a(&[&SPS_360P, &PPS]);
        stap[0] = 0x18;
        let info = assert_robust(Codec::H264, &stap);
        assert!(info.starts_keyframe && info.dims == Some((640, 360)));
        let start = [0x7c, 0x85, 0x88, 0x84, 0x09, 0xf2, 0x62, 0x80, 0x00, 0xa1];
        assert!(assert_robust(Codec::H264, &start).starts_keyframe);
        let (middle, end) = ([0x7c, 0x05, 0x82, 0xf0, 0x50], [0x7c, 0x45, 0x80]);
        assert_eq!(assert_robust(Codec::H264, &middle), Default::default());
        assert_eq!(assert_robust(Codec::H264, &end), Default::default());
        let p_slice = [0x41, 0x9a, 0x38, 0x13, 0xe0, 0x59, 0x84, 0x30];
        let info = assert_robust(Codec::H264, &p_slice);
        assert!(info.starts_frame && !info.starts_keyframe);
    }

    #[test]
    fn truncated_and_malformed() {
        // A STAP-A whose second unit is cut short.
        let mut stap = stap_a(&[&SPS_720P, &PPS]);
        stap.pop();
        assert_eq!(parse(Codec::H264, &stap), Err(ParseError::Truncated));
        assert_eq!(parse(Codec::H264, &[0x78]), Err(ParseError::Truncated));
        // A zero-size aggregation unit.
        assert_eq!(
            parse(Codec::H264, &[0x78, 0, 0, 0, 1, 0x68]),
            Err(ParseError::Malformed)
        );
        // Forbidden bit; type 0; FU-B; FU-A with both S and E.
        for p in [
            &[0xe5, 0x88][..],
            &[0x00, 0x88],
            &[0x7d, 0x85, 0x00],
            &[0x7c, 0xc5, 0x88],
        ] {
            assert_eq!(
                parse(Codec::H264, p),
                Err(ParseError::Malformed),
                "{p:02x?}"
            );
        }
        // FU-A header missing, and an IDR start with no slice header byte.
        assert_eq!(parse(Codec::H264, &[0x7c]), Err(ParseError::Truncated));
        assert_eq!(
            parse(Codec::H264, &[0x7c, 0x85]),
            Err(ParseError::Truncated)
        );
        // A garbled SPS: a keyframe, size unknown.
        let info = parse(Codec::H264, &[0x67, 0x42, 0x00]).expect("parses");
        assert!(info.starts_keyframe && info.dims.is_none());
    }
}
