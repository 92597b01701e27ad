//! Tests of the VP9 descriptor the generator writes: its bytes, where B, E,
//! V and the marker go, the numbering across a picture's layers, reading
//! it back, and what the server's own parser makes of it.

use super::*;
use crate::codec::{inspect, PayloadFormat};
use crate::packetize::MAX_PAYLOAD;
use crate::source::{svc_layers, MediaSource, SvcCodec};
use crate::stamp::{video_frame, Stamp, VideoCodec};
use std::time::{Duration, Instant};
use str0m::format::Codec;

const S: Stamp = Stamp {
    layer: 0,
    seq: 3,
    sent_us: 50_000,
};

fn l3t3() -> Structure {
    Structure {
        spatial_layers: 3,
        temporal_layers: 3,
        sizes: [(320, 180), (640, 360), (1280, 720)],
    }
}

fn layer(spatial: u8, temporal: u8, switch_up: bool) -> Vp9Layer {
    Vp9Layer {
        spatial,
        temporal,
        switch_up,
        structure: l3t3(),
    }
}

#[test]
fn scalability_modes_parse_and_print() {
    let m: SvcMode = "L3T3".parse().expect("L3T3");
    assert_eq!(
        m,
        SvcMode {
            spatial: 3,
            temporal: 3
        }
    );
    assert_eq!(m.to_string(), "L3T3_KEY");
    assert_eq!("l2t1_key".parse::<SvcMode>().map(|m| m.spatial), Ok(2));
    for bad in ["L4T1", "L0T2", "S3T3", "L3", "L3T", "LxT2", ""] {
        assert!(bad.parse::<SvcMode>().is_err(), "{bad}");
    }
}

#[test]
fn a_key_picture_base_layer_opens_with_the_scalability_structure() {
    let frame = video_frame(VideoCodec::Vp9, true, 320, 180, 2_500, S);
    let mut n = Vp9Numbering {
        picture_id: 0x1234,
        tl0: 6,
    };
    let packets = packetize(&frame, &layer(0, 0, false), true, &mut n, MAX_PAYLOAD);
    assert_eq!(packets.len(), 3);
    // I L B V | M + picture id 0x1234 | TID 0, U 0, SID 0, D 0 | TL0PICIDX 7.
    assert_eq!(&packets[0][..5], &[0xaa, 0x92, 0x34, 0x00, 0x07]);
    // N_S 2 (three layers), Y, G | three sizes | N_G 4, then per picture
    // TID/U/R=1 and its P_DIFF: Chromium's L1T3 group.
    let ss: &[u8] = &[
        0x58, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0, 0x04, 0x04,
        0x04, 0x54, 0x01, 0x34, 0x02, 0x44, 0x01,
    ];
    assert_eq!(&packets[0][5..5 + ss.len()], ss);
    assert_eq!(
        packets[0][5 + ss.len()],
        0x82,
        "the keyframe header follows"
    );
    // Continuation: I L only; the last: E.
    assert_eq!(packets[1][0], 0xa0);
    assert_eq!(packets[2][0], 0xa4);
    assert!(packets.iter().all(|p| p.len() <= MAX_PAYLOAD));
    // Not the picture's top layer: the picture id stays.
    assert_eq!(n.picture_id, 0x1234);
    // Read back: the frame's bytes, whole.
    let mut data = vec![];
    for (i, p) in packets.iter().enumerate() {
        let d = descriptor(p).expect("descriptor");
        assert_eq!((d.begin, d.end, d.inter), (i == 0, i == 2, false));
        assert_eq!((d.picture_id, d.tl0), (Some(0x1234), Some(7)));
        assert_eq!(d.structure, i == 0);
        data.extend_from_slice(&p[d.len..]);
    }
    assert_eq!(data, frame);
}

