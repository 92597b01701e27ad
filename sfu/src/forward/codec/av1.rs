//! AV1 RTP payloads (the AV1 RTP payload specification,
//! aomediacodec.github.io/av1-rtp-spec, section 4.4 aggregation header: Z,
//! Y, W, N; 4.5 OBU elements with leb128 lengths). Inside the OBU elements
//! that begin in the packet it reads the OBU header (AV1 bitstream
//! specification 5.3.2: type, extension and size flags, `leb128` 4.10.5),
//! the maximum frame size of a `sequence_header_obu` (5.5.1, with
//! `timing_info` 5.5.3, `decoder_model_info` 5.5.4 and
//! `operating_parameters_info` 5.5.5 skipped) and the `frame_type` at the
//! start of an `uncompressed_header` (5.9.2). Temporal and spatial layer ids
//! are not read: WebRTC carries them in the dependency descriptor header
//! extension, and OBU extension headers are absent from fragments.

use super::bits::Bits;
use super::{PacketInfo, ParseError};

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_METADATA: u8 = 5;
const OBU_FRAME: u8 = 6;

/// `leb128()`: value and length in bytes (at most 8).
fn leb128(data: &[u8]) -> Result<(usize, usize), ParseError> {
    let mut value = 0u64;
    for i in 0..8 {
        let byte = *data.get(i).ok_or(ParseError::Truncated)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = usize::try_from(value).map_err(|_| ParseError::Malformed)?;
            return Ok((value, i + 1));
        }
    }
    Err(ParseError::Malformed)
}

/// What the packet's OBUs said so far.
#[derive(Default)]
struct Walk {
    /// The packet begins with a sequence header (after temporal delimiters).
    leads_with_sequence_header: bool,
    /// `reduced_still_picture_header` of that sequence header.
    reduced_still: Option<bool>,
    /// Frame type of the first frame (header) OBU after it: KEY_FRAME or not.
    keyframe: Option<bool>,
    /// Only temporal delimiters have begun in this packet so far.
    at_start: bool,
    dims: Option<(u32, u32)>,
}

pub(super) fn parse(payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let (&aggregation, elements) = payload.split_first().ok_or(ParseError::Truncated)?;
    // Z (1) | Y (1) | W (2) | N (1) | reserved (3).
    let continues = aggregation & 0x80 != 0;
    let count = usize::from((aggregation >> 4) & 0x03);
    let new_sequence = aggregation & 0x08 != 0;
    if continues && new_sequence {
        return Err(ParseError::Malformed); // N=1 requires Z=0
    }
    let mut info = PacketInfo {
        starts_keyframe: new_sequence,
        ..PacketInfo::default()
    };
    let mut walk = Walk {
        at_start: !continues,
        ..Walk::default()
    };
    let mut pos = 0;
    let mut index = 0;
    while pos < elements.len() {
        // W counts the elements; the last of W has no length field. With
        // W=0 every element has one.
        let len = if index + 1 == count {
            elements.len() - pos
        } else {
            let (len, bytes) = leb128(elements.get(pos..).unwrap_or_default())?;
            pos += bytes;
            len
        };
        if len == 0 {
            return Err(ParseError::Malformed);
        }
        let end = pos.checked_add(len).ok_or(ParseError::Truncated)?;
        let element = elements.get(pos..end).ok_or(ParseError::Truncated)?;
        if index == 0 && !continues {
            let kind = (element.first().copied().unwrap_or_default() >> 3) & 0x0f;
            info.starts_frame = matches!(
                kind,
                OBU_SEQUENCE_HEADER
                    | OBU_TEMPORAL_DELIMITER
                    | OBU_FRAME_HEADER
                    | OBU_METADATA
                    | OBU_FRAME
            );
        }
        if index > 0 || !continues {
            obu(element, &mut walk)?;
        }
        pos = end;
        index += 1;
    }
    if index == 0 || index < count {
        return Err(ParseError::Truncated);
    }
    info.starts_keyframe |= walk.leads_with_sequence_header && walk.keyframe != Some(false);
    info.dims = walk.dims;
    Ok(info)
}

