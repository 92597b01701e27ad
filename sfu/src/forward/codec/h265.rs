//! H.265 RTP payloads (RFC 7798): the two-byte payload header (4.4: F, type,
//! LayerId, TID), single NAL unit packets (4.4.1), aggregation packets (AP,
//! type 48, 4.4.2) and fragmentation units (FU, type 49, 4.4.3), assuming
//! `sprop-max-don-diff` 0 so no DONL / DOND fields are present, as in WebRTC.
//! PACI packets (type 50, 4.4.4) are not looked into. Reads the NAL unit
//! types a packet begins or carries, `first_slice_segment_in_pic_flag`
//! (ITU-T H.265 7.3.6.1) to tell a picture's first slice segment, and the
//! picture size of an SPS (7.3.2.2, `profile_tier_level` 7.3.3, conformance
//! window per 7.4.3.2.1).

use super::bits::Bits;
use super::{be16, PacketInfo, ParseError, MAX_SIDE};

const VPS: u8 = 32;
const SPS: u8 = 33;
const AP: u8 = 48;
const FU: u8 = 49;
const PACI: u8 = 50;

/// NAL unit type of a two-byte NAL unit / payload header.
fn kind(first_byte: u8) -> u8 {
    (first_byte >> 1) & 0x3f
}

pub(super) fn parse(payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let (b0, b1) = match payload {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Err(ParseError::Truncated),
    };
    // F (1) | Type (6) | LayerId (6) | TID (3); TID is TemporalId + 1.
    let tid_plus1 = b1 & 0x07;
    if b0 & 0x80 != 0 || tid_plus1 == 0 {
        return Err(ParseError::Malformed);
    }
    let mut info = PacketInfo {
        temporal: tid_plus1 - 1,
        ..PacketInfo::default()
    };
    match kind(b0) {
        0..=47 => nal_start(
            kind(b0),
            payload.get(2..).unwrap_or_default(),
            true,
            &mut info,
        )?,
        AP => {
            // Payload header, then (16-bit size, NAL unit) pairs.
            let mut pos = 2;
            let mut first = true;
            loop {
                let size = be16(payload, pos).ok_or(ParseError::Truncated)?;
                let start = pos + 2;
                let nal = payload
                    .get(start..start + size)
                    .ok_or(ParseError::Truncated)?;
                let (h0, body) = match nal {
                    [h0, h1, body @ ..] if h0 & 0x80 == 0 && h1 & 0x07 != 0 && kind(*h0) < AP => {
                        (*h0, body)
                    }
                    _ => return Err(ParseError::Malformed),
                };
                nal_start(kind(h0), body, first, &mut info)?;
                first = false;
                pos = start + size;
                if pos == payload.len() {
                    break;
                }
            }
        }
        FU => {
            // FU header: S | E | FuType (6).
            let fu = *payload.get(2).ok_or(ParseError::Truncated)?;
            let (start, end, fu_type) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x3f);
            if start && end || fu_type >= AP {
                return Err(ParseError::Malformed);
            }
            if start {
                nal_start(
                    fu_type,
                    payload.get(3..).unwrap_or_default(),
                    true,
                    &mut info,
                )?;
            } else {
                info.sync = is_switching_point(fu_type);
            }
        }
        PACI => {}
        _ => return Err(ParseError::Malformed),
    }
    Ok(info)
}

/// TSA_N, TSA_R, STSA_N, STSA_R: temporal sub-layer switching points.
fn is_switching_point(kind: u8) -> bool {
    (2..=5).contains(&kind)
}

