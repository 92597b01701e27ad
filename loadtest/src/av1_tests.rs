//! Tests of the AV1 the generator sends: the template structures against
//! libwebrtc's tables, every frame's template, references and chains over
//! a stream, the payloads (aggregation header, OBU elements, fragments, N
//! on key pictures), what the server's own parser and descriptor reader
//! make of them, and what a receiver reads back, also with a layer thinned
//! out as the server does for a 640-wide viewer.

use super::*;
use crate::codec::PayloadFormat;
use crate::dd::{read, DdReader, Dti, FrameTemplate};
use crate::packetize::MAX_PAYLOAD;
use crate::packets::{InStream, PacketIn};
use crate::source::{svc_layers, MediaSource, SvcCodec};
use crate::vp9::SvcMode;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use str0m::format::Codec;

const S: Stamp = Stamp {
    layer: 0,
    seq: 3,
    sent_us: 50_000,
};

fn layers(spatial: u8, temporal: u8) -> Layers {
    Layers {
        spatial_layers: spatial,
        temporal_layers: temporal,
        sizes: [(320, 180), (640, 360), (1280, 720)],
    }
}

fn layer(spatial: u8, temporal: u8) -> Vp9Layer {
    Vp9Layer {
        spatial,
        temporal,
        switch_up: false,
        structure: layers(3, 3),
    }
}

/// A template from a DTI string as libwebrtc's tables write them.
fn tpl(spatial: u8, temporal: u8, dtis: &str, fdiffs: &[u8], chains: &[u8]) -> FrameTemplate {
    FrameTemplate::from_table(spatial, temporal, dtis, fdiffs, chains)
}

#[test]
fn l3t3_is_libwebrtcs_l3t3_key_structure() {
    let s = dd::structure(&layers(3, 3), 5);
    // ScalabilityStructureL3T3Key::DependencyStructure, templates sorted by
    // (spatial, temporal).
    let want = vec![
        tpl(0, 0, "SSSSSSSSS", &[], &[0, 0, 0]),
        tpl(0, 0, "SSS------", &[12], &[12, 11, 10]),
        tpl(0, 1, "-DS------", &[6], &[6, 5, 4]),
        tpl(0, 2, "--D------", &[3], &[3, 2, 1]),
        tpl(0, 2, "--D------", &[3], &[9, 8, 7]),
        tpl(1, 0, "---SSSSSS", &[1], &[1, 1, 1]),
        tpl(1, 0, "---SSS---", &[12], &[1, 12, 11]),
        tpl(1, 1, "----DS---", &[6], &[7, 6, 5]),
        tpl(1, 2, "-----D---", &[3], &[4, 3, 2]),
        tpl(1, 2, "-----D---", &[3], &[10, 9, 8]),
        tpl(2, 0, "------SSS", &[1], &[2, 1, 1]),
        tpl(2, 0, "------SSS", &[12], &[2, 1, 12]),
        tpl(2, 1, "-------DS", &[6], &[8, 7, 6]),
        tpl(2, 2, "--------D", &[3], &[5, 4, 3]),
        tpl(2, 2, "--------D", &[3], &[11, 10, 9]),
    ];
    assert_eq!(s.templates, want);
    assert_eq!(
        (s.template_id_offset, s.decode_targets, s.chains),
        (5, 9, 3)
    );
    assert_eq!(s.decode_target_protected_by, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    assert_eq!(s.resolutions, [(320, 180), (640, 360), (1280, 720)]);
    assert_eq!(s.validate(), Ok(()));
    let targets: Vec<(u8, u8)> = (0..9).map(|dt| (dt / 3, dt % 3)).collect();
    assert_eq!(s.decode_target_layers(), targets);
    // One layer, three temporal layers: libwebrtc's L1T3.
    let s = dd::structure(&layers(1, 3), 0);
    let want = vec![
        tpl(0, 0, "SSS", &[], &[0]),
        tpl(0, 0, "SSS", &[4], &[4]),
        tpl(0, 1, "-DS", &[2], &[2]),
        tpl(0, 2, "--D", &[1], &[1]),
        tpl(0, 2, "--D", &[1], &[3]),
    ];
    assert_eq!(s.templates, want);
    assert_eq!(s.resolutions, [(320, 180)]);
    // Every mode is a structure the server's writer and reader agree on.
    for (sl, tl) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (2, 3),
        (3, 1),
        (3, 2),
        (3, 3),
    ] {
        let s = Arc::new(dd::structure(&layers(sl, tl), 63));
        assert_eq!(s.validate(), Ok(()), "L{sl}T{tl}");
        let d = Descriptor {
            structure: Some(s.clone()),
            template_id: 63,
            ..Descriptor::default()
        };
        assert_eq!(read(&d.write(&s), None), Ok(d), "L{sl}T{tl}");
    }
}