#[test]
fn the_layers_above_of_a_key_picture_depend_on_the_one_below() {
    let frame = video_frame(VideoCodec::Vp9, false, 640, 360, 900, S);
    let mut n = Vp9Numbering::seeded(0);
    let p = packetize(&frame, &layer(1, 0, false), true, &mut n, MAX_PAYLOAD);
    // One packet: I L B E, SID 1 with D, no structure.
    assert_eq!(p.len(), 1);
    assert_eq!(p[0][0], 0xac);
    assert_eq!(p[0][3], 0x03);
    // On a delta picture: P, and no D.
    let p = packetize(&frame, &layer(2, 2, true), false, &mut n, MAX_PAYLOAD);
    assert_eq!(p[0][0], 0xec);
    // TID 2, U, SID 2, D 0.
    assert_eq!(p[0][3], 0x54);
    let d = descriptor(&p[0]).expect("descriptor");
    let got = (d.spatial, d.temporal, d.switch_up, d.inter_layer);
    assert_eq!(got, (2, 2, true, false));
}

#[test]
fn numbering_is_per_picture_and_tl0picidx_per_base_layer_picture() {
    let mut n = Vp9Numbering {
        picture_id: 0x7ffe,
        tl0: 255,
    };
    let frame = [0x86, 0x00, 0x40, 0x80];
    let mut seen = vec![];
    // Three pictures of three layers: T0, T2, T1.
    for (tid, u) in [(0, false), (2, true), (1, true)] {
        for sid in 0..3 {
            let p = packetize(&frame, &layer(sid, tid, u), tid == 0, &mut n, MAX_PAYLOAD);
            let d = descriptor(&p[0]).expect("descriptor");
            seen.push((d.picture_id, d.tl0));
        }
    }
    let want = |pid, tl0| [(Some(pid), Some(tl0)); 3];
    let expect: Vec<_> = [want(0x7ffe, 0), want(0x7fff, 0), want(0, 0)].concat();
    assert_eq!(seen, expect);
}

#[test]
fn truncated_descriptors_are_not_read() {
    let frame = video_frame(VideoCodec::Vp9, true, 320, 180, 100, S);
    let p = packetize(
        &frame,
        &layer(0, 0, false),
        true,
        &mut Vp9Numbering::seeded(1),
        1100,
    );
    let ss_end = p[0].len() - frame.len();
    for cut in 0..=ss_end {
        assert_eq!(descriptor(&p[0][..cut]), None, "cut at {cut}");
    }
    assert!(descriptor(&p[0][..ss_end + 1]).is_some());
    // Flexible mode with reference indices (not written, but read past).
    let flexible = [I | P | L | F | B, 0x05, 0x20, 0x03, 0x04, 0x86];
    let d = descriptor(&flexible).expect("flexible");
    assert_eq!((d.len, d.tl0, d.temporal), (5, None, 1));
    assert_eq!(
        descriptor(&[I | P | L | F | B, 0x05, 0x20, 0x03, 0x05]),
        None
    );
}

/// A whole L3T3 stream from the source, packetized as the publisher does,
/// with the marker where it puts it: (payload, marker, rtp time).
fn stream(pictures: usize, key_every: Option<usize>) -> Vec<(Vec<u8>, bool, u64)> {
    let t0 = Instant::now();
    let mode = SvcMode {
        spatial: 3,
        temporal: 3,
    };
    let layers = svc_layers(mode, &[]);
    let mut src = MediaSource::scalable(SvcCodec::Vp9, mode, layers, false, t0, t0);
    let mut n = Vp9Numbering::seeded(9);
    let mut out = vec![];
    for i in 0..pictures {
        let now = t0 + Duration::from_millis(50 * i as u64);
        if key_every.is_some_and(|k| i > 0 && i % k == 0) {
            src.request_keyframe(None);
        }
        for f in src.poll(now) {
            let l = f.svc.expect("a VP9 layer");
            let payloads = packetize(&f.data, &l, f.keyframe, &mut n, MAX_PAYLOAD);
            let last = payloads.len() - 1;
            for (j, p) in payloads.into_iter().enumerate() {
                out.push((p, j == last && l.ends_picture(), f.rtp_time));
            }
        }
    }
    out
}

