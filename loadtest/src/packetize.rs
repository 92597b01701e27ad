//! The publisher's side of RTP mode (sans-IO): a synthetic frame cut into
//! RTP payloads the way a browser's packetizer cuts an encoder's output.
//! - VP8 (RFC 7741): every packet opens with a payload descriptor carrying
//!   the 15-bit picture id, TL0PICIDX and TID 0 with the layer-sync bit
//!   (each frame is a base-layer frame); the S bit on the first packet.
//! - H.264 (RFC 6184, packetization mode 1): SPS and PPS go together in one
//!   STAP-A, other NAL units alone when they fit, else in FU-A fragments.
//! - Opus: the frame is the payload.
//!
//! The marker bit belongs on the last packet of a video frame.

/// Most payload bytes per packet: room for the RTP header, its extensions
/// and the SRTP tag in a 1200-byte datagram.
pub const MAX_PAYLOAD: usize = 1100;

/// One VP8 layer's descriptor numbering, advanced once per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Numbering {
    /// 15-bit picture id of the next frame.
    pub picture_id: u16,
    /// TL0PICIDX of the next frame.
    pub tl0: u8,
}

impl Vp8Numbering {
    /// Numbering from a seed (e.g. the stream's SSRC), as encoders start at
    /// a random picture id.
    pub fn seeded(seed: u32) -> Vp8Numbering {
        Vp8Numbering {
            picture_id: (seed & 0x7fff) as u16,
            tl0: (seed >> 16) as u8,
        }
    }
}

/// Bytes of the descriptor [`vp8`] writes.
const VP8_DESCRIPTOR: usize = 6;

/// A VP8 frame's payloads; advances `n` to the next frame.
pub fn vp8(frame: &[u8], n: &mut Vp8Numbering, max: usize) -> Vec<Vec<u8>> {
    let chunk = max.saturating_sub(VP8_DESCRIPTOR).max(1);
    let pid = n.picture_id & 0x7fff;
    let out = frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| {
            let mut p = Vec::with_capacity(VP8_DESCRIPTOR + data.len());
            p.extend_from_slice(&[
                // X, S on the first packet, partition 0.
                0x80 | if i == 0 { 0x10 } else { 0 },
                // I, L, T.
                0xe0,
                0x80 | (pid >> 8) as u8,
                pid as u8,
                n.tl0,
                // TID 0, Y (layer sync).
                0x20,
            ]);
            p.extend_from_slice(data);
            p
        })
        .collect();
    n.picture_id = (pid + 1) & 0x7fff;
    n.tl0 = n.tl0.wrapping_add(1);
    out
}

/// The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes).
pub fn annex_b_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![];
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
        // A 4-byte start code's leading zero belongs to no unit.
        while end > s && stream[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > s {
            units.push(&stream[s..end]);
        }
    }
    units
}

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// An H.264 access unit's payloads (Annex B in, RFC 6184 mode 1 out).
pub fn h264(access_unit: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let units = annex_b_units(access_unit);
    let mut params: Vec<&[u8]> = vec![];
    for unit in units {
        let t = unit[0] & 0x1f;
        if t == 7 || t == 8 {
            params.push(unit);
            continue;
        }
        if !params.is_empty() {
            out.extend(stap_a(&params, max));
            params.clear();
        }
        if unit.len() <= max {
            out.push(unit.to_vec());
            continue;
        }
        let (header, body) = (unit[0], &unit[1..]);
        let chunks: Vec<&[u8]> = body.chunks(max.saturating_sub(2).max(1)).collect();
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let mut fu = (header & 0x1f) | if i == 0 { 0x80 } else { 0 };
            if i == last {
                fu |= 0x40;
            }
            let mut p = Vec::with_capacity(2 + c.len());
            p.extend_from_slice(&[(header & 0xe0) | FU_A, fu]);
            p.extend_from_slice(c);
            out.push(p);
        }
    }
    if !params.is_empty() {
        out.extend(stap_a(&params, max));
    }
    out
}

