//! VP8 RTP payloads: the payload descriptor of RFC 7741 section 4.2 (X, S,
//! PID; I/L/T/K extensions: PictureID, TL0PICIDX, TID/Y/KEYIDX), the P bit of
//! the VP8 payload header (RFC 7741 4.3) and the keyframe size after the
//! start code (RFC 6386 section 9.1), which [`keyframe_size`] also reads for
//! whole depacketized frames (`bitstream::picture_size`).
//!
//! str0m's `Vp8Descriptor` parses the same descriptor and builds the
//! picture-id patch, but does not expose TID/Y; this parser applies the same
//! validity rules (L=1 needs T=1; at least one payload byte after the
//! descriptor) so the two agree on what is malformed.

use super::{PacketInfo, ParseError, Vp8Ids};

pub(super) fn parse(payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let mut pos = 0;
    let mut next = || {
        let b = payload.get(pos).copied().ok_or(ParseError::Truncated);
        pos += 1;
        b
    };
    let required = next()?;
    let mut info = PacketInfo::default();
    if required & 0x80 != 0 {
        let ext = next()?;
        let (has_pid, has_tl0, has_tid, has_keyidx) = (
            ext & 0x80 != 0,
            ext & 0x40 != 0,
            ext & 0x20 != 0,
            ext & 0x10 != 0,
        );
        if has_tl0 && !has_tid {
            return Err(ParseError::Malformed);
        }
        let mut ids = Vp8Ids::default();
        if has_pid {
            let first = next()?;
            if first & 0x80 != 0 {
                let low = next()?;
                ids.picture_id = Some(u16::from_be_bytes([first & 0x7f, low]));
                ids.picture_id_bits = 15;
            } else {
                ids.picture_id = Some(u16::from(first));
                ids.picture_id_bits = 7;
            }
        }
        if has_tl0 {
            ids.tl0_pic_idx = Some(next()?);
        }
        if has_tid || has_keyidx {
            let tid_y_keyidx = next()?;
            // TID and Y are only meaningful with T=1 (K=1 alone carries
            // KEYIDX in the same byte).
            if has_tid {
                info.temporal = tid_y_keyidx >> 6;
                info.sync = tid_y_keyidx & 0x20 != 0;
            }
        }
        if has_pid || has_tl0 {
            info.vp8 = Some(ids);
        }
    }
    let frame = payload
        .get(pos..)
        .filter(|f| !f.is_empty())
        .ok_or(ParseError::Truncated)?;
    // S=1 and PID=0: the first packet of a frame, which begins with the VP8
    // payload header; its first byte's low bit is P (0 = keyframe).
    if required & 0x10 != 0 && required & 0x07 == 0 {
        info.starts_frame = true;
        info.starts_keyframe = frame.first().is_some_and(|b| b & 0x01 == 0);
        if info.starts_keyframe {
            info.dims = keyframe_size(frame);
        }
    }
    Ok(info)
}

