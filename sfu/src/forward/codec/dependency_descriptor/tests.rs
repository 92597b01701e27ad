//! Tests of the dependency descriptor reader and writer: libwebrtc-shaped L3T3
//! and L1T3 structures, a captured Chromium L3T3 sequence, active decode
//! target rewriting, custom fields, errors and robustness against garbage.

use super::write::BitWriter;
use super::*;

use DescriptorError::{Malformed, Truncated, UnknownStructure, UnknownTemplate};

/// A template from a DTI string as the spec's tables write them ('-', 'D',
/// 'S', 'R', one per decode target).
fn tpl(spatial: u8, temporal: u8, dtis: &str, fdiffs: &[u8], chains: &[u8]) -> FrameTemplate {
    FrameTemplate::from_table(spatial, temporal, dtis, fdiffs, chains)
}

/// L3T3 full SVC (not KEY) as libwebrtc's ScalabilityStructureL3T3
/// describes it: decode target 3 * s + t, chain s protecting the targets of
/// spatial layer s, templates sorted by (spatial, temporal).
fn l3t3() -> Structure {
    Structure {
        template_id_offset: 0,
        decode_targets: 9,
        templates: vec![
            tpl(0, 0, "SSSRRRRRR", &[12], &[12, 11, 10]),
            tpl(0, 0, "SSSSSSSSS", &[], &[0, 0, 0]),
            tpl(0, 1, "-DS-RR-RR", &[6], &[6, 5, 4]),
            tpl(0, 2, "--D--R--R", &[3], &[3, 2, 1]),
            tpl(0, 2, "--D--R--R", &[3], &[9, 8, 7]),
            tpl(1, 0, "---SSSRRR", &[12, 1], &[1, 1, 1]),
            tpl(1, 0, "---SSSSSS", &[1], &[1, 1, 1]),
            tpl(1, 1, "----DS-RR", &[6, 1], &[7, 6, 5]),
            tpl(1, 2, "-----D--R", &[3, 1], &[4, 3, 2]),
            tpl(1, 2, "-----D--R", &[3, 1], &[10, 9, 8]),
            tpl(2, 0, "------SSS", &[12, 1], &[2, 1, 1]),
            tpl(2, 0, "------SSS", &[1], &[2, 1, 1]),
            tpl(2, 1, "-------DS", &[6, 1], &[8, 7, 6]),
            tpl(2, 2, "--------D", &[3, 1], &[5, 4, 3]),
            tpl(2, 2, "--------D", &[3, 1], &[11, 10, 9]),
        ],
        chains: 3,
        decode_target_protected_by: vec![0, 0, 0, 1, 1, 1, 2, 2, 2],
        resolutions: vec![],
    }
}