/// SPS and PPS in one STAP-A (each alone when together they do not fit).
fn stap_a(units: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
    let size = 1 + units.iter().map(|u| 2 + u.len()).sum::<usize>();
    if size > max {
        return units.iter().map(|u| u.to_vec()).collect();
    }
    let nri = units.iter().map(|u| u[0] & 0x60).max().unwrap_or(0);
    let mut p = Vec::with_capacity(size);
    p.push(nri | STAP_A);
    for u in units {
        p.extend_from_slice(&(u.len() as u16).to_be_bytes());
        p.extend_from_slice(u);
    }
    vec![p]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{inspect, vp8_descriptor, PayloadFormat};
    use crate::stamp::{video_frame, Stamp, VideoCodec};

    const S: Stamp = Stamp {
        layer: 2,
        seq: 9,
        sent_us: 1_000_000,
    };

    #[test]
    fn vp8_payloads_carry_numbering_start_and_the_whole_frame() {
        let frame = video_frame(VideoCodec::Vp8, true, 1280, 720, 5000, S);
        let mut n = Vp8Numbering {
            picture_id: 0x7fff,
            tl0: 255,
        };
        let packets = vp8(&frame, &mut n, MAX_PAYLOAD);
        assert_eq!(packets.len(), 5);
        assert!(packets.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let mut data = vec![];
        for (i, p) in packets.iter().enumerate() {
            let d = vp8_descriptor(p).expect("descriptor");
            assert_eq!((d.start, d.pid, d.picture_id), (i == 0, 0, Some(0x7fff)));
            data.extend_from_slice(&p[d.len..]);
        }
        assert_eq!(data, frame);
        let first = inspect(PayloadFormat::Vp8, &packets[0]);
        assert_eq!(
            (first.frame_start, first.keyframe, first.stamp),
            (true, true, Some(S))
        );
        // Picture id and TL0PICIDX wrap to the next frame.
        assert_eq!(
            n,
            Vp8Numbering {
                picture_id: 0,
                tl0: 0
            }
        );
    }

    #[test]
    fn h264_keyframes_go_as_stap_a_then_fu_a() {
        let frame = video_frame(VideoCodec::H264, true, 0, 0, 2500, S);
        let packets = h264(&frame, MAX_PAYLOAD);
        assert!(packets.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert_eq!(packets[0][0] & 0x1f, STAP_A);
        let views: Vec<_> = packets
            .iter()
            .map(|p| inspect(PayloadFormat::H264, p))
            .collect();
        assert!(views[0].frame_start && views[0].keyframe);
        assert_eq!(views[1].stamp, Some(S), "in the IDR's first fragment");
        assert!(views[2..]
            .iter()
            .all(|v| !v.frame_start && v.stamp.is_none()));
        // Fragments: start bit on the first, end bit on the last.
        let fus: Vec<u8> = packets[1..].iter().map(|p| p[1] & 0xc0).collect();
        assert_eq!(fus.first(), Some(&0x80));
        assert_eq!(fus.last(), Some(&0x40));
        // Reassembled, the units are the frame's.
        let mut idr = vec![(packets[1][0] & 0xe0) | (packets[1][1] & 0x1f)];
        for p in &packets[1..] {
            idr.extend_from_slice(&p[2..]);
        }
        assert_eq!(annex_b_units(&frame)[2], &idr[..]);
        // A small delta frame is one single-NAL packet.
        let delta = video_frame(VideoCodec::H264, false, 0, 0, 300, S);
        let packets = h264(&delta, MAX_PAYLOAD);
        assert_eq!(packets.len(), 1);
        assert_eq!(inspect(PayloadFormat::H264, &packets[0]).stamp, Some(S));
    }

    #[test]
    fn annex_b_splits_on_three_and_four_byte_start_codes() {
        let s = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3];
        let units = annex_b_units(&s);
        assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2], &[0x65, 3]]);
        assert!(annex_b_units(&[1, 2, 3]).is_empty());
    }
}
