//! Per-packet codec payload headers for RTP-mode forwarding: what the router
//! needs of one video RTP packet, read without depacketizing.
//!
//! [`parse`] takes the RTP *payload* (after the RTP header, its extensions
//! and padding) and the codec its payload type maps to, and returns a
//! [`PacketInfo`]. It is sans-IO, reads only the payload it is given and
//! keeps no state between packets. Input is untrusted network data: every
//! read is bounded, nothing panics, and no allocation happens at all (NAL
//! unit RBSPs are unescaped on the fly by `bits::Bits`).
//!
//! One file per payload format, each citing its specification:
//! - `vp8.rs`: RFC 7741 (payload descriptor) and RFC 6386 9.1 (keyframe size).
//! - `vp9.rs`: RFC 9628 (payload descriptor, scalability structure) and the
//!   VP9 bitstream specification 6.2 (uncompressed header).
//! - `h264.rs`: RFC 6184 (single NAL, STAP-A, FU-A) and ITU-T H.264 7.3.2.1.1
//!   (SPS), 7.3.3 (slice header), 7.4.1.2.3 (access unit order).
//! - `h265.rs`: RFC 7798 (single NAL, AP, FU) and ITU-T H.265 7.3.2.2 (SPS),
//!   7.3.6.1 (slice segment header), 7.4.2.4.4 (access unit order).
//! - `av1.rs`: the AV1 RTP payload specification (aggregation header, OBU
//!   elements) and the AV1 bitstream specification 5.3 (OBU header), 5.5
//!   (`sequence_header_obu`), 5.9.2 (`uncompressed_header`).
//! - `bits.rs`: the bit reader they share.
//!
//! # What the fields mean per codec, and the choices made
//!
//! - `starts_keyframe`: a subscriber may start decoding (or switch layer)
//!   at this packet. VP8: S=1, PID=0 and P=0 in the VP8 payload header. VP9:
//!   B=1, P=0, spatial layer 0, and, when the uncompressed header is
//!   readable, `frame_type` KEY_FRAME (so an intra-only frame is not taken
//!   for a keyframe). H.264: the packet carries an SPS, or begins an IDR
//!   slice with `first_mb_in_slice` 0 (single NAL, inside a STAP-A, or FU-A
//!   with S=1); a later slice of a multi-slice IDR picture does not count.
//!   H.265: the packet carries a VPS or SPS, or begins an IRAP slice (types
//!   16..=21) with `first_slice_segment_in_pic_flag` (single NAL, inside an
//!   AP, or FU with S=1). AV1: N=1, or the packet's first OBU (after any
//!   temporal delimiter) is a sequence header, unless a frame header
//!   following it in the same packet says the frame is not a KEY_FRAME (an
//!   encoder may repeat sequence headers on other frames).
//! - `starts_frame`: first packet of a frame. VP8: S=1 and PID=0. VP9: B=1
//!   (the start of a *layer* frame: with spatial layers each layer's frame
//!   starts with B=1). H.264 and H.265 do not mark the first packet of an
//!   access unit, so this is "the packet begins with a NAL unit that can
//!   only start an access unit": a slice whose `first_mb_in_slice` is 0 /
//!   whose `first_slice_segment_in_pic_flag` is set, or an AUD, parameter
//!   set, SEI (H.264: types 6..=9 and 14..=18; H.265: 32..=35, 39, 41..=44).
//!   An FU continuation or a later slice of a picture is never a start, but
//!   a packet with an SEI that follows the parameter-set packet of the same
//!   access unit is also reported as a start. AV1: Z=0 and the first OBU is
//!   a sequence header, temporal delimiter, frame header, metadata or frame
//!   OBU (Z=0 alone would also match a packet that begins a tile group in
//!   the middle of a frame). Always true when `starts_keyframe` is.
//! - `temporal` / `sync`: VP8 TID and Y when T=1; VP9 TID and U when L=1;
//!   H.265 `TemporalId` from the payload header of every packet (for an AP,
//!   the lowest of its NAL units, RFC 7798 4.4.2), with `sync` for TSA and
//!   STSA pictures (types 2..=5); 0 and false for H.264 and AV1 (AV1 layer
//!   ids belong to the dependency descriptor header extension).
//! - `dims`: the picture size when this packet carries it: VP8 keyframe
//!   header, VP9 scalability structure with Y=1 (the entry of the packet's
//!   spatial layer) or else a keyframe's uncompressed header, H.264 / H.265
//!   SPS (after the conformance / cropping window), AV1 sequence header
//!   (maximum frame size). An SPS or sequence header that cannot be read
//!   gives `None`, not an error.
//! - `vp8`: VP8 only, when the descriptor has a PictureID or TL0PICIDX.
//! - `spatial` / `ends_frame` / `spatial_dims`: VP9 only (scalable video,
//!   several spatial layers in one RTP stream): the packet's SID when L=1,
//!   E (the last packet of the spatial layer's frame, where a forwarder that
//!   drops the layers above must set the RTP marker), and every layer's
//!   size from a scalability structure with Y=1 (Chromium sends it in the
//!   first packet of a key picture only, so the upper layers' sizes are
//!   known from there).
//!
//! # Errors
//!
//! `Truncated`: the payload ends inside a structure it announces (including
//! an empty payload, such as a padding-only packet). `Malformed`: a field
//! the payload format forbids, such as the forbidden bit of a NAL unit or
//! OBU header, an H.265 TID of 0, an FU with both S and E set, AV1 N=1 with
//! Z=1, a zero-length aggregation unit or OBU element, VP8 L=1 without T=1, a fourth
//! VP9 reference index, or packetizations that WebRTC never negotiates
//! (H.264 STAP-B, MTAP, FU-B). Audio and codecs not listed above are not
//! parsed: `Ok(PacketInfo::default())`, even for an empty payload.
//!
//! Assumptions: H.265 `sprop-max-don-diff` is 0 (no DONL fields, as in
//! WebRTC); H.265 PACI packets (type 50) are reported with their temporal id
//! only.