/// L1T3 as libwebrtc's ScalabilityStructureL1T3 describes it (decode
/// targets T0, T0-T1, T0-T2; one chain of the T0 frames).
fn l1t3() -> Structure {
    Structure {
        template_id_offset: 0,
        decode_targets: 3,
        templates: vec![
            tpl(0, 0, "SSS", &[], &[0]),
            tpl(0, 0, "SSS", &[4], &[4]),
            tpl(0, 1, "-DS", &[2], &[2]),
            tpl(0, 2, "--D", &[1], &[1]),
            tpl(0, 2, "--D", &[1], &[3]),
        ],
        chains: 1,
        decode_target_protected_by: vec![0, 0, 0],
        resolutions: vec![],
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// `d` without its explicit bitmask.
fn unmasked(d: Descriptor) -> Descriptor {
    Descriptor {
        active_decode_targets: None,
        ..d
    }
}

/// The explicit bitmask `data` reads with.
fn mask(data: &[u8], known: &Arc<Structure>) -> Result<Option<u32>, DescriptorError> {
    read(data, Some(known)).map(|d| d.active_decode_targets)
}

fn frame(template_id: u8, frame_number: u16) -> Descriptor {
    Descriptor {
        start_of_frame: true,
        end_of_frame: true,
        template_id,
        frame_number,
        ..Default::default()
    }
}

/// Whatever `read` accepts is consistent, and writes back to bytes that
/// read to an equal descriptor (also with a rewritten bitmask).
fn assert_round_trip(data: &[u8], known: Option<&Arc<Structure>>) {
    let Ok(d) = read(data, known) else {
        return;
    };
    let s = d.structure_or(known).expect("read needs a structure");
    assert_eq!(s.validate(), Ok(()), "{s:?}");
    let dts = usize::from(s.decode_targets);
    assert_eq!(d.dtis(s).map(<[Dti]>::len), Some(dts));
    assert_eq!(d.chain_fdiffs(s).map(<[u8]>::len), Some(s.chains.into()));
    let bytes = d.write(s);
    assert_eq!(read(&bytes, known).as_ref(), Ok(&d), "{bytes:02x?}");
    let masked = with_active_decode_targets(&d, s, 1);
    let back = read(&masked, known).expect("rewritten descriptor reads");
    assert_eq!(back.active_decode_targets, Some(1));
    assert_eq!(unmasked(back), unmasked(d));
}

#[test]
fn l3t3_key_frame_then_deltas() {
    let mut s = l3t3();
    s.template_id_offset = 60; // template ids wrap: 60..=63, 0..=10
    s.resolutions = vec![(320, 180), (640, 360), (1280, 720)];
    assert_eq!(s.validate(), Ok(()));
    let s = Arc::new(s);

    // The key frame's first packet: template 1 (S0 T0, all Switch).
    let key = Descriptor {
        end_of_frame: false,
        structure: Some(s.clone()),
        ..frame(61, 1000)
    };
    let bytes = key.write(&s);
    let back = read(&bytes, None).expect("key frame descriptor");
    assert_eq!(back, key);
    assert_eq!(back.active_decode_targets_or_default(), Some(0x1ff));
    assert_eq!(back.template_index(&s), Some(1));
    assert_eq!(back.dtis(&s), Some(&[Dti::Switch; 9][..]));
    assert_eq!(back.chain_fdiffs(&s), Some(&[0, 0, 0][..]));
    assert_eq!(back.fdiffs(&s).map(Iterator::count), Some(0));
    assert_eq!(back.resolution(&s), Some((320, 180)));
    // The attached structure wins over a stale known one.
    assert_eq!(read(&bytes, Some(&Arc::new(l1t3()))), Ok(key));

    // Delta frames of each template (layer) as 3-byte descriptors.
    for (index, template) in s.templates.iter().enumerate() {
        let d = frame(((60 + index) % 64) as u8, 1001 + index as u16);
        let bytes = d.write(&s);
        assert_eq!(bytes.len(), 3);
        let back = read(&bytes, Some(&s)).expect("delta frame descriptor");
        assert_eq!((back.active_decode_targets_or_default(), &back), (None, &d));
        assert_eq!(back.spatial(&s), Some(template.spatial));
        assert_eq!(back.temporal(&s), Some(template.temporal));
        assert_eq!(back.dtis(&s), Some(&template.dtis[..]));
        let fdiffs = back.fdiffs(&s).expect("template").map(|f| f as u8);
        assert!(fdiffs.eq(template.fdiffs.iter().copied()));
        assert_eq!(back.chain_fdiffs(&s), Some(&template.chain_fdiffs[..]));
        let size = s.resolutions.get(usize::from(template.spatial));
        assert_eq!(back.resolution(&s).as_ref(), size);
    }
    // S1 T1 delta (template 7 = id 3), byte by byte: S=1 E=1 id=000011,
    // frame_number 0x03f0.
    assert_eq!(frame(3, 0x03f0).write(&s), [0xc3, 0x03, 0xf0]);
    let d = read(&[0xc3, 0x03, 0xf0], Some(&s)).expect("S1 T1");
    assert_eq!((d.spatial(&s), d.temporal(&s)), (Some(1), Some(1)));
    assert!(d.fdiffs(&s).expect("template").eq([6, 1]));

    let layers: Vec<(u8, u8)> = (0..9).map(|dt| (dt / 3, dt % 3)).collect();
    assert_eq!(s.decode_target_layers(), layers);
    assert_eq!(s.decodable_targets(0, 0), 0b1);
    assert_eq!(s.decodable_targets(1, 2), 0b111_111);
    assert_eq!(s.decodable_targets(2, 2), 0x1ff);
    assert_eq!(s.decodable_targets(2, 0), 0b001_001_001);
}

/// Source: livekit/livekit pkg/sfu/dependencydescriptor/
/// dependencydescriptorextension_test.go, "hex bytes from traffic capture":
/// Chromium sending AV1 L3T3 (the key frame's first packet, then packets
/// carrying an active decode targets bitmask, then 3-byte descriptors).
#[test]
fn captured_chromium_l3t3() {
    let key = hex(concat!(
        "c1017280081485214eafffaaaa863cf0430c10c302afc0aaa0063c00430010c002a000a8",
        "0006000040001d954926e082b04a0941b820ac1282503157f974000ca864330e222222ec",
        "a8655304224230eca877530077004200ef008601df010d",
    ));
    let d = read(&key, None).expect("captured key frame descriptor");
    let s = d.structure.clone().expect("attached structure");
    let expected = Structure {
        resolutions: vec![(120, 67), (240, 135), (480, 270)],
        ..l3t3()
    };
    assert_eq!(*s, expected);
    assert_eq!((d.frame_number, d.template_id), (370, 1));
    assert!(d.start_of_frame && d.end_of_frame);
    assert_eq!(d.write(&s), key);

    // (packet, spatial, temporal, active decode targets)
    let packets = [
        ("86017340fc", 1, 0, Some(0x3f)),
        ("46017340fc", 1, 0, Some(0x3f)),
        ("c3017540fc", 0, 2, Some(0x3f)),
        ("88017640fc", 1, 2, Some(0x3f)),
        ("48017640fc", 1, 2, Some(0x3f)),
        ("c2017840fc", 0, 1, Some(0x3f)),
        ("860173", 1, 0, None),
        ("460173", 1, 0, None),
        ("8b0174", 2, 0, None),
        ("0b0174", 2, 0, None),
        ("c30175", 0, 2, None),
    ];
    for (packet, spatial, temporal, active) in packets {
        let bytes = hex(packet);
        let d = read(&bytes, Some(&s)).expect(packet);
        assert_eq!(d.spatial(&s), Some(spatial));
        assert_eq!(d.temporal(&s), Some(temporal));
        assert_eq!(d.active_decode_targets, active, "{packet}");
        assert_eq!(d.write(&s), bytes, "{packet}");
        assert_eq!(read(&bytes, None), Err(UnknownStructure));
    }
    // An SFU forwarding S0-S1 rewrites the short form into the long one.
    let short = read(&hex("860173"), Some(&s)).expect("short");
    let long = with_active_decode_targets(&short, &s, 0x3f);
    assert_eq!(long, hex("86017340fc"));
}

#[test]
fn l1t3_structure() {
    let s = Arc::new(l1t3());
    assert_eq!(s.validate(), Ok(()));
    assert_eq!(s.decode_target_layers(), [(0, 0), (0, 1), (0, 2)]);
    assert_eq!(s.decodable_targets(0, 0), 0b001);
    assert_eq!(s.decodable_targets(0, 1), 0b011);
    assert_eq!(s.decodable_targets(0, 7), 0b111);
    let key = Descriptor {
        structure: Some(s.clone()),
        ..frame(0, 0xffff)
    };
    let bytes = key.write(&s);
    assert_eq!(read(&bytes, None), Ok(key));
    for (index, template) in s.templates.iter().enumerate() {
        let d = frame(index as u8, index as u16);
        let back = read(&d.write(&s), Some(&s)).expect("L1T3 delta");
        assert_eq!(back, d);
        assert_eq!(back.temporal(&s), Some(template.temporal));
    }
    // No chains, no resolutions, and a template id offset.
    let bare = Arc::new(Structure {
        template_id_offset: 63,
        chains: 0,
        decode_target_protected_by: vec![],
        templates: l1t3()
            .templates
            .into_iter()
            .map(|t| FrameTemplate {
                chain_fdiffs: vec![],
                ..t
            })
            .collect(),
        ..l1t3()
    });
    assert_eq!(bare.validate(), Ok(()));
    let d = Descriptor {
        structure: Some(bare.clone()),
        ..frame(1, 7)
    };
    let back = read(&d.write(&bare), None).expect("bare L1T3");
    assert_eq!(back, d);
    assert_eq!(back.template_index(&bare), Some(2));
    assert_eq!(back.chain_fdiffs(&bare), Some(&[][..]));
}

#[test]
fn active_decode_targets_rewrite() {
    let s = Arc::new(l3t3());
    // Short descriptor: the extended fields are added.
    let d = frame(7, 42);
    let bytes = with_active_decode_targets(&d, &s, 0b111);
    assert!(bytes.len() > 3);
    let back = read(&bytes, Some(&s)).expect("rewritten short descriptor");
    assert_eq!(back.active_decode_targets_or_default(), Some(0b111));
    assert_eq!(unmasked(back), d);
    // Bits beyond the decode targets are dropped.
    let all = with_active_decode_targets(&d, &s, u32::MAX);
    assert_eq!(mask(&all, &s), Ok(Some(0x1ff)));

    // With a structure and custom fields: both kept.
    let key = Descriptor {
        structure: Some(s.clone()),
        custom_chains: CustomChains::from_slice(&[0, 1, 2]),
        ..frame(1, 9)
    };
    let bytes = with_active_decode_targets(&key, &s, 0b1);
    let back = read(&bytes, None).expect("rewritten key descriptor");
    assert_eq!(back.structure, Some(s.clone()));
    assert_eq!(back.active_decode_targets_or_default(), Some(0b1));
    assert_eq!(back.custom_chains.as_deref(), Some(&[0, 1, 2][..]));
    assert_eq!(back.write(&s), bytes);
    assert_eq!(unmasked(back), key);

    // With 32 decode targets the mask fills its u32.
    let wide = Arc::new(Structure {
        decode_targets: 32,
        templates: vec![tpl(0, 0, &"S".repeat(32), &[], &[])],
        ..Structure::default()
    });
    assert_eq!(wide.all_decode_targets(), u32::MAX);
    let bytes = with_active_decode_targets(&frame(0, 1), &wide, 0x8000_0001);
    assert_eq!(mask(&bytes, &wide), Ok(Some(0x8000_0001)));
}

#[test]
fn custom_fields_round_trip() {
    let s = Arc::new(l3t3());
    let d = Descriptor {
        custom_dtis: CustomDtis::from_slice(&tpl(0, 0, "SDR-SDR-S", &[], &[]).dtis),
        custom_fdiffs: CustomFdiffs::from_slice(&[1, 16, 17, 256, 257, 4096]),
        custom_chains: CustomChains::from_slice(&[0, 200, 255]),
        ..frame(2, 500)
    };
    let back = read(&d.write(&s), Some(&s)).expect("custom fields");
    assert_eq!(back, d);
    assert_eq!(back.dtis(&s).map(|d| d[2]), Some(Dti::Required));
    let fdiffs: Vec<u16> = back.fdiffs(&s).expect("template").collect();
    assert_eq!(fdiffs, [1, 16, 17, 256, 257, 4096]);
    assert_eq!(back.chain_fdiffs(&s), Some(&[0, 200, 255][..]));
    // Custom and empty: the frame refers to no other frame.
    let intra = Descriptor {
        custom_fdiffs: Some(CustomFdiffs::new()),
        ..frame(2, 501)
    };
    let back = read(&intra.write(&s), Some(&s)).expect("empty custom fdiffs");
    assert_eq!(back, intra);
    assert_eq!(back.fdiffs(&s).map(Iterator::count), Some(0));
    assert_eq!(CustomFdiffs::from_slice(&[1; MAX_FDIFFS + 1]), None);
}

#[test]
fn truncated_at_every_length() {
    let s = Arc::new(Structure {
        resolutions: vec![(320, 180), (640, 360), (1280, 720)],
        ..l3t3()
    });
    let key = Descriptor {
        structure: Some(s.clone()),
        active_decode_targets: Some(0x3f),
        custom_fdiffs: CustomFdiffs::from_slice(&[300]),
        ..frame(1, 3)
    };
    let bytes = key.write(&s);
    for len in 0..bytes.len() {
        let error = [Truncated, UnknownStructure][usize::from(len == 3)];
        assert_eq!(read(&bytes[..len], None), Err(error), "length {len}");
    }
    assert_eq!(read(&bytes[..3], Some(&s)).map(|d| d.frame_number), Ok(3));
    assert_eq!(read(&bytes, None), Ok(key));
}

#[test]
fn unknown_template_and_structure() {
    let s = Arc::new(Structure {
        template_id_offset: 60,
        ..l3t3()
    });
    // Valid ids: 60..=63 and 0..=10.
    for id in [11, 30, 59] {
        let bytes = frame(id, 1).write(&s);
        assert_eq!(read(&bytes, Some(&s)), Err(UnknownTemplate), "{id}");
    }
    for id in [60, 63, 0, 10] {
        assert!(read(&frame(id, 1).write(&s), Some(&s)).is_ok(), "{id}");
    }
    assert_eq!(read(&frame(0, 1).write(&s), None), Err(UnknownStructure));
    // Custom fields or a bitmask need the counts of a structure too.
    let masked = with_active_decode_targets(&frame(0, 1), &s, 1);
    assert_eq!(read(&masked, None), Err(UnknownStructure));
}

/// Bytes of (width, value) fields, zero padded.
fn fields(parts: &[&[(u32, u32)]]) -> Vec<u8> {
    let mut w = BitWriter::with_capacity(32);
    parts
        .iter()
        .flat_map(|p| p.iter())
        .for_each(|&(n, v)| w.put(n, v));
    w.finish()
}

/// Mandatory fields (template 0), then the extended flags with only
/// `template_dependency_structure_present_flag`, offset 0, `dt_cnt` 1.
const PREFIX: &[(u32, u32)] = &[(24, 0x80_0001), (5, 0b10000), (6, 0), (5, 0)];
/// One template (next_layer_idc 3) and its DTI (Switch).
const ONE: &[(u32, u32)] = &[(2, 3), (2, 2)];

#[test]
fn lying_counts_are_malformed() {
    let cases: [&[&[(u32, u32)]]; 5] = [
        // 65 templates: 64 "same layer" steps, never a 3.
        &[PREFIX, &[(32, 0); 5]],
        // Temporal id 8, spatial id 4.
        &[PREFIX, &[(16, 0x5555), (32, 0)]],
        &[PREFIX, &[(8, 0xaa), (32, 0)]],
        // 16 fdiffs in a template.
        &[PREFIX, ONE, &[(5, 0x10); 16], &[(32, 0)]],
        // No fdiffs, no chains, a render width of 65536 (beyond a u16).
        &[
            PREFIX,
            ONE,
            &[(1, 0), (1, 0), (1, 1), (16, 0xffff), (16, 0)],
        ],
    ];
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(read(&fields(case), None), Err(Malformed), "case {i}");
    }
    // 16 custom fdiffs.
    let custom = fields(&[
        &[(24, 0x80_0001), (5, 0b00010)],
        &[(6, 0x10); 16],
        &[(2, 0)],
    ]);
    assert_eq!(read(&custom, Some(&Arc::new(l1t3()))), Err(Malformed));
    // Exactly 64 templates is fine.
    let s = Structure {
        decode_targets: 1,
        templates: vec![tpl(0, 0, "S", &[], &[]); 64],
        ..Structure::default()
    };
    let d = Descriptor {
        structure: Some(Arc::new(s)),
        ..frame(63, 1)
    };
    assert_eq!(read(&d.write(&Structure::default()), None), Ok(d));
}

#[test]
fn flipped_bytes_never_panic() {
    let s = Arc::new(Structure {
        resolutions: vec![(320, 180), (640, 360), (1280, 720)],
        ..l3t3()
    });
    let key = Descriptor {
        structure: Some(s.clone()),
        active_decode_targets: Some(0x1f),
        custom_dtis: CustomDtis::from_slice(&s.templates[3].dtis),
        custom_fdiffs: CustomFdiffs::from_slice(&[3, 40]),
        custom_chains: CustomChains::from_slice(&[1, 2, 3]),
        ..frame(4, 77)
    };
    let mut bytes = key.write(&s);
    let other = Arc::new(l1t3());
    for i in 0..bytes.len() {
        for mask in [0x01, 0x10, 0x80, 0xff] {
            bytes[i] ^= mask;
            for known in [None, Some(&s), Some(&other)] {
                assert_round_trip(&bytes, known);
            }
            bytes[i] ^= mask;
        }
    }
}

#[test]
fn garbage_never_panics() {
    let mut next = crate::forward::codec::tests::xorshift();
    let l3 = Arc::new(l3t3());
    let l1 = Arc::new(l1t3());
    let seed = Descriptor {
        structure: Some(l3.clone()),
        ..frame(1, 1)
    }
    .write(&l3);
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of the inputs: a structure-carrying descriptor with a few bits
        // flipped, so the structure reader is exercised too.
        if next().is_multiple_of(2) {
            data = seed.clone();
            for _ in 0..1 + next() % 4 {
                let bit = next() as usize % (data.len() * 8);
                data[bit / 8] ^= 0x80 >> (bit % 8);
            }
            data.truncate(next() as usize % (data.len() + 8));
        }
        for known in [None, Some(&l3), Some(&l1)] {
            assert_round_trip(&data, known);
        }
    }
}
