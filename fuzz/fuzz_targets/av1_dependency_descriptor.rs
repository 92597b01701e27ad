//! Feeds arbitrary bytes to `sfu::forward::codec::dependency_descriptor::read`,
//! which reads the AV1 Dependency Descriptor RTP header extension of every
//! packet of a publisher's scalable video stream. The first input byte is
//! the length of a first descriptor (like the key frame packet that
//! attaches a template structure); the rest is a second descriptor, read
//! with the structure the first one attached, as a stream would. The whole
//! input is also read with no structure known. Besides not panicking,
//! whatever reads must be consistent (the structure passes `validate`, the
//! frame's template and per-target fields fit it) and write back to bytes
//! that read to an equal descriptor, also after rewriting its active decode
//! targets.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sfu::forward::codec::dependency_descriptor::{
    read, with_active_decode_targets, Dti, FrameTemplate, Structure,
};

fuzz_target!(|data: &[u8]| {
    check(data, None);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(split).min(rest.len()));
    // When the first descriptor attaches no structure: one template, one
    // decode target.
    let known = check(first, None).unwrap_or_else(|| {
        Arc::new(Structure {
            decode_targets: 1,
            templates: vec![FrameTemplate {
                dtis: vec![Dti::Switch],
                ..FrameTemplate::default()
            }],
            ..Structure::default()
        })
    });
    check(second, Some(&known));
});

/// Reads `data` with `known`, checks the result, and returns the structure
/// it attached.
fn check(data: &[u8], known: Option<&Arc<Structure>>) -> Option<Arc<Structure>> {
    let d = read(data, known).ok()?;
    let s = d
        .structure_or(known)
        .expect("a read descriptor has a structure");
    assert_eq!(s.validate(), Ok(()));
    assert!(d.template(s).is_some());
    assert_eq!(
        d.dtis(s).map(<[_]>::len),
        Some(usize::from(s.decode_targets))
    );
    assert_eq!(
        d.chain_fdiffs(s).map(<[_]>::len),
        Some(usize::from(s.chains))
    );
    assert!(d
        .fdiffs(s)
        .expect("template")
        .all(|f| (1..=4096).contains(&f)));
    if let Some(mask) = d.active_decode_targets_or_default() {
        assert_eq!(mask & !s.all_decode_targets(), 0);
    }
    let bytes = d.write(s);
    assert_eq!(read(&bytes, known).as_ref(), Ok(&d));
    let mask = s.decodable_targets(0, 0);
    let rewritten = read(&with_active_decode_targets(&d, s, mask), known).expect("rewritten");
    assert_eq!(rewritten.active_decode_targets, Some(mask));
    assert_eq!(rewritten.structure, d.structure);
    d.structure
}