#[test]
fn the_marker_ends_each_picture_on_its_top_layer() {
    let packets = stream(8, None);
    // (spatial, B, E, marker) of each packet, by media time.
    let mut pictures = std::collections::BTreeMap::<u64, Vec<_>>::new();
    for (p, marker, ts) in &packets {
        let d = descriptor(p).expect("descriptor");
        let v = pictures.entry(*ts).or_default();
        v.push((d.spatial, d.begin, d.end, *marker));
    }
    assert_eq!(pictures.len(), 8);
    for v in pictures.values() {
        // Layers in order, each from B to E; the marker only on the last.
        let layers: Vec<u8> = v.iter().filter(|x| x.1).map(|x| x.0).collect();
        assert_eq!(layers, vec![0, 1, 2]);
        assert_eq!(v.iter().filter(|x| x.2).count(), 3, "one E per layer");
        let markers: Vec<bool> = v.iter().map(|x| x.3).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert_eq!(markers.last(), Some(&true));
        assert!(v.last().is_some_and(|x| x.0 == 2 && x.2));
    }
    // Temporal layers 0 2 1 2 0 2 1 2 on the base layer's first packets.
    let tids: Vec<u8> = packets
        .iter()
        .filter_map(|(p, _, _)| descriptor(p).filter(|d| d.begin && d.spatial == 0))
        .map(|d| d.temporal)
        .collect();
    assert_eq!(tids, vec![0, 2, 1, 2, 0, 2, 1, 2]);
}

#[test]
fn the_receiver_reads_layer_frames_keyframes_and_stamps() {
    let packets = stream(6, Some(3));
    let mut starts = vec![];
    for (p, _, _) in &packets {
        let v = inspect(PayloadFormat::Vp9, p);
        let (sid, tid) = v.layer.expect("layers in every packet");
        if v.frame_start {
            let s = v.stamp.expect("a stamp at each layer frame's start");
            assert_eq!(s.layer, sid);
            starts.push((sid, tid, v.keyframe, s.seq));
        } else {
            assert!(!v.keyframe && v.stamp.is_none());
        }
    }
    // Picture 0 and 3 (asked for) are key pictures, every layer of them;
    // frame numbers count per spatial and temporal layer.
    let want = vec![
        (0, 0, true, 0),
        (1, 0, true, 0),
        (2, 0, true, 0),
        (0, 2, false, 0),
        (1, 2, false, 0),
        (2, 2, false, 0),
        (0, 1, false, 0),
        (1, 1, false, 0),
        (2, 1, false, 0),
        (0, 0, true, 1),
        (1, 0, true, 1),
        (2, 0, true, 1),
        (0, 2, false, 1),
        (1, 2, false, 1),
        (2, 2, false, 1),
        (0, 1, false, 1),
        (1, 1, false, 1),
        (2, 1, false, 1),
    ];
    assert_eq!(starts, want);
    let ends = packets
        .iter()
        .filter(|(p, _, _)| inspect(PayloadFormat::Vp9, p).frame_end)
        .count();
    assert_eq!(ends, 18);
}

#[test]
fn the_server_parser_reads_the_stream_as_written() {
    let packets = stream(4, None);
    let mut keyframes = 0;
    let mut frames = 0;
    for (i, (p, _, _)) in packets.iter().enumerate() {
        let info = sfu::forward::codec::parse(Codec::Vp9, p).expect("the server parses it");
        let d = descriptor(p).expect("descriptor");
        assert_eq!((info.spatial, info.temporal), (d.spatial, d.temporal));
        assert_eq!((info.sync, info.ends_frame), (d.switch_up, d.end));
        assert_eq!(info.starts_frame, d.begin);
        frames += usize::from(info.starts_frame);
        keyframes += usize::from(info.starts_keyframe);
        if i == 0 {
            // The key picture's first packet: keyframe, its size and every
            // layer's from the structure.
            assert!(info.starts_keyframe);
            assert_eq!(info.dims, Some((320, 180)));
            assert_eq!(
                info.spatial_dims,
                [Some((320, 180)), Some((640, 360)), Some((1280, 720)), None]
            );
        }
    }
    assert_eq!(
        (frames, keyframes),
        (12, 1),
        "one keyframe: picture 0's base"
    );
}