/// What the start of a NAL unit of type `kind` tells; `body` is the NAL unit
/// after its two-byte header (possibly only the first fragment), `first`
/// whether it begins the packet.
fn nal_start(kind: u8, body: &[u8], first: bool, info: &mut PacketInfo) -> Result<(), ParseError> {
    match kind {
        // Defined VCL types: TRAIL, TSA, STSA, RADL, RASL (0..=9) and IRAP
        // (BLA, IDR, CRA: 16..=21).
        0..=9 | 16..=21 => {
            let first_slice_in_pic = Bits::new(body).flag().ok_or(ParseError::Truncated)?;
            if first_slice_in_pic {
                info.starts_frame |= first;
                info.starts_keyframe |= (16..=21).contains(&kind);
            }
            info.sync |= is_switching_point(kind);
        }
        VPS => {
            info.starts_frame |= first;
            info.starts_keyframe = true;
        }
        SPS => {
            info.starts_frame |= first;
            info.starts_keyframe = true;
            info.dims = info.dims.or(sps_size(body));
        }
        // PPS, AUD, prefix SEI, reserved 41..=44: only before an access
        // unit's first VCL NAL unit (7.4.2.4.4).
        34 | 35 | 39 | 41..=44 => info.starts_frame |= first,
        _ => {}
    }
    Ok(())
}