pub(crate) mod av1;
pub(crate) mod bits;
pub mod dependency_descriptor;
pub(crate) mod h264;
pub(crate) mod h265;
pub(crate) mod vp8;
pub(crate) mod vp9;

use str0m::format::Codec;

/// What the forwarding core needs to know of one video RTP packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketInfo {
    /// First packet of a keyframe: a subscriber can start decoding here, so a
    /// layer switch may start here. See the module doc for each codec.
    pub starts_keyframe: bool,
    /// First packet of a frame (for H.264 / H.265 an approximation, see the
    /// module doc).
    pub starts_frame: bool,
    /// Temporal layer id (VP8 TID when T=1, VP9 TID when L=1, H.265
    /// TemporalId; 0 otherwise).
    pub temporal: u8,
    /// Temporal switching-up point (VP8 Y, VP9 U, H.265 TSA / STSA).
    pub sync: bool,
    /// Picture width and height, when this packet carries them.
    pub dims: Option<(u32, u32)>,
    /// VP8 payload descriptor fields, to rewrite picture ids when layers
    /// switch (`None` for other codecs, or when neither field is present).
    pub vp8: Option<Vp8Ids>,
    /// Spatial layer id (VP9 SID when L=1; 0 otherwise).
    pub spatial: u8,
    /// Last packet of a (spatial layer's) frame: VP9 E=1.
    pub ends_frame: bool,
    /// Picture size of each spatial layer, lowest first, when the packet
    /// carries a VP9 scalability structure with sizes (the first
    /// [`MAX_SPATIAL_LAYERS`] of them).
    pub spatial_dims: SpatialDims,
}

/// Spatial layers whose sizes are kept from a scalability structure (VP9
/// allows 8; WebRTC encoders send at most 3).
pub const MAX_SPATIAL_LAYERS: usize = 4;

