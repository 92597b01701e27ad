//! Feeds an arbitrary byte stream, cut into arbitrary reads, to the ICE-TCP
//! frame decoder (`sfu::worker::tcp::FrameDecoder`, RFC 4571), which sees
//! every byte a client sends to a worker's TCP port. Frames come out whole,
//! never larger than `MAX_FRAME`, and the same however the stream is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::worker::tcp::{encode, FrameDecoder, MAX_FRAME};

/// All frames of `stream` read in pieces of the given sizes, up to the first error.
fn frames(stream: &[u8], cuts: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut d = FrameDecoder::default();
    let mut out = vec![];
    let mut rest = stream;
    let mut sizes = cuts.iter().map(|c| usize::from(*c) + 1).cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= MAX_FRAME);
                    out.push(f);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b) % 8);
    let (cuts, stream) = data
        .get(1..)
        .unwrap_or_default()
        .split_at(split.min(data.len().saturating_sub(1)));
    let whole = frames(stream, &[]);
    let pieces = frames(stream, if cuts.is_empty() { &[0] } else { cuts });
    assert_eq!(
        whole, pieces,
        "framing must not depend on how reads are cut"
    );
    // Re-encoding the frames gives back the stream's prefix they came from.
    let again: Vec<u8> = whole
        .0
        .iter()
        .flat_map(|f| encode(f).unwrap_or_default())
        .collect();
    assert_eq!(&stream[..again.len()], &again[..]);
});