/// A whole stream from the source in `mode`, packetized as the publisher
/// does (see [`Packets`]).
fn stream(mode: SvcMode, pictures: usize, key_at: &[usize], max: usize) -> Packets {
    let t0 = Instant::now();
    let layers = svc_layers(mode, &[]);
    let mut src = MediaSource::scalable(SvcCodec::Av1, mode, layers, false, t0, t0);
    let mut n = Av1Numbering::seeded(0x0031_fff0);
    let mut out = vec![];
    for i in 0..pictures {
        if key_at.contains(&i) {
            src.request_keyframe(None);
        }
        for f in src.poll(t0 + Duration::from_millis(50 * i as u64)) {
            let l = f.svc.expect("layers");
            let packets = packetize(&f.data, &l, f.keyframe, &mut n, max);
            let last = packets.len() - 1;
            for (j, p) in packets.into_iter().enumerate() {
                out.push((l, f.keyframe, f.rtp_time, p, j == last && l.ends_picture()));
            }
        }
    }
    out
}

const L3T3: SvcMode = SvcMode {
    spatial: 3,
    temporal: 3,
};

#[test]
fn every_frame_refers_to_frames_sent_and_its_chains_are_right() {
    for mode in [
        L3T3,
        SvcMode {
            spatial: 2,
            temporal: 2,
        },
        SvcMode {
            spatial: 1,
            temporal: 3,
        },
    ] {
        let packets = stream(mode, 30, &[9], MAX_PAYLOAD);
        let mut reader = DdReader::default();
        // Frame number -> (spatial, temporal); the newest frame per chain.
        let mut sent: HashMap<u16, (u8, u8)> = HashMap::new();
        let mut chain_last: Vec<Option<u16>> = vec![None; usize::from(mode.spatial)];
        let mut numbers = vec![];
        for (l, key, _, p, _) in &packets {
            let d = read(&p.descriptor, reader.structure()).expect("descriptor");
            let f = reader.read(&p.descriptor).expect("readable");
            assert_eq!((f.spatial, f.temporal), (l.spatial, l.temporal), "{mode}");
            if !d.start_of_frame {
                continue;
            }
            let s = reader.structure().expect("structure").clone();
            let n = d.frame_number;
            numbers.push(n);
            // Key picture frames refer at most to the layers below.
            assert_eq!(f.key_picture, *key, "{mode} frame {n}");
            for fdiff in d.fdiffs(&s).expect("template") {
                let (rs, rt) = sent[&n.wrapping_sub(fdiff)];
                assert!(rs <= l.spatial && rt <= l.temporal, "{mode} frame {n}");
                // Only a key picture's upper layers refer to another layer.
                assert!(rs == l.spatial || *key, "{mode} frame {n}");
            }
            // A chain holds the frames its spatial layer's base decode
            // target needs: its diff goes to the newest of them before.
            let dtis = d.dtis(&s).expect("template").to_vec();
            let chains = d.chain_fdiffs(&s).expect("template").to_vec();
            let key_base = *key && l.spatial == 0;
            for (c, diff) in chains.iter().enumerate() {
                let want = match chain_last[c] {
                    Some(last) if !key_base => n.wrapping_sub(last) as u8,
                    _ => 0,
                };
                assert_eq!(*diff, want, "{mode} frame {n} chain {c}");
            }
            for (c, last) in chain_last.iter_mut().enumerate() {
                let base_target = c * usize::from(mode.temporal);
                if dtis[base_target] != Dti::NotPresent {
                    *last = Some(n);
                }
            }
            sent.insert(n, (l.spatial, l.temporal));
        }
        // One frame number per layer frame, from the seed, no gap.
        let want: Vec<u16> = (0..numbers.len())
            .map(|i| 0xfff0u16.wrapping_add(i as u16))
            .collect();
        assert_eq!(numbers, want, "{mode}");
    }
}