/// Sizes of a scalable stream's spatial layers, lowest first (None: not
/// announced).
pub type SpatialDims = [Option<(u32, u32)>; MAX_SPATIAL_LAYERS];

/// The VP8 payload descriptor fields (RFC 7741 4.2) a forwarder rewrites to
/// keep them continuous across a layer switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Ids {
    /// PictureID (I=1), without the M bit.
    pub picture_id: Option<u16>,
    /// Width of `picture_id` on the wire: 7 or 15 (M bit), 0 when absent. A
    /// rewrite keeps the width, so the payload keeps its length.
    pub picture_id_bits: u8,
    /// TL0PICIDX (L=1).
    pub tl0_pic_idx: Option<u8>,
}

/// Why a video RTP payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The payload ends inside a header or unit it announces.
    #[error("RTP payload is truncated")]
    Truncated,
    /// A header field has a value its payload format forbids.
    #[error("RTP payload header is malformed")]
    Malformed,
}

/// Reads the payload header of one RTP packet of `codec`. See the module doc
/// for what each field means per codec; audio and unknown codecs give
/// `Ok(PacketInfo::default())`.
pub fn parse(codec: Codec, payload: &[u8]) -> Result<PacketInfo, ParseError> {
    let mut info = match codec {
        Codec::Vp8 => vp8::parse(payload),
        Codec::Vp9 => vp9::parse(payload),
        Codec::H264 => h264::parse(payload),
        Codec::H265 => h265::parse(payload),
        Codec::Av1 => av1::parse(payload),
        _ => Ok(PacketInfo::default()),
    }?;
    info.starts_frame |= info.starts_keyframe;
    Ok(info)
}

/// Largest picture side any of the parsers reports (H.264 / H.265 SPS sizes
/// beyond it are taken as malformed).
pub(crate) const MAX_SIDE: u32 = 16384;

/// Reads a big-endian u16 at `pos`.
fn be16(data: &[u8], pos: usize) -> Option<usize> {
    let hi = *data.get(pos)?;
    let lo = *data.get(pos.checked_add(1)?)?;
    Some(usize::from(u16::from_be_bytes([hi, lo])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of `packet` (and the packet with each byte flipped) gives
    /// a result without panicking; the whole packet parses as `codec`.
    pub(crate) fn assert_robust(codec: Codec, packet: &[u8]) -> PacketInfo {
        for len in 0..packet.len() {
            let _ = parse(codec, &packet[..len]);
        }
        let mut flipped = packet.to_vec();
        for i in 0..flipped.len() {
            for mask in [0x01, 0x80, 0xff] {
                flipped[i] ^= mask;
                let _ = parse(codec, &flipped);
                flipped[i] ^= mask;
            }
        }
        parse(codec, packet).expect("the whole packet parses")
    }

    #[test]
    fn audio_and_unknown_codecs_are_not_parsed() {
        for codec in [Codec::Opus, Codec::PCMU, Codec::H266] {
            assert_eq!(parse(codec, &[]), Ok(PacketInfo::default()));
            assert_eq!(parse(codec, &[0xff; 8]), Ok(PacketInfo::default()));
        }
    }

    #[test]
    fn empty_video_payload_is_truncated() {
        for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::H265, Codec::Av1] {
            assert_eq!(parse(codec, &[]), Err(ParseError::Truncated), "{codec:?}");
        }
    }

    /// A cheap deterministic generator of test input: xorshift.
    pub(crate) fn xorshift() -> impl FnMut() -> u32 {
        let mut x: u32 = 0x1234_5678;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut next = xorshift();
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::H265, Codec::Av1] {
                if let Ok(info) = parse(codec, &data) {
                    assert!(info.starts_frame || !info.starts_keyframe);
                    assert!(info.temporal < 8);
                    if let Some((w, h)) = info.dims {
                        assert!(w > 0 && h > 0 && w <= 65536 && h <= 65536);
                    }
                }
            }
        }
    }
}
