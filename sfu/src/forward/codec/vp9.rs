//! VP9 RTP payloads: the payload descriptor of RFC 9628 section 4.2 (I, P, L,
//! F, B, E, V, Z; PictureID, layer indices, TL0PICIDX in non-flexible mode,
//! reference indices in flexible mode) and the scalability structure of
//! section 4.2.1 (spatial layer sizes, picture group), plus the start of
//! the frame's uncompressed header (VP9 bitstream specification 6.2:
//! `frame_marker`, profile, `show_existing_frame`, `frame_type`, then for a
//! keyframe `frame_sync_code`, `color_config` (6.2.2) and `frame_size`
//! (6.2.3)) to confirm a keyframe and read its size.

use super::bits::Bits;
use super::{PacketInfo, ParseError};

/// Fields of the descriptor's first byte (RFC 9628 4.2).
const I: u8 = 0x80;
const P: u8 = 0x40;
const L: u8 = 0x20;
const F: u8 = 0x10;
const B: u8 = 0x08;
const E: u8 = 0x04;
const V: u8 = 0x02;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ParseError> {
        let b = self
            .data
            .get(self.pos)
            .copied()
            .ok_or(ParseError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn be16(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from(u16::from_be_bytes([self.byte()?, self.byte()?])))
    }
}

pub(super) fn parse(payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let mut r = Reader {
        data: payload,
        pos: 0,
    };
    let flags = r.byte()?;
    if flags & I != 0 && r.byte()? & 0x80 != 0 {
        r.byte()?; // low byte of a 15-bit PictureID (M=1)
    }
    let mut info = PacketInfo::default();
    let mut spatial = 0;
    if flags & L != 0 {
        // TID (3) | U (1) | SID (3) | D (1).
        let layers = r.byte()?;
        info.temporal = layers >> 5;
        info.sync = layers & 0x10 != 0;
        spatial = (layers >> 1) & 0x07;
        info.spatial = spatial;
        if flags & F == 0 {
            r.byte()?; // TL0PICIDX
        }
    }
    if flags & F != 0 && flags & P != 0 {
        // P_DIFF (7) | N (1), at most three (RFC 9628 4.2).
        let mut refs = 0;
        while r.byte()? & 0x01 != 0 {
            refs += 1;
            if refs == 3 {
                return Err(ParseError::Malformed);
            }
        }
    }
    let mut ss_size = None;
    if flags & V != 0 {
        // N_S (3) | Y (1) | G (1) | RES (3).
        let ss = r.byte()?;
        let layers = (ss >> 5) + 1;
        if ss & 0x10 != 0 {
            for layer in 0..layers {
                let (w, h) = (r.be16()?, r.be16()?);
                if w == 0 || h == 0 {
                    continue;
                }
                if layer == spatial {
                    ss_size = Some((w, h));
                }
                if let Some(entry) = info.spatial_dims.get_mut(usize::from(layer)) {
                    *entry = Some((w, h));
                }
            }
        }
        if ss & 0x08 != 0 {
            // N_G, then per picture TID (3) | U (1) | R (2) | RES (2) and R
            // P_DIFF bytes.
            for _ in 0..r.byte()? {
                let refs = (r.byte()? >> 2) & 0x03;
                for _ in 0..refs {
                    r.byte()?;
                }
            }
        }
    }
    let frame = payload
        .get(r.pos..)
        .filter(|f| !f.is_empty())
        .ok_or(ParseError::Truncated)?;
    info.ends_frame = flags & E != 0;
    if flags & B != 0 {
        info.starts_frame = true;
        let header = uncompressed_header(frame);
        info.starts_keyframe = flags & P == 0 && spatial == 0 && header.is_none_or(|h| h.keyframe);
        info.dims = ss_size.or(header.and_then(|h| h.dims));
    }
    Ok(info)
}

#[derive(Clone, Copy)]
struct Header {
    keyframe: bool,
    dims: Option<(u32, u32)>,
}