#[test]
fn a_key_picture_base_layer_opens_with_n_and_a_sequence_header() {
    let frame = super::frame(&layer(0, 0), true, 2_500, S);
    let mut n = Av1Numbering::seeded(7);
    let packets = packetize(&frame, &layer(0, 0), true, &mut n, MAX_PAYLOAD);
    assert_eq!(packets.len(), 3);
    // Z=0, Y=1, W=2, N=1: the sequence header with its length, then the
    // frame OBU's start; then Z=1 W=1 fragments, Y=0 on the last.
    assert_eq!(packets[0].payload[0], 0x68);
    let seq = sequence_header(&layers(3, 3));
    assert_eq!(usize::from(packets[0].payload[1]), 1 + seq.len());
    assert_eq!(packets[0].payload[2], OBU_SEQUENCE_HEADER << 3);
    assert_eq!(&packets[0].payload[3..3 + seq.len()], &seq[..]);
    // The frame OBU: no size field, the extension (T0 S0), KEY_FRAME.
    let obu = &packets[0].payload[3 + seq.len()..];
    assert_eq!(&obu[..3], &[(OBU_FRAME << 3) | 0x04, 0x00, 0x10]);
    assert_eq!(packets[1].payload[0], 0xd0);
    assert_eq!(packets[2].payload[0], 0x90);
    // The structure's bytes come out of the first payload.
    let first = packets[0].payload.len() + packets[0].descriptor.len();
    assert!(first <= MAX_PAYLOAD + 3, "{first}");
    assert!(packets.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
    // The descriptor: the structure on the first packet, start and end.
    let mut reader = DdReader::default();
    let frames: Vec<_> = packets
        .iter()
        .map(|p| reader.read(&p.descriptor).expect("descriptor"))
        .collect();
    assert!(packets[0].descriptor.len() > 16 && packets[1].descriptor.len() == 3);
    let ends: Vec<_> = frames.iter().map(|f| (f.start, f.end)).collect();
    assert_eq!(ends, [(true, false), (false, false), (false, true)]);
    assert!(frames.iter().all(|f| f.key_picture && f.spatial == 0));
    // Reassembled: the encoder's OBUs without the temporal delimiter and
    // without their size fields.
    let view = read_payload(&packets[0].payload).expect("payload");
    let want = PayloadView {
        starts_frame: true,
        keyframe: true,
        stamp: Some(S),
    };
    assert_eq!(view, want);
    assert_eq!(frame_stamp(&frame), Some(S));
    let mut body = vec![];
    for (i, p) in packets.iter().enumerate() {
        let skip = if i == 0 { 3 + seq.len() } else { 1 };
        body.extend_from_slice(&p.payload[skip..]);
    }
    let frame_obu = obus(&frame).pop().expect("the frame OBU");
    assert_eq!(body[2..], *frame_obu.payload);
}

#[test]
fn other_frames_are_one_inter_frame_obu_with_their_layers() {
    let mut n = Av1Numbering::seeded(7);
    let stamp = Stamp { layer: 2, ..S };
    let frame = super::frame(&layer(2, 1), false, 300, stamp);
    let p = packetize(&frame, &layer(2, 1), false, &mut n, MAX_PAYLOAD);
    assert_eq!(p.len(), 1);
    // Z=0 Y=0 W=1 N=0; frame OBU with extension T1 S2; INTER_FRAME.
    assert_eq!(&p[0].payload[..4], &[0x10, 0x34, 0x30, 0x30]);
    // Two bytes of obu_size out, the aggregation header in.
    assert_eq!(p[0].payload.len(), 300 - 1);
    let view = read_payload(&p[0].payload).expect("payload");
    assert_eq!(
        (view.starts_frame, view.keyframe, view.stamp),
        (true, false, Some(stamp))
    );
    // An upper layer of a key picture is an inter frame too (N=0).
    let frame = super::frame(&layer(1, 0), true, 300, stamp);
    let p = packetize(&frame, &layer(1, 0), true, &mut n, MAX_PAYLOAD);
    assert_eq!(&p[0].payload[..4], &[0x10, 0x34, 0x08, 0x30]);
    // A stream without layers writes no extension header.
    let single = Vp9Layer::single(640, 360);
    let frame = super::frame(&single, false, 200, S);
    let p = packetize(&frame, &single, false, &mut n, MAX_PAYLOAD);
    assert_eq!(&p[0].payload[..3], &[0x10, OBU_FRAME << 3, 0x30]);
}

#[test]
fn small_payloads_fragment_obus_and_aggregate_up_to_three() {
    // Three OBUs of 5, 40 and 7 bytes (with header) in payloads of 20.
    let mut data = vec![];
    put_obu(&mut data, OBU_TEMPORAL_DELIMITER, None, &[]);
    put_obu(&mut data, OBU_SEQUENCE_HEADER, None, &[1; 4]);
    put_obu(&mut data, OBU_FRAME, None, &[2; 39]);
    put_obu(&mut data, 5, None, &[3; 6]);
    let payloads = aggregate(&data, 20, 20);
    assert!(payloads.iter().all(|p| p.len() <= 20), "{payloads:02x?}");
    // The first: W=2, the sequence header (length 5) and the frame OBU's
    // start (Y); then the frame OBU's middle (Z, Y); then its end and the
    // metadata OBU (Z, W=2).
    let heads: Vec<u8> = payloads.iter().map(|p| p[0]).collect();
    assert_eq!(heads, [0x60, 0xd0, 0xa0]);
    assert_eq!(&payloads[0][1..3], &[5, OBU_SEQUENCE_HEADER << 3]);
    // Put back together, element by element: the OBUs without sizes.
    let mut elements: Vec<Vec<u8>> = vec![];
    for p in &payloads {
        let (continues, count) = (p[0] & Z != 0, usize::from((p[0] >> 4) & 3));
        let mut rest = &p[1..];
        let mut i = 0;
        while !rest.is_empty() {
            let e = if i + 1 == count {
                std::mem::take(&mut rest)
            } else {
                let (len, n) = read_leb128(rest).expect("length");
                let (e, tail) = rest[n..].split_at(len);
                rest = tail;
                e
            };
            match (i, continues, elements.last_mut()) {
                (0, true, Some(last)) => last.extend_from_slice(e),
                _ => elements.push(e.to_vec()),
            }
            i += 1;
        }
    }
    let mut want = vec![vec![OBU_SEQUENCE_HEADER << 3, 1, 1, 1, 1]];
    want.push([vec![OBU_FRAME << 3], vec![2; 39]].concat());
    want.push([vec![5 << 3], vec![3; 6]].concat());
    assert_eq!(elements, want);
    // Four small OBUs: three in the first packet (W=3), one in the next.
    let mut data = vec![];
    for _ in 0..4 {
        put_obu(&mut data, OBU_FRAME, None, &[9]);
    }
    let payloads = aggregate(&data, 100, 100);
    assert_eq!(
        payloads,
        [
            vec![0x30, 2, 0x30, 9, 2, 0x30, 9, 0x30, 9],
            vec![0x10, 0x30, 9]
        ]
    );
}

#[test]
fn the_server_parser_and_descriptor_reader_take_the_stream() {
    let packets = stream(L3T3, 8, &[], MAX_PAYLOAD);
    let mut known = None;
    let (mut frames, mut keyframes) = (0, 0);
    for (i, (l, _, _, p, _)) in packets.iter().enumerate() {
        let info = sfu::forward::codec::parse(Codec::Av1, &p.payload).expect("server parses");
        let d = read(&p.descriptor, known.as_ref()).expect("server reads the descriptor");
        if let Some(s) = &d.structure {
            known = Some(s.clone());
        }
        let s = known.as_ref().expect("a structure");
        assert_eq!(d.spatial(s), Some(l.spatial));
        assert_eq!(d.temporal(s), Some(l.temporal));
        // Z=0 on every layer frame's first packet only.
        assert_eq!(info.starts_frame, d.start_of_frame, "packet {i}");
        frames += usize::from(info.starts_frame);
        keyframes += usize::from(info.starts_keyframe);
        if i == 0 {
            // The key picture: keyframe, the sequence header's size (the
            // top layer's), every layer's from the structure.
            assert!(info.starts_keyframe);
            assert_eq!(info.dims, Some((1280, 720)));
            assert_eq!(d.resolution(s), Some((320, 180)));
            assert_eq!(s.resolutions, [(320, 180), (640, 360), (1280, 720)]);
        }
    }
    assert_eq!(
        (frames, keyframes),
        (24, 1),
        "one keyframe: picture 0's base"
    );
}

/// A completed frame as [`receive`] reports it: (spatial, temporal,
/// keyframe, stamp seq, marker).
type Got = (u8, Option<u8>, bool, Option<u64>, bool);

/// A stream's packets as [`stream`] makes them: (layer, key picture, rtp
/// time, packet, marker).
type Packets = Vec<(Vp9Layer, bool, u64, Av1Packet, bool)>;

/// Feed `packets` to a receiver's stream with sequence numbers in order,
/// `keep` deciding which get through (the others skipped, the sequence
/// closed over them as the server does): each completed frame's (spatial,
/// temporal, keyframe, stamp seq, marker).
fn receive(packets: &Packets, keep: impl Fn(&Vp9Layer) -> bool, marker_on: u8) -> Vec<Got> {
    let mut s = InStream::new(PayloadFormat::Av1);
    let mut out = vec![];
    let mut seq = 100u16;
    for (l, _, ts, p, _) in packets.iter().filter(|(l, ..)| keep(l)) {
        let d = read(&p.descriptor, s.dd.structure()).expect("descriptor");
        let packet = PacketIn {
            seq,
            rtp_time: *ts as u32,
            marker: d.end_of_frame && l.spatial == marker_on,
            payload: &p.payload,
            dd: Some(&p.descriptor),
        };
        seq = seq.wrapping_add(1);
        if let Some(f) = s.on_packet(&packet, 0) {
            let stamp = f.stamp.expect("stamped");
            out.push((
                stamp.layer,
                f.temporal,
                f.keyframe,
                Some(stamp.seq),
                f.marker,
            ));
        }
    }
    assert_eq!(s.seq.lost(), 0);
    out
}

#[test]
fn a_receiver_gets_each_layer_frame_whole_with_its_layers() {
    let packets = stream(L3T3, 5, &[4], 400);
    assert!(
        packets.iter().any(|(.., p, _)| p.payload[0] & Z != 0),
        "fragments"
    );
    let got = receive(&packets, |_| true, 2);
    // Pictures T0 (key), T2, T1, T2, T0 (key, asked for): every layer,
    // numbered per spatial and temporal layer, the marker on the top.
    let mut want = vec![];
    for (tid, key, seq) in [
        (0, true, 0),
        (2, false, 0),
        (1, false, 0),
        (2, false, 1),
        (0, true, 1),
    ] {
        for sid in 0..3 {
            want.push((sid, Some(tid), key, Some(seq), sid == 2));
        }
    }
    assert_eq!(got, want);
    // A 640-wide viewer: layer 2 dropped, the marker on layer 1's end.
    let got = receive(&packets, |l| l.spatial < 2, 1);
    let want: Vec<_> = want
        .into_iter()
        .filter(|f| f.0 < 2)
        .map(|(s, t, k, n, _)| (s, t, k, n, s == 1))
        .collect();
    assert_eq!(got, want);
    // Without the structure (its packet lost) nothing can be read.
    let mut r = DdReader::default();
    assert_eq!(r.read(&packets[5].3.descriptor), None);
}

#[test]
fn cut_and_damaged_payloads_are_read_without_panic() {
    let packets = stream(L3T3, 2, &[], 300);
    for (.., p, _) in &packets {
        for len in 0..p.payload.len() {
            let _ = read_payload(&p.payload[..len]);
        }
        let mut bytes = p.payload.clone();
        for i in 0..bytes.len().min(40) {
            bytes[i] ^= 0xff;
            let _ = read_payload(&bytes);
            bytes[i] ^= 0xff;
        }
    }
    assert_eq!(read_payload(&[]), None);
    // An element longer than the packet.
    assert_eq!(read_payload(&[0x00, 0x05, 0x30]), None);
    assert_eq!(frame_stamp(&[0x32, 0x7f, 0x00]), None);
}