/// An OBU (or its first fragment) that begins in this packet.
fn obu(element: &[u8], walk: &mut Walk) -> Result<(), ParseError> {
    let header = *element.first().ok_or(ParseError::Truncated)?;
    // forbidden (1) | type (4) | extension (1) | has_size_field (1) | reserved (1).
    if header & 0x80 != 0 {
        return Err(ParseError::Malformed);
    }
    let kind = (header >> 3) & 0x0f;
    let mut start = 1 + usize::from(header & 0x04 != 0); // extension header byte
    let mut body = element.get(start..).unwrap_or_default();
    if header & 0x02 != 0 {
        // obu_size: the OBU ends there (the element may hold less of it).
        let Ok((size, bytes)) = leb128(body) else {
            return Ok(()); // header fragmented: nothing to read
        };
        start += bytes;
        body = element.get(start..).unwrap_or_default();
        body = body.get(..size).unwrap_or(body);
    }
    let was_at_start = walk.at_start;
    walk.at_start &= kind == OBU_TEMPORAL_DELIMITER;
    match kind {
        OBU_SEQUENCE_HEADER => {
            if let Some(seq) = sequence_header(body) {
                walk.dims = walk.dims.or(seq.dims);
                if was_at_start {
                    walk.leads_with_sequence_header = true;
                    walk.reduced_still = Some(seq.reduced_still);
                }
            }
        }
        OBU_FRAME_HEADER | OBU_FRAME if walk.keyframe.is_none() => {
            if let Some(reduced_still) = walk.reduced_still {
                walk.keyframe = frame_is_key(body, reduced_still);
            }
        }
        _ => {}
    }
    Ok(())
}

struct SequenceHeader {
    reduced_still: bool,
    dims: Option<(u32, u32)>,
}

