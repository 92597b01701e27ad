//! Feeds arbitrary bytes to `sfu::forward::codec::parse`, which reads the
//! codec payload header of every video RTP packet a publisher sends (VP8,
//! VP9, H.264, H.265 and AV1 payload formats, and the SPS / sequence header
//! inside them), and audio redundancy (RED, RFC 2198) block headers. The
//! first input byte picks the codec (the five parsed ones, Opus, which is
//! not parsed and must give the default, and RED); the rest is the RTP
//! payload. Besides not panicking, the result must be consistent: a
//! keyframe start is a frame start, temporal ids fit their fields, sizes
//! are non-zero and bounded, VP8 ids only for VP8 with a matching width,
//! spatial layer ids, frame ends and spatial layer sizes only for VP9.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::forward::codec::{parse, PacketInfo};
use sfu::forward::red;
use str0m::media::Pt;
use str0m::format::Codec;

const CODECS: [Codec; 6] = [
    Codec::Vp8,
    Codec::Vp9,
    Codec::H264,
    Codec::H265,
    Codec::Av1,
    Codec::Opus,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let pick = usize::from(selector) % (CODECS.len() + 1);
    let Some(&codec) = CODECS.get(pick) else {
        // RED: the primary lies within the payload; renumbering keeps the length.
        if let Ok(layout) = red::parse(payload) {
            assert!(layout.primary.start <= layout.primary.end);
            assert!(layout.primary.end == payload.len());
            let out = layout.renumbered(payload, Pt::from(111), Pt::from(109));
            assert_eq!(out.len(), payload.len());
        }
        return;
    };
    let Ok(info) = parse(codec, payload) else {
        assert!(codec != Codec::Opus, "audio is not parsed");
        return;
    };
    if codec == Codec::Opus {
        assert_eq!(info, PacketInfo::default());
    }
    assert!(info.starts_frame || !info.starts_keyframe);
    assert!(info.temporal < 8);
    if let Some((w, h)) = info.dims {
        assert!(w > 0 && h > 0 && w <= 65536 && h <= 65536, "{w}x{h}");
    }
    match (codec, info.vp8) {
        (_, None) => {}
        (Codec::Vp8, Some(ids)) => {
            assert!(ids.picture_id.is_some() || ids.tl0_pic_idx.is_some());
            match ids.picture_id {
                Some(id) => {
                    assert!(matches!(ids.picture_id_bits, 7 | 15));
                    assert!(u32::from(id) < 1 << ids.picture_id_bits);
                }
                None => assert_eq!(ids.picture_id_bits, 0),
            }
        }
        (other, Some(ids)) => panic!("{other:?} gave VP8 ids {ids:?}"),
    }
    assert!(info.spatial < 8);
    for (w, h) in info.spatial_dims.iter().flatten() {
        assert!(*w > 0 && *h > 0 && *w <= 65535 && *h <= 65535, "{w}x{h}");
    }
    if codec != Codec::Vp9 {
        assert_eq!((info.spatial, info.ends_frame), (0, false), "{codec:?}");
        assert!(info.spatial_dims.iter().all(Option::is_none), "{codec:?}");
    }
});
