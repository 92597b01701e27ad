//! Feeds arbitrary bytes to `sfu::forward::bitstream::picture_size`, which
//! reads the picture size from a depacketized keyframe a publisher sent (VP8
//! keyframe header, H.264 SPS in an Annex B stream). The first input byte
//! picks the codec (VP8, H.264, and codecs the function does not parse,
//! which must yield `None`); the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::forward::bitstream::picture_size;
use str0m::format::Codec;

const CODECS: [Codec; 6] = [
    Codec::Vp8,
    Codec::H264,
    Codec::Vp9,
    Codec::Av1,
    Codec::H265,
    Codec::Opus,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let codec = CODECS[usize::from(selector) % CODECS.len()];
    let size = picture_size(codec, frame);
    match (codec, size) {
        (_, None) => {}
        (Codec::Vp8, Some((w, h))) => assert!(w > 0 && h > 0 && w <= 0x3fff && h <= 0x3fff),
        (Codec::H264, Some((w, h))) => assert!(w > 0 && h > 0 && w <= 16384 && h <= 16384),
        (other, Some(s)) => panic!("{other:?} is not parsed but gave {s:?}"),
    }
});