/// `sequence_header_obu()` (5.5.1) up to `max_frame_height_minus_1`.
fn sequence_header(body: &[u8]) -> Option<SequenceHeader> {
    let mut b = Bits::new(body);
    b.bits(3)?; // seq_profile
    b.bit()?; // still_picture
    let reduced_still = b.flag()?;
    let mut seq = SequenceHeader {
        reduced_still,
        dims: None,
    };
    if reduced_still {
        b.bits(5)?; // seq_level_idx[0]
    } else {
        let mut buffer_delay_bits = 0;
        let mut decoder_model_info = false;
        if b.flag()? {
            // timing_info(): num_units_in_display_tick, time_scale, then
            // equal_picture_interval and num_ticks_per_picture_minus_1.
            b.skip(64)?;
            if b.flag()? {
                skip_uvlc(&mut b)?;
            }
            decoder_model_info = b.flag()?;
            if decoder_model_info {
                buffer_delay_bits = b.bits(5)? + 1;
                b.skip(32 + 5 + 5)?; // decoding tick, two length fields
            }
        }
        let initial_display_delay = b.flag()?;
        let operating_points = b.bits(5)? + 1;
        for _ in 0..operating_points {
            b.bits(12)?; // operating_point_idc
            if b.bits(5)? > 7 {
                b.bit()?; // seq_tier
            }
            if decoder_model_info && b.flag()? {
                // operating_parameters_info(): two delays and low_delay_mode_flag.
                b.skip(2 * buffer_delay_bits + 1)?;
            }
            if initial_display_delay && b.flag()? {
                b.bits(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let width_bits = b.bits(4)? + 1;
    let height_bits = b.bits(4)? + 1;
    let w = b.bits(width_bits)? + 1;
    let h = b.bits(height_bits)? + 1;
    seq.dims = Some((w, h));
    Some(seq)
}

/// `uvlc()` (4.10.3), value discarded.
fn skip_uvlc(b: &mut Bits) -> Option<()> {
    let mut zeros = 0u32;
    while !b.flag()? {
        zeros += 1;
    }
    if zeros < 32 {
        b.skip(zeros)?;
    }
    Some(())
}

/// Whether an `uncompressed_header()` (5.9.2) is a KEY_FRAME: `None` when it
/// shows an existing frame or is too short.
fn frame_is_key(body: &[u8], reduced_still: bool) -> Option<bool> {
    if reduced_still {
        return Some(true);
    }
    let mut b = Bits::new(body);
    if b.flag()? {
        return None; // show_existing_frame
    }
    Some(b.bits(2)? == 0) // frame_type
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_robust;
    use super::super::{parse, ParseError};
    use super::*;
    use str0m::format::Codec;

    /// Sequence header OBU payloads written by libaom (FFmpeg 5.1,
    /// `-c:v libaom-av1 -f obu`, `testsrc`): profile 0, one operating point,
    /// level 3.1 / 3.0, 11 + 10 / 10 + 9 bit frame size fields.
    const SEQ_720P: [u8; 11] = [
        0x00, 0x00, 0x00, 0x2d, 0x4c, 0xff, 0xb3, 0xcc, 0xaf, 0x90, 0x04,
    ];
    const SEQ_360P: [u8; 11] = [
        0x00, 0x00, 0x00, 0x0c, 0xc4, 0xff, 0x67, 0x36, 0xbe, 0x40, 0x10,
    ];
    /// The same from SVT-AV1 1.4 (differs in the flags after the size).
    const SVT_SEQ_720P: [u8; 11] = [
        0x00, 0x00, 0x00, 0x2d, 0x4c, 0xff, 0xb3, 0xcf, 0xbf, 0x90, 0x04,
    ];
    /// The first bytes of libaom frame OBU payloads: 10 = show_existing_frame
    /// 0, frame_type KEY_FRAME; 30 = frame_type INTER_FRAME.
    const KEY_FRAME: [u8; 6] = [0x10, 0x00, 0x8c, 0x60, 0x1e, 0x79];
    const INTER_FRAME: [u8; 6] = [0x30, 0x03, 0xc0, 0x80, 0x00, 0x00];

    /// OBU without obu_size (as the RTP spec recommends): header byte
    /// forbidden 0 | type (4) | extension 0 | has_size 0 | reserved 0.
    fn obu(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut o = vec![kind << 3];
        o.extend_from_slice(payload);
        o
    }

    /// Aggregation header Z | Y | W (2) | N | 000, then the elements: every
    /// one behind a leb128 length, except the last when W is not 0.
    fn packet(z: bool, y: bool, w: u8, n: bool, elements: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![(u8::from(z) << 7) | (u8::from(y) << 6) | (w << 4) | (u8::from(n) << 3)];
        for (i, e) in elements.iter().enumerate() {
            if w == 0 || i + 1 < elements.len() {
                let mut len = e.len();
                loop {
                    let byte = (len & 0x7f) as u8;
                    len >>= 7;
                    p.push(if len > 0 { byte | 0x80 } else { byte });
                    if len == 0 {
                        break;
                    }
                }
            }
            p.extend_from_slice(e);
        }
        p
    }

    /// MSB-first bit writer for hand-built sequence headers.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        fn put(&mut self, n: u32, value: u32) -> &mut Self {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                if let Some(last) = self.bytes.last_mut() {
                    *last |= bit << (7 - self.bits % 8);
                }
                self.bits += 1;
            }
            self
        }
    }

    #[test]
    fn sequence_headers_of_real_encoders() {
        let size = |body: &[u8]| sequence_header(body).and_then(|s| s.dims);
        assert_eq!(size(&SEQ_720P), Some((1280, 720)));
        assert_eq!(size(&SEQ_360P), Some((640, 360)));
        assert_eq!(size(&SVT_SEQ_720P), Some((1280, 720)));
    }

    #[test]
    fn sequence_header_with_timing_decoder_model_and_two_operating_points() {
        let mut w = Writer::default();
        w.put(3, 0).put(1, 0).put(1, 0); // seq_profile, still_picture, reduced_still_picture_header
        w.put(1, 1).put(32, 1001).put(32, 30000); // timing_info_present_flag, tick, time_scale
        w.put(1, 1).put(3, 0b010); // equal_picture_interval, num_ticks_per_picture_minus_1 uvlc = 1
        w.put(1, 1).put(5, 9).put(32, 90000).put(5, 31).put(5, 31); // decoder_model_info
        w.put(1, 1).put(5, 1); // initial_display_delay_present_flag, operating_points_cnt_minus_1
        for _ in 0..2 {
            w.put(12, 0x103).put(5, 8).put(1, 0); // operating_point_idc, seq_level_idx 8, seq_tier
            w.put(1, 1).put(10, 500).put(10, 500).put(1, 0); // operating_parameters_info, n = 10
            w.put(1, 1).put(4, 9); // initial_display_delay_minus_1
        }
        w.put(4, 9).put(4, 8).put(10, 639).put(9, 359); // frame size bits and sizes
        w.put(7, 0x55); // the rest of the header
        let seq = obu(OBU_SEQUENCE_HEADER, &w.bytes);
        let info = assert_robust(Codec::Av1, &packet(false, false, 1, true, &[&seq]));
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((640, 360)));

        // reduced_still_picture_header: level, then the sizes.
        let mut w = Writer::default();
        w.put(3, 0)
            .put(1, 1)
            .put(1, 1)
            .put(5, 4)
            .put(4, 11)
            .put(4, 11)
            .put(12, 1919)
            .put(12, 1079);
        assert_eq!(
            sequence_header(&w.bytes).map(|s| (s.reduced_still, s.dims)),
            Some((true, Some((1920, 1080))))
        );
    }

    #[test]
    fn keyframe_first_packet_as_libwebrtc_sends_it() {
        // N=1, W=2: sequence header with a length, then the frame OBU.
        let seq = obu(OBU_SEQUENCE_HEADER, &SEQ_720P);
        let frame = obu(OBU_FRAME, &KEY_FRAME);
        let p = packet(false, true, 2, true, &[&seq, &frame]);
        assert_eq!(&p[..3], &[0x68, 0x0c, 0x08]);
        let info = assert_robust(Codec::Av1, &p);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(
            (info.dims, info.temporal, info.sync),
            (Some((1280, 720)), 0, false)
        );

        // N=0, but led by a sequence header and a KEY_FRAME: still a start;
        // W=0, with a temporal delimiter first and obu_size fields as an
        // encoder writes them (0a 0b: sequence header, has_size, 11 bytes).
        let td = [0x12, 0x00];
        let mut seq_sized = vec![0x0a, 0x0b];
        seq_sized.extend(SEQ_360P);
        let p = packet(false, false, 0, false, &[&td, &seq_sized, &frame]);
        let info = assert_robust(Codec::Av1, &p);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((640, 360)));
    }

    #[test]
    fn a_repeated_sequence_header_before_an_inter_frame_is_no_keyframe() {
        let seq = obu(OBU_SEQUENCE_HEADER, &SEQ_720P);
        let p = packet(
            false,
            false,
            2,
            false,
            &[&seq, &obu(OBU_FRAME, &INTER_FRAME)],
        );
        let info = assert_robust(Codec::Av1, &p);
        assert!(info.starts_frame && !info.starts_keyframe);
        assert_eq!(info.dims, Some((1280, 720)));
    }

    #[test]
    fn delta_frames_fragments_and_tile_groups() {
        // Z=0, W=1: one frame OBU, an inter frame.
        let p = packet(false, false, 1, false, &[&obu(OBU_FRAME, &INTER_FRAME)]);
        assert_eq!(&p[..2], &[0x10, 0x30]);
        let info = assert_robust(Codec::Av1, &p);
        assert!(info.starts_frame && !info.starts_keyframe && info.dims.is_none());
        // Z=1, Y=1: the middle of a fragmented OBU (bytes that would read as
        // a sequence header are not looked at).
        let p = packet(
            true,
            true,
            1,
            false,
            &[&obu(OBU_SEQUENCE_HEADER, &SEQ_720P)],
        );
        assert_eq!(p[0], 0xd0);
        assert_eq!(assert_robust(Codec::Av1, &p), Default::default());
        // Z=1, then a new frame header OBU: not a frame start (the packet
        // begins inside another OBU).
        let p = packet(
            true,
            false,
            2,
            false,
            &[&[0xaa, 0xbb], &obu(OBU_FRAME_HEADER, &KEY_FRAME)],
        );
        assert!(!assert_robust(Codec::Av1, &p).starts_frame);
        // Z=0 with a tile group OBU first: mid-frame.
        let p = packet(false, false, 1, false, &[&obu(4, &[0x00, 0x11, 0x22])]);
        assert!(!assert_robust(Codec::Av1, &p).starts_frame);
        // An OBU extension header (temporal_id 1, spatial_id 0) before the payload.
        let p = packet(false, false, 1, false, &[&[0x34, 0x20, 0x30, 0x03]]);
        assert!(assert_robust(Codec::Av1, &p).starts_frame);
    }

    #[test]
    fn truncated_and_malformed() {
        assert_eq!(parse(Codec::Av1, &[0x10]), Err(ParseError::Truncated));
        // Z=1 with N=1; forbidden bit; zero-length element; 9-byte leb128.
        for p in [
            &[0x98, 0x30][..],
            &[0x10, 0xb0],
            &[0x00, 0x00, 0x01, 0x30],
            &[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            assert_eq!(parse(Codec::Av1, p), Err(ParseError::Malformed), "{p:02x?}");
        }
        // An element longer than the packet; W=3 with two elements.
        assert_eq!(
            parse(Codec::Av1, &[0x00, 0x05, 0x30, 0x10]),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            parse(Codec::Av1, &[0x30, 0x01, 0x30, 0x01, 0x30]),
            Err(ParseError::Truncated)
        );
        // A sequence header too short for the size: no size, no error.
        let p = packet(
            false,
            false,
            1,
            false,
            &[&obu(OBU_SEQUENCE_HEADER, &SEQ_720P[..5])],
        );
        let info = parse(Codec::Av1, &p).expect("parses");
        assert!(info.starts_frame && info.dims.is_none());
    }
}
