//! Payload-type mapping: which of a subscriber's negotiated payload types
//! carries a publisher's frames.
//!
//! Every peer numbers its codecs itself (Chrome's VP8 may be 96, Firefox's
//! 120) and offers its own set of H.264 profiles. A frame is written to a
//! subscriber with the subscriber's payload type for a codec configuration
//! its decoder can handle; if none exists the frame cannot be delivered.

use str0m::format::{Codec, PayloadParams};
use str0m::media::Pt;

/// H.264 profiles ordered by what a decoder must support: a decoder for a
/// later profile decodes the earlier ones (WebRTC's "baseline" streams are
/// constrained baseline in practice, so the two share a rank).
fn h264_rank(profile_level_id: u32) -> u8 {
    let profile_idc = (profile_level_id >> 16) as u8;
    let constraints = (profile_level_id >> 8) as u8;
    match profile_idc {
        0x42 => 1,                               // (constrained) baseline
        0x4d if constraints & 0x40 != 0 => 1,    // main with set1 = constrained baseline
        0x4d => 2,                               // main
        0x58 => 2,                               // extended
        0x64 if constraints & 0x0c == 0x0c => 3, // constrained high
        0x64 => 4,                               // high
        _ => 5,                                  // high 10/4:2:2/4:4:4 and beyond
    }
}

/// How well `dst` can carry frames described by `src`: higher is better,
/// `None` means not at all.
pub fn compatibility(src: &PayloadParams, dst: &PayloadParams) -> Option<u32> {
    let (s, d) = (src.spec(), dst.spec());
    if s.codec != d.codec || s.clock_rate.get() != d.clock_rate.get() {
        return None;
    }
    match s.codec {
        Codec::H264 => {
            let pm = |p: Option<u8>| p.unwrap_or(0);
            if pm(s.format.packetization_mode) != pm(d.format.packetization_mode) {
                return None;
            }
            // RFC 6184: absent profile-level-id means 42000a (baseline).
            let (sp, dp) = (
                s.format.profile_level_id.unwrap_or(0x42000a),
                d.format.profile_level_id.unwrap_or(0x42000a),
            );
            if sp == dp {
                return Some(100);
            }
            let (sr, dr) = (h264_rank(sp), h264_rank(dp));
            if dr < sr {
                return None;
            }
            // Prefer the closest profile, then the same profile with another level.
            Some(90 - 10 * u32::from(dr - sr))
        }
        Codec::Vp9 => {
            (s.format.profile_id.unwrap_or(0) == d.format.profile_id.unwrap_or(0)).then_some(100)
        }
        Codec::Av1 => {
            (s.format.profile.unwrap_or(0) == d.format.profile.unwrap_or(0)).then_some(100)
        }
        Codec::Opus => Some(100),
        _ => (s.format == d.format).then_some(100).or(Some(50)),
    }
}

/// Pick the subscriber's payload type for frames described by `src`.
pub fn select<'a>(
    src: &PayloadParams,
    candidates: impl IntoIterator<Item = &'a PayloadParams>,
) -> Option<Pt> {
    candidates
        .into_iter()
        .filter_map(|d| compatibility(src, d).map(|score| (score, d.pt())))
        .max_by_key(|(score, pt)| (*score, std::cmp::Reverse(**pt)))
        .map(|(_, pt)| pt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::{CodecSpec, FormatParams};
    use str0m::media::Frequency;

    fn params(pt: u8, codec: Codec, format: FormatParams) -> PayloadParams {
        let clock_rate = if codec == Codec::Opus {
            Frequency::FORTY_EIGHT_KHZ
        } else {
            Frequency::NINETY_KHZ
        };
        let channels = (codec == Codec::Opus).then_some(2);
        PayloadParams::new(
            pt.into(),
            None,
            CodecSpec {
                codec,
                clock_rate,
                channels,
                format,
            },
        )
    }

    fn h264(pt: u8, plid: u32, mode: u8) -> PayloadParams {
        params(
            pt,
            Codec::H264,
            FormatParams {
                profile_level_id: Some(plid),
                packetization_mode: Some(mode),
                level_asymmetry_allowed: Some(true),
                ..Default::default()
            },
        )
    }

    /// Roughly what Chromium offers for video.
    fn chrome_video() -> Vec<PayloadParams> {
        vec![
            params(96, Codec::Vp8, FormatParams::default()),
            params(
                98,
                Codec::Vp9,
                FormatParams {
                    profile_id: Some(0),
                    ..Default::default()
                },
            ),
            params(
                100,
                Codec::Vp9,
                FormatParams {
                    profile_id: Some(2),
                    ..Default::default()
                },
            ),
            h264(102, 0x42001f, 1),
            h264(104, 0x42001f, 0),
            h264(106, 0x42e01f, 1),
            h264(108, 0x42e01f, 0),
            h264(112, 0x64001f, 1),
            h264(39, 0x4d001f, 1),
            params(45, Codec::Av1, FormatParams::default()),
        ]
    }

    #[test]
    fn maps_by_codec_not_by_number() {
        let sub = chrome_video();
        // Firefox numbers VP8 120; the subscriber's number is 96.
        let src = params(120, Codec::Vp8, FormatParams::default());
        assert_eq!(select(&src, &sub), Some(96.into()));
        let src = params(41, Codec::Av1, FormatParams::default());
        assert_eq!(select(&src, &sub), Some(45.into()));
        let opus_src = params(111, Codec::Opus, FormatParams::default());
        let opus_dst = [params(109, Codec::Opus, FormatParams::default())];
        assert_eq!(select(&opus_src, &opus_dst), Some(109.into()));
    }

    #[test]
    fn h264_profiles_and_packetization_modes() {
        let sub = chrome_video();
        // OBS/libdatachannel: constrained baseline, mode 1 -> exact match.
        assert_eq!(select(&h264(96, 0x42e01f, 1), &sub), Some(106.into()));
        // Exact profile, other level (FFmpeg: High 4.0) -> same profile.
        assert_eq!(select(&h264(96, 0x640028, 1), &sub), Some(112.into()));
        // Constrained high goes to the high decoder.
        assert_eq!(select(&h264(96, 0x640c1f, 1), &sub), Some(112.into()));
        // Main: main, not baseline.
        assert_eq!(select(&h264(96, 0x4d0032, 1), &sub), Some(39.into()));
        // Mode 0 stays mode 0.
        assert_eq!(select(&h264(96, 0x42e01f, 0), &sub), Some(108.into()));
        // Debian's Chromium offers no High (64) but High 4:4:4 (f4), whose
        // decoder takes High: OBS's default x264 profile must still play.
        let debian_chromium = [
            h264(102, 0x42e01f, 1),
            h264(104, 0x4d001f, 1),
            h264(106, 0xf4001f, 1),
        ];
        assert_eq!(
            select(&h264(96, 0x64001e, 1), &debian_chromium),
            Some(106.into())
        );
        assert_eq!(
            select(&h264(96, 0x4d0028, 1), &debian_chromium),
            Some(104.into())
        );
        // A subscriber with only baseline cannot take High.
        let baseline_only = [h264(100, 0x42e01f, 1)];
        assert_eq!(select(&h264(96, 0x640028, 1), &baseline_only), None);
    }

    #[test]
    fn vp9_profile_must_match() {
        let sub = chrome_video();
        let p2 = params(
            1,
            Codec::Vp9,
            FormatParams {
                profile_id: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(select(&p2, &sub), Some(100.into()));
        let p1 = params(
            1,
            Codec::Vp9,
            FormatParams {
                profile_id: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(select(&p1, &sub), None);
    }
}