/// Picture size from an H.265 SPS: `body` is the NAL unit after its
/// two-byte header (escaped, as on the wire).
pub(crate) fn sps_size(body: &[u8]) -> Option<(u32, u32)> {
    let mut b = Bits::rbsp(body);
    b.bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = b.bits(3)?;
    b.bit()?; // sps_temporal_id_nesting_flag
              // profile_tier_level(1, sps_max_sub_layers_minus1): the general profile
              // (2 + 1 + 5 + 32 + 4 + 43 + 1 bits) and level (8 bits), ...
    b.skip(96)?;
    // ... sub-layer presence flags, padded to 8 sub-layers, ...
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (b.flag()?, b.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        b.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    // ... and each sub-layer's profile (88 bits) and level (8 bits).
    for (profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
        if *profile {
            b.skip(88)?;
        }
        if *level {
            b.skip(8)?;
        }
    }
    b.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = b.ue()?;
    let separate_colour_plane = chroma_format_idc == 3 && b.flag()?;
    let width = b.ue()?;
    let height = b.ue()?;
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.flag()? {
        // conformance_window_flag: offsets in chroma sample units (table 6-1).
        let (unit_x, unit_y) = match (chroma_format_idc, separate_colour_plane) {
            (1, _) => (2, 2),
            (2, _) => (2, 1),
            _ => (1, 1),
        };
        let (l, r, t, btm) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        crop_x = l.checked_add(r)?.checked_mul(unit_x)?;
        crop_y = t.checked_add(btm)?.checked_mul(unit_y)?;
    }
    let width = width.checked_sub(crop_x)?;
    let height = height.checked_sub(crop_y)?;
    (width > 0 && height > 0 && width <= MAX_SIDE && height <= MAX_SIDE).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_robust;
    use super::super::{parse, ParseError};
    use super::*;
    use str0m::format::Codec;

    /// VPS, SPS and PPS NAL units (with their two-byte headers) written by
    /// x265 3.5 through FFmpeg 5.1 (`-c:v libx265 -f hevc`, `testsrc`
    /// 1280x720 and 640x360, yuv420p): Main profile, one sub-layer.
    const VPS_720P: [u8; 24] = [
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x5d, 0x95, 0x98, 0x09,
    ];
    const SPS_720P: [u8; 43] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b, 0xc0,
        0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x10,
    ];
    const SPS_360P: [u8; 42] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3f, 0xa0, 0x05, 0x02, 0x01, 0x69, 0x65, 0x95, 0x9a, 0x49, 0x32, 0xbc, 0x05,
        0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03, 0xc1,
    ];
    const PPS: [u8; 7] = [0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];
    /// x265's first slice bytes: IDR_N_LP (28 01 = type 20, TID 0), then
    /// af = first_slice_segment_in_pic_flag 1, ...; a TRAIL_R slice (02 01)
    /// and a TRAIL_N slice (00 01) of later frames.
    const IDR: [u8; 8] = [0x28, 0x01, 0xaf, 0x08, 0x46, 0x0a, 0x91, 0x9d];
    const TRAIL_R: [u8; 8] = [0x02, 0x01, 0xd0, 0x11, 0x57, 0x84, 0x31, 0x84];

    /// Two-byte header: F=0 | type (6) | LayerId 0 (6) | TID = temporal + 1.
    fn header(kind: u8, temporal: u8) -> [u8; 2] {
        [kind << 1, temporal + 1]
    }

    /// AP (RFC 7798 4.4.2): payload header (type 48, the lowest TID of the
    /// units), then each NAL unit behind its 16-bit size.
    fn ap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = header(AP, 0).to_vec();
        for nal in nals {
            p.extend((nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    }

    /// FU (4.4.3) of `nal` (its header, then the fragment `part` of its
    /// payload): payload header type 49 with the NAL's TID, FU header
    /// S | E | FuType.
    fn fu(nal: [u8; 2], start: bool, end: bool, part: &[u8]) -> Vec<u8> {
        let mut p = vec![(nal[0] & 0x81) | (FU << 1), nal[1]];
        p.push((u8::from(start) << 7) | (u8::from(end) << 6) | kind(nal[0]));
        p.extend_from_slice(part);
        p
    }

    #[test]
    fn sps_sizes_of_real_encoder_output() {
        assert_eq!(sps_size(&SPS_720P[2..]), Some((1280, 720)));
        assert_eq!(sps_size(&SPS_360P[2..]), Some((640, 360)));
    }

    #[test]
    fn ap_with_parameter_sets_then_fu_idr() {
        // As FFmpeg's packetizer sent this x265 keyframe (captured):
        // 60 01 00 18 40 01 ... = AP, VPS of 24 bytes, SPS, PPS.
        let agg = ap(&[&VPS_720P, &SPS_720P, &PPS]);
        assert_eq!(&agg[..5], &[0x60, 0x01, 0x00, 0x18, 0x40]);
        let info = assert_robust(Codec::H265, &agg);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(
            (info.dims, info.temporal, info.sync),
            (Some((1280, 720)), 0, false)
        );

        let idr_header = [IDR[0], IDR[1]];
        let start = fu(idr_header, true, false, &IDR[2..]);
        assert_eq!(&start[..4], &[0x62, 0x01, 0x94, 0xaf]); // as FFmpeg sent it
        let info = assert_robust(Codec::H265, &start);
        assert!(info.starts_keyframe && info.starts_frame);
        for (s, e) in [(false, false), (false, true)] {
            let info = assert_robust(Codec::H265, &fu(idr_header, s, e, &IDR[4..]));
            assert_eq!(info, Default::default());
        }
    }

    #[test]
    fn single_nal_units_and_slices() {
        let info = assert_robust(Codec::H265, &IDR);
        assert!(info.starts_keyframe && info.starts_frame);
        let info = assert_robust(Codec::H265, &TRAIL_R);
        assert!(info.starts_frame && !info.starts_keyframe);
        let info = assert_robust(Codec::H265, &SPS_360P);
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((640, 360)));
        assert!(assert_robust(Codec::H265, &VPS_720P).starts_keyframe);
        // A later slice segment of a CRA picture (flag 0): no start.
        let mut cra = header(21, 0).to_vec();
        cra.extend([0x40, 0x12]);
        let info = assert_robust(Codec::H265, &cra);
        assert!(!info.starts_frame && !info.starts_keyframe);
        // A PPS alone can begin an access unit, not a keyframe.
        let info = assert_robust(Codec::H265, &PPS);
        assert!(info.starts_frame && !info.starts_keyframe);
    }

    #[test]
    fn temporal_id_and_switching_points() {
        // TSA_N (type 2) at TemporalId 2, single NAL and fragmented.
        let mut tsa = header(2, 2).to_vec();
        tsa.extend([0x80, 0x55]);
        let info = assert_robust(Codec::H265, &tsa);
        assert_eq!(
            (info.temporal, info.sync, info.starts_frame),
            (2, true, true)
        );
        let middle = fu([tsa[0], tsa[1]], false, false, &[0x11, 0x22]);
        assert_eq!(&middle[..3], &[0x62, 0x03, 0x02]);
        let info = assert_robust(Codec::H265, &middle);
        assert_eq!(
            (info.temporal, info.sync, info.starts_frame),
            (2, true, false)
        );
        // TRAIL_N at TemporalId 1: no switching point.
        let mut trail = header(0, 1).to_vec();
        trail.push(0x80);
        assert_eq!(assert_robust(Codec::H265, &trail).temporal, 1);
        assert!(!assert_robust(Codec::H265, &trail).sync);
    }

    /// The whole first packet FFmpeg 5.1's RTP muxer sent for x265 640x360:
    /// an AP of the VPS (24 bytes), SPS (42) and PPS (7).
    const FFMPEG_AP_360P: [u8; 81] = [
        0x60, 0x01, 0x00, 0x18, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03,
        0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x3f, 0x95, 0x98, 0x09, 0x00, 0x2a,
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3f, 0xa0, 0x05, 0x02, 0x01, 0x69, 0x65, 0x95, 0x9a, 0x49, 0x32, 0xbc, 0x05,
        0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03, 0xc1, 0x00, 0x07, 0x44,
        0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40,
    ];

    #[test]
    fn ffmpeg_rtp_muxer_packets() {
        let info = assert_robust(Codec::H265, &FFMPEG_AP_360P);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((640, 360)));
        // The builder writes the same AP.
        let vps = &FFMPEG_AP_360P[4..28];
        assert_eq!(ap(&[vps, &SPS_360P, &PPS]), FFMPEG_AP_360P);
        // Then prefixes of: an FU starting the prefix SEI (a frame start by
        // the rule, not a keyframe), the FU starting the IDR slice, the
        // FU ending it, a TRAIL_R and a TRAIL_N single NAL unit.
        let sei = [0x62, 0x01, 0xa7, 0x05, 0xff, 0xff];
        let info = assert_robust(Codec::H265, &sei);
        assert!(info.starts_frame && !info.starts_keyframe);
        let idr = [0x62, 0x01, 0x94, 0xaf, 0x08, 0x4c, 0x2d, 0x05];
        assert!(assert_robust(Codec::H265, &idr).starts_keyframe);
        let idr_end = [0x62, 0x01, 0x54, 0xb8, 0x35, 0x6d];
        assert_eq!(assert_robust(Codec::H265, &idr_end), Default::default());
        for slice in [
            [0x02, 0x01, 0xd0, 0x11, 0x57, 0x84],
            [0x00, 0x01, 0xe0, 0x24, 0xbf, 0x86],
        ] {
            let info = assert_robust(Codec::H265, &slice);
            assert!(info.starts_frame && !info.starts_keyframe);
        }
    }

    #[test]
    fn truncated_and_malformed() {
        assert_eq!(parse(Codec::H265, &[0x02]), Err(ParseError::Truncated));
        // TID 0 (TemporalId + 1 must be non-zero), forbidden bit, type 51.
        for p in [
            &[0x02, 0x00, 0x80][..],
            &[0x82, 0x01, 0x80],
            &[0x66, 0x01, 0x00],
        ] {
            assert_eq!(
                parse(Codec::H265, p),
                Err(ParseError::Malformed),
                "{p:02x?}"
            );
        }
        // FU with S and E, FU carrying an AP type.
        assert_eq!(
            parse(Codec::H265, &[0x62, 0x01, 0xd4, 0xaf]),
            Err(ParseError::Malformed)
        );
        assert_eq!(
            parse(Codec::H265, &[0x62, 0x01, 0xb0, 0xaf]),
            Err(ParseError::Malformed)
        );
        // An AP unit too short for a NAL unit header; an AP cut short.
        assert_eq!(
            parse(Codec::H265, &[0x60, 0x01, 0x00, 0x01, 0x44]),
            Err(ParseError::Malformed)
        );
        let mut agg = ap(&[&VPS_720P, &PPS]);
        agg.pop();
        assert_eq!(parse(Codec::H265, &agg), Err(ParseError::Truncated));
        // An IDR slice without its first slice header byte.
        assert_eq!(
            parse(Codec::H265, &[0x28, 0x01]),
            Err(ParseError::Truncated)
        );
    }
}
