//! Tests of the per-subscriber dependency descriptor rewrite.

use super::*;
use crate::forward::codec::dependency_descriptor::{read, FrameTemplate};

/// Two spatial layers, one temporal layer (L2T1 with a key picture's
/// inter-layer reference): decode targets 0 = S0, 1 = S1; chains 0 and 1.
fn l2t1() -> Arc<Structure> {
    use Dti::*;
    let template =
        |spatial, dtis: Vec<Dti>, fdiffs: Vec<u8>, chain_fdiffs: Vec<u8>| FrameTemplate {
            spatial,
            temporal: 0,
            dtis,
            fdiffs,
            chain_fdiffs,
        };
    Arc::new(Structure {
        template_id_offset: 0,
        decode_targets: 2,
        templates: vec![
            template(0, vec![Switch, Switch], vec![], vec![0, 0]), // key S0
            template(0, vec![Switch, Required], vec![2], vec![2, 1]), // delta S0
            template(1, vec![NotPresent, Switch], vec![1], vec![1, 1]), // key S1
            template(1, vec![NotPresent, Required], vec![2, 1], vec![1, 1]), // delta S1
        ],
        chains: 2,
        decode_target_protected_by: vec![0, 1],
        resolutions: vec![(320, 180), (640, 360)],
    })
}

fn packet(template_id: u8, frame_number: u16, attach: bool) -> ReadDescriptor {
    let structure = l2t1();
    let descriptor = Descriptor {
        start_of_frame: true,
        end_of_frame: true,
        template_id,
        frame_number,
        structure: attach.then(|| structure.clone()),
        ..Default::default()
    };
    let raw: Arc<[u8]> = Arc::from(descriptor.write(&structure));
    ReadDescriptor::new(descriptor, structure, raw).expect("template exists")
}

/// What the subscriber reads from `bytes` (with the stream's structure).
fn as_read(bytes: &[u8]) -> Descriptor {
    read(bytes, Some(&l2t1())).expect("the rewrite reads back")
}

#[test]
fn layers_sizes_and_switch_points_come_from_the_template() {
    let key = packet(0, 100, true);
    assert_eq!((key.spatial, key.temporal), (0, 0));
    assert!(key.is_switch_point());
    let dims = key.spatial_dims().expect("sizes with the structure");
    assert_eq!(dims[..2], [Some((320, 180)), Some((640, 360))]);
    let s1 = packet(3, 101, false);
    assert_eq!(s1.spatial, 1);
    assert!(!s1.is_switch_point());
    assert_eq!(s1.spatial_dims(), None);
}

#[test]
fn everything_forwarded_goes_out_as_received() {
    let mut rw = DescriptorRewriter::default();
    for dd in [
        packet(0, 100, true),
        packet(2, 101, false),
        packet(1, 102, false),
    ] {
        let out = rw.rewrite(&dd, Some((1, 0)), false);
        assert!(Arc::ptr_eq(&out, &dd.raw), "unchanged bytes, not a copy");
    }
    let relay = rw.rewrite(&packet(3, 103, false), None, false);
    assert_eq!(as_read(&relay).active_decode_targets, None);
}

#[test]
fn dropped_layers_are_announced_in_every_packet_until_they_return() {
    let mut rw = DescriptorRewriter::default();
    // S0 only: decode target 1 (S1) is inactive, in every packet.
    for (t, n) in [(0, 100), (1, 102), (1, 104)] {
        let out = as_read(&rw.rewrite(&packet(t, n, t == 0), Some((0, 0)), false));
        assert_eq!(out.active_decode_targets, Some(0b01));
        assert_eq!(out.frame_number, n);
    }
    // S1 again: told once that both are active, then nothing more.
    let back = as_read(&rw.rewrite(&packet(1, 106, false), Some((1, 0)), false));
    assert_eq!(back.active_decode_targets, Some(0b11));
    let after = as_read(&rw.rewrite(&packet(3, 107, false), Some((1, 0)), false));
    assert_eq!(after.active_decode_targets, None);
    // A structure resets the subscriber to "all active": a restriction
    // after it is written again.
    let key = as_read(&rw.rewrite(&packet(0, 108, true), Some((0, 0)), false));
    assert_eq!(key.active_decode_targets, Some(0b01));
    assert!(key.structure.is_some(), "the structure is kept");
}

#[test]
fn frame_numbers_continue_across_a_switch_of_source() {
    let mut rw = DescriptorRewriter::default();
    for n in [65_530, 65_531] {
        rw.rewrite(&packet(1, n, false), None, false);
    }
    // Another source whose numbers are elsewhere: its key picture follows
    // on, and so does the rest of it (wrapping at 2^16).
    let key = as_read(&rw.rewrite(&packet(0, 7, true), None, true));
    assert_eq!(key.frame_number, 65_532);
    let next = as_read(&rw.rewrite(&packet(1, 12, false), None, false));
    assert_eq!(next.frame_number, 65_532u16.wrapping_add(5));
    // A late packet of an older frame keeps its place (no new base).
    let late = as_read(&rw.rewrite(&packet(1, 9, false), None, false));
    assert_eq!(late.frame_number, 65_532u16.wrapping_add(2));
    let again = as_read(&rw.rewrite(&packet(1, 13, false), None, false));
    assert_eq!(again.frame_number, 65_532u16.wrapping_add(6));
}