/// Width and height from the start of a VP8 keyframe: the 3-byte frame tag
/// (bit 0 clear for a keyframe), the start code 9d 01 2a, then 14-bit width
/// and height, each with a 2-bit scale above (RFC 6386 9.1).
pub(crate) fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let header = frame.get(..10)?;
    if header.first()? & 0x01 != 0 || header.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let le14 = |i: usize| -> Option<u32> {
        let v = u16::from_le_bytes([*header.get(i)?, *header.get(i + 1)?]);
        Some(u32::from(v & 0x3fff))
    };
    let (w, h) = (le14(6)?, le14(8)?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_robust;
    use super::super::{parse, ParseError};
    use super::*;
    use str0m::format::Codec;
    use str0m::rtp::Vp8Descriptor;

    /// The first 12 bytes of real libvpx keyframes (FFmpeg 5.1, libvpx,
    /// `testsrc` 1280x720 and 640x360): frame tag 90 77 01 (P=0, show_frame),
    /// start code 9d 01 2a, width and height little-endian.
    const KEY_720P: [u8; 12] = [
        0x90, 0x77, 0x01, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02, 0x00, 0x07,
    ];
    const KEY_360P: [u8; 12] = [
        0x90, 0x9c, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0x00, 0x47,
    ];
    /// The first bytes of the second 640x360 frame: frame tag 51 27 00 (P=1).
    const DELTA_360P: [u8; 8] = [0x51, 0x27, 0x00, 0x01, 0x10, 0x10, 0x00, 0x1e];

    /// Descriptor fields of one packet.
    #[derive(Default, Clone, Copy)]
    struct Desc {
        start: bool,
        pid: u8,
        picture_id: Option<(u16, bool)>, // (value, 15-bit)
        tl0: Option<u8>,
        tid_y: Option<(u8, bool)>,
        keyidx: Option<u8>,
    }

    /// Builds a payload: descriptor per RFC 7741 4.2, then `frame`.
    fn packet(d: Desc, frame: &[u8]) -> Vec<u8> {
        let x =
            d.picture_id.is_some() || d.tl0.is_some() || d.tid_y.is_some() || d.keyidx.is_some();
        // X | R | N | S | R | PID (3 bits).
        let mut p = vec![(u8::from(x) << 7) | (u8::from(d.start) << 4) | d.pid];
        if x {
            // I | L | T | K | RSV (4 bits).
            p.push(
                (u8::from(d.picture_id.is_some()) << 7)
                    | (u8::from(d.tl0.is_some()) << 6)
                    | (u8::from(d.tid_y.is_some()) << 5)
                    | (u8::from(d.keyidx.is_some()) << 4),
            );
        }
        match d.picture_id {
            // M=1 | PictureID high 7 bits, then low 8 bits.
            Some((id, true)) => p.extend([0x80 | (id >> 8) as u8, id as u8]),
            // M=0 | 7-bit PictureID.
            Some((id, false)) => p.push(id as u8),
            None => {}
        }
        p.extend(d.tl0); // TL0PICIDX
        if d.tid_y.is_some() || d.keyidx.is_some() {
            // TID (2) | Y (1) | KEYIDX (5).
            let (tid, y) = d.tid_y.unwrap_or((0, false));
            p.push((tid << 6) | (u8::from(y) << 5) | d.keyidx.unwrap_or(0));
        }
        p.extend_from_slice(frame);
        p
    }

    /// What str0m's own descriptor parser says: same PictureID, TL0PICIDX
    /// and keyframe start.
    fn agrees_with_str0m(payload: &[u8]) {
        let ours = parse(Codec::Vp8, payload).expect("parses");
        let theirs = Vp8Descriptor::parse(payload).expect("str0m parses");
        let ids = ours.vp8.unwrap_or_default();
        assert_eq!(ids.picture_id, theirs.picture_id());
        assert_eq!(ids.tl0_pic_idx, theirs.tl0_pic_idx());
        assert_eq!(ours.starts_keyframe, theirs.starts_keyframe(payload));
    }

    #[test]
    fn keyframe_first_packet_has_size_and_15_bit_picture_id() {
        // As FFmpeg's VP8 packetizer sends a keyframe (captured from its RTP
        // muxer): 90 80 80 00 = X, S, I, M=1 picture id 0.
        let d = Desc {
            start: true,
            picture_id: Some((0x1234, true)),
            ..Desc::default()
        };
        let p = packet(d, &KEY_720P);
        assert_eq!(&p[..4], &[0x90, 0x80, 0x92, 0x34]);
        let info = assert_robust(Codec::Vp8, &p);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((1280, 720)));
        let ids = info.vp8.expect("ids");
        assert_eq!(
            (ids.picture_id, ids.picture_id_bits, ids.tl0_pic_idx),
            (Some(0x1234), 15, None)
        );
        agrees_with_str0m(&p);

        let p = packet(
            Desc {
                picture_id: Some((5, false)),
                ..d
            },
            &KEY_360P,
        );
        let info = assert_robust(Codec::Vp8, &p);
        assert_eq!(info.dims, Some((640, 360)));
        let ids = info.vp8.expect("ids");
        assert_eq!((ids.picture_id, ids.picture_id_bits), (Some(5), 7));
        agrees_with_str0m(&p);
    }

    #[test]
    fn continuation_and_other_partitions_start_nothing() {
        // S=0: the keyframe's second packet (its bytes look like a frame tag
        // with P=0 but are mid-partition data).
        let cont = packet(
            Desc {
                picture_id: Some((7, true)),
                ..Desc::default()
            },
            &KEY_720P,
        );
        let info = assert_robust(Codec::Vp8, &cont);
        assert!(!info.starts_frame && !info.starts_keyframe && info.dims.is_none());
        agrees_with_str0m(&cont);
        // S=1 but PID=1: start of the second partition.
        let part = packet(
            Desc {
                start: true,
                pid: 1,
                ..Desc::default()
            },
            &KEY_720P,
        );
        let info = assert_robust(Codec::Vp8, &part);
        assert!(!info.starts_frame && !info.starts_keyframe);
        assert_eq!(info.vp8, None);
    }

    #[test]
    fn delta_frame_starts_a_frame_not_a_keyframe() {
        let p = packet(
            Desc {
                start: true,
                ..Desc::default()
            },
            &DELTA_360P,
        );
        assert_eq!(p[0], 0x10);
        let info = assert_robust(Codec::Vp8, &p);
        assert!(info.starts_frame && !info.starts_keyframe && info.dims.is_none());
        agrees_with_str0m(&p);
    }

    #[test]
    fn temporal_layers_sync_and_tl0picidx() {
        // Chrome's L1T3: I, L, T set; 15-bit picture id, TL0PICIDX, TID/Y.
        let d = Desc {
            start: true,
            picture_id: Some((0x7ffe, true)),
            tl0: Some(200),
            tid_y: Some((2, true)),
            ..Desc::default()
        };
        let p = packet(d, &DELTA_360P);
        assert_eq!(&p[..6], &[0x90, 0xe0, 0xff, 0xfe, 200, 0xa0]);
        let info = assert_robust(Codec::Vp8, &p);
        assert_eq!((info.temporal, info.sync), (2, true));
        let ids = info.vp8.expect("ids");
        assert_eq!((ids.picture_id, ids.tl0_pic_idx), (Some(0x7ffe), Some(200)));
        agrees_with_str0m(&p);

        let p = packet(
            Desc {
                tid_y: Some((1, false)),
                ..d
            },
            &DELTA_360P,
        );
        let info = assert_robust(Codec::Vp8, &p);
        assert_eq!((info.temporal, info.sync), (1, false));

        // K=1 without T: the TID/Y/KEYIDX byte is there, TID is not used.
        let p = packet(
            Desc {
                start: true,
                keyidx: Some(3),
                ..Desc::default()
            },
            &DELTA_360P,
        );
        assert_eq!(&p[..3], &[0x90, 0x10, 0x03]);
        let info = assert_robust(Codec::Vp8, &p);
        assert_eq!((info.temporal, info.sync, info.vp8), (0, false, None));
        agrees_with_str0m(&p);
    }

    #[test]
    fn ffmpeg_rtp_muxer_packets() {
        // Payload prefixes (descriptor whole, VP8 data cut) of the packets
        // FFmpeg 5.1's RTP muxer sent for libvpx 640x360: X, S, I with a
        // 15-bit picture id counting frames.
        let key = [
            0x90, 0x80, 0x80, 0x00, 0x90, 0x9c, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
            0x00, 0x47,
        ];
        let info = assert_robust(Codec::Vp8, &key);
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((640, 360)));
        assert_eq!(info.vp8.and_then(|i| i.picture_id), Some(0));
        let cont = [0x80, 0x80, 0x80, 0x00, 0x39, 0xb1, 0x80, 0x89];
        assert!(!assert_robust(Codec::Vp8, &cont).starts_frame);
        let delta = [0x90, 0x80, 0x80, 0x02, 0xb1, 0x20, 0x00, 0x00, 0x10, 0x10];
        let info = assert_robust(Codec::Vp8, &delta);
        assert!(info.starts_frame && !info.starts_keyframe);
        assert_eq!(info.vp8.and_then(|i| i.picture_id), Some(2));
        for p in [&key[..], &cont, &delta] {
            agrees_with_str0m(p);
        }
    }

    #[test]
    fn truncated_and_malformed() {
        // Descriptor only, no VP8 payload byte.
        assert_eq!(parse(Codec::Vp8, &[0x10]), Err(ParseError::Truncated));
        // I=1 and M=1 but the second picture id byte is missing.
        assert_eq!(
            parse(Codec::Vp8, &[0x90, 0x80, 0x81]),
            Err(ParseError::Truncated)
        );
        // L=1 without T=1 (RFC 7741 4.2).
        assert_eq!(
            parse(Codec::Vp8, &[0x90, 0x40, 0x05, 0x00]),
            Err(ParseError::Malformed)
        );
        assert!(Vp8Descriptor::parse(&[0x90, 0x40, 0x05, 0x00]).is_err());
        // A keyframe start too short for the size: a keyframe, size unknown.
        let info = parse(Codec::Vp8, &[0x10, 0x90, 0x77]).expect("parses");
        assert!(info.starts_keyframe && info.dims.is_none());
    }

    #[test]
    fn keyframe_size_of_whole_frames() {
        assert_eq!(keyframe_size(&KEY_720P), Some((1280, 720)));
        assert_eq!(keyframe_size(&DELTA_360P), None);
        assert_eq!(keyframe_size(&KEY_360P[..9]), None);
        let mut no_start_code = KEY_360P;
        no_start_code[4] = 0;
        assert_eq!(keyframe_size(&no_start_code), None);
    }
}