/// The start of a VP9 `uncompressed_header()` (6.2): whether it is a
/// keyframe and, if so, its size. `None` when it is not a frame header.
fn uncompressed_header(frame: &[u8]) -> Option<Header> {
    let mut b = Bits::new(frame);
    if b.bits(2)? != 2 {
        return None; // frame_marker
    }
    let profile = b.bit()? | (b.bit()? << 1); // profile_low_bit, profile_high_bit
    if profile == 3 {
        b.bit()?; // reserved_zero
    }
    if b.flag()? {
        // show_existing_frame: shows an earlier frame, decodes nothing.
        return Some(Header {
            keyframe: false,
            dims: None,
        });
    }
    let keyframe = b.bit()? == 0; // frame_type: KEY_FRAME = 0
    let not_key = Header {
        keyframe: false,
        dims: None,
    };
    if !keyframe {
        return Some(not_key);
    }
    b.skip(2)?; // show_frame, error_resilient_mode
    if b.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config()
    if profile >= 2 {
        b.bit()?; // ten_or_twelve_bit
    }
    let color_space = b.bits(3)?;
    if color_space != 7 {
        // Not CS_RGB: color_range, then subsampling for profiles 1 and 3.
        b.bit()?;
        if profile == 1 || profile == 3 {
            b.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        b.bit()?; // reserved_zero
    }
    // frame_size()
    let w = b.bits(16)? + 1;
    let h = b.bits(16)? + 1;
    Some(Header {
        keyframe: true,
        dims: Some((w, h)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_robust;
    use super::super::{parse, ParseError};
    use super::*;
    use str0m::format::Codec;

    /// The first bytes of real libvpx-vp9 frames (FFmpeg 5.1, `testsrc`,
    /// profile 0): 82 = frame_marker 2, profile 0, show_existing_frame 0,
    /// frame_type KEY, show_frame; 49 83 42 sync code; 00 color_space 0,
    /// color_range 0; then width-1 and height-1 in 16 bits each.
    const KEY_720P: [u8; 12] = [
        0x82, 0x49, 0x83, 0x42, 0x00, 0x4f, 0xf0, 0x2c, 0xf6, 0x2a, 0x38, 0x24,
    ];
    const KEY_360P: [u8; 12] = [
        0x82, 0x49, 0x83, 0x42, 0x00, 0x27, 0xf0, 0x16, 0x76, 0x0a, 0x38, 0x24,
    ];
    /// 86: frame_type NON_KEY.
    const DELTA: [u8; 8] = [0x86, 0x00, 0x40, 0x92, 0xf0, 0x31, 0x2e, 0x04];

    /// One packet's descriptor (RFC 9628 4.2).
    #[derive(Default, Clone)]
    struct Desc {
        inter: bool,    // P
        flexible: bool, // F
        begin: bool,    // B
        end: bool,      // E
        picture_id: Option<(u16, bool)>,
        /// (TID, U, SID, D); with F=0 a TL0PICIDX byte follows.
        layers: Option<(u8, bool, u8, bool)>,
        refs: Vec<u8>,
        ss: Option<(Vec<(u16, u16)>, Group)>,
    }

    /// Scalability structure: spatial layer sizes, and the picture group:
    /// per picture (TID, U, P_DIFFs).
    type Group = Vec<(u8, bool, Vec<u8>)>;

    fn packet(d: &Desc, frame: &[u8]) -> Vec<u8> {
        let bit = |b: bool, v: u8| if b { v } else { 0 };
        // I | P | L | F | B | E | V | Z.
        let mut p = vec![
            bit(d.picture_id.is_some(), I)
                | bit(d.inter, P)
                | bit(d.layers.is_some(), L)
                | bit(d.flexible, F)
                | bit(d.begin, B)
                | bit(d.end, 0x04)
                | bit(d.ss.is_some(), V),
        ];
        match d.picture_id {
            Some((id, true)) => p.extend([0x80 | (id >> 8) as u8, id as u8]), // M=1, 15 bits
            Some((id, false)) => p.push(id as u8),                            // M=0, 7 bits
            None => {}
        }
        if let Some((tid, u, sid, dep)) = d.layers {
            // TID (3) | U (1) | SID (3) | D (1).
            p.push((tid << 5) | bit(u, 0x10) | (sid << 1) | u8::from(dep));
            if !d.flexible {
                p.push(0x42); // TL0PICIDX
            }
        }
        for (i, diff) in d.refs.iter().enumerate() {
            // P_DIFF (7) | N (1): N=1 when another reference index follows.
            p.push((diff << 1) | u8::from(i + 1 < d.refs.len()));
        }
        if let Some((sizes, group)) = &d.ss {
            // N_S (3) | Y (1) | G (1) | RES (3).
            p.push(((sizes.len() as u8 - 1) << 5) | 0x10 | bit(!group.is_empty(), 0x08));
            for (w, h) in sizes {
                p.extend(w.to_be_bytes());
                p.extend(h.to_be_bytes());
            }
            if !group.is_empty() {
                p.push(group.len() as u8); // N_G
                for (tid, u, diffs) in group {
                    // TID (3) | U (1) | R (2) | RES (2), then R P_DIFFs.
                    p.push((tid << 5) | bit(*u, 0x10) | ((diffs.len() as u8) << 2));
                    p.extend(diffs);
                }
            }
        }
        p.extend_from_slice(frame);
        p
    }

    /// Chrome's non-flexible L1T3 keyframe: I (15 bit), L, B, V with one
    /// spatial layer and a 4-picture group.
    fn chrome_keyframe(size: (u16, u16), frame: &[u8]) -> Vec<u8> {
        let group = vec![
            (0, false, vec![4]),
            (2, true, vec![1]),
            (1, true, vec![2]),
            (2, false, vec![1]),
        ];
        let d = Desc {
            begin: true,
            picture_id: Some((1000, true)),
            layers: Some((0, false, 0, false)),
            ss: Some((vec![size], group)),
            ..Desc::default()
        };
        packet(&d, frame)
    }

    #[test]
    fn non_flexible_keyframe_with_scalability_structure() {
        let p = chrome_keyframe((1280, 720), &KEY_720P);
        // I L B V | M + picture id 1000 | TID 0 SID 0 | TL0PICIDX | N_S 0, Y, G.
        assert_eq!(&p[..7], &[0xaa, 0x83, 0xe8, 0x00, 0x42, 0x18, 0x05]);
        let info = assert_robust(Codec::Vp9, &p);
        assert!(info.starts_keyframe && info.starts_frame);
        assert_eq!(info.dims, Some((1280, 720)));
        assert_eq!((info.temporal, info.sync, info.vp8), (0, false, None));
        // The size comes from the SS even when the frame bytes say otherwise.
        let p = chrome_keyframe((640, 360), &KEY_720P);
        assert_eq!(assert_robust(Codec::Vp9, &p).dims, Some((640, 360)));
    }

    #[test]
    fn keyframe_without_ss_takes_the_size_from_the_frame_header() {
        // As FFmpeg's VP9 packetizer sends (captured): 08 = B only.
        let d = Desc {
            begin: true,
            ..Desc::default()
        };
        let p = packet(&d, &KEY_360P);
        assert_eq!(p[0], 0x08);
        let info = assert_robust(Codec::Vp9, &p);
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((640, 360)));
        let info = assert_robust(Codec::Vp9, &packet(&d, &KEY_720P));
        assert_eq!(info.dims, Some((1280, 720)));
    }

    #[test]
    fn continuation_and_delta_frames() {
        let cont = Desc {
            picture_id: Some((3, false)),
            layers: Some((0, false, 0, false)),
            ..Desc::default()
        };
        let info = assert_robust(Codec::Vp9, &packet(&cont, &KEY_720P));
        assert!(!info.starts_frame && !info.starts_keyframe && info.dims.is_none());
        // B=1, P=1: a delta frame in non-flexible mode, TID 2 with U.
        let delta = Desc {
            inter: true,
            begin: true,
            end: true,
            layers: Some((2, true, 0, false)),
            ..cont
        };
        let p = packet(&delta, &DELTA);
        assert_eq!(&p[..4], &[0xec, 0x03, 0x50, 0x42]);
        let info = assert_robust(Codec::Vp9, &p);
        assert!(info.starts_frame && !info.starts_keyframe);
        assert_eq!((info.temporal, info.sync), (2, true));
        // P=0 but the frame header says NON_KEY (an intra-only frame would
        // look like this): not a keyframe.
        let intra = Desc {
            inter: false,
            ..delta
        };
        assert!(!assert_robust(Codec::Vp9, &packet(&intra, &DELTA)).starts_keyframe);
    }

    #[test]
    fn flexible_mode_reference_indices_and_spatial_layers() {
        // Flexible mode (F=1): L without TL0PICIDX, up to 3 P_DIFFs.
        let d = Desc {
            inter: true,
            flexible: true,
            begin: true,
            picture_id: Some((0x1abc, true)),
            layers: Some((1, true, 0, false)),
            refs: vec![1, 2, 4],
            ..Desc::default()
        };
        let p = packet(&d, &DELTA);
        assert_eq!(&p[..7], &[0xf8, 0x9a, 0xbc, 0x30, 0x03, 0x05, 0x08]);
        let info = assert_robust(Codec::Vp9, &p);
        assert!(info.starts_frame && !info.starts_keyframe);
        assert_eq!((info.temporal, info.sync), (1, true));

        // A spatial-layer keyframe with SS for three layers: the packet of
        // SID 0 is the keyframe start, sized by its own SS entry.
        let sizes = vec![(320, 180), (640, 360), (1280, 720)];
        let key = Desc {
            flexible: true,
            begin: true,
            picture_id: Some((9, false)),
            layers: Some((0, false, 0, false)),
            ss: Some((sizes, vec![])),
            ..Desc::default()
        };
        let info = assert_robust(Codec::Vp9, &packet(&key, &KEY_360P));
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((320, 180)));
        // Every layer's size, for the layers that start in later packets.
        assert_eq!(
            info.spatial_dims,
            [Some((320, 180)), Some((640, 360)), Some((1280, 720)), None]
        );
        assert_eq!((info.spatial, info.ends_frame), (0, false));
        // SID 1 of the same picture (P=0, D=1): starts a layer frame only.
        let upper = Desc {
            layers: Some((0, false, 1, true)),
            ss: None,
            ..key
        };
        let info = assert_robust(Codec::Vp9, &packet(&upper, &DELTA));
        assert!(info.starts_frame && !info.starts_keyframe);
        assert_eq!(info.spatial, 1);
        assert_eq!(info.spatial_dims, [None; 4]);
        // The last packet of SID 2's frame: E=1, where the picture ends.
        let last = Desc {
            begin: false,
            end: true,
            layers: Some((0, false, 2, true)),
            ..upper
        };
        let info = assert_robust(Codec::Vp9, &packet(&last, &DELTA));
        assert!(!info.starts_frame && info.ends_frame);
        assert_eq!(info.spatial, 2);
    }

    #[test]
    fn ffmpeg_rtp_muxer_packets() {
        // Payload prefixes of the packets FFmpeg 5.1's RTP muxer sent for
        // libvpx-vp9 640x360: a one-byte descriptor with B / E only.
        let key = [
            0x08, 0x82, 0x49, 0x83, 0x42, 0x00, 0x27, 0xf0, 0x16, 0x76, 0x0a, 0x38, 0x24,
        ];
        let info = assert_robust(Codec::Vp9, &key);
        assert!(info.starts_keyframe);
        assert_eq!(info.dims, Some((640, 360)));
        let (middle, last) = ([0x00, 0xb6, 0xe7, 0x6c], [0x04, 0x25, 0xff, 0xa8]);
        assert_eq!(assert_robust(Codec::Vp9, &middle), Default::default());
        let info = assert_robust(Codec::Vp9, &last);
        assert!(info.ends_frame && !info.starts_frame);
        let delta = [0x0c, 0x86, 0x00, 0x40, 0x92, 0xf0, 0x31];
        let info = assert_robust(Codec::Vp9, &delta);
        assert!(info.starts_frame && !info.starts_keyframe);
    }

    #[test]
    fn truncated_and_malformed() {
        // Four reference indices (N=1 on the third).
        assert_eq!(
            parse(Codec::Vp9, &[0x58, 0x03, 0x05, 0x07, 0x09, 0x86]),
            Err(ParseError::Malformed)
        );
        // SS announces two layer sizes but carries one.
        assert_eq!(
            parse(Codec::Vp9, &[0x0a, 0x30, 0x05, 0x00, 0x02, 0xd0]),
            Err(ParseError::Truncated)
        );
        // Descriptor without a frame byte.
        assert_eq!(parse(Codec::Vp9, &[0x88, 0x01]), Err(ParseError::Truncated));
        // B=1 over bytes that are no frame header: a keyframe by the P bit,
        // size unknown.
        let info = parse(Codec::Vp9, &[0x08, 0x00]).expect("parses");
        assert!(info.starts_keyframe && info.dims.is_none());
    }
}
